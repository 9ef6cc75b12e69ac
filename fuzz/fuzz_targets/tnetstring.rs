//! tnetstring decoder: any input decodes or fails with an error, never panics; whatever
//! decodes encodes back to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::tnetstring::{Value, decode, encode};

/// Equality where a NaN float equals a NaN float (the codec keeps NaN as NaN).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::List(xs), Value::List(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Dict(xs), Value::Dict(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys)
                    .all(|((kx, x), (ky, y))| kx == ky && same(x, y))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((value, rest)) = decode(data) {
        assert!(rest.len() <= data.len());
        let mut out = Vec::new();
        encode(&value, &mut out);
        let (again, tail) = decode(&out).expect("an encoded value decodes");
        assert!(tail.is_empty(), "encode wrote trailing bytes");
        assert!(same(&value, &again), "{value:?} re-decoded as {again:?}");
    }
});

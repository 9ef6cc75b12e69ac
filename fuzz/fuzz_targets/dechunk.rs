//! fake-mongrel2's streaming de-chunker: never panics, and feeding the body in two pieces
//! (split where the first byte says) gives the same data, consumed count and outcome as
//! feeding it whole.
#![no_main]

use fake_mongrel2::chunked::Dechunker;
use libfuzzer_sys::fuzz_target;

/// Feeds `pieces` in order; returns (data, bytes consumed, error?, done?).
fn run(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool, bool) {
    let mut d = Dechunker::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match d.feed(piece, &mut |b| data.extend_from_slice(b)) {
            Ok(n) => {
                assert!(n <= piece.len());
                consumed += n;
                if n < piece.len() {
                    assert!(d.is_done(), "stopped early without being done");
                    return (data, consumed, false, true);
                }
            }
            Err(_) => return (data, consumed, true, d.is_done()),
        }
    }
    (data, consumed, false, d.is_done())
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, body)) = input.split_first() else {
        return;
    };
    let whole = run(&[body]);
    let at = usize::from(cut).min(body.len());
    let split = run(&[&body[..at], &body[at..]]);
    assert!(whole.0.len() <= body.len());
    if !whole.2 && !split.2 {
        assert_eq!(whole, split);
    } else {
        // Both fail, and on the same data before the error.
        assert_eq!(whole.2, split.2, "one feeding failed, the other did not");
    }
});

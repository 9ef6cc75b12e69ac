//! fake-mongrel2's streaming de-chunker: never panics, and feeding the body in two pieces
//! (split where the first byte says, unconsumed bytes fed again) gives the same data,
//! consumed count and outcome as feeding it whole.
#![no_main]

use fake_mongrel2::chunked::Dechunker;
use libfuzzer_sys::fuzz_target;

/// Feeds `pieces` in order as a server does: bytes the decoder leaves unconsumed (a chunk
/// that has not fully arrived, which Mongrel2 writes only once it is whole) are fed again,
/// followed by the next piece. Returns (data, bytes consumed, error?, done?).
fn run(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool, bool) {
    let mut d = Dechunker::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        match d.feed(&pending, &mut |b| data.extend_from_slice(b)) {
            Ok(n) => {
                assert!(n <= pending.len());
                consumed += n;
                pending.drain(..n);
                if d.is_done() {
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

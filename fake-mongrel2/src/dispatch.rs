//! Reply-frame routing decisions (no I/O): what a parsed reply frame does to each target id.

use protocol::Reply;

/// What the server does for one target id of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The id is a live connection: write the payload (empty payload = close it).
    Deliver(u64),
    /// The id is unknown or already closed: a disconnect frame goes back to the handler.
    Disconnect(u64),
}

/// Why a whole reply frame is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Not a valid reply frame (logged, nothing delivered, no disconnect frames).
    Malformed(String),
    /// More ids than `limits.handler_targets` ("too many target listeners").
    TooManyTargets(usize),
}

/// Parses `frame` and decides, per target id in order (repeats kept), what happens.
/// `is_live` tells whether an id is a live connection.
pub fn plan<'a>(
    frame: &'a [u8],
    handler_targets: usize,
    is_live: impl Fn(u64) -> bool,
) -> Result<(Reply<'a>, Vec<Target>), Dropped> {
    let reply = protocol::parse_reply(frame).map_err(|e| Dropped::Malformed(e.to_string()))?;
    if reply.ids.len() > handler_targets {
        return Err(Dropped::TooManyTargets(reply.ids.len()));
    }
    let targets = reply
        .ids
        .iter()
        .map(|&id| {
            if is_live(id) {
                Target::Deliver(id)
            } else {
                Target::Disconnect(id)
            }
        })
        .collect();
    Ok((reply, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_unknown_and_repeated_ids() {
        let (r, t) = plan(b"u 8:45 46 45, P", 128, |id| id == 45).unwrap();
        assert_eq!(r.payload, b"P");
        assert_eq!(
            t,
            vec![
                Target::Deliver(45),
                Target::Disconnect(46),
                Target::Deliver(45)
            ]
        );
    }

    #[test]
    fn malformed_and_too_many() {
        assert!(matches!(
            plan(b"u 9:55, B;", 128, |_| true),
            Err(Dropped::Malformed(_))
        ));
        assert!(matches!(
            plan(b"u 2:55,C;", 128, |_| true),
            Err(Dropped::Malformed(_))
        ));
        let ids: Vec<String> = (1..=129).map(|i| i.to_string()).collect();
        let list = ids.join(" ");
        let frame = format!("u {}:{list}, x", list.len());
        assert!(plan(frame.as_bytes(), 128, |_| true).is_err());
        let ids: Vec<String> = (1..=128).map(|i| i.to_string()).collect();
        let list = ids.join(" ");
        let frame = format!("u {}:{list}, x", list.len());
        assert_eq!(plan(frame.as_bytes(), 128, |_| true).unwrap().1.len(), 128);
        assert_eq!(
            plan(frame.as_bytes(), 10, |_| true),
            Err(Dropped::TooManyTargets(128))
        );
    }

    #[test]
    fn empty_payload_is_kept() {
        let (r, t) = plan(b"u 2:48, ", 128, |_| true).unwrap();
        assert!(r.payload.is_empty());
        assert_eq!(t, vec![Target::Deliver(48)]);
    }
}

//! Cheap looks into request frames the receiving thread needs before (or instead of) a full
//! parse: who sent a frame, and whether it is a disconnect.

/// Whether `frame` is a disconnect frame, and whose (checked cheaply: only frames whose path
/// is `@*` are parsed).
pub fn disconnect_of(frame: &[u8]) -> Option<(&[u8], u64)> {
    let mut parts = frame.splitn(4, |&b| b == b' ');
    let (_, _, path) = (parts.next()?, parts.next()?, parts.next()?);
    if path != b"@*" {
        return None;
    }
    let req = protocol::parse_request(frame).ok()?;
    matches!(req.kind(), Ok(protocol::Kind::Disconnect)).then_some((req.sender, req.conn_id))
}

/// The sender and connection id of a request frame (its first two fields), if well-formed.
pub fn sender_and_conn(frame: &[u8]) -> Option<(&[u8], u64)> {
    let mut parts = frame.splitn(3, |&b| b == b' ');
    let sender = parts.next()?;
    let id = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    parts.next()?;
    Some((sender, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_and_connection_come_from_the_first_two_fields() {
        assert_eq!(
            sender_and_conn(b"uuid 42 /x 2:{},0:,"),
            Some((&b"uuid"[..], 42))
        );
        assert_eq!(sender_and_conn(b"uuid x42 /x 2:{},0:,"), None);
        assert_eq!(sender_and_conn(b"uuid 42"), None);
        assert_eq!(sender_and_conn(b""), None);
    }

    #[test]
    fn only_disconnect_frames_are_disconnects() {
        let mut disc = Vec::new();
        protocol::encode_disconnect(&mut disc, protocol::HeaderProtocol::Json, b"uuid", 7);
        assert_eq!(disconnect_of(&disc), Some((&b"uuid"[..], 7)));
        let mut tnet = Vec::new();
        protocol::encode_disconnect(&mut tnet, protocol::HeaderProtocol::Tnetstring, b"u", 8);
        assert_eq!(disconnect_of(&tnet), Some((&b"u"[..], 8)));
        let msg = b"uuid 7 @* 17:{\"METHOD\":\"JSON\"},16:{\"type\":\"other\"},";
        assert_eq!(disconnect_of(msg), None);
        let get = b"uuid 7 / 2:{},0:,";
        assert_eq!(disconnect_of(get), None);
        assert_eq!(disconnect_of(b"garbage"), None);
    }
}

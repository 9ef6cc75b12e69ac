//! Mongrel2's own HTTP answers (byte for byte where the real server's are known), and
//! fake-mongrel2's answer to a connection over its cap.

/// Mongrel2's 400 answer, byte for byte.
pub const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 11\r\nServer: Mongrel2/1.12.2\r\n\r\nBad Request";
/// Mongrel2's 404 answer, byte for byte.
pub const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 9\r\nServer: Mongrel2/1.12.2\r\n\r\nNot Found";
/// The 413 answer when a body is over the limit and no upload.temp_store is set (shape assumed).
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 24\r\nServer: Mongrel2/1.12.2\r\n\r\nRequest Entity Too Large";
/// Mongrel2's 417 answer (an `Expect` other than `100-continue`), byte for byte.
pub const EXPECTATION_FAILED: &[u8] = b"HTTP/1.1 417 Expectation Failed\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 18\r\nServer: Mongrel2/1.12.2\r\n\r\nExpectation Failed";
/// The answer to a connection over the connection cap (fake-mongrel2's own: Mongrel2 has no
/// clean refusal, it runs out of file descriptors).
pub const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 19\r\nServer: Mongrel2/1.12.2\r\n\r\nService Unavailable";
/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

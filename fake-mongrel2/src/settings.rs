//! What a fake-mongrel2 instance runs with: handlers, routes and Mongrel2's limits (no I/O),
//! plus the route lookup (longest matching prefix, as Mongrel2's route map does for literal
//! patterns).

use crate::limits::Limits;
use protocol::HeaderProtocol;
use std::path::PathBuf;

/// One Mongrel2 `Handler(...)`: the two sockets the server binds and the frame format.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    /// A name for traces and errors (the config variable, or `handler`).
    pub name: String,
    /// PUSH endpoint the server binds (requests to the handler); `tcp://127.0.0.1:*` allowed.
    pub send_spec: String,
    /// The SENDER field of every request frame.
    pub send_ident: Vec<u8>,
    /// SUB endpoint the server binds (replies from the handler).
    pub recv_spec: String,
    /// SUB subscription (`""` = everything).
    pub recv_ident: Vec<u8>,
    /// Header encoding of request frames.
    pub protocol: HeaderProtocol,
    /// Socket-message replies are written raw instead of base64 (Mongrel2's `raw_payload`).
    pub raw_payload: bool,
}

impl HandlerSpec {
    /// A JSON handler on the given endpoints with Mongrel2's test ident.
    pub fn new(send_spec: &str, recv_spec: &str) -> Self {
        Self {
            name: "handler".into(),
            send_spec: send_spec.into(),
            send_ident: DEFAULT_SEND_IDENT.as_bytes().to_vec(),
            recv_spec: recv_spec.into(),
            recv_ident: Vec::new(),
            protocol: HeaderProtocol::Json,
            raw_payload: false,
        }
    }
}

/// The default `send_ident` (the JSON handler of the captured cases).
pub const DEFAULT_SEND_IDENT: &str = "11111111-2222-4333-8444-555555555555";

/// A route: pattern (`/handler/`, `@chat`, `<chat`) to a handler index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route key as written in the config.
    pub pattern: Vec<u8>,
    /// Index into [`Settings::handlers`].
    pub handler: usize,
}

/// Everything an instance needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// HTTP listen address, e.g. `127.0.0.1:0`.
    pub listen: String,
    /// Handlers (each with its own sockets).
    pub handlers: Vec<HandlerSpec>,
    /// Routes; when empty every path routes to handler 0 with pattern `/`.
    pub routes: Vec<RouteSpec>,
    /// `limits.content_length`: larger bodies take the upload path.
    pub content_length_limit: u64,
    /// `upload.temp_store` (mkstemp template, as seen from inside the chroot). `None`: 413.
    pub upload_temp_store: Option<String>,
    /// Server chroot: temp files live under it, paths are reported relative to it.
    pub chroot: Option<PathBuf>,
    /// `upload.temp_store_mode`.
    pub upload_mode: u32,
    /// `limits.buffer_size`: largest request head.
    pub buffer_size: usize,
    /// `limits.header_count`: most distinct header names kept of a head (see
    /// [`crate::http::HeaderCount`]).
    pub header_count: usize,
    /// `limits.handler_targets`: most ids in one reply frame.
    pub handler_targets: usize,
    /// Undelivered reply frames allowed per connection before it is killed (Mongrel2's
    /// deliver queue cap).
    pub max_queued_frames: usize,
    /// Idle/slow-client sweep and connection cap.
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            handlers: vec![HandlerSpec::new("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")],
            routes: Vec::new(),
            content_length_limit: 20480,
            upload_temp_store: Some(default_temp_store()),
            chroot: None,
            upload_mode: 0o600,
            buffer_size: 4096,
            header_count: crate::http::DEFAULT_HEADER_COUNT,
            handler_targets: protocol::MAX_REPLY_IDS,
            max_queued_frames: 16,
            limits: Limits::default(),
        }
    }
}

/// The default upload template: `$TMPDIR/upload.XXXXXX`.
pub fn default_temp_store() -> String {
    let dir = std::env::temp_dir();
    format!("{}/upload.XXXXXX", dir.display())
}

impl Settings {
    /// The route for `path` as Mongrel2 1.12 finds it (`tst_search_prefix` over the routes'
    /// literal prefixes, in config order): a route whose prefix is the whole path; else, when
    /// the path is a proper prefix of route prefixes, the first such route's prefix is followed
    /// to the first route on the way (`/handler` takes `/handler/`); else the longest route
    /// prefix of the path. An empty path has no route. Returns (pattern, handler index).
    pub fn route(&self, path: &[u8]) -> Option<(&[u8], usize)> {
        if self.routes.is_empty() {
            return path.starts_with(b"/").then_some((&b"/"[..], 0));
        }
        if path.is_empty() {
            return None;
        }
        fn key(r: &RouteSpec) -> &[u8] {
            literal_prefix(&r.pattern)
        }
        let found = match self.routes.iter().find(|r| key(r) == path) {
            Some(exact) => Some(exact),
            None => match self.routes.iter().find(|r| key(r).starts_with(path)) {
                Some(first) => {
                    let along = key(first);
                    let mut best: Option<&RouteSpec> = None;
                    for r in &self.routes {
                        let k = key(r);
                        if k.len() > path.len()
                            && along.starts_with(k)
                            && best.is_none_or(|b| k.len() < key(b).len())
                        {
                            best = Some(r);
                        }
                    }
                    best
                }
                None => {
                    let mut best: Option<&RouteSpec> = None;
                    for r in &self.routes {
                        let k = key(r);
                        if path.starts_with(k) && best.is_none_or(|b| k.len() > key(b).len()) {
                            best = Some(r);
                        }
                    }
                    best
                }
            },
        };
        found.map(|r| (r.pattern.as_slice(), r.handler))
    }
}

/// The literal part of a route pattern (Mongrel2 patterns may continue with a `(regex)`).
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    match pattern.iter().position(|&b| b == b'(') {
        Some(i) => &pattern[..i],
        None => pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings::default();
        s.handlers.push(HandlerSpec::new("a", "b"));
        s.routes = vec![
            RouteSpec {
                pattern: b"/handler/".to_vec(),
                handler: 0,
            },
            RouteSpec {
                pattern: b"/".to_vec(),
                handler: 0,
            },
            RouteSpec {
                pattern: b"/tnet/".to_vec(),
                handler: 1,
            },
            RouteSpec {
                pattern: b"@chat".to_vec(),
                handler: 0,
            },
        ];
        s
    }

    #[test]
    fn longest_prefix_wins() {
        let s = settings();
        assert_eq!(s.route(b"/handler/x"), Some((&b"/handler/"[..], 0)));
        assert_eq!(s.route(b"/handlerx"), Some((&b"/"[..], 0)));
        assert_eq!(s.route(b"/tnet/q"), Some((&b"/tnet/"[..], 1)));
        assert_eq!(s.route(b"//example.com/handler/abs"), Some((&b"/"[..], 0)));
        assert_eq!(s.route(b"*"), None);
        assert_eq!(s.route(b"@chat"), Some((&b"@chat"[..], 0)));
        assert_eq!(s.route(b"<chat"), None);
    }

    #[test]
    fn a_path_that_begins_a_route_takes_it() {
        // Mongrel2's ternary search tree: a path that is a proper prefix of route keys (and no
        // key itself) follows the first such key inserted to the first key on the way
        let mut s = settings();
        assert_eq!(s.route(b"/handler"), Some((&b"/handler/"[..], 0)));
        assert_eq!(s.route(b"/t"), Some((&b"/tnet/"[..], 1)));
        assert_eq!(s.route(b"@"), Some((&b"@chat"[..], 0)));
        assert_eq!(s.route(b""), None);
        s.routes.insert(
            0,
            RouteSpec {
                pattern: b"/tnet/deep/".to_vec(),
                handler: 0,
            },
        );
        assert_eq!(s.route(b"/tn"), Some((&b"/tnet/"[..], 1)));
        assert_eq!(s.route(b"/tnet/d"), Some((&b"/tnet/deep/"[..], 0)));
    }

    #[test]
    fn no_routes_means_everything_to_handler_zero() {
        let s = Settings::default();
        assert_eq!(s.route(b"/anything"), Some((&b"/"[..], 0)));
        assert_eq!(s.route(b"*"), None);
    }
}

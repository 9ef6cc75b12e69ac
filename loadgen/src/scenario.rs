//! What to send: request templates from flags or a scenario file (JSON or TOML) with a
//! weighted mix, and their wire forms (pre-rendered HTTP heads; bodies inline or streamed
//! from a generator so that large uploads are never held in memory).

use crate::schedule::Rng;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Errors loading a scenario.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("invalid scenario {path}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes held in memory.
    Bytes(Arc<[u8]>),
    /// `len` bytes produced on the fly from a repeating pattern ([`pattern`]).
    Generated(u64),
}

impl Body {
    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Generated(n) => *n,
        }
    }

    /// True when the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Name in reports.
    pub name: String,
    /// Relative weight in the mix.
    pub weight: u32,
    /// HTTP method.
    pub method: String,
    /// Path with optional `?query`.
    pub path: String,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
}

/// Length of the repeating generator pattern.
pub const PATTERN_LEN: usize = 64 * 1024;

/// The generator pattern: byte i of a generated body is `pattern()[i % PATTERN_LEN]`.
pub fn pattern() -> Vec<u8> {
    (0..PATTERN_LEN)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37])
        .collect()
}

/// A weighted mix of requests.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The entries.
    pub entries: Vec<RequestSpec>,
    cumulative: Vec<u64>,
}

impl Scenario {
    /// A mix of `entries` (weights of 0 are never picked; at least one must be positive).
    pub fn new(entries: Vec<RequestSpec>) -> Result<Self, String> {
        let mut acc = 0u64;
        let cumulative: Vec<u64> = entries
            .iter()
            .map(|e| {
                acc += e.weight as u64;
                acc
            })
            .collect();
        if acc == 0 {
            return Err("a scenario needs at least one request with a positive weight".into());
        }
        Ok(Scenario {
            entries,
            cumulative,
        })
    }

    /// Pick an entry index by weight.
    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> usize {
        if self.entries.len() == 1 {
            return 0;
        }
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = rng.next_u64() % total;
        self.cumulative.partition_point(|&c| c <= x)
    }

    /// Load a scenario file (`.json` or `.toml`); relative body files are read from the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.into(),
            source,
        })?;
        let invalid = |message: String| ScenarioError::Invalid {
            path: path.into(),
            message,
        };
        let file: FileScenario = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        } else {
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut entries = Vec::new();
        for (i, r) in file.requests.into_iter().enumerate() {
            let body = match r.body {
                None => Body::Empty,
                Some(FileBody::Text(s)) => Body::Bytes(s.into_bytes().into()),
                Some(FileBody::File { file }) => {
                    let p = dir.join(&file);
                    let b = std::fs::read(&p)
                        .map_err(|source| ScenarioError::Io { path: p, source })?;
                    Body::Bytes(b.into())
                }
                Some(FileBody::Generate { generate }) => Body::Generated(generate),
            };
            let path_s = r.path.unwrap_or_else(|| "/".into());
            if !path_s.starts_with('/') {
                return Err(invalid(format!(
                    "request {i}: path must start with '/', found {path_s:?}"
                )));
            }
            entries.push(RequestSpec {
                name: r.name.unwrap_or_else(|| format!("request{i}")),
                weight: r.weight.unwrap_or(1),
                method: r.method.unwrap_or_else(|| "GET".into()),
                path: path_s,
                headers: r.headers.unwrap_or_default().into_iter().collect(),
                body,
            });
        }
        Scenario::new(entries).map_err(invalid)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScenario {
    requests: Vec<FileRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRequest {
    name: Option<String>,
    weight: Option<u32>,
    method: Option<String>,
    path: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<FileBody>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileBody {
    Text(String),
    File { file: PathBuf },
    Generate { generate: u64 },
}

/// A request rendered for an HTTP/1.x connection: the head (and an inline body) as bytes,
/// plus the length of a generated body to stream after it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Head plus inline body.
    pub bytes: Vec<u8>,
    /// Generated body bytes to write after `bytes`.
    pub generated: u64,
    /// The method is HEAD (the response has no body).
    pub head: bool,
}

/// Render `spec` as an HTTP request to `host` (`http10`: HTTP/1.0 request line).
pub fn render_http(spec: &RequestSpec, host: &str, http10: bool) -> Rendered {
    let mut out = Vec::with_capacity(256);
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    out.extend_from_slice(format!("{} {} {}\r\n", spec.method, spec.path, version).as_bytes());
    let has = |n: &str| spec.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    if !has("user-agent") {
        out.extend_from_slice(b"User-Agent: loadgen\r\n");
    }
    for (k, v) in &spec.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let len = spec.body.len();
    let needs_length = len > 0 || matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH");
    if needs_length && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let generated = match &spec.body {
        Body::Empty => 0,
        Body::Bytes(b) => {
            out.extend_from_slice(b);
            0
        }
        Body::Generated(n) => *n,
    };
    Rendered {
        bytes: out,
        generated,
        head: spec.method.eq_ignore_ascii_case("HEAD"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, weight: u32) -> RequestSpec {
        RequestSpec {
            name: name.into(),
            weight,
            method: "GET".into(),
            path: "/".into(),
            headers: vec![],
            body: Body::Empty,
        }
    }

    #[test]
    fn weights_are_respected() {
        let s = Scenario::new(vec![spec("a", 3), spec("b", 0), spec("c", 1)]).unwrap();
        let mut rng = Rng::new(1);
        let mut n = [0u32; 3];
        for _ in 0..40_000 {
            n[s.pick(&mut rng)] += 1;
        }
        assert_eq!(n[1], 0);
        assert!((29_000..31_000).contains(&n[0]), "{n:?}");
        assert!(Scenario::new(vec![spec("z", 0)]).is_err());
    }

    #[test]
    fn render_adds_host_and_length() {
        let mut s = spec("p", 1);
        s.method = "POST".into();
        s.path = "/up?x=1".into();
        s.body = Body::Generated(1 << 20);
        let r = render_http(&s, "h:1", false);
        assert_eq!(
            String::from_utf8(r.bytes).unwrap(),
            "POST /up?x=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: loadgen\r\nContent-Length: 1048576\r\n\r\n"
        );
        assert_eq!(r.generated, 1 << 20);
    }

    #[test]
    fn shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json" || x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2, "expected scenario files in {}", dir.display());
    }
}

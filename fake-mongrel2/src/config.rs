//! Mongrel2 config files in m2sh's syntax (no I/O): `name = Handler(...)`, `Host(...)`,
//! `Server(...)`, `settings = {...}`, `servers = [...]`, turned into [`Settings`] plus a list
//! of warnings naming every directive that is not emulated.

use crate::settings::{HandlerSpec, RouteSpec, Settings};
use protocol::HeaderProtocol;
use std::collections::HashMap;

/// A config file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Syntax error.
    #[error("config syntax error at line {line}: expected {expected}, found {found:?}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What the parser wanted.
        expected: &'static str,
        /// What it saw.
        found: String,
    },
    /// Well-formed but not usable.
    #[error("config error: {0}")]
    Invalid(String),
}

/// A value in m2sh's syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `'text'` or `"text"`.
    Str(String),
    /// An integer.
    Num(i64),
    /// A reference to an earlier assignment.
    Ref(String),
    /// `Name(key=value, ...)`.
    Call(String, Vec<(String, Value)>),
    /// `{key: value, ...}`.
    Dict(Vec<(Value, Value)>),
    /// `[value, ...]`.
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(i64),
    Sym(char),
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ConfigError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' | '"' => {
                let q = c;
                let start_line = line;
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(ConfigError::Syntax {
                            line: start_line,
                            expected: "closing quote",
                            found: "end of file".into(),
                        });
                    };
                    i += 1;
                    if ch == q {
                        break;
                    }
                    if ch == '\\'
                        && let Some(&n) = chars.get(i)
                    {
                        {
                            i += 1;
                            s.push(match n {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                            continue;
                        }
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    s.push(ch);
                }
                out.push((Tok::Str(s), start_line));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse().map_err(|_| ConfigError::Syntax {
                    line,
                    expected: "a number",
                    found: text.clone(),
                })?;
                out.push((Tok::Num(n), line));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                out.push((Tok::Ident(chars[start..i].iter().collect()), line));
            }
            '=' | '(' | ')' | '{' | '}' | '[' | ']' | ',' | ':' => {
                out.push((Tok::Sym(c), line));
                i += 1;
            }
            other => {
                return Err(ConfigError::Syntax {
                    line,
                    expected: "a token",
                    found: other.to_string(),
                });
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(1, |t| t.1)
    }
    fn err<T>(&self, expected: &'static str) -> Result<T, ConfigError> {
        Err(ConfigError::Syntax {
            line: self.line(),
            expected,
            found: self
                .peek()
                .map_or("end of file".to_string(), |t| format!("{t:?}")),
        })
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t
    }
    fn expect_sym(&mut self, c: char, what: &'static str) -> Result<(), ConfigError> {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }
    fn value(&mut self) -> Result<Value, ConfigError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Value::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Value::Num(n))
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                if self.peek() == Some(&Tok::Sym('(')) {
                    self.pos += 1;
                    let mut args = Vec::new();
                    while self.peek() != Some(&Tok::Sym(')')) {
                        let Some(Tok::Ident(key)) = self.next() else {
                            self.pos -= 1;
                            return self.err("a keyword argument name");
                        };
                        self.expect_sym('=', "'=' after a keyword argument")?;
                        args.push((key, self.value()?));
                        if self.peek() == Some(&Tok::Sym(',')) {
                            self.pos += 1;
                        } else if self.peek() != Some(&Tok::Sym(')')) {
                            return self.err("',' or ')'");
                        }
                    }
                    self.pos += 1;
                    Ok(Value::Call(name, args))
                } else {
                    Ok(Value::Ref(name))
                }
            }
            Some(Tok::Sym('{')) => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek() != Some(&Tok::Sym('}')) {
                    let k = self.value()?;
                    self.expect_sym(':', "':' in a dict")?;
                    let v = self.value()?;
                    items.push((k, v));
                    if self.peek() == Some(&Tok::Sym(',')) {
                        self.pos += 1;
                    } else if self.peek() != Some(&Tok::Sym('}')) {
                        return self.err("',' or '}'");
                    }
                }
                self.pos += 1;
                Ok(Value::Dict(items))
            }
            Some(Tok::Sym('[')) => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek() != Some(&Tok::Sym(']')) {
                    items.push(self.value()?);
                    if self.peek() == Some(&Tok::Sym(',')) {
                        self.pos += 1;
                    } else if self.peek() != Some(&Tok::Sym(']')) {
                        return self.err("',' or ']'");
                    }
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            _ => self.err("a value"),
        }
    }
}

/// Parses the assignments of a config file, in order.
pub fn parse_assignments(src: &str) -> Result<Vec<(String, Value)>, ConfigError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let mut out = Vec::new();
    while p.peek().is_some() {
        let Some(Tok::Ident(name)) = p.next() else {
            p.pos -= 1;
            return p.err("an assignment `name = value`");
        };
        p.expect_sym('=', "'=' after a name")?;
        out.push((name, p.value()?));
    }
    Ok(out)
}

/// A config file turned into settings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings of the chosen server.
    pub settings: Settings,
    /// One line per directive that fake-mongrel2 does not emulate.
    pub warnings: Vec<String>,
}

struct Resolver<'a> {
    vars: HashMap<&'a str, &'a Value>,
}

impl<'a> Resolver<'a> {
    fn deref(&self, v: &'a Value) -> Result<&'a Value, ConfigError> {
        let mut v = v;
        for _ in 0..32 {
            match v {
                Value::Ref(name) => {
                    v = self.vars.get(name.as_str()).copied().ok_or_else(|| {
                        ConfigError::Invalid(format!("`{name}` is used but never assigned"))
                    })?;
                }
                other => return Ok(other),
            }
        }
        Err(ConfigError::Invalid("reference loop".into()))
    }
}

fn as_str(v: &Value, what: &str) -> Result<String, ConfigError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Num(n) => Ok(n.to_string()),
        other => Err(ConfigError::Invalid(format!(
            "{what}: expected a string, found {other:?}"
        ))),
    }
}

fn as_num(v: &Value, what: &str) -> Result<i64, ConfigError> {
    match v {
        Value::Num(n) => Ok(*n),
        Value::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("{what}: expected a number, found {s:?}"))),
        other => Err(ConfigError::Invalid(format!(
            "{what}: expected a number, found {other:?}"
        ))),
    }
}

/// Loads a config: the server whose uuid is `server_uuid` (or the first in `servers`).
pub fn load(src: &str, server_uuid: Option<&str>) -> Result<Loaded, ConfigError> {
    let assignments = parse_assignments(src)?;
    let mut r = Resolver {
        vars: HashMap::new(),
    };
    for (name, value) in &assignments {
        r.vars.insert(name.as_str(), value);
    }
    let mut warnings = Vec::new();
    let mut settings = Settings {
        upload_temp_store: None,
        ..Settings::default()
    };
    settings.handlers.clear();

    // settings = {...}
    if let Some(v) = r.vars.get("settings") {
        let Value::Dict(items) = r.deref(v)? else {
            return Err(ConfigError::Invalid("`settings` must be a dict".into()));
        };
        for (k, v) in items {
            let key = as_str(r.deref(k)?, "settings key")?;
            let v = r.deref(v)?;
            match key.as_str() {
                "limits.content_length" => {
                    settings.content_length_limit =
                        u64::try_from(as_num(v, &key)?).map_err(|_| {
                            ConfigError::Invalid("limits.content_length is negative".into())
                        })?;
                }
                "limits.buffer_size" => {
                    settings.buffer_size = usize::try_from(as_num(v, &key)?)
                        .ok()
                        .filter(|n| *n >= 64)
                        .ok_or_else(|| {
                            ConfigError::Invalid("limits.buffer_size below 64".into())
                        })?;
                }
                "limits.header_count" => {
                    settings.header_count = usize::try_from(as_num(v, &key)?).map_err(|_| {
                        ConfigError::Invalid("limits.header_count is negative".into())
                    })?;
                }
                "limits.handler_targets" => {
                    settings.handler_targets = usize::try_from(as_num(v, &key)?)
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            ConfigError::Invalid("limits.handler_targets below 1".into())
                        })?;
                }
                "limits.min_ping"
                | "limits.min_read_rate"
                | "limits.min_write_rate"
                | "limits.kill_limit"
                | "limits.tick_timer" => {
                    let n = u64::try_from(as_num(v, &key)?)
                        .map_err(|_| ConfigError::Invalid(format!("{key} is negative")))?;
                    let l = &mut settings.limits;
                    match key.as_str() {
                        "limits.min_ping" => l.min_ping = n,
                        "limits.min_read_rate" => l.min_read_rate = n,
                        "limits.min_write_rate" => l.min_write_rate = n,
                        "limits.kill_limit" => l.kill_limit = u32::try_from(n).unwrap_or(u32::MAX),
                        _ => l.tick_timer = n.max(1),
                    }
                }
                "upload.temp_store" => settings.upload_temp_store = Some(as_str(v, &key)?),
                "upload.temp_store_mode" => {
                    let text = as_str(v, &key)?;
                    settings.upload_mode = u32::from_str_radix(text.trim(), 8).map_err(|_| {
                        ConfigError::Invalid(format!(
                            "upload.temp_store_mode: expected octal, found {text:?}"
                        ))
                    })?;
                }
                "server.daemonize" if as_num(v, &key).ok() == Some(0) => {}
                other => warnings.push(format!(
                    "settings: `{other}` is not emulated by fake-mongrel2 (ignored)"
                )),
            }
        }
    }

    // the server
    let servers: Vec<&Value> = match r.vars.get("servers") {
        Some(v) => match r.deref(v)? {
            Value::List(items) => items.iter().map(|i| r.deref(i)).collect::<Result<_, _>>()?,
            _ => return Err(ConfigError::Invalid("`servers` must be a list".into())),
        },
        None => assignments
            .iter()
            .filter(|(_, v)| matches!(v, Value::Call(n, _) if n == "Server"))
            .map(|(_, v)| v)
            .collect(),
    };
    let mut chosen = None;
    for s in &servers {
        let args = server_args(s)?;
        let uuid = args
            .iter()
            .find(|(k, _)| k == "uuid")
            .map(|(_, v)| r.deref(v).and_then(|v| as_str(v, "uuid")))
            .transpose()?;
        if server_uuid.is_none() || uuid.as_deref() == server_uuid {
            chosen = Some(args);
            break;
        }
    }
    let Some(args) = chosen else {
        return Err(ConfigError::Invalid(match server_uuid {
            Some(u) => format!("no Server with uuid {u:?}"),
            None => "no Server in the config".into(),
        }));
    };
    if server_uuid.is_none() && servers.len() > 1 {
        warnings.push(format!(
            "{} servers in the config: only the first is run",
            servers.len()
        ));
    }
    let mut bind_addr = "0.0.0.0".to_string();
    let mut port = 6767;
    let mut hosts: Vec<&Value> = Vec::new();
    let mut default_host = None;
    for (k, v) in args {
        let v = r.deref(v)?;
        match k.as_str() {
            "bind_addr" => bind_addr = as_str(v, k)?,
            "port" => port = as_num(v, k)?,
            "chroot" => settings.chroot = Some(as_str(v, k)?.into()),
            "hosts" => match v {
                Value::List(items) => {
                    for i in items {
                        hosts.push(r.deref(i)?);
                    }
                }
                _ => return Err(ConfigError::Invalid("Server hosts must be a list".into())),
            },
            "default_host" => default_host = Some(as_str(v, k)?),
            "uuid" | "name" => {}
            other => warnings.push(format!(
                "Server: `{other}` is not emulated by fake-mongrel2 (ignored)"
            )),
        }
    }
    settings.listen = format!("{bind_addr}:{port}");

    // hosts: the default host (or the first) gives the routes
    let mut host_args = Vec::new();
    for h in &hosts {
        match h {
            Value::Call(n, a) if n == "Host" => host_args.push(a),
            other => {
                return Err(ConfigError::Invalid(format!(
                    "Server hosts entries must be Host(...), found {other:?}"
                )));
            }
        }
    }
    let host_name = |a: &Vec<(String, Value)>| -> Option<String> {
        a.iter()
            .find(|(k, _)| k == "name")
            .and_then(|(_, v)| r.deref(v).ok())
            .and_then(|v| as_str(v, "name").ok())
    };
    let chosen_host = host_args
        .iter()
        .find(|a| default_host.is_some() && host_name(a) == default_host)
        .or(host_args.first())
        .copied();
    if host_args.len() > 1 {
        warnings.push(format!(
            "{} hosts: virtual hosting is not emulated, every request uses host {:?}",
            host_args.len(),
            chosen_host.and_then(host_name).unwrap_or_default()
        ));
    }
    let mut handler_vars: Vec<*const Value> = Vec::new();
    if let Some(a) = chosen_host {
        for (k, v) in a {
            match k.as_str() {
                "name" => {}
                "routes" => {
                    let Value::Dict(routes) = r.deref(v)? else {
                        return Err(ConfigError::Invalid("Host routes must be a dict".into()));
                    };
                    for (pat, target) in routes {
                        let pattern = as_str(r.deref(pat)?, "route pattern")?;
                        let target_name = match target {
                            Value::Ref(n) => n.clone(),
                            _ => "handler".into(),
                        };
                        let t = r.deref(target)?;
                        match t {
                            Value::Call(n, hargs) if n == "Handler" => {
                                let key: *const Value = t;
                                let idx = match handler_vars.iter().position(|p| *p == key) {
                                    Some(i) => i,
                                    None => {
                                        settings.handlers.push(handler_spec(
                                            &r,
                                            &target_name,
                                            hargs,
                                            &mut warnings,
                                        )?);
                                        handler_vars.push(key);
                                        handler_vars.len() - 1
                                    }
                                };
                                if pattern.contains('(') {
                                    warnings.push(format!(
                                        "route {pattern:?}: regex patterns are not emulated, matched by its literal prefix"
                                    ));
                                }
                                settings.routes.push(RouteSpec {
                                    pattern: pattern.into_bytes(),
                                    handler: idx,
                                });
                            }
                            Value::Call(n, _) => warnings.push(format!(
                                "route {pattern:?}: {n}(...) targets are not emulated (route ignored)"
                            )),
                            other => {
                                return Err(ConfigError::Invalid(format!(
                                    "route {pattern:?}: expected a Handler, found {other:?}"
                                )));
                            }
                        }
                    }
                }
                other => warnings.push(format!(
                    "Host: `{other}` is not emulated by fake-mongrel2 (ignored)"
                )),
            }
        }
    }
    if settings.handlers.is_empty() {
        return Err(ConfigError::Invalid(
            "the server has no route to a Handler".into(),
        ));
    }
    Ok(Loaded { settings, warnings })
}

fn server_args(v: &Value) -> Result<&Vec<(String, Value)>, ConfigError> {
    match v {
        Value::Call(n, args) if n == "Server" => Ok(args),
        other => Err(ConfigError::Invalid(format!(
            "`servers` entries must be Server(...), found {other:?}"
        ))),
    }
}

fn handler_spec(
    r: &Resolver<'_>,
    name: &str,
    args: &[(String, Value)],
    warnings: &mut Vec<String>,
) -> Result<HandlerSpec, ConfigError> {
    let mut h = HandlerSpec::new("", "");
    h.name = name.to_string();
    let mut have = (false, false, false);
    for (k, v) in args {
        let v = r.deref(v)?;
        match k.as_str() {
            "send_spec" => {
                h.send_spec = as_str(v, k)?;
                have.0 = true;
            }
            "recv_spec" => {
                h.recv_spec = as_str(v, k)?;
                have.1 = true;
            }
            "send_ident" => {
                h.send_ident = as_str(v, k)?.into_bytes();
                have.2 = true;
            }
            "recv_ident" => h.recv_ident = as_str(v, k)?.into_bytes(),
            "protocol" => {
                h.protocol = match as_str(v, k)?.as_str() {
                    "json" => HeaderProtocol::Json,
                    "tnetstring" => HeaderProtocol::Tnetstring,
                    other => {
                        return Err(ConfigError::Invalid(format!(
                            "Handler {name}: protocol must be 'json' or 'tnetstring', found {other:?}"
                        )));
                    }
                }
            }
            "raw_payload" => h.raw_payload = as_num(v, k)? != 0,
            other => warnings.push(format!(
                "Handler {name}: `{other}` is not emulated by fake-mongrel2 (ignored)"
            )),
        }
    }
    if !(have.0 && have.1 && have.2) {
        return Err(ConfigError::Invalid(format!(
            "Handler {name}: send_spec, recv_spec and send_ident are required"
        )));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = include_str!("../../fixtures/mongrel2/mongrel2.conf");

    #[test]
    fn loads_the_reference_config() {
        let l = load(CONF, None).unwrap();
        let s = &l.settings;
        assert_eq!(s.listen, "127.0.0.1:16080");
        assert_eq!(s.content_length_limit, 2048);
        assert_eq!(s.upload_temp_store.as_deref(), Some("/tmp/upload.XXXXXX"));
        assert_eq!(s.upload_mode, 0o644);
        assert_eq!(
            s.chroot.as_deref(),
            Some(std::path::Path::new("/tmp/m2real"))
        );
        assert_eq!(s.handlers.len(), 2);
        assert_eq!(s.handlers[0].name, "json_handler");
        assert_eq!(s.handlers[0].send_spec, "tcp://127.0.0.1:16997");
        assert_eq!(s.handlers[1].protocol, HeaderProtocol::Tnetstring);
        assert_eq!(
            s.handlers[1].send_ident,
            b"66666666-7777-4888-9999-aaaaaaaaaaaa"
        );
        assert_eq!(s.route(b"/tnet/x"), Some((&b"/tnet/"[..], 1)));
        assert_eq!(s.route(b"<chat"), Some((&b"<chat"[..], 0)));
        let w = l.warnings.join("\n");
        assert!(w.contains("access_log"), "{w}");
        assert!(w.contains("zeromq.threads"), "{w}");
        assert!(!w.contains("daemonize"), "{w}");
    }

    #[test]
    fn unsupported_targets_and_syntax_errors() {
        let src = "h = Handler(send_spec='a', send_ident='x', recv_spec='b', recv_ident='', protocol='json')\n\
                   d = Dir(base='static/', index_file='index.html', default_ctype='text/plain')\n\
                   s = Server(uuid='u', port=1, bind_addr='127.0.0.1', hosts=[Host(name='h', routes={'/': h, '/static/': d})])\n\
                   servers = [s]\n";
        let l = load(src, None).unwrap();
        assert_eq!(l.settings.routes.len(), 1);
        assert!(
            l.warnings.iter().any(|w| w.contains("Dir(...)")),
            "{:?}",
            l.warnings
        );
        assert!(matches!(
            load("x = ", None),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            load("x = {'a': 1,}", None),
            Err(ConfigError::Invalid(_)) | Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            load("servers = [nope]", None),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn timeout_limits_are_read_by_their_mongrel2_names() {
        let base = "h = Handler(send_spec='a', send_ident='x', recv_spec='b', recv_ident='', protocol='json')\n\
                    s = Server(uuid='u', port=1, bind_addr='127.0.0.1', hosts=[Host(name='h', routes={'/': h})])\n\
                    servers = [s]\n";
        let l = load(base, None).unwrap();
        assert_eq!(l.settings.limits, crate::limits::Limits::default());
        let src = format!(
            "{base}settings = {{'limits.min_ping': 5, 'limits.min_read_rate': 0, \
             'limits.min_write_rate': 10, 'limits.kill_limit': 1, 'limits.tick_timer': 2}}\n"
        );
        let l = load(&src, None).unwrap();
        let lim = l.settings.limits;
        assert_eq!(
            (
                lim.min_ping,
                lim.min_read_rate,
                lim.min_write_rate,
                lim.kill_limit,
                lim.tick_timer
            ),
            (5, 0, 10, 1, 2)
        );
        assert!(
            l.warnings.iter().all(|w| !w.contains("limits.")),
            "{:?}",
            l.warnings
        );
        let bad = format!("{base}settings = {{'limits.min_ping': -1}}\n");
        assert!(matches!(load(&bad, None), Err(ConfigError::Invalid(_))));
    }
    #[test]
    fn header_count_is_read_and_defaults_to_1280() {
        let base = "h = Handler(send_spec='a', send_ident='x', recv_spec='b', recv_ident='', protocol='json')\n\
                    s = Server(uuid='u', port=1, bind_addr='127.0.0.1', hosts=[Host(name='h', routes={'/': h})])\n\
                    servers = [s]\n";
        assert_eq!(load(base, None).unwrap().settings.header_count, 1280);
        let l = load(
            &format!("{base}settings = {{'limits.header_count': 7}}\n"),
            None,
        )
        .unwrap();
        assert_eq!(l.settings.header_count, 7);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let bad = format!("{base}settings = {{'limits.header_count': -1}}\n");
        let err = load(&bad, None).unwrap_err().to_string();
        assert!(err.contains("limits.header_count is negative"), "{err}");
    }
}

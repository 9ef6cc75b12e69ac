//! The `fake-mongrel2` binary: a stand-in for Mongrel2 1.12 (see the library docs).

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use fake_mongrel2::{FakeMongrel2, HandlerSpec, RouteSpec, Settings, Tracer};
use protocol::HeaderProtocol;
use std::io::Write as _;

/// A faithful stand-in for Mongrel2 1.12 over real HTTP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Mongrel2 config file in m2sh syntax (Handler, Host, Server, settings).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// With --config: the uuid of the Server to run (default: the first).
    #[arg(long)]
    server_uuid: Option<String>,
    /// HTTP listen address (overrides the config's bind_addr/port): HOST:PORT, or :PORT for
    /// every IPv4 interface (0.0.0.0, Mongrel2's bind_addr default) [default: 127.0.0.1:6767].
    #[arg(long)]
    listen: Option<String>,
    /// send_spec: PUSH endpoint bound for requests (handlers connect PULL)
    /// [default: tcp://127.0.0.1:9997].
    #[arg(long)]
    send: Option<String>,
    /// recv_spec: SUB endpoint bound for replies (handlers connect PUB)
    /// [default: tcp://127.0.0.1:9996].
    #[arg(long)]
    recv: Option<String>,
    /// Header encoding of request frames [default: json].
    #[arg(long, value_parser = ["json", "tnetstring"])]
    protocol: Option<String>,
    /// send_ident: the SENDER field of request frames
    /// [default: 11111111-2222-4333-8444-555555555555].
    #[arg(long)]
    send_ident: Option<String>,
    /// recv_ident: SUB subscription ('' = everything).
    #[arg(long)]
    recv_ident: Option<String>,
    /// Route pattern to the handler (repeatable; default '/').
    #[arg(long = "route")]
    routes: Vec<String>,
    /// limits.content_length: larger bodies take the upload path [default: 20480].
    #[arg(long)]
    content_length_limit: Option<u64>,
    /// upload.temp_store: mkstemp template [default: $TMPDIR/upload.XXXXXX].
    #[arg(long)]
    upload_temp_store: Option<String>,
    /// Server chroot: upload temp files live under it and are reported relative to it.
    #[arg(long)]
    chroot: Option<std::path::PathBuf>,
    /// upload.temp_store_mode (octal) [default: 0600].
    #[arg(long)]
    upload_mode: Option<String>,
    /// limits.buffer_size: largest request head [default: 4096].
    #[arg(long)]
    buffer_size: Option<usize>,
    /// limits.header_count: most distinct header names kept of a request head; every later
    /// header line is dropped [default: 1280].
    #[arg(long)]
    header_count: Option<usize>,
    /// limits.min_ping: seconds without a request before a connection fails the ping test
    /// (0 = off) [default: 120].
    #[arg(long)]
    min_ping: Option<u64>,
    /// limits.min_read_rate: bytes/s below which the read test fails (0 = off) [default: 300].
    #[arg(long)]
    min_read_rate: Option<u64>,
    /// limits.min_write_rate: bytes/s below which the write test fails (0 = off)
    /// [default: 300].
    #[arg(long)]
    min_write_rate: Option<u64>,
    /// limits.kill_limit: close a connection when more than this many of the three tests
    /// fail [default: 2].
    #[arg(long)]
    kill_limit: Option<u32>,
    /// limits.tick_timer: seconds between two sweeps of the tests [default: 10].
    #[arg(long)]
    tick_timer: Option<u64>,
    /// Most client connections held at once; more get 503 and are closed
    /// [default: the open-files limit (raised to its hard limit) minus 128].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Write every frame in and out as JSON lines to this file.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

fn settings_from(cli: &Cli) -> Result<Settings> {
    let mut s = if let Some(path) = &cli.config {
        let src = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let loaded = fake_mongrel2::config::load(&src, cli.server_uuid.as_deref())
            .with_context(|| format!("loading config {}", path.display()))?;
        for w in &loaded.warnings {
            eprintln!("fake-mongrel2: warning: {w}");
        }
        loaded.settings
    } else {
        let mut s = Settings {
            listen: "127.0.0.1:6767".into(),
            ..Settings::default()
        };
        s.handlers = vec![HandlerSpec::new(
            "tcp://127.0.0.1:9997",
            "tcp://127.0.0.1:9996",
        )];
        s
    };
    if let Some(l) = &cli.listen {
        s.listen.clone_from(l);
    }
    let single = cli.config.is_none();
    let per_handler = cli.send.is_some()
        || cli.recv.is_some()
        || cli.protocol.is_some()
        || cli.send_ident.is_some()
        || cli.recv_ident.is_some();
    if per_handler && !single && s.handlers.len() > 1 {
        bail!(
            "--send/--recv/--protocol/--send-ident/--recv-ident apply to one handler; the config has {}",
            s.handlers.len()
        );
    }
    let h = &mut s.handlers[0];
    if let Some(v) = &cli.send {
        h.send_spec.clone_from(v);
    }
    if let Some(v) = &cli.recv {
        h.recv_spec.clone_from(v);
    }
    if let Some(v) = &cli.send_ident {
        h.send_ident = v.clone().into_bytes();
    }
    if let Some(v) = &cli.recv_ident {
        h.recv_ident = v.clone().into_bytes();
    }
    if let Some(p) = &cli.protocol {
        h.protocol = if p == "json" {
            HeaderProtocol::Json
        } else {
            HeaderProtocol::Tnetstring
        };
    }
    if !cli.routes.is_empty() {
        if !single {
            bail!("--route cannot be combined with --config (routes come from the config's Host)");
        }
        s.routes = cli
            .routes
            .iter()
            .map(|r| RouteSpec {
                pattern: r.clone().into_bytes(),
                handler: 0,
            })
            .collect();
    }
    if let Some(v) = cli.content_length_limit {
        s.content_length_limit = v;
    }
    if let Some(v) = &cli.upload_temp_store {
        s.upload_temp_store = Some(v.clone());
    }
    if let Some(v) = &cli.chroot {
        s.chroot = Some(v.clone());
    }
    if let Some(v) = &cli.upload_mode {
        s.upload_mode = u32::from_str_radix(v.trim(), 8)
            .with_context(|| format!("--upload-mode: expected octal like 0600, got {v:?}"))?;
    }
    if let Some(v) = cli.buffer_size {
        if v < 64 {
            bail!("--buffer-size: expected at least 64, got {v}");
        }
        s.buffer_size = v;
    }
    if let Some(v) = cli.header_count {
        s.header_count = v;
    }
    let l = &mut s.limits;
    if let Some(v) = cli.min_ping {
        l.min_ping = v;
    }
    if let Some(v) = cli.min_read_rate {
        l.min_read_rate = v;
    }
    if let Some(v) = cli.min_write_rate {
        l.min_write_rate = v;
    }
    if let Some(v) = cli.kill_limit {
        l.kill_limit = v;
    }
    if let Some(v) = cli.tick_timer {
        if v == 0 {
            bail!("--tick-timer: expected at least 1 second, got 0");
        }
        l.tick_timer = v;
    }
    if let Some(v) = cli.max_connections {
        if v == 0 {
            bail!("--max-connections: expected at least 1, got 0");
        }
        l.max_connections = Some(v);
    }
    Ok(s)
}

/// Raises the soft open-files limit to the hard one (each connection is one descriptor).
fn raise_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// The `http://` URLs a listener bound to `addr` answers on: the address itself, or for an
/// unspecified address every local IPv4 interface address.
fn listening_urls(addr: std::net::SocketAddr) -> Vec<String> {
    if !addr.ip().is_unspecified() {
        return vec![format!("http://{addr}")];
    }
    let mut urls = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once with freeifaddrs.
    unsafe {
        if libc::getifaddrs(&mut ifap) == 0 {
            let mut p = ifap;
            while !p.is_null() {
                let ifa = &*p;
                if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
                {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    urls.push(format!("http://{ip}:{}", addr.port()));
                }
                p = ifa.ifa_next;
            }
            libc::freeifaddrs(ifap);
        }
    }
    urls
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let settings = settings_from(&cli)?;
    raise_nofile_limit();
    if let Some(template) = &settings.upload_temp_store {
        let host = match &settings.chroot {
            Some(root) => root.join(template.trim_start_matches('/')),
            None => std::path::PathBuf::from(template),
        };
        if let Some(dir) = host.parent().filter(|d| !d.is_dir()) {
            eprintln!(
                "fake-mongrel2: warning: upload directory {} does not exist: big uploads will get 413",
                dir.display()
            );
        }
    }
    let tracer = Tracer::default();
    let trace_rx = cli.trace.as_ref().map(|_| tracer.subscribe());
    let names: Vec<String> = settings.handlers.iter().map(|h| h.name.clone()).collect();
    let m2 = FakeMongrel2::start_with_tracer(settings, tracer)?;
    let addr = m2.http_addr();
    if addr.ip().is_unspecified() {
        eprintln!("fake-mongrel2: listening on {addr} (every interface):");
        for url in listening_urls(addr) {
            eprintln!("fake-mongrel2:   {url}");
        }
    } else {
        eprintln!("fake-mongrel2: listening on http://{addr}");
    }
    eprintln!(
        "fake-mongrel2: limits: min_ping {}s, min_read_rate {} B/s, min_write_rate {} B/s, kill_limit {}, tick_timer {}s, max {} connections",
        m2.settings().limits.min_ping,
        m2.settings().limits.min_read_rate,
        m2.settings().limits.min_write_rate,
        m2.settings().limits.kill_limit,
        m2.settings().limits.tick_timer,
        m2.connection_cap()
    );
    for (i, name) in names.iter().enumerate() {
        eprintln!(
            "fake-mongrel2: handler {name}: send_spec {} recv_spec {}",
            m2.send_endpoint(i),
            m2.recv_endpoint(i)
        );
    }
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    install_signal_handlers(stop_tx);
    if let (Some(path), Some(rx)) = (&cli.trace, trace_rx) {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        std::thread::spawn(move || {
            while let Ok(ev) = rx.recv() {
                let name = names.get(ev.handler).map_or("?", String::as_str);
                let _ = writeln!(file, "{}", ev.to_json_line(name));
                let _ = file.flush();
            }
        });
    }
    let _ = stop_rx.recv();
    eprintln!("fake-mongrel2: stopping");
    m2.stop();
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store is async-signal-safe; a watcher thread does the rest.
    SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGINT/SIGTERM (Mongrel2 stops on SIGINT) end the process cleanly.
fn install_signal_handlers(tx: std::sync::mpsc::Sender<()>) {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(move || {
        while !SIGNALLED.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = tx.send(());
    });
}

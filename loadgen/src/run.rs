//! The coordinator of a run: builds the request mix, starts the workers (HTTP threads or the
//! ZeroMQ worker), gathers their per-second figures, shows live progress on a terminal and
//! returns the merged result.

use crate::clock::now_ns;
use crate::config::{RunConfig, parse_url};
use crate::http::{self, HttpTarget};
use crate::report::RunResult;
use crate::scenario::{Body, RequestSpec, Scenario, pattern, render_http};
use crate::stats::{Report, Second, Totals};
use crate::sys;
use crate::worker::{Plan, StartGate};
use crate::zmq_mode::{self, ZmqTarget};
use anyhow::{Context as _, anyhow, bail};
use std::io::{IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::mpsc;

/// The request mix of a run: the scenario file, or one request from the flags.
pub fn build_scenario(cfg: &RunConfig, default_path: &str) -> anyhow::Result<Scenario> {
    if let Some(p) = &cfg.scenario {
        return Ok(Scenario::load(p)?);
    }
    let mut headers = Vec::new();
    for h in &cfg.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("expected a header as \"Name: value\", found {h:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = if let Some(b) = &cfg.body {
        Body::Bytes(b.clone().into_bytes().into())
    } else if let Some(p) = &cfg.body_file {
        Body::Bytes(
            std::fs::read(p)
                .with_context(|| format!("reading --body-file {}", p.display()))?
                .into(),
        )
    } else if let Some(n) = cfg.body_size {
        Body::Generated(n)
    } else {
        Body::Empty
    };
    let spec = RequestSpec {
        name: "request".into(),
        weight: 1,
        method: cfg.method.clone(),
        path: default_path.to_string(),
        headers,
        body,
    };
    Scenario::new(vec![spec]).map_err(|e| anyhow!(e))
}

/// Run the load described by `cfg`.
pub fn run(cfg: RunConfig) -> anyhow::Result<RunResult> {
    if let Some(r) = cfg.rps
        && !(r.is_finite() && r > 0.0 && r <= crate::config::MAX_RPS)
    {
        bail!(
            "--rps must be a positive number up to {}, found {r:?}",
            crate::config::MAX_RPS
        );
    }
    let url = match (&cfg.url, &cfg.zmq) {
        (Some(u), _) => parse_url(u).map_err(|e| anyhow!(e))?,
        (None, Some(_)) => parse_url("http://localhost/").map_err(|e| anyhow!(e))?,
        (None, None) => bail!("a target URL is required (or --zmq SEND,RECV)"),
    };
    let scenario = Arc::new(build_scenario(&cfg, &url.path)?);
    let ns = |d: std::time::Duration| d.as_nanos() as u64;
    let (tx, rx) = mpsc::channel::<Report>();
    let base_plan = |worker: usize, workers: usize, max_inflight: usize| Plan {
        worker,
        workers,
        rate: if cfg.max_rps { None } else { cfg.rps },
        requests: cfg.requests,
        poisson_seed: cfg.poisson.then_some(cfg.seed),
        seed: cfg.seed,
        duration: ns(cfg.duration),
        timeout: ns(cfg.timeout),
        spin: ns(cfg.spin),
        warmup_timeout: ns(cfg.warmup_timeout),
        max_inflight,
        saturation: cfg.on_saturation,
        realtime: cfg.realtime,
        trace: cfg.trace_frames,
        reply_spin: ns(cfg.reply_spin),
        tx: tx.clone(),
    };
    let cpu0 = sys::process_cpu_time();
    let mut handles = Vec::new();
    let transport;
    let target_desc;
    let gate;
    if let Some(z) = &cfg.zmq {
        transport = "zmq";
        let (send, recv) = z
            .split_once(',')
            .ok_or_else(|| anyhow!("expected --zmq SEND,RECV, found {z:?}"))?;
        let zt = ZmqTarget {
            send: send.trim().to_string(),
            recv: recv.trim().to_string(),
            protocol: cfg.protocol,
            sender: cfg.sender_id.clone(),
            pattern: cfg.pattern.clone(),
            host: url.authority.clone(),
            http10: cfg.http10,
        };
        let ctx = zmq::Context::new();
        let (push, sub, send_ep, recv_ep) = zmq_mode::bind(&ctx, &zt)?;
        eprintln!("loadgen: zmq PUSH bound at {send_ep} SUB bound at {recv_ep}");
        target_desc = format!("PUSH {send_ep} SUB {recv_ep} {}", url.path);
        let max_inflight = cfg
            .max_inflight
            .unwrap_or(if cfg.max_rps { 64 } else { 1024 });
        let plan = base_plan(0, 1, max_inflight);
        let g = Arc::new(StartGate::new(1));
        gate = g.clone();
        let sc = scenario.clone();
        handles.push(
            std::thread::Builder::new()
                .name("loadgen-zmq".into())
                .spawn(move || {
                    let _ctx = ctx;
                    zmq_mode::run(plan, zt, push, sub, sc, g)
                })?,
        );
    } else {
        transport = "http";
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", url.authority))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", url.authority))?;
        target_desc = format!("http://{}{}", url.authority, url.path);
        let conns = cfg.connections.max(1);
        let workers = cfg.threads.clamp(1, conns);
        let max_inflight = cfg.max_inflight.unwrap_or(conns).max(1);
        let rendered: Arc<Vec<_>> = Arc::new(
            scenario
                .entries
                .iter()
                .map(|e| render_http(e, &url.authority, cfg.http10))
                .collect(),
        );
        let pat = Arc::new(pattern());
        let g = Arc::new(StartGate::new(workers));
        gate = g.clone();
        for w in 0..workers {
            let share = |n: usize| n / workers + usize::from(w < n % workers);
            let plan = base_plan(w, workers, share(max_inflight).max(1));
            let target = HttpTarget {
                addr,
                connections: share(conns),
                rendered: rendered.clone(),
                pattern: pat.clone(),
            };
            let (sc, g) = (scenario.clone(), g.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-http-{w}"))
                    .spawn(move || http::run(plan, target, sc, g).map_err(anyhow::Error::from))?,
            );
        }
    }
    drop(tx);
    let workers = handles.len();

    // Gather.
    let live = !cfg.quiet && std::io::stderr().is_terminal();
    let mut timeline: Vec<Second> = Vec::new();
    let mut reported: Vec<usize> = Vec::new();
    let mut totals = Totals::new(scenario.entries.len());
    let mut shown = 0usize;
    let mut last_completion = 0u64;
    while let Ok(msg) = rx.recv() {
        match msg {
            Report::Second { index, second } => {
                if timeline.len() <= index {
                    timeline.resize_with(index + 1, Second::default);
                    reported.resize(index + 1, 0);
                }
                if second.completed > 0 {
                    last_completion = now_ns();
                }
                timeline[index].merge(&second);
                reported[index] += 1;
                while live && shown < reported.len() && reported[shown] >= workers {
                    let s = &timeline[shown];
                    let p99 = if s.corrected.is_empty() {
                        0
                    } else {
                        s.corrected.value_at_quantile(0.99)
                    };
                    eprint!(
                        "\r\x1b[2K[{:>4}s] sent {:>8}/s  completed {:>8}/s  p99 {:>9.3} ms  failed {:>6}  dropped {:>6}",
                        shown + 1,
                        s.sent,
                        s.completed,
                        p99 as f64 / 1e6,
                        s.failed,
                        s.dropped
                    );
                    let _ = std::io::stderr().flush();
                    shown += 1;
                }
            }
            Report::Done(t) => totals.merge(&t),
        }
    }
    if live {
        eprintln!();
    }
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("a worker thread panicked".into()),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    let cpu = sys::process_cpu_time().saturating_sub(cpu0);
    let t0 = gate.t0();
    let (wall_now, mono_now) = (std::time::SystemTime::now(), now_ns());
    // t0 on the wall clock: the monotonic clock says how long ago it was.
    let start = wall_now
        .checked_sub(std::time::Duration::from_nanos(mono_now.saturating_sub(t0)))
        .unwrap_or(wall_now);
    let wall = std::time::Duration::from_nanos(last_completion.max(mono_now).saturating_sub(t0));
    // Seconds past the last one with any activity are noise from the drain.
    while timeline.len() > 1
        && timeline
            .last()
            .is_some_and(|s| s.intended + s.sent + s.completed + s.failed + s.dropped == 0)
    {
        timeline.pop();
    }
    let names = scenario.entries.iter().map(|e| e.name.clone()).collect();
    Ok(RunResult::new(
        cfg,
        transport,
        target_desc,
        start,
        timeline,
        totals,
        cpu,
        wall,
        names,
    ))
}

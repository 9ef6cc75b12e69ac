//! Runs the differential fuzzer (real Mongrel2 vs fake-mongrel2 on generated exchanges) for as
//! many cases as asked:
//!
//! `cargo run -p conformance --example differential_fuzz -- --cases 5000 --seed 100000 --workers 6`
//!
//! Options: `--cases N` (default 1000), `--seed S` first seed (default 0), `--workers W` server
//! pairs run concurrently (default 4), `--settle-ms MS` quiet time ending a settle (default
//! 200), `--shrink N` runs spent minimising each divergence (default 60, 0 = off),
//! `--deadline-secs S` (start no new exchange after S seconds). Prints each
//! divergence (seed, minimised exchange, both transcripts) as it is found and a summary line;
//! exits 1 when any divergence was confirmed.

use conformance::differential::fuzz::{FuzzConfig, fuzz};
use std::time::Duration;

fn main() {
    let mut cfg = FuzzConfig {
        cases: 1000,
        workers: 4,
        progress_every: 100,
        ..FuzzConfig::default()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} expects a number"))
        };
        match a.as_str() {
            "--cases" => cfg.cases = value("--cases"),
            "--seed" => cfg.first_seed = value("--seed"),
            "--workers" => cfg.workers = value("--workers") as usize,
            "--settle-ms" => cfg.settle = Duration::from_millis(value("--settle-ms")),
            "--shrink" => cfg.shrink_budget = value("--shrink") as usize,
            "--deadline-secs" => {
                cfg.deadline = Some(Duration::from_secs(value("--deadline-secs")));
            }
            other => {
                eprintln!(
                    "unknown argument {other:?}; expected --cases N, --seed S, --workers W, --settle-ms MS, --shrink N, --deadline-secs S"
                );
                std::process::exit(2);
            }
        }
    }
    let rep = fuzz(&cfg);
    println!(
        "differential fuzz: seeds {}..{}: {} exchanges, {} agreed, {} confirmed divergences {:?}, {} differed once and agreed on the re-run {:?}, in {:?}",
        cfg.first_seed,
        cfg.first_seed + cfg.cases,
        rep.run,
        rep.agreed,
        rep.divergences.len(),
        rep.divergences.iter().map(|d| d.seed).collect::<Vec<_>>(),
        rep.unconfirmed.len(),
        rep.unconfirmed,
        rep.elapsed
    );
    if !rep.divergences.is_empty() {
        std::process::exit(1);
    }
}

//! The differential fuzzer at CI size: a fixed seed range of generated exchanges
//! (`conformance::differential::generate`) against the real Mongrel2 and fake-mongrel2 from one
//! config; every transcript must agree. `M2_FUZZ_CASES` (default 240) and `M2_FUZZ_SEED`
//! (default 0) change the range, `M2_FUZZ_WORKERS` (default 2) the server pairs; the example
//! `differential_fuzz` runs more (docs/differential.md).

use conformance::differential::fuzz::{FuzzConfig, fuzz};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn generated_exchanges_agree() {
    assert!(
        conformance::mongrel2::real_available(),
        "the differential fuzzer needs the real Mongrel2: apt-get install -y mongrel2-core sqlite3"
    );
    let cfg = FuzzConfig {
        first_seed: env_u64("M2_FUZZ_SEED", 0),
        cases: env_u64("M2_FUZZ_CASES", 240),
        workers: env_u64("M2_FUZZ_WORKERS", 2) as usize,
        progress_every: 50,
        ..FuzzConfig::default()
    };
    let rep = fuzz(&cfg);
    eprintln!(
        "differential fuzz: {} exchanges (seeds {}..{}), {} agreed, {} confirmed divergences, \
         {} differed once and agreed on the re-run {:?}, in {:?}",
        rep.run,
        cfg.first_seed,
        cfg.first_seed + cfg.cases,
        rep.agreed,
        rep.divergences.len(),
        rep.unconfirmed.len(),
        rep.unconfirmed,
        rep.elapsed
    );
    assert_eq!(rep.run, cfg.cases);
    assert!(
        rep.divergences.is_empty(),
        "{} of {} generated exchanges diverge:\n{}",
        rep.divergences.len(),
        rep.run,
        rep.divergences
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

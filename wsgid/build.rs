//! Stamps the build with a digest of the sources of the master (this crate), the worker
//! extension (`../wsgid-python`) and the HTTP framing both build on (`../http1`), so a worker can tell its master's build from another
//! (`wsgid::launch::BUILD`). The digest depends on the sources only: every build of one tree
//! agrees, whatever features or profile.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut all = Vec::new();
    for dir in [
        root.join("src"),
        root.join("../wsgid-python/src"),
        root.join("../http1/src"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
        files(&dir, &mut all);
    }
    all.sort();
    let mut h = DefaultHasher::new();
    for p in &all {
        if let (Ok(rel), Ok(bytes)) = (p.strip_prefix(&root), std::fs::read(p)) {
            h.write(rel.to_string_lossy().as_bytes());
            h.write(&bytes);
        }
    }
    println!("cargo:rustc-env=WSGID_SOURCE_DIGEST={:016x}", h.finish());
}

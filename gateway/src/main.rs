//! The `wsgid` binary. Its command line arrives with the worker (issue 3).

fn main() {
    eprintln!("wsgid: not built yet; see README.md for the state of each part");
    std::process::exit(2);
}

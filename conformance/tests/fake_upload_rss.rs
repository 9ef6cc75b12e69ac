//! fake-mongrel2 spools big uploads to disk in flat memory: the server process (the built
//! binary) streams a body from a generator into its temp file while its peak RSS (VmHWM)
//! grows by less than 20 MiB. 200 MiB runs always; the 1 GiB run is ignored by default
//! (`cargo nextest run -p conformance --test fake_upload_rss --run-ignored all`).

use conformance::fake::FakeProcess;
use conformance::mongrel2::{Client, TestHandler, free_port};
use protocol::{Kind, parse_request};
use std::io::Write;
use std::time::Duration;

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn upload_with_flat_memory(total: u64) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let (port, send, recv) = (free_port(), free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let send_spec = format!("tcp://127.0.0.1:{send}");
    let recv_spec = format!("tcp://127.0.0.1:{recv}");
    let chroot = dir.path().display().to_string();
    let mut p = FakeProcess::start(
        &[
            "--listen",
            &listen,
            "--send",
            &send_spec,
            "--recv",
            &recv_spec,
            "--chroot",
            &chroot,
            "--upload-temp-store",
            "/tmp/upload.XXXXXX",
        ],
        port,
        &dir.path().join("stderr"),
    );
    let pid = p.child.id();
    let h = TestHandler::connect(&send_spec, &recv_spec);
    // warm up: one request and one small upload through every code path
    let mut c = Client::connect(listen.parse().unwrap());
    c.send(b"POST /warm HTTP/1.1\r\nContent-Length: 30000\r\n\r\n");
    c.send(&[7u8; 30000]);
    h.expect("warm upload-start");
    h.expect("warm upload-done");
    let baseline = status_kib(pid, "VmRSS:");

    let mut c = Client::connect(listen.parse().unwrap());
    c.send(format!("POST /big HTTP/1.1\r\nContent-Length: {total}\r\n\r\n").as_bytes());
    let start = h.expect("upload-start");
    let r = parse_request(&start).unwrap();
    let Ok(Kind::UploadStart { path }) = r.kind() else {
        panic!("expected upload-start")
    };
    let host = conformance::mongrel2::host_path(dir.path(), path);
    // a generator: 1 MiB blocks with a counter, never the whole body in memory
    let mut block = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    let mut n = 0u64;
    while sent < total {
        block[..8].copy_from_slice(&n.to_le_bytes());
        let len = (total - sent).min(block.len() as u64) as usize;
        c.stream.write_all(&block[..len]).expect("body write");
        sent += len as u64;
        n += 1;
    }
    let done = h
        .recv(Duration::from_secs(300))
        .expect("upload-done within 300 s");
    assert!(matches!(
        parse_request(&done).unwrap().kind(),
        Ok(Kind::UploadDone { .. })
    ));
    let peak = status_kib(pid, "VmHWM:");
    let size = std::fs::metadata(&host).unwrap().len();
    std::fs::remove_file(&host).unwrap();
    assert_eq!(size, total, "the temp file holds the whole body");
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!(
        "upload of {} MiB: baseline RSS {baseline} KiB, peak {peak} KiB, growth {growth_mib:.2} MiB",
        total >> 20
    );
    assert!(
        growth_mib < 20.0,
        "peak RSS grew by {growth_mib:.2} MiB during a {total}-byte upload (expected < 20 MiB)"
    );
    assert!(p.interrupt().success());
}

#[test]
fn upload_200_mib_spools_with_flat_memory() {
    upload_with_flat_memory(200 << 20);
}

#[test]
#[ignore = "1 GiB of disk and time; run by hand with --run-ignored"]
fn upload_1_gib_spools_with_flat_memory() {
    upload_with_flat_memory(1 << 30);
}

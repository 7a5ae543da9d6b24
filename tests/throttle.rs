//! Priorities reach every thread of a run: the workers of a push and its main thread.

mod common;
use common::*;

#[test]
fn every_thread_runs_idle_and_niced_by_default() {
    if !have_ionice() {
        eprintln!("SKIPPED: ionice (util-linux) is not installed");
        return;
    }
    let src = Tree::new();
    for k in 0..8 {
        src.file(format!("f{k}"), &vec![k as u8; 1 << 20]);
    }
    let dst = Tree::new();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["push", "-q", "--jobs", "2", "--bwlimit", "1M"])
        .arg(src.path())
        .arg(dst.join("r"))
        .spawn()
        .unwrap();
    // The main thread and both workers.
    let seen = settled_priorities(child.id(), 3);
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.len() >= 3, "threads seen: {seen:?}");
    for (nice, io) in &seen {
        assert_eq!(*nice, 10, "{seen:?}");
        assert_eq!(io, "idle", "{seen:?}");
    }
}

#[test]
fn priorities_can_be_chosen_or_left_alone() {
    let src = Tree::new();
    src.file("f", b"x");
    let dst = Tree::new();
    let out = bin()
        .args(["push", "-q", "--ionice", "best-effort:7", "--nice", "3"])
        .arg(src.path())
        .arg(dst.join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    for bad in [
        &["--ionice", "realtime"][..],
        &["--nice", "42"],
        &["--iops-limit", "0"],
    ] {
        let out = bin()
            .arg("push")
            .args(bad)
            .arg(src.path())
            .arg(dst.join("r"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{bad:?}"
        );
    }
}

#[test]
fn the_summary_says_how_long_the_throttle_held_the_run() {
    let src = Tree::new();
    src.file("f", &vec![7u8; 3 << 20]);
    let dst = Tree::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["push", "--bwlimit", "4M"])
        .arg(src.path())
        .arg(dst.join("r"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // 3 MiB read and written at 4 MiB/s, past a 0.4 MiB burst: the workers waited.
    assert!(text.contains("; throttled "), "{text}");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["push", "--json", "--bwlimit", "4M", "--checksum"])
        .arg(src.path())
        .arg(dst.join("r"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(v["throttled_secs"].as_f64().is_some(), "{v}");
    assert!(v["throughput_bytes_per_sec"].as_f64().is_some(), "{v}");
}

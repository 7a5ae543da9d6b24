//! Priorities reach every thread of a run: the workers of a push and its main thread.

mod common;
use common::*;

#[test]
fn every_thread_runs_idle_and_niced_by_default() {
    require!(have_ionice(), "ionice (util-linux) is not installed");
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

/// Runs a throttled push with `args` and returns its threads' priorities once at least
/// three threads show (niceness `nice`, I/O class `io`), or as last seen.
fn priorities_of_a_push(args: &[&str], nice: i64, io: &str) -> Vec<(i64, String)> {
    let src = Tree::new();
    // 24 MiB at 1 MiB/s: the run outlasts the 20 s that priorities_once waits.
    for k in 0..24 {
        src.file(format!("f{k}"), &vec![k as u8; 1 << 20]);
    }
    let dst = Tree::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["push", "-q", "--jobs", "2", "--bwlimit", "1M"])
        .args(args)
        .arg(src.path())
        .arg(dst.join("r"))
        .spawn()
        .unwrap();
    let seen = priorities_once(child.id(), 3, nice, io);
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.len() >= 3, "threads seen: {seen:?}");
    seen
}

#[test]
fn priorities_can_be_chosen_or_left_alone() {
    require!(have_ionice(), "ionice (util-linux) is not installed");
    // Chosen: every thread, the workers too, at the given class, level and niceness.
    let seen = priorities_of_a_push(
        &["--ionice", "best-effort:7", "--nice", "3"],
        3,
        "best-effort: prio 7",
    );
    for (nice, io) in &seen {
        assert_eq!((*nice, io.as_str()), (3, "best-effort: prio 7"), "{seen:?}");
    }
    // Left alone: `--ionice none` keeps the class this test runs with.
    let own = thread_priorities(std::process::id());
    let own_class = own[0].1.split(':').next().unwrap_or("").to_string();
    assert_ne!(own_class, "idle", "the test itself runs idle: {own:?}");
    let seen = priorities_of_a_push(&["--ionice", "none", "--nice", "5"], 5, &own[0].1);
    for (nice, io) in &seen {
        assert_eq!(*nice, 5, "{seen:?}");
        assert!(
            io.split(':').next() == Some(own_class.as_str()),
            "--ionice none changed the class: {seen:?} (the test runs {own:?})"
        );
    }

    let src = Tree::new();
    src.file("f", b"x");
    let dst = Tree::new();
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
    // With --checksum the unchanged file is read on both sides: 6 MiB through a 4 MiB/s
    // bucket. The kernel counts the reads; the report must say the throttle held them.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"));
    cmd.args(["push", "--json", "--bwlimit", "4M", "--checksum"])
        .arg(src.path())
        .arg(dst.join("r"));
    let m = run_measured(cmd);
    assert_eq!(m.code(), Some(0), "{}", m.stderr());
    assert!(m.io.rchar >= 6 << 20, "both copies not read: {:?}", m.io);
    let v: serde_json::Value = serde_json::from_slice(&m.out.stdout).expect("json");
    assert_eq!(v["exit_code"], 0, "{v}");
    assert_eq!(v["unchanged"], 1, "{v}");
    let held = v["throttled_secs"].as_f64().unwrap_or(0.0);
    assert!(
        held > 0.0,
        "6 MiB at 4 MiB/s past a 0.4 MiB burst, never held: {v}"
    );
    assert!(v["throughput_bytes_per_sec"].as_f64().is_some(), "{v}");
}

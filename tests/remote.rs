//! The remote transport's own behaviour: pull, quoting of odd paths, refusing bad hosts,
//! noisy remote shells, missing remote binaries and silent peers.

mod common;
use common::*;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn pull_cmd(src: &Path, dst: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.arg("pull")
        .args(args)
        .args(rsh_args())
        .arg(remote(src))
        .arg(dst);
    c
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pull_restores_a_tree_and_a_second_pull_writes_nothing() {
    let src = Tree::new();
    src.file("a/b.txt", b"bee")
        .file("big.bin", &vec![7u8; 300_000])
        .symlink("a/link", "b.txt")
        .chmod("a/b.txt", 0o640)
        .mtime("a/b.txt", 1_600_000_000, 123_456_789);
    src.hardlink("a/b2.txt", "a/b.txt");
    let dst = Tree::new();
    let d = dst.join("restore");
    let out = pull_cmd(src.path(), &d, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(src.path(), &d);
    let out = pull_cmd(src.path(), &d, &["--json"]).output().unwrap();
    let j = json(&out);
    assert_eq!(
        (j["created"].as_u64(), j["updated"].as_u64()),
        (Some(0), Some(0)),
        "{j}"
    );
    // A change travels as a delta by default.
    let mut data = vec![7u8; 300_000];
    data[150_000] = 1;
    src.file("big.bin", &data)
        .mtime("big.bin", 1_600_000_100, 0);
    let out = pull_cmd(src.path(), &d, &["--json", "--delete"])
        .output()
        .unwrap();
    let j = json(&out);
    assert!(j["bytes_matched"].as_u64().unwrap() > 200_000, "{j}");
    assert_same_tree(src.path(), &d);
}

#[test]
fn pull_itemizes_and_dry_run_writes_nothing() {
    let src = Tree::new();
    src.file("x", b"1");
    let dst = Tree::new();
    let d = dst.join("r");
    let out = pull_cmd(src.path(), &d, &["-n"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "+f x"));
    assert!(!d.exists(), "a dry-run pull created DEST");
}

#[test]
fn pull_of_a_missing_remote_source_exits_3() {
    let dst = Tree::new();
    let out = pull_cmd(Path::new("/nonexistent/src"), &dst.join("r"), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/src"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn odd_remote_paths_are_never_interpreted_by_a_shell() {
    let marker = Tree::new();
    let m = marker.join("pwned");
    let names: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"quote'd \"q\"".to_vec(),
        format!("$(touch {})", m.display()).into_bytes(),
        format!("a;touch {};b", m.display()).into_bytes(),
        b"new\nline".to_vec(),
        b"caf\xe9".to_vec(),
    ];
    let base = Tree::new();
    for (k, n) in names.iter().enumerate() {
        let src = Tree::new();
        src.file("f", format!("{k}").as_bytes());
        let mut d = base.path().as_os_str().to_owned().into_vec();
        d.push(b'/');
        d.extend_from_slice(n);
        let d = std::path::PathBuf::from(OsString::from_vec(d));
        push_ok(Transport::Rsh, src.path(), &d, &[]);
        assert_same_tree(src.path(), &d);
        let back = Tree::new();
        let out = pull_cmd(&d, &back.join("r"), &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_same_tree(src.path(), &back.join("r"));
    }
    assert!(!m.exists(), "a remote path was run by a shell");
}

#[test]
fn a_host_starting_with_a_dash_is_refused() {
    let src = Tree::new();
    let out = bin()
        .args(["push", "-e", "/bin/false", "--"])
        .arg(src.path())
        .arg("-oProxyCommand=evil:dest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("starts with '-'"), "{}", stderr(&out));
}

#[test]
fn a_remote_path_starting_with_a_dash_is_a_path_not_an_option() {
    let src = Tree::new();
    src.file("f", b"dash").file("d/g", b"deeper");
    // The fake remote shell runs the remote command where the client runs: "-h" is
    // relative to this directory, as it would be to the remote home.
    let base = Tree::new();
    let out = bin()
        .current_dir(base.path())
        .arg("push")
        .args(rsh_args())
        .arg(src.path())
        .arg("testhost:-h")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Usage"));
    assert_same_tree(src.path(), &base.join("-h"));
    let back = Tree::new();
    let out = bin()
        .current_dir(base.path())
        .arg("pull")
        .args(rsh_args())
        .arg("testhost:-h")
        .arg(back.join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(src.path(), &back.join("r"));
}

#[test]
fn a_noisy_remote_shell_gets_a_clear_error() {
    let src = Tree::new();
    src.file("f", b"x");
    let dst = Tree::new();
    let noisy = format!(
        "sh -c 'echo Welcome to the secondary; exec {} \"$@\"' noisy",
        fake_rsh().display()
    );
    let out = bin()
        .args([
            "push",
            "--rsh",
            &noisy,
            "--remote-bin",
            env!("CARGO_BIN_EXE_fsync-repl"),
        ])
        .arg(src.path())
        .arg(remote(&dst.join("r")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Welcome to the secondary") && err.contains(".bashrc"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_missing_remote_binary_is_named() {
    let src = Tree::new();
    let dst = Tree::new();
    let out = bin()
        .arg("push")
        .arg("--rsh")
        .arg(fake_rsh())
        .args(["--remote-bin", "/nonexistent/fsync-repl"])
        .arg(src.path())
        .arg(remote(&dst.join("r")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--remote-bin"), "{}", stderr(&out));
}

#[test]
fn a_silent_peer_times_out() {
    // The far side answers after 10 s: with --timeout 2 the push gives up first (exit 2,
    // DEST untouched); were the option ignored it would wait and succeed, since the
    // handshake's own cap is 30 s.
    let src = Tree::new();
    src.file("f", b"x");
    let dst = Tree::new();
    let late = "sh -c 'while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; shift; sleep 10; exec sh -c \"$*\"' late";
    let push = |timeout: &str| {
        bin()
            .args(["push", "--timeout", timeout, "--rsh", late, "--remote-bin"])
            .arg(env!("CARGO_BIN_EXE_fsync-repl"))
            .arg(src.path())
            .arg(remote(&dst.join("r")))
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap()
    };
    let out = push("2");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("handshake"), "{}", stderr(&out));
    assert!(
        !dst.join("r/f").exists(),
        "the late far side was waited for"
    );
    // The same late far side, waited for: the push completes.
    let out = push("20");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(dst.join("r/f")).unwrap(), b"x");
}

#[test]
fn push_needs_a_local_source_and_pull_from_a_local_one_copies_locally() {
    let t = Tree::new();
    let out = bin().args(["push", "h:/x"]).arg(t.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A local SRC (a snapshot directory, say) is copied as push would.
    t.file("snap/f", b"kept");
    let out = bin()
        .arg("pull")
        .arg(t.join("snap"))
        .arg(t.join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(t.read("d/f"), b"kept");
    // Nested in each other, as for push: refused.
    let out = bin()
        .arg("pull")
        .arg(t.path())
        .arg(t.join("d2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn killing_the_far_side_mid_run_leaves_old_or_new_and_the_next_run_completes() {
    let src = Tree::new();
    let dst = Tree::new();
    let d = dst.join("r");
    for k in 0..20 {
        src.file(format!("f{k:02}"), &vec![k as u8; 1 << 20]);
    }
    push_ok(Transport::Rsh, src.path(), &d, &[]);
    for k in 0..20 {
        src.file(format!("f{k:02}"), &vec![k as u8 + 100; 1 << 20])
            .mtime(format!("f{k:02}"), 1_700_000_000, 0);
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["push", "-W", "--bwlimit", "2M"])
        .args(rsh_args())
        .arg(src.path())
        .arg(remote(&d))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Find the far side (a `serve` process working on DEST) and kill -9 it.
    let needle = d.as_os_str().to_owned().into_vec();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let c = std::fs::read(e.path().join("cmdline")).ok()?;
                let serve = c.split(|&b| b == 0).any(|w| w == b"serve");
                let ours = c.windows(needle.len()).any(|w| w == needle.as_slice());
                (serve && ours).then(|| e.file_name().to_string_lossy().parse::<i32>().ok())?
            });
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "the far side never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(700));
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for k in 0..20 {
        let got = std::fs::read(d.join(format!("f{k:02}"))).unwrap();
        assert!(
            got == vec![k as u8; 1 << 20] || got == vec![k as u8 + 100; 1 << 20],
            "f{k:02} is torn"
        );
    }
    push_ok(Transport::Rsh, src.path(), &d, &[]);
    assert_same_tree(src.path(), &d);
    assert!(temp_files(&d).is_empty(), "{:?}", temp_files(&d));
}

#[test]
fn compressed_transfers_round_trip_both_ways() {
    let src = Tree::new();
    src.file(
        "text.txt",
        "all work and no play\n".repeat(50_000).as_bytes(),
    )
    .file(
        "random.bin",
        &(0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    );
    let dst = Tree::new();
    push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["-z"]);
    assert_same_tree(src.path(), &dst.join("r"));
    src.file(
        "text.txt",
        "all work and no play!\n".repeat(50_000).as_bytes(),
    )
    .mtime("text.txt", 1_650_000_000, 0);
    push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["--compress"]);
    assert_same_tree(src.path(), &dst.join("r"));
    let back = Tree::new();
    let out = pull_cmd(&dst.join("r"), &back.join("r"), &["-z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_tree(src.path(), &back.join("r"));
}

#[test]
fn a_wholly_changed_large_file_travels_as_delta_parts() {
    // A 64 MiB window whose content all changed makes a delta larger than a frame.
    let src = Tree::new_in(Path::new("/dev/shm"));
    let dst = Tree::new_in(Path::new("/dev/shm"));
    let gen = |seed: u32| -> Vec<u8> {
        let mut x = seed | 1;
        (0..70 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    src.file("big", &gen(1));
    push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["-q"]);
    src.file("big", &gen(2)).mtime("big", 1_700_000_000, 0);
    let out = push_ok(Transport::Rsh, src.path(), &dst.join("r"), &["--json"]);
    assert!(json(&out)["bytes_literal"].as_u64().unwrap() >= 70 << 20);
    assert_same_tree(src.path(), &dst.join("r"));
}

/// A far side that is not root cannot set owners: the root client neither sends nor
/// compares them (rsync's behaviour), so the push succeeds and a re-run changes nothing.
#[test]
fn a_receiver_that_is_not_root_gets_no_owners_and_no_endless_metadata_updates() {
    require!(
        rustix::process::geteuid().is_root(),
        "starting the far side as another user needs root"
    );
    require!(have("setpriv"), "setpriv (util-linux) is not installed");
    let src = Tree::new();
    src.file("a/f", b"one");
    src.file("g", b"two");
    std::os::unix::fs::chown(src.path().join("g"), Some(1234), Some(1234)).unwrap();
    let far = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        far.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(far.path(), Some(65534), Some(65534)).unwrap();
    let dst = far.path().join("r");
    // A remote shell that runs the far side as nobody.
    let rsh = far.path().join("rsh-as-nobody");
    std::fs::write(
        &rsh,
        "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != \"--\" ]; do shift; done\nshift\n\
         exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"$*\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&rsh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = |extra: &str| {
        let mut c = bin();
        c.args(["push", "--json"])
            .arg("--rsh")
            .arg(&rsh)
            .arg("--remote-bin")
            .arg(env!("CARGO_BIN_EXE_fsync-repl"));
        if !extra.is_empty() {
            c.arg(extra);
        }
        c.arg(src.path()).arg(remote(&dst)).output().unwrap()
    };
    let first = run("");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(std::fs::read(dst.join("g")).unwrap(), b"two");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dst.join("g")).unwrap().uid(), 65534);
    let again = run("");
    assert!(again.status.success(), "{}", stderr(&again));
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(v["metadata_only"], 0, "{v}");
    assert_eq!(v["updated"], 0, "{v}");
}

#[test]
fn pull_without_delete_replaces_entries_of_another_kind_and_keeps_the_rest() {
    let src = Tree::new();
    src.file("x", b"now a file").dir("y").file("y/z", b"z");
    let dst = Tree::new();
    dst.file("x/old", b"old")
        .file("y", b"was a file")
        .file("extra", b"mine");
    let out = pull_cmd(src.path(), dst.path(), &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dst.read("x"), b"now a file");
    assert_eq!(dst.read("y/z"), b"z");
    assert_eq!(dst.read("extra"), b"mine", "deleted without --delete");
    assert!(
        temp_files(dst.path()).is_empty(),
        "{:?}",
        temp_files(dst.path())
    );
}

#[test]
fn the_far_side_of_a_push_gets_the_back_off_settings() {
    // A remote shell that records the command it was asked to run, then runs it.
    let t = Tree::new();
    let log = t.join("far-command");
    let rsh = format!(
        "sh -c 'while [ $# -gt 0 ] && [ \"$1\" != -- ]; do shift; done; shift; echo \"$*\" > {}; exec sh -c \"$*\"' rec",
        log.display()
    );
    // Each run's far side is asked for what this side was given: the back-off's
    // settings, or no back-off at all.
    let cases: [(&[&str], &[&str]); 2] = [
        (
            &["--max-io-pressure", "7", "--min-rate", "3M"],
            &["'--max-io-pressure=7'", "'--min-rate=3145728'"],
        ),
        (&["--no-adaptive"], &["'--no-adaptive'"]),
    ];
    for (flags, wanted) in cases {
        let (src, dst) = (Tree::new(), Tree::new());
        src.file("f", b"x");
        let out = bin()
            .arg("push")
            .args(flags)
            .args(["--rsh", &rsh, "--remote-bin"])
            .arg(env!("CARGO_BIN_EXE_fsync-repl"))
            .arg(src.path())
            .arg(remote(dst.path()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let far = std::fs::read_to_string(&log).unwrap();
        for want in wanted {
            assert!(far.contains(want), "{want} not forwarded: {far}");
        }
        assert_eq!(
            far.contains("--no-adaptive"),
            flags.contains(&"--no-adaptive"),
            "{far}"
        );
        assert_eq!(std::fs::read(dst.join("f")).unwrap(), b"x");
    }
}

#[test]
fn the_summary_counts_the_wire_both_ways_as_the_pipe_saw_it() {
    // The counting shell's `dd` sees every byte the client writes to the far side.
    let wire = WireCount::new();
    let (src, dst) = (Tree::new(), Tree::new());
    // Incompressible: small files' data travels compressed.
    let mut x = 88172645463325252u64;
    let noise: Vec<u8> = (0..300 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    src.file("a", &noise).file("d/b", b"small");
    let out = bin()
        .args(["push", "--json"])
        .args(wire.args())
        .arg(src.path())
        .arg(remote(dst.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    let sent = v["wire_bytes_sent"].as_u64().unwrap();
    assert_eq!(sent, wire.take(), "{v}");
    assert!(sent > 300 << 10, "{v}");
    // Replies, listing and the handshake came back.
    assert!(v["wire_bytes_received"].as_u64().unwrap() > 0, "{v}");
    // A pull counts on its own side too: it sends requests' answers, receives data.
    let back = Tree::new();
    let out = bin()
        .args(["pull", "--json"])
        .args(rsh_args())
        .arg(remote(dst.path()))
        .arg(back.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert!(
        v["wire_bytes_received"].as_u64().unwrap() > 300 << 10,
        "{v}"
    );
    assert!(v["wire_bytes_sent"].as_u64().unwrap() > 0, "{v}");
}

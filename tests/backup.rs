//! Backups: snapshots of DEST/current, retention, the lock, the config file and restores,
//! with real files and real processes.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn backup(src: &Path, dst: &Path, args: &[&str]) -> Output {
    bin()
        .arg("backup")
        .args(args)
        .arg(src)
        .arg(dst)
        .output()
        .expect("run fsync-repl")
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Final-named snapshots, oldest first.
fn snapshots(dst: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dst.join("snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    // Time, then the sequence number of snapshots taken within one second.
    v.sort_by_key(|n| {
        let (time, seq) = n.split_once("Z.").unwrap_or((n.trim_end_matches('Z'), "0"));
        (time.to_string(), seq.parse::<u64>().unwrap_or(0))
    });
    v
}

fn leftovers(dst: &Path) -> Vec<String> {
    fs::read_dir(dst.join("snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 20 ms for up to 60 s.
#[track_caller]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_a(from: &Path, to: &Path) {
    let st = Proc::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn sample(src: &Tree) {
    src.file("docs/report.txt", b"quarterly numbers")
        .file("docs/notes.md", b"# notes\n")
        .file("photos/cat.jpg", &vec![7u8; 200_000])
        .symlink("latest", "docs/report.txt")
        .hardlink("docs/report-link.txt", "docs/report.txt")
        .dir("empty")
        .mtime("docs/notes.md", 1_600_000_000, 123);
}

#[test]
fn a_snapshot_never_changes_when_the_source_does() {
    let (src, dst, saved) = (Tree::new(), Tree::new(), Tree::new());
    sample(&src);
    ok(backup(src.path(), dst.path(), &[]));
    let first = snapshots(dst.path());
    assert_eq!(first.len(), 1);
    let snap = dst.join("snapshots").join(&first[0]);
    assert_same_tree(src.path(), &snap);
    copy_a(&snap, &saved.join("copy"));
    // Change content, metadata only, and delete; then back up again.
    fs::write(src.join("docs/report.txt"), b"QUARTERLY NUMBERS").unwrap();
    fs::set_permissions(src.join("docs/notes.md"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("photos/cat.jpg")).unwrap();
    fs::remove_file(src.join("latest")).unwrap();
    std::os::unix::fs::symlink("docs/notes.md", src.join("latest")).unwrap();
    ok(backup(src.path(), dst.path(), &[]));
    let both = snapshots(dst.path());
    assert_eq!(both.len(), 2);
    assert_same_tree(&saved.join("copy"), &snap);
    assert_same_tree(src.path(), &dst.join("snapshots").join(&both[1]));
    assert_same_tree(src.path(), &dst.join("current"));
    // The manifests say what each captured.
    let out = ok(bin()
        .arg("snapshots")
        .arg("--json")
        .arg(dst.path())
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["files"], 4, "{v}");
    assert_eq!(v[0]["push_exit"], 0);
    assert_eq!(v[1]["files"], 3);
    assert!(v[1]["added_bytes"].as_u64().unwrap() < v[0]["added_bytes"].as_u64().unwrap());
}

#[test]
fn a_failed_push_takes_no_snapshot_and_prunes_nothing() {
    let (src, dst) = (Tree::new(), Tree::new());
    sample(&src);
    ok(backup(src.path(), dst.path(), &[]));
    ok(backup(src.path(), dst.path(), &[]));
    let before = snapshots(dst.path());
    let out = backup(&src.join("missing"), dst.path(), &["--keep-last", "1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshots(dst.path()), before);
}

#[test]
fn prune_follows_the_rules_and_dry_run_explains() {
    let (src, dst) = (Tree::new(), Tree::new());
    sample(&src);
    for _ in 0..4 {
        ok(backup(src.path(), dst.path(), &[]));
    }
    let all = snapshots(dst.path());
    let out = ok(bin()
        .args(["prune", "--dry-run", "--keep-last", "2"])
        .arg(dst.path())
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "keep   {} (newest snapshot, last successful push, last)",
            all[3]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("remove {} (no rule keeps it)", all[0])),
        "{text}"
    );
    assert_eq!(snapshots(dst.path()), all);
    let out = bin().arg("prune").arg(dst.path()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a prune without rules must refuse"
    );
    ok(bin()
        .args(["prune", "--keep-last", "2", "--iops-limit", "1000"])
        .arg(dst.path())
        .output()
        .unwrap());
    assert_eq!(snapshots(dst.path()), all[2..].to_vec());
    // A manifest and a content catalogue per snapshot left, nothing else.
    let mut side: Vec<String> = fs::read_dir(dst.join(".fsync-repl/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    side.sort();
    let mut want: Vec<String> = all[2..]
        .iter()
        .flat_map(|n| [format!("{n}.b3"), format!("{n}.json")])
        .collect();
    want.sort();
    assert_eq!(side, want);
    // backup prunes after its snapshot with the same flags.
    ok(backup(src.path(), dst.path(), &["--keep-last", "1"]));
    assert_eq!(snapshots(dst.path()).len(), 1);
}

#[test]
fn a_second_run_on_a_locked_destination_stops_at_once() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..60 {
        src.file(format!("f{i}"), b"x");
    }
    // A slow first run: 60 files at 5 metadata operations per second.
    let mut first = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["backup", "--iops-limit", "5"])
        .arg(src.path())
        .arg(dst.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = format!("pid {} on", first.id());
    wait_until("the first run to take the lock", || {
        fs::read_to_string(dst.join(".fsync-repl/lock")).is_ok_and(|t| t.contains(&holder))
    });
    let second = backup(src.path(), dst.path(), &[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(12), "{err}");
    assert!(err.contains(&holder), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The holder dies without cleaning up: its lock is taken over.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(fs::read_to_string(dst.join(".fsync-repl/lock"))
        .unwrap()
        .contains(&holder));
    ok(backup(src.path(), dst.path(), &[]));
    assert_eq!(snapshots(dst.path()).len(), 1);
}

#[test]
fn kill_during_a_snapshot_leaves_no_partial_snapshot() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..80 {
        src.file(format!("d{}/f{i}", i % 8), format!("{i}").as_bytes());
    }
    ok(backup(src.path(), dst.path(), &[]));
    let mut snap = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["snapshot", "--iops-limit", "10"])
        .arg(dst.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the snapshot to start", || {
        !leftovers(dst.path()).is_empty()
    });
    snap.kill().unwrap();
    snap.wait().unwrap();
    assert_eq!(
        snapshots(dst.path()).len(),
        1,
        "no partial snapshot under a final name"
    );
    let out = ok(bin().arg("snapshot").arg(dst.path()).output().unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains("80 files"));
    assert!(
        leftovers(dst.path()).is_empty(),
        "{:?}",
        leftovers(dst.path())
    );
    let names = snapshots(dst.path());
    assert_eq!(names.len(), 2);
    assert_same_tree(src.path(), &dst.join("snapshots").join(&names[1]));
}

/// A small tmpfs in a directory of its own (unmounted, then removed, when dropped).
struct Tmpfs(Mounted, #[allow(dead_code)] Tree);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let t = Tree::new();
        let m = mount_tmpfs(t.path(), &format!("size={size}")).expect("mount tmpfs");
        Tmpfs(m, t)
    }

    fn path(&self) -> &Path {
        &self.0 .0
    }
}

#[test]
fn prune_when_full_gives_up_old_snapshots_or_changes_nothing() {
    require!(is_root(), "mounting a tmpfs needs root");
    let fsys = Tmpfs::mount("8M");
    let dst = fsys.path().join("backup");
    let src = Tree::new();
    let mib3 = |b: u8| vec![b; 3 << 20];
    src.file("a.bin", &mib3(1));
    ok(backup(src.path(), &dst, &["--min-free", "0"]));
    fs::remove_file(src.join("a.bin")).unwrap();
    src.file("b.bin", &mib3(2));
    ok(backup(src.path(), &dst, &["--min-free", "0"]));
    let two = snapshots(&dst);
    assert_eq!(two.len(), 2);
    fs::remove_file(src.join("b.bin")).unwrap();
    src.file("c.bin", &mib3(3));
    // Without the flag: the space message, exit 11, nothing changed.
    let out = backup(src.path(), &dst, &["--min-free", "0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enough space"));
    assert_eq!(snapshots(&dst), two);
    // Far too big even with every old snapshot gone: nothing is removed.
    src.file("huge.bin", &vec![4u8; 12 << 20]);
    let out = backup(src.path(), &dst, &["--min-free", "0", "--prune-when-full"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none was removed"), "{err}");
    assert_eq!(snapshots(&dst), two);
    fs::remove_file(src.join("huge.bin")).unwrap();
    // Rewriting b.bin, which the last snapshot holds too, frees nothing: the preflight
    // knows it and writes nothing.
    fs::remove_file(src.join("c.bin")).unwrap();
    src.file("b.bin", &mib3(5)).mtime("b.bin", 1_700_000_000, 0);
    let out = backup(src.path(), &dst, &["--min-free", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(err.contains("this run needs 3.0 MiB"), "{err}");
    assert_eq!(fs::read(dst.join("current/b.bin")).unwrap(), mib3(2));
    fs::remove_file(src.join("b.bin")).unwrap();
    src.file("c.bin", &mib3(3));
    // With the flag: the oldest snapshot goes, the run fits.
    let out = ok(backup(
        src.path(),
        &dst,
        &["--min-free", "0", "--prune-when-full", "--keep-last", "5"],
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("remove {}", two[0])));
    let now = snapshots(&dst);
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], two[1]);
    assert_same_tree(src.path(), &dst.join("current"));
}

#[test]
fn a_snapshot_that_would_cross_the_reserve_is_not_taken() {
    require!(is_root(), "mounting a tmpfs needs root");
    let fsys = Tmpfs::mount("8M");
    let dst = fsys.path().join("backup");
    let src = Tree::new();
    for i in 0..60 {
        src.file(format!("d{i}/f"), b"x");
    }
    ok(backup(src.path(), &dst, &["--min-free", "0"]));
    let one = snapshots(&dst);
    // Leave about 100 KiB free: each directory of a snapshot takes a 4 KiB block.
    let avail = || -> u64 {
        let out = Proc::new("df")
            .args(["-B1", "--output=avail"])
            .arg(fsys.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    };
    fs::write(
        fsys.path().join("filler"),
        vec![0u8; (avail() - (100 << 10)) as usize],
    )
    .unwrap();
    let out = bin().arg("snapshot").arg(&dst).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(err.contains("not enough space"), "{err}");
    let out = backup(src.path(), &dst, &["--min-free", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert_eq!(snapshots(&dst), one, "no snapshot was added");
    assert!(leftovers(&dst).is_empty(), "{:?}", leftovers(&dst));
}

fn config(dir: &Tree, text: &str) -> PathBuf {
    let p = dir.join("fsync-repl.toml");
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn an_unknown_config_key_is_named_with_its_line() {
    let t = Tree::new();
    let p = config(
        &t,
        "[[job]]\nname = \"alice\"\nsource = \"/home/alice\"\ndestination = \"/b/alice\"\n\n[job.retention]\nkeep_dayly = 7\n",
    );
    let out = bin()
        .args(["backup", "--all", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{}:7:", p.display())), "{err}");
    assert!(err.contains("keep_dayly"), "{err}");
}

#[test]
fn backup_all_runs_every_job_whatever_one_does() {
    let (home, dst, t) = (Tree::new(), Tree::new(), Tree::new());
    home.file("alice/a", b"a").file("carol/c", b"c");
    let job = |name: &str| {
        format!(
            "[[job]]\nname = \"{name}\"\nsource = \"{}\"\ndestination = \"{}\"\nexclude = [\"*.tmp\"]\n[job.throttle]\niops_limit = 100000\n[job.retention]\nkeep_last = 3\n\n",
            home.join(name).display(),
            dst.join(name).display()
        )
    };
    let p = config(&t, &(job("alice") + &job("bob") + &job("carol")));
    let (metrics, log) = (t.join("fsync-repl.prom"), t.join("backup.log"));
    let out = bin()
        .args(["backup", "--all", "-q", "--config"])
        .arg(&p)
        .arg("--metrics-file")
        .arg(&metrics)
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "bob's source is missing: {err}");
    assert!(out.stdout.is_empty(), "-q prints nothing on success");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("job bob failed (exit 3)"), "{err}");
    for name in ["alice", "carol"] {
        assert_eq!(snapshots(&dst.join(name)).len(), 1, "{name}");
    }
    assert_eq!(snapshots(&dst.join("bob")).len(), 0);
    let m = fs::read_to_string(&metrics).unwrap();
    assert!(m.contains("fsync_repl_exit_code{job=\"bob\"} 3\n"), "{m}");
    assert!(m.contains("fsync_repl_exit_code{job=\"carol\"} 0\n"), "{m}");
    assert!(
        m.contains("fsync_repl_last_success_timestamp_seconds{job=\"alice\"} "),
        "{m}"
    );
    assert!(
        !m.contains("fsync_repl_last_success_timestamp_seconds{job=\"bob\"}"),
        "{m}"
    );
    assert!(m.contains("fsync_repl_files{job=\"alice\"} 1\n"), "{m}");
    let l = fs::read_to_string(&log).unwrap();
    assert_eq!(l.lines().count(), 3, "{l}");
    assert!(l.lines().nth(1).unwrap().contains("job=bob exit=3"), "{l}");
}

#[test]
fn flags_given_with_backup_all_apply_to_every_job_under_the_jobs_own_keys() {
    let (home, dst, t) = (Tree::new(), Tree::new(), Tree::new());
    home.file("alice/keep", b"a")
        .file("alice/x.tmp", b"t")
        .file("alice/x.log", b"l")
        .file("bob/keep", b"b")
        .file("bob/x.tmp", b"t")
        .file("bob/x.log", b"l");
    // alice has excludes of her own, bob none; the command line excludes *.log.
    let p = config(
        &t,
        &format!(
            "[[job]]\nname = \"alice\"\nsource = \"{}\"\ndestination = \"{}\"\nexclude = [\"*.tmp\"]\n\n[[job]]\nname = \"bob\"\nsource = \"{}\"\ndestination = \"{}\"\n",
            home.join("alice").display(),
            dst.join("alice").display(),
            home.join("bob").display(),
            dst.join("bob").display()
        ),
    );
    let out = bin()
        .args(["backup", "--all", "-q", "--exclude", "*.log", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let has = |who: &str, f: &str| dst.join(who).join("current").join(f).exists();
    assert!(has("alice", "keep") && has("bob", "keep"));
    assert!(
        !has("alice", "x.log") && !has("bob", "x.log"),
        "--exclude of the command line"
    );
    assert!(!has("alice", "x.tmp"), "the job's own exclude");
    assert!(has("bob", "x.tmp"), "alice's exclude is hers alone");
}

#[test]
fn backup_all_does_not_let_a_slow_job_hold_up_the_others() {
    let (home, dst, t) = (Tree::new(), Tree::new(), Tree::new());
    for i in 0..200 {
        home.file(format!("slow/f{i}"), b"s");
    }
    home.file("fast/a", b"a").file("quick/b", b"b");
    let job = |name: &str, iops: u32| {
        format!(
            "[[job]]\nname = \"{name}\"\nsource = \"{}\"\ndestination = \"{}\"\n[job.throttle]\niops_limit = {iops}\n\n",
            home.join(name).display(),
            dst.join(name).display()
        )
    };
    // First in the file, and at 5 operations a second it needs well over 40 s.
    let p = config(
        &t,
        &(job("slow", 5) + &job("fast", 100_000) + &job("quick", 100_000)),
    );
    let mut all = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["backup", "--all", "-q", "--config"])
        .arg(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the jobs after the slow one", || {
        snapshots(&dst.join("fast")).len() == 1 && snapshots(&dst.join("quick")).len() == 1
    });
    let slow_running = all.try_wait().unwrap().is_none();
    all.kill().unwrap();
    all.wait().unwrap();
    assert!(slow_running, "--all finished: the slow job was not slow");
    assert!(snapshots(&dst.join("slow")).is_empty());
}

#[test]
fn remote_backup_snapshots_and_prune_run_on_the_far_side() {
    let (src, dst) = (Tree::new(), Tree::new());
    sample(&src);
    for _ in 0..2 {
        ok(bin()
            .arg("backup")
            .args(rsh_args())
            .arg(src.path())
            .arg(remote(dst.path()))
            .output()
            .unwrap());
    }
    let names = snapshots(dst.path());
    assert_eq!(names.len(), 2);
    assert_same_tree(src.path(), &dst.join("snapshots").join(&names[1]));
    let out = ok(bin()
        .args(["snapshots", "--json"])
        .args(rsh_args())
        .arg(remote(dst.path()))
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["push_exit"], 0);
    assert_eq!(
        v[1]["source"],
        fs::canonicalize(src.path()).unwrap().display().to_string()
    );
    ok(bin()
        .args(["snapshot"])
        .args(rsh_args())
        .arg(remote(dst.path()))
        .output()
        .unwrap());
    assert_eq!(snapshots(dst.path()).len(), 3);
    ok(bin()
        .args(["prune", "--keep-last", "1"])
        .args(rsh_args())
        .arg(remote(dst.path()))
        .output()
        .unwrap());
    // The newest is a bare snapshot: the last successful push's one stays too.
    let left = snapshots(dst.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0], names[1]);
}

#[test]
fn a_snapshot_restores_with_push_and_pull() {
    let (src, dst, saved) = (Tree::new(), Tree::new(), Tree::new());
    sample(&src);
    ok(backup(src.path(), dst.path(), &[]));
    copy_a(src.path(), &saved.join("orig"));
    fs::write(src.join("docs/report.txt"), b"overwritten by mistake").unwrap();
    ok(backup(src.path(), dst.path(), &[]));
    let first = dst.join("snapshots").join(&snapshots(dst.path())[0]);
    let (local, far) = (Tree::new(), Tree::new());
    ok(bin()
        .arg("push")
        .arg(&first)
        .arg(local.join("restore"))
        .output()
        .unwrap());
    assert_same_tree(&saved.join("orig"), &local.join("restore"));
    ok(bin()
        .arg("pull")
        .args(rsh_args())
        .arg(remote(&first))
        .arg(far.join("restore"))
        .output()
        .unwrap());
    assert_same_tree(&saved.join("orig"), &far.join("restore"));
}

#[test]
fn a_snapshot_taken_while_watch_writes_holds_each_file_old_or_new() {
    let (new, dst) = (Tree::new(), Tree::new());
    for i in 0..40 {
        new.file(format!("d{}/f{i}", i % 4), &vec![b'o'; 64 << 10]);
    }
    ok(backup(new.path(), dst.path(), &[]));
    // The same source, every file rewritten since.
    for i in 0..40 {
        new.file(format!("d{}/f{i}", i % 4), &vec![b'n'; 64 << 10])
            .mtime(format!("d{}/f{i}", i % 4), 1_700_000_000, 0);
    }
    // The intended continual setup: watch keeps current (slowly here), snapshots are
    // taken on the secondary meanwhile.
    let side = Tree::new();
    let state = side.join("watch-state.json");
    let mut watch = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args([
            "watch",
            "--bwlimit",
            "512K",
            "--fsync",
            "file",
            "--state-file",
        ])
        .arg(&state)
        .arg(new.path())
        .arg(dst.join("current"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let caught_up = || {
        fs::read(&state)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["last_success"].is_u64())
    };
    let mut taken = 0;
    while !caught_up() || taken < 2 {
        assert!(
            watch.try_wait().unwrap().is_none(),
            "the watch stopped early"
        );
        ok(bin()
            .args(["snapshot", "-q"])
            .arg(dst.path())
            .output()
            .unwrap());
        taken += 1;
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(
        tree_diff(new.path(), &dst.join("current")).is_empty(),
        "the watch did not catch up"
    );
    for name in snapshots(dst.path()) {
        let snap = dst.join("snapshots").join(&name);
        for i in 0..40 {
            let data = fs::read(snap.join(format!("d{}/f{i}", i % 4))).unwrap();
            let first = data[0];
            assert!(
                (first == b'o' || first == b'n')
                    && data.len() == 64 << 10
                    && data.iter().all(|&b| b == first),
                "{name}: f{i} is torn"
            );
        }
        assert!(
            temp_files(&snap).is_empty(),
            "{name}: temporary files in a snapshot"
        );
    }
}

#[test]
fn snapshot_of_a_missing_destination_is_a_selection_error() {
    let t = Tree::new();
    let out = bin().arg("snapshot").arg(t.join("nope")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such backup destination"), "{err}");
    t.dir("empty");
    let out = bin().arg("snapshot").arg(t.join("empty")).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replica"));
}

#[test]
fn overlapping_remote_backups_from_one_machine_lock_each_other_out() {
    let (src, dst, run) = (Tree::new(), Tree::new(), Tree::new());
    for i in 0..60 {
        src.file(format!("f{i}"), b"x");
    }
    let mut first = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .env("XDG_RUNTIME_DIR", run.path())
        .args(["backup", "--iops-limit", "5"])
        .args(rsh_args())
        .arg(src.path())
        .arg(remote(dst.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = format!("pid {} on", first.id());
    let locks = run.join("fsync-repl-locks");
    wait_until("the first run to take the lock", || {
        fs::read_dir(&locks).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&holder)))
        })
    });
    let second = bin()
        .env("XDG_RUNTIME_DIR", run.path())
        .arg("backup")
        .args(rsh_args())
        .arg(src.path())
        .arg(remote(dst.path()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(12), "{err}");
    assert!(err.contains(&holder), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    wait_for_far_side(dst.path());
}

#[test]
fn a_symlink_planted_in_dest_never_leads_a_snapshot_outside() {
    let (src, dst, outside) = (Tree::new(), Tree::new(), Tree::new());
    sample(&src);
    ok(backup(src.path(), dst.path(), &[]));
    fs::rename(dst.join("snapshots"), dst.join("old-snapshots")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.join("snapshots")).unwrap();
    let out = bin().arg("snapshot").arg(dst.path()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    let out = bin()
        .args(["prune", "--keep-last", "1"])
        .arg(dst.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11));
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    // Nor does one in place of current lead the push outside.
    fs::rename(dst.join("current"), dst.join("old-current")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.join("current")).unwrap();
    let out = backup(src.path(), dst.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    // Nor through the far side of a remote backup.
    let out = bin()
        .arg("backup")
        .args(rsh_args())
        .arg(src.path())
        .arg(remote(dst.path()))
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// (niceness, ionice class) of every thread of `pid`.
#[test]
fn snapshot_workers_run_idle_and_niced() {
    require!(have_ionice(), "ionice (util-linux) is not installed");
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..80 {
        src.file(format!("d{}/f{i}", i % 8), b"x");
    }
    ok(backup(src.path(), dst.path(), &[]));
    let mut snap = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["snapshot", "--iops-limit", "10", "--jobs", "2"])
        .arg(dst.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let seen = settled_priorities(snap.id(), 3);
    assert!(seen.len() >= 3, "the main thread and two workers: {seen:?}");
    snap.kill().unwrap();
    snap.wait().unwrap();
    for (nice, io) in &seen {
        assert_eq!(*nice, 10, "{seen:?}");
        assert_eq!(io, "idle", "{seen:?}");
    }
}

#[test]
fn kill_during_a_prune_leaves_no_half_snapshot_under_its_name() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..80 {
        src.file(format!("d{}/f{i}", i % 8), b"x");
    }
    ok(backup(src.path(), dst.path(), &[]));
    ok(backup(src.path(), dst.path(), &[]));
    let names = snapshots(dst.path());
    let mut prune = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["prune", "--keep-last", "1", "--iops-limit", "10"])
        .arg(dst.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the prune to start", || !leftovers(dst.path()).is_empty());
    prune.kill().unwrap();
    prune.wait().unwrap();
    assert_eq!(snapshots(dst.path()), vec![names[1].clone()]);
    // The next run finishes the removal.
    ok(bin()
        .args(["prune", "--keep-last", "1"])
        .arg(dst.path())
        .output()
        .unwrap());
    assert!(
        leftovers(dst.path()).is_empty(),
        "{:?}",
        leftovers(dst.path())
    );
    assert_same_tree(src.path(), &dst.join("snapshots").join(&names[1]));
}

#[test]
fn sigint_stops_a_prune_between_snapshots() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..20 {
        src.file(format!("d{}/f{i}", i % 4), b"x");
    }
    for _ in 0..4 {
        ok(backup(src.path(), dst.path(), &[]));
    }
    let names = snapshots(dst.path());
    let prune = Proc::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["prune", "--keep-last", "1", "--iops-limit", "10"])
        .arg(dst.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first snapshot to go", || {
        snapshots(dst.path()).len() < 4
    });
    // SAFETY: a plain kill(2) on our own child's pid.
    unsafe { libc::kill(prune.id() as i32, libc::SIGINT) };
    let out = prune.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The one under way when the signal came may finish; the next never starts.
    let left = snapshots(dst.path());
    assert!(left.len() >= 2, "{left:?}");
    assert!(left.contains(&names[3]));
    // The next run finishes the job.
    ok(bin()
        .args(["prune", "--keep-last", "1"])
        .arg(dst.path())
        .output()
        .unwrap());
    assert_eq!(snapshots(dst.path()), vec![names[3].clone()]);
}

#[test]
fn prune_when_full_works_on_a_remote_destination() {
    require!(is_root(), "mounting a tmpfs needs root");
    let fsys = Tmpfs::mount("8M");
    let dst = fsys.path().join("backup");
    let src = Tree::new();
    let run = |args: &[&str]| {
        bin()
            .arg("backup")
            .args(["--min-free", "0"])
            .args(args)
            .args(rsh_args())
            .arg(src.path())
            .arg(remote(&dst))
            .output()
            .unwrap()
    };
    let mib3 = |b: u8| vec![b; 3 << 20];
    src.file("a.bin", &mib3(1));
    ok(run(&[]));
    fs::remove_file(src.join("a.bin")).unwrap();
    src.file("b.bin", &mib3(2));
    ok(run(&[]));
    let two = snapshots(&dst);
    assert_eq!(two.len(), 2);
    fs::remove_file(src.join("b.bin")).unwrap();
    src.file("huge.bin", &vec![4u8; 12 << 20]);
    let out = run(&["--prune-when-full"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(11), "{err}");
    assert!(err.contains("none was removed"), "{err}");
    assert_eq!(snapshots(&dst), two);
    fs::remove_file(src.join("huge.bin")).unwrap();
    src.file("c.bin", &mib3(3));
    let out = ok(run(&["--prune-when-full"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("remove {}", two[0])));
    let now = snapshots(&dst);
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], two[1]);
    assert_same_tree(src.path(), &dst.join("current"));
}

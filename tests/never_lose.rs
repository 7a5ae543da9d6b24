//! Never lose the replica: real failure sequences of the primary and the secondary.
//!
//! A source filesystem that is unmounted (a tmpfs on SRC, then `umount`), a watch
//! restarted on the empty mount point the way systemd restarts it, SRC swapped for an
//! empty directory, a DEST file that refuses its rename (`chattr +i`), a DEST out of
//! inodes (a tmpfs with `nr_inodes=`), a source rewritten while it is read, a hard-link
//! group under `--checksum`, a closed stdout. Each test checks what the disk shows.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Root-only tests: under CI a missing privilege fails the test (see `require`).
#[track_caller]
fn root_or_skip(what: &str) -> bool {
    require(is_root(), &format!("{what} needs root"))
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regular files under `root` (relative paths), the replica's own records left out.
fn files(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

fn fill(t: &Path, n: usize) {
    for i in 0..n {
        let p = t.join(format!("home{}/f{i}", i % 5));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("file {i}\n")).unwrap();
    }
}

#[test]
fn an_unmounted_source_is_refused_before_anything_is_deleted() {
    if !root_or_skip("mounting a tmpfs on SRC") {
        return;
    }
    for &t in TRANSPORTS {
        let (base, dst) = (Tree::new(), Tree::new());
        let src = base.join("homes");
        fs::create_dir(&src).unwrap();
        let mnt = mount_tmpfs(&src, "size=16m").expect("mount tmpfs on SRC");
        fill(&src, 300);
        push_ok(t, &src, dst.path(), &["--delete"]);
        assert_eq!(files(dst.path()).len(), 300);

        // The disk is gone: SRC is the empty mount point on its parent's filesystem.
        drop(mnt);
        assert_eq!(fs::read_dir(&src).unwrap().count(), 0);
        let out = push(t, &src, dst.path(), &["--delete"]);
        let err = stderr(&out);
        assert_eq!(code(&out), Some(3), "{t:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{t:?}: one line: {err}");
        assert!(
            err.contains("not the source") && err.contains("is its filesystem mounted"),
            "{t:?}: {err}"
        );
        assert!(err.contains("--accept-new-source"), "{t:?}: {err}");
        assert_eq!(
            files(dst.path()).len(),
            300,
            "{t:?}: the replica lost files"
        );

        // Accepting the new source does not let an empty one empty the replica.
        let out = push(t, &src, dst.path(), &["--delete", "--accept-new-source"]);
        assert_eq!(code(&out), Some(25), "{t:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
        assert_eq!(files(dst.path()).len(), 300, "{t:?}");

        // Both, said on purpose: the replica follows.
        push_ok(
            t,
            &src,
            dst.path(),
            &["--delete", "--accept-new-source", "--max-delete", "100%"],
        );
        assert!(files(dst.path()).is_empty(), "{t:?}");
    }
}

#[test]
fn a_source_replaced_by_an_empty_directory_is_refused() {
    for &t in TRANSPORTS {
        let (base, dst) = (Tree::new(), Tree::new());
        let src = base.join("homes");
        fill(&src, 20);
        push_ok(t, &src, dst.path(), &["--delete"]);
        fs::rename(&src, base.join("homes.old")).unwrap();
        fs::create_dir(&src).unwrap();
        fs::write(src.join("new"), b"n").unwrap();
        let out = push(t, &src, dst.path(), &["--delete"]);
        assert_eq!(code(&out), Some(3), "{t:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("root inode"), "{}", stderr(&out));
        assert_eq!(files(dst.path()).len(), 20, "{t:?}");
        assert!(!dst.join("new").exists(), "{t:?}: a refused run wrote");
        // Without --delete nothing can be lost: the run adds what is new.
        push_ok(t, &src, dst.path(), &[]);
        assert_eq!(files(dst.path()).len(), 21, "{t:?}");
        // The user moved the homes on purpose.
        push_ok(t, &src, dst.path(), &["--delete", "--accept-new-source"]);
        assert_eq!(files(dst.path()), ["new"], "{t:?}");
        // Accepted once: from now on this is the source.
        push_ok(t, &src, dst.path(), &["--delete"]);
    }
}

#[test]
fn a_mass_delete_is_refused_whole_and_allowed_when_asked() {
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        fill(src.path(), 300);
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        // Two thirds go, and one file is new.
        for i in 0..200 {
            fs::remove_file(src.join(format!("home{}/f{i}", i % 5))).unwrap();
        }
        src.file("home0/new", b"n");
        for extra in [
            &[][..],
            &["--max-delete", "199"][..],
            &["--max-delete", "50%"],
        ] {
            let args: Vec<&str> = ["--delete"].iter().chain(extra).copied().collect();
            let out = push(t, src.path(), dst.path(), &args);
            let err = stderr(&out);
            assert_eq!(code(&out), Some(25), "{t:?} {extra:?}: {err}");
            assert!(err.contains("refusing to delete 200 of its"), "{err}");
            assert!(err.contains("--max-delete 200"), "{err}");
            // Nothing deleted, nothing else written either.
            assert_eq!(files(dst.path()).len(), 300, "{t:?} {extra:?}");
            assert!(!dst.join("home0/new").exists(), "{t:?} {extra:?}");
        }
        // A dry run shows the plan and the same refusal.
        let out = push(t, src.path(), dst.path(), &["--delete", "-n"]);
        assert_eq!(code(&out), Some(25), "{t:?}");
        push_ok(
            t,
            src.path(),
            dst.path(),
            &["--delete", "--max-delete", "200"],
        );
        assert_eq!(files(dst.path()).len(), 101, "{t:?}");
    }
}

#[test]
fn the_delete_guard_counts_the_unchanged_entries_of_dest_too() {
    // A local DEST is listed against SRC: its entries equal to SRC's are marked, not
    // listed. They are DEST's all the same, in the share and in the message.
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        fill(src.path(), 300);
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        for i in 0..200 {
            fs::remove_file(src.join(format!("home{}/f{i}", i % 5))).unwrap();
        }
        let out = push(t, src.path(), dst.path(), &["--delete"]);
        assert_eq!(code(&out), Some(25), "{t:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refusing to delete 200 of its 305 entries"),
            "{t:?}: {}",
            stderr(&out)
        );
        // 120 of 305 is less than half: allowed, though only 125 entries are listed.
        let (src, dst) = (Tree::new(), Tree::new());
        fill(src.path(), 300);
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        for i in 0..120 {
            fs::remove_file(src.join(format!("home{}/f{i}", i % 5))).unwrap();
        }
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        assert_eq!(files(dst.path()).len(), 180, "{t:?}");
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn an_emptied_source_never_empties_a_small_replica() {
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        src.file("a", b"a").file("d/b", b"b");
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        fs::remove_file(src.join("a")).unwrap();
        fs::remove_dir_all(src.join("d")).unwrap();
        let out = push(t, src.path(), dst.path(), &["--delete"]);
        assert_eq!(code(&out), Some(25), "{t:?}: {}", stderr(&out));
        assert_eq!(files(dst.path()), ["a", "d/b"], "{t:?}");
    }
}

#[test]
fn a_restarted_watch_on_an_unmounted_source_keeps_refusing() {
    if !root_or_skip("mounting a tmpfs on SRC") {
        return;
    }
    let (base, dst, side) = (Tree::new(), Tree::new(), Tree::new());
    let src = base.join("homes");
    fs::create_dir(&src).unwrap();
    let mnt = mount_tmpfs(&src, "size=16m").expect("mount tmpfs on SRC");
    fill(&src, 300);
    let state = side.join("state.json");
    let watch = || spawn_watch(&src, dst.path(), &state);
    let mut w = watch();
    let deadline = Instant::now() + Duration::from_secs(60);
    while files(dst.path()).len() < 300 {
        assert!(Instant::now() < deadline, "the watch never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The disk fails: the watch stops (the source root went away under it).
    drop(mnt);
    let status = wait_exit(&mut w, Duration::from_secs(60));
    assert_ne!(status, Some(0), "the watch went on without its source");
    // Restarted the way systemd restarts it, on the now-empty mount point, twice.
    for _ in 0..2 {
        let (status, err) = exit_and_stderr(&mut watch());
        assert_eq!(status, Some(3), "{err}");
        assert!(err.contains("is its filesystem mounted"), "{err}");
        assert_eq!(
            files(dst.path()).len(),
            300,
            "the replica lost files: {err}"
        );
    }
    // `status` says why.
    let out = bin()
        .arg("status")
        .arg("--state-file")
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not the source"), "{text}");
}

/// Waits (bounded) for `child` to exit; its exit code and what it printed on stderr.
fn exit_and_stderr(child: &mut std::process::Child) -> (Option<i32>, String) {
    let status = wait_exit(child, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        std::io::Read::read_to_string(e, &mut err).unwrap();
    }
    (status, err)
}

/// `fsync-repl watch` of `src` into `dst` with a state file, stderr captured.
fn spawn_watch(src: &Path, dst: &Path, state: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["watch", "--delay", "100ms", "--state-file"])
        .arg(state)
        .arg(src)
        .arg(dst)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, killing it at the deadline (then `None`).
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets or clears the immutable flag (ext4 on the root disk supports it).
fn chattr(flag: &str, p: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(p)
        .status()
        .is_ok_and(|s| s.success())
}

/// Clears `chattr +i` when dropped, so the temp tree can be removed.
struct Immutable(Vec<std::path::PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            chattr("-i", p);
        }
    }
}

#[test]
fn a_file_the_destination_refuses_fails_alone() {
    if !root_or_skip("chattr +i") {
        return;
    }
    for &t in TRANSPORTS {
        // On the root ext4 (the temp dir), which has the immutable flag.
        let (src, dst) = (
            Tree::new_in(Path::new("/var/tmp")),
            Tree::new_in(Path::new("/var/tmp")),
        );
        for i in 0..14 {
            src.file(format!("d/f{i}"), b"old");
        }
        src.file("locked/x", b"old");
        push_ok(t, src.path(), dst.path(), &[]);
        let guard = Immutable(vec![dst.join("d/f3"), dst.join("locked")]);
        assert!(
            chattr("+i", &guard.0[0]) && chattr("+i", &guard.0[1]),
            "chattr +i"
        );
        for i in 0..14 {
            src.file(format!("d/f{i}"), b"new!");
        }
        src.file("locked/x", b"new!").file("locked/y", b"new!");
        let out = push(t, src.path(), dst.path(), &["--json"]);
        let err = stderr(&out);
        assert_eq!(code(&out), Some(23), "{t:?}: {err}");
        assert!(err.contains("d/f3: rename into place"), "{t:?}: {err}");
        assert!(err.contains("locked/"), "{t:?}: {err}");
        assert!(!err.contains("commit :"), "{t:?}: {err}");
        for i in 0..14 {
            let want: &[u8] = if i == 3 { b"old" } else { b"new!" };
            assert_eq!(
                fs::read(dst.join(format!("d/f{i}"))).unwrap(),
                want,
                "{t:?} f{i}"
            );
        }
        let v = json(&out);
        assert_eq!(v["updated"], 13, "{t:?}: {v}");
        assert_eq!(v["created"], 0, "{t:?}: {v}");
        // d/f3, locked/x, locked/y, and the locked directory's own metadata.
        assert_eq!(v["failed"], 4, "{t:?}: {v}");
        assert!(temp_files(dst.path()).is_empty(), "{t:?}");
        drop(guard);
        push_ok(t, src.path(), dst.path(), &[]);
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn a_destination_out_of_inodes_says_so() {
    if !root_or_skip("a tmpfs with nr_inodes") {
        return;
    }
    for &t in TRANSPORTS {
        let (src, mnt) = (Tree::new(), Tree::new());
        let _m = mount_tmpfs(mnt.path(), "size=64m,nr_inodes=64").expect("mount");
        for i in 0..200 {
            src.file(format!("f{i}"), b"x");
        }
        let d = mnt.join("replica");
        let out = push(t, src.path(), &d, &[]);
        let err = stderr(&out);
        assert_eq!(code(&out), Some(11), "{t:?}: {err}");
        assert!(err.contains("out of inodes"), "{t:?}: {err}");
        assert!(
            !err.contains("--min-free"),
            "{t:?}: raising the reserve cannot help: {err}"
        );
        // A refused run creates nothing, DEST included.
        assert!(!d.exists(), "{t:?}: the refused run created DEST");
        assert!(files(mnt.path()).is_empty(), "{t:?}");
    }
}

#[test]
fn a_refused_run_creates_no_destination() {
    if !root_or_skip("a small tmpfs") {
        return;
    }
    for &t in TRANSPORTS {
        let (src, mnt) = (Tree::new(), Tree::new());
        let _m = mount_tmpfs(mnt.path(), "size=1m").expect("mount");
        src.file("big", &vec![7u8; 4 << 20]);
        let d = mnt.join("a/b/replica");
        let out = push(t, src.path(), &d, &[]);
        assert_eq!(code(&out), Some(11), "{t:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
        let left: Vec<_> = fs::read_dir(mnt.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "{t:?}: the refused run created DEST or its parents"
        );
    }
}

#[test]
fn a_read_only_destination_stops_with_one_message() {
    if !root_or_skip("remounting a tmpfs read-only") {
        return;
    }
    let (src, mnt) = (Tree::new(), Tree::new());
    let _m = mount_tmpfs(mnt.path(), "size=16m").expect("mount");
    let d = mnt.join("replica");
    src.file("first", b"1");
    // A replica that already records its source: the run gets as far as the files.
    push_ok(Transport::Local, src.path(), &d, &[]);
    for i in 0..300 {
        src.file(format!("d{}/f{i}", i % 7), b"data");
    }
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let out = push(Transport::Local, src.path(), &d, &[]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(11), "{err}");
    assert_eq!(
        err.lines().count(),
        1,
        "one message, not one per file: {err}"
    );
    assert!(err.contains("read-only"), "{err}");
}

#[test]
fn the_metadata_given_is_that_of_the_bytes_copied() {
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        // `a` is copied first and slowly; `z` changes after the scan listed it and
        // before it is read.
        src.file("a", &vec![b'a'; 8 << 20]).file("z", b"original");
        set_mtime(&src.join("z"), 1_600_000_000, 0);
        let mut child = push_std(t, src.path(), dst.path(), &["--bwlimit", "4M", "-j", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while data_temp_files(dst.path()).is_empty() {
            assert!(Instant::now() < deadline, "the copy never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!dst.join("z").exists(), "{t:?}: z was copied before a");
        fs::write(src.join("z"), b"rewrite!").unwrap();
        set_mtime(&src.join("z"), 1_700_000_000, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{t:?}");
        let d = fs::metadata(dst.join("z")).unwrap();
        assert_eq!(fs::read(dst.join("z")).unwrap(), b"rewrite!", "{t:?}");
        assert_eq!(
            d.mtime(),
            1_700_000_000,
            "{t:?}: the new bytes carry the scan's mtime"
        );
        // `cp -p` of the original: its content and its old mtime come back.
        fs::write(src.join("z"), b"original").unwrap();
        set_mtime(&src.join("z"), 1_600_000_000, 0);
        push_ok(t, src.path(), dst.path(), &[]);
        assert_eq!(
            fs::read(dst.join("z")).unwrap(),
            b"original",
            "{t:?}: stale content kept"
        );
    }
}

#[test]
fn a_hard_link_group_stays_one_group_under_checksum() {
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        src.file("a", b"same size 1");
        fs::hard_link(src.join("a"), src.join("b")).unwrap();
        set_mtime(&src.join("a"), 1_600_000_000, 0);
        push_ok(t, src.path(), dst.path(), &[]);
        // New content at equal size and mtime: only --checksum sees it.
        fs::write(src.join("a"), b"same size 2").unwrap();
        set_mtime(&src.join("a"), 1_600_000_000, 0);
        push_ok(t, src.path(), dst.path(), &["-c"]);
        let (a, b) = (
            fs::metadata(dst.join("a")).unwrap(),
            fs::metadata(dst.join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{t:?}: the link group was split");
        assert_eq!(fs::read(dst.join("b")).unwrap(), b"same size 2", "{t:?}");
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn a_closed_stdout_ends_quietly_with_the_normal_exit_code() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..500 {
        src.file(format!("f{i}"), b"x");
    }
    let mut child = push_std(Transport::Local, src.path(), dst.path(), &["-i"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: one line read, then the pipe is closed.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("+f "), "{line}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_same_tree(src.path(), dst.path());
}

/// Starts a local push held to 20 operations a second (`--iops-limit 20 --delete` and
/// `args`), sends it SIGINT once `began` says the phase under test is under way, and
/// returns its exit status: `None` when it did not end within 15 s, a bound far below
/// each phase's own length at that rate.
fn interrupt_slow_push(
    src: &Tree,
    dst: &Tree,
    args: &[&str],
    began: impl Fn() -> bool,
) -> Option<i32> {
    let mut all = vec!["--iops-limit", "20", "--delete"];
    all.extend_from_slice(args);
    interrupt_push(src, dst, &all, began, Duration::from_secs(15))
}

/// Starts a local push with `args`, sends it SIGINT once `began` says the phase under
/// test is under way (within 60 s), and returns its exit status: `None` when it did not
/// end `within` that time of the signal.
fn interrupt_push(
    src: &Tree,
    dst: &Tree,
    args: &[&str],
    began: impl Fn() -> bool,
    within: Duration,
) -> Option<i32> {
    let mut child = push_std(Transport::Local, src.path(), dst.path(), args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !began() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(began(), "the phase under test never began");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    wait_exit(&mut child, within)
}

/// True from 500 ms after it is made: a phase that lasts far longer is then under way.
fn after_half_a_second() -> impl Fn() -> bool {
    let start = Instant::now();
    move || start.elapsed() >= Duration::from_millis(500)
}

#[test]
fn a_signal_during_the_scan_stops_the_run() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..600 {
        src.file(format!("d{i}/f"), b"x");
    }
    // One directory read per operation at 20 a second: the scan alone takes 30 s. The
    // directories are new, so they are read as the first piece of an initial copy,
    // which is listed before anything is written: an unthrottled piece walk would be
    // over at once, and the signal would find directories being made.
    let status = interrupt_slow_push(&src, &dst, &[], after_half_a_second());
    assert_eq!(status, Some(20), "the scan did not stop on SIGINT");
    assert!(files(dst.path()).is_empty(), "an interrupted scan wrote");
    let made: Vec<_> = fs::read_dir(dst.path()).unwrap().collect();
    assert!(
        made.is_empty(),
        "an interrupted scan made {} entries",
        made.len()
    );
}

#[test]
fn a_signal_while_a_replica_is_compared_stops_the_run() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..600 {
        src.file(format!("d{i}/f"), b"x");
    }
    push_ok(Transport::Local, src.path(), dst.path(), &[]);
    src.file("d599/new", b"late");
    // SRC and the replica are read together, one directory of each side per operation
    // at 20 a second: the comparison alone takes a minute.
    let status = interrupt_slow_push(&src, &dst, &[], after_half_a_second());
    assert_eq!(status, Some(20), "the comparison did not stop on SIGINT");
    assert!(
        !dst.join("d599/new").exists(),
        "an interrupted comparison wrote"
    );
    assert_eq!(files(dst.path()).len(), 600, "the replica changed");
}

#[test]
fn a_signal_during_the_deletes_stops_the_run() {
    let (src, dst) = (Tree::new(), Tree::new());
    for i in 0..40 {
        src.file(format!("keep/f{i}"), b"x");
    }
    push_ok(Transport::Local, src.path(), dst.path(), &[]);
    for i in 0..600 {
        dst.file(format!("stale/f{i:03}"), b"old");
    }
    let stale = || fs::read_dir(dst.join("stale")).map_or(0, |d| d.count());
    // One delete per operation at 20 a second: the deletes alone take 30 s.
    let status = interrupt_slow_push(&src, &dst, &["--max-delete", "100%"], || stale() < 600);
    assert_eq!(status, Some(20), "the deletes did not stop on SIGINT");
    let left = stale();
    assert!(
        left > 300,
        "{left} stale files left: the deletes went on after SIGINT"
    );
    assert_eq!(
        files(dst.path()).len(),
        40 + left,
        "a kept file was touched"
    );
}

#[test]
fn a_backup_of_an_unmounted_source_takes_no_snapshot_and_keeps_current() {
    if !root_or_skip("mounting a tmpfs on SRC") {
        return;
    }
    let (base, dst) = (Tree::new(), Tree::new());
    let src = base.join("homes");
    fs::create_dir(&src).unwrap();
    let mnt = mount_tmpfs(&src, "size=16m").expect("mount tmpfs on SRC");
    fill(&src, 300);
    let backup = || {
        bin()
            .args(["backup", "-q"])
            .arg(&src)
            .arg(dst.path())
            .output()
            .unwrap()
    };
    let out = backup();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let snaps = || fs::read_dir(dst.join("snapshots")).unwrap().count();
    assert_eq!(snaps(), 1);
    drop(mnt);
    // The cron job runs again on the empty mount point.
    let out = backup();
    let err = stderr(&out);
    assert_eq!(code(&out), Some(3), "{err}");
    assert!(err.contains("is its filesystem mounted"), "{err}");
    assert_eq!(files(&dst.join("current")).len(), 300, "current lost files");
    assert_eq!(snaps(), 1, "a snapshot of a refused run");
}

#[test]
fn a_pull_from_an_emptied_source_is_refused_too() {
    let (src, dst) = (Tree::new(), Tree::new());
    fill(src.path(), 150);
    let pull = |args: &[&str]| {
        bin()
            .arg("pull")
            .args(args)
            .args(rsh_args())
            .arg(remote(src.path()))
            .arg(dst.path())
            .output()
            .unwrap()
    };
    let out = pull(&["--delete"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(files(dst.path()).len(), 150);
    for e in fs::read_dir(src.path()).unwrap() {
        fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let out = pull(&["--delete"]);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(25), "{err}");
    assert!(
        err.contains("is empty") && err.contains("--max-delete"),
        "{err}"
    );
    assert_eq!(files(dst.path()).len(), 150, "the pull emptied the replica");
    let out = pull(&["--delete", "--max-delete", "100%"]);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(files(dst.path()).is_empty());
}

#[test]
fn a_directory_swapped_for_a_symlink_under_a_watch_is_weighed_whole() {
    // `mv ~/Documents elsewhere && ln -s elsewhere ~/Documents`: the events name only
    // the home, but DEST's Documents holds most of the replica.
    let (base, dst, side) = (Tree::new(), Tree::new(), Tree::new());
    let src = base.join("homes");
    for i in 0..300 {
        let p = src.join(format!("alice/Documents/d{}/f{i}", i % 10));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"doc").unwrap();
    }
    fs::write(src.join("alice/notes"), b"n").unwrap();
    let state = side.join("state.json");
    let mut w = spawn_watch(&src, dst.path(), &state);
    let deadline = Instant::now() + Duration::from_secs(60);
    while files(dst.path()).len() < 301 {
        assert!(Instant::now() < deadline, "the watch never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first full push must be on record before the swap.
    let recorded = || {
        fs::read(&state)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["last_success"].is_u64() && v["tree_entries"].is_u64())
    };
    while !recorded() {
        assert!(Instant::now() < deadline, "no batch on record");
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::rename(src.join("alice/Documents"), base.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(base.join("elsewhere"), src.join("alice/Documents")).unwrap();
    let (status, err) = exit_and_stderr(&mut w);
    assert_eq!(status, Some(25), "the watch did not refuse: {err}");
    assert!(err.contains("refusing to delete"), "{err}");
    assert_eq!(
        files(dst.path()).len(),
        301,
        "the replica lost files: {err}"
    );
}

#[test]
fn an_unreadable_source_record_is_not_replaced_by_a_deleting_run() {
    let (src, dst) = (Tree::new(), Tree::new());
    src.file("a", b"a");
    push_ok(Transport::Local, src.path(), dst.path(), &["--delete"]);
    let record = dst.join(".fsync-repl/source");
    fs::write(&record, b"written by something else\n").unwrap();
    let out = push(Transport::Local, src.path(), dst.path(), &["--delete"]);
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot be read"), "{}", stderr(&out));
    assert_eq!(fs::read(&record).unwrap(), b"written by something else\n");
    push_ok(
        Transport::Local,
        src.path(),
        dst.path(),
        &["--delete", "--accept-new-source"],
    );
    assert!(fs::read_to_string(&record).unwrap().contains("fsid="));
}

#[test]
fn a_symlink_planted_as_the_replicas_record_directory_leads_nowhere() {
    // Invariant 3: DEST/.fsync-repl -> elsewhere must not carry the record outside.
    for &t in TRANSPORTS {
        let (src, dst, outside) = (Tree::new(), Tree::new(), Tree::new());
        src.file("a", b"a");
        std::os::unix::fs::symlink(outside.path(), dst.join(".fsync-repl")).unwrap();
        let out = push(t, src.path(), dst.path(), &["--delete"]);
        assert_ne!(code(&out), Some(0), "{t:?}: {}", stderr(&out));
        assert_eq!(
            fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{t:?}: written through the planted link"
        );
        assert!(fs::symlink_metadata(dst.join(".fsync-repl"))
            .unwrap()
            .is_symlink());
    }
}

#[test]
fn a_source_directory_that_cannot_be_read_keeps_its_replica() {
    // Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, as a run for one user would
    // be: a directory of mode 000 cannot be listed. What its replica holds is not
    // "gone from SRC", and --delete must leave it. Into a remote DEST the top-level
    // directory is listed by the root's part and read by its own group's part.
    let setpriv = Path::new("/usr/bin/setpriv");
    if !require(is_root() && setpriv.exists(), "root and setpriv") {
        return;
    }
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        for i in 0..5 {
            src.file(format!("locked/f{i}"), b"x");
            src.file(format!("open/f{i}"), b"x");
        }
        push_ok(t, src.path(), dst.path(), &[]);
        src.file("open/new", b"y");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let push = push_std(t, src.path(), dst.path(), &["--delete"]);
        let out = std::process::Command::new(setpriv)
            .args(["--bounding-set", "-dac_override,-dac_read_search"])
            .arg(push.get_program())
            .args(push.get_args())
            .env_remove("FSYNC_REPL_CONFIG")
            .output()
            .unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{t:?}: an unreadable directory went unreported"
        );
        assert!(err.contains("locked"), "{t:?}: {err}");
        let kept = fs::read_dir(dst.join("locked")).map_or(0, |d| d.count());
        assert_eq!(
            kept, 5,
            "{t:?}: the replica of an unreadable directory was deleted: {err}"
        );
        assert!(
            dst.join("open/new").exists(),
            "{t:?}: the readable rest was not copied"
        );
    }
}

/// Files are written in batches of 2,048, and a batch is renamed into place while the
/// next one is written: a signal stops the renames at once, and leaves every name old
/// or new and no temporary file behind.
#[test]
fn a_signal_while_one_batch_lands_and_the_next_is_written_leaves_old_or_new() {
    let (src, dst) = (Tree::new(), Tree::new());
    let n = 2100;
    let name = |i: usize| format!("d{}/f{i:04}", i % 10);
    let new = |i: usize| format!("new {i}").into_bytes();
    for i in 0..n {
        src.file(name(i), b"old");
    }
    push_ok(Transport::Local, src.path(), dst.path(), &[]);
    for i in 0..n {
        src.file(name(i), &new(i));
    }
    // The first batch (2,048 files in path order) has landed once any of it is new.
    let landed = || {
        (0..n)
            .step_by(97)
            .any(|i| fs::read(dst.join(name(i))).is_ok_and(|b| b != b"old"))
    };
    // Every create and every rename is one operation: at 100 a second the first
    // batch is written in 20 s, then renamed in 20 s while the rest is written.
    let status = interrupt_push(
        &src,
        &dst,
        &["--iops-limit", "100"],
        landed,
        Duration::from_secs(10),
    );
    assert_eq!(status, Some(20), "the renames did not stop on SIGINT");
    let (mut old, mut newer) = (0, 0);
    for i in 0..n {
        let got = fs::read(dst.join(name(i))).unwrap();
        if got == b"old" {
            old += 1;
        } else {
            assert_eq!(got, new(i), "{} is neither old nor new", name(i));
            newer += 1;
        }
    }
    assert!(
        old > 0 && newer > 0,
        "{old} old, {newer} new: the run was not cut"
    );
    let temps: Vec<_> = walkdir::WalkDir::new(dst.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".fsync-tmp."))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

/// A run killed outright (SIGKILL: no handler, nothing cleaned up) while one batch is
/// renamed into place and the next is written, with files both replaced (homes DEST
/// has) and new (homes copied in pieces): every name holds its old content or its new,
/// never a mix or a torn file. The temporary files it leaves are removed by the next
/// run, which completes the replica.
#[test]
fn a_run_killed_mid_copy_leaves_every_name_old_or_new() {
    let (src, dst) = (Tree::new(), Tree::new());
    let old = |i: usize| format!("old {i}\n").repeat(1 + i % 7);
    let new = |i: usize| format!("new content {i}\n").repeat(1 + i % 5);
    let n = 2400;
    let rel = |i: usize| format!("h{}/d{}/f{i}", i % 8, i % 40);
    for i in 0..n {
        src.file(rel(i), new(i).as_bytes());
        if i % 8 < 4 {
            // An older mtime: a file written in the same clock tick with the same size
            // would look up to date, as it would to rsync.
            dst.file(rel(i), old(i).as_bytes())
                .mtime(rel(i), 1_600_000_000, 0);
        }
    }
    let mut child = push_std(
        Transport::Local,
        src.path(),
        dst.path(),
        &["--piece-entries", "100", "--iops-limit", "400"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let landed = || {
        (0..n)
            .filter(|&i| fs::read(dst.join(rel(i))).is_ok_and(|b| b == new(i).as_bytes()))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while landed() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = landed();
    assert!(
        (300..n).contains(&done),
        "{done} of {n} landed before the kill"
    );
    let temps = temp_files(dst.path());
    for f in files(dst.path()) {
        if temps.iter().any(|t| t.ends_with(&f)) {
            continue;
        }
        let i: usize = f.rsplit("/f").next().unwrap().parse().unwrap();
        let got = fs::read(dst.join(&f)).unwrap();
        let ok = got == new(i).as_bytes() || (i % 8 < 4 && got == old(i).as_bytes());
        assert!(
            ok,
            "{f} is neither old nor new: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    push_ok(Transport::Local, src.path(), dst.path(), &[]);
    assert_same_tree(src.path(), dst.path());
    assert!(temp_files(dst.path()).is_empty());
}

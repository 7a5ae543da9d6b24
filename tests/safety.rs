//! Safety tests: the invariants of STYLE.md seen from outside the binary (source never
//! modified, confinement beneath DEST, no in-place writes, recognisable temporary files,
//! interrupted runs leave every file old or new, the free-space reserve), plus exit
//! codes, messages and output formats.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// An mtime far in the past, marking "old" destination versions.
const OLD_MTIME: i64 = 1_500_000_000;

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout_of(out),
        stderr_of(out)
    )
}

/// Pushes, asserts exit 0 and that no temporary file is left in DEST.
fn push_clean(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Output {
    let out = push_ok(t, src, dst, args);
    let temps = temp_files(dst);
    assert!(
        temps.is_empty(),
        "temporary files left after a successful push: {temps:?}"
    );
    out
}

/// Starts `fsync-repl push [args] SRC DEST` without waiting for it.
fn spawn_push(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"));
    c.env_remove("FSYNC_REPL_CONFIG").arg("push").args(args);
    match t {
        Transport::Local => c.arg(src).arg(dst),
        Transport::Rsh => c.args(rsh_args()).arg(src).arg(remote(dst)),
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fsync-repl")
}

/// Waits for `child`, killing it and failing the test past a generous deadline.
fn finish(mut child: Child, deadline: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("push still running after {deadline:?}\n{}", show(&out));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("wait")
}

/// Polls `cond` every few milliseconds while `child` runs; fails if the child exits
/// first or the deadline passes.
fn poll_while_running(child: &mut Child, deadline: Duration, what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("push ended ({st}) before {what}");
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: not reached within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Deterministic pseudo-random bytes (BLAKE3 in XOF mode).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut h = blake3::Hasher::new();
    h.update(b"fsync-repl safety noise");
    h.update(&seed.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

fn hash_of(p: &Path) -> [u8; 32] {
    *blake3::hash(&fs::read(p).expect("read")).as_bytes()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("lstat").mode() & 0o7777
}

fn ino_of(p: &Path) -> u64 {
    fs::symlink_metadata(p).expect("lstat").ino()
}

fn mtime_of(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).expect("lstat");
    (m.mtime(), m.mtime_nsec())
}

/// A base directory on tmpfs when there is one (fast to fill), else the temp dir.
fn fast_tree() -> Tree {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        Tree::new_in(shm)
    } else {
        Tree::new()
    }
}

/// Everything observable about one entry, including what a chmod, chown, utime,
/// write or replacement would change (ctime, inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    kind: char,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    ino: u64,
    nlink: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Option<[u8; 32]>,
    target: Option<PathBuf>,
}

/// Stamps of `root` and everything beneath it (symlinks not followed).
fn stamps(root: &Path) -> BTreeMap<PathBuf, Stamp> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(root).expect("prefix").to_path_buf();
        let m = e.path().symlink_metadata().expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'L'
        } else if ft.is_file() {
            'f'
        } else {
            's'
        };
        out.insert(
            rel,
            Stamp {
                kind,
                mode: m.mode() & 0o7777,
                owner: (m.uid(), m.gid()),
                size: m.size(),
                ino: m.ino(),
                nlink: m.nlink(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                content: ft.is_file().then(|| hash_of(e.path())),
                target: ft
                    .is_symlink()
                    .then(|| fs::read_link(e.path()).expect("readlink")),
            },
        );
    }
    out
}

/// Asserts that `root` looks exactly as `before` (names, kinds, modes, owners, sizes,
/// inodes, link counts, mtimes, ctimes, contents, targets).
#[track_caller]
fn assert_untouched(before: &BTreeMap<PathBuf, Stamp>, root: &Path, what: &str) {
    let after = stamps(root);
    let mut diffs = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => diffs.push(format!("removed: {}", p.display())),
            Some(a) if a != b => diffs.push(format!("changed: {}: {b:?} -> {a:?}", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            diffs.push(format!("added: {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what} was modified:\n{}",
        diffs.join("\n")
    );
}

/// Regular files beneath `root` (relative paths), symlinks not followed.
fn regular_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).expect("prefix").to_path_buf())
        .collect()
}

fn is_temp_name(p: &Path) -> bool {
    let n = p.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
    n.starts_with(b".") && n.windows(11).any(|w| w == b".fsync-tmp.")
}

// ---------------------------------------------------------------------------------
// Invariant 1: the source is never modified and never followed through a symlink.
// ---------------------------------------------------------------------------------

#[test]
fn source_is_never_modified_by_a_push_with_delete_and_delta() {
    for &t in TRANSPORTS {
        let base = Tree::new();
        // SRC and a directory beside it that SRC's symlinks point into.
        base.file("outside/secret.txt", b"outside secret\n")
            .file("outside/nested/deep.txt", b"deep outside\n");
        let outside = base.join("outside");
        let report = noise(1, 300 * 1024);
        base.file("src/docs/report.bin", &report)
            .file("src/docs/notes.md", b"# notes\nsome text\n")
            .file("src/bin/run.sh", b"#!/bin/sh\necho hi\n")
            .chmod("src/bin/run.sh", 0o755)
            .file("src/private/key", b"not really a key\n")
            .chmod("src/private/key", 0o600)
            .chmod("src/private", 0o700)
            .file("src/links/h1", b"hard linked\n")
            .hardlink("src/links/h2", "src/links/h1")
            .dir("src/empty")
            .symlink("src/rel", "docs/notes.md")
            .symlink("src/out_abs", &outside)
            .symlink("src/out_rel", "../outside")
            .symlink("src/dangling", "does/not/exist");
        let src = base.join("src");
        // A reference copy made by another tool, and a stamp of every inode.
        let reference = base.join("reference");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&reference)
            .status()
            .expect("cp -a");
        assert!(st.success());
        assert_same_tree(&src, &reference);

        // DEST: an older replica, so that --delta has bases and --delete has victims.
        let dst = Tree::new();
        let d = dst.join("replica");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&d)
            .status()
            .expect("cp -a");
        assert!(st.success());
        let mut old_report = report.clone();
        old_report[100_000..100_100].fill(0);
        fs::write(d.join("docs/report.bin"), &old_report).expect("write");
        set_mtime(&d.join("docs/report.bin"), OLD_MTIME, 0);
        fs::write(d.join("docs/notes.md"), b"# old notes\n").expect("write");
        fs::write(d.join("stale.txt"), b"stale\n").expect("write");
        fs::create_dir_all(d.join("stale_dir/sub")).expect("mkdir");
        fs::write(d.join("stale_dir/sub/x"), b"x").expect("write");

        let src_before = stamps(&src);
        let outside_before = stamps(&outside);
        push_clean(t, &src, &d, &["--delete", "--delta"]);

        assert_untouched(&src_before, &src, "SRC");
        let diff = tree_diff(&reference, &src);
        assert!(
            diff.is_empty(),
            "SRC differs from its cp -a copy:\n{}",
            diff.join("\n")
        );
        assert_untouched(
            &outside_before,
            &outside,
            "the directory SRC's symlinks point to",
        );
        assert_same_tree(&src, &d);
        for link in ["out_abs", "out_rel"] {
            assert!(
                fs::symlink_metadata(d.join(link))
                    .expect("lstat")
                    .file_type()
                    .is_symlink(),
                "DEST/{link} must stay a symlink"
            );
        }
        let copied_outside: Vec<PathBuf> = regular_files(&d)
            .into_iter()
            .filter(|p| p.ends_with("secret.txt") || p.ends_with("deep.txt"))
            .collect();
        assert!(
            copied_outside.is_empty(),
            "files outside SRC were copied through a symlink: {copied_outside:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Invariant 3: every destination operation stays beneath DEST.
// ---------------------------------------------------------------------------------

#[test]
fn a_directory_symlink_planted_in_dest_is_replaced_not_followed() {
    for &t in TRANSPORTS {
        let outside = Tree::new();
        outside
            .file("sentinel", b"outside sentinel\n")
            .mtime("sentinel", OLD_MTIME, 7)
            .file("sub2/deep.txt", b"outside deep\n")
            .chmod("sub2/deep.txt", 0o640);
        let src = Tree::new();
        // `sentinel` has the outside file's content and mtime, so a scan that followed
        // the symlink would think it up to date; its mode differs, so a chmod through
        // the link would show.
        src.file("sub/sentinel", b"outside sentinel\n")
            .mtime("sub/sentinel", OLD_MTIME, 7)
            .chmod("sub/sentinel", 0o600)
            .file("sub/new.txt", b"from the source\n")
            .file("sub/sub2/deep.txt", b"source deep\n")
            .file("top.txt", b"top\n");
        let dst = Tree::new();
        dst.symlink("sub", outside.path());
        let before = stamps(outside.path());

        push_clean(t, src.path(), dst.path(), &[]);

        assert_untouched(&before, outside.path(), "the directory outside DEST");
        let m = fs::symlink_metadata(dst.join("sub")).expect("lstat");
        assert!(m.is_dir(), "DEST/sub must now be a real directory");
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn delete_never_reaches_through_a_planted_symlink() {
    for &t in TRANSPORTS {
        let outside = Tree::new();
        outside
            .file("victim.txt", b"must survive\n")
            .file("dir/victim2.txt", b"must survive too\n")
            .file("keep.txt", b"outside keep\n");
        let src = Tree::new();
        src.file("sub/keep.txt", b"source keep\n")
            .file("a/b/keep.txt", b"nested source keep\n");
        let dst = Tree::new();
        dst.symlink("sub", outside.path())
            .dir("a")
            .symlink("a/b", outside.path())
            .file("extra.txt", b"dest only\n");
        let before = stamps(outside.path());

        push_clean(t, src.path(), dst.path(), &["--delete"]);

        assert_untouched(&before, outside.path(), "the directory outside DEST");
        assert!(fs::symlink_metadata(dst.join("sub"))
            .expect("lstat")
            .is_dir());
        assert!(fs::symlink_metadata(dst.join("a/b"))
            .expect("lstat")
            .is_dir());
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn a_file_symlink_planted_in_dest_is_replaced_not_written_through() {
    for &t in TRANSPORTS {
        let outside = Tree::new();
        outside
            .file("same", b"identical content\n")
            .mtime("same", OLD_MTIME, 0)
            .chmod("same", 0o644)
            .file("other", b"outside content\n")
            .chmod("other", 0o644);
        let src = Tree::new();
        // `same` differs from the outside file in its mode only; `file` in content.
        src.file("same", b"identical content\n")
            .mtime("same", OLD_MTIME, 0)
            .chmod("same", 0o600)
            .file("file", b"the source's own content, longer\n")
            .chmod("file", 0o600);
        let dst = Tree::new();
        dst.symlink("same", outside.join("same"))
            .symlink("file", outside.join("other"));
        let before = stamps(outside.path());

        push_clean(t, src.path(), dst.path(), &[]);

        assert_untouched(&before, outside.path(), "the files outside DEST");
        for name in ["same", "file"] {
            let m = fs::symlink_metadata(dst.join(name)).expect("lstat");
            assert!(m.is_file(), "DEST/{name} must now be a regular file");
        }
        assert_same_tree(src.path(), dst.path());
    }
}

// ---------------------------------------------------------------------------------
// Invariant 2: nothing is written in place, so a hard-linked snapshot never changes.
// ---------------------------------------------------------------------------------

#[test]
fn a_hard_linked_snapshot_never_changes() {
    for &t in TRANSPORTS {
        for args in [&[][..], &["--delta"][..]] {
            let src = Tree::new();
            let v1 = b"version one of a.txt\n".repeat(200);
            src.file("a.txt", &v1)
                .chmod("a.txt", 0o644)
                .file("b.txt", b"bystander\n");
            let dst = Tree::new();
            let d = dst.join("replica");
            let other = Tree::new(); // same filesystem as DEST: hard links work
            push_clean(t, src.path(), &d, args);

            // 1. Content change.
            let snap1 = other.join("a-snapshot-1");
            fs::hard_link(d.join("a.txt"), &snap1).expect("link");
            let (mode1, mtime1) = (mode_of(&snap1), mtime_of(&snap1));
            let mut v2 = v1.clone();
            v2[2000..2010].copy_from_slice(b"VERSION 2!");
            v2.extend_from_slice(b"and a new tail\n");
            src.file("a.txt", &v2);
            push_clean(t, src.path(), &d, args);
            assert_eq!(
                fs::read(&snap1).expect("read"),
                v1,
                "snapshot content changed ({args:?})"
            );
            assert_eq!(mode_of(&snap1), mode1, "snapshot mode changed ({args:?})");
            assert_eq!(
                mtime_of(&snap1),
                mtime1,
                "snapshot mtime changed ({args:?})"
            );
            assert_eq!(fs::read(d.join("a.txt")).expect("read"), v2);
            assert_ne!(ino_of(&d.join("a.txt")), ino_of(&snap1));

            // 2. Mode-only change.
            let snap2 = other.join("a-snapshot-2");
            fs::hard_link(d.join("a.txt"), &snap2).expect("link");
            let mtime2 = mtime_of(&snap2);
            src.chmod("a.txt", 0o600);
            push_clean(t, src.path(), &d, args);
            assert_eq!(
                mode_of(&snap2),
                0o644,
                "snapshot mode changed in place ({args:?})"
            );
            assert_eq!(fs::read(&snap2).expect("read"), v2);
            assert_eq!(mtime_of(&snap2), mtime2);
            assert_eq!(mode_of(&d.join("a.txt")), 0o600);
            assert_ne!(ino_of(&d.join("a.txt")), ino_of(&snap2));

            // 3. Mtime-only change.
            let snap3 = other.join("a-snapshot-3");
            fs::hard_link(d.join("a.txt"), &snap3).expect("link");
            let mtime3 = mtime_of(&snap3);
            src.mtime("a.txt", 1_000_000_000, 5);
            push_clean(t, src.path(), &d, args);
            assert_eq!(
                mtime_of(&snap3),
                mtime3,
                "snapshot mtime changed in place ({args:?})"
            );
            assert_eq!(mode_of(&snap3), 0o600);
            assert_eq!(mtime_of(&d.join("a.txt")), (1_000_000_000, 5));
            assert_ne!(ino_of(&d.join("a.txt")), ino_of(&snap3));

            // The snapshots are all still what they were.
            assert_eq!(fs::read(&snap1).expect("read"), v1);
            assert_eq!(mode_of(&snap1), 0o644);
            assert_same_tree(src.path(), &d);
        }
    }
}

// ---------------------------------------------------------------------------------
// Invariant 4: temporary files are recognisable and removed by the next run.
// ---------------------------------------------------------------------------------

fn tree_with_stale_temps() -> (Tree, Tree) {
    let src = Tree::new();
    src.file("a.txt", b"a\n").file("d/b.txt", b"b\n");
    let dst = Tree::new();
    dst.file("a.txt", b"a\n")
        .file(".x.fsync-tmp.deadbeef", b"half a file")
        .file("d/.y.fsync-tmp.1234", b"another half")
        .file("keep/mine.txt", b"a user file only DEST has\n")
        .file(
            "keep/.z.fsync-tmp.abcd",
            b"stale temp in a DEST-only directory",
        );
    (src, dst)
}

#[test]
fn stale_temp_files_are_removed_without_delete_and_not_reported_as_deletions() {
    for &t in TRANSPORTS {
        let (src, dst) = tree_with_stale_temps();
        assert_eq!(temp_files(dst.path()).len(), 3);
        let out = push_clean(t, src.path(), dst.path(), &["-i"]);
        let stdout = stdout_of(&out);
        assert!(
            !stdout.contains("fsync-tmp"),
            "temporary files listed in itemized output:\n{stdout}"
        );
        assert!(
            !stdout.lines().any(|l| l.starts_with('-')),
            "deletions itemized without --delete:\n{stdout}"
        );
        assert_eq!(dst.read("keep/mine.txt"), b"a user file only DEST has\n");
        assert_eq!(dst.read("d/b.txt"), b"b\n");

        let (src, dst) = tree_with_stale_temps();
        let out = push_clean(t, src.path(), dst.path(), &["--json"]);
        let j = json(&out);
        assert_eq!(j["deleted"], 0, "temporary files counted as deletions: {j}");
        assert!(dst.join("keep/mine.txt").is_file());

        // With --delete the DEST-only user files go, and the temporaries are still
        // not reported as user files.
        let (src, dst) = tree_with_stale_temps();
        let out = push_clean(t, src.path(), dst.path(), &["--delete", "-i"]);
        let stdout = stdout_of(&out);
        assert!(!stdout.contains("fsync-tmp"), "{stdout}");
        assert_same_tree(src.path(), dst.path());
    }
}

/// SRC with `n` files of `size` random bytes, DEST with an older version of each.
struct Busy {
    src: Tree,
    dst: Tree,
    /// Relative path → (old hash, new hash).
    files: BTreeMap<PathBuf, ([u8; 32], [u8; 32])>,
}

impl Busy {
    fn new(n: usize, size: usize) -> Busy {
        let (src, dst) = (fast_tree(), fast_tree());
        let (a, b) = (noise(100, size), noise(200, size));
        let mut files = BTreeMap::new();
        for i in 0..n {
            let rel = PathBuf::from(format!("d{}/f{i:04}.bin", i % 4));
            let mut new = a.clone();
            new[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut old = b.clone();
            old[..8].copy_from_slice(&(i as u64).to_le_bytes());
            src.file(&rel, &new);
            dst.file(&rel, &old).mtime(&rel, OLD_MTIME, 0);
            files.insert(
                rel,
                (
                    *blake3::hash(&old).as_bytes(),
                    *blake3::hash(&new).as_bytes(),
                ),
            );
        }
        Busy { src, dst, files }
    }

    /// True once some DEST file carries a new version's mtime (a rename happened).
    fn any_renamed(&self) -> bool {
        self.files.keys().any(|rel| {
            fs::symlink_metadata(self.dst.join(rel)).is_ok_and(|m| m.mtime() != OLD_MTIME)
        })
    }

    /// Asserts that each DEST file is exactly its old or its new version and that
    /// nothing else is there but (when `temps_allowed`) recognisable temporary files.
    /// Returns (old, new) counts.
    #[track_caller]
    fn assert_old_or_new(&self, temps_allowed: bool) -> (usize, usize) {
        let (mut old, mut new) = (0, 0);
        let mut seen = 0;
        for rel in regular_files(self.dst.path()) {
            if is_temp_name(&rel) {
                assert!(
                    temps_allowed,
                    "temporary file left behind: {}",
                    rel.display()
                );
                continue;
            }
            let Some(&(o, n)) = self.files.get(&rel) else {
                panic!("unexpected file in DEST: {}", rel.display());
            };
            seen += 1;
            let h = hash_of(&self.dst.join(&rel));
            if h == o {
                old += 1;
            } else if h == n {
                new += 1;
            } else {
                panic!(
                    "{} is neither the old nor the new version (torn)",
                    rel.display()
                );
            }
        }
        assert_eq!(seen, self.files.len(), "files missing from DEST");
        (old, new)
    }
}

#[test]
fn kill_9_mid_run_leaves_every_file_old_or_new_and_the_next_run_cleans_up() {
    for &t in TRANSPORTS {
        let b = Busy::new(40, 2 * MIB);
        let mut child = spawn_push(t, b.src.path(), b.dst.path(), &["--bwlimit", "4M"]);
        let start = Instant::now();
        poll_while_running(
            &mut child,
            Duration::from_secs(30),
            "the push started writing",
            || {
                b.any_renamed()
                    || (start.elapsed() >= Duration::from_secs(1)
                        && !data_temp_files(b.dst.path()).is_empty())
            },
        );
        child.kill().expect("kill -9");
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), None, "the push was not killed: {status}");
        wait_for_far_side(b.dst.path());

        let (old, new) = b.assert_old_or_new(true);
        eprintln!(
            "after kill -9: {old} old, {new} new, {} temporary files",
            temp_files(b.dst.path()).len()
        );

        let out = push_clean(t, b.src.path(), b.dst.path(), &["--json"]);
        assert_eq!(
            json(&out)["deleted"],
            0,
            "temporary files counted as deletions"
        );
        assert_same_tree(b.src.path(), b.dst.path());
        assert_eq!(b.assert_old_or_new(false), (0, 40));
    }
}

#[test]
fn kill_9_during_the_renames_leaves_every_file_old_or_new() {
    // Many small files are renamed into place one after another once their batch is
    // durable; killing the process as soon as the first one (in path order) shows its
    // new version usually lands in the middle of those renames. Where it lands is not
    // asserted (it may be after the last rename); that every file is old or new is.
    for &t in TRANSPORTS {
        let b = Busy::new(3000, 1024);
        let first = b.dst.join("d0/f0000.bin");
        let mut child = spawn_push(t, b.src.path(), b.dst.path(), &[]);
        let start = Instant::now();
        loop {
            if fs::symlink_metadata(&first).is_ok_and(|m| m.mtime() != OLD_MTIME) {
                let _ = child.kill();
                break;
            }
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the first file was never renamed"
            );
        }
        let _ = child.wait();
        wait_for_far_side(b.dst.path());
        let (old, new) = b.assert_old_or_new(true);
        eprintln!("killed during the renames: {old} old, {new} new");
        assert!(new >= 1, "the file seen renamed is not new");

        push_clean(t, b.src.path(), b.dst.path(), &[]);
        assert_same_tree(b.src.path(), b.dst.path());
    }
}

#[test]
fn sigterm_and_sigint_stop_with_exit_20_and_leave_no_temp_files() {
    use rustix::process::{kill_process, Pid, Signal};
    for &t in TRANSPORTS {
        for (sig, name) in [(Signal::TERM, "SIGTERM"), (Signal::INT, "SIGINT")] {
            let b = Busy::new(40, 2 * MIB);
            let mut child = spawn_push(t, b.src.path(), b.dst.path(), &["--bwlimit", "4M"]);
            // Signal once a temporary file is complete (all its bytes, its final
            // mode) but not yet renamed, while others are still being written: the
            // stop must discard both kinds.
            let src_mode = mode_of(&b.src.join("d0/f0000.bin"));
            poll_while_running(
                &mut child,
                Duration::from_secs(30),
                "a temporary file was complete",
                || {
                    temp_files(b.dst.path()).iter().any(|p| {
                        fs::symlink_metadata(p).is_ok_and(|m| {
                            m.len() == 2 * MIB as u64 && m.mode() & 0o7777 == src_mode
                        })
                    })
                },
            );
            kill_process(Pid::from_child(&child), sig).expect("kill");
            let out = finish(child, Duration::from_secs(60));
            assert_eq!(out.status.code(), Some(20), "{name}\n{}", show(&out));
            assert!(
                stderr_of(&out).contains("interrupted"),
                "{name}: no message saying the run was interrupted\n{}",
                show(&out)
            );
            // The client is gone; its far side (a remote DEST) may still be removing
            // its temporary files.
            wait_for_far_side(b.dst.path());
            let temps = temp_files(b.dst.path());
            assert!(temps.is_empty(), "{name}: temporary files left: {temps:?}");
            b.assert_old_or_new(false);

            push_clean(t, b.src.path(), b.dst.path(), &[]);
            assert_same_tree(b.src.path(), b.dst.path());
        }
    }
}

// ---------------------------------------------------------------------------------
// Source files that vanish or change while they are copied.
// ---------------------------------------------------------------------------------

#[test]
fn a_source_file_vanishing_after_the_scan_gives_exit_24_naming_it() {
    // With one worker the files are copied in path order, so `z_late.txt` is opened
    // only after the 4 MiB `a_big.bin` (about 2 s at 4 MiB/s read + write); deleting
    // it as soon as a temporary file shows up wins the race. The race is retried in
    // case a future scheduler orders files differently; the test fails if it is never
    // won.
    for &t in TRANSPORTS {
        let mut won = false;
        for _attempt in 0..3 {
            let src = Tree::new();
            src.file("a_big.bin", &noise(7, 4 * MIB))
                .file("z_late.txt", b"gone soon\n");
            let dst = Tree::new();
            let d = dst.join("replica");
            let mut child = spawn_push(t, src.path(), &d, &["--bwlimit", "4M", "-j", "1"]);
            poll_while_running(
                &mut child,
                Duration::from_secs(20),
                "a temporary file appeared",
                || !data_temp_files(dst.path()).is_empty(),
            );
            fs::remove_file(src.join("z_late.txt")).expect("rm");
            let out = finish(child, Duration::from_secs(60));
            if d.join("z_late.txt").exists() {
                continue; // opened before it was deleted: race lost
            }
            won = true;
            assert_eq!(out.status.code(), Some(24), "{}", show(&out));
            assert!(
                stderr_of(&out).contains("z_late.txt"),
                "the warning does not name the file\n{}",
                show(&out)
            );
            assert_eq!(
                fs::read(d.join("a_big.bin")).expect("read"),
                src.read("a_big.bin")
            );
            assert!(temp_files(dst.path()).is_empty());
            break;
        }
        assert!(won, "never managed to delete the file before it was copied");
    }
}

/// Offset of the generation stamp the writer updates: near the end of the initial
/// 32 MiB, so a copy reads it late.
const STAMP_OFF: usize = 32 * MIB - 4096;
const GROW_CHUNK: usize = 64 * 1024;

#[test]
fn a_file_appended_to_during_the_copy_is_never_put_in_place_torn() {
    for &t in TRANSPORTS {
        let initial = 32 * MIB;
        let mut body = noise(11, initial + 24 * MIB);
        body[STAMP_OFF..STAMP_OFF + 8].copy_from_slice(&0u64.to_le_bytes());
        let body = Arc::new(body);
        let src = fast_tree();
        src.file("grow.bin", &body[..initial]);
        let dst = fast_tree();
        push_clean(t, src.path(), dst.path(), &[]);
        src.file("other.txt", b"replicated despite the busy file\n");

        // The writer: stamp generation k near the end of the original data, then
        // append chunk k. The states it produces are (stamp k, 32M + (k-1) chunks) and
        // (stamp k, 32M + k chunks); a copy that read the stamp at a different time
        // than it took the length is inconsistent.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, body) = (stop.clone(), body.clone());
            let path = src.join("grow.bin");
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new().write(true).open(path).expect("open");
                let mut len = initial;
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) && len + GROW_CHUNK <= body.len() {
                    k += 1;
                    f.write_at(&k.to_le_bytes(), STAMP_OFF as u64)
                        .expect("stamp");
                    f.write_all_at(&body[len..len + GROW_CHUNK], len as u64)
                        .expect("append");
                    len += GROW_CHUNK;
                    std::thread::sleep(Duration::from_millis(50));
                }
                k
            })
        };
        let child = spawn_push(t, src.path(), dst.path(), &["--bwlimit", "16M"]);
        let out = finish(child, Duration::from_secs(90));
        stop.store(true, Ordering::Relaxed);
        let generations = writer.join().expect("writer");
        assert!(generations > 0, "the writer never ran");

        let code = out.status.code();
        assert!(matches!(code, Some(0 | 23)), "{}", show(&out));
        let got = fs::read(dst.join("grow.bin")).expect("DEST/grow.bin");
        let len = got.len();
        assert!(
            len >= initial && (len - initial) % GROW_CHUNK == 0,
            "DEST/grow.bin has a length the writer never produced: {len}"
        );
        let n = ((len - initial) / GROW_CHUNK) as u64;
        let stamp = u64::from_le_bytes(got[STAMP_OFF..STAMP_OFF + 8].try_into().expect("8"));
        assert!(
            stamp == n || stamp == n + 1,
            "torn copy: stamp {stamp} with {n} appended chunks"
        );
        assert!(
            got[..STAMP_OFF] == body[..STAMP_OFF]
                && got[STAMP_OFF + 8..] == body[STAMP_OFF + 8..len],
            "DEST/grow.bin is not a prefix of the file the writer produced"
        );
        if code == Some(23) {
            assert!(
                stderr_of(&out).contains("grow.bin"),
                "exit 23 without a warning naming the file\n{}",
                show(&out)
            );
            assert_eq!(len, initial, "exit 23 but the old copy was not kept");
            assert_eq!(stamp, 0, "exit 23 but the old copy was not kept");
        }
        assert_eq!(dst.read("other.txt"), src.read("other.txt"));
        assert!(temp_files(dst.path()).is_empty());
    }
}

// ---------------------------------------------------------------------------------
// Invariant 5: free space and the reserve.
// ---------------------------------------------------------------------------------

/// A tmpfs of a given size, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if !require(is_root(), "mounting a tmpfs needs root") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !require(ok, "mount -t tmpfs failed") {
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(self.dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

#[test]
fn preflight_refuses_a_run_that_does_not_fit_and_writes_nothing() {
    for &t in TRANSPORTS {
        let Some(mnt) = Tmpfs::mount("4m") else {
            return;
        };
        let src = Tree::new();
        for i in 0..6 {
            src.file(format!("f{i}.bin"), &noise(i, MIB));
        }
        let d = mnt.join("dst");
        let out = push(t, src.path(), &d, &[]);
        assert_eq!(out.status.code(), Some(11), "{}", show(&out));
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "expected one line\n{}", show(&out));
        assert!(err.contains("missing"), "{}", show(&out));
        assert!(
            err.chars().any(|c| c.is_ascii_digit()),
            "no amount given: {err}"
        );
        assert!(out.stdout.is_empty(), "{}", show(&out));
        let written = if d.exists() {
            regular_files(&d)
        } else {
            Vec::new()
        };
        assert!(
            written.is_empty(),
            "written despite the refusal: {written:?}"
        );
    }
}

#[test]
fn min_free_reserve_is_honoured() {
    for &t in TRANSPORTS {
        let Some(mnt) = Tmpfs::mount("4m") else {
            return;
        };
        let src = Tree::new();
        for i in 0..3 {
            src.file(format!("f{i}.bin"), &noise(10 + i, MIB));
        }
        let d = mnt.join("dst");
        let out = push(t, src.path(), &d, &["--min-free", "2M"]);
        assert_eq!(out.status.code(), Some(11), "{}", show(&out));
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{}", show(&out));
        assert!(err.contains("missing"), "{}", show(&out));
        let written = if d.exists() {
            regular_files(&d)
        } else {
            Vec::new()
        };
        assert!(
            written.is_empty(),
            "written despite the refusal: {written:?}"
        );

        push_clean(t, src.path(), &d, &["--min-free", "0"]);
        assert_same_tree(src.path(), &d);
    }
}

#[test]
fn a_destination_filling_up_mid_run_stops_cleanly_with_exit_11() {
    // The run is planned into a 4 MiB tmpfs holding an old 0.5 MiB version of `big`;
    // once its temporary file shows up the test writes a 2 MiB filler beside DEST, so
    // the 3 MiB new version can no longer fit. --bwlimit 2M (1 MiB/s of copying, as
    // reads and writes both count) leaves about 1.3 s between the filler and ENOSPC.
    // Retried (up to 3 times) only if the filler itself could not be written.
    for &t in TRANSPORTS {
        let mut done = false;
        for _attempt in 0..3 {
            let Some(mnt) = Tmpfs::mount("4m") else {
                return;
            };
            let src = Tree::new();
            let new_big = noise(30, 3 * MIB);
            src.file("big", &new_big)
                .file("small.txt", b"small and new\n");
            let d = mnt.join("dst");
            fs::create_dir(&d).expect("mkdir");
            let old_big = noise(31, MIB / 2);
            fs::write(d.join("big"), &old_big).expect("write");
            set_mtime(&d.join("big"), OLD_MTIME, 0);

            let mut child = spawn_push(t, src.path(), &d, &["--min-free", "0", "--bwlimit", "2M"]);
            poll_while_running(
                &mut child,
                Duration::from_secs(20),
                "a temporary file appeared",
                || {
                    temp_files(&d)
                        .iter()
                        .any(|p| p.to_string_lossy().contains(".big."))
                },
            );
            let filled = fs::write(mnt.join("filler"), vec![0xa5u8; 2 * MIB]);
            let out = finish(child, Duration::from_secs(60));
            if filled.is_err() {
                eprintln!("filler did not fit ({filled:?}); retrying");
                continue;
            }
            done = true;
            assert_eq!(out.status.code(), Some(11), "{}", show(&out));
            let err = stderr_of(&out);
            assert!(
                err.contains("full"),
                "no message about a full destination\n{err}"
            );
            assert!(
                err.contains("big"),
                "the message does not name the file\n{err}"
            );
            let temps = temp_files(&d);
            assert!(temps.is_empty(), "temporary files left: {temps:?}");
            assert_eq!(
                fs::read(d.join("big")).expect("read"),
                old_big,
                "big is not old"
            );
            if d.join("small.txt").exists() {
                assert_eq!(
                    fs::read(d.join("small.txt")).expect("read"),
                    src.read("small.txt")
                );
            }
            for rel in regular_files(&d) {
                assert!(
                    rel == Path::new("big") || rel == Path::new("small.txt"),
                    "unexpected file {}",
                    rel.display()
                );
            }

            // Once space is freed the next run completes.
            fs::remove_file(mnt.join("filler")).expect("rm filler");
            push_clean(t, src.path(), &d, &["--min-free", "0"]);
            assert_same_tree(src.path(), &d);
            break;
        }
        assert!(done, "could not fill the destination during the run");
    }
}

// ---------------------------------------------------------------------------------
// Exit codes and messages.
// ---------------------------------------------------------------------------------

#[track_caller]
fn assert_one_line_error(out: &Output, code: i32, mentions: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
    let err = stderr_of(out);
    assert_eq!(
        err.lines().count(),
        1,
        "the error should be one line\n{}",
        show(out)
    );
    assert!(
        err.contains(mentions),
        "the error does not mention {mentions:?}\n{}",
        show(out)
    );
}

#[test]
fn selection_errors_exit_3_with_one_line_naming_the_path() {
    for &t in TRANSPORTS {
        let base = Tree::new();
        base.file("src/a.txt", b"a\n")
            .file("plain_file", b"not a dir\n")
            .file("dest_file", b"a regular file\n");

        let missing = base.join("no_such_src");
        let d = base.join("dst1");
        let out = push(t, &missing, &d, &[]);
        assert_one_line_error(&out, 3, &missing.display().to_string());
        assert!(!d.exists(), "DEST created for a missing SRC");

        let file_src = base.join("plain_file");
        let out = push(t, &file_src, &d, &[]);
        assert_one_line_error(&out, 3, &file_src.display().to_string());
        assert!(!d.exists(), "DEST created for a file SRC");

        let dest_file = base.join("dest_file");
        let out = push(t, &base.join("src"), &dest_file, &[]);
        assert_one_line_error(&out, 3, &dest_file.display().to_string());
        assert_eq!(base.read("dest_file"), b"a regular file\n");

        // Only a local DEST can be compared with SRC: a remote path names another machine.
        if t != Transport::Local {
            continue;
        }
        let inner = base.join("src/inner");
        let out = push(t, &base.join("src"), &inner, &[]);
        assert_one_line_error(&out, 3, &inner.display().to_string());
        assert!(!inner.exists(), "DEST created inside SRC");
    }
}

#[test]
fn usage_errors_exit_1_with_one_line_naming_the_value() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("a.txt", b"a\n");
        let dst = Tree::new();
        let d = dst.join("replica");
        for (args, mentions) in [
            (&["--bwlimit", "0"][..], "--bwlimit"),
            (&["--min-free", "150%"][..], "150%"),
            (&["--jobs", "0"][..], "--jobs"),
            // Last, so that the cases above are checked even if clap's multi-line
            // usage error makes this one fail.
            (&["--no-such-flag"][..], "--no-such-flag"),
        ] {
            let out = push(t, src.path(), &d, args);
            assert_one_line_error(&out, 1, mentions);
            assert!(out.stdout.is_empty(), "{args:?}: {}", show(&out));
            assert!(!d.exists(), "{args:?}: DEST created despite a usage error");
        }
    }
}

// ---------------------------------------------------------------------------------
// Output.
// ---------------------------------------------------------------------------------

fn small_src() -> Tree {
    let src = Tree::new();
    src.file("a.txt", b"alpha\n")
        .file("b.txt", b"bravo bravo\n")
        .file("d/c.txt", b"charlie charlie charlie\n");
    src
}

#[test]
fn quiet_default_json_and_progress_output() {
    for &t in TRANSPORTS {
        let src = small_src();

        let dst = Tree::new();
        let out = push_clean(t, src.path(), &dst.join("r"), &["-q"]);
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "-q printed\n{}",
            show(&out)
        );
        assert_same_tree(src.path(), &dst.join("r"));

        let dst = Tree::new();
        let out = push_clean(t, src.path(), &dst.join("r"), &[]);
        assert!(
            stdout_of(&out).contains("created"),
            "no summary\n{}",
            show(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "stderr not empty on a non-TTY without --progress\n{}",
            show(&out)
        );

        let dst = Tree::new();
        let out = push_clean(t, src.path(), &dst.join("r"), &["--json"]);
        let stdout = stdout_of(&out);
        assert_eq!(
            stdout.lines().count(),
            1,
            "--json must print one line\n{}",
            show(&out)
        );
        let j: serde_json::Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
        assert!(j.is_object());
        for field in [
            "files_scanned",
            "created",
            "updated",
            "deleted",
            "unchanged",
            "bytes_literal",
            "bytes_matched",
            "bytes_moved",
            "elapsed_secs",
            "exit_code",
        ] {
            assert!(
                j[field].is_number(),
                "field {field} missing or not a number: {j}"
            );
        }
        assert_eq!(j["files_scanned"], 4, "{j}"); // a.txt b.txt d d/c.txt
        assert_eq!(j["created"], 4, "{j}");
        assert_eq!(j["updated"], 0, "{j}");
        assert_eq!(j["deleted"], 0, "{j}");
        assert_eq!(j["exit_code"], 0, "{j}");
        let total = (6 + 12 + 24) as u64;
        let written =
            j["bytes_literal"].as_u64().unwrap_or(0) + j["bytes_cloned"].as_u64().unwrap_or(0);
        assert_eq!(written, total, "{j}");
        assert!(j["elapsed_secs"].as_f64().is_some_and(|s| s >= 0.0), "{j}");

        let dst = Tree::new();
        let out = push_clean(t, src.path(), &dst.join("r"), &["--progress"]);
        assert!(stdout_of(&out).contains("created"), "{}", show(&out));
        assert_same_tree(src.path(), &dst.join("r"));
    }
}

/// Itemized lines (two letters, a space, a path) of an output.
fn items(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 3 && b"+>.~c=-".contains(&b[0]) && b"fdLpsD".contains(&b[1]) && b[2] == b' '
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn itemize_lines_name_each_change() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("new.txt", b"new file\n")
            .file("changed.txt", b"new content here\n")
            .file("newdir/f", b"f\n")
            .symlink("ln", "new.txt");
        let dst = Tree::new();
        dst.file("changed.txt", b"old\n")
            .file("gone.txt", b"gone away, bye bye\n");
        let out = push_clean(t, src.path(), dst.path(), &["-i", "--delete"]);
        let mut got = items(&stdout_of(&out));
        got.sort();
        let mut want = vec![
            ">f changed.txt",
            "-f gone.txt",
            "+L ln -> new.txt",
            "+f new.txt",
            "+d newdir",
            "+f newdir/f",
        ];
        want.sort();
        assert_eq!(got, want, "\n{}", show(&out));
        assert_same_tree(src.path(), dst.path());

        // With --json the items move to stderr and stdout stays one JSON object.
        src.file("changed.txt", b"changed again, longer than before\n");
        let out = push_clean(t, src.path(), dst.path(), &["-i", "--json"]);
        assert_eq!(json(&out)["updated"], 1);
        assert_eq!(stdout_of(&out).lines().count(), 1, "{}", show(&out));
        assert_eq!(
            items(&stderr_of(&out)),
            vec![">f changed.txt"],
            "{}",
            show(&out)
        );
    }
}

// ---------------------------------------------------------------------------------
// A second push writes nothing.
// ---------------------------------------------------------------------------------

#[test]
fn a_second_push_writes_nothing() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("a.txt", b"alpha\n")
            .file("deep/er/b.txt", b"bravo\n")
            .file("deep/c.bin", &noise(5, 200 * 1024))
            .file("private/key", b"k\n")
            .chmod("private/key", 0o600)
            .chmod("private", 0o700)
            .file("links/h1", b"linked\n")
            .hardlink("links/h2", "links/h1")
            .symlink("ln", "a.txt")
            .dir("empty");
        let dst = Tree::new();
        let d = dst.join("replica");
        push_clean(t, src.path(), &d, &[]);
        assert_same_tree(src.path(), &d);
        let before = stamps(&d);

        let out = push_clean(t, src.path(), &d, &["--json", "--delete"]);
        assert_untouched(&before, &d, "DEST on a second push");
        let j = json(&out);
        for field in [
            "created",
            "updated",
            "deleted",
            "moved",
            "linked",
            "metadata_only",
            "bytes_literal",
        ] {
            assert_eq!(j[field], 0, "{field} on a second push: {j}");
        }
    }
}

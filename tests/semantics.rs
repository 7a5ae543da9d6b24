//! What `push` replicates and how: file data and metadata, symlinks, hard links, sparse
//! files, owners, xattrs, special files, awkward names, change detection, deletes,
//! filters, deltas, move detection, `-x`, the corpus and dry runs. Every
//! transfer test runs through each of the harness's `TRANSPORTS`.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64), distinct per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs push with `--json` (and `args`), asserts exit 0, returns the output and the JSON.
fn push_json(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let out = push_ok(t, src, dst, &a);
    let v = json(&out);
    (out, v)
}

/// `push_json`, and for the remote transport the bytes that crossed the wire to the far
/// side, as counted outside the tool (`WireCount`).
fn push_json_wire(
    t: Transport,
    src: &Path,
    dst: &Path,
    args: &[&str],
) -> (Output, serde_json::Value, Option<u64>) {
    match t {
        Transport::Local => {
            let (out, v) = push_json(t, src, dst, args);
            (out, v, None)
        }
        Transport::Rsh => {
            let mut a = args.to_vec();
            a.push("--json");
            let (out, wire) = push_counted(src, dst, &a);
            let v = json(&out);
            (out, v, Some(wire))
        }
    }
}

/// The itemized lines of a run made with `--json` (they go to stderr then); warnings
/// and errors (prefixed `fsync-repl:`) are left out.
fn items(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("fsync-repl:"))
        .map(str::to_string)
        .collect()
}

/// A counter of the JSON report.
#[track_caller]
fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key:?} in report {v}"))
}

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    lstat(p).mode() & 0o7777
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = lstat(p);
    (m.mtime(), m.mtime_nsec())
}

/// Path of every entry under `root` (root excluded) → inode number.
fn inodes(root: &Path) -> BTreeMap<Vec<u8>, u64> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e))
        .map(|e| {
            let e = e.expect("walk");
            let rel = e.path().strip_prefix(root).expect("prefix");
            (rel.as_os_str().as_bytes().to_vec(), lstat(e.path()).ino())
        })
        .collect()
}

/// Differences in mode and mtime (to the nanosecond) of the roots and every directory,
/// which `tree_diff` does not compare.
fn dir_meta_diff(a: &Path, b: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(a)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e))
    {
        let e = e.expect("walk");
        if !e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(a).expect("prefix");
        let other = b.join(rel);
        let Ok(mb) = fs::symlink_metadata(&other) else {
            out.push(format!("directory missing: {}", rel.display()));
            continue;
        };
        let ma = lstat(e.path());
        let (x, y) = (
            (ma.mode() & 0o7777, ma.mtime(), ma.mtime_nsec()),
            (mb.mode() & 0o7777, mb.mtime(), mb.mtime_nsec()),
        );
        if !mb.is_dir() || x != y {
            out.push(format!(
                "directory {:?}: (mode, mtime, nsec) {:o}/{}/{} vs {:o}/{}/{}",
                rel, x.0, x.1, x.2, y.0, y.1, y.2
            ));
        }
    }
    out
}

/// `assert_same_tree` plus directory (and root) modes and mtimes.
#[track_caller]
fn assert_replica(a: &Path, b: &Path) {
    let mut d = tree_diff(a, b);
    d.extend(dir_meta_diff(a, b));
    assert!(d.is_empty(), "replica differs:\n{}", d.join("\n"));
}

/// Asserts that a run changed nothing: no itemized line, zero counters.
#[track_caller]
fn assert_nothing_written(out: &Output, v: &serde_json::Value) {
    let lines = items(out);
    assert!(
        lines.is_empty(),
        "expected no itemized lines, got {lines:?}"
    );
    for k in [
        "created",
        "updated",
        "deleted",
        "moved",
        "linked",
        "metadata_only",
    ] {
        assert_eq!(n(v, k), 0, "{k} in {v}");
    }
}

fn mknod(p: &Path, ft: FileType, perm: u32, dev: u64) {
    rustix::fs::mknodat(rustix::fs::CWD, p, ft, Mode::from_raw_mode(perm), dev)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
    // mknod applies the umask; set the exact bits.
    fs::set_permissions(p, fs::Permissions::from_mode(perm)).expect("chmod");
}

// ---------------------------------------------------------------------------------------
// 1. Regular files, directories, the root
// ---------------------------------------------------------------------------------------

/// Builds a tree exercising modes, odd nanoseconds, empty files and directories; the
/// directory mtimes are set last, after their contents exist.
fn meta_tree() -> Tree {
    let src = Tree::new();
    src.file("plain.txt", b"hello world\n")
        .file("private", b"secret")
        .file("script.sh", b"#!/bin/sh\necho hi\n")
        .file("suid", b"\x7fELF not really")
        .file("empty", b"")
        .file("d1/d2/deep.txt", &noise(70_000, 1))
        .dir("emptydir")
        .dir("locked")
        .chmod("private", 0o600)
        .chmod("script.sh", 0o755)
        .chmod("suid", 0o4755)
        .chmod("empty", 0o640)
        .mtime("plain.txt", 1_600_000_000, 123_456_789)
        .mtime("private", 1_500_000_001, 1)
        .mtime("script.sh", 1_234_567_890, 999_999_999)
        .mtime("suid", 1_000_000_000, 7)
        .mtime("empty", 1_111_111_111, 500_000_001)
        .mtime("d1/d2/deep.txt", 1_650_000_000, 333_333_333)
        .chmod("d1", 0o750)
        .chmod("d1/d2", 0o711)
        .chmod("locked", 0o500)
        .chmod("emptydir", 0o1777)
        .mtime("d1/d2", 1_400_000_000, 11)
        .mtime("d1", 1_300_000_000, 22)
        .mtime("emptydir", 1_200_000_000, 33)
        .mtime("locked", 1_100_000_000, 44);
    // The root itself: a distinctive mode and mtime, set after everything beneath it.
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o751)).expect("chmod root");
    set_mtime(src.path(), 1_555_555_555, 555_555_555);
    src
}

#[test]
fn files_dirs_modes_and_nanosecond_mtimes_into_missing_nested_dest() {
    for &t in TRANSPORTS {
        let src = meta_tree();
        let dst = Tree::new();
        let d = dst.join("not/yet/there/replica");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        // Spot checks that do not rely on the tree comparer alone.
        assert_eq!(mode(&d.join("private")), 0o600);
        assert_eq!(mode(&d.join("script.sh")), 0o755);
        assert_eq!(mode(&d.join("suid")), 0o4755, "setuid bit lost");
        assert_eq!(mode(&d.join("emptydir")), 0o1777);
        assert_eq!(mode(&d.join("locked")), 0o500);
        assert_eq!(mtime(&d.join("script.sh")), (1_234_567_890, 999_999_999));
        assert_eq!(mtime(&d.join("d1")), (1_300_000_000, 22));
        assert_eq!(mtime(&d.join("d1/d2")), (1_400_000_000, 11));
        assert_eq!(fs::read(d.join("empty")).expect("read"), b"");
        assert!(lstat(&d.join("emptydir")).is_dir());
        assert_eq!(fs::read_dir(d.join("emptydir")).expect("ls").count(), 0);
        assert_eq!(mode(&d), 0o751, "DEST root mode");
        assert_eq!(mtime(&d), (1_555_555_555, 555_555_555), "DEST root mtime");
    }
}

#[test]
fn trailing_slash_on_src_mirrors_contents_either_way() {
    for &t in TRANSPORTS {
        let src = meta_tree();
        let name = src.path().file_name().expect("name").to_os_string();
        let dst = Tree::new();
        let (plain, slashed) = (dst.join("plain"), dst.join("slashed"));
        let mut with_slash = src.path().as_os_str().to_os_string();
        with_slash.push("/");
        push_ok(t, src.path(), &plain, &[]);
        push_ok(t, Path::new(&with_slash), &slashed, &[]);
        assert_replica(src.path(), &plain);
        assert_replica(src.path(), &slashed);
        assert!(
            !plain.join(&name).exists(),
            "SRC's own name appeared in DEST"
        );
        assert!(
            !slashed.join(&name).exists(),
            "SRC's own name appeared in DEST"
        );
        // Also a DEST given with a trailing slash, and existing.
        let mut dst_slash = slashed.as_os_str().to_os_string();
        dst_slash.push("/");
        let (out, v) = push_json(t, Path::new(&with_slash), Path::new(&dst_slash), &["-i"]);
        assert_nothing_written(&out, &v);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Symlinks
// ---------------------------------------------------------------------------------------

#[test]
fn symlinks_are_copied_verbatim_and_never_followed() {
    for &t in TRANSPORTS {
        let outside = Tree::new();
        outside.file("secret", b"do not copy me");
        let src = Tree::new();
        src.file("sub/file", b"data")
            .symlink("rel", "sub/file")
            .symlink("abs_passwd", "/etc/passwd")
            .symlink("dangling", "../../nowhere/at/all")
            .symlink("outside_dir", outside.path())
            .symlink("up", "../../../..")
            .symlink("dirlink", "sub")
            .symlink("sub/self", ".")
            .symlink("nonutf8", bytes_path(b"caf\xe9/\x01odd\xff"));
        for (i, l) in [
            "rel",
            "abs_passwd",
            "dangling",
            "outside_dir",
            "up",
            "dirlink",
            "sub/self",
            "nonutf8",
        ]
        .iter()
        .enumerate()
        {
            src.mtime(l, 1_400_000_000 + i as i64, 100_000_001 + i as u32 * 7);
        }
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        for l in ["abs_passwd", "dirlink", "outside_dir", "sub/self", "up"] {
            assert!(
                lstat(&d.join(l)).file_type().is_symlink(),
                "{l} is not a symlink in DEST"
            );
        }
        assert_eq!(
            fs::read_link(d.join("nonutf8"))
                .expect("readlink")
                .as_os_str()
                .as_bytes(),
            b"caf\xe9/\x01odd\xff"
        );
        assert_eq!(
            fs::read_link(d.join("abs_passwd")).expect("readlink"),
            Path::new("/etc/passwd")
        );
        assert_eq!(mtime(&d.join("dangling")), (1_400_000_002, 100_000_015));
        // Nothing reached through a symlink was copied.
        let names: Vec<_> = walkdir::WalkDir::new(&d)
            .into_iter()
            .map(|e| e.expect("walk").file_name().to_os_string())
            .collect();
        assert!(!names.iter().any(|n| n == "secret"), "{names:?}");
        assert_eq!(outside.read("secret"), b"do not copy me");
    }
}

// ---------------------------------------------------------------------------------------
// 3. Hard links
// ---------------------------------------------------------------------------------------

#[test]
fn hard_link_group_across_dirs_stays_one_inode_after_content_change() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("a/one", b"shared content v1")
            .dir("b")
            .hardlink("a/two", "a/one")
            .hardlink("b/three", "a/one")
            .file("a/alone", b"shared content v1")
            .mtime("a/one", 1_500_000_000, 42);
        let dst = Tree::new();
        let d = dst.join("r");
        let group = ["a/one", "a/two", "b/three"];
        let check = |d: &Path, content: &[u8]| {
            let inos: Vec<u64> = group.iter().map(|p| lstat(&d.join(p)).ino()).collect();
            assert!(
                inos.iter().all(|&i| i == inos[0]),
                "DEST group split: {inos:?}"
            );
            assert_eq!(lstat(&d.join("a/one")).nlink(), 3);
            assert_ne!(lstat(&d.join("a/alone")).ino(), inos[0]);
            for p in group {
                assert_eq!(fs::read(d.join(p)).expect("read"), content, "{p}");
            }
        };
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        check(&d, b"shared content v1");

        // Change the group's content in place (all three names see it).
        fs::write(src.join("b/three"), b"shared content, version two").expect("write");
        src.mtime("b/three", 1_600_000_000, 43);
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        check(&d, b"shared content, version two");

        // And a third push finds nothing to do.
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Sparse files
// ---------------------------------------------------------------------------------------

#[test]
fn sparse_file_keeps_its_holes() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        let p = src.join("sparse.img");
        {
            let f = fs::File::create(&p).expect("create");
            f.set_len(64 * MIB).expect("set_len");
            f.write_all_at(b"first data region", MIB).expect("write");
            f.write_all_at(&noise(10_000, 4), 40 * MIB + 123)
                .expect("write");
        }
        src.mtime("sparse.img", 1_500_000_000, 5);
        let src_alloc = lstat(&p).blocks() * 512;
        assert!(
            src_alloc < MIB,
            "the source is not sparse here ({src_alloc})"
        );
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        let q = d.join("sparse.img");
        let m = lstat(&q);
        assert_eq!(m.size(), 64 * MIB);
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 5));
        let alloc = m.blocks() * 512;
        assert!(
            alloc < MIB,
            "DEST allocated {alloc} bytes for a sparse file"
        );
        let (a, b) = (fs::read(&p).expect("read"), fs::read(&q).expect("read"));
        assert!(a == b, "sparse file content differs");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Owners
// ---------------------------------------------------------------------------------------

#[test]
fn owners_are_kept_as_root_and_numeric_ids_is_accepted() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("owned", b"x")
            .file("d/inner", b"y")
            .symlink("link", "owned")
            .chmod("owned", 0o4755);
        // --numeric-ids is accepted whoever runs it.
        let dst = Tree::new();
        push_ok(t, src.path(), &dst.join("n"), &["--numeric-ids"]);
        assert_same_tree(src.path(), &dst.join("n"));
        require!(is_root(), "setting owners needs root");
        std::os::unix::fs::chown(src.join("owned"), Some(1234), Some(5678)).expect("chown");
        // chown clears set-id bits: set them again.
        src.chmod("owned", 0o4755);
        std::os::unix::fs::chown(src.join("d"), Some(4321), Some(8765)).expect("chown");
        std::os::unix::fs::lchown(src.join("link"), Some(1111), Some(2222)).expect("lchown");
        for (k, args) in [&[][..], &["--numeric-ids"][..]].iter().enumerate() {
            let d = dst.join(format!("r{k}"));
            push_ok(t, src.path(), &d, args);
            assert_replica(src.path(), &d);
            let m = lstat(&d.join("owned"));
            assert_eq!((m.uid(), m.gid()), (1234, 5678), "file owner ({args:?})");
            assert_eq!(m.mode() & 0o7777, 0o4755, "setuid lost with the owner");
            let m = lstat(&d.join("d"));
            assert_eq!((m.uid(), m.gid()), (4321, 8765), "dir owner ({args:?})");
            let m = lstat(&d.join("link"));
            assert_eq!((m.uid(), m.gid()), (1111, 2222), "symlink owner ({args:?})");
            let m = lstat(&d.join("d/inner"));
            assert_eq!((m.uid(), m.gid()), (0, 0));
        }
        // An owner-only change reaches an existing replica.
        let d = dst.join("r0");
        std::os::unix::fs::chown(src.join("d/inner"), Some(2000), Some(3000)).expect("chown");
        std::os::unix::fs::chown(src.join("d"), Some(4322), None).expect("chown");
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_eq!(n(&v, "bytes_literal"), 0, "{v}");
        assert!(!items(&out).is_empty());
        let m = lstat(&d.join("d/inner"));
        assert_eq!(
            (m.uid(), m.gid()),
            (2000, 3000),
            "owner change not replicated"
        );
        assert_eq!(
            lstat(&d.join("d")).uid(),
            4322,
            "dir owner change not replicated"
        );
        assert_replica(src.path(), &d);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Extended attributes
// ---------------------------------------------------------------------------------------

/// A tree on a filesystem that takes `user.` xattrs on regular files: /dev/shm first,
/// then the temp dir. `None` when neither does (a skip, or a failure under CI=true).
fn xattr_tree() -> Option<Tree> {
    let mut why = Vec::new();
    for base in [Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()] {
        if !base.is_dir() {
            continue;
        }
        let t = Tree::new_in(&base);
        t.file("probe", b"");
        let r = rustix::fs::setxattr(
            t.join("probe"),
            "user.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        );
        fs::remove_file(t.join("probe")).expect("rm probe");
        match r {
            Ok(()) => return Some(t),
            Err(e) => why.push(format!("{}: {e}", base.display())),
        }
    }
    require(
        false,
        &format!("no filesystem here takes user xattrs ({})", why.join("; ")),
    );
    None
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(rustix::io::Errno::NODATA) => None,
        Err(e) => panic!("getxattr {}: {e}", p.display()),
    }
}

#[test]
fn xattrs_copied_only_with_dash_x() {
    for &t in TRANSPORTS {
        let Some(base) = xattr_tree() else { return };
        let src = base.join("src");
        fs::create_dir(&src).expect("mkdir");
        fs::write(src.join("f"), b"with attributes").expect("write");
        rustix::fs::setxattr(
            src.join("f"),
            "user.test",
            b"value \x00\xff bytes",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        let plain = base.join("plain");
        push_ok(t, &src, &plain, &[]);
        assert_same_tree(&src, &plain);
        assert_eq!(
            get_xattr(&plain.join("f"), "user.test"),
            None,
            "copied without -X"
        );
        let with = base.join("with");
        push_ok(t, &src, &with, &["-X"]);
        assert_same_tree(&src, &with);
        assert_eq!(
            get_xattr(&with.join("f"), "user.test").as_deref(),
            Some(&b"value \x00\xff bytes"[..]),
            "not copied with -X"
        );
        let long = base.join("long");
        push_ok(t, &src, &long, &["--xattrs"]);
        assert!(get_xattr(&long.join("f"), "user.test").is_some());
    }
}

#[test]
fn xattrs_reach_an_existing_replica_with_dash_x() {
    for &t in TRANSPORTS {
        let Some(base) = xattr_tree() else { return };
        let src = base.join("src");
        fs::create_dir(&src).expect("mkdir");
        fs::write(src.join("f"), b"unchanged data").expect("write");
        rustix::fs::setxattr(
            src.join("f"),
            "user.test",
            b"one",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        let d = base.join("r");
        push_ok(t, &src, &d, &[]);
        assert_eq!(get_xattr(&d.join("f"), "user.test"), None);
        // Same data, size and mtime: only the attribute is missing in DEST.
        push_ok(t, &src, &d, &["-X"]);
        assert_eq!(
            get_xattr(&d.join("f"), "user.test").as_deref(),
            Some(&b"one"[..]),
            "-X did not add the attribute to an unchanged file"
        );
        // An attribute changed on an otherwise unchanged file.
        rustix::fs::setxattr(
            src.join("f"),
            "user.test",
            b"two",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        push_ok(t, &src, &d, &["-X"]);
        assert_eq!(
            get_xattr(&d.join("f"), "user.test").as_deref(),
            Some(&b"two"[..]),
            "-X did not update a changed attribute"
        );
        assert_same_tree(&src, &d);
    }
}

#[test]
fn directory_xattrs_with_dash_x() {
    for &t in TRANSPORTS {
        let Some(base) = xattr_tree() else { return };
        let src = base.join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        fs::write(src.join("sub/f"), b"x").expect("write");
        rustix::fs::setxattr(
            src.join("sub"),
            "user.dir",
            b"on a directory",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("setxattr");
        let d = base.join("r");
        push_ok(t, &src, &d, &["-X"]);
        assert_same_tree(&src, &d);
        assert_eq!(
            get_xattr(&d.join("sub"), "user.dir").as_deref(),
            Some(&b"on a directory"[..]),
            "directory attribute not copied with -X"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. FIFOs, sockets, devices
// ---------------------------------------------------------------------------------------

/// Watches FIFOs from another thread: if anyone opens one for reading, a non-blocking
/// open for writing succeeds; the watcher records it (and, by closing, releases a reader
/// blocked in `open`, so the run cannot hang on it).
struct FifoWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoWatch {
    fn start(paths: Vec<PathBuf>) -> FifoWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicBool::new(false));
        let (s, n) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for p in &paths {
                    let r = rustix::fs::open(
                        p,
                        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                        Mode::empty(),
                    );
                    if r.is_ok() {
                        n.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        FifoWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for FifoWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn fifos_sockets_and_devices_are_recreated_as_root() {
    for &t in TRANSPORTS {
        require!(is_root(), "making devices needs root");
        let src = Tree::new();
        src.file("regular", b"r").dir("dev");
        mknod(&src.join("pipe"), FileType::Fifo, 0o640, 0);
        mknod(
            &src.join("dev/null13"),
            FileType::CharacterDevice,
            0o620,
            rustix::fs::makedev(1, 3),
        );
        mknod(
            &src.join("dev/loop7"),
            FileType::BlockDevice,
            0o600,
            rustix::fs::makedev(7, 7),
        );
        drop(std::os::unix::net::UnixListener::bind(src.join("sock")).expect("bind"));
        src.mtime("pipe", 1_300_000_000, 77)
            .mtime("dev/null13", 1_300_000_001, 78)
            .mtime("sock", 1_300_000_002, 79)
            .mtime("dev", 1_300_000_003, 80);
        let dst = Tree::new();
        let d = dst.join("r");
        let watch = FifoWatch::start(vec![src.join("pipe"), d.join("pipe")]);
        let out = push(t, src.path(), &d, &[]);
        let opened = watch.finish();
        assert!(!opened, "a FIFO was opened for reading during the run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_replica(src.path(), &d);
        let m = lstat(&d.join("pipe"));
        assert!(m.file_type().is_fifo(), "pipe is not a FIFO");
        assert_eq!(m.mode() & 0o7777, 0o640);
        let m = lstat(&d.join("dev/null13"));
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(m.mode() & 0o7777, 0o620);
        let m = lstat(&d.join("dev/loop7"));
        assert!(m.file_type().is_block_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(7, 7));
        assert!(lstat(&d.join("sock")).file_type().is_socket());
        assert_eq!(mtime(&d.join("sock")), (1_300_000_002, 79));

        // A second run leaves them alone (and still never opens the FIFO).
        let watch = FifoWatch::start(vec![src.join("pipe"), d.join("pipe")]);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert!(
            !watch.finish(),
            "a FIFO was opened for reading (second run)"
        );
        assert_nothing_written(&out, &v);
    }
}

// ---------------------------------------------------------------------------------------
// 8. Names
// ---------------------------------------------------------------------------------------

fn awkward_names() -> Vec<Vec<u8>> {
    vec![
        b"caf\xe9".to_vec(),
        vec![b'n'; 255],
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"back\\slash".to_vec(),
        b"-leading-dash".to_vec(),
        b"--".to_vec(),
        b" spaces  in name ".to_vec(),
        b"esc\x1b[31mred".to_vec(),
        "utf8 \u{1F600} \u{e9}t\u{e9}".as_bytes().to_vec(),
    ]
}

fn awkward_tree() -> Tree {
    let src = Tree::new();
    for (i, name) in awkward_names().iter().enumerate() {
        src.file(bytes_path(name), format!("content {i}").as_bytes());
    }
    src.file(bytes_path(b"dir\xff \n/inner\tfile"), b"nested");
    let mut long_dir = vec![b'd'; 255];
    long_dir.extend_from_slice(b"/");
    long_dir.extend_from_slice(&[b'f'; 255]);
    src.file(bytes_path(&long_dir), b"long names both levels");
    src
}

#[test]
fn awkward_names_round_trip() {
    for &t in TRANSPORTS {
        let src = awkward_tree();
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        for (i, name) in awkward_names().iter().enumerate() {
            assert_eq!(
                fs::read(d.join(bytes_path(name))).expect("read"),
                format!("content {i}").as_bytes()
            );
        }
        assert!(temp_files(&d).is_empty(), "{:?}", temp_files(&d));
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);
    }
}

#[test]
fn itemize_escapes_control_characters_one_line_per_entry() {
    for &t in TRANSPORTS {
        let src = awkward_tree();
        let entries = walkdir::WalkDir::new(src.path())
            .min_depth(1)
            .into_iter()
            .count();
        let dst = Tree::new();
        let (out, _) = push_json(t, src.path(), &dst.join("r"), &["-i"]);
        let lines = items(&out);
        assert_eq!(
            lines.len(),
            entries,
            "one itemized line per created entry: {lines:#?}"
        );
        let has = |l: &str| lines.iter().any(|x| x == l);
        assert!(has("+f new\\x0aline"), "{lines:#?}");
        assert!(has("+f tab\\x09here"), "{lines:#?}");
        assert!(has("+f caf\\xe9"), "{lines:#?}");
        assert!(has("+f back\\\\slash"), "{lines:#?}");
        assert!(has("+f esc\\x1b[31mred"), "{lines:#?}");
        assert!(has("+d dir\\xff \\x0a"), "{lines:#?}");
        assert!(has("+f dir\\xff \\x0a/inner\\x09file"), "{lines:#?}");
        assert_eq!(lines.iter().filter(|l| l.contains("line")).count(), 1);
        assert!(!lines.iter().any(|l| l == "line" || l.contains('\t')));
        assert!(!out.stderr.contains(&0x1b), "raw ESC byte printed");
    }
}

/// Opens (or creates) a chain of directories relative to `root`, one `openat` per level.
fn walk_chain(root: &Path, names: &[Vec<u8>], create: bool) -> OwnedFd {
    let mut dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", root.display()));
    for (level, name) in names.iter().enumerate() {
        if create {
            rustix::fs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(0o755))
                .expect("mkdirat");
        }
        dir = rustix::fs::openat(
            &dir,
            name.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("level {level} missing under {}: {e}", root.display()));
    }
    dir
}

/// Mode and mtime of every directory along the chain (root first), through descriptors.
fn chain_meta(root: &Path, names: &[Vec<u8>]) -> Vec<(u32, i64, i64)> {
    (0..=names.len())
        .map(|k| {
            let st = rustix::fs::fstat(walk_chain(root, &names[..k], false)).expect("fstat");
            (st.st_mode & 0o7777, st.st_mtime, st.st_mtime_nsec as i64)
        })
        .collect()
}

/// Writes (replacing) `name` at the bottom of the chain with a mode and an mtime.
fn write_deep(root: &Path, names: &[Vec<u8>], name: &str, data: &[u8], sec: i64, nsec: u32) {
    let bottom = walk_chain(root, names, false);
    let fd = rustix::fs::openat(
        &bottom,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    )
    .expect("create deep file");
    let mut f = fs::File::from(fd);
    f.write_all(data).expect("write");
    rustix::fs::fchmod(&f, Mode::from_raw_mode(0o640)).expect("chmod");
    let ts = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::futimens(&f, &times).expect("futimens");
}

/// (mode, mtime, nsec, content) of `name` at the bottom of the chain, and the names there.
fn read_deep(root: &Path, names: &[Vec<u8>], name: &str) -> (u32, i64, i64, Vec<u8>, usize) {
    let bottom = walk_chain(root, names, false);
    let fd = rustix::fs::openat(
        &bottom,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("deep file missing under {}: {e}", root.display()));
    let st = rustix::fs::fstat(&fd).expect("fstat");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut fs::File::from(fd), &mut got).expect("read");
    let entries = rustix::fs::Dir::read_from(bottom.as_fd())
        .expect("readdir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_bytes() != b"." && e.file_name().to_bytes() != b"..")
        .count();
    (
        st.st_mode & 0o7777,
        st.st_mtime,
        st.st_mtime_nsec as i64,
        got,
        entries,
    )
}

#[test]
fn paths_longer_than_path_max_round_trip() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        let names: Vec<Vec<u8>> = (0..20u8).map(|i| vec![b'a' + i; 250]).collect();
        assert!(names.iter().map(|n| n.len() + 1).sum::<usize>() > 4096);
        drop(walk_chain(src.path(), &names, true));
        let content = noise(5000, 8);
        write_deep(
            src.path(),
            &names,
            "deep.txt",
            &content,
            1_234_000_000,
            987_654_321,
        );
        // Directory mtimes along the chain, deepest first (after their contents).
        for k in (1..=names.len()).rev() {
            let fd = walk_chain(src.path(), &names[..k], false);
            let ts = rustix::fs::Timespec {
                tv_sec: 1_100_000_000 + k as i64,
                tv_nsec: k as _,
            };
            let times = rustix::fs::Timestamps {
                last_access: ts,
                last_modification: ts,
            };
            rustix::fs::futimens(&fd, &times).expect("futimens");
        }
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        let (m, sec, nsec, got, entries) = read_deep(&d, &names, "deep.txt");
        assert_eq!((m, sec, nsec), (0o640, 1_234_000_000, 987_654_321));
        assert!(got == content, "deep file content differs");
        assert_eq!(entries, 1);
        assert_eq!(chain_meta(&d, &names), chain_meta(src.path(), &names));
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);

        // Update the deep file (a temporary file and a rename down there).
        let content = noise(7000, 9);
        write_deep(src.path(), &names, "deep.txt", &content, 1_234_000_100, 5);
        push_ok(t, src.path(), &d, &[]);
        let (m, sec, nsec, got, entries) = read_deep(&d, &names, "deep.txt");
        assert_eq!((m, sec, nsec), (0o640, 1_234_000_100, 5));
        assert!(got == content, "updated deep file content differs");
        assert_eq!(entries, 1, "a temporary file was left deep down");
        assert_eq!(chain_meta(&d, &names), chain_meta(src.path(), &names));
    }
}

#[test]
fn source_names_that_look_like_temp_files_round_trip() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file(".notes.fsync-tmp.0000abcd0001", b"a user's file")
            .file("sub/.x.fsync-tmp.1", b"another");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);
        assert_replica(src.path(), &d);
    }
}

#[test]
fn empty_source_gives_an_empty_dest_with_the_roots_metadata() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        fs::set_permissions(src.path(), fs::Permissions::from_mode(0o710)).expect("chmod");
        set_mtime(src.path(), 1_222_333_444, 555_666_777);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        // Only the replica's own record of its source.
        let names: Vec<_> = fs::read_dir(&d)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [".fsync-repl"]);
        assert_replica(src.path(), &d);
    }
}

// ---------------------------------------------------------------------------------------
// 9. Change detection
// ---------------------------------------------------------------------------------------

#[test]
fn unchanged_tree_second_push_writes_nothing() {
    for &t in TRANSPORTS {
        let src = meta_tree();
        src.symlink("ln", "plain.txt").hardlink("hl", "plain.txt");
        set_mtime(src.path(), 1_555_555_555, 555_555_555);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);
        let before = inodes(&d);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);
        assert_eq!(n(&v, "bytes_literal"), 0);
        assert!(n(&v, "unchanged") > 0, "{v}");
        assert_eq!(inodes(&d), before, "DEST entries were replaced");
        assert_replica(src.path(), &d);
    }
}

#[test]
fn same_size_and_mtime_content_change_needs_checksum() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("f.txt", b"content-A")
            .file("other", b"unchanged")
            .mtime("f.txt", 1_500_000_000, 1);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        src.file("f.txt", b"content-B")
            .mtime("f.txt", 1_500_000_000, 1);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_nothing_written(&out, &v);
        assert_eq!(fs::read(d.join("f.txt")).expect("read"), b"content-A");
        let (out, v) = push_json(t, src.path(), &d, &["-i", "--checksum"]);
        assert_eq!(items(&out), vec![">f f.txt".to_string()]);
        assert_eq!(n(&v, "updated"), 1);
        assert_eq!(fs::read(d.join("f.txt")).expect("read"), b"content-B");
        assert_replica(src.path(), &d);
        // -c as a short flag, nothing left to do.
        let (out, v) = push_json(t, src.path(), &d, &["-i", "-c"]);
        assert_nothing_written(&out, &v);
    }
}

#[test]
fn size_or_mtime_changes_are_detected() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("sized", b"abc")
            .file("timed", b"same bytes")
            .mtime("sized", 1_500_000_000, 9)
            .mtime("timed", 1_500_000_000, 9);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);

        // Size change, mtime kept.
        src.file("sized", b"abcdef")
            .mtime("sized", 1_500_000_000, 9);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        assert_eq!(items(&out), vec![">f sized".to_string()]);
        assert_eq!(n(&v, "updated"), 1);
        assert_eq!(fs::read(d.join("sized")).expect("read"), b"abcdef");

        // Mtime change only (one nanosecond), content kept.
        src.mtime("timed", 1_500_000_000, 10);
        let (out, _) = push_json(t, src.path(), &d, &["-i"]);
        let lines = items(&out);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0] == ">f timed" || lines[0] == ".f timed",
            "{lines:?}"
        );
        assert_eq!(mtime(&d.join("timed")), (1_500_000_000, 10));
        assert_replica(src.path(), &d);
    }
}

#[test]
fn mode_only_change_updates_mode_in_place() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("m", b"mode me")
            .chmod("m", 0o600)
            .mtime("m", 1_500_000_000, 3);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        let ino = lstat(&d.join("m")).ino();
        src.chmod("m", 0o640);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        let lines = items(&out);
        assert_eq!(lines, vec![".f m".to_string()]);
        assert_eq!(n(&v, "bytes_literal"), 0);
        assert_eq!(mode(&d.join("m")), 0o640);
        assert_eq!(
            lstat(&d.join("m")).ino(),
            ino,
            "mode change rewrote the file"
        );
        assert_replica(src.path(), &d);
    }
}

#[test]
fn directory_and_symlink_metadata_changes_are_replicated() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("sub/f", b"f")
            .symlink("ln", "sub/f")
            .symlink("retarget", "sub/f")
            .chmod("sub", 0o755)
            .mtime("ln", 1_400_000_000, 1)
            .mtime("retarget", 1_400_000_000, 2)
            .mtime("sub", 1_400_000_000, 3);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);

        src.chmod("sub", 0o700).mtime("sub", 1_400_000_500, 4);
        src.mtime("ln", 1_400_000_600, 5);
        fs::remove_file(src.join("retarget")).expect("rm");
        src.symlink("retarget", "elsewhere")
            .mtime("retarget", 1_400_000_700, 6);
        set_mtime(src.path(), 1_400_000_800, 7);
        let (out, v) = push_json(t, src.path(), &d, &["-i"]);
        let lines = items(&out);
        assert!(lines.contains(&".d sub".to_string()), "{lines:?}");
        assert!(
            lines.contains(&">L retarget -> elsewhere".to_string()),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.ends_with(" ln")), "{lines:?}");
        assert_eq!(n(&v, "bytes_literal"), 0);
        assert_eq!(mode(&d.join("sub")), 0o700);
        assert_eq!(mtime(&d.join("ln")), (1_400_000_600, 5));
        assert_replica(src.path(), &d);
    }
}

// ---------------------------------------------------------------------------------------
// 10. --delete and type changes
// ---------------------------------------------------------------------------------------

#[test]
fn delete_removes_only_with_the_flag() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("keep", b"k")
            .file("old.txt", b"o")
            .file("olddir/x/y", b"deep")
            .symlink("oldlink", "keep")
            .dir("oldempty");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        fs::remove_file(src.join("old.txt")).expect("rm");
        fs::remove_dir_all(src.join("olddir")).expect("rm");
        fs::remove_file(src.join("oldlink")).expect("rm");
        fs::remove_dir(src.join("oldempty")).expect("rm");

        let (_, v) = push_json(t, src.path(), &d, &[]);
        assert_eq!(n(&v, "deleted"), 0);
        for p in ["old.txt", "olddir/x/y", "oldlink", "oldempty"] {
            assert!(
                fs::symlink_metadata(d.join(p)).is_ok(),
                "{p} deleted without --delete"
            );
        }

        let (out, v) = push_json(t, src.path(), &d, &["--delete", "-i"]);
        assert_eq!(n(&v, "deleted"), 6, "{v}");
        let lines = items(&out);
        assert!(lines.contains(&"-f old.txt".to_string()), "{lines:?}");
        assert!(lines.contains(&"-d olddir".to_string()), "{lines:?}");
        assert_replica(src.path(), &d);
    }
}

#[test]
fn type_changes_converge() {
    for &t in TRANSPORTS {
        let outside = Tree::new();
        let src = Tree::new();
        src.file("x", b"file becomes dir")
            .file("y/a", b"tree becomes file")
            .file("y/sub/b", b"b")
            .symlink("y/sub/l", "../a")
            .symlink("z", outside.path())
            .symlink("w", "x")
            .file("v", b"file becomes symlink")
            .file("u/only", b"dir becomes symlink");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        assert_replica(src.path(), &d);

        fs::remove_file(src.join("x")).expect("rm");
        fs::remove_dir_all(src.join("y")).expect("rm");
        fs::remove_file(src.join("z")).expect("rm");
        fs::remove_file(src.join("w")).expect("rm");
        fs::remove_file(src.join("v")).expect("rm");
        fs::remove_dir_all(src.join("u")).expect("rm");
        src.file("x/inside", b"now a directory")
            .file("y", b"now a file")
            .file("z/f", b"a directory where DEST has a symlink")
            .file("w", b"a file where DEST has a symlink")
            .symlink("v", "y")
            .symlink("u", "x");
        push_ok(t, src.path(), &d, &["--delete"]);
        assert_replica(src.path(), &d);
        assert_eq!(
            fs::read_dir(outside.path()).expect("ls").count(),
            0,
            "wrote through DEST's old symlink"
        );
        let (out, v) = push_json(t, src.path(), &d, &["--delete", "-i"]);
        assert_nothing_written(&out, &v);
    }
}

// ---------------------------------------------------------------------------------------
// 11. Filters
// ---------------------------------------------------------------------------------------

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn command_line_excludes() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("c.c", b"c")
            .file("a.o", b"o")
            .file("sub/deep/b.o", b"o")
            .file("sub/deep/b.c", b"c")
            .file("build/out.bin", b"b")
            .file("sub/build/keep.txt", b"k")
            .file("x.tmp", b"t")
            .file("sub/y.tmp", b"t")
            .file("cache/z", b"z")
            .file("sub/cache/w", b"w");
        let lists = Tree::new();
        lists.file("patterns", b"*.tmp\n# a comment\n\n/cache/\n");
        let pat = lists.join("patterns");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(
            t,
            src.path(),
            &d,
            &[
                "--exclude",
                "*.o",
                "--exclude",
                "/build",
                "--exclude-from",
                pat.to_str().expect("utf8"),
            ],
        );
        for p in [
            "a.o",
            "sub/deep/b.o",
            "build",
            "x.tmp",
            "sub/y.tmp",
            "cache",
        ] {
            assert!(!exists(&d.join(p)), "{p} should be excluded");
        }
        for p in ["c.c", "sub/deep/b.c", "sub/build/keep.txt", "sub/cache/w"] {
            assert!(exists(&d.join(p)), "{p} should be copied");
        }
    }
}

#[test]
fn fsyncignore_files_hidden_files_and_gitignore() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file(".fsyncignore", b"*.o\n!keep.o\n*.log\n")
            .file("a.o", b"")
            .file("keep.o", b"")
            .file("top.log", b"")
            .file("local-only", b"top level is kept")
            .file("sub/.fsyncignore", b"!*.log\n/local-only\n")
            .file("sub/b.o", b"")
            .file("sub/keep.o", b"")
            .file("sub/app.log", b"re-included deeper")
            .file("sub/local-only", b"anchored to sub/")
            .file("sub/n.txt", b"")
            .file("sub/deeper/.fsyncignore", b"*.txt\n")
            .file("sub/deeper/n.txt", b"")
            .file("sub/deeper/app.log", b"inherits sub's re-include")
            .file("sub/deeper/c.o", b"")
            .file(".hidden", b"h")
            .file(".config/app/settings", b"s")
            .file(".gitignore", b"ignored.txt\n*.bak\n")
            .file("ignored.txt", b"i")
            .file("x.bak", b"b")
            .file(".ignore", b"y.dat\n")
            .file("y.dat", b"y")
            .file("proj/.gitignore", b"*\n")
            .file("proj/src.rs", b"fn main() {}");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        for p in [
            "a.o",
            "top.log",
            "sub/b.o",
            "sub/local-only",
            "sub/deeper/n.txt",
            "sub/deeper/c.o",
        ] {
            assert!(!exists(&d.join(p)), "{p} should be excluded");
        }
        for p in [
            "keep.o",
            "local-only",
            "sub/keep.o",
            "sub/app.log",
            "sub/n.txt",
            "sub/deeper/app.log",
            ".hidden",
            ".config/app/settings",
            ".gitignore",
            "ignored.txt",
            "x.bak",
            ".ignore",
            "y.dat",
            "proj/.gitignore",
            "proj/src.rs",
        ] {
            assert!(exists(&d.join(p)), "{p} should be copied");
        }
    }
}

#[test]
fn excluded_dest_entries_survive_delete_unless_delete_excluded() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("c.c", b"c")
            .file("a.o", b"o")
            .file("sub/b.o", b"o")
            .file("build/out/bin", b"b")
            .file("gone.txt", b"g")
            .file("top.log", b"l");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        fs::remove_file(src.join("gone.txt")).expect("rm");
        // Also excluded through an ignore file added later.
        src.file(".fsyncignore", b"*.log\n");
        let ex = ["--exclude", "*.o", "--exclude", "/build"];

        let mut args = ex.to_vec();
        args.push("--delete");
        push_ok(t, src.path(), &d, &args);
        assert!(!exists(&d.join("gone.txt")), "--delete did not delete");
        for p in [
            "a.o",
            "sub/b.o",
            "build/out/bin",
            "top.log",
            "c.c",
            ".fsyncignore",
        ] {
            assert!(
                exists(&d.join(p)),
                "{p} deleted by --delete although excluded"
            );
        }

        args.push("--delete-excluded");
        push_ok(t, src.path(), &d, &args);
        for p in ["a.o", "sub/b.o", "build", "top.log"] {
            assert!(!exists(&d.join(p)), "{p} kept despite --delete-excluded");
        }
        for p in ["c.c", "sub", ".fsyncignore"] {
            assert!(exists(&d.join(p)), "{p} should stay");
        }
    }
}

#[test]
fn delete_keeps_a_removed_directory_that_holds_excluded_files() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("olddir/a.o", b"object")
            .file("olddir/b.c", b"source")
            .file("olddir/sub/c.o", b"object")
            .file("ign/x.log", b"log")
            .file("ign/y.txt", b"txt")
            .file("keep", b"k");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        fs::remove_dir_all(src.join("olddir")).expect("rm");
        fs::remove_dir_all(src.join("ign")).expect("rm");
        src.file(".fsyncignore", b"*.log\n");
        let out = push(t, src.path(), &d, &["--delete", "--exclude", "*.o"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for p in ["olddir/a.o", "olddir/sub/c.o", "ign/x.log"] {
            assert!(exists(&d.join(p)), "{p} deleted although excluded");
        }
        for p in ["olddir/b.c", "ign/y.txt"] {
            assert!(!exists(&d.join(p)), "{p} not deleted");
        }
        let out = push(
            t,
            src.path(),
            &d,
            &["--delete", "--delete-excluded", "--exclude", "*.o"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!exists(&d.join("olddir")) && !exists(&d.join("ign")));
        assert_replica(src.path(), &d);
    }
}

// ---------------------------------------------------------------------------------------
// 12. --delta
// ---------------------------------------------------------------------------------------

#[test]
fn delta_sends_only_the_changed_region() {
    for &t in TRANSPORTS {
        let size = 3 * MIB as usize;
        let mut data = noise(size, 12);
        let src = Tree::new();
        src.file("big.bin", &data)
            .mtime("big.bin", 1_500_000_000, 0);
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);

        // A hard link to DEST's file from outside it, as a snapshot holds: a delta
        // must build a new file, never patch the old one in place.
        let snap = dst.join("snapshot-of-big.bin");
        fs::hard_link(d.join("big.bin"), &snap).expect("link");
        let old = data.clone();

        let mid = size / 2;
        for b in &mut data[mid..mid + 100] {
            *b ^= 0xa5;
        }
        src.file("big.bin", &data)
            .mtime("big.bin", 1_500_000_100, 0);
        let (_, v, wire) = push_json_wire(t, src.path(), &d, &["--delta"]);
        assert_eq!(n(&v, "updated"), 1);
        assert!(n(&v, "bytes_matched") > 2 * MIB, "{v}");
        assert!(n(&v, "bytes_literal") < MIB, "{v}");
        assert!(fs::read(d.join("big.bin")).expect("read") == data);
        assert!(
            fs::read(&snap).expect("read") == old,
            "the old version was patched"
        );
        assert_ne!(lstat(&snap).ino(), lstat(&d.join("big.bin")).ino());
        // What crossed the wire, counted outside the tool: far less than the file. The
        // counters alone would not see a sender that reports a delta's matches but
        // sends its data literally.
        if let Some(w) = wire {
            assert!(
                w < MIB,
                "{w} bytes sent for 100 changed bytes of 3 MiB; {v}"
            );
        }
        assert_replica(src.path(), &d);

        // Bytes inserted near the start shift everything after them.
        let ins = noise(1000, 77);
        data.splice(MIB as usize..MIB as usize, ins);
        src.file("big.bin", &data)
            .mtime("big.bin", 1_500_000_150, 0);
        let (_, v, wire) = push_json_wire(t, src.path(), &d, &["--delta"]);
        assert!(n(&v, "bytes_matched") > 2 * MIB, "{v}");
        assert!(n(&v, "bytes_literal") < MIB, "{v}");
        assert!(fs::read(d.join("big.bin")).expect("read") == data);
        if let Some(w) = wire {
            assert!(w < MIB, "{w} bytes sent for 1000 inserted bytes; {v}");
        }
        let size = data.len();

        // Whole files: the local default (DEST on ext4: no reflink), and -W remotely,
        // where deltas are the default.
        for b in &mut data[1000..1100] {
            *b ^= 0x5a;
        }
        src.file("big.bin", &data)
            .mtime("big.bin", 1_500_000_200, 0);
        let whole: &[&str] = if t == Transport::Local {
            &[]
        } else {
            &["--whole-file"]
        };
        let (_, v, wire) = push_json_wire(t, src.path(), &d, whole);
        let lit = n(&v, "bytes_literal");
        assert!(lit >= size as u64 * 99 / 100 && lit <= size as u64, "{v}");
        assert_eq!(n(&v, "bytes_matched"), 0, "{v}");
        assert!(fs::read(d.join("big.bin")).expect("read") == data);
        if let Some(w) = wire {
            assert!(
                w >= size as u64,
                "{w} bytes sent for a whole {size}-byte file"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 13. Move detection and local copies
// ---------------------------------------------------------------------------------------

/// A remote DEST compared in groups of one top-level directory: files renamed from one
/// group's directory into another's are still found and moved, and the directory left
/// empty is deleted.
#[test]
fn a_move_across_groups_of_a_remote_listing_is_still_a_move() {
    let src = Tree::new();
    for i in 0..4u64 {
        src.file(format!("a/img{i}.jpg"), &noise(200_000, 300 + i));
        src.file(format!("m/keep{i}"), b"same");
    }
    src.file("top.txt", b"top");
    let dst = Tree::new();
    let d = dst.join("r");
    let groups = ["--piece-entries", "1"];
    push_ok(Transport::Rsh, src.path(), &d, &groups);
    let before = inodes(&d);
    fs::rename(src.join("a"), src.join("z")).expect("rename");
    let (_, v) = push_json(
        Transport::Rsh,
        src.path(),
        &d,
        &["--delete", groups[0], groups[1]],
    );
    assert_eq!(n(&v, "moved"), 4, "{v}");
    assert_eq!(n(&v, "bytes_literal"), 0, "{v}");
    let after = inodes(&d);
    for i in 0..4 {
        let old = before.get(format!("a/img{i}.jpg").as_bytes());
        assert!(old.is_some() && old == after.get(format!("z/img{i}.jpg").as_bytes()));
    }
    assert!(!d.join("a").exists(), "the emptied directory stays");
    assert_same_tree(src.path(), &d);
}

#[test]
fn renamed_directory_is_moved_not_resent() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        let mut total = 0u64;
        for i in 0..10u64 {
            let len = 300_000 + i as usize * 1000;
            total += len as u64;
            src.file(format!("photos/img{i:02}.jpg"), &noise(len, 100 + i));
        }
        src.file("notes.txt", b"stays");
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        let before = inodes(&d);
        fs::rename(src.join("photos"), src.join("pictures")).expect("rename");
        // A second new copy of one moved file: copied from the moved one, not re-sent.
        fs::create_dir(src.join("backup")).expect("mkdir");
        fs::copy(src.join("pictures/img03.jpg"), src.join("backup/img03.jpg")).expect("cp");
        let (out, v, wire) = push_json_wire(t, src.path(), &d, &["--delete", "-i"]);
        assert_eq!(n(&v, "moved"), 10, "{v}");
        assert!(n(&v, "bytes_literal") < total / 100, "{v}");
        // What the disk shows: each photo is DEST's old inode under its new name (img03
        // under one of its two new names, the other a copy).
        let after = inodes(&d);
        for i in 0..10 {
            let old = before.get(format!("photos/img{i:02}.jpg").as_bytes());
            let new = after.get(format!("pictures/img{i:02}.jpg").as_bytes());
            let twin = (i == 3)
                .then(|| after.get(&b"backup/img03.jpg"[..]))
                .flatten();
            assert!(
                old.is_some() && (old == new || old == twin),
                "photos/img{i:02}.jpg was not renamed: {old:?} -> {new:?} / {twin:?}"
            );
        }
        assert_ne!(
            after.get(&b"backup/img03.jpg"[..]),
            after.get(&b"pictures/img03.jpg"[..]),
            "the copy is the same inode"
        );
        // What crossed the wire, counted outside the tool.
        if let Some(w) = wire {
            assert!(w < total / 100, "{w} bytes sent for a rename; {v}");
        }
        let lines = items(&out);
        let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
        assert_eq!(count("~f "), 10, "{lines:?}");
        assert_eq!(count("cf "), 1, "{lines:?}");
        assert_replica(src.path(), &d);
        assert!(!exists(&d.join("photos")));
    }
}

#[test]
fn new_copy_of_an_unchanged_file_is_copied_inside_dest() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("orig.bin", &noise(500_000, 13));
        let dst = Tree::new();
        let d = dst.join("r");
        push_ok(t, src.path(), &d, &[]);
        fs::copy(src.join("orig.bin"), src.join("twin.bin")).expect("copy");
        src.mtime("twin.bin", 1_700_000_000, 17);
        let (out, v, wire) = push_json_wire(t, src.path(), &d, &["-i"]);
        if let Some(w) = wire {
            assert!(w < 50_000, "{w} bytes sent for a copy inside DEST; {v}");
        }
        let lines = items(&out);
        assert!(
            lines.iter().any(|l| l.starts_with("cf twin.bin")),
            "{lines:?}"
        );
        assert_eq!(n(&v, "bytes_literal"), 0, "{v}");
        assert_eq!(n(&v, "created"), 1, "{v}");
        assert_replica(src.path(), &d);
        assert_ne!(
            lstat(&d.join("orig.bin")).ino(),
            lstat(&d.join("twin.bin")).ino()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 14. -x / --one-file-system
// ---------------------------------------------------------------------------------------

#[test]
fn one_file_system_keeps_mount_points_empty() {
    for &t in TRANSPORTS {
        require!(is_root(), "mounting a tmpfs needs root");
        let src = Tree::new();
        src.file("outer.txt", b"o").dir("mnt");
        let mnt = src.join("mnt");
        let guard = mount_tmpfs(&mnt, "size=1m,mode=0750");
        require!(guard.is_some(), "mount -t tmpfs failed");
        src.file("mnt/inner.txt", b"on another filesystem");
        let dst = Tree::new();

        let x = dst.join("x");
        push_ok(t, src.path(), &x, &["-x"]);
        assert!(lstat(&x.join("mnt")).is_dir());
        assert_eq!(
            fs::read_dir(x.join("mnt")).expect("ls").count(),
            0,
            "-x crossed into the mount"
        );
        assert_eq!(mode(&x.join("mnt")), mode(&mnt));
        assert_eq!(
            tree_diff(src.path(), &x),
            vec!["only in source: mnt/inner.txt".to_string()]
        );
        let x2 = dst.join("x2");
        push_ok(t, src.path(), &x2, &["--one-file-system"]);
        assert!(!exists(&x2.join("mnt/inner.txt")));

        let all = dst.join("all");
        push_ok(t, src.path(), &all, &[]);
        assert_eq!(
            fs::read(all.join("mnt/inner.txt")).expect("inner copied without -x"),
            b"on another filesystem"
        );
        assert_same_tree(src.path(), &all);
    }
}

// ---------------------------------------------------------------------------------------
// 15. The corpus
// ---------------------------------------------------------------------------------------

/// A file's (inode, size, mtime, mode).
type FileId = (u64, u64, (i64, i64), u32);

/// Path → identity of every regular file under `root`.
fn file_inodes(root: &Path) -> BTreeMap<Vec<u8>, FileId> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).expect("prefix");
            let m = lstat(e.path());
            (
                rel.as_os_str().as_bytes().to_vec(),
                (m.ino(), m.len(), (m.mtime(), m.mtime_nsec()), m.mode()),
            )
        })
        .collect()
}

#[test]
fn corpus_round_trip_a_day_of_use_and_an_idle_push() {
    for &t in TRANSPORTS {
        let base = Tree::new_in(Path::new("/dev/shm"));
        let (src, dst) = (base.join("src"), base.join("dst"));
        corpus::make(&src, &corpus::Spec::tiny());
        push_ok(t, &src, &dst, &[]);
        assert_replica(&src, &dst);

        // Which SRC files only change their name today: same inode, size, mtime and
        // mode, another path, the old path gone.
        let src_before = file_inodes(&src);
        let dst_before = file_inodes(&dst);
        let day = corpus::mutate(&src, 2);
        let src_after = file_inodes(&src);
        let by_id: BTreeMap<_, &Vec<u8>> = src_before.iter().map(|(p, m)| (*m, p)).collect();
        let renamed: Vec<(&Vec<u8>, &Vec<u8>)> = src_after
            .iter()
            .filter_map(|(p, m)| {
                by_id
                    .get(m)
                    .filter(|old| **old != p && !src_after.contains_key(**old))
                    .map(|old| (*old, p))
            })
            .collect();
        assert!(
            renamed.len() >= day.moved_files / 2 && day.mail_read > 0,
            "{} renames seen in SRC, {day:?}",
            renamed.len()
        );

        let (_, v) = push_json(t, &src, &dst, &["--delete"]);
        assert_replica(&src, &dst);
        // What the disk shows: each renamed file is DEST's old inode under its new
        // name, not a new copy.
        let dst_after = file_inodes(&dst);
        let rewritten: Vec<String> = renamed
            .iter()
            .filter(|(old, new)| {
                dst_before.get(*old).map(|m| m.0) != dst_after.get(*new).map(|m| m.0)
            })
            .map(|(old, new)| {
                format!(
                    "{} -> {}",
                    String::from_utf8_lossy(old),
                    String::from_utf8_lossy(new)
                )
            })
            .collect();
        assert!(
            rewritten.is_empty(),
            "renamed in SRC but rewritten in DEST: {rewritten:#?}\nreport: {v}"
        );
        assert!(n(&v, "moved") >= renamed.len() as u64, "{v}");

        let (out, v) = push_json(t, &src, &dst, &["--delete", "-i"]);
        assert_nothing_written(&out, &v);
        assert_eq!(file_inodes(&dst), dst_after, "an idle push rewrote files");
    }
}

#[test]
fn the_corpus_is_deterministic_and_has_what_a_home_has() {
    let base = Tree::new_in(Path::new("/dev/shm"));
    let (a, b) = (base.join("a"), base.join("b"));
    let spec = corpus::Spec {
        users: 2,
        small: 60,
        medium: 2,
        large_mib: 1,
        seed: 9,
    };
    corpus::make(&a, &spec);
    corpus::make(&b, &spec);
    assert_same_tree(&a, &b);
    let (files, links, dirs, _) = corpus::describe(&a);
    assert!(
        files > 100 && links >= 10 && dirs > 10,
        "{files} {links} {dirs}"
    );
    let home = a.join(corpus::home_name(0));
    assert!(lstat(&home.join("dangling")).file_type().is_symlink());
    assert!(lstat(&home.join("Documents/odd names/new\nline")).is_file());
    assert!(lstat(&home.join(bytes_path(b"Documents/odd names/\xff\xfe not utf-8"))).is_file());
    assert_eq!(
        lstat(&home.join(".local/state/app0.log")).ino(),
        lstat(&home.join(".local/state/app0.log.1")).ino()
    );
    let img = lstat(&home.join("vm/disk.img"));
    assert!(
        img.blocks() * 512 < img.len() / 2,
        "the disk image is not sparse"
    );
    assert_eq!(mode(&home.join(".ssh")), 0o700);
    let da = corpus::mutate(&a, 3);
    let db = corpus::mutate(&b, 3);
    assert_eq!(da, db);
    assert_same_tree(&a, &b);
    assert!(
        da.edited > 0 && da.moved_files > 0 && da.mail_new > 0 && da.pages > 0,
        "{da:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 16. Dry run
// ---------------------------------------------------------------------------------------

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        src.file("a.txt", b"a")
            .file("sub/b.txt", b"b")
            .file("doomed", b"d")
            .symlink("l", "a.txt");
        let dst = Tree::new();

        // A missing DEST (and missing parents) is not created.
        let missing = dst.join("missing/replica");
        let (out, v) = push_json(t, src.path(), &missing, &["-n"]);
        let lines = items(&out);
        for l in ["+f a.txt", "+d sub", "+f sub/b.txt", "+L l -> a.txt"] {
            assert!(lines.contains(&l.to_string()), "{l} not in {lines:?}");
        }
        assert_eq!(v["dry_run"], serde_json::Value::Bool(true), "{v}");
        assert!(!exists(&dst.join("missing")), "dry run created DEST");

        // An existing DEST is left exactly as it was.
        let (d, reference) = (dst.join("r"), dst.join("reference"));
        push_ok(t, src.path(), &d, &[]);
        push_ok(t, src.path(), &reference, &[]);
        let before = inodes(&d);
        src.file("a.txt", b"changed a")
            .file("new.txt", b"n")
            .chmod("sub/b.txt", 0o600);
        fs::remove_file(src.join("doomed")).expect("rm");
        let (out, v) = push_json(t, src.path(), &d, &["--dry-run", "--delete"]);
        let lines = items(&out);
        for l in [">f a.txt", "+f new.txt", ".f sub/b.txt", "-f doomed"] {
            assert!(lines.contains(&l.to_string()), "{l} not in {lines:?}");
        }
        assert_eq!(v["dry_run"], serde_json::Value::Bool(true), "{v}");
        assert_replica(&reference, &d);
        assert_eq!(inodes(&d), before);
        assert!(temp_files(&d).is_empty());
    }
}

/// A production-shaped tree at a small size (many homes, every directory holding files of
/// the same few sizes and contents): the first push copies it exactly, over both
/// transports; after files went missing from DEST, files were renamed in SRC and a whole
/// home was deleted, one `push --delete` makes DEST equal to SRC again.
#[test]
fn a_grid_of_homes_with_repeating_sizes_replicates_and_converges() {
    use common::grid::{self, Grid};
    let g = Grid {
        homes: 40,
        dirs: 3,
        files: 12,
        sizes: 3,
        empty: false,
    };
    for &t in TRANSPORTS {
        let (src, dst) = (Tree::new(), Tree::new());
        grid::make(src.path(), &g);
        push_ok(t, src.path(), dst.path(), &[]);
        assert_same_tree(src.path(), dst.path());
        let entries = walkdir::WalkDir::new(dst.path())
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".fsync-repl")
            .count() as u64;
        assert_eq!(entries, g.entries(), "{t:?}: every entry of the grid");
        for h in 0..g.homes {
            fs::remove_file(dst.join(Grid::path(h, 0, 1))).unwrap();
        }
        for h in 0..10 {
            let from = src.join(Grid::path(h, 1, 2));
            fs::rename(&from, from.with_file_name("renamed")).unwrap();
        }
        fs::remove_dir_all(src.join("home0039")).unwrap();
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        assert_same_tree(src.path(), dst.path());
        assert!(!dst.join("home0039").exists(), "{t:?}");
    }
}

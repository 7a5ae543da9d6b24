//! Test harness: a temp tree builder, a command runner, and a tree comparer that prints
//! every difference between two trees on failure.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

pub use assert_cmd::Command;

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("fsync-repl").expect("binary built");
    c.env_remove("FSYNC_REPL_CONFIG");
    c
}

/// The shared corpus tools (`../shared` beside the repository).
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// How a test reaches the destination. Every transfer test runs through each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A local DEST.
    Local,
    /// DEST as `host:path` through `--rsh tests/support/fake-rsh`, which runs the remote
    /// command through `sh -c` as sshd would, so the whole protocol path is exercised.
    Rsh,
}

pub const TRANSPORTS: &[Transport] = &[Transport::Local, Transport::Rsh];

/// The stand-in remote shell.
pub fn fake_rsh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-rsh")
}

/// `host:path` for a local path.
pub fn remote(path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from("testhost:");
    s.push(path);
    s
}

/// The remote-transport flags: the fake shell and this build as the remote binary.
pub fn rsh_args() -> Vec<std::ffi::OsString> {
    vec![
        "--rsh".into(),
        fake_rsh().into(),
        "--remote-bin".into(),
        env!("CARGO_BIN_EXE_fsync-repl").into(),
    ]
}

/// The command `fsync-repl push [args] SRC DEST` through `transport`, not yet run.
pub fn push_cmd(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.arg("push").args(args);
    match t {
        Transport::Local => c.arg(src).arg(dst),
        Transport::Rsh => c.args(rsh_args()).arg(src).arg(remote(dst)),
    };
    c
}

/// Runs `fsync-repl push [args] SRC DEST` through `transport`.
pub fn push(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Output {
    push_cmd(t, src, dst, args)
        .output()
        .expect("run fsync-repl")
}

/// Runs push and asserts exit code 0, printing stderr otherwise.
pub fn push_ok(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Output {
    let out = push(t, src, dst, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "push failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temporary directory with helpers to fill it.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    /// A new empty tree under the system temp dir.
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A new empty tree in `base` (e.g. /dev/shm or a tmpfs mount).
    pub fn new_in(base: &Path) -> Tree {
        Tree {
            dir: tempfile::tempdir_in(base).expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file, creating parents.
    pub fn file(&self, rel: impl AsRef<Path>, content: &[u8]) -> &Self {
        let p = self.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content).expect("write");
        self
    }

    pub fn dir(&self, rel: impl AsRef<Path>) -> &Self {
        fs::create_dir_all(self.join(rel)).expect("mkdir");
        self
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &Self {
        let p = self.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }

    pub fn hardlink(&self, rel: impl AsRef<Path>, existing: impl AsRef<Path>) -> &Self {
        fs::hard_link(self.join(existing), self.join(rel)).expect("link");
        self
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> &Self {
        fs::set_permissions(self.join(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// Sets the mtime (seconds, nanoseconds) without following symlinks.
    pub fn mtime(&self, rel: impl AsRef<Path>, sec: i64, nsec: u32) -> &Self {
        set_mtime(&self.join(rel), sec, nsec);
        self
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        fs::read(self.join(rel)).expect("read")
    }
}

/// Sets a path's mtime without following symlinks.
pub fn set_mtime(p: &Path, sec: i64, nsec: u32) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Node {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<[u8; 32]>,
    target: Option<Vec<u8>>,
    rdev: u64,
}

/// Relative path → node, and the hard-link groups (each a sorted list of paths).
type Snapshot = (BTreeMap<Vec<u8>, Node>, Vec<Vec<Vec<u8>>>);

fn snapshot(root: &Path, mtimes: bool) -> Snapshot {
    let mut map = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    // The replica's own records at its root are not part of the tree.
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !is_sidecar(e));
    for e in walk {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = e.path().symlink_metadata().expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let content = ft
            .is_file()
            .then(|| *blake3::hash(&fs::read(e.path()).expect("read")).as_bytes());
        let target = ft.is_symlink().then(|| {
            fs::read_link(e.path())
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        map.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                size: if ft.is_dir() { 0 } else { m.size() },
                mtime: if mtimes && !ft.is_dir() {
                    (m.mtime(), m.mtime_nsec())
                } else {
                    (0, 0)
                },
                content,
                target,
                rdev: m.rdev(),
            },
        );
    }
    let mut groups: Vec<Vec<Vec<u8>>> = inodes.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort();
    }
    groups.sort();
    (map, groups)
}

/// True for the replica's own records at the root of a walked tree (`.fsync-repl`).
pub fn is_sidecar(e: &walkdir::DirEntry) -> bool {
    e.depth() == 1 && e.file_name() == ".fsync-repl"
}

/// Differences between two trees (names, kinds, modes, sizes, contents, symlink
/// targets, file mtimes to the nanosecond, hard-link groups), one line each.
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    tree_diff_opts(a, b, true)
}

pub fn tree_diff_opts(a: &Path, b: &Path, mtimes: bool) -> Vec<String> {
    let (ma, ga) = snapshot(a, mtimes);
    let (mb, gb) = snapshot(b, mtimes);
    let mut out = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, na) in &ma {
        match mb.get(p) {
            None => out.push(format!("only in source: {}", show(p))),
            Some(nb) if nb != na => out.push(format!("differs: {}: {:?} vs {:?}", show(p), na, nb)),
            _ => {}
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            out.push(format!("only in destination: {}", show(p)));
        }
    }
    if ga != gb {
        out.push(format!("hard-link groups differ: {ga:?} vs {gb:?}"));
    }
    out
}

/// Asserts two trees are identical, listing every difference.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let d = tree_diff(a, b);
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

/// Files under `root` whose names mark them as this tool's temporary files.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().as_bytes();
            n.starts_with(b".") && n.windows(11).any(|w| w == b".fsync-tmp.")
        })
        .map(|e| e.into_path())
        .collect()
}

/// A path from raw bytes.
pub fn bytes_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Parses the `--json` summary from stdout.
pub fn json(out: &Output) -> serde_json::Value {
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad json {line:?}: {e}"))
}

/// Waits (up to 60 s) until no `serve` process working on `dst` is left: after the
/// client of a remote run is killed, its far side finishes what is already in its pipe.
pub fn wait_for_far_side(dst: &Path) {
    let needle = dst.as_os_str().as_bytes();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let busy = fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()).any(|e| {
                    fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                        c.windows(5).any(|w| w == b"serve")
                            && c.windows(needle.len()).any(|w| w == needle)
                    })
                })
            })
            .unwrap_or(false);
        if !busy || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// (niceness, ioprio class as `ionice -p` prints it) of every thread of `pid`.
pub fn thread_priorities(pid: u32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.filter_map(|e| e.ok()) {
        let tid = t.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces) start after ") ".
        let rest = &stat[stat.rfind(") ").map_or(0, |i| i + 2)..];
        let nice: i64 = rest
            .split(' ')
            .nth(16)
            .and_then(|n| n.parse().ok())
            .unwrap_or(99);
        let io = std::process::Command::new("ionice")
            .args(["-p", &tid])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        out.push((nice, io));
    }
    out
}

/// The priorities of `pid`'s threads once at least `threads` of them show and all run
/// niced 10 at the idle class, or the last seen at the deadline (a thread read in the
/// instant between its start and its start handler has not got its priority yet).
pub fn settled_priorities(pid: u32, threads: usize) -> Vec<(i64, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = thread_priorities(pid);
        let settled = seen.len() >= threads && seen.iter().all(|(n, io)| *n == 10 && io == "idle");
        if settled || std::time::Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `ionice` (util-linux) is there to read I/O classes with.
pub fn have_ionice() -> bool {
    std::process::Command::new("ionice")
        .arg("-h")
        .output()
        .is_ok()
}

/// A tmpfs mounted for one test, lazily unmounted when dropped (whatever happens).
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Mounts a tmpfs with mount options `opts` (`size=4m`, ...) on the existing directory
/// `dir`; None where that cannot be done (not root, no mount).
pub fn mount_tmpfs(dir: &Path, opts: &str) -> Option<Mounted> {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(dir.to_path_buf()))
}

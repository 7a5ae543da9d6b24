//! Test harness: a temp tree builder, a command runner, and a tree comparer that prints
//! every difference between two trees on failure.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

pub use assert_cmd::Command;

pub mod compare;
pub mod corpus;
#[allow(unused_imports)]
pub use compare::{tree_diff, tree_diff_opts};

/// The binary under test.
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("fsync-repl").expect("binary built");
    c.env_remove("FSYNC_REPL_CONFIG");
    c
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

/// Whether this run is CI's (`CI=true`), where every prerequisite must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test's prerequisite (root, a tool, sshd, a kernel feature): `ok` says whether it is
/// there. Returns `ok`. When it is missing, under `CI=true` the test fails here; elsewhere
/// one line `SKIPPED <test>: <what>` goes straight to the process's stderr, past libtest's
/// capture, so a skip shows in the run's output even when the test "passes".
#[track_caller]
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("?")
        .rsplit("::")
        .next()
        .unwrap_or("?")
        .to_string();
    let at = std::panic::Location::caller();
    if in_ci() {
        panic!("{test}: prerequisite missing under CI=true: {what}");
    }
    use std::io::Write;
    let line = format!("SKIPPED {test} ({at}): {what} (under CI=true this fails)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    false
}

/// Skips the rest of a test unless `cond` holds: `require!(is_root(), "needs root");`.
#[macro_export]
macro_rules! require {
    ($ok:expr, $($what:tt)+) => {
        if !$crate::common::require($ok, &format!($($what)+)) {
            return;
        }
    };
}

/// Whether `tool` is an executable on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

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
pub mod grid;
pub mod peer;
pub mod sshd;
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

/// True for the replica's own records at the root of a walked tree (`.fsync-repl`).
pub fn is_sidecar(e: &walkdir::DirEntry) -> bool {
    e.depth() == 1 && e.file_name() == ".fsync-repl"
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

/// Temporary files of the tree's own files: those of the replica's records at its root
/// (`.fsync-repl/`, written first) left out, for tests that wait for a copy under way.
pub fn data_temp_files(root: &Path) -> Vec<PathBuf> {
    let sidecar = root.join(".fsync-repl");
    temp_files(root)
        .into_iter()
        .filter(|t| !t.starts_with(&sidecar))
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
    priorities_once(pid, threads, 10, "idle")
}

/// The priorities of `pid`'s threads once at least `threads` of them show and all run
/// at niceness `nice` and I/O class `io` (as `ionice -p` prints it), or the last seen
/// after 20 s.
pub fn priorities_once(pid: u32, threads: usize, nice: i64, io: &str) -> Vec<(i64, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let seen = thread_priorities(pid);
        let settled = seen.len() >= threads && seen.iter().all(|(n, c)| *n == nice && c == io);
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

/// The kernel's I/O counters of a process (/proc/PID/io).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcIo {
    /// Bytes passed to read-like calls (read, pread, copy_file_range, sendfile...),
    /// page cache or not.
    pub rchar: u64,
    /// Bytes passed to write-like calls.
    pub wchar: u64,
    /// Bytes the process caused to be fetched from a block device.
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl ProcIo {
    /// Reads /proc/PID/io; for a zombie, the totals of all its threads and of the
    /// children it reaped.
    pub fn of(pid: u32) -> ProcIo {
        let text = fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap_or_else(|e| panic!("read /proc/{pid}/io: {e}"));
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(": ")?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/io: {text}"))
        };
        ProcIo {
            rchar: get("rchar"),
            wchar: get("wchar"),
            read_bytes: get("read_bytes"),
            write_bytes: get("write_bytes"),
        }
    }
}

/// A finished run with what the kernel saw of it.
pub struct Measured {
    pub out: Output,
    /// /proc/PID/io read at exit, before the process was reaped.
    pub io: ProcIo,
    /// Peak resident set size in bytes (wait4's ru_maxrss: the process, or the largest
    /// of the descendants it waited for).
    pub max_rss: u64,
}

impl Measured {
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// Runs `cmd` to completion (stdin null, stdout and stderr captured) and reads the
/// kernel's counters of it: its I/O from /proc/PID/io while it is a zombie (waitid
/// with WNOWAIT), then its peak RSS from wait4 as it is reaped.
pub fn run_measured(mut cmd: std::process::Command) -> Measured {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // The child's peak starts from this process's: the kernel takes the peak of the
    // memory the child shared with it until its exec. So this process first returns
    // what it freed (an earlier tree's listings) and then resets its own peak to what
    // it holds now ("5", proc(5) clear_refs).
    // SAFETY: malloc_trim only releases free memory of the allocator's own heap.
    unsafe { libc::malloc_trim(0) };
    let _ = fs::write("/proc/self/clear_refs", "5");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    // SAFETY: waitid on our own child, into a zeroed siginfo; WNOWAIT leaves it a zombie.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
    let io = ProcIo::of(pid);
    let mut status = 0;
    // SAFETY: reaps our own child (std's Child is never waited on after this).
    let (r, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let r = libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru);
        (r, ru)
    };
    assert_eq!(
        r,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    drop(child);
    Measured {
        out: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: t_out.join().expect("stdout reader"),
            stderr: t_err.join().expect("stderr reader"),
        },
        io,
        max_rss: ru.ru_maxrss as u64 * 1024,
    }
}

/// The `std::process::Command` of `fsync-repl push [args] SRC DEST` through `t`.
pub fn push_std(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"));
    c.env_remove("FSYNC_REPL_CONFIG").arg("push").args(args);
    match t {
        Transport::Local => c.arg(src).arg(dst),
        Transport::Rsh => c.args(rsh_args()).arg(src).arg(remote(dst)),
    };
    c
}

/// Runs `fsync-repl push` through `t` with the kernel's counters; asserts exit 0.
#[track_caller]
pub fn push_measured(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Measured {
    let m = run_measured(push_std(t, src, dst, args));
    assert_eq!(m.code(), Some(0), "push failed:\n{}", m.stderr());
    m
}

/// A remote shell like `fake-rsh` that also counts the bytes the client sends to the
/// far side: the far side's stdin comes through `dd`, whose closing line says how many
/// bytes it copied. A count taken by the kernel's pipe and a public tool, not by the
/// code under test.
pub struct WireCount {
    dir: tempfile::TempDir,
}

impl WireCount {
    pub fn new() -> WireCount {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ] && [ \"$1\" != \"--\" ]; do shift; done\nshift\n\
             dd bs=65536 2>>'{}' | sh -c \"$*\"\n",
            dir.path().join("counts").display()
        );
        let rsh = dir.path().join("counting-rsh");
        fs::write(&rsh, script).expect("write counting-rsh");
        fs::set_permissions(&rsh, fs::Permissions::from_mode(0o755)).expect("chmod");
        WireCount { dir }
    }

    /// `--rsh` (this counting shell) and `--remote-bin` (this build).
    pub fn args(&self) -> Vec<String> {
        vec![
            "--rsh".into(),
            self.dir.path().join("counting-rsh").display().to_string(),
            "--remote-bin".into(),
            env!("CARGO_BIN_EXE_fsync-repl").into(),
        ]
    }

    /// Bytes sent to the far side by every session so far, and forgets them.
    pub fn take(&self) -> u64 {
        let p = self.dir.path().join("counts");
        let text = fs::read_to_string(&p).unwrap_or_default();
        let _ = fs::remove_file(&p);
        let sessions: Vec<u64> = text
            .lines()
            .filter(|l| l.contains(" bytes"))
            .map(|l| {
                l.split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("dd said {l:?}"))
            })
            .collect();
        assert!(!sessions.is_empty(), "no session was counted: {text:?}");
        sessions.iter().sum()
    }
}

impl Default for WireCount {
    fn default() -> Self {
        Self::new()
    }
}

/// `fsync-repl push [args] SRC host:DEST` through a counting remote shell: the output
/// (exit 0 asserted) and the bytes that crossed the wire to the far side.
#[track_caller]
pub fn push_counted(src: &Path, dst: &Path, args: &[&str]) -> (Output, u64) {
    let wire = WireCount::new();
    let out = bin()
        .arg("push")
        .args(args)
        .args(wire.args())
        .arg(src)
        .arg(remote(dst))
        .output()
        .expect("run fsync-repl");
    assert_eq!(
        out.status.code(),
        Some(0),
        "push failed\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, wire.take())
}

/// A filesystem image of its own, mounted through a loop device (`mount -o loop`,
/// which detaches the device at unmount); unmounted and removed when dropped.
pub struct LoopFs {
    dir: tempfile::TempDir,
}

impl LoopFs {
    /// Makes a `size`-byte sparse image in the temp dir, runs `mkfs` (the program and its
    /// options; the image path is appended) and mounts it. None (a skip, or a failure
    /// under CI=true) when not root, `mkfs` is missing, or it cannot be mounted.
    #[track_caller]
    pub fn new(size: u64, mkfs: &[&str]) -> Option<LoopFs> {
        if !require(is_root(), "mounting a loop device needs root")
            || !require(have(mkfs[0]), &format!("{} is not installed", mkfs[0]))
        {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("fs.img");
        fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .expect("image");
        let out = std::process::Command::new(mkfs[0])
            .args(&mkfs[1..])
            .arg(&img)
            .output()
            .expect("run mkfs");
        if !require(
            out.status.success(),
            &format!(
                "{mkfs:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ) {
            return None;
        }
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .expect("run mount");
        if !require(
            out.status.success(),
            &format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ) {
            return None;
        }
        Some(LoopFs { dir })
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// Blocks in use, as statvfs reports them after a syncfs, in bytes.
    pub fn used(&self) -> u64 {
        let f = fs::File::open(self.path()).expect("open mount");
        rustix::fs::syncfs(&f).expect("syncfs");
        let s = rustix::fs::fstatvfs(&f).expect("statvfs");
        (s.f_blocks - s.f_bfree) * s.f_frsize
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mnt = self.path();
        let ok = std::process::Command::new("umount")
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mnt)
                .status();
        }
    }
}

/// Asserts that peak memory (bytes) measured by [`peaks_on_memory_pair`] grew by less
/// than 2 MiB from the small tree to the big one: `holds` says what the run would be
/// holding otherwise.
#[track_caller]
pub fn assert_peak_flat([(n_small, small), (n_big, big)]: [(u64, u64); 2], holds: &str) {
    assert!(n_big >= 20 * n_small, "{n_small} -> {n_big} entries");
    assert!(
        big < small + (2 << 20),
        "peak RSS grew from {small} B ({n_small} entries) to {big} B ({n_big} entries): \
         {holds}"
    );
}

/// Peak memory of a run over each tree of [`grid::Grid::memory_pair`], made in /dev/shm:
/// (entries, the least of three `measure(src, &prepared)` peaks), small tree first.
/// `prepare` gets each source once (a first copy, say). `None` where /dev/shm is
/// missing (see [`require`]).
pub fn peaks_on_memory_pair<S>(
    mut prepare: impl FnMut(&Path) -> S,
    mut measure: impl FnMut(&Path, &S) -> u64,
) -> Option<[(u64, u64); 2]> {
    let shm = Path::new("/dev/shm");
    if !require(shm.is_dir(), "/dev/shm (a tmpfs for the trees)") {
        return None;
    }
    let (small, big) = grid::Grid::memory_pair();
    let mut peak = |g: &grid::Grid| {
        let src = Tree::new_in(shm);
        grid::make(src.path(), g);
        let prepared = prepare(src.path());
        // The best of three: a run's peak varies a little with thread timing.
        let best = (0..3).map(|_| measure(src.path(), &prepared)).min();
        (g.entries(), best.unwrap_or(0))
    };
    Some([peak(&small), peak(&big)])
}

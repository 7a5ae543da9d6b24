//! Hostile peers: a fake client against a real `serve`, and a fake server against the real
//! `push` and `pull` clients.
//!
//! Part A speaks the protocol by hand to `fsync-repl serve ROOT` (frames built with the
//! library's own types, malformed ones from raw bytes). ROOT lives in a scratch directory
//! beside an `outside` directory holding a sentinel file and a planted temp-looking file.
//! Each attack must either be answered with an error reply or end the session with exit
//! code 2 (each test says which); the serve process must never panic, must write nothing
//! outside ROOT (the outside tree, the scratch directory and the `/tmp` paths named in the
//! attacks are unchanged) and must leave no temporary file in ROOT.
//!
//! Part B runs the real client with `--rsh tests/support/hostile-rsh`, which joins the
//! client's pipes to two FIFOs where the test plays the remote side: either speaking the
//! protocol itself, or relaying to a real `serve` and tampering with its replies (a man in
//! the middle). The client must stop with exit code 2 and one line of error, without a
//! panic or a hang, never modify SRC (push) and write nothing outside DEST (pull).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fsync_repl::protocol::frame::{
    read_frame, read_hello, write_frame, write_hello, MAGIC, MAX_FRAME,
};
use fsync_repl::protocol::zstream::ZReader;
use fsync_repl::protocol::{
    FsOp, Notice, Reply, Request, ToReceiver, WireEntry, WireError, WireKind, WireMeta, WireMode,
    WireStaged, WireXattr, VERSION,
};
use fsync_repl::text::escape;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_fsync-repl");

/// The stand-in remote shell of part B.
const RSH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/hostile-rsh");

/// How long any process or answer may take before the test gives up on it (and fails).
const DEADLINE: Duration = Duration::from_secs(20);

/// How soon a process must stop after a protocol error it can see at once.
const QUICK: Duration = Duration::from_secs(5);

/// Address-space cap of every `serve` in part A: an allocation sized by the peer fails
/// loudly (abort, no exit code 2) instead of quietly succeeding.
const AS_CAP: u64 = 1 << 30;

/// A temp-looking file planted outside ROOT.
const PLANTED: &[u8] = b".victim.fsync-tmp.00000000";

/// Ids of the probes that order answers (far from the ids the tests use).
const PROBE: u64 = 1 << 40;

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

fn req(r: Request) -> ToReceiver {
    ToReceiver::Request(r)
}

fn begin(id: u64, path: &[u8], size: u64, mode: WireMode) -> Request {
    let path = path.to_vec();
    Request::Begin {
        id,
        path,
        size,
        mode,
    }
}

fn data(id: u64, offset: u64, bytes: &[u8]) -> Request {
    let data = bytes.to_vec();
    Request::Data {
        id,
        offset,
        zstd: false,
        data,
    }
}

/// A `Data` frame at offset 0 whose payload claims to be zstd-compressed.
fn zdata(id: u64, packed: Vec<u8>) -> Request {
    Request::Data {
        id,
        offset: 0,
        zstd: true,
        data: packed,
    }
}

fn delta_req(id: u64, index: u32, delta: Vec<u8>) -> Request {
    Request::Delta {
        id,
        index,
        part: 0,
        last: true,
        zstd: false,
        delta,
    }
}

/// `End` with the hash of `content`, declared as a `kind`.
fn end(id: u64, content: &[u8], kind: WireKind) -> Request {
    end_hash(id, *blake3::hash(content).as_bytes(), kind)
}

fn end_hash(id: u64, hash: [u8; 32], kind: WireKind) -> Request {
    let meta = wmeta(kind, 0o644);
    let xattrs = vec![];
    Request::End {
        id,
        hash,
        meta,
        xattrs,
    }
}

fn hash_req(id: u64, path: &[u8]) -> Request {
    let path = path.to_vec();
    Request::Hash { id, path }
}

fn local_copy(id: u64, path: &[u8], from: &[u8]) -> Request {
    let (path, from, meta) = (path.to_vec(), from.to_vec(), wmeta(WireKind::File, 0o644));
    Request::LocalCopy {
        id,
        path,
        from,
        meta,
    }
}

fn commit(id: u64, staged: Vec<WireStaged>) -> Request {
    Request::Commit { id, staged }
}

fn op(id: u64, op: FsOp) -> Request {
    Request::Op { id, op }
}

fn mkdir(path: &[u8]) -> FsOp {
    let path = path.to_vec();
    FsOp::Mkdir { path, perm: 0o777 }
}

fn remove(path: &[u8], kind: WireKind) -> FsOp {
    let path = path.to_vec();
    FsOp::Remove { path, kind }
}

fn remove_tree(path: &[u8]) -> FsOp {
    let path = path.to_vec();
    FsOp::RemoveTree { path }
}

fn rename(from: &[u8], to: &[u8]) -> FsOp {
    let (from, to) = (from.to_vec(), to.to_vec());
    FsOp::Rename { from, to }
}

fn link(path: &[u8], leader: &[u8]) -> FsOp {
    let (path, leader) = (path.to_vec(), leader.to_vec());
    FsOp::Link { path, leader }
}

fn symlink(path: &[u8], target: &[u8]) -> FsOp {
    let (path, target) = (path.to_vec(), target.to_vec());
    let meta = wmeta(WireKind::Symlink, 0o777);
    FsOp::Symlink { path, target, meta }
}

fn mknod(path: &[u8], kind: WireKind, rdev: u64) -> FsOp {
    let (path, meta) = (path.to_vec(), wmeta(kind, 0o666));
    FsOp::Mknod { path, meta, rdev }
}

fn set_meta(path: &[u8], meta: WireMeta) -> FsOp {
    let path = path.to_vec();
    FsOp::SetMeta { path, meta }
}

fn set_dir_meta(path: &[u8], meta: WireMeta) -> FsOp {
    let path = path.to_vec();
    FsOp::SetDirMeta { path, meta }
}

fn set_dir_xattrs(path: &[u8]) -> FsOp {
    let path = path.to_vec();
    let xattrs = vec![WireXattr(b"user.evil".to_vec(), b"1".to_vec())];
    FsOp::SetDirXattrs { path, xattrs }
}

fn wmeta(kind: WireKind, perm: u32) -> WireMeta {
    WireMeta {
        kind,
        perm,
        owner: None,
        mtime: 1_000_000_000,
        mtime_nsec: 0,
    }
}

fn staged(dir: &[u8], tmp: &[u8], name: &[u8]) -> WireStaged {
    let (dir, tmp, name) = (dir.to_vec(), tmp.to_vec(), name.to_vec());
    WireStaged { dir, tmp, name }
}

fn entry(path: &[u8], kind: WireKind) -> WireEntry {
    WireEntry {
        path: path.to_vec(),
        kind,
        perm: if kind == WireKind::Dir { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        size: 10,
        alloc: 4096,
        mtime: 1_000_000_000,
        mtime_nsec: 0,
        nlink: 1,
        ino: 4242,
        dev: 0,
        target: vec![],
        rdev: 0,
        xattr_digest: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------

/// One encoded frame.
fn frame<T: Serialize>(m: &T) -> Vec<u8> {
    let mut v = Vec::new();
    write_frame(&mut v, m).expect("encode a frame");
    v
}

/// A frame around `body`, whatever it holds.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    cat(&[&(body.len() as u32).to_le_bytes(), body])
}

/// The handshake bytes.
fn hello() -> Vec<u8> {
    let mut v = Vec::new();
    write_hello(&mut v).expect("encode the handshake");
    v
}

/// Postcard's varint.
fn varint(mut n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    while n >= 0x80 {
        v.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v
}

/// The frame of `m`, whose last field is an empty vector, re-encoded to claim `n`
/// elements for that vector: a huge count in a tiny body.
fn claiming<T: Serialize>(m: &T, n: u64) -> Vec<u8> {
    let mut body = frame(m)[4..].to_vec();
    assert_eq!(
        body.pop(),
        Some(0),
        "the last field must be an empty vector"
    );
    body.extend(varint(n));
    raw_frame(&body)
}

/// `len` zero bytes, zstd-compressed to a few kilobytes.
fn zstd_bomb(len: usize) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd encoder");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..len >> 20 {
        e.write_all(&zeros).expect("compress");
    }
    e.finish().expect("compress")
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn show(p: &[u8]) -> String {
    escape(p)
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Processes and trees
// ---------------------------------------------------------------------------------------

/// What a reader thread saw of a peer.
#[derive(Debug)]
enum Msg<T> {
    Hello(Result<u32, String>),
    Frame(T),
    End(Option<String>),
}

/// Reads the peer's handshake, then frames of `T`, on a thread; runs `on_end` when the
/// stream ends. The rest of a stream that breaks the protocol is drained, so its writer
/// never blocks.
fn reader<T, R>(mut r: R, on_end: impl FnOnce() + Send + 'static) -> mpsc::Receiver<Msg<T>>
where
    T: DeserializeOwned + Send + 'static,
    R: Read + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let hello = read_hello(&mut r).map_err(|e| e.to_string());
        let ok = hello.is_ok();
        let _ = tx.send(Msg::Hello(hello));
        let mut buf = Vec::new();
        if ok {
            // What a peer writes after its handshake may be compressed (see zstream).
            let mut r = ZReader::new(&mut r);
            loop {
                let (msg, done) = match read_frame::<T, _>(&mut r, &mut buf) {
                    Ok(Some(m)) => (Msg::Frame(m), false),
                    Ok(None) => (Msg::End(None), true),
                    Err(e) => (Msg::End(Some(e.to_string())), true),
                };
                let _ = tx.send(msg);
                if done {
                    break;
                }
            }
        }
        let _ = io::copy(&mut r, &mut io::sink());
        on_end();
    });
    rx
}

/// Collects a stream to its end on a thread.
fn collect(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(String::from_utf8_lossy(&v).into_owned());
    });
    rx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Peak resident set of a live process, in KiB (0 once it is gone).
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits for `child` until `deadline`, sampling its peak RSS; kills it past the deadline
/// (`None`).
fn wait_until(child: &mut Child, deadline: Duration) -> (Option<std::process::ExitStatus>, u64) {
    let start = Instant::now();
    let mut hwm = 0;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return (Some(s), hwm);
        }
        hwm = hwm.max(vm_hwm_kib(child.id()));
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, hwm);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts exit code `code`, no panic, and exactly one line of error that mentions
/// `mentions` and carries no control characters (a peer's bytes are escaped).
#[track_caller]
fn assert_one_line_error(what: &str, got: Option<i32>, stderr: &str, code: i32, mentions: &str) {
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    assert_eq!(got, Some(code), "{what}: exit code; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: want one line of error:\n{stderr}");
    assert!(
        lines[0].to_lowercase().contains(&mentions.to_lowercase()),
        "{what}: the error does not mention {mentions:?}: {stderr}"
    );
    assert!(
        !stderr.trim_end().chars().any(char::is_control),
        "{what}: control characters in the error: {stderr:?}"
    );
}

/// A scratch directory, on /dev/shm when there is one (file creation is cheap there).
fn scratch() -> TempDir {
    let b = tempfile::Builder::new().prefix("fsync-hostile.").clone();
    match Path::new("/dev/shm").is_dir() {
        true => b.tempdir_in("/dev/shm"),
        false => b.tempdir(),
    }
    .expect("scratch directory")
}

/// Everything an escape could change about a tree, per relative path: kind, mode, owner,
/// link count, size, mtime, content hash or symlink target, extended attribute names.
type Snap = BTreeMap<Vec<u8>, String>;

fn snap(dir: &Path) -> Snap {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.expect("walk");
        let rel = bytes(e.path().strip_prefix(dir).expect("prefix"));
        let md = e.path().symlink_metadata().expect("lstat");
        let ft = md.file_type();
        let what = if ft.is_file() {
            format!("file {}", blake3::hash(&fs::read(e.path()).expect("read")))
        } else if ft.is_symlink() {
            format!(
                "symlink -> {:?}",
                fs::read_link(e.path()).expect("readlink")
            )
        } else if ft.is_dir() {
            "dir".to_string()
        } else {
            "special".to_string()
        };
        let mut names = vec![0u8; 1 << 16];
        let n = rustix::fs::llistxattr(e.path(), &mut names[..]).unwrap_or(0);
        names.truncate(n);
        let size = if ft.is_dir() { 0 } else { md.size() };
        let desc = format!(
            "{what} mode={:o} owner={}:{} nlink={} size={size} mtime={}.{:09} xattrs={}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.nlink(),
            md.mtime(),
            md.mtime_nsec(),
            escape(&names)
        );
        m.insert(rel, desc);
    }
    m
}

/// [`snap`] without the directory's own entry.
fn snap_below(dir: &Path) -> Snap {
    let mut s = snap(dir);
    s.remove(&Vec::new());
    s
}

/// Entries under `root` whose names contain the temporary-file marker.
fn temps_in(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .as_bytes()
                .windows(11)
                .any(|w| w == b".fsync-tmp.")
        })
        .map(|e| e.into_path())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Part A: a fake client against `fsync-repl serve ROOT`
// ---------------------------------------------------------------------------------------

/// BASE/root (served) beside BASE/outside (must never change), and a `/tmp` target.
struct Arena {
    base: TempDir,
    outside_before: Snap,
    target: PathBuf,
}

impl Arena {
    /// An arena on /dev/shm (cheap file creation).
    fn new() -> Arena {
        Arena::in_dir(scratch())
    }

    /// An arena under /tmp, so that `outside` is a /tmp path.
    fn in_tmp() -> Arena {
        let b = tempfile::Builder::new().prefix("fsync-hostile.").clone();
        Arena::in_dir(b.tempdir_in("/tmp").expect("tempdir"))
    }

    fn in_dir(base: TempDir) -> Arena {
        let root = base.path().join("root");
        fs::create_dir_all(root.join("a")).expect("mkdir");
        fs::write(root.join("victim"), b"victim data").expect("write");
        fs::write(root.join("f"), noise(1, 4096)).expect("write");
        let out = base.path().join("outside");
        fs::create_dir_all(out.join("dir")).expect("mkdir");
        fs::write(out.join("sentinel"), b"sentinel data").expect("write");
        fs::write(out.join(common::bytes_path(PLANTED)), b"planted").expect("write");
        common::set_mtime(&out, 1_000_000_000, 0);
        let name = base.path().file_name().expect("name").to_string_lossy();
        let target = PathBuf::from(format!("/tmp/{name}-target"));
        Arena {
            outside_before: snap(&out),
            base,
            target,
        }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    /// Names no request may use: escapes, absolute paths, empty or dotted components,
    /// doubled or trailing slashes, NUL bytes.
    fn evil_paths(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = [
            &b"../x"[..],
            b"../outside/sentinel",
            b"../outside/new",
            b"../outside",
            b"a/../../x",
            b"a/../../outside/sentinel",
            b"a//b",
            b"a/./b",
            b"./victim",
            b"victim/",
            b".",
            b"..",
            b"",
            b"/",
            b"a\0b",
            b"victim\0/../../x",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        v.push(bytes(&self.outside().join("sentinel")));
        v.push(bytes(&self.outside().join("new")));
        v.push(bytes(&self.target));
        v
    }

    /// Nothing outside ROOT changed and ROOT holds no temporary file.
    #[track_caller]
    fn check(&self) {
        let outside = snap(&self.outside());
        assert_eq!(
            outside, self.outside_before,
            "the directory beside ROOT changed"
        );
        let names = names_in(self.base.path());
        let want = BTreeSet::from(["outside".to_string(), "root".to_string()]);
        assert_eq!(names, want, "new entries beside ROOT");
        let temps = temps_in(&self.root());
        assert!(temps.is_empty(), "temporary files left in ROOT: {temps:?}");
        let t = &self.target;
        assert!(t.symlink_metadata().is_err(), "{} was created", t.display());
    }
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

impl Drop for Arena {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.target);
        let _ = fs::remove_file(&self.target);
    }
}

/// How a `serve` session ended.
#[derive(Debug)]
struct Ended {
    code: Option<i32>,
    stderr: String,
    hwm_kib: u64,
}

impl Ended {
    #[track_caller]
    fn assert_ok(&self, what: &str) {
        let err = &self.stderr;
        assert!(!err.contains("panicked"), "{what}: serve panicked:\n{err}");
        assert_eq!(
            self.code,
            Some(0),
            "{what}: serve exit code; stderr:\n{err}"
        );
    }

    #[track_caller]
    fn assert_protocol_error(&self, what: &str, mentions: &str) {
        let what = format!("serve, {what}");
        assert_one_line_error(&what, self.code, &self.stderr, 2, mentions);
    }
}

/// A `fsync-repl serve ROOT` process and its answers.
struct Serve {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Msg<Reply>>,
    stderr: mpsc::Receiver<String>,
    probes: u64,
}

impl Serve {
    /// Starts `serve ROOT` (working directory: the outside directory, so that a path
    /// taken relative to the working directory shows up there).
    fn spawn(a: &Arena) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--timeout", "60"])
            .arg(a.root())
            .current_dir(a.outside())
            .env_remove("FSYNC_REPL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fsync-repl serve");
        let pid = rustix::process::Pid::from_raw(child.id() as i32);
        let cap = rustix::process::Rlimit {
            current: Some(AS_CAP),
            maximum: Some(AS_CAP),
        };
        rustix::process::prlimit(pid, rustix::process::Resource::As, cap).expect("prlimit");
        let rx = reader(child.stdout.take().expect("stdout"), || {});
        let stderr = collect(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Serve {
            child,
            stdin,
            rx,
            stderr,
            probes: 0,
        }
    }

    /// Starts `serve ROOT` and completes the handshake.
    fn connect(a: &Arena) -> Serve {
        let mut s = Serve::spawn(a);
        s.raw(&hello());
        match s.rx.recv_timeout(DEADLINE) {
            Ok(Msg::Hello(Ok(v))) if v == VERSION => {}
            other => s.fail(&format!("no handshake from serve: {other:?}")),
        }
        s
    }

    /// Kills the process and fails with what it printed.
    fn fail(&mut self, msg: &str) -> ! {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let err = self.stderr.recv_timeout(QUICK).unwrap_or_default();
        panic!("{msg}\nserve stderr:\n{err}");
    }

    fn raw(&mut self, b: &[u8]) {
        if let Some(w) = self.stdin.as_mut() {
            // The process may have ended already: that is what some attacks expect.
            let _ = w.write_all(b).and_then(|()| w.flush());
        }
    }

    fn send(&mut self, r: Request) {
        self.raw(&frame(&req(r)));
    }

    fn next(&mut self, what: &str) -> Reply {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(Msg::Frame(r)) => r,
            Ok(Msg::End(why)) => self.fail(&format!("{what}: serve ended its output ({why:?})")),
            other => self.fail(&format!("{what}: no answer ({other:?})")),
        }
    }

    fn call(&mut self, r: Request) -> Reply {
        let what = format!("{r:?}");
        self.send(r);
        self.next(&what)
    }

    /// Sends a request answered by `Done` and returns its result.
    fn done(&mut self, r: Request) -> Result<(), WireError> {
        let what = format!("{r:?}");
        match self.call(r) {
            Reply::Done { result, .. } => result,
            // A commit refuses the files it cannot put in place, one by one.
            Reply::Committed { result, .. } => result.and_then(|failed| match failed.first() {
                None => Ok(()),
                Some((_, e)) => Err(e.clone()),
            }),
            other => self.fail(&format!("{what}: unexpected answer {other:?}")),
        }
    }

    /// Asserts that a request answered by `Done` fails.
    fn done_err(&mut self, r: Request) {
        let what = format!("{r:?}");
        if self.done(r).is_ok() {
            self.fail(&format!("accepted: {what}"));
        }
    }

    /// Asserts that a request answered by `Done` succeeds.
    fn done_ok(&mut self, r: Request) {
        let what = format!("{r:?}");
        if let Err(e) = self.done(r) {
            self.fail(&format!("{what} failed: {e:?}"));
        }
    }

    /// Sends a request answered by `Staged` and returns its result.
    fn staged(&mut self, r: Request) -> Result<WireStaged, WireError> {
        let what = format!("{r:?}");
        match self.call(r) {
            Reply::Staged { result, .. } => result,
            other => self.fail(&format!("{what}: unexpected answer {other:?}")),
        }
    }

    /// Asserts that a request answered by `Staged` fails.
    fn staged_err(&mut self, r: Request) {
        let what = format!("{r:?}");
        if let Ok(st) = self.staged(r) {
            self.fail(&format!("accepted: {what}: {st:?}"));
        }
    }

    /// Asserts that the hash of `path` is not given.
    fn no_hash(&mut self, id: u64, path: &[u8]) {
        match self.call(hash_req(id, path)) {
            Reply::Hash { hash: None, .. } => {}
            other => self.fail(&format!("Hash {}: {other:?}", show(path))),
        }
    }

    /// Sends a probe and returns the answers that came before its own: requests are
    /// handled in order, so these are what the frames sent before it produced.
    fn sync(&mut self) -> Vec<Reply> {
        self.probes += 1;
        let id = PROBE + self.probes;
        self.send(Request::Space { id });
        let mut got = Vec::new();
        loop {
            match self.next("probe") {
                Reply::Space { id: p, .. } if p == id => return got,
                r => got.push(r),
            }
        }
    }

    /// Sends a file whole and returns its staged temporary file.
    fn stage(&mut self, id: u64, path: &[u8], content: &[u8]) -> WireStaged {
        self.send(begin(id, path, content.len() as u64, WireMode::Whole));
        self.send(data(id, 0, content));
        match self.staged(end(id, content, WireKind::File)) {
            Ok(s) => s,
            Err(e) => self.fail(&format!("staging {}: {e:?}", show(path))),
        }
    }

    /// Asserts that `Begin` for `path` is refused at once with a `Staged` error, and that
    /// the file's later frames are ignored.
    fn begin_refused(&mut self, id: u64, path: &[u8], mode: WireMode) {
        self.send(begin(id, path, 8, mode));
        match self.sync().as_slice() {
            [Reply::Staged {
                id: got,
                result: Err(_),
            }] if *got == id => {}
            other => self.fail(&format!("Begin {} ({mode:?}): {other:?}", show(path))),
        }
        self.send(data(id, 0, b"evildata"));
        self.send(end(id, b"evildata", WireKind::File));
        let after = self.sync();
        if !after.is_empty() {
            self.fail(&format!("a refused file's frames were answered: {after:?}"));
        }
    }

    /// Begins a delta transfer and returns the receiver's signatures.
    fn begin_delta(&mut self, id: u64, path: &[u8], size: u64) -> Vec<Vec<u8>> {
        match self.call(begin(id, path, size, WireMode::Delta)) {
            Reply::Signature { windows, .. } => windows.into_iter().map(|w| w.into_vec()).collect(),
            other => self.fail(&format!("no signature for {}: {other:?}", show(path))),
        }
    }

    /// Closes stdin and waits for the session to end.
    fn finish(mut self) -> Ended {
        self.stdin = None;
        self.wait_for(DEADLINE)
    }

    /// Waits for the process to end on its own, its stdin still open; fails past
    /// `deadline`.
    fn wait_for(mut self, deadline: Duration) -> Ended {
        let (status, hwm_kib) = wait_until(&mut self.child, deadline);
        self.stdin = None;
        let stderr = self.stderr.recv_timeout(QUICK).unwrap_or_default();
        let Some(status) = status else {
            panic!("serve did not end within {deadline:?}; stderr:\n{stderr}");
        };
        let code = status.code();
        Ended {
            code,
            stderr,
            hwm_kib,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one attack in a fresh session that must end with a protocol error on its own
/// (stdin kept open) within [`QUICK`], mentioning `mentions`; ROOT's `f` keeps its
/// content.
#[track_caller]
fn ends_with_protocol_error(what: &str, mentions: &str, attack: impl FnOnce(&mut Serve)) {
    let a = Arena::new();
    let f_before = fs::read(a.root().join("f")).expect("read f");
    let mut s = Serve::connect(&a);
    attack(&mut s);
    s.wait_for(QUICK).assert_protocol_error(what, mentions);
    a.check();
    let f = fs::read(a.root().join("f")).expect("read f");
    assert_eq!(f, f_before, "{what}: f changed");
}

// --- A1: traversal names --------------------------------------------------------------

#[test]
fn serve_refuses_a_listing_scope_with_traversal_names() {
    for bad in [&b"../x"[..], b"/etc", b"a//b", b".", b"a/../.."] {
        ends_with_protocol_error(&format!("scope {}", show(bad)), "invalid scope", |s| {
            s.send(Request::List {
                id: 1,
                xattrs: false,
                scope: Some(vec![(serde_bytes::ByteBuf::from(bad.to_vec()), true)]),
            });
        });
    }
}

#[test]
fn serve_refuses_traversal_names_in_every_filesystem_op() {
    let a = Arena::new();
    let root_before = snap_below(&a.root());
    let mut s = Serve::connect(&a);
    let mut id = 0;
    for p in a.evil_paths() {
        let mut ops = vec![
            mkdir(&p),
            remove(&p, WireKind::File),
            remove(&p, WireKind::Dir),
            remove_tree(&p),
            rename(&p, b"stolen"),
            rename(b"victim", &p),
            link(&p, b"victim"),
            link(b"linked", &p),
            symlink(&p, b"/"),
            mknod(&p, WireKind::Fifo, 0),
            set_meta(&p, wmeta(WireKind::File, 0o6777)),
            set_meta(&p, wmeta(WireKind::Dir, 0o777)),
            set_meta(&p, wmeta(WireKind::Fifo, 0o777)),
        ];
        // An empty path names ROOT itself for directory metadata, which is allowed.
        if !p.is_empty() {
            ops.push(set_dir_meta(&p, wmeta(WireKind::Dir, 0o777)));
            ops.push(set_dir_xattrs(&p));
        }
        for o in ops {
            id += 1;
            s.done_err(op(id, o));
        }
    }
    s.finish().assert_ok("traversal ops");
    a.check();
    assert_eq!(snap_below(&a.root()), root_before, "ROOT changed");
}

#[test]
fn serve_refuses_traversal_names_in_begin_local_copy_and_hash() {
    let a = Arena::new();
    let root_before = snap_below(&a.root());
    let mut s = Serve::connect(&a);
    let mut id = 0;
    for p in a.evil_paths() {
        for mode in [WireMode::Whole, WireMode::Delta] {
            id += 1;
            s.begin_refused(id, &p, mode);
        }
        // Not even the hash of a file outside ROOT may leak.
        id += 1;
        s.no_hash(id, &p);
        id += 1;
        s.staged_err(local_copy(id, &p, b"victim"));
        id += 1;
        s.staged_err(local_copy(id, b"copy", &p));
    }
    // ROOT itself still answers.
    match s.call(hash_req(id + 1, b"victim")) {
        Reply::Hash { hash: Some(h), .. } if h == *blake3::hash(b"victim data").as_bytes() => {}
        other => s.fail(&format!("Hash victim: {other:?}")),
    }
    s.finish().assert_ok("traversal begins");
    a.check();
    assert_eq!(snap_below(&a.root()), root_before, "ROOT changed");
}

#[test]
fn serve_refuses_staged_names_that_escape_root_or_are_not_its_temp_files() {
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    // A genuine staged file to aim at.
    let legit = s.stage(1, b"legit", b"hello");
    let t = legit.tmp.clone();
    let out = bytes(&a.outside());
    let bad = vec![
        staged(b"..", &t, b"legit"),
        staged(b"../outside", &t, b"legit"),
        staged(&out, &t, b"legit"),
        staged(&bytes(&a.root()), &t, b"legit"),
        staged(b"a/..", &t, b"legit"),
        staged(b"a/../..", &t, b"legit"),
        staged(b".", &t, b"legit"),
        staged(b"a/", &t, b"legit"),
        staged(b"", &t, b"../legit"),
        staged(b"", &t, b"../outside/legit"),
        staged(b"", &t, &cat(&[&out, b"/legit"])),
        staged(b"", &t, b"a/legit"),
        staged(b"", &t, b".."),
        staged(b"", &t, b"."),
        staged(b"", &t, b""),
        staged(b"", &t, b"le\0git"),
        staged(b"", b"../outside/sentinel", b"stolen"),
        staged(b"", &cat(&[b"../outside/", PLANTED]), b"stolen"),
        staged(b"../outside", PLANTED, b"stolen"),
        staged(&out, PLANTED, b"stolen"),
        staged(b"", b"victim", b"moved"),
        staged(b"", b"", b"legit"),
        staged(b"", b".", b"legit"),
        staged(b"", b"..", b"legit"),
        staged(b"", &cat(&[&t, b"/x"]), b"legit"),
        staged(b"", &cat(&[&t, b"\0"]), b"legit"),
    ];
    for (i, st) in bad.iter().enumerate() {
        s.done_err(commit(10 + i as u64, vec![st.clone()]));
    }
    // One bad entry spoils its whole batch.
    s.done_err(commit(100, vec![legit.clone(), bad[0].clone()]));
    // Discard has no answer: the probe orders it. It must not remove what it names.
    s.send(Request::Discard { staged: bad });
    let answers = s.sync();
    assert!(answers.is_empty(), "Discard was answered: {answers:?}");
    let tmp = a.root().join(common::bytes_path(&t));
    assert!(
        tmp.exists(),
        "the genuine temporary file was moved or removed"
    );
    assert_eq!(fs::read(a.root().join("victim")).unwrap(), b"victim data");
    for n in ["legit", "moved", "stolen"] {
        assert!(!a.root().join(n).exists(), "{n} appeared in ROOT");
    }
    // The genuine one still commits normally.
    s.done_ok(commit(101, vec![legit]));
    s.finish().assert_ok("staged names");
    assert_eq!(fs::read(a.root().join("legit")).unwrap(), b"hello");
    a.check();
}

// --- A2: symlinks, FIFOs and devices sent by the peer -----------------------------------

/// Creates the symlinks the A2 attacks go through: `sub` → the outside directory
/// (absolute), `rel` → `../outside`, `inner` → `a` (inside ROOT, still never followed),
/// `lnk` → the outside sentinel file.
fn plant_symlinks(s: &mut Serve, a: &Arena) {
    let out = bytes(&a.outside());
    let sentinel = cat(&[&out, b"/sentinel"]);
    s.done_ok(op(901, symlink(b"sub", &out)));
    s.done_ok(op(902, symlink(b"rel", b"../outside")));
    s.done_ok(op(903, symlink(b"inner", b"a")));
    s.done_ok(op(904, symlink(b"lnk", &sentinel)));
}

#[test]
fn serve_never_writes_through_a_symlink_it_was_sent() {
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    plant_symlinks(&mut s, &a);
    let mut id = 0;
    for dir in [&b"sub"[..], b"rel", b"inner"] {
        let under = |name: &[u8]| cat(&[dir, b"/", name]);
        // A file beneath the symlink: refused at Begin, its later frames ignored.
        for mode in [WireMode::Whole, WireMode::Delta] {
            for name in [&b"evil"[..], b"sentinel"] {
                id += 1;
                s.begin_refused(id, &under(name), mode);
            }
        }
        // Commits and discards of temp files beneath it.
        for tmp in [PLANTED, b".evil.fsync-tmp.00000000"] {
            id += 1;
            s.done_err(commit(id, vec![staged(dir, tmp, b"evil")]));
        }
        s.send(Request::Discard {
            staged: vec![staged(dir, PLANTED, b"x")],
        });
        let ops = [
            mkdir(&under(b"d")),
            symlink(&under(b"s"), b"x"),
            mknod(&under(b"fifo"), WireKind::Fifo, 0),
            link(&under(b"l"), b"victim"),
            link(b"stolen", &under(b"sentinel")),
            rename(&under(b"sentinel"), b"stolen"),
            rename(b"victim", &under(b"victim")),
            remove(&under(b"sentinel"), WireKind::File),
            remove_tree(&under(b"dir")),
        ];
        for o in ops {
            id += 1;
            s.done_err(op(id, o));
        }
        id += 1;
        s.no_hash(id, &under(b"sentinel"));
        id += 1;
        s.staged_err(local_copy(id, b"copy", &under(b"sentinel")));
        id += 1;
        s.staged_err(local_copy(id, &under(b"copy"), b"victim"));
    }
    // Through the symlink to a file: no hash, no copy, no signature of its target.
    s.no_hash(200, b"lnk");
    s.staged_err(local_copy(201, b"copy", b"lnk"));
    match s.call(begin(202, b"lnk", 11, WireMode::Delta)) {
        Reply::NoBase { .. } => {}
        other => s.fail(&format!("Begin lnk (delta) must answer NoBase: {other:?}")),
    }
    // Replacing the symlink puts a regular file in its place, its target untouched.
    s.send(data(202, 0, b"replacement"));
    let st = match s.staged(end(202, b"replacement", WireKind::File)) {
        Ok(st) => st,
        Err(e) => s.fail(&format!("replacing lnk: {e:?}")),
    };
    s.done_ok(commit(203, vec![st]));
    // Removing a symlink removes the link only.
    s.done_ok(op(204, remove_tree(b"rel")));
    s.finish().assert_ok("writes through symlinks");
    a.check();
    let lnk = a.root().join("lnk");
    assert!(
        lnk.symlink_metadata().unwrap().is_file(),
        "lnk not replaced"
    );
    assert_eq!(fs::read(lnk).unwrap(), b"replacement");
    assert!(!a.root().join("rel").exists());
    assert_eq!(
        names_in(&a.root().join("a")),
        BTreeSet::new(),
        "written via inner"
    );
}

#[test]
fn serve_never_changes_metadata_through_a_symlink_it_was_sent() {
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    plant_symlinks(&mut s, &a);
    let mut id = 0;
    let evil = WireMeta {
        owner: Some((4242, 4242)),
        mtime: 1234,
        ..wmeta(WireKind::Dir, 0o777)
    };
    let as_kind = |kind| WireMeta { kind, ..evil };
    for link in [&b"sub"[..], b"rel", b"lnk", b"inner"] {
        let mut ops = vec![
            set_dir_meta(link, evil),
            set_dir_xattrs(link),
            set_dir_meta(&cat(&[link, b"/dir"]), evil),
            set_meta(&cat(&[link, b"/sentinel"]), as_kind(WireKind::File)),
        ];
        // As anything but a symlink, the link itself is not what the peer says.
        for kind in [WireKind::File, WireKind::Dir, WireKind::Fifo] {
            ops.push(set_meta(link, as_kind(kind)));
        }
        for o in ops {
            id += 1;
            s.done_err(op(id, o));
        }
        // As a symlink it may be stamped, without reaching its target.
        id += 1;
        let _ = s.done(op(id, set_meta(link, as_kind(WireKind::Symlink))));
    }
    s.finish().assert_ok("metadata through symlinks");
    a.check();
}

#[test]
fn serve_does_not_follow_a_directory_swapped_for_a_symlink_after_begin() {
    let a = Arena::new();
    let out = bytes(&a.outside());
    let mut s = Serve::connect(&a);
    s.done_ok(op(1, mkdir(b"d")));
    s.send(begin(2, b"d/sentinel", 4, WireMode::Whole));
    // Swap the directory for a symlink to the outside while the file is in flight.
    s.done_ok(op(3, remove_tree(b"d")));
    s.done_ok(op(4, symlink(b"d", &out)));
    s.send(data(2, 0, b"evil"));
    // Staging may succeed or fail; committing must not reach the outside.
    if let Ok(st) = s.staged(end(2, b"evil", WireKind::File)) {
        s.done_err(commit(5, vec![st]));
    }
    s.finish().assert_ok("swap after begin");
    a.check();
}

#[test]
fn serve_never_blocks_on_or_reads_a_fifo_or_device_it_was_sent() {
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    let mut nodes = vec![(&b"fifo"[..], WireKind::Fifo, 0)];
    if common::is_root() {
        // /dev/zero: reading it would never end.
        nodes.push((b"zero", WireKind::CharDev, rustix::fs::makedev(1, 5)));
    }
    let mut id = 0;
    for (path, kind, rdev) in nodes {
        s.done_ok(op(id + 1, mknod(path, kind, rdev)));
        s.no_hash(id + 2, path);
        s.staged_err(local_copy(id + 3, b"copy", path));
        // Not a delta basis: whole data instead.
        match s.call(begin(id + 4, path, 100, WireMode::Delta)) {
            Reply::NoBase { .. } => {}
            other => s.fail(&format!("Begin {} (delta): {other:?}", show(path))),
        }
        s.send(Request::Abort { id: id + 4 });
        id += 4;
    }
    assert!(s.sync().is_empty());
    s.finish().assert_ok("fifos and devices");
    a.check();
}

// --- A3: absurd sizes and counts ---------------------------------------------------------

#[test]
fn serve_refuses_absurd_file_sizes() {
    for size in [u64::MAX, (16 << 40) + 1] {
        ends_with_protocol_error(&format!("size {size}"), "absurd", |s| {
            s.send(begin(1, b"huge", size, WireMode::Whole));
        });
    }
}

#[test]
fn serve_refuses_data_beyond_the_announced_size() {
    ends_with_protocol_error("data beyond size", "beyond the announced size", |s| {
        s.send(begin(1, b"small", 10, WireMode::Whole));
        s.send(data(1, 5, &[7; 10]));
    });
}

#[test]
fn serve_refuses_an_overflowing_offset() {
    ends_with_protocol_error("offset overflow", "beyond the announced size", |s| {
        s.send(begin(1, b"big", 10, WireMode::Whole));
        s.send(data(1, u64::MAX - 1, &[7; 10]));
    });
}

#[test]
fn serve_refuses_a_file_id_announced_twice() {
    ends_with_protocol_error("id twice", "announced twice", |s| {
        s.send(begin(1, b"one", 1, WireMode::Whole));
        s.send(begin(1, b"two", 1, WireMode::Whole));
    });
}

#[test]
fn serve_limits_files_in_flight() {
    ends_with_protocol_error("5000 begins", "too many files in flight", |s| {
        let mut all = Vec::new();
        for id in 1..=5000u64 {
            let path = format!("many{id}");
            all.extend(frame(&req(begin(id, path.as_bytes(), 1, WireMode::Whole))));
        }
        s.raw(&all);
    });
}

#[test]
fn serve_refuses_oversized_frame_lengths_without_allocating() {
    for len in [u32::MAX, MAX_FRAME + 1] {
        let a = Arena::new();
        let mut s = Serve::connect(&a);
        // The length alone, stdin left open: waiting for the body would hang.
        s.raw(&len.to_le_bytes());
        let e = s.wait_for(QUICK);
        e.assert_protocol_error(&format!("length {len}"), "exceeds the limit");
        let kib = e.hwm_kib;
        assert!(kib < 64 << 10, "length {len}: peak RSS {kib} KiB");
        a.check();
    }
}

#[test]
fn serve_refuses_huge_vector_length_claims_in_tiny_frames() {
    let xattrs = op(
        1,
        FsOp::SetDirXattrs {
            path: b"a".to_vec(),
            xattrs: vec![],
        },
    );
    let end_meta = end(1, b"", WireKind::File);
    let claims = [
        (
            "2^32 staged files",
            claiming(&req(commit(1, vec![])), 1 << 32),
        ),
        (
            "2^62 discards",
            claiming(&req(Request::Discard { staged: vec![] }), 1 << 62),
        ),
        (
            "data of 2^40 bytes",
            claiming(&req(data(1, 0, b"")), 1 << 40),
        ),
        (
            "2^32 xattrs at end",
            claiming(&req(end_meta), u32::MAX.into()),
        ),
        ("2^48 dir xattrs", claiming(&req(xattrs), 1 << 48)),
        (
            "a 1 TiB notice",
            claiming(&ToReceiver::Notice(Notice::Warn(String::new())), 1 << 40),
        ),
    ];
    for (what, frame) in claims {
        ends_with_protocol_error(what, "malformed", |s| s.raw(&frame));
    }
}

#[test]
fn serve_refuses_compressed_payloads_that_expand_too_far() {
    let (two_mib, packed) = fsync_repl::protocol::frame::pack(vec![0; 2 << 20], true);
    assert!(packed && two_mib.len() < 4096);
    ends_with_protocol_error("data expanding to 2 MiB", "compressed", |s| {
        s.send(begin(1, b"z", 4 << 20, WireMode::Whole));
        s.send(zdata(1, two_mib));
    });
    ends_with_protocol_error("garbage compressed data", "compressed", |s| {
        s.send(begin(1, b"z", 100, WireMode::Whole));
        s.send(zdata(1, b"not zstd at all".to_vec()));
    });
    let bomb = zstd_bomb(1 << 30);
    assert!(bomb.len() < 1 << 20, "bomb of {} bytes", bomb.len());
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    assert_eq!(s.begin_delta(1, b"f", 100).len(), 1);
    s.send(Request::Delta {
        id: 1,
        index: 0,
        part: 0,
        last: true,
        zstd: true,
        delta: bomb,
    });
    let e = s.wait_for(QUICK);
    e.assert_protocol_error("a delta expanding to 1 GiB", "compressed");
    // Bounded by the per-frame decompression limit (a window and a margin), not by
    // what the peer claims.
    let kib = e.hwm_kib;
    assert!(
        kib < 128 << 10,
        "a compressed delta took the receiver to {kib} KiB"
    );
    a.check();
}

// --- A4: delta attacks ----------------------------------------------------------------

/// A delta of `new` against a signature.
fn delta_for(sig: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    fsync_repl::delta::diff(sig, new, &mut out).expect("diff");
    out
}

#[test]
fn serve_refuses_delta_windows_out_of_order_or_out_of_range() {
    let mention = "unexpected delta window";
    ends_with_protocol_error("window 1 first", mention, |s| {
        let sigs = s.begin_delta(1, b"f", 200 << 20);
        assert_eq!(sigs.len(), 4, "one signature per 64 MiB window");
        s.send(delta_req(1, 1, delta_for(&sigs[1], b"x")));
    });
    ends_with_protocol_error("window u32::MAX", mention, |s| {
        let sigs = s.begin_delta(1, b"f", 100);
        s.send(delta_req(1, u32::MAX, delta_for(&sigs[0], &[1; 100])));
    });
    for again in [0, 1] {
        ends_with_protocol_error(&format!("window {again} after window 0"), mention, |s| {
            let sigs = s.begin_delta(1, b"f", 100);
            let d = delta_for(&sigs[0], &[1; 100]);
            s.send(delta_req(1, 0, d.clone()));
            s.send(delta_req(1, again, d));
        });
    }
}

/// A librsync delta: magic, COPY of 100 bytes at 1 TiB (8-byte fields), END.
fn copy_outside_base(_: &[u8]) -> Vec<u8> {
    let copy = cat(&[&[0x54], &(1u64 << 40).to_be_bytes(), &100u64.to_be_bytes()]);
    cat(&[&[0x72, 0x73, 0x02, 0x36], &copy, &[0]])
}

#[test]
fn serve_refuses_malformed_deltas() {
    type MakeDelta = fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, &str, MakeDelta); 5] = [
        ("garbage", "bad delta", |_| b"garbage".to_vec()),
        ("empty", "bad delta", |_| Vec::new()),
        ("longer than its window", "bad delta", |sig| {
            delta_for(sig, &noise(3, 200))
        }),
        ("shorter than its window", "wrong length", |sig| {
            delta_for(sig, &noise(3, 50))
        }),
        ("a copy outside the base", "bad delta", copy_outside_base),
    ];
    for (what, mentions, make) in cases {
        ends_with_protocol_error(what, mentions, |s| {
            let sigs = s.begin_delta(1, b"f", 100);
            s.send(delta_req(1, 0, make(&sigs[0])));
        });
    }
}

#[test]
fn serve_refuses_data_for_a_delta_and_deltas_for_whole_data() {
    ends_with_protocol_error("data for a delta", "data frame for a delta", |s| {
        s.begin_delta(1, b"f", 100);
        s.send(data(1, 0, &[1; 100]));
    });
    ends_with_protocol_error("delta for whole data", "unexpected delta window", |s| {
        s.send(begin(1, b"f", 100, WireMode::Whole));
        s.send(delta_req(1, 0, b"garbage".to_vec()));
    });
    ends_with_protocol_error("delta without a base", "unexpected delta window", |s| {
        match s.call(begin(1, b"new", 100, WireMode::Delta)) {
            Reply::NoBase { id: 1 } => {}
            other => s.fail(&format!("want NoBase: {other:?}")),
        }
        s.send(delta_req(1, 0, b"garbage".to_vec()));
    });
}

#[test]
fn serve_rejects_a_delta_with_the_wrong_hash_and_keeps_the_old_file() {
    let a = Arena::new();
    let old = fs::read(a.root().join("f")).unwrap();
    let new = cat(&[&old[..3000], &noise(9, 3000)]);
    let mut s = Serve::connect(&a);
    let corrupt = |s: &mut Serve, end: Request, what: &str| match s.staged(end) {
        Err(WireError::Corrupt) => {}
        other => s.fail(&format!("{what}: want Staged Err(Corrupt), got {other:?}")),
    };
    // The right delta, the wrong hash.
    let sigs = s.begin_delta(1, b"f", new.len() as u64);
    s.send(delta_req(1, 0, delta_for(&sigs[0], &new)));
    corrupt(&mut s, end_hash(1, [0; 32], WireKind::File), "wrong hash");
    // No window at all.
    s.begin_delta(2, b"f", 100);
    corrupt(&mut s, end(2, &[0; 100], WireKind::File), "missing window");
    // Whole data ended as something that is not a file.
    s.send(begin(3, b"f", 5, WireMode::Whole));
    s.send(data(3, 0, b"hello"));
    corrupt(&mut s, end(3, b"hello", WireKind::Symlink), "not a file");
    assert!(s.sync().is_empty());
    assert_eq!(fs::read(a.root().join("f")).unwrap(), old, "f changed");
    let temps = temps_in(&a.root());
    assert!(temps.is_empty(), "rejected temp files left: {temps:?}");
    // The same delta with the right hash goes through.
    let sigs = s.begin_delta(4, b"f", new.len() as u64);
    s.send(delta_req(4, 0, delta_for(&sigs[0], &new)));
    let st = match s.staged(end(4, &new, WireKind::File)) {
        Ok(st) => st,
        Err(e) => s.fail(&format!("the genuine delta failed: {e:?}")),
    };
    s.done_ok(commit(5, vec![st]));
    s.finish().assert_ok("delta hashes");
    assert_eq!(fs::read(a.root().join("f")).unwrap(), new);
    a.check();
}

// --- A5: broken framing and handshakes ----------------------------------------------------

#[test]
fn serve_refuses_truncated_frames() {
    for (what, bytes, mentions) in [
        (
            "body",
            cat(&[&100u32.to_le_bytes(), &[7; 10]]),
            "truncated frame",
        ),
        ("header", vec![100, 0], "truncated frame header"),
    ] {
        let a = Arena::new();
        let mut s = Serve::connect(&a);
        s.raw(&bytes);
        s.finish()
            .assert_protocol_error(&format!("truncated {what}"), mentions);
        a.check();
    }
}

#[test]
fn serve_refuses_junk_before_the_handshake() {
    let login = b"Last login: Tue Nov 26 10:00:00 2024 from 10.1.2.3\n";
    let escapes = b"\x1b]0;owned\x07\x1b[2J\r\nhello".to_vec();
    let cases = [
        (
            "junk then magic",
            cat(&[login, &hello()]),
            false,
            "Last login",
        ),
        (
            "escape sequences",
            escapes,
            true,
            "did not start with the fsync-repl handshake",
        ),
        ("no handshake", Vec::new(), true, "before the handshake"),
        ("half a magic", MAGIC[..5].to_vec(), true, "did not start"),
    ];
    for (what, bytes, close, mentions) in cases {
        let a = Arena::new();
        let mut s = Serve::spawn(&a);
        s.raw(&bytes);
        let e = if close { s.finish() } else { s.wait_for(QUICK) };
        e.assert_protocol_error(what, mentions);
        a.check();
    }
}

#[test]
fn serve_refuses_a_wrong_protocol_version() {
    for version in [0u32, VERSION + 1, u32::MAX] {
        let a = Arena::new();
        let mut s = Serve::spawn(&a);
        s.raw(&cat(&[MAGIC, &version.to_le_bytes()]));
        let e = s.wait_for(QUICK);
        let what = format!("version {version}");
        assert_one_line_error(
            &what,
            e.code,
            &e.stderr,
            2,
            &format!("remote side {version}"),
        );
        assert!(e.stderr.contains("version"), "{e:?}");
        a.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Frames of any request variant with arbitrary bodies, then arbitrary bytes.
    #[test]
    fn serve_survives_arbitrary_bytes_after_the_handshake(
        frames in proptest::collection::vec(
            (0u8..13, proptest::collection::vec(any::<u8>(), 0..48)),
            0..6,
        ),
        tail in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let a = Arena::new();
        let mut s = Serve::connect(&a);
        let mut input = Vec::new();
        for (variant, rest) in &frames {
            input.extend(raw_frame(&cat(&[&[0, *variant], rest])));
        }
        input.extend(&tail);
        s.raw(&input);
        let e = s.finish();
        prop_assert!(!e.stderr.contains("panicked"), "panicked: {}", e.stderr);
        prop_assert!(matches!(e.code, Some(0 | 2)), "{e:?}");
        a.check();
    }
}

// ---------------------------------------------------------------------------------------
// Part B: a fake server against the real client
// ---------------------------------------------------------------------------------------

/// The two FIFOs between the fake rsh and the test.
struct Wire {
    dir: TempDir,
}

impl Wire {
    fn new() -> Wire {
        let dir = scratch();
        for n in ["to_client", "from_client"] {
            let mode = rustix::fs::Mode::from_raw_mode(0o600);
            rustix::fs::mkfifoat(rustix::fs::CWD, dir.path().join(n), mode).expect("mkfifo");
        }
        Wire { dir }
    }

    fn fifo(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The test's end towards the client; closing it ends the fake rsh's output.
type ToClient = Arc<Mutex<Option<File>>>;

fn write_to(to: &ToClient, b: &[u8]) -> bool {
    lock(to).as_mut().is_some_and(|f| f.write_all(b).is_ok())
}

fn closer(to: &ToClient) -> impl FnOnce() {
    let to = to.clone();
    move || {
        lock(&to).take();
    }
}

/// How the client ended.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Outcome {
    #[track_caller]
    fn assert_refused(&self, what: &str, mentions: &str) {
        let what = format!("client, {what}");
        assert_one_line_error(&what, self.code, &self.stderr, 2, mentions);
    }
}

/// The real client, its remote shell joined to a [`Wire`].
struct Client {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    wire: Wire,
    start: Instant,
}

impl Client {
    fn spawn(args: &[OsString]) -> Client {
        let wire = Wire::new();
        let mut child = Command::new(BIN)
            .args(args)
            .env("FSYNC_HOSTILE_DIR", wire.dir.path())
            .env_remove("FSYNC_REPL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fsync-repl");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        let start = Instant::now();
        Client {
            child,
            stdout,
            stderr,
            wire,
            start,
        }
    }

    /// Opens the test's ends of the FIFOs once the fake rsh opens its own:
    /// (towards the client, from the client).
    fn connect(&mut self) -> (File, File) {
        let (to, from) = (self.wire.fifo("to_client"), self.wire.fifo("from_client"));
        let (tx, rx) = mpsc::channel();
        let (t, f) = (to.clone(), from.clone());
        thread::spawn(move || {
            let w = OpenOptions::new().write(true).open(&t);
            let r = match &w {
                Ok(_) => File::open(&f),
                Err(e) => Err(io::Error::new(e.kind(), "not tried")),
            };
            let _ = tx.send((w, r));
        });
        let start = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((Ok(w), Ok(r))) => return (w, r),
                Ok(other) => panic!("opening the FIFOs: {other:?}"),
                Err(_) => {}
            }
            let exited = self.child.try_wait().expect("try_wait").is_some();
            if exited || start.elapsed() > DEADLINE {
                // FIFOs open read-write at once: this releases the opener.
                let rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
                let _held = (rw(&to), rw(&from));
                let _ = rx.recv_timeout(QUICK);
                let _ = self.child.kill();
                let err = self.stderr.recv_timeout(QUICK).unwrap_or_default();
                panic!("the client never started its remote shell:\n{err}");
            }
        }
    }

    /// Waits for the client to exit (failing past the deadline), runs `close` to end the
    /// fake remote side (which ends the fake rsh), then collects the output.
    fn finish(mut self, close: impl FnOnce()) -> Outcome {
        let (status, _) = wait_until(&mut self.child, DEADLINE);
        let took = self.start.elapsed();
        close();
        let stderr = self.stderr.recv_timeout(DEADLINE).unwrap_or_default();
        let stdout = self.stdout.recv_timeout(QUICK).unwrap_or_default();
        let Some(status) = status else {
            panic!("the client hung: killed after {DEADLINE:?}; stderr:\n{stderr}");
        };
        let code = status.code();
        Outcome {
            code,
            stdout,
            stderr,
            took,
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake remote that speaks the protocol itself; `T` is what the client sends it.
struct Peer<T> {
    to: ToClient,
    rx: mpsc::Receiver<Msg<T>>,
}

impl<T: DeserializeOwned + Send + Debug + 'static> Peer<T> {
    /// Joins the client's wire. When the client's side ends (it exited, or killed its
    /// remote shell), the fake remote ends too, as a remote command would.
    fn start(c: &mut Client) -> Peer<T> {
        let (to, from) = c.connect();
        let to: ToClient = Arc::new(Mutex::new(Some(to)));
        let rx = reader(from, closer(&to));
        Peer { to, rx }
    }

    /// Reads the client's handshake.
    fn expect_hello(&self) {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(Msg::Hello(Ok(v))) if v == VERSION => {}
            other => panic!("no handshake from the client: {other:?}"),
        }
    }

    fn raw(&self, b: &[u8]) {
        // The client may have hung up already: that is what some attacks expect.
        let _ = write_to(&self.to, b);
    }

    fn send<M: Serialize>(&self, m: &M) {
        self.raw(&frame(m));
    }

    /// The client's next frame; `None` once it hung up.
    fn next(&self) -> Option<T> {
        match self.rx.recv_timeout(DEADLINE) {
            Ok(Msg::Frame(m)) => Some(m),
            Ok(Msg::End(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => None,
            other => panic!("nothing from the client within {DEADLINE:?}: {other:?}"),
        }
    }

    fn close(&self) {
        closer(&self.to)();
    }
}

impl Peer<Reply> {
    /// Sends a request to a pull client's receiver and returns its answer.
    fn call(&self, r: Request) -> Reply {
        let what = format!("{r:?}");
        self.send(&req(r));
        self.next()
            .unwrap_or_else(|| panic!("{what}: the client hung up"))
    }

    /// Asserts that the pull client's receiver refuses `r` with an error answer.
    fn refused(&self, r: Request) {
        let what = format!("{r:?}");
        match self.call(r) {
            Reply::Done { result: Err(_), .. } | Reply::Staged { result: Err(_), .. } => {}
            Reply::Hash { hash: None, .. } => {}
            // A commit refuses the files it cannot put in place, one by one.
            Reply::Committed { result: Err(_), .. } => {}
            Reply::Committed {
                result: Ok(failed), ..
            } if !failed.is_empty() => {}
            other => panic!("the pull client accepted {what}: {other:?}"),
        }
    }
}

/// What the man in the middle sends the client in place of one reply.
enum Out {
    Reply(Reply),
    Raw(Vec<u8>),
    Close,
}

/// A real `serve DEST` behind a man in the middle that tampers with its replies.
struct Mitm {
    serve: Child,
    serve_err: mpsc::Receiver<String>,
    requests: Arc<Mutex<Vec<ToReceiver>>>,
    to: ToClient,
}

impl Mitm {
    fn start(
        c: &mut Client,
        dest: &Path,
        mut tamper: impl FnMut(Reply) -> Vec<Out> + Send + 'static,
    ) -> Mitm {
        let (to, mut from) = c.connect();
        let to: ToClient = Arc::new(Mutex::new(Some(to)));
        let mut serve = Command::new(BIN)
            .args(["serve", "--timeout", "60"])
            .arg(dest)
            .env_remove("FSYNC_REPL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fsync-repl serve");
        let mut sin = serve.stdin.take().expect("stdin");
        let mut sout = serve.stdout.take().expect("stdout");
        let serve_err = collect(serve.stderr.take().expect("stderr"));
        let requests: Arc<Mutex<Vec<ToReceiver>>> = Arc::default();
        let reqs = requests.clone();
        // Client to serve, recording the requests (without their data).
        thread::spawn(move || {
            if read_hello(&mut from).is_ok() && write_hello(&mut sin).is_ok() {
                let mut buf = Vec::new();
                let mut zfrom = ZReader::new(&mut from);
                while let Ok(Some(m)) = read_frame::<ToReceiver, _>(&mut zfrom, &mut buf) {
                    let ok = write_frame(&mut sin, &m).is_ok();
                    lock(&reqs).push(match m {
                        ToReceiver::Request(Request::Data { id, offset, .. }) => {
                            req(data(id, offset, b""))
                        }
                        m => m,
                    });
                    if !ok {
                        break;
                    }
                }
            }
            drop(sin);
            // Keep reading so that the client never blocks on a full pipe.
            let _ = io::copy(&mut from, &mut io::sink());
        });
        // Serve to client, through the tamper.
        let t2 = to.clone();
        thread::spawn(move || {
            if read_hello(&mut sout).is_ok() && write_to(&t2, &hello()) {
                let mut buf = Vec::new();
                let mut zout = ZReader::new(&mut sout);
                'frames: while let Ok(Some(r)) = read_frame::<Reply, _>(&mut zout, &mut buf) {
                    for out in tamper(r) {
                        let ok = match out {
                            Out::Reply(r) => write_to(&t2, &frame(&r)),
                            Out::Raw(b) => write_to(&t2, &b),
                            Out::Close => false,
                        };
                        if !ok {
                            break 'frames;
                        }
                    }
                }
            }
            closer(&t2)();
            let _ = io::copy(&mut sout, &mut io::sink());
        });
        Mitm {
            serve,
            serve_err,
            requests,
            to,
        }
    }

    /// Ends the relay after the client exited; returns the serve's exit code and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        closer(&self.to)();
        let (status, _) = wait_until(&mut self.serve, DEADLINE);
        let err = self.serve_err.recv_timeout(QUICK).unwrap_or_default();
        let status = status.unwrap_or_else(|| panic!("the relayed serve hung:\n{err}"));
        (status.code(), err)
    }
}

/// SRC of the push attacks: small files, a directory and a file big enough for deltas.
fn push_source() -> TempDir {
    let src = scratch();
    fs::write(src.path().join("a"), noise(4, 100)).unwrap();
    fs::create_dir(src.path().join("d")).unwrap();
    fs::write(src.path().join("d/b"), noise(5, 300)).unwrap();
    fs::write(src.path().join("big"), noise(6, 200 << 10)).unwrap();
    src
}

fn client_args(verb: &str, extra: &[&str], timeout: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![verb.into(), "--rsh".into(), RSH.into()];
    for a in [
        "--remote-bin",
        "/nonexistent/fsync-repl",
        "--timeout",
        timeout,
    ] {
        v.push(a.into());
    }
    v.extend(extra.iter().map(OsString::from));
    v
}

fn push_args(src: &Path, extra: &[&str], timeout: &str) -> Vec<OsString> {
    let mut v = client_args("push", extra, timeout);
    v.push(src.into());
    v.push("testhost:/remote/dest".into());
    v
}

fn pull_args(dest: &Path, extra: &[&str], timeout: &str) -> Vec<OsString> {
    let mut v = client_args("pull", extra, timeout);
    v.push("testhost:/remote/src".into());
    v.push(dest.into());
    v
}

/// What a tampered push did.
struct Pushed {
    out: Outcome,
    requests: Vec<ToReceiver>,
}

impl Pushed {
    /// Whether the client asked the far side to change anything.
    fn acted(&self) -> bool {
        self.requests.iter().any(|m| {
            matches!(
                m,
                ToReceiver::Request(
                    Request::Op { .. } | Request::Begin { .. } | Request::Commit { .. }
                )
            )
        })
    }
}

/// Pushes SRC to a real `serve` of `dest` through a tampering man in the middle; checks
/// that SRC is unchanged and that neither side panicked.
fn push_through(
    src: &Path,
    dest: &Path,
    extra: &[&str],
    tamper: impl FnMut(Reply) -> Vec<Out> + Send + 'static,
) -> Pushed {
    let before = snap(src);
    let mut c = Client::spawn(&push_args(src, extra, "30"));
    let m = Mitm::start(&mut c, dest, tamper);
    let out = c.finish(closer(&m.to));
    let requests = std::mem::take(&mut *lock(&m.requests));
    let (serve_code, serve_err) = m.finish();
    assert!(
        !serve_err.contains("panicked") && matches!(serve_code, Some(0 | 2)),
        "the relayed serve: {serve_code:?}\n{serve_err}"
    );
    assert_eq!(snap(src), before, "push modified SRC");
    Pushed { out, requests }
}

/// Sends the listing's real replies, with `entries` as one more chunk before its end.
fn inject_listing(entries: Vec<WireEntry>) -> impl FnMut(Reply) -> Vec<Out> {
    let mut once = Some(entries);
    move |r| match (&r, once.take()) {
        (Reply::ListEnd { id, .. }, Some(entries)) => {
            let chunk = fsync_repl::protocol::listing::encode(&entries);
            let chunk = Reply::Listing { id: *id, chunk };
            vec![Out::Reply(chunk), Out::Reply(r)]
        }
        (_, entries) => {
            once = entries;
            vec![Out::Reply(r)]
        }
    }
}

/// Replaces the first `ListEnd` with what `make` builds from its id.
fn replace_list_end(
    make: impl Fn(u64) -> Vec<Out> + Send + 'static,
) -> impl FnMut(Reply) -> Vec<Out> {
    let mut done = false;
    move |r| match &r {
        Reply::ListEnd { id, .. } if !done => {
            done = true;
            make(*id)
        }
        _ => vec![Out::Reply(r)],
    }
}

// --- B6: handshakes -----------------------------------------------------------------------

#[test]
fn clients_refuse_junk_before_the_handshake() {
    let login = b"Last login: Tue Nov 26 10:00:00 2024 from 10.1.2.3\n";
    let not_found = b"bash: /nonexistent/fsync-repl: No such file or directory\n";
    for pull in [false, true] {
        for (junk, then_hello, mentions) in [
            (&login[..], true, "Last login"),
            (&not_found[..], false, "No such file or directory"),
        ] {
            let a = Arena::in_tmp();
            let src = push_source();
            let src_before = snap(src.path());
            let mut c = match pull {
                true => Client::spawn(&pull_args(&a.root(), &[], "30")),
                false => Client::spawn(&push_args(src.path(), &[], "30")),
            };
            // The client's own frames do not matter here: read them as requests.
            let p: Peer<ToReceiver> = Peer::start(&mut c);
            p.expect_hello();
            p.raw(junk);
            match then_hello {
                true => p.raw(&hello()),
                false => p.close(),
            }
            let out = c.finish(closer(&p.to));
            out.assert_refused(&format!("pull={pull} junk {}", show(junk)), mentions);
            assert_eq!(snap(src.path()), src_before);
            a.check();
        }
    }
}

#[test]
fn push_gives_up_when_no_handshake_comes() {
    let src = push_source();
    let before = snap(src.path());
    let mut c = Client::spawn(&push_args(src.path(), &[], "2"));
    let p: Peer<ToReceiver> = Peer::start(&mut c);
    p.expect_hello();
    let out = c.finish(closer(&p.to));
    out.assert_refused("push without a handshake", "within 2 s");
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    assert_eq!(snap(src.path()), before);
}

#[test]
fn pull_gives_up_when_no_handshake_comes() {
    let a = Arena::in_tmp();
    let mut c = Client::spawn(&pull_args(&a.root(), &[], "2"));
    let p: Peer<Reply> = Peer::start(&mut c);
    p.expect_hello();
    let out = c.finish(closer(&p.to));
    out.assert_refused("pull without a handshake", "timeout");
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    a.check();
}

// --- B7: a hostile receiver against push ----------------------------------------------------

#[test]
fn push_refuses_a_listing_with_traversal_paths() {
    let src = push_source();
    for path in [
        &b"../x"[..],
        b"/etc/passwd",
        b"a/../../x",
        b"../../../../etc/shadow",
        b"a//b",
        b"d/",
        b".",
        b"..",
        b"",
        b"a\0b",
    ] {
        let dest = scratch();
        let tamper = inject_listing(vec![entry(path, WireKind::File)]);
        let r = push_through(src.path(), dest.path(), &["--delete"], tamper);
        let what = format!("listing with {}", show(path));
        r.out.assert_refused(&what, "invalid path");
        assert!(
            !r.acted(),
            "{what}: the client acted on it: {:?}",
            r.requests
        );
    }
}

#[test]
fn push_accepts_an_unsorted_listing() {
    // "Sorted within the chunk or not: the sender sorts" (the protocol's documentation).
    // The first listing of a run is of the root's own entries; `--checksum` asks for
    // one whole listing, so entries of every depth may come.
    let root_only: &[&[u8]] = &[b"zz", b"mm", b"b"];
    let any_depth: &[&[u8]] = &[b"zz", b"mm", b"d/zz", b"b"];
    for (names, extra) in [(root_only, &[][..]), (any_depth, &["--checksum"][..])] {
        let src = push_source();
        let dest = scratch();
        let entries = names.iter().map(|n| entry(n, WireKind::File)).collect();
        let mut args = vec!["--delete"];
        args.extend(extra);
        let r = push_through(src.path(), dest.path(), &args, inject_listing(entries));
        assert_eq!(r.out.code, Some(0), "{extra:?}: {:?}", r.out);
        common::assert_same_tree(src.path(), dest.path());
    }
}

#[test]
fn push_refuses_a_listing_outside_the_part_it_asked_for() {
    // The first listing is of the root's own entries: a nested one does not belong.
    let src = push_source();
    let dest = scratch();
    let tamper = inject_listing(vec![entry(b"d/zz", WireKind::File)]);
    let r = push_through(src.path(), dest.path(), &["--delete"], tamper);
    r.out
        .assert_refused("a nested entry", "outside the requested part of the tree");
    assert!(!r.acted(), "the client acted on it: {:?}", r.requests);
}

#[test]
fn push_refuses_a_listing_with_duplicate_entries() {
    let src = push_source();
    for dups in [
        vec![entry(b"zz", WireKind::File), entry(b"zz", WireKind::File)],
        vec![entry(b"a", WireKind::File), entry(b"a", WireKind::Dir)],
    ] {
        let dest = scratch();
        fs::write(dest.path().join("a"), b"old").unwrap();
        let what = format!("duplicates {dups:?}");
        let r = push_through(src.path(), dest.path(), &["--delete"], inject_listing(dups));
        r.out.assert_refused(&what, "duplicate");
    }
}

/// A duplicate of an entry equal to SRC's is refused too, though the client holds
/// neither (equal entries are counted as they are unpacked, not listed), and so is a
/// second, different entry for it.
#[test]
fn push_refuses_a_duplicate_of_an_entry_equal_to_the_source() {
    for newer in [0, 1] {
        let src = push_source();
        let dest = scratch();
        common::push_ok(common::Transport::Local, src.path(), dest.path(), &[]);
        let r = push_through(src.path(), dest.path(), &[], send_a_again(newer));
        r.out
            .assert_refused("a second entry for an unchanged file", "duplicate");
    }
}

/// A remote DEST is compared a group of directories at a time, and each part reads the
/// root's `.fsyncignore` again: rules that change between the parts would let a file
/// excluded in one part look deleted in the plan. Such a run is refused and changes
/// nothing. (The rules are rewritten while the far side's first answer is relayed and
/// put back at the second's.)
#[test]
fn push_refuses_a_run_whose_root_ignore_rules_changed_between_its_parts() {
    let src = push_source();
    let rules = src.path().join(".fsyncignore");
    fs::write(&rules, b"*.iso\n").unwrap();
    let dest = scratch();
    common::push_ok(common::Transport::Local, src.path(), dest.path(), &[]);
    let before = snap(dest.path());
    let mtime = fs::metadata(&rules).unwrap().modified().unwrap();
    let mut ends = 0;
    let tamper = move |r: Reply| {
        if matches!(r, Reply::ListEnd { .. }) {
            ends += 1;
            let text: &[u8] = if ends == 1 { b"*.tmp\n" } else { b"*.iso\n" };
            fs::write(&rules, text).unwrap();
            // SRC as it was, but for its change time.
            let f = fs::File::options().write(true).open(&rules).unwrap();
            f.set_modified(mtime).unwrap();
        }
        vec![Out::Reply(r)]
    };
    let r = push_through(src.path(), dest.path(), &["--delete"], tamper);
    // Like a source root replaced under the scan: a selection error, exit 3.
    assert_one_line_error(
        "client, rules changed during the run",
        r.out.code,
        &r.out.stderr,
        3,
        "changed while the tree was compared",
    );
    assert_eq!(snap(dest.path()), before, "a refused run changed DEST");
}

/// Sends the far side's own entry for "a" once more before the listing's end, its
/// mtime moved by `newer` seconds.
fn send_a_again(newer: i64) -> impl FnMut(Reply) -> Vec<Out> {
    let mut seen: Option<WireEntry> = None;
    move |r: Reply| match &r {
        Reply::Listing { chunk, .. } => {
            let entries = fsync_repl::protocol::listing::decode(chunk, 1 << 20, 1 << 30).unwrap();
            seen = seen.take().or(entries.into_iter().find(|e| e.path == b"a"));
            vec![Out::Reply(r)]
        }
        Reply::ListEnd { id, .. } => match seen.take() {
            Some(mut a) => {
                a.mtime += newer;
                let chunk = fsync_repl::protocol::listing::encode(&[a]);
                vec![Out::Reply(Reply::Listing { id: *id, chunk }), Out::Reply(r)]
            }
            None => vec![Out::Reply(r)],
        },
        _ => vec![Out::Reply(r)],
    }
}

#[test]
fn push_refuses_absurd_counts_and_lengths_in_replies() {
    type MakeFrame = fn(u64) -> Vec<u8>;
    let cases: [(&str, &str, MakeFrame); 4] = [
        ("listing of 2^40 entries", "malformed", |id| {
            let chunk = vec![];
            claiming(&Reply::Listing { id, chunk }, 1 << 40)
        }),
        ("2^62 listing problems", "malformed", |id| {
            let problems = vec![];
            claiming(
                &Reply::ListEnd {
                    id,
                    root: None,
                    owners: false,
                    problems,
                },
                1 << 62,
            )
        }),
        ("a 4 GiB frame", "exceeds the limit", |_| {
            u32::MAX.to_le_bytes().to_vec()
        }),
        ("a frame over the limit", "exceeds the limit", |_| {
            (MAX_FRAME + 1).to_le_bytes().to_vec()
        }),
    ];
    let src = push_source();
    for (what, mentions, make) in cases {
        let dest = scratch();
        let tamper = replace_list_end(move |id| vec![Out::Raw(make(id))]);
        push_through(src.path(), dest.path(), &[], tamper)
            .out
            .assert_refused(what, mentions);
    }
    let dest = scratch();
    let truncated = cat(&[&100u32.to_le_bytes(), &[0; 10]]);
    let tamper = replace_list_end(move |_| vec![Out::Raw(truncated.clone()), Out::Close]);
    let r = push_through(src.path(), dest.path(), &[], tamper);
    r.out.assert_refused("a truncated frame", "truncated frame");
}

#[test]
fn push_refuses_answers_to_unknown_requests() {
    type MakeReply = fn(u64) -> Reply;
    let cases: [(&str, &str, MakeReply); 3] = [
        ("unknown id", "unknown request", |_| Reply::Done {
            id: 1 << 50,
            result: Ok(()),
        }),
        ("id 0", "unknown request", |_| Reply::NoBase { id: 0 }),
        ("wrong kind of answer", "unexpected answer", |id| {
            Reply::NoBase { id }
        }),
    ];
    let src = push_source();
    for (what, mentions, make) in cases {
        let dest = scratch();
        let tamper = replace_list_end(move |id| vec![Out::Reply(make(id))]);
        push_through(src.path(), dest.path(), &[], tamper)
            .out
            .assert_refused(what, mentions);
    }
}

/// Sets the big-endian u32 at `at` of the first signature.
fn set_sig_word(mut w: Vec<Vec<u8>>, at: usize, v: u32) -> Vec<Vec<u8>> {
    w[0][at..at + 4].copy_from_slice(&v.to_be_bytes());
    w
}

#[test]
fn push_refuses_bad_signatures() {
    type Mangle = fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>;
    let cases: [(&str, Mangle); 7] = [
        ("block size 0", |w| set_sig_word(w, 4, 0)),
        ("block size 4 GiB", |w| set_sig_word(w, 4, u32::MAX)),
        ("strong length 17", |w| set_sig_word(w, 8, 17)),
        ("strong length 0", |w| set_sig_word(w, 8, 0)),
        ("garbage", |_| vec![b"garbage".to_vec()]),
        ("no window", |_| vec![]),
        ("two windows", |w| vec![w[0].clone(), w[0].clone()]),
    ];
    let src = push_source();
    for (what, mangle) in cases {
        let dest = scratch();
        let old = dest.path().join("big");
        fs::write(&old, noise(7, 200 << 10)).unwrap();
        common::set_mtime(&old, 1_000_000_000, 0);
        let tamper = move |r| match r {
            Reply::Signature {
                id,
                block_size,
                windows,
            } => {
                let w = mangle(windows.into_iter().map(|w| w.into_vec()).collect());
                let windows = w.into_iter().map(serde_bytes::ByteBuf::from).collect();
                let sig = Reply::Signature {
                    id,
                    block_size,
                    windows,
                };
                vec![Out::Reply(sig)]
            }
            r => vec![Out::Reply(r)],
        };
        let r = push_through(src.path(), dest.path(), &[], tamper);
        r.out
            .assert_refused(&format!("signature with {what}"), "signature");
        let delta = r.requests.iter().any(|m| {
            matches!(
                m,
                ToReceiver::Request(Request::Begin {
                    mode: WireMode::Delta,
                    ..
                })
            )
        });
        assert!(delta, "{what}: no delta transfer was attempted");
    }
}

#[test]
fn push_refuses_staged_names_with_slashes_or_dots() {
    type MangleStaged = fn(&mut WireStaged);
    let cases: [(&str, MangleStaged); 8] = [
        ("tmp ../x", |s| s.tmp = b"../x".to_vec()),
        ("tmp a/b", |s| s.tmp = b"a/b".to_vec()),
        ("tmp empty", |s| s.tmp = Vec::new()),
        ("name ../x", |s| s.name = b"../x".to_vec()),
        ("name a/b", |s| s.name = b"a/b".to_vec()),
        ("name ..", |s| s.name = b"..".to_vec()),
        ("dir ../..", |s| s.dir = b"../..".to_vec()),
        ("dir /etc", |s| s.dir = b"/etc".to_vec()),
    ];
    let src = push_source();
    let valid = |s: &WireStaged| {
        use fsync_repl::fsutil::{valid_name, valid_rel_path};
        valid_name(&s.tmp) && valid_name(&s.name) && (s.dir.is_empty() || valid_rel_path(&s.dir))
    };
    for (what, mangle) in cases {
        let dest = scratch();
        let tamper = move |r| match r {
            Reply::Staged {
                id,
                result: Ok(mut s),
            } => {
                mangle(&mut s);
                vec![Out::Reply(Reply::Staged { id, result: Ok(s) })]
            }
            r => vec![Out::Reply(r)],
        };
        let r = push_through(src.path(), dest.path(), &[], tamper);
        r.out
            .assert_refused(&format!("staged {what}"), "invalid staged name");
        for m in &r.requests {
            if let ToReceiver::Request(
                Request::Commit { staged, .. } | Request::Discard { staged },
            ) = m
            {
                let passed: Vec<_> = staged.iter().filter(|s| !valid(s)).collect();
                assert!(passed.is_empty(), "{what}: the client passed on {passed:?}");
            }
        }
    }
}

// --- B8: a hostile sender against pull ------------------------------------------------------

/// Starts `pull testhost:SRC DEST` (DEST = the arena's ROOT) and completes the handshake.
fn pull_session(a: &Arena, extra: &[&str]) -> (Client, Peer<Reply>) {
    let mut c = Client::spawn(&pull_args(&a.root(), extra, "30"));
    let p: Peer<Reply> = Peer::start(&mut c);
    p.expect_hello();
    p.raw(&hello());
    (c, p)
}

#[test]
fn pull_refuses_traversal_names_from_the_sender() {
    let a = Arena::in_tmp();
    let root_before = snap_below(&a.root());
    let (c, p) = pull_session(&a, &[]);
    let mut id = 0;
    let mut paths = a.evil_paths();
    paths.push(b"/etc/passwd".to_vec());
    for path in paths {
        let ops = [
            mkdir(&path),
            symlink(&path, b"x"),
            remove(&path, WireKind::File),
            remove_tree(&path),
            rename(b"victim", &path),
            link(b"linked", &path),
            set_meta(&path, wmeta(WireKind::File, 0o6777)),
        ];
        for o in ops {
            id += 1;
            p.refused(op(id, o));
        }
        id += 1;
        p.refused(begin(id, &path, 4, WireMode::Whole));
        p.send(&req(data(id, 0, b"evil")));
        p.send(&req(end(id, b"evil", WireKind::File)));
        // The hash of a file outside DEST must not reach the sender.
        id += 1;
        p.refused(hash_req(id, &path));
        id += 1;
        p.refused(local_copy(id, b"copy", &path));
    }
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("pull after refused requests", "without a report");
    a.check();
    assert_eq!(snap_below(&a.root()), root_before, "DEST changed");
}

#[test]
fn pull_never_writes_through_a_symlink_the_sender_made() {
    let a = Arena::in_tmp();
    let out_dir = bytes(&a.outside());
    assert!(out_dir.starts_with(b"/tmp/"));
    let (c, p) = pull_session(&a, &[]);
    match p.call(op(1, symlink(b"sub", &out_dir))) {
        Reply::Done { result: Ok(()), .. } => {}
        other => panic!("symlink sub: {other:?}"),
    }
    p.refused(begin(2, b"sub/evil", 4, WireMode::Whole));
    p.send(&req(data(2, 0, b"evil")));
    p.send(&req(end(2, b"evil", WireKind::File)));
    p.refused(commit(3, vec![staged(b"sub", PLANTED, b"evil")]));
    p.refused(op(4, mkdir(b"sub/d")));
    p.refused(op(5, set_dir_meta(b"sub", wmeta(WireKind::Dir, 0o777))));
    p.refused(op(6, set_meta(b"sub", wmeta(WireKind::Dir, 0o777))));
    p.refused(op(7, remove(b"sub/sentinel", WireKind::File)));
    p.refused(local_copy(8, b"copy", b"sub/sentinel"));
    p.send(&req(Request::Discard {
        staged: vec![staged(b"sub", PLANTED, b"x")],
    }));
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("pull after symlink attacks", "without a report");
    a.check();
}

#[test]
fn pull_refuses_absurd_sizes() {
    let attacks = [
        (
            "size u64::MAX",
            "absurd",
            vec![begin(1, b"huge", u64::MAX, WireMode::Whole)],
        ),
        (
            "an overflowing offset",
            "beyond the announced size",
            vec![
                begin(1, b"small", 10, WireMode::Whole),
                data(1, u64::MAX - 1, &[1; 10]),
            ],
        ),
        (
            "data expanding to 64 MiB",
            "compressed",
            vec![
                begin(1, b"z", 100 << 20, WireMode::Whole),
                zdata(1, zstd_bomb(64 << 20)),
            ],
        ),
    ];
    for (what, mentions, reqs) in attacks {
        let a = Arena::in_tmp();
        let (c, p) = pull_session(&a, &[]);
        for r in reqs {
            p.send(&req(r));
        }
        // The client must stop by itself: the fake sender keeps its side open.
        let out = c.finish(closer(&p.to));
        out.assert_refused(what, mentions);
        a.check();
    }
    // A frame length alone, far over the limit.
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    p.raw(&u32::MAX.to_le_bytes());
    let out = c.finish(closer(&p.to));
    out.assert_refused("a 4 GiB frame", "exceeds the limit");
    a.check();
}

#[test]
fn pull_dry_run_writes_nothing_whatever_the_sender_asks() {
    let a = Arena::in_tmp();
    let before = snap(&a.root());
    let (c, p) = pull_session(&a, &["--dry-run"]);
    // The client may refuse by answering with errors or by ending the session: send the
    // whole attack without waiting, then collect whatever answers came.
    p.send(&req(op(1, mkdir(b"planted"))));
    p.send(&req(begin(2, b"victim", 7, WireMode::Whole)));
    p.send(&req(data(2, 0, b"changed")));
    p.send(&req(end(2, b"changed", WireKind::File)));
    let mut answers = Vec::new();
    while let Some(r) = p.next() {
        if let Reply::Staged { result: Ok(st), .. } = &r {
            p.send(&req(commit(3, vec![st.clone()])));
        }
        let done = matches!(r, Reply::Done { id: 3, .. });
        answers.push(r);
        if done {
            break;
        }
    }
    p.close();
    let out = c.finish(|| {});
    let after = snap(&a.root());
    assert_eq!(
        after, before,
        "pull --dry-run let the sender write: {answers:?}"
    );
    out.assert_refused("writes during a dry run", "");
    a.check();
}

#[test]
fn pull_remote_failure_message_cannot_forge_lines_or_terminal_escapes() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    let message = "it failed\nfsync-repl: forged second line\x1b]0;owned\x07\x1b[2J".into();
    p.send(&ToReceiver::Notice(Notice::Failed {
        exit_code: 2,
        message,
    }));
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("a remote failure message", "it failed");
    a.check();
}

#[test]
fn pull_remote_output_lines_cannot_carry_terminal_escapes() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    let item = ">f+++++++++ a\x1b]0;owned\x07\x1b[2J".to_string();
    p.send(&ToReceiver::Notice(Notice::Item(item)));
    let warn = "warning\x1b[31m red\rfsync-repl: forged".to_string();
    p.send(&ToReceiver::Notice(Notice::Warn(warn)));
    p.close();
    let out = c.finish(|| {});
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let raw = text.contains(['\x1b', '\x07', '\r']);
        assert!(!raw, "remote notices reached {stream} unescaped: {text:?}");
    }
    a.check();
}

/// The receiver keeps its own free-space reserve whatever the sender planned: a peer
/// that announces a file too big for ROOT's filesystem gets "no space" at once, and
/// nothing is written (invariant 5 on the far side).
#[test]
fn serve_refuses_a_file_past_its_own_reserve() {
    require!(
        rustix::process::geteuid().is_root(),
        "mounting a tmpfs needs root"
    );
    let mnt = tempfile::tempdir().expect("tempdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    require!(mounted, "mount -t tmpfs failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let a = Arena::in_dir(tempfile::tempdir_in(mnt.path()).expect("tempdir"));
    let mut s = Serve::connect(&a);
    // 4000 KiB fit in the 4 MiB tmpfs, but not above the default reserve (5%).
    let size = 4000 << 10;
    s.send(begin(1, b"big", size, WireMode::Whole));
    match s.next("Begin past the reserve") {
        Reply::Staged {
            id: 1,
            result: Err(WireError::NoSpace),
        } => {}
        other => s.fail(&format!("expected no space for file 1, got {other:?}")),
    }
    // Data for the refused file is dropped, and the session goes on.
    s.send(data(1, 0, &noise(2, 1 << 20)));
    let st = s.stage(2, b"small", b"fits");
    s.done_ok(commit(3, vec![st]));
    assert_eq!(fs::read(a.root().join("small")).expect("small"), b"fits");
    assert!(!a.root().join("big").exists());
    drop(s);
    a.check();
}

// --- B9: a receiver that stops reading ----------------------------------------------------

/// Answers a push client as a receiver with an empty DEST until it begins a file, then
/// stops reading (and answering), its ends of the wire kept open.
#[test]
fn push_ends_when_the_receiver_stops_reading() {
    let src = scratch();
    fs::write(src.path().join("big"), noise(8, 24 << 20)).unwrap();
    let before = snap(src.path());
    let mut c = Client::spawn(&push_args(src.path(), &["-W"], "2"));
    let (mut to, mut from) = c.connect();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        read_hello(&mut from).expect("the client's handshake");
        to.write_all(&hello()).expect("handshake");
        let mut buf = Vec::new();
        let mut zfrom = ZReader::new(&mut from);
        while let Ok(Some(m)) = read_frame::<ToReceiver, _>(&mut zfrom, &mut buf) {
            let r = match m {
                ToReceiver::Request(Request::Begin { .. }) => break,
                ToReceiver::Request(ref r) => match common::peer::routine_answer(r) {
                    Some(a) => a,
                    None => continue,
                },
                _ => continue,
            };
            if to.write_all(&frame(&r)).is_err() {
                break;
            }
        }
        drop(zfrom);
        // Neither read nor answer any more: the wire stays open, held by the test.
        let _ = tx.send((to, from));
    });
    let held = rx
        .recv_timeout(DEADLINE)
        .expect("the client never began a file");
    let out = c.finish(|| {});
    drop(held);
    out.assert_refused(
        "a receiver that stops reading",
        "has not read anything for 2 s",
    );
    assert_eq!(snap(src.path()), before);
}

// --- A6/B10: FIFOs and devices are never opened -------------------------------------------

/// Notices whether anything opens one of the given nodes (inotify's IN_OPEN on their
/// inodes; an `O_PATH` descriptor opens nothing and raises no event).
struct OpenWatch {
    inotify: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(nodes: &[PathBuf]) -> OpenWatch {
        use rustix::fs::inotify;
        let flags = inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC;
        let fd = inotify::init(flags).expect("inotify");
        for n in nodes {
            inotify::add_watch(&fd, n, inotify::WatchFlags::OPEN).expect("watch a node");
        }
        OpenWatch { inotify: fd }
    }

    #[track_caller]
    fn assert_never_opened(self, what: &str) {
        let mut buf = [0u8; 1024];
        let events = rustix::io::read(&self.inotify, &mut buf).unwrap_or(0);
        assert_eq!(events, 0, "{what}: a FIFO or device node was opened");
    }
}

/// The requests a peer could use to make a receiver open `path`: its hash, a local copy
/// from it, a delta basis, and metadata as if it were a file.
fn open_attempts(id: u64, path: &[u8]) -> [Request; 4] {
    [
        hash_req(id, path),
        local_copy(id + 1, b"copy", path),
        begin(id + 2, path, 100, WireMode::Delta),
        op(id + 3, set_meta(path, wmeta(WireKind::File, 0o600))),
    ]
}

#[test]
fn serve_never_opens_a_fifo_or_device_it_was_sent() {
    let a = Arena::new();
    let mut s = Serve::connect(&a);
    s.done_ok(op(1, mknod(b"fifo", WireKind::Fifo, 0)));
    let mut paths = vec![&b"fifo"[..]];
    if common::is_root() {
        let dev = mknod(b"null", WireKind::CharDev, rustix::fs::makedev(1, 3));
        s.done_ok(op(2, dev));
        paths.push(b"null");
    }
    let nodes: Vec<PathBuf> = paths
        .iter()
        .map(|p| a.root().join(common::bytes_path(p)))
        .collect();
    let watch = OpenWatch::new(&nodes);
    let mut id = 10;
    for path in paths {
        let [hash, copy, delta, meta] = open_attempts(id, path);
        id += 10;
        match s.call(hash) {
            Reply::Hash { hash: None, .. } => {}
            other => s.fail(&format!("Hash {}: {other:?}", show(path))),
        }
        s.staged_err(copy);
        match s.call(delta) {
            Reply::NoBase { id: got } => s.send(Request::Abort { id: got }),
            other => s.fail(&format!("Begin {} (delta): {other:?}", show(path))),
        }
        s.done_err(meta);
    }
    assert!(s.sync().is_empty());
    watch.assert_never_opened("serve");
    s.finish().assert_ok("fifos and devices never opened");
    assert!(!a.root().join("copy").exists());
    a.check();
}

#[test]
fn pull_never_opens_a_fifo_or_device_the_sender_names() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    let made = |p: &Peer<Reply>, id, path: &[u8], kind, rdev| match p
        .call(op(id, mknod(path, kind, rdev)))
    {
        Reply::Done { result: Ok(()), .. } => {}
        other => panic!("mknod {}: {other:?}", show(path)),
    };
    made(&p, 1, b"fifo", WireKind::Fifo, 0);
    let mut paths = vec![&b"fifo"[..]];
    if common::is_root() {
        made(&p, 2, b"null", WireKind::CharDev, rustix::fs::makedev(1, 3));
        paths.push(b"null");
    }
    let nodes: Vec<PathBuf> = paths
        .iter()
        .map(|p| a.root().join(common::bytes_path(p)))
        .collect();
    let watch = OpenWatch::new(&nodes);
    let mut id = 10;
    for path in paths {
        let [hash, copy, delta, meta] = open_attempts(id, path);
        id += 10;
        p.refused(hash);
        p.refused(copy);
        match p.call(delta) {
            Reply::NoBase { id: got } => p.send(&req(Request::Abort { id: got })),
            other => panic!("Begin {} (delta): {other:?}", show(path)),
        }
        p.refused(meta);
    }
    watch.assert_never_opened("pull");
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("pull after open attempts", "without a report");
    assert!(!a.root().join("copy").exists());
    a.check();
}

// --- B11: the pull client enforces its own options ------------------------------------------

/// Stages `content` at `path` through the pull client and commits it; `xattrs` go with
/// its `End`.
fn pull_put(p: &Peer<Reply>, id: u64, path: &[u8], content: &[u8], xattrs: Vec<WireXattr>) {
    p.send(&req(begin(id, path, content.len() as u64, WireMode::Whole)));
    p.send(&req(data(id, 0, content)));
    let end = Request::End {
        id,
        hash: *blake3::hash(content).as_bytes(),
        meta: wmeta(WireKind::File, 0o644),
        xattrs,
    };
    let st = match p.call(end) {
        Reply::Staged { result: Ok(st), .. } => st,
        other => panic!("staging {}: {other:?}", show(path)),
    };
    match p.call(commit(id + 1, vec![st])) {
        Reply::Committed {
            result: Ok(failed), ..
        } if failed.is_empty() => {}
        other => panic!("committing {}: {other:?}", show(path)),
    }
}

#[test]
fn pull_without_delete_lets_the_sender_replace_entries_but_never_remove_one() {
    let a = Arena::in_tmp();
    let root = a.root();
    fs::create_dir(root.join("keep")).unwrap();
    fs::write(root.join("keep/inner"), b"inner").unwrap();
    fs::create_dir(root.join("gone")).unwrap();
    fs::write(root.join("gone/inner"), b"replaced").unwrap();
    let leftover = common::bytes_path(b".x.fsync-tmp.00000001").to_path_buf();
    fs::write(root.join(&leftover), b"leftover").unwrap();
    let (c, p) = pull_session(&a, &[]);
    // Deletes and moves need --delete.
    p.refused(op(1, remove(b"victim", WireKind::File)));
    p.refused(op(2, remove(b"a", WireKind::Dir)));
    p.refused(op(3, remove(b"keep/inner", WireKind::File)));
    p.refused(op(4, rename(b"victim", b"stolen")));
    p.refused(op(5, rename(b"f", b"victim")));
    // Making way is accepted, but what nothing replaces comes back at the end...
    let ok = |id, o| match p.call(op(id, o)) {
        Reply::Done { result: Ok(()), .. } => {}
        other => panic!("op {id}: {other:?}"),
    };
    ok(6, remove_tree(b"f"));
    // What is set aside looks like a leftover temporary file, but is not one.
    let aside: Vec<Vec<u8>> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .filter(|n| n.starts_with(b".f.fsync-tmp."))
        .collect();
    assert_eq!(aside.len(), 1, "f was not set aside: {aside:?}");
    p.refused(op(20, remove(&aside[0], WireKind::File)));
    p.refused(op(21, remove_tree(&aside[0])));
    ok(7, remove_tree(b"a"));
    // ... a directory "replaced" by a directory keeps its contents ...
    ok(8, remove_tree(b"keep"));
    ok(9, mkdir(b"keep"));
    // ... and a real replacement replaces.
    ok(10, remove_tree(b"gone"));
    pull_put(&p, 11, b"gone", b"a file now", vec![]);
    // Leftover temporary files of an interrupted run go whatever --delete says.
    ok(
        13,
        remove(
            common::bytes_path(b".x.fsync-tmp.00000001")
                .as_os_str()
                .as_bytes(),
            WireKind::File,
        ),
    );
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("pull after delete attempts", "without a report");
    assert_eq!(fs::read(root.join("victim")).unwrap(), b"victim data");
    assert_eq!(fs::read(root.join("f")).unwrap(), noise(1, 4096));
    assert!(root.join("a").is_dir(), "a was removed");
    assert_eq!(fs::read(root.join("keep/inner")).unwrap(), b"inner");
    assert_eq!(fs::read(root.join("gone")).unwrap(), b"a file now");
    assert!(!root.join("stolen").exists());
    assert!(
        !root.join(&leftover).exists(),
        "the leftover temp file stayed"
    );
    a.check();
}

#[test]
fn pull_with_delete_lets_the_sender_delete() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &["--delete"]);
    match p.call(op(1, remove(b"victim", WireKind::File))) {
        Reply::Done { result: Ok(()), .. } => {}
        other => panic!("remove victim with --delete: {other:?}"),
    }
    match p.call(op(2, remove_tree(b"a"))) {
        Reply::Done { result: Ok(()), .. } => {}
        other => panic!("remove a with --delete: {other:?}"),
    }
    p.close();
    let _ = c.finish(|| {});
    assert!(!a.root().join("victim").exists());
    assert!(!a.root().join("a").exists());
    a.check();
}

fn xattr_of(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut v[..]).ok()?;
    v.truncate(n);
    Some(v)
}

#[test]
fn pull_applies_no_extended_attributes_without_x() {
    let evil = || {
        vec![
            WireXattr(b"user.evil".to_vec(), b"1".to_vec()),
            WireXattr(b"trusted.evil".to_vec(), b"1".to_vec()),
            WireXattr(
                b"security.capability".to_vec(),
                vec![1, 0, 0, 2, 0, 0, 0, 0],
            ),
        ]
    };
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    pull_put(&p, 1, b"plain", b"content", evil());
    p.refused(op(3, set_dir_xattrs(b"a")));
    p.close();
    let _ = c.finish(|| {});
    let plain = a.root().join("plain");
    assert_eq!(fs::read(&plain).unwrap(), b"content");
    for name in ["user.evil", "trusted.evil", "security.capability"] {
        assert_eq!(xattr_of(&plain, name), None, "{name} was set without -X");
        assert_eq!(
            xattr_of(&a.root().join("a"), name),
            None,
            "{name} on a directory"
        );
    }
    a.check();
    // With -X they are the client's wish (where the filesystem takes them).
    let probe = a.root().join("probe");
    fs::write(&probe, b"").unwrap();
    let flags = rustix::fs::XattrFlags::empty();
    let xattrs = rustix::fs::lsetxattr(&probe, "user.probe", b"1", flags).is_ok();
    if !common::require(xattrs, "user extended attributes on the scratch filesystem") {
        return;
    }
    fs::remove_file(&probe).unwrap();
    let (c, p) = pull_session(&a, &["-X"]);
    let wanted = vec![WireXattr(b"user.wanted".to_vec(), b"1".to_vec())];
    pull_put(&p, 1, b"with", b"content", wanted);
    p.close();
    let _ = c.finish(|| {});
    assert_eq!(
        xattr_of(&a.root().join("with"), "user.wanted"),
        Some(b"1".to_vec())
    );
}

// --- B12: a receiver's strings never reach the terminal raw ---------------------------------

/// Text that would retitle or clear a terminal, forge a line, or read backwards.
const FORGERY: &str =
    "\x1b]0;owned\x07\x1b[2J\x1b[31m\u{9b}1m\rfsync-repl: forged\n\u{202e}txt.exe\u{2066}";

#[track_caller]
fn assert_no_raw_controls(what: &str, out: &Outcome) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && fsync_repl::text::is_unsafe(c))
            .collect();
        assert!(bad.is_empty(), "{what}: raw {bad:?} on {stream}: {text:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("fsync-repl: forged")),
            "{what}: a forged line on {stream}: {text:?}"
        );
    }
}

#[test]
fn push_escapes_every_string_the_receiver_sends() {
    let src = push_source();
    // Problems at the end of the listing.
    let dest = scratch();
    let tamper = replace_list_end(|id| {
        let problems = vec![(
            serde_bytes::ByteBuf::from(FORGERY.as_bytes().to_vec()),
            FORGERY.to_string(),
            false,
        )];
        let end = Reply::ListEnd {
            id,
            root: None,
            owners: false,
            problems,
        };
        vec![Out::Reply(end)]
    });
    let r = push_through(src.path(), dest.path(), &[], tamper);
    assert!(r.out.stderr.contains("\\x1b]0;owned"), "{:?}", r.out);
    assert_no_raw_controls("listing problems", &r.out);
    // The op and message of an error.
    let dest = scratch();
    let tamper = |r| match r {
        Reply::Staged { id, result: Ok(_) } => {
            let e = WireError::Os {
                errno: 5,
                op: FORGERY.into(),
                msg: FORGERY.into(),
            };
            vec![Out::Reply(Reply::Staged { id, result: Err(e) })]
        }
        Reply::Done { id, result: Ok(()) } => {
            let e = WireError::Os {
                errno: 0,
                op: FORGERY.into(),
                msg: FORGERY.into(),
            };
            vec![Out::Reply(Reply::Done { id, result: Err(e) })]
        }
        r => vec![Out::Reply(r)],
    };
    let r = push_through(src.path(), dest.path(), &[], tamper);
    assert_ne!(r.out.code, Some(0), "{:?}", r.out);
    assert!(r.out.stderr.contains("\\xe2\\x80\\xae"), "{:?}", r.out);
    assert_no_raw_controls("error texts", &r.out);
}

#[test]
fn pull_escapes_bidi_controls_in_the_senders_lines() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    p.send(&ToReceiver::Notice(Notice::Item(FORGERY.into())));
    p.send(&ToReceiver::Notice(Notice::Warn(FORGERY.into())));
    p.send(&ToReceiver::Notice(Notice::Failed {
        exit_code: 2,
        message: FORGERY.into(),
    }));
    p.close();
    let out = c.finish(|| {});
    assert_no_raw_controls("pull notices", &out);
    assert!(out.stdout.contains("\\xe2\\x80\\xae"), "{out:?}");
    a.check();
}

// --- A7: the reserve holds against a storm of files in flight --------------------------------

/// Free bytes of the filesystem holding `p`.
fn avail(p: &Path) -> u64 {
    let s = rustix::fs::statvfs(p).expect("statvfs");
    s.f_bavail * s.f_frsize
}

/// A 20 MiB tmpfs of this test's own (root), or `None` when it cannot be had (a failure
/// under CI).
fn small_tmpfs() -> Option<(tempfile::TempDir, common::Mounted)> {
    if !common::require(common::is_root(), "mounting a tmpfs needs root") {
        return None;
    }
    let mnt = tempfile::tempdir().expect("tempdir");
    let mounted = common::mount_tmpfs(mnt.path(), "size=20m");
    common::require(mounted.is_some(), "mount -t tmpfs").then(|| (mnt, mounted.expect("mounted")))
}

/// Files announced one after another, none written yet, each fitting the free space on
/// its own: the receiver counts what the files in flight will take, and a local copy
/// too, so the reserve holds; and every temporary file goes when the session ends, even
/// one staged and never committed by a session that ended normally.
#[test]
fn serve_counts_files_in_flight_against_its_reserve_and_cleans_up_at_the_end() {
    let Some((mnt, _mounted)) = small_tmpfs() else {
        return;
    };
    let a = Arena::in_dir(tempfile::tempdir_in(mnt.path()).expect("tempdir"));
    fs::write(a.root().join("big"), noise(3, 5 << 20)).expect("big");
    let free = avail(mnt.path());
    // Each fits on its own (with the 1 MiB default reserve), three together do not.
    let each = free / 3;
    let mut s = Serve::connect(&a);
    s.send(begin(1, b"one", each, WireMode::Whole));
    s.send(begin(2, b"two", each, WireMode::Whole));
    assert!(s.sync().is_empty(), "the first two files were refused");
    s.send(begin(3, b"three", each, WireMode::Whole));
    match s.sync().as_slice() {
        [Reply::Staged {
            id: 3,
            result: Err(WireError::NoSpace),
        }] => {}
        other => s.fail(&format!("the third file in flight: {other:?}")),
    }
    // 5 MiB more than fit above the reserve beside the two files in flight.
    match s.staged(local_copy(4, b"copy", b"big")) {
        Err(WireError::NoSpace) => {}
        other => s.fail(&format!("a local copy past the reserve: {other:?}")),
    }
    // File one is written and staged, file two stays in flight; neither is committed.
    let content = noise(4, each as usize);
    for (k, chunk) in content.chunks(1 << 20).enumerate() {
        s.send(data(1, (k << 20) as u64, chunk));
    }
    if let Err(e) = s.staged(end(1, &content, WireKind::File)) {
        s.fail(&format!("staging file one: {e:?}"));
    }
    s.send(data(2, 0, &content[..1 << 20]));
    assert!(s.sync().is_empty());
    assert_eq!(temps_in(&a.root()).len(), 2, "{:?}", temps_in(&a.root()));
    s.finish().assert_ok("a storm of files in flight");
    a.check();
    for n in ["one", "two", "three", "copy"] {
        assert!(!a.root().join(n).exists(), "{n} was put in place");
    }
    assert!(avail(mnt.path()) >= free, "space was not given back");
}

// --- B13: a listing without end ---------------------------------------------------------------

#[test]
fn push_refuses_a_listing_past_its_bound() {
    let src = push_source();
    // `n` files at DEST's root, pushed with `--max-listing bound` into `dest`.
    let listing_of = |n: usize, bound: &str, dest: &Path| {
        let entries = (0..n)
            .map(|k| entry(format!("n{k:05}").as_bytes(), WireKind::File))
            .collect();
        let args = ["--max-listing", bound];
        push_through(src.path(), dest, &args, inject_listing(entries))
    };
    // By count: 1,500 entries where 1,000 are accepted.
    let dest = scratch();
    let r = listing_of(1500, "1000", dest.path());
    r.out
        .assert_refused("a listing of 1,500 entries", "more than 1000 entries");
    // Into a replica, whose listing is gathered packed while SRC is walked: refused as
    // well, by what it takes packed or by its count.
    for bound in ["10", "1000"] {
        let dest = scratch();
        common::push_ok(common::Transport::Local, src.path(), dest.path(), &[]);
        let r = listing_of(1500, bound, dest.path());
        r.out
            .assert_refused("a listing of 1,500 entries into a replica", "more than");
    }
    // By memory: 100 entries of 4 KB names where 1,000 × 256 bytes are accepted.
    let long = |k: usize| {
        let part = "x".repeat(249);
        let mut p = format!("{k:03}");
        for _ in 0..16 {
            p.push('/');
            p.push_str(&part);
        }
        entry(p.as_bytes(), WireKind::File)
    };
    let dest = scratch();
    let r = push_through(
        src.path(),
        dest.path(),
        &["--max-listing", "1000"],
        inject_listing((0..100).map(long).collect()),
    );
    r.out
        .assert_refused("a listing of long names", "bytes of entries");
    assert!(!r.acted(), "the client acted on a refused listing");
    // Within the bound, the same listing is taken.
    let dest = scratch();
    let r = listing_of(10, "1000", dest.path());
    assert_eq!(r.out.code, Some(0), "{:?}", r.out);
}

// --- B14: the pull client against a sender that stops reading, or storms its reserve -------

#[test]
fn pull_ends_when_the_sender_stops_reading() {
    let a = Arena::in_tmp();
    let mut c = Client::spawn(&pull_args(&a.root(), &[], "2"));
    let (mut to, mut from) = c.connect();
    read_hello(&mut from).expect("the client's handshake");
    to.write_all(&hello()).expect("handshake");
    // A file in flight, then requests whose answers are never read: the client's
    // answers fill the pipe.
    to.write_all(&frame(&req(begin(1, b"partial", 1 << 20, WireMode::Whole))))
        .expect("begin");
    to.write_all(&frame(&req(data(1, 0, &[7; 4096]))))
        .expect("data");
    // Until the client stops reading them: its answers are gathered and compressed,
    // so filling the pipe takes many.
    let flood = thread::spawn(move || {
        let mut id = 10u64;
        loop {
            let mut many = Vec::new();
            for _ in 0..10_000 {
                many.extend(frame(&req(Request::Space { id })));
                id += 1;
            }
            if to.write_all(&many).is_err() {
                return to;
            }
        }
    });
    let out = c.finish(|| {});
    drop(from);
    drop(flood.join());
    out.assert_refused(
        "a sender that stops reading",
        "has not read anything for 2 s",
    );
    a.check();
}

#[test]
fn pull_counts_files_in_flight_against_its_reserve() {
    let Some((mnt, _mounted)) = small_tmpfs() else {
        return;
    };
    let a = Arena::in_dir(tempfile::tempdir_in(mnt.path()).expect("tempdir"));
    fs::write(a.root().join("big"), noise(3, 5 << 20)).expect("big");
    let each = avail(mnt.path()) / 3;
    let (c, p) = pull_session(&a, &[]);
    p.send(&req(begin(1, b"one", each, WireMode::Whole)));
    p.send(&req(begin(2, b"two", each, WireMode::Whole)));
    match p.call(begin(3, b"three", each, WireMode::Whole)) {
        Reply::Staged {
            id: 3,
            result: Err(WireError::NoSpace),
        } => {}
        other => panic!("the third file in flight: {other:?}"),
    }
    match p.call(local_copy(4, b"copy", b"big")) {
        Reply::Staged {
            result: Err(WireError::NoSpace),
            ..
        } => {}
        other => panic!("a local copy past the reserve: {other:?}"),
    }
    p.send(&req(data(1, 0, &noise(4, 1 << 20))));
    p.close();
    let out = c.finish(|| {});
    out.assert_refused("pull after a storm", "without a report");
    a.check();
    for n in ["one", "two", "three", "copy"] {
        assert!(!a.root().join(n).exists(), "{n} was put in place");
    }
}

#[test]
fn pull_keeps_a_senders_report_to_documented_exit_codes_and_escaped_errors() {
    let a = Arena::in_tmp();
    let (c, p) = pull_session(&a, &[]);
    let report = fsync_repl::report::Report {
        exit_code: 137,
        errors: vec![FORGERY.to_string()],
        ..Default::default()
    };
    let json = serde_json::to_string(&report).expect("json");
    p.send(&ToReceiver::Notice(Notice::Report(json)));
    p.close();
    let out = c.finish(|| {});
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_no_raw_controls("a sender's report", &out);
    assert!(out.stderr.contains("\\x1b]0;owned"), "{out:?}");
    a.check();
}

//! Hung peers: a remote side that goes silent after the handshake, one that never
//! handshakes, one that stops reading, and a remote shell that forks instead of
//! exec'ing, so that a grandchild holds the pipes (as with a wrapper script, sudo or
//! sshpass). Every session must end by itself within the test's own deadline, with exit
//! code 2 and one line that names the timeout; no process of the remote shell's group may
//! outlive the client, and a receiving side leaves no temporary file behind.

mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fsync_repl::protocol::frame::{read_frame, read_hello, write_frame, write_hello};
use fsync_repl::protocol::zstream::ZReader;
use fsync_repl::protocol::{Notice, Reply, Request, ToReceiver, WireMode};

const BIN: &str = env!("CARGO_BIN_EXE_fsync-repl");

/// How long any process of a test may take before the test gives up on it (and fails).
const DEADLINE: Duration = Duration::from_secs(25);

/// How soon the remote shell's processes must be gone once the client has exited.
const QUICK: Duration = Duration::from_secs(5);

/// A remote shell that forks: the script starts `sh` as a child (no exec), and that
/// child writes the handshake (or nothing), then neither reads nor writes, nor exits when
/// its input closes: a hung host behind a wrapper. Each start appends the two pids.
struct SilentShell {
    dir: tempfile::TempDir,
}

impl SilentShell {
    fn new(handshake: bool) -> SilentShell {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut hello = Vec::new();
        if handshake {
            write_hello(&mut hello).expect("encode the handshake");
        }
        fs::write(dir.path().join("hello.bin"), hello).expect("write");
        let script = format!(
            "#!/bin/sh\n\
             d='{}'\n\
             echo $$ >> \"$d/pids\"\n\
             sh -c 'echo $$ >> \"$1/pids\"; cat \"$1/hello.bin\"; exec sleep 120' sh \"$d\"\n",
            dir.path().display()
        );
        let path = dir.path().join("rsh");
        fs::write(&path, script).expect("write");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        SilentShell { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("rsh")
    }

    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.path().join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Remote shells started so far.
    fn sessions(&self) -> usize {
        self.pids().len() / 2
    }

    /// Asserts that no process the remote shells started is still running.
    #[track_caller]
    fn assert_all_gone(&self) {
        let pids = self.pids();
        assert!(!pids.is_empty(), "the remote shell never ran");
        let start = Instant::now();
        while pids.iter().any(|&p| alive(p)) {
            assert!(
                start.elapsed() < QUICK,
                "processes of the remote shell outlived the client: {:?}",
                pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SilentShell {
    fn drop(&mut self) {
        for p in self.pids() {
            if alive(p) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(p).expect("pid"),
                    rustix::process::Signal::KILL,
                );
            }
        }
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// How a process ended.
#[derive(Debug)]
struct Ended {
    code: Option<i32>,
    stderr: String,
}

fn collect(mut r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        let _ = tx.send(String::from_utf8_lossy(&v).into_owned());
    });
    rx
}

/// Waits for `child` until `deadline`; kills it and fails past it.
fn wait_bounded(mut child: Child, deadline: Duration, what: &str) -> Ended {
    // Drained so that the process never blocks on a full pipe.
    let _stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.and_then(|e| e.recv_timeout(QUICK).ok());
            panic!("{what}: still running after {deadline:?}; stderr:\n{err:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = |r: Option<mpsc::Receiver<String>>| {
        r.and_then(|r| r.recv_timeout(QUICK).ok())
            .unwrap_or_default()
    };
    Ended {
        code: status.code(),
        stderr: text(stderr),
    }
}

/// Asserts exit code 2 and one line of error that mentions `mentions`.
#[track_caller]
fn assert_one_line_error(what: &str, e: &Ended, mentions: &str) {
    assert!(!e.stderr.contains("panicked"), "{what}: panicked:\n{e:?}");
    assert_eq!(e.code, Some(2), "{what}: exit code: {e:?}");
    let lines: Vec<&str> = e.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: want one line of error: {e:?}");
    assert!(
        lines[0].contains(mentions),
        "{what}: want {mentions:?}: {e:?}"
    );
}

fn client(verb: &str, shell: &SilentShell, timeout: &str) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.arg(verb)
        .arg("--rsh")
        .arg(shell.path())
        .args([
            "--remote-bin",
            "/nonexistent/fsync-repl",
            "--timeout",
            timeout,
        ])
        .env_remove("FSYNC_REPL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn push_ends_when_the_remote_side_goes_silent_behind_a_forking_shell() {
    let src = Tree::new();
    src.file("f", b"data");
    let shell = SilentShell::new(true);
    let child = client("push", &shell, "2")
        .arg(src.path())
        .arg("testhost:/nonexistent/dest")
        .spawn()
        .expect("start push");
    let e = wait_bounded(child, DEADLINE, "push to a silent peer");
    assert_one_line_error("push to a silent peer", &e, "--timeout");
    shell.assert_all_gone();
}

#[test]
fn pull_ends_when_the_remote_side_goes_silent_behind_a_forking_shell() {
    let dest = Tree::new();
    let shell = SilentShell::new(true);
    let child = client("pull", &shell, "2")
        .arg("testhost:/nonexistent/src")
        .arg(dest.join("r"))
        .spawn()
        .expect("start pull");
    let e = wait_bounded(child, DEADLINE, "pull from a silent peer");
    assert_one_line_error("pull from a silent peer", &e, "stayed silent for 2 s");
    shell.assert_all_gone();
    assert!(temp_files(dest.path()).is_empty());
}

#[test]
fn pull_caps_the_handshake_at_30_seconds_whatever_the_timeout() {
    let dest = Tree::new();
    let shell = SilentShell::new(false);
    // --timeout 0: never time out a session; the handshake still has 30 s.
    let child = client("pull", &shell, "0")
        .arg("testhost:/nonexistent/src")
        .arg(dest.join("r"))
        .spawn()
        .expect("start pull");
    let e = wait_bounded(child, Duration::from_secs(60), "pull without a handshake");
    assert_one_line_error("pull without a handshake", &e, "within 30 s");
    shell.assert_all_gone();
}

#[test]
fn watch_keeps_retrying_a_remote_side_that_goes_silent() {
    let src = Tree::new();
    src.file("f", b"data");
    let shell = SilentShell::new(true);
    let logs = tempfile::tempdir().expect("tempdir");
    let mut child = client("watch", &shell, "1")
        .args(["--retry-min", "100ms", "--retry-max", "500ms"])
        .arg("--state-file")
        .arg(logs.path().join("state.json"))
        .arg(src.path())
        .arg("testhost:/nonexistent/dest")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start watch");
    // Each session fails after the 1 s timeout and a new one starts after the back-off.
    let start = Instant::now();
    while shell.sessions() < 3 {
        if start.elapsed() > DEADLINE || child.try_wait().expect("try_wait").is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "watch started {} sessions in {DEADLINE:?}; it stopped retrying",
                shell.sessions()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let e = wait_bounded(child, DEADLINE, "watch after SIGTERM");
    assert!(matches!(e.code, Some(0 | 20)), "{e:?}");
    shell.assert_all_gone();
}

// ---------------------------------------------------------------------------------------
// `serve` and `serve --send` against a client that goes silent or stops reading
// ---------------------------------------------------------------------------------------

/// A `fsync-repl serve` process with the handshake done, read and written by the test.
struct Serve {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Option<ZReader<std::process::ChildStdout>>,
    buf: Vec<u8>,
}

impl Serve {
    fn start(args: &[&str], root: &Path) -> Serve {
        let mut child = std::process::Command::new(BIN)
            .arg("serve")
            .args(args)
            .arg(root)
            .env_remove("FSYNC_REPL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let mut stdin = child.stdin.take();
        let mut out = child.stdout.take();
        let w = stdin.as_mut().expect("stdin");
        write_hello(w).expect("handshake");
        read_hello(out.as_mut().expect("stdout")).expect("the handshake of serve");
        Serve {
            child,
            stdin,
            out: out.map(ZReader::new),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, m: &ToReceiver) {
        let w = self.stdin.as_mut().expect("stdin");
        write_frame(w, m).expect("write a frame");
        w.flush().expect("flush");
    }

    fn next<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let r = self.out.as_mut().expect("stdout");
        read_frame(r, &mut self.buf).expect("read a frame")
    }
}

fn req(r: Request) -> ToReceiver {
    ToReceiver::Request(r)
}

fn scratch_root() -> (tempfile::TempDir, PathBuf) {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("root");
    fs::create_dir(&root).expect("mkdir");
    (base, root)
}

/// A file in flight: `Begin` and half its data.
fn half_a_file(s: &mut Serve) {
    s.send(&req(Request::Begin {
        id: 1,
        path: b"partial".to_vec(),
        size: 1 << 20,
        mode: WireMode::Whole,
    }));
    s.send(&req(Request::Data {
        id: 1,
        offset: 0,
        zstd: false,
        data: vec![7; 512 << 10],
    }));
}

#[test]
fn serve_ends_when_its_client_goes_silent_and_removes_its_temp_files() {
    let (_base, root) = scratch_root();
    let mut s = Serve::start(&["--timeout", "2"], &root);
    half_a_file(&mut s);
    // Ordered after the data: by its answer the temporary file exists.
    s.send(&req(Request::Space { id: 2 }));
    assert!(matches!(
        s.next::<Reply>(),
        Some(Reply::Space { id: 2, .. })
    ));
    assert_eq!(
        temp_files(&root).len(),
        1,
        "the file in flight has its temp file"
    );
    let stdin = s.stdin.take();
    let e = wait_bounded(s.child, DEADLINE, "serve with a silent client");
    drop(stdin);
    assert_one_line_error("serve with a silent client", &e, "for 2 s (--timeout)");
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
}

#[test]
fn serve_ends_when_its_client_stops_reading_and_removes_its_temp_files() {
    let (_base, root) = scratch_root();
    let mut s = Serve::start(&["--timeout", "2"], &root);
    half_a_file(&mut s);
    // Requests until serve stops reading them, none of whose answers is read: serve's
    // output pipe fills up (its answers are gathered and compressed, so that takes many).
    let mut stdin = s.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let mut id = 10u64;
        loop {
            let mut flood = Vec::new();
            for _ in 0..10_000 {
                write_frame(&mut flood, &req(Request::Space { id })).expect("encode");
                id += 1;
            }
            if stdin.write_all(&flood).is_err() {
                return stdin;
            }
        }
    });
    let out = s.out.take();
    let e = wait_bounded(s.child, DEADLINE, "serve with a client that stops reading");
    drop(out);
    drop(writer.join());
    assert_one_line_error(
        "serve with a client that stops reading",
        &e,
        "has not read anything for 2 s",
    );
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
}

/// Answers what `serve --send` asks of a receiver with an empty DEST, until it begins a
/// file; returns that file's id.
fn receive_until_begin(s: &mut Serve) -> u64 {
    loop {
        let m: ToReceiver = s.next().expect("serve --send ended early");
        let reply = match m {
            ToReceiver::Request(Request::Begin { id, .. }) => return id,
            ToReceiver::Request(ref r) => match peer::routine_answer(r) {
                Some(a) => a,
                None => continue,
            },
            _ => continue,
        };
        write_reply(s, &reply);
    }
}

#[test]
fn serve_send_ends_when_its_client_stops_reading() {
    let (_base, root) = scratch_root();
    fs::write(root.join("big"), vec![3u8; 32 << 20]).expect("write");
    let mut s = Serve::start(&["--send", "--timeout", "2", "-W"], &root);
    let _ = receive_until_begin(&mut s);
    // Stop reading: the file's data fills the pipe.
    let (stdin, out) = (s.stdin.take(), s.out.take());
    let e = wait_bounded(
        s.child,
        DEADLINE,
        "serve --send with a client that stops reading",
    );
    drop((stdin, out));
    assert_one_line_error(
        "serve --send with a client that stops reading",
        &e,
        "has not read anything for 2 s",
    );
}

#[test]
fn serve_send_reports_a_failed_session_and_exits_with_its_code() {
    let (_base, root) = scratch_root();
    fs::write(root.join("f"), b"data").expect("write");
    let mut s = Serve::start(&["--send", "--timeout", "30"], &root);
    // The listing is answered with something else: the session fails on a protocol error
    // while the client still reads. (First the sender asks for the source record.)
    match s.next::<ToReceiver>() {
        Some(ToReceiver::Request(Request::SourceRecord { id })) => write_reply(
            &mut s,
            &Reply::Record {
                id,
                result: Ok(None),
            },
        ),
        other => panic!("want a source record request, got {other:?}"),
    }
    let id = match s.next::<ToReceiver>() {
        Some(ToReceiver::Request(Request::List { id, .. })) => id,
        other => panic!("want a listing request, got {other:?}"),
    };
    write_reply(&mut s, &Reply::NoBase { id });
    let mut failed = None;
    while let Some(m) = s.next::<ToReceiver>() {
        if let ToReceiver::Notice(Notice::Failed { exit_code, message }) = m {
            failed = Some((exit_code, message));
        }
    }
    let stdin = s.stdin.take();
    drop(stdin);
    let e = wait_bounded(s.child, DEADLINE, "serve --send after a failed session");
    let (code, message) = failed.unwrap_or_else(|| panic!("no failure notice: {e:?}"));
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("unexpected answer"), "{message}");
    assert_eq!(e.code, Some(2), "{e:?}");
    assert!(!e.stderr.contains("panicked"), "{e:?}");
}

fn write_reply(s: &mut Serve, r: &Reply) {
    let w = s.stdin.as_mut().expect("stdin");
    write_frame(w, r).expect("write a reply");
    w.flush().expect("flush");
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// Sends SIGINT to `child` once its silent remote shell has started; the client must
/// end with exit 20, every process of the shell's group gone.
fn interrupt_once_started(child: Child, shell: &SilentShell, what: &str) {
    let start = Instant::now();
    while shell.sessions() < 1 {
        assert!(start.elapsed() < DEADLINE, "the remote shell never started");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    signal(child.id(), rustix::process::Signal::INT);
    let e = wait_bounded(child, DEADLINE, what);
    assert_eq!(e.code, Some(20), "{e:?}");
    shell.assert_all_gone();
}

#[test]
fn sigint_ends_a_pull_whose_remote_side_is_silent() {
    let dest = Tree::new();
    let shell = SilentShell::new(true);
    let child = client("pull", &shell, "600")
        .arg("testhost:/nonexistent/src")
        .arg(dest.join("r"))
        .spawn()
        .expect("start pull");
    // The terminal's Ctrl-C reaches the client's process group only: the remote shell,
    // in a group of its own, never sees it.
    interrupt_once_started(child, &shell, "pull after SIGINT");
    assert!(temp_files(dest.path()).is_empty());
}

#[test]
fn sigterm_ends_serve_at_once_and_removes_its_temp_files() {
    let (_base, root) = scratch_root();
    let mut s = Serve::start(&["--timeout", "600"], &root);
    half_a_file(&mut s);
    s.send(&req(Request::Space { id: 2 }));
    assert!(matches!(
        s.next::<Reply>(),
        Some(Reply::Space { id: 2, .. })
    ));
    assert_eq!(temp_files(&root).len(), 1);
    signal(s.child.id(), rustix::process::Signal::TERM);
    let stdin = s.stdin.take();
    let e = wait_bounded(s.child, DEADLINE, "serve after SIGTERM");
    drop(stdin);
    assert_eq!(e.code, Some(20), "{e:?}");
    assert!(temp_files(&root).is_empty(), "{:?}", temp_files(&root));
}

#[test]
fn sigint_ends_a_push_whose_remote_side_is_silent() {
    let src = Tree::new();
    src.file("f", b"data");
    let shell = SilentShell::new(true);
    let child = client("push", &shell, "600")
        .arg(src.path())
        .arg("testhost:/nonexistent/dest")
        .spawn()
        .expect("start push");
    interrupt_once_started(child, &shell, "push after SIGINT");
}

#[test]
fn serve_whose_output_has_no_reader_ends() {
    let (_base, root) = scratch_root();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--timeout", "600"])
        .arg(&root)
        .env_remove("FSYNC_REPL_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    // Nobody will ever read what serve writes; its input stays open.
    drop(child.stdout.take());
    let stdin = child.stdin.take();
    let e = wait_bounded(child, DEADLINE, "serve without a reader");
    drop(stdin);
    assert!(!e.stderr.contains("panicked"), "{e:?}");
    assert_ne!(e.code, Some(0), "{e:?}");
}

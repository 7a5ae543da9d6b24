//! `fsync-repl watch`: real inotify and fanotify, real files, a real process; local and
//! remote DEST.
//!
//! Every test starts the watcher, waits for the initial push to converge, makes a
//! change and polls (with a generous deadline) until DEST matches SRC again, then
//! asserts what must hold on the way (renames stay renames, nothing is deleted when the
//! source root vanishes, the session is reused, the state file says the truth).

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Tests that lower a system-wide inotify limit hold this exclusively; every other test
/// holds it shared, so none starts a watcher under a limit meant for another.
static LIMITS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_limits() -> std::sync::RwLockReadGuard<'static, ()> {
    LIMITS.read().unwrap_or_else(|p| p.into_inner())
}

/// A running `fsync-repl watch`, killed when dropped.
struct Watch {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    state: PathBuf,
    _logs: tempfile::TempDir,
}

impl Watch {
    fn start(t: Transport, src: &Path, dst: &Path, args: &[&str]) -> Watch {
        Watch::start_in(t, src, dst, args, None)
    }

    /// With `state_home`, the default state file under it instead of `--state-file`.
    fn start_in(
        t: Transport,
        src: &Path,
        dst: &Path,
        args: &[&str],
        state_home: Option<&Path>,
    ) -> Watch {
        let logs = tempfile::tempdir().unwrap();
        // A test that restarts a watch names the state file itself.
        let given = args
            .iter()
            .position(|&a| a == "--state-file")
            .map(|i| PathBuf::from(args[i + 1]));
        let (out, err, state) = (
            logs.path().join("out"),
            logs.path().join("err"),
            given
                .clone()
                .unwrap_or_else(|| logs.path().join("state.json")),
        );
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"));
        c.arg("watch")
            .args(["--retry-min", "100ms", "--retry-max", "1s"])
            .args(args);
        match state_home {
            Some(h) => c.env("XDG_STATE_HOME", h),
            None if given.is_none() => c.arg("--state-file").arg(&state),
            None => &mut c,
        };
        match t {
            Transport::Local => c.arg(src).arg(dst),
            Transport::Rsh => c.args(rsh_args()).arg(src).arg(remote(dst)),
        };
        let child = c
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .expect("start fsync-repl watch");
        Watch {
            child,
            out,
            err,
            state,
            _logs: logs,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn state(&self) -> serde_json::Value {
        let out = bin()
            .arg("status")
            .arg("--json")
            .arg("--state-file")
            .arg(&self.state)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "status failed: {out:?}");
        json(&out)
    }

    /// The state, or `Null` before the watcher wrote its first one.
    fn try_state(&self) -> serde_json::Value {
        if self.state.exists() {
            self.state()
        } else {
            serde_json::Value::Null
        }
    }

    /// Waits until `cond` holds, failing with the watcher's output past the deadline.
    fn until(&mut self, what: &str, mut cond: impl FnMut(&Watch) -> bool) {
        let end = Instant::now() + DEADLINE;
        while !cond(self) {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "watch exited with {s} while waiting for {what}\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until DEST is an exact replica of SRC.
    fn converge(&mut self, src: &Path, dst: &Path) {
        let mut last = Vec::new();
        let end = Instant::now() + DEADLINE;
        loop {
            if dst.exists() {
                // The comparer panics when an entry vanishes under it (the watcher is
                // renaming temporary files into place): that is "not yet".
                match std::panic::catch_unwind(|| tree_diff(src, dst)) {
                    Ok(d) if d.is_empty() => return,
                    Ok(d) => last = d,
                    Err(_) => last = vec!["(the tree changed while it was compared)".into()],
                }
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("watch exited with {s}\n{}", self.stderr());
            }
            assert!(
                Instant::now() < end,
                "DEST did not converge: {last:#?}\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the process to end; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < end,
                "watch did not exit\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: a plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends SIGSTOP and returns once every thread of the watch shows state `T` in
    /// /proc (a signal is delivered asynchronously: until then a thread may still run).
    fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.id();
        let states = || -> Vec<(String, char)> {
            fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|t| {
                            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
                            let state = stat[stat.rfind(") ")? + 2..].chars().next()?;
                            Some((t.file_name().to_string_lossy().into_owned(), state))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = states();
            if !seen.is_empty() && seen.iter().all(|(_, s)| *s == 'T') {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the watch did not stop: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

fn sh(script: &str, dir: &Path) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// A source and a destination directory side by side.
fn pair() -> (Tree, PathBuf, PathBuf) {
    let t = Tree::new();
    let (src, dst) = (t.join("src"), t.join("dst"));
    fs::create_dir(&src).unwrap();
    (t, src, dst)
}

#[test]
fn initial_push_then_every_kind_of_change_through_one_session() {
    let _limits = shared_limits();
    for &t in TRANSPORTS {
        let (_t, src, dst) = pair();
        fs::create_dir_all(src.join("docs/old")).unwrap();
        fs::write(src.join("docs/a.txt"), b"alpha").unwrap();
        fs::write(src.join("docs/old/gone.txt"), b"bye").unwrap();
        fs::write(src.join("top.txt"), b"top").unwrap();
        let mut w = Watch::start(t, &src, &dst, &[]);
        w.converge(&src, &dst);
        let top = ino(&dst.join("top.txt"));

        fs::write(src.join("docs/a.txt"), b"alpha, longer now").unwrap();
        fs::write(src.join("docs/new.txt"), b"new").unwrap();
        fs::remove_file(src.join("docs/old/gone.txt")).unwrap();
        fs::set_permissions(
            src.join("top.txt"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("docs/link")).unwrap();
        w.converge(&src, &dst);
        assert_eq!(
            ino(&dst.join("top.txt")),
            top,
            "{t:?}: a chmod rewrote the file"
        );

        fs::remove_dir_all(src.join("docs/old")).unwrap();
        fs::write(src.join("later.txt"), b"later").unwrap();
        w.converge(&src, &dst);
        w.until("the state file to record the batches", |w| {
            w_state_batches(w) >= 2
        });
        let st = w.state();
        let want_sessions = if t == Transport::Rsh { 1 } else { 0 };
        assert_eq!(st["sessions"], want_sessions, "{t:?}: {st}");
        assert_eq!(st["running"], true);
        assert!(st["last_success"].as_u64().is_some(), "{st}");
    }
}

fn w_state_batches(w: &Watch) -> u64 {
    w.try_state()["batches"].as_u64().unwrap_or(0)
}

#[test]
fn directory_trees_created_before_their_watch_are_replicated() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    let outside = t.join("outside");
    fs::create_dir_all(outside.join("p/q/r")).unwrap();
    for i in 0..50 {
        fs::write(outside.join(format!("p/q/r/f{i}")), format!("{i}")).unwrap();
    }
    fs::write(outside.join("p/top"), b"t").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    sh("mkdir -p a/b/c && touch a/b/c/f && echo x > a/b/c/g", &src);
    sh(&format!("cp -a {}/p .", outside.display()), &src);
    w.converge(&src, &dst);
    assert_eq!(fs::read(dst.join("p/q/r/f49")).unwrap(), b"49");
    assert!(dst.join("a/b/c/f").is_file());
}

#[test]
fn renames_inside_src_are_renames_on_dest() {
    let _limits = shared_limits();
    for &t in TRANSPORTS {
        let (_t, src, dst) = pair();
        fs::create_dir_all(src.join("a")).unwrap();
        fs::create_dir_all(src.join("b")).unwrap();
        fs::create_dir_all(src.join("dir/sub")).unwrap();
        fs::write(src.join("a/f"), vec![7u8; 100_000]).unwrap();
        fs::write(src.join("one"), b"chain").unwrap();
        fs::write(src.join("dir/sub/x"), b"in a directory").unwrap();
        let mut w = Watch::start(t, &src, &dst, &["-i"]);
        w.converge(&src, &dst);
        let (f, one, x) = (
            ino(&dst.join("a/f")),
            ino(&dst.join("one")),
            ino(&dst.join("dir/sub/x")),
        );

        // Between two directories.
        fs::rename(src.join("a/f"), src.join("b/f")).unwrap();
        w.converge(&src, &dst);
        assert_eq!(
            ino(&dst.join("b/f")),
            f,
            "{t:?}: b/f was copied, not renamed"
        );

        // a -> b -> c within one window.
        fs::rename(src.join("one"), src.join("two")).unwrap();
        fs::rename(src.join("two"), src.join("three")).unwrap();
        w.converge(&src, &dst);
        assert_eq!(ino(&dst.join("three")), one, "{t:?}: chain of renames");

        // A directory.
        fs::rename(src.join("dir"), src.join("renamed")).unwrap();
        w.converge(&src, &dst);
        assert_eq!(
            ino(&dst.join("renamed/sub/x")),
            x,
            "{t:?}: directory rename"
        );
        assert!(
            w.stdout().contains("~f b/f <= a/f"),
            "{t:?}: itemized output:\n{}",
            w.stdout()
        );
    }
}

#[test]
fn hard_links_outside_the_batch_and_a_replaced_dest_are_reconciled() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/x"), b"shared content").unwrap();
    fs::hard_link(src.join("a/x"), src.join("b/y")).unwrap();
    fs::write(src.join("c"), b"c").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    // Written in place through one name: the event names a/x only, b/y changes too.
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("a/x"))
        .unwrap()
        .write_all_at(b"SHARED", 0)
        .unwrap();
    w.converge(&src, &dst);
    assert_eq!(ino(&dst.join("a/x")), ino(&dst.join("b/y")));

    // DEST replaced by an empty directory (a new disk mounted, say): the next change
    // brings all of it back, not only that change.
    fs::rename(&dst, t.join("old-dst")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("c"), b"changed").unwrap();
    w.converge(&src, &dst);
}

#[test]
fn moves_out_of_src_delete_and_moves_in_copy() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    let outside = t.join("outside");
    fs::create_dir_all(outside.join("incoming/deep")).unwrap();
    fs::write(outside.join("incoming/deep/file"), b"arrived").unwrap();
    fs::create_dir_all(src.join("leaving/deep")).unwrap();
    fs::write(src.join("leaving/deep/file"), b"leaves").unwrap();
    fs::write(src.join("single"), b"single").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    fs::rename(src.join("leaving"), t.join("left")).unwrap();
    fs::rename(src.join("single"), t.join("single")).unwrap();
    fs::rename(outside.join("incoming"), src.join("incoming")).unwrap();
    w.converge(&src, &dst);
    assert!(!dst.join("leaving").exists() && !dst.join("single").exists());
    assert_eq!(
        fs::read(dst.join("incoming/deep/file")).unwrap(),
        b"arrived"
    );
    // A directory moved in keeps being watched under its new name.
    fs::write(src.join("incoming/deep/more"), b"more").unwrap();
    w.converge(&src, &dst);
    // A top-level directory deleted and made again is watched again.
    fs::remove_dir_all(src.join("incoming")).unwrap();
    w.converge(&src, &dst);
    fs::create_dir(src.join("incoming")).unwrap();
    w.converge(&src, &dst);
    fs::write(src.join("incoming/again"), b"again").unwrap();
    w.converge(&src, &dst);
}

#[test]
fn editor_saves_and_files_still_being_written_converge() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::write(src.join("notes.txt"), b"version 1").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    // Write a temporary file, then rename it over the original.
    fs::write(src.join(".notes.txt.swp"), b"version 2, saved by an editor").unwrap();
    fs::rename(src.join(".notes.txt.swp"), src.join("notes.txt")).unwrap();
    w.converge(&src, &dst);
    assert_eq!(
        fs::read(dst.join("notes.txt")).unwrap(),
        b"version 2, saved by an editor"
    );
    // A file written in pieces for longer than the debounce delay.
    {
        use std::io::Write;
        let mut f = fs::File::create(src.join("growing.log")).unwrap();
        for i in 0..40 {
            writeln!(f, "line {i} {}", "x".repeat(1000)).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    w.converge(&src, &dst);
}

#[test]
fn a_vanished_source_root_stops_with_exit_3_and_dest_untouched() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    fs::create_dir_all(src.join("keep/me")).unwrap();
    fs::write(src.join("keep/me/file"), b"precious").unwrap();
    fs::write(src.join("also"), b"precious too").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    let moved = t.join("moved-away");
    fs::rename(&src, &moved).unwrap();
    assert_eq!(w.wait_exit(), Some(3), "{}", w.stderr());
    assert!(w.stderr().contains("source root"), "{}", w.stderr());
    assert_same_tree(&moved, &dst);

    // rm -rf of the root, files first: still no delete-everything.
    fs::rename(&moved, &src).unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    // DEST already matches: wait for the initial push itself to be done.
    w.until("the initial push", |w| w_state_batches(w) >= 1);
    let snapshot = t.join("snapshot");
    sh(
        &format!("cp -a {} {}", dst.display(), snapshot.display()),
        t.path(),
    );
    fs::remove_dir_all(&src).unwrap();
    assert_eq!(w.wait_exit(), Some(3), "{}", w.stderr());
    assert_same_tree(&snapshot, &dst);
}

#[test]
fn bad_selections_fail_at_once_with_exit_3() {
    let _limits = shared_limits();
    let (t, src, _) = pair();
    let out = bin()
        .arg("watch")
        .arg(&src)
        .arg(src.join("inside"))
        .arg("--state-file")
        .arg(t.join("state"))
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("contain each other"));
    let out = bin()
        .arg("watch")
        .arg(t.join("missing"))
        .arg(t.join("dst"))
        .arg("--state-file")
        .arg(t.join("state"))
        .timeout(DEADLINE)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!t.join("dst").exists());
    let out = bin()
        .args(["watch", "--delay", "soon"])
        .arg(&src)
        .arg(t.join("dst"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn the_log_file_is_reopened_on_sighup() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    let log = t.join("watch.log");
    let log_arg = log.to_str().unwrap().to_string();
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &["-v", "--log-file", &log_arg],
    );
    fs::write(src.join("one"), b"1").unwrap();
    w.converge(&src, &dst);
    w.until("a line in the log", |_| {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("batch of"))
    });
    fs::rename(&log, t.join("watch.log.1")).unwrap();
    w.signal(libc::SIGHUP);
    w.until("a reopened log", |_| log.exists());
    fs::write(src.join("two"), b"2").unwrap();
    w.converge(&src, &dst);
    w.until("a line in the new log", |_| {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("batch of"))
    });
    assert!(
        w.stderr().is_empty(),
        "stderr went to the log: {}",
        w.stderr()
    );
}

#[test]
fn status_finds_the_default_state_file_by_dest_or_by_pair() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    let home = t.join("state-home");
    fs::write(src.join("f"), b"x").unwrap();
    let mut w = Watch::start_in(Transport::Local, &src, &dst, &[], Some(&home));
    w.converge(&src, &dst);
    let status = |args: &[&std::ffi::OsStr]| {
        bin()
            .arg("status")
            .args(args)
            .env("XDG_STATE_HOME", &home)
            .output()
            .unwrap()
    };
    w.until("a state file under XDG_STATE_HOME", |_| {
        status(&[dst.as_os_str()]).status.code() == Some(0)
    });
    let by_dest = status(&[dst.as_os_str()]);
    let text = String::from_utf8_lossy(&by_dest.stdout);
    assert!(text.contains("running (pid"), "{text}");
    assert!(text.contains(&*dst.to_string_lossy()), "{text}");
    let by_pair = status(&["--json".as_ref(), src.as_os_str(), dst.as_os_str()]);
    assert_eq!(by_pair.status.code(), Some(0), "{by_pair:?}");
    assert_eq!(json(&by_pair)["running"], true);
    let names: Vec<_> = fs::read_dir(home.join("fsync-repl")).unwrap().collect();
    assert_eq!(names.len(), 1, "one state file: {names:?}");
    // Killed without a chance to save: status says so.
    w.signal(libc::SIGKILL);
    w.wait_exit();
    let dead = status(&["--json".as_ref(), dst.as_os_str()]);
    assert_eq!(json(&dead)["running"], false, "{dead:?}");
    assert!(json(&dead)["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("without saving")));
    let unknown = status(&[t.join("elsewhere").as_os_str()]);
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    let usage = status(&[]);
    assert_eq!(usage.status.code(), Some(1), "{usage:?}");
}

#[test]
fn state_and_log_files_inside_src_do_not_keep_the_watch_busy() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    fs::create_dir_all(src.join(".local/state")).unwrap();
    let state = src.join(".local/state/watch.json");
    let log = src.join("watch.log");
    let (state_arg, log_arg) = (
        state.to_str().unwrap().to_string(),
        log.to_str().unwrap().to_string(),
    );
    // (`start_in` leaves --state-file to the arguments.)
    let mut w = Watch::start_in(
        Transport::Local,
        &src,
        &dst,
        &["-v", "--state-file", &state_arg, "--log-file", &log_arg],
        Some(t.path()),
    );
    let read = || State::batches(&state);
    w.until("the initial push", |_| read() >= 1);
    fs::write(src.join("f"), b"x").unwrap();
    w.until("DEST to hold f", |_| dst.join("f").exists());
    w.until("two batches", |_| read() >= 2);
    // Every batch rewrites the state file and the log in SRC; were their events taken
    // for changes, batches would follow each other for ever. Watch for a while.
    let before = read();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        read() <= before + 1,
        "batches kept running: {before} -> {}",
        read()
    );
}

struct State;

impl State {
    fn batches(path: &Path) -> u64 {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["batches"].as_u64())
            .unwrap_or(0)
    }
}

#[test]
fn the_periodic_reconcile_repairs_what_no_event_reported() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::create_dir_all(src.join("deep/er")).unwrap();
    fs::write(src.join("deep/er/f"), b"original").unwrap();
    fs::write(src.join("top"), b"original").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &["--rescan-interval", "1s"]);
    w.converge(&src, &dst);
    // DEST changed behind the watch's back: no event in SRC says so.
    fs::write(dst.join("top"), b"tampered").unwrap();
    fs::remove_dir_all(dst.join("deep")).unwrap();
    w.converge(&src, &dst);
}

#[test]
fn sigterm_exits_0_and_saves_the_state() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::write(src.join("f"), b"x").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &[]);
    w.converge(&src, &dst);
    // The files can match before the batch has finished (directory times, the final
    // sync): a signal then keeps that batch pending, rightly. Wait for its end.
    w.until("the first batch to finish", |w| {
        let st = w.state();
        st["last_success"].is_u64() && st["pending_dirs"] == 0
    });
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());
    let st = w.state();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["pending_dirs"], 0, "{st}");
    let human = bin()
        .arg("status")
        .arg("--state-file")
        .arg(&w.state)
        .output()
        .unwrap();
    assert_eq!(human.status.code(), Some(0), "{human:?}");
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("stopped"),
        "{human:?}"
    );
}

#[test]
fn sigterm_finishes_the_files_in_flight_and_keeps_the_rest_pending() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    for i in 0..60 {
        fs::write(src.join(format!("f{i:02}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let mut w = Watch::start(Transport::Local, &src, &dst, &["--bwlimit", "4M"]);
    // Files are written to temporary names first, renamed once a durability batch is
    // complete: wait until the copy is under way.
    w.until("temporary files in DEST", |_| {
        dst.exists() && !data_temp_files(&dst).is_empty()
    });
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());
    assert!(temp_files(&dst).is_empty(), "{:?}", temp_files(&dst));
    let copied: Vec<_> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".fsync-repl"))
        .collect();
    assert!(copied.len() < 60, "nothing new started after the signal");
    // The temporary files seen were files in flight: finished and put in place.
    assert!(!copied.is_empty(), "the files in flight were dropped");
    for p in copied {
        let name = p.file_name().unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{p:?} is torn"
        );
    }
    let st = w.state();
    assert_eq!(st["running"], false, "{st}");
    assert!(
        st["pending_dirs"].as_u64() > Some(0),
        "the cut batch stays pending: {st}"
    );
}

#[test]
fn a_killed_remote_session_reconnects_and_converges() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::write(src.join("first"), b"1").unwrap();
    let mut w = Watch::start(Transport::Rsh, &src, &dst, &[]);
    w.converge(&src, &dst);
    let serve = serve_pids(&dst);
    assert_eq!(serve.len(), 1, "one far side: {serve:?}");
    // SAFETY: kill(2) of the far side this test started.
    unsafe { libc::kill(serve[0], libc::SIGKILL) };
    fs::write(src.join("second"), b"2").unwrap();
    w.converge(&src, &dst);
    fs::write(src.join("third"), b"3").unwrap();
    w.converge(&src, &dst);
    w.until("the state file to count two sessions", |w| {
        w_sessions(w) == 2
    });
}

#[test]
fn an_idle_remote_session_outlives_the_far_sides_timeout() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::write(src.join("first"), b"1").unwrap();
    let mut w = Watch::start(Transport::Rsh, &src, &dst, &["--timeout", "2"]);
    w.converge(&src, &dst);
    // Stay idle for well past the far side's --timeout (a precondition, not a check).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(serve_pids(&dst).len(), 1, "the far side is still there");
    fs::write(src.join("second"), b"2").unwrap();
    w.converge(&src, &dst);
    w.until("the state after the batch", |w| w_state_batches(w) >= 2);
    assert_eq!(w_sessions(&w), 1, "{}", w.stderr());
    assert!(!w.stderr().contains("failed"), "{}", w.stderr());
    // The far side's --timeout is in force: with the watch stopped (no keepalives),
    // the far side gives up on its own. Were the option ignored it would wait forever.
    let far = serve_pids(&dst);
    w.stop();
    let gone = Instant::now() + Duration::from_secs(60);
    while serve_pids(&dst) == far {
        assert!(
            Instant::now() < gone,
            "the far side outlived its --timeout 2 by a minute with a silent client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    w.signal(libc::SIGCONT);
    // The lost session is replaced by a new one.
    fs::write(src.join("third"), b"3").unwrap();
    w.converge(&src, &dst);
    w.until("a second session in the state", |w| w_sessions(w) == 2);
}

#[test]
fn an_unreachable_host_is_retried_until_it_answers() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    fs::write(src.join("f"), b"x").unwrap();
    // A remote shell that fails (like ssh to a host that is down) until `up` exists.
    let up = t.join("up");
    let rsh = t.join("flaky-rsh");
    fs::write(
        &rsh,
        format!(
            "#!/bin/sh\n[ -e '{}' ] || {{ echo 'ssh: connect to host testhost: No route to host' >&2; exit 255; }}\nexec '{}' \"$@\"\n",
            up.display(),
            fake_rsh().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&rsh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rsh_arg = rsh.to_str().unwrap().to_string();
    let bin_arg = env!("CARGO_BIN_EXE_fsync-repl");
    let mut w = Watch::start(
        Transport::Local,
        &src,
        Path::new(&remote(&dst)),
        &["--rsh", &rsh_arg, "--remote-bin", bin_arg],
    );
    w.until("two failed attempts", |w| {
        w.try_state()["failures"].as_u64().unwrap_or(0) >= 2
    });
    assert!(!dst.exists(), "nothing reached DEST yet");
    fs::write(&up, b"").unwrap();
    w.converge(&src, &dst);
    w.until("one session in the state", |w| w_sessions(w) == 1);
}

fn w_sessions(w: &Watch) -> u64 {
    w.try_state()["sessions"].as_u64().unwrap_or(0)
}

/// Pids of `serve` processes working on `dst`.
fn serve_pids(dst: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let needle = dst.as_os_str().as_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let c = fs::read(e.path().join("cmdline")).ok()?;
            let is_serve = c.split(|&b| b == 0).any(|a| a == b"serve")
                && c.windows(needle.len()).any(|w| w == needle)
                && !c.windows(3).any(|w| w == b"-c\0");
            is_serve.then_some(pid)
        })
        .collect()
}

#[test]
fn a_full_event_channel_rescans_instead_of_dropping() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::create_dir(src.join("many")).unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &["--queue", "1", "-v"]);
    w.converge(&src, &dst);
    // Stopped, the watcher finds a backlog in the kernel's queue when it goes on: far
    // more than the channel holds.
    w.signal(libc::SIGSTOP);
    for i in 0..500 {
        fs::write(src.join(format!("many/f{i}")), format!("{i}")).unwrap();
    }
    w.signal(libc::SIGCONT);
    w.converge(&src, &dst);
    assert!(
        w.stderr()
            .contains("events arrived faster than batches ran"),
        "the channel never filled: {}",
        w.stderr()
    );
}

/// Sets a sysctl under /proc/sys and restores the old value when dropped (also when the
/// test fails).
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: u64) -> Sysctl {
        let old = fs::read_to_string(path).unwrap().trim().to_string();
        fs::write(path, value.to_string()).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.path, &self.old);
    }
}

fn exclusive_limits() -> std::sync::RwLockWriteGuard<'static, ()> {
    LIMITS.write().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_kernel_queue_overflow_rescans_and_is_logged_once() {
    require!(
        is_root(),
        "lowering fs.inotify.max_queued_events needs root"
    );
    let _limits = exclusive_limits();
    let (_t, src, dst) = pair();
    fs::create_dir(src.join("burst")).unwrap();
    fs::create_dir_all(src.join("quiet/inner")).unwrap();
    fs::write(src.join("quiet/inner/f"), b"q").unwrap();
    let mut w = {
        // The limit applies to inotify instances created while it is in force.
        let _q = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", 8);
        let w = Watch::start(Transport::Local, &src, &dst, &["--backend", "inotify"]);
        // Wait for the initial push: the watches exist by then.
        let mut w = w;
        w.converge(&src, &dst);
        w
    };
    // Stop the watcher (every thread of it) so the kernel queue overflows for certain,
    // and exactly once: nothing reads the queue until SIGCONT.
    w.stop();
    for i in 0..200 {
        fs::write(src.join(format!("burst/f{i}")), format!("{i}")).unwrap();
    }
    w.signal(libc::SIGCONT);
    w.converge(&src, &dst);
    let err = w.stderr();
    assert_eq!(
        err.matches("inotify queue overflowed").count(),
        1,
        "one line per incident:\n{err}"
    );
    // Each top-level directory has its own queue: only the one that lost events is
    // rescanned.
    assert!(err.contains("rescanning burst/"), "{err}");
}

/// Inotify watches the processes of this user hold now.
fn watches_in_use() -> u64 {
    let uid = rustix::process::geteuid().as_raw();
    let mut n = 0;
    for p in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        if p.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if let Ok(text) = fs::read_to_string(fd.path()) {
                n += text
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    n
}

#[test]
fn the_watch_limit_warns_once_and_polls_the_unwatched_part() {
    require!(is_root(), "lowering fs.inotify.max_user_watches needs root");
    let _limits = exclusive_limits();
    let (_t, src, dst) = pair();
    let leaves: Vec<String> = (0..20).map(|i| format!("d{i}/inner")).collect();
    for l in &leaves {
        fs::create_dir_all(src.join(l)).unwrap();
    }
    let _lim = Sysctl::set(
        "/proc/sys/fs/inotify/max_user_watches",
        watches_in_use() + 5,
    );
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &["--poll-interval", "1s", "--backend", "inotify"],
    );
    w.until("the limit warning", |w| {
        w.stderr().contains("max_user_watches")
    });
    w.converge(&src, &dst);
    w.until("the state to count unwatched directories", |w| {
        w.state()["unwatched_dirs"].as_u64().unwrap_or(0) > 0
    });
    for l in &leaves {
        fs::write(src.join(l).join("f"), l.as_bytes()).unwrap();
    }
    w.converge(&src, &dst);
    let err = w.stderr();
    assert_eq!(err.matches("watch limit is reached").count(), 1, "{err}");
    assert!(err.contains("needs at least"), "{err}");

    // Not a single watch left: the whole tree is polled, still correct.
    let (_t2, src2, dst2) = pair();
    fs::write(src2.join("f"), b"1").unwrap();
    fs::write(
        "/proc/sys/fs/inotify/max_user_watches",
        watches_in_use().to_string(),
    )
    .unwrap();
    let mut w2 = Watch::start(
        Transport::Local,
        &src2,
        &dst2,
        &["--poll-interval", "1s", "--backend", "inotify"],
    );
    w2.converge(&src2, &dst2);
    fs::write(src2.join("g"), b"2").unwrap();
    w2.converge(&src2, &dst2);
    assert!(
        w2.stderr().contains("watch limit is reached"),
        "{}",
        w2.stderr()
    );
}

#[test]
fn a_full_destination_is_retried_until_space_is_freed() {
    require!(is_root(), "mounting a small tmpfs needs root");
    let _limits = shared_limits();
    let (t, src, _) = pair();
    let mnt = t.join("mnt");
    // Both transports share the mount, one after the other.
    fs::create_dir(&mnt).unwrap();
    let m = mount_tmpfs(&mnt, "size=4m");
    require!(m.is_some(), "cannot mount a tmpfs here");
    for &tr in TRANSPORTS {
        let dst = mnt.join(format!("dst-{tr:?}"));
        let _ = fs::remove_file(src.join("big"));
        fs::write(src.join("small"), b"small").unwrap();
        fs::write(mnt.join("filler"), vec![1u8; 3 << 20]).unwrap();
        let mut w = Watch::start(tr, &src, &dst, &["--min-free", "0"]);
        w.converge(&src, &dst);
        fs::write(src.join("big"), vec![2u8; 2 << 20]).unwrap();
        w.until("a recorded failure", |w| {
            let st = w.state();
            st["failures"].as_u64().unwrap_or(0) >= 2 && st["pending_dirs"].as_u64() > Some(0)
        });
        let st = w.state();
        let why = st["last_error"].as_str().unwrap_or("").to_string();
        assert!(
            why.contains("MiB") || why.contains("KiB"),
            "{tr:?}: says how much is missing: {why}"
        );
        fs::remove_file(mnt.join("filler")).unwrap();
        w.converge(&src, &dst);
        w.until("a success recorded after the failures", |w| {
            w.state()["failures"] == 0
        });
        if tr == Transport::Rsh {
            assert_eq!(w_sessions(&w), 1, "{tr:?}: a refusal is not a lost session");
        }
        drop(w);
        wait_for_far_side(&dst);
        fs::remove_dir_all(&dst).unwrap();
    }
}

/// The batch reports a `--json` watch printed, one per line.
fn batch_reports(w: &Watch) -> Vec<serde_json::Value> {
    w.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_clean_stop_resumes_without_a_full_push_and_loses_nothing() {
    let _limits = shared_limits();
    for &t in TRANSPORTS {
        let (tree, src, dst) = pair();
        sh(
            "mkdir -p docs/old deep/er quiet && echo alpha > docs/a.txt && echo bye > docs/old/gone \
             && echo top > top.txt && echo f > deep/er/f && echo m > deep/mode \
             && for i in $(seq 1 40); do echo $i > quiet/q$i; done \
             && mkdir -p deep/er/gone/deeper && echo g > deep/er/gone/deeper/f",
            &src,
        );
        let state = tree.join("state.json");
        let args = ["--json", "--state-file", state.to_str().unwrap()];
        let mut w = Watch::start(t, &src, &dst, &args);
        w.converge(&src, &dst);
        // Past the slack a restart allows for events in flight at the stop, so that
        // what the resumed batch looks at is what changed after it.
        std::thread::sleep(Duration::from_millis(1200));
        w.signal(libc::SIGTERM);
        assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());
        let top = ino(&dst.join("top.txt"));

        // While nothing watches: every kind of change, and a tree moved in from outside
        // whose inner files keep their old ctimes.
        sh(
            "echo 'alpha, longer' > src/docs/a.txt && echo new > src/docs/new.txt \
             && rm -r src/docs/old src/deep/er/gone && mv src/top.txt src/renamed.txt \
             && chmod 600 src/deep/mode \
             && mkdir -p outside/tree/sub && echo x > outside/tree/sub/x && echo y > outside/tree/y",
            tree.path(),
        );
        std::thread::sleep(Duration::from_millis(20));
        sh("mv outside/tree src/deep/er/tree", tree.path());

        let mut w = Watch::start(t, &src, &dst, &args);
        w.converge(&src, &dst);
        w.until("the first batch's report", |w| !batch_reports(w).is_empty());
        assert!(
            w.stderr().contains("resuming after a clean stop"),
            "{t:?}: {}",
            w.stderr()
        );
        let first = &batch_reports(&w)[0];
        let total = 40 + 9; // entries in SRC now, directories included
        assert!(
            first["files_scanned"].as_u64().unwrap() < total / 2,
            "{t:?}: the resumed batch listed the whole tree: {first}"
        );
        assert_eq!(
            first["moved"], 1,
            "{t:?}: the rename is sent as one: {first}"
        );
        assert_eq!(ino(&dst.join("renamed.txt")), top, "{t:?}");
        assert_eq!(w.state()["start"], "resumed");
    }
}

#[test]
fn a_killed_watch_or_full_start_begins_with_a_full_push() {
    let _limits = shared_limits();
    let (tree, src, dst) = pair();
    sh("mkdir d && echo 1 > d/f && echo 2 > g", &src);
    let state = tree.join("state.json");
    let args = ["-v", "--state-file", state.to_str().unwrap()];
    let mut w = Watch::start(Transport::Local, &src, &dst, &args);
    w.converge(&src, &dst);
    w.signal(libc::SIGKILL);
    w.wait_exit();
    // DEST changed behind the watch's back: only a full push repairs it.
    fs::write(dst.join("d/f"), b"tampered").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &args);
    w.converge(&src, &dst);
    assert!(
        w.stderr().contains("full push: the last watch (pid"),
        "{}",
        w.stderr()
    );
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());

    fs::write(dst.join("d/f"), b"tampered again").unwrap();
    let mut more = args.to_vec();
    more.push("--full-start");
    let mut w = Watch::start(Transport::Local, &src, &dst, &more);
    w.converge(&src, &dst);
    assert_eq!(w.state()["start"], "full push");
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());

    // Changed excludes change what is replicated: a full push again.
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &[&args[..], &["--exclude", "g"]].concat(),
    );
    w.until("the reason for a full push", |w| {
        w.stderr().contains("full push: the selection options")
    });
}

#[test]
fn a_batch_cut_short_by_sigterm_is_finished_by_the_next_start() {
    let _limits = shared_limits();
    let (tree, src, dst) = pair();
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), vec![i as u8; 1 << 20]).unwrap();
    }
    let state = tree.join("state.json");
    let args = ["--bwlimit", "4M", "--state-file", state.to_str().unwrap()];
    let mut w = Watch::start(Transport::Local, &src, &dst, &args);
    w.until("temporary files in DEST", |_| {
        dst.exists() && !data_temp_files(&dst).is_empty()
    });
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());
    assert!(w.state()["pending_dirs"].as_u64() > Some(0));
    let w2_args = ["--state-file", state.to_str().unwrap()];
    let mut w = Watch::start(Transport::Local, &src, &dst, &w2_args);
    w.converge(&src, &dst);
    assert!(w.stderr().contains("resuming"), "{}", w.stderr());
}

#[test]
fn an_ignore_file_changed_while_stopped_applies_to_its_whole_directory() {
    let _limits = shared_limits();
    let (tree, src, dst) = pair();
    sh(
        "mkdir -p a/b && printf '*.log\\n' > a/.fsyncignore && echo y > a/b/y.log && echo k > a/b/keep",
        &src,
    );
    let state = tree.join("state.json");
    let args = ["--state-file", state.to_str().unwrap()];
    let mut w = Watch::start(Transport::Local, &src, &dst, &args);
    w.until("the first batch", |w| {
        w.try_state()["last_success"].is_u64()
    });
    assert!(dst.join("a/b/keep").exists());
    assert!(!dst.join("a/b/y.log").exists(), "excluded at first");
    std::thread::sleep(Duration::from_millis(1200));
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(), Some(0), "{}", w.stderr());

    // Rewritten in place: only the ignore file's own ctime changes.
    fs::write(src.join("a/.fsyncignore"), b"# nothing excluded now\n").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &args);
    w.converge(&src, &dst);
    assert!(w.stderr().contains("resuming"), "{}", w.stderr());
}

#[test]
fn every_thread_of_a_watch_runs_idle_and_niced() {
    let _limits = shared_limits();
    require!(have_ionice(), "ionice (util-linux) is not installed");
    let (_t, src, dst) = pair();
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}")), vec![i as u8; 256 << 10]).unwrap();
    }
    // Slow enough that the batch's workers are alive while the threads are read.
    let w = Watch::start(Transport::Local, &src, &dst, &["--bwlimit", "1M"]);
    let seen = settled_priorities(w.child.id(), 4);
    assert!(
        seen.len() >= 4,
        "the watcher, the loop and two workers: {seen:?}"
    );
    for (nice, io) in &seen {
        assert_eq!(*nice, 10, "{seen:?}");
        assert_eq!(io, "idle", "{seen:?}");
    }
}

// ---- the fanotify backend ----

/// Whether fanotify can watch a tree under `base`. A missing prerequisite (not root, a
/// kernel that refuses the mark) fails the test under CI; elsewhere it prints one
/// visible line and the test returns.
fn fanotify_ready(test: &str, base: &Path) -> bool {
    let why = if !is_root() {
        Some("fanotify needs root".to_string())
    } else {
        fsync_repl::watch::fanotify::probe(base)
            .err()
            .map(|e| e.to_string())
    };
    let Some(why) = why else {
        return true;
    };
    require(false, &format!("{test}: {why}"))
}

/// fanotify needs a filesystem with file handles: the root disk's /var/tmp (ext4).
const FAN_BASE: &str = "/var/tmp";

/// A tree on FAN_BASE with `src` and a sibling `outside` on the same filesystem.
fn fan_pair() -> (Tree, PathBuf, PathBuf) {
    let t = Tree::new_in(Path::new(FAN_BASE));
    let (src, dst) = (t.join("src"), t.join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(t.join("outside")).unwrap();
    (t, src, dst)
}

const FANOTIFY: &[&str] = &["--backend", "fanotify"];

#[test]
fn fanotify_reports_every_kind_of_change() {
    let _limits = shared_limits();
    if !fanotify_ready("fanotify_reports_every_kind_of_change", Path::new(FAN_BASE)) {
        return;
    }
    let (t, src, dst) = fan_pair();
    let outside = t.join("outside");
    fs::create_dir_all(src.join("home1/docs")).unwrap();
    fs::write(src.join("home1/docs/a.txt"), b"alpha").unwrap();
    fs::write(src.join("home1/gone.txt"), b"bye").unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, FANOTIFY);
    w.converge(&src, &dst);
    assert!(w.stderr().contains("with fanotify"), "{}", w.stderr());
    assert_eq!(w.state()["backend"], "fanotify");

    // Create, write, chmod, delete, rename within SRC.
    fs::write(src.join("home1/new.txt"), b"new").unwrap();
    fs::write(src.join("home1/docs/a.txt"), b"alpha, rewritten").unwrap();
    fs::set_permissions(
        src.join("home1/docs"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    fs::remove_file(src.join("home1/gone.txt")).unwrap();
    w.converge(&src, &dst);
    let moved = ino(&dst.join("home1/docs/a.txt"));
    fs::rename(src.join("home1/docs"), src.join("home1/papers")).unwrap();
    w.converge(&src, &dst);
    // Changes in a renamed directory are found under its new name.
    fs::write(src.join("home1/papers/b.txt"), b"beta").unwrap();
    w.converge(&src, &dst);
    assert!(!dst.join("home1/docs").exists());
    assert_eq!(
        fs::read(dst.join("home1/papers/a.txt")).unwrap(),
        b"alpha, rewritten"
    );
    assert_eq!(
        ino(&dst.join("home1/papers/a.txt")),
        moved,
        "a rename in SRC is a rename in DEST"
    );

    // Into SRC from outside (same filesystem), and out of it.
    fs::create_dir_all(outside.join("pkg/lib")).unwrap();
    fs::write(outside.join("pkg/lib/x"), b"x").unwrap();
    // Let the watcher see (and set aside) the changes while they are outside SRC.
    std::thread::sleep(Duration::from_millis(500));
    fs::rename(outside.join("pkg"), src.join("home1/pkg")).unwrap();
    fs::rename(src.join("home1/new.txt"), outside.join("new.txt")).unwrap();
    w.converge(&src, &dst);
    assert_eq!(fs::read(dst.join("home1/pkg/lib/x")).unwrap(), b"x");
    fs::write(src.join("home1/pkg/lib/y"), b"y").unwrap();
    w.converge(&src, &dst);
    assert_eq!(fs::read(dst.join("home1/pkg/lib/y")).unwrap(), b"y");
    // Moved out, its changes are no longer SRC's.
    fs::rename(src.join("home1/pkg"), outside.join("pkg2")).unwrap();
    w.converge(&src, &dst);
    assert!(!dst.join("home1/pkg").exists());
    assert!(!dst.join("home1/new.txt").exists());
    fs::write(outside.join("pkg2/lib/z"), b"z").unwrap();

    // A deep tree created and filled while the watcher reads nothing: whole in DEST.
    w.signal(libc::SIGSTOP);
    sh(
        "mkdir -p home2/a/b/c/d/e && for i in 1 2 3; do echo $i > home2/a/b/c/d/e/f$i; \
         echo $i > home2/a/b/g$i; done",
        &src,
    );
    w.signal(libc::SIGCONT);
    w.converge(&src, &dst);
    assert_eq!(fs::read(dst.join("home2/a/b/c/d/e/f3")).unwrap(), b"3\n");
    // The whole home removed.
    fs::remove_dir_all(src.join("home2")).unwrap();
    w.converge(&src, &dst);
    assert!(!dst.join("home2").exists());
}

#[test]
fn fanotify_ignores_changes_outside_src_and_excluded_ones() {
    let _limits = shared_limits();
    if !fanotify_ready(
        "fanotify_ignores_changes_outside_src_and_excluded_ones",
        Path::new(FAN_BASE),
    ) {
        return;
    }
    let (t, src, dst) = fan_pair();
    let outside = t.join("outside");
    fs::write(src.join("f"), b"1").unwrap();
    fs::create_dir_all(src.join("home")).unwrap();
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &["--backend", "fanotify", "--exclude", ".cache/"],
    );
    w.converge(&src, &dst);
    w.until("the first batch in the state file", |w| {
        w_state_batches(w) >= 1
    });
    let before = w_state_batches(&w);
    for i in 0..200 {
        fs::write(outside.join(format!("o{i}")), b"o").unwrap();
    }
    fs::create_dir(outside.join("d")).unwrap();
    fs::rename(outside.join("o0"), outside.join("d/o0")).unwrap();
    fs::create_dir(src.join("home/.cache")).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("home/.cache/c{i}")), b"c").unwrap();
    }
    fs::create_dir(src.join("home/.cache/sub")).unwrap();
    // Longer than any batch's wait (delay 250 ms, at most 1 s): a batch the outside
    // changes started would have run by now.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        w_state_batches(&w),
        before,
        "changes outside SRC or excluded ran a batch\n{}",
        w.stderr()
    );
    fs::write(src.join("g"), b"2").unwrap();
    w.until("the change inside SRC in DEST", |_| dst.join("g").exists());
    w.until("the batch of the change inside", |w| {
        w_state_batches(w) > before
    });
    assert_eq!(w_state_batches(&w), before + 1);
    let names: Vec<_> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('o') || n == "d"),
        "{names:?}"
    );
    assert!(!dst.join("home/.cache").exists());
}

#[test]
fn fanotify_has_no_gap_under_a_tiny_inotify_watch_limit() {
    if !fanotify_ready(
        "fanotify_has_no_gap_under_a_tiny_inotify_watch_limit",
        Path::new(FAN_BASE),
    ) {
        return;
    }
    let _limits = exclusive_limits();
    let (_t, src, dst) = fan_pair();
    let leaves: Vec<String> = (0..40).map(|i| format!("u{}/d{i}/inner", i % 4)).collect();
    for l in &leaves {
        fs::create_dir_all(src.join(l)).unwrap();
    }
    let _lim = Sysctl::set(
        "/proc/sys/fs/inotify/max_user_watches",
        watches_in_use() + 5,
    );
    // A gap would only close at the poll interval, long after the deadline.
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &["--backend", "fanotify", "--poll-interval", "10m"],
    );
    w.converge(&src, &dst);
    for l in &leaves {
        fs::write(src.join(l).join("f"), l.as_bytes()).unwrap();
        fs::create_dir(src.join(l).join("new")).unwrap();
        fs::write(src.join(l).join("new/g"), b"g").unwrap();
    }
    w.converge(&src, &dst);
    let st = w.state();
    assert_eq!(st["unwatched_dirs"], 0, "{st}");
    assert!(!w.stderr().contains("watch limit"), "{}", w.stderr());
}

#[test]
fn backend_inotify_still_works_where_fanotify_could() {
    let _limits = shared_limits();
    let (_t, src, dst) = pair();
    fs::create_dir_all(src.join("a")).unwrap();
    let mut w = Watch::start(Transport::Local, &src, &dst, &["--backend", "inotify"]);
    w.converge(&src, &dst);
    assert!(w.stderr().contains("with inotify"), "{}", w.stderr());
    sh("mkdir -p a/b/c && echo x > a/b/c/f && mv a a2", &src);
    w.converge(&src, &dst);
    assert_eq!(fs::read(dst.join("a2/b/c/f")).unwrap(), b"x\n");
    assert_eq!(w.state()["backend"], "inotify");
}

#[test]
fn status_and_the_metrics_file_show_the_lag_of_each_home() {
    let _limits = shared_limits();
    let (t, src, dst) = pair();
    for home in ["alice", "bob", "carol"] {
        fs::create_dir_all(src.join(home).join("docs")).unwrap();
        fs::write(src.join(home).join("docs/f"), home).unwrap();
    }
    let metrics = t.join("watch.prom");
    // A long quiet time keeps a change pending long enough to be looked at.
    let mut w = Watch::start(
        Transport::Local,
        &src,
        &dst,
        &[
            "--delay",
            "20s",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    w.converge(&src, &dst);
    w.until("the metrics of the first batch", |_| {
        fs::read_to_string(&metrics).is_ok_and(|m| m.contains("fsync_repl_watch_batches_total 1\n"))
    });
    fs::write(src.join("bob/docs/new"), b"n").unwrap();
    w.until("bob's pending change in the state", |w| {
        let st = w.try_state();
        st["homes"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["name"] == "bob" && h["pending"] == 1))
    });
    let st = w.state();
    let homes = st["homes"].as_array().unwrap();
    let names: Vec<&str> = homes.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol"], "{st}");
    let bob = &homes[1];
    assert!(bob["lag_secs"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(homes[0]["pending"], 0, "{st}");
    assert_eq!(homes[0]["lag_secs"], 0.0, "{st}");
    assert!(
        ["fanotify", "inotify"].contains(&st["backend"].as_str().unwrap()),
        "{st}"
    );
    // Pending indeed: not in DEST yet.
    assert!(!dst.join("bob/docs/new").exists());
    let out = bin()
        .arg("status")
        .arg("--state-file")
        .arg(&w.state)
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("homes: 3 (1 with pending changes)"),
        "{human}"
    );
    assert!(human.contains("bob: lag "), "{human}");
    assert!(human.contains("backend: "), "{human}");
    w.until("bob's pending directory in the metrics", |_| {
        fs::read_to_string(&metrics).is_ok_and(|m| {
            m.contains("fsync_repl_watch_pending_directories{home=\"bob\"} 1\n")
                && m.contains("fsync_repl_watch_pending_directories{home=\"alice\"} 0\n")
        })
    });
    let m = fs::read_to_string(&metrics).unwrap();
    assert!(
        !m.contains("fsync_repl_watch_last_success_timestamp_seconds 0\n"),
        "{m}"
    );
    assert!(
        m.contains(&format!("backend=\"{}\"", st["backend"].as_str().unwrap())),
        "{m}"
    );
    // Only the file itself beside the trees: the temporary name was renamed.
    let stray: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn without_cap_sys_admin_auto_falls_back_to_inotify_and_says_why() {
    let _limits = shared_limits();
    let setpriv = Path::new("/usr/bin/setpriv");
    if !require(is_root() && setpriv.exists(), "root and setpriv") {
        return;
    }
    let (t, src, dst) = fan_pair();
    fs::write(src.join("f"), b"1").unwrap();
    let drop_cap = |backend: &str, state: &Path| {
        let mut c = std::process::Command::new(setpriv);
        c.args(["--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"])
            .arg(env!("CARGO_BIN_EXE_fsync-repl"))
            .args(["watch", "--backend", backend, "--state-file"])
            .arg(state)
            .arg(&src)
            .arg(&dst)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    // Asked for explicitly, fanotify refuses with the reason and touches nothing.
    let out = drop_cap("fanotify", &t.join("st1.json")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    assert!(!dst.exists(), "DEST was created");
    // auto: inotify, said in one line, and it replicates.
    let state = t.join("st2.json");
    let errf = t.join("err");
    let mut child = drop_cap("auto", &state)
        .stderr(fs::File::create(&errf).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while !dst.join("f").exists() {
        assert!(
            Instant::now() < end,
            "{}",
            fs::read_to_string(&errf).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    fs::write(src.join("g"), b"2").unwrap();
    while !dst.join("g").exists() {
        assert!(
            Instant::now() < end,
            "{}",
            fs::read_to_string(&errf).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    let err = fs::read_to_string(&errf).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("watching ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("with inotify") && lines[0].contains("CAP_SYS_ADMIN"),
        "{err}"
    );
}

#[test]
fn a_fanotify_queue_overflow_rescans_and_is_logged() {
    if !fanotify_ready(
        "a_fanotify_queue_overflow_rescans_and_is_logged",
        Path::new(FAN_BASE),
    ) {
        return;
    }
    let _limits = exclusive_limits();
    let (_t, src, dst) = fan_pair();
    fs::create_dir(src.join("burst")).unwrap();
    let mut w = {
        // The limit applies to groups created while it is in force.
        let _q = Sysctl::set("/proc/sys/fs/fanotify/max_queued_events", 16);
        let mut w = Watch::start(Transport::Local, &src, &dst, FANOTIFY);
        w.converge(&src, &dst);
        w
    };
    // Stopped, the watcher cannot read: the kernel's queue overflows for certain.
    w.signal(libc::SIGSTOP);
    for i in 0..200 {
        fs::write(src.join(format!("burst/f{i}")), format!("{i}")).unwrap();
    }
    w.signal(libc::SIGCONT);
    w.converge(&src, &dst);
    let err = w.stderr();
    assert!(
        err.contains("fanotify queue overflowed (fs.fanotify.max_queued_events); rescanning the whole source"),
        "{err}"
    );
}

//! `serve`: the far side of a remote push (receiving) or pull (sending), speaking the
//! protocol on stdin and stdout and never leaving its root.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::push::{missing_dirs, remove_if_empty};
use super::remote::{handshake, idle_timeout, proto};
use super::Serve;
use crate::dest::local::LocalDest;
use crate::dest::remote::Conn;
use crate::error::{Error, Result};
use crate::protocol::Notice;
use crate::serve::Receiver;
use crate::throttle::Throttle;
use crate::transfer::{push_over, Output, ProgressMode};
use crate::wire::{Abort, WireIn, WireOut};

/// Runs a session; returns the exit code.
pub(super) fn serve(s: &Serve, interrupted: Arc<AtomicBool>) -> i32 {
    crate::fsutil::grow_pipe(std::io::stdin().as_fd());
    crate::fsutil::grow_pipe(std::io::stdout().as_fd());
    let result = if s.send {
        send(s, interrupted)
    } else {
        receive(s, interrupted)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // A far side is ended by SIGTERM when its client ends the session (the
            // client's process group): the client says why, not this side.
            let msg = e.to_string();
            if !msg.is_empty() && !matches!(e, Error::Interrupted) {
                eprintln!("fsync-repl serve: {msg}");
            }
            e.exit_code().code()
        }
    }
}

fn stdio(e: std::io::Error) -> Error {
    Error::Protocol(format!("standard input or output: {e}"))
}

/// Standard output to the client: a client that stops reading for `timeout_secs`
/// ends the session.
fn to_client(timeout_secs: u64, abort: Abort) -> Result<WireOut> {
    Ok(WireOut::new(
        crate::wire::stdout().map_err(stdio)?,
        Some(idle_timeout(timeout_secs)),
        abort,
        format!("the client has not read anything for {timeout_secs} s (--timeout)"),
    ))
}

fn receive(s: &Serve, interrupted: Arc<AtomicBool>) -> Result<()> {
    let opts = &s.opts;
    let mut root = s.root.clone();
    // A dry run must not create a missing root: list an empty stand-in instead.
    let stand_in = (opts.dry_run && !root.exists())
        .then(|| std::env::temp_dir().join(format!("fsync-repl-dry-run.{}", std::process::id())));
    if let Some(s) = &stand_in {
        root = s.clone();
    }
    let root = root.as_path();
    // The directories this session makes to reach a missing DEST: removed again at the
    // end if they are still empty, so a run the client refused creates nothing.
    let made = missing_dirs(root);
    let _ = opts.priority.apply_to_current_thread();
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let dest = LocalDest::open(root, opts, throttle.clone(), interrupted.clone()).map_err(|e| {
        Error::Selection {
            path: root.to_path_buf(),
            what: format!("cannot open or create the destination: {e}"),
        }
    })?;
    // A client silent for --timeout, or one that stops reading, ends the session: its
    // unfinished temporary files are removed and the exit code is 2.
    // SIGINT/SIGTERM end the session at once, its temporary files removed.
    let abort: Abort = interrupted.clone();
    let silent = format!("no request from the client for {} s (--timeout)", s.timeout);
    let mut input = WireIn::new(
        crate::wire::stdin().map_err(stdio)?,
        Some(idle_timeout(s.timeout)),
        abort.clone(),
        silent,
    );
    let output = to_client(s.timeout, abort)?;
    // The far side's disk gets the same adaptive back-off as a local destination.
    let stop = Arc::new(AtomicBool::new(false));
    let devices = crate::throttle::adaptive::devices_of(&[root]);
    let controller = opts
        .adaptive
        .filter(|_| !opts.dry_run && !devices.is_empty())
        .map(|cfg| {
            let (throttle, stop, priority) = (throttle.clone(), stop.clone(), opts.priority);
            let verbose = opts.verbose > 0;
            std::thread::spawn(move || {
                let _ = priority.apply_to_current_thread();
                let log = |m: String| {
                    if verbose {
                        eprintln!("fsync-repl serve: {m}");
                    }
                };
                crate::throttle::adaptive::run(&throttle, cfg, &devices, &stop, &log)
            })
        });
    let mut receiver = Receiver::new(&dest, opts.min_free, Box::new(output));
    let hello = (
        handshake(s.timeout),
        format!(
            "no handshake from the client within {} s",
            handshake(s.timeout).as_secs()
        ),
    );
    let result = receiver.run(&mut input, hello, &mut |_| {});
    let result = match result {
        Err(_) if interrupted.load(Ordering::Relaxed) => Err(Error::Interrupted),
        r => r.map_err(proto),
    };
    drop(receiver);
    if let Some(c) = controller {
        crate::throttle::adaptive::stop(&stop, c.thread());
        let _ = c.join();
    }
    if let Some(s) = stand_in {
        let _ = std::fs::remove_dir(s);
    }
    drop(dest);
    remove_if_empty(&made);
    result
}

/// Output of the far side of `pull`: lines travel to the client as notices.
struct Notices<'a>(&'a Conn);

impl Output for Notices<'_> {
    fn item(&self, line: &str) {
        let _ = self.0.notice(Notice::Item(line.to_string()));
    }
    fn warn(&self, line: &str) {
        let _ = self.0.notice(Notice::Warn(line.to_string()));
    }
    fn progress(&self) -> ProgressMode {
        ProgressMode::Off
    }
}

fn send(s: &Serve, interrupted: Arc<AtomicBool>) -> Result<()> {
    let opts = &s.opts;
    let abort = Abort::default();
    let input = WireIn::new(
        crate::wire::stdin().map_err(stdio)?,
        None,
        abort.clone(),
        String::new(),
    );
    let output = to_client(s.timeout, abort.clone())?;
    let conn = Arc::new(
        Conn::start(
            input,
            output,
            abort,
            None,
            idle_timeout(s.timeout),
            handshake(s.timeout),
        )
        .map_err(proto)?,
    );
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let root: PathBuf = s.root.clone();
    let out = Notices(&conn);
    let result = push_over(&conn, opts, &root, &root, throttle, &out, interrupted);
    let notice = match &result {
        Ok(report) => Notice::Report(serde_json::to_string(report).unwrap_or_default()),
        Err(e) => Notice::Failed {
            exit_code: e.exit_code().code(),
            message: e.to_string(),
        },
    };
    // The client prints the failure it receives; when it cannot receive it, this
    // side's stderr (which the remote shell forwards) says it. Either way the exit
    // code is the failure's.
    let told = conn.last_notice(notice).is_ok();
    conn.close();
    match result {
        Ok(_) if told => Ok(()),
        Ok(_) => Err(Error::Protocol(format!(
            "could not send the report: {}",
            conn.failure()
                .unwrap_or_else(|| "the client stopped reading".into())
        ))),
        Err(e) if told => Err(Error::Reported(e.exit_code())),
        Err(e) => Err(e),
    }
}

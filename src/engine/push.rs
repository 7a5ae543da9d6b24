//! `push` (into a local or remote DEST) and `pull` (from a remote SRC).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::far::{self, Far};
use super::remote::{connect, proto, remote_failure, stalled};
use super::{Location, Term, Transfer};
use crate::dest::local::LocalDest;
use crate::error::{Error, ExitCode, Result};
use crate::protocol::Notice;
use crate::report::Report;
use crate::serve::{Policy, Receiver};
use crate::text::escape_str;
use crate::throttle::Throttle;
use crate::transfer::{push_local, push_over, Output};
use crate::wire::{Abort, WireIn, WireOut};

/// Runs a push from a local SRC into a local or remote DEST.
pub(super) fn push(t: &Transfer, interrupted: Arc<AtomicBool>) -> Result<Report> {
    let opts = &t.opts;
    let Location::Local(src) = &t.src else {
        return Err(Error::Usage(
            "push needs a local SRC; use pull to copy from a remote host".into(),
        ));
    };
    let term = Term::for_options(opts);
    match &t.dest {
        Location::Local(dest) => push_local(opts, src, dest, &term, interrupted),
        Location::Remote { host, path } => {
            // Check SRC before anything starts on the far side.
            crate::transfer::check_source(src)?;
            // Ctrl-C lets the engine wind down for a moment, then ends the session.
            let grace = Duration::from_secs(5);
            let conn = connect(&t.remote, opts, host, path, (&interrupted, grace))?;
            let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
            let name = remote_name(host, path);
            let result = push_over(
                &conn,
                opts,
                src,
                &name,
                throttle,
                &term,
                interrupted.clone(),
            );
            conn.close();
            match result {
                Err(Error::Protocol(_)) if interrupted.load(Ordering::Relaxed) => {
                    Err(Error::Interrupted)
                }
                r => r.map(|mut report| {
                    // The whole session, its handshake included.
                    (report.wire_bytes_sent, report.wire_bytes_received) = conn.wire_bytes();
                    report
                }),
            }
        }
    }
}

/// `host:path`, for messages.
pub(super) fn remote_name(host: &std::ffi::OsStr, path: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut n = std::os::unix::ffi::OsStrExt::as_bytes(host).to_vec();
    n.push(b':');
    n.extend_from_slice(path);
    PathBuf::from(std::ffi::OsString::from_vec(n))
}

/// Runs a pull from a remote SRC into a local DEST: the far side runs the engine
/// (`serve --send`), this side writes with the same code as a push.
/// A local SRC (a snapshot directory, say) is a local copy: push does it.
pub(super) fn pull(t: &Transfer, interrupted: Arc<AtomicBool>) -> Result<Report> {
    if !t.src.is_remote() {
        return push(t, interrupted);
    }
    pull_into(t, &Term::for_options(&t.opts), interrupted)
}

/// [`pull`], its item and warning lines going to `term`.
pub(super) fn pull_into(
    t: &Transfer,
    term: &dyn Output,
    interrupted: Arc<AtomicBool>,
) -> Result<Report> {
    let opts = &t.opts;
    let Location::Remote { host, path } = &t.src else {
        return Err(Error::Usage(
            "pull needs a remote SRC ([user@]host:path); use push for local copies".into(),
        ));
    };
    let Location::Local(dest) = &t.dest else {
        return Err(Error::Usage("pull needs a local DEST".into()));
    };
    let created = !dest.exists();
    let made = missing_dirs(dest);
    // This thread does all of pull's writing.
    let _ = opts.priority.apply_to_current_thread();
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let local = LocalDest::open(dest, opts, throttle, interrupted.clone()).map_err(|e| {
        Error::Selection {
            path: dest.clone(),
            what: format!("cannot open or create the destination: {e}"),
        }
    })?;
    let args = far::args(&Far::Send(opts), t.remote.timeout, path);
    let mut child = t.remote.shell.spawn(host, &args)?;
    let (stdin, stdout) = child.pipes()?;
    let timeout = t.remote.idle();
    // SIGINT/SIGTERM end the session at once: the far side runs in a process group of
    // its own and does not see the terminal's signals.
    let abort: Abort = interrupted.clone();
    let silent = format!(
        "the remote side stayed silent for {} s (--timeout); giving up",
        t.remote.timeout
    );
    let mut input = WireIn::new(stdout.into(), Some(timeout), abort.clone(), silent);
    let output = WireOut::new(
        stdin.into(),
        Some(timeout),
        abort.clone(),
        stalled(t.remote.timeout),
    );
    let mut outcome: Option<std::result::Result<Report, (i32, String)>> = None;
    let policy = Policy {
        delete: opts.delete,
        xattrs: opts.xattrs,
    };
    let (sent, received) = (output.counter(), input.counter());
    let mut receiver = Receiver::new(&local, opts.min_free, Box::new(output)).policy(policy);
    if opts.dry_run {
        receiver = receiver.read_only();
    }
    let no_handshake = crate::protocol::frame::no_handshake(t.remote.handshake());
    let hello = (t.remote.handshake(), no_handshake);
    let result = receiver.run(&mut input, hello, &mut |n| match n {
        // Lines from the other machine never reach the terminal with control characters.
        Notice::Item(l) => term.item(&escape_str(&l)),
        Notice::Warn(l) => term.warn(&escape_str(&l)),
        Notice::Report(json) => {
            outcome = Some(
                serde_json::from_str(&json)
                    .map_err(|e| (2, format!("bad report from the remote side: {e}"))),
            )
        }
        Notice::Failed { exit_code, message } => {
            outcome = Some(Err((exit_code, escape_str(&message))))
        }
    });
    // Our end of both pipes closes here; the far side has a moment to exit by itself
    // after a normal end, none after a failure.
    drop(receiver);
    drop(input);
    let ended_well = result.is_ok() && matches!(outcome, Some(Ok(_)));
    child.end(if ended_well {
        crate::ssh::EXIT_GRACE
    } else {
        Duration::ZERO
    });
    if opts.dry_run && created {
        let _ = std::fs::remove_dir(dest);
    }
    // A run refused on the far side (guards, preflight) leaves nothing it made.
    remove_if_empty(&made);
    if interrupted.load(Ordering::Relaxed) && !matches!(outcome, Some(Ok(_))) {
        return Err(Error::Interrupted);
    }
    match (outcome, result) {
        (Some(Ok(mut report)), _) => {
            report.errors = report.errors.iter().map(|e| escape_str(e)).collect();
            // The exit code is one of ours, whatever the far side wrote.
            if !matches!(
                report.exit_code,
                0 | 1 | 2 | 3 | 11 | 12 | 20 | 23 | 24 | 25
            ) {
                report.exit_code = ExitCode::Protocol.code();
            }
            // Counted here, on this side's pipes: the far side's own figure is not taken.
            (report.wire_bytes_sent, report.wire_bytes_received) = (sent.get(), received.get());
            Ok(report)
        }
        (Some(Err((code, msg))), _) => Err(remote_failure(code, msg)),
        (None, Err(e)) => Err(proto(e)),
        (None, Ok(())) => Err(Error::Protocol(
            "the remote side ended without a report".into(),
        )),
    }
}

/// `path` and its ancestors that do not exist yet, deepest first.
pub(super) fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        .map(PathBuf::from)
        .collect()
}

/// Removes the directories of [`missing_dirs`] that are still empty, deepest first.
pub(super) fn remove_if_empty(made: &[PathBuf]) {
    for dir in made {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

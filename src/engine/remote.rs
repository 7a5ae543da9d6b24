//! Reaching the far side: the remote settings, starting a session, and what its
//! failures mean on this side.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::far::{self, Far};
use crate::dest::remote::{Conn, MAX_LISTING};
use crate::error::{Error, ExitCode, Result};
use crate::options::Options;
use crate::protocol::frame::ProtoError;
use crate::ssh::RemoteShell;
use crate::wire::{Abort, WireIn, WireOut};

/// How long the remote side has to answer the handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// How the far side is reached and how long it may stay silent.
#[derive(Debug, Clone)]
pub struct Remote {
    pub shell: RemoteShell,
    /// Seconds the far side may stay silent or stop reading (0: never).
    pub timeout: u64,
    /// The most entries a far side's listing may hold.
    pub max_listing: u64,
}

impl Default for Remote {
    fn default() -> Self {
        Remote {
            shell: RemoteShell {
                rsh: None,
                port: None,
                remote_bin: "fsync-repl".into(),
                reuse: true,
            },
            timeout: 300,
            max_listing: MAX_LISTING,
        }
    }
}

impl Remote {
    /// The idle timeout as a duration (0: practically never).
    pub fn idle(&self) -> Duration {
        idle_timeout(self.timeout)
    }

    /// The handshake deadline: 30 s, or the idle timeout when that is shorter.
    pub fn handshake(&self) -> Duration {
        handshake(self.timeout)
    }
}

pub(super) fn idle_timeout(secs: u64) -> Duration {
    if secs == 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_secs(secs)
    }
}

pub(super) fn handshake(timeout: u64) -> Duration {
    HANDSHAKE.min(idle_timeout(timeout))
}

/// The error of a peer that stopped reading what this side writes.
pub(super) fn stalled(secs: u64) -> String {
    format!("the remote side has not read anything for {secs} s (--timeout); giving up")
}

/// A session's protocol failure as this side's error: a far side that exited with
/// one of our codes already said why on its stderr.
pub(super) fn proto(e: ProtoError) -> Error {
    match e {
        ProtoError::RemoteExit(1) => Error::Reported(ExitCode::Usage),
        ProtoError::RemoteExit(3) => Error::Reported(ExitCode::Selection),
        ProtoError::RemoteExit(11) => Error::Reported(ExitCode::DestIo),
        ProtoError::RemoteExit(25) => Error::Reported(ExitCode::MaxDelete),
        e => Error::Protocol(e.to_string()),
    }
}

/// A failure the far side reported with its exit code, as this side's error.
pub(super) fn remote_failure(code: i32, msg: String) -> Error {
    match code {
        1 => Error::Usage(msg),
        3 => Error::Selection {
            path: PathBuf::from("remote"),
            what: msg,
        },
        11 => Error::NoSpace(msg.into()),
        25 => Error::TooManyDeletes(msg),
        _ => Error::Protocol(msg),
    }
}

/// Starts `fsync-repl serve` on `host` for a push into `path` and handshakes. After a
/// signal the engine has `grace` to wind down before the session ends.
pub(super) fn connect(
    remote: &Remote,
    opts: &Options,
    host: &OsStr,
    path: &[u8],
    (interrupted, grace): (&Arc<AtomicBool>, Duration),
) -> Result<Arc<Conn>> {
    let args = far::args(&Far::Receive(opts), remote.timeout, path);
    let mut child = remote.shell.spawn(host, &args)?;
    let (stdin, stdout) = child.pipes()?;
    let timeout = remote.idle();
    let abort = Abort::default();
    // Replies are awaited with the timeout per request; writes carry it themselves.
    let input = WireIn::new(stdout.into(), None, abort.clone(), String::new());
    let output = WireOut::new(
        stdin.into(),
        Some(timeout),
        abort.clone(),
        stalled(remote.timeout),
    );
    Ok(Arc::new(
        Conn::start(
            input,
            output,
            abort,
            Some(child),
            timeout,
            remote.handshake(),
        )
        .map_err(proto)?
        .with_max_listing(remote.max_listing)
        .with_interrupt(interrupted.clone(), grace),
    ))
}

/// The most a far side's JSON answer may hold.
const MAX_ANSWER: u64 = 256 << 20;

/// Runs `fsync-repl` with `far` on `host` with this process's stdout and stderr;
/// returns its exit code.
pub(super) fn run_far(remote: &Remote, host: &OsStr, far: &Far<'_>, path: &[u8]) -> Result<i32> {
    run_far_with(remote, host, far, path, false).map(|(code, _)| code)
}

/// Runs `fsync-repl` with `far` on `host`, its stderr ours; with `answer` its stdout is
/// captured (bounded) and returned, else it is ours too. The exit code is one of ours.
pub(super) fn run_far_with(
    remote: &Remote,
    host: &OsStr,
    far: &Far<'_>,
    path: &[u8],
    answer: bool,
) -> Result<(i32, Vec<u8>)> {
    use std::io::Read;
    let args: Vec<OsString> = far::args(far, remote.timeout, path);
    let mut c = remote.shell.command(host, &args)?;
    c.stdin(std::process::Stdio::null());
    if answer {
        c.stdout(std::process::Stdio::piped());
    }
    let mut child = c.spawn().map_err(|e| Error::Selection {
        path: PathBuf::from(host),
        what: format!("cannot start the remote shell: {e}; install ssh or pass --rsh"),
    })?;
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(MAX_ANSWER).read_to_end(&mut out);
    }
    let status = child
        .wait()
        .map_err(|e| Error::Protocol(format!("waiting for the remote shell: {e}")))?;
    match status.code() {
        Some(c @ (0 | 1 | 2 | 3 | 11 | 12 | 20 | 23 | 24 | 25 | 26)) => Ok((c, out)),
        other => Err(Error::Protocol(format!(
            "the remote fsync-repl ended with {}; is --remote-bin right?",
            other.map_or("a signal".to_string(), |c| format!("exit code {c}"))
        ))),
    }
}

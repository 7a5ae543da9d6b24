//! The flags of `watch` and `status`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::engine_args::{EngineArgs, RemoteArgs};
use crate::engine::{StateRef, Status};
use crate::error::{Error, Result};

pub(super) const WATCH_DETAILS: &str = concat!(
    "\
Backends: run as root on a filesystem that reports file handles (ext4, xfs, btrfs, tmpfs
on Linux 6.6+), watch places one fanotify mark per filesystem under SRC: no watch limit
and no start-up walk. Otherwise (or with --backend inotify) every directory needs an
inotify watch; when fs.inotify.max_user_watches is too small, one warning names the
value to set, and the directories left without a watch are rescanned every
--poll-interval. The first line of the run names the backend. A kernel queue overflow
rescans the affected tree (logged once per incident); --rescan-interval runs a full
reconcile periodically anyway.

Fairness: pending changes are kept per top-level directory of SRC (a home); a batch takes
one dirty directory of each home in turn and stops near --max-batch changes, so a burst in
one home delays another's change by about one batch. `status` shows the lag and pending
directories per home.

State: --state-file (default $XDG_STATE_HOME/fsync-repl/watch-<key>.json, or under
~/.local/state) records the last successful batch, pending directories, the lag and
the last error; `fsync-repl status` prints it. SIGTERM or SIGINT starts nothing new, lets the
files in flight finish and puts them in place (up to 30 s; a file cut short stays as it
was in DEST), saves the dirty set and exits 0. The next start of the same SRC, DEST and selection then resumes without a full push:
the saved directories plus those that changed while stopped, found by a walk of SRC alone
(by ctime, which no tool can set back). A watch that was killed, a replaced SRC or local
DEST, changed excludes, or --full-start begin with a full push. Changes made in DEST itself
are repaired by the periodic reconcile.

",
    exit_codes!()
);

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Source directory to watch (its contents are replicated).
    pub src: OsString,
    /// Destination directory (created if missing); `[user@]host:path` for a remote one.
    pub dest: OsString,
    /// Quiet time after the last change before a batch starts (250ms, 2s, ...).
    #[arg(long, value_name = "DURATION", default_value = "250ms")]
    pub delay: String,
    /// Start a batch at once when this many distinct paths changed; a batch takes
    /// about this many changes (round-robin across the homes).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_batch: usize,
    /// Full reconcile of the whole tree this often (jittered by 10%).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub rescan_interval: String,
    /// Rescan directories that have no inotify watch (the watch limit) this often.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub poll_interval: String,
    /// First wait after a failed batch; each further failure doubles it.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub retry_min: String,
    /// Longest wait between attempts while the destination fails.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub retry_max: String,
    /// Where to keep the watch's state (see `fsync-repl status`).
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Write messages to FILE instead of stderr (appended; reopened on SIGHUP, so it
    /// can be rotated).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Begin with a full push even when the last watch of this pair stopped cleanly.
    #[arg(long)]
    pub full_start: bool,
    /// How changes are reported: fanotify (one mark per filesystem; needs root),
    /// inotify (a watch per directory), or auto: fanotify when it can, else inotify.
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "auto")]
    pub backend: BackendArg,
    /// Write Prometheus textfile metrics (lag per home, batches, bytes, errors, last
    /// success) to FILE, atomically, at most once a second.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Events buffered between the watcher thread and the batches; past it, the
    /// directories concerned are rescanned instead.
    #[arg(long, value_name = "N", default_value_t = 65_536, hide = true)]
    pub queue: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `DEST`, or `SRC DEST`, of a watch that used the default state file.
    #[arg(num_args = 0..=2, value_name = "[SRC] DEST")]
    pub pair: Vec<OsString>,
    /// The state file to read.
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Print the state as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl StatusArgs {
    /// Which watch state these arguments name.
    pub fn to_status(&self) -> Result<Status> {
        let state = match (&self.state_file, self.pair.as_slice()) {
            (Some(f), []) => StateRef::File(f.clone()),
            (None, [dest]) => StateRef::Dest(dest.clone()),
            (None, [src, dest]) => StateRef::Pair(src.into(), dest.clone()),
            _ => {
                return Err(Error::Usage(
                    "status needs DEST, the watch's SRC and DEST, or --state-file FILE".into(),
                ))
            }
        };
        Ok(Status {
            state,
            json: self.json,
        })
    }
}

impl WatchArgs {
    /// The watch loop's settings (the state file defaults by SRC and DEST).
    pub fn to_watch_options(&self, src: &std::path::Path) -> Result<crate::watch::WatchOptions> {
        let d = |flag: &str, v: &str| {
            crate::units::parse_duration(v).map_err(|e| Error::Usage(format!("{flag} {e}")))
        };
        let delay = d("--delay", &self.delay)?;
        let rescan_interval = d("--rescan-interval", &self.rescan_interval)?;
        let poll_interval = d("--poll-interval", &self.poll_interval)?;
        let retry_min = d("--retry-min", &self.retry_min)?;
        let retry_max = d("--retry-max", &self.retry_max)?;
        for (flag, v) in [
            ("--rescan-interval", rescan_interval),
            ("--poll-interval", poll_interval),
            ("--retry-min", retry_min),
        ] {
            if v.is_zero() {
                return Err(Error::Usage(format!("{flag} 0: give a positive duration")));
            }
        }
        if self.max_batch == 0 {
            return Err(Error::Usage("--max-batch 0: give at least 1".into()));
        }
        if self.engine.dry_run {
            return Err(Error::Usage(
                "watch has no --dry-run; use push --dry-run to see what would change".into(),
            ));
        }
        Ok(crate::watch::WatchOptions {
            delay,
            max_batch: self.max_batch,
            rescan_interval,
            poll_interval,
            retry_min,
            retry_max,
            state_file: self
                .state_file
                .clone()
                .unwrap_or_else(|| crate::watch::state::default_path(src, &self.dest)),
            dest_name: self.dest.to_string_lossy().into_owned(),
            queue: self.queue,
            grace: std::time::Duration::from_secs(30),
            log_file: self.log_file.clone(),
            reopen: Default::default(),
            full_start: self.full_start,
            backend: match self.backend {
                BackendArg::Auto => crate::watch::Backend::Auto,
                BackendArg::Fanotify => crate::watch::Backend::Fanotify,
                BackendArg::Inotify => crate::watch::Backend::Inotify,
            },
            metrics_file: self.metrics_file.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// fanotify when it can watch SRC, otherwise inotify.
    Auto,
    /// One fanotify mark per filesystem (root; ext4, xfs, btrfs, tmpfs on Linux 6.6+).
    Fanotify,
    /// An inotify watch per directory (fs.inotify.max_user_watches applies).
    Inotify,
}

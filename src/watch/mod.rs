//! Continuous replication: `fsync-repl watch SRC DEST` follows the kernel's change
//! notifications (fanotify or inotify) and pushes only what changed.
//!
//! The parts, each apart from I/O where it can be: [`event`] is the change model and
//! its pure conversions; [`fanotify`] (one mark per filesystem, with CAP_SYS_ADMIN)
//! and [`inotify`] (a watch per directory, the fallback) turn kernel events into
//! changes and hand them over a bounded channel (a full channel or a kernel
//! queue overflow marks directories for a rescan, never drops); [`debounce`] turns
//! changes into a dirty set and cuts batches (a pure function of events and an injected
//! clock); [`backoff`] times retries; [`resume`] picks up after a clean stop; [`run`]
//! is the loop that feeds every batch to the
//! ordinary scan → plan → transfer pipeline limited to the dirty [`crate::scope::Scope`]
//! — there is no second copy engine — through one long-lived destination session
//! ([`session`]); [`state`] is the state file `fsync-repl status` reads, [`metrics`]
//! the Prometheus textfile of `--metrics-file`.
//!
//! Invariants kept on top of the push's: a change is never forgotten (a failed batch
//! goes back into the dirty set), deletes happen only inside the scope both sides
//! listed, and a vanished or replaced source root stops the watch before anything is
//! written.

pub mod backoff;
pub mod debounce;
pub mod event;
pub mod fanotify;
pub mod inotify;
mod kernel;
pub mod metrics;
pub mod resume;
pub mod run;
pub mod session;
mod start;
pub mod state;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use run::run;

/// Which kernel interface reports changes (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// fanotify when it can serve SRC (CAP_SYS_ADMIN, a filesystem with file handles),
    /// inotify otherwise.
    #[default]
    Auto,
    Fanotify,
    Inotify,
}

/// Settings of the watch loop (from `watch`'s flags).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last event before a batch starts (`--delay`).
    pub delay: Duration,
    /// A batch starts at once when this many distinct paths changed (`--max-batch`).
    pub max_batch: usize,
    /// Period of the full reconcile, jittered by ±10% (`--rescan-interval`).
    pub rescan_interval: Duration,
    /// How often directories without a watch are rescanned (`--poll-interval`).
    pub poll_interval: Duration,
    /// First and longest wait between failed attempts (`--retry-min`, `--retry-max`).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Where the state is written (`--state-file`).
    pub state_file: PathBuf,
    /// DEST as given, for the state file.
    pub dest_name: String,
    /// Events the channel holds before directories are marked for a rescan instead.
    pub queue: usize,
    /// How long a signal lets the running batch finish.
    pub grace: Duration,
    /// Where stderr goes (`--log-file`); reopened when `reopen` is set (SIGHUP).
    pub log_file: Option<PathBuf>,
    pub reopen: Arc<AtomicBool>,
    /// Begin with a full push even after a clean stop (`--full-start`).
    pub full_start: bool,
    /// The change notification interface (`--backend`).
    pub backend: Backend,
    /// Prometheus textfile metrics written here (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
}

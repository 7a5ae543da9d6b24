//! The engine's entry: one typed request per operation, one function that runs it.
//!
//! The command line (`cli`) and a backup job of the config file both produce a
//! [`Request`]: where from and where to (each a [`Location`]), the run's [`Options`]
//! with every derived default settled, and the [`Remote`] settings. [`run`] carries
//! it out and turns its outcome into the exit code, printing the closing report.
//! Below this layer everything returns values and typed errors:
//! `scan` → `plan` → `transfer` → [`crate::dest::Destination`].

mod backup;
mod backup_all;
pub mod far;
mod push;
mod remote;
pub mod restore;
mod serve;
mod snapshots;
mod watch;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use crate::ssh::Location;
pub use remote::Remote;

use crate::error::Result;
use crate::options::DiskSettings;
use crate::options::Options;
use crate::report::Report;
use crate::snapshot::retention::Policy;
use crate::transfer::{Output, ProgressMode};

/// What to do: one variant per operation.
pub enum Request {
    Push(Transfer),
    Pull(Transfer),
    Serve(Serve),
    Watch(Watch),
    Status(Status),
    Backup(Backup),
    BackupAll(BackupAll),
    Snapshot(Snapshot),
    Snapshots(Snapshots),
    Prune(Prune),
    Versions(restore::Versions),
    Restore(restore::Restore),
    Verify(restore::Verify),
}

/// A push (local SRC) or a pull (remote SRC into a local DEST).
pub struct Transfer {
    pub src: Location,
    pub dest: Location,
    pub opts: Options,
    pub remote: Remote,
}

impl Transfer {
    /// A transfer with the defaults a remote end implies settled.
    pub fn new(src: Location, dest: Location, mut opts: Options, remote: Remote) -> Transfer {
        if src.is_remote() || dest.is_remote() {
            opts.settle_for_wire();
        }
        Transfer {
            src,
            dest,
            opts,
            remote,
        }
    }
}

/// The far side of a remote push (`send: false`) or pull (`send: true`).
pub struct Serve {
    pub root: PathBuf,
    pub send: bool,
    /// Idle timeout in seconds (0: never).
    pub timeout: u64,
    pub opts: Options,
}

impl Serve {
    /// A session with the defaults of its role settled: the sending end of a pull
    /// sends over the wire.
    pub fn new(root: PathBuf, send: bool, timeout: u64, mut opts: Options) -> Serve {
        if send {
            opts.settle_for_wire();
        }
        Serve {
            root,
            send,
            timeout,
            opts,
        }
    }
}

/// A continuous replication.
pub struct Watch {
    pub src: Location,
    pub dest: Location,
    pub opts: Options,
    pub watch: crate::watch::WatchOptions,
    pub remote: Remote,
}

impl Watch {
    /// A watch mirrors (renames need deletes), over the wire when DEST is remote.
    pub fn new(
        src: Location,
        dest: Location,
        mut opts: Options,
        watch: crate::watch::WatchOptions,
        remote: Remote,
    ) -> Watch {
        opts.settle_for_mirror();
        if dest.is_remote() {
            opts.settle_for_wire();
        }
        Watch {
            src,
            dest,
            opts,
            watch,
            remote,
        }
    }
}

/// Which watch state to print.
pub struct Status {
    /// The state file, or how to find it.
    pub state: StateRef,
    pub json: bool,
}

/// How `status` names a watch.
pub enum StateRef {
    File(PathBuf),
    /// The default state file of the watch into this DEST.
    Dest(std::ffi::OsString),
    /// The default state file of this SRC and DEST.
    Pair(PathBuf, std::ffi::OsString),
}

/// Where a backup's results are recorded besides the terminal.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// One line per job appended here.
    pub log_file: Option<PathBuf>,
    /// Prometheus textfile metrics written here.
    pub metrics_file: Option<PathBuf>,
}

/// One backup: push into DEST/current, snapshot, prune.
pub struct Backup {
    pub src: Location,
    /// DEST as given, for messages and the lock's key.
    pub name: String,
    pub dest: Location,
    pub opts: Options,
    pub policy: Policy,
    pub prune_when_full: bool,
    pub remote: Remote,
    pub record: Record,
}

impl Backup {
    /// A backup (no retention rule, no record yet) with what it implies settled: it
    /// mirrors into DEST/current, which must not be a symlink planted to lead the push
    /// outside DEST.
    pub fn new(
        src: Location,
        name: String,
        dest: Location,
        mut opts: Options,
        remote: Remote,
    ) -> Backup {
        opts.settle_for_mirror();
        opts.no_follow_dest = true;
        Backup {
            src,
            name,
            dest,
            opts,
            policy: Policy::default(),
            prune_when_full: false,
            remote,
            record: Record::default(),
        }
    }
}

/// Every job of the config file.
pub struct BackupAll {
    /// The config file (`None`: the default places).
    pub config: Option<PathBuf>,
    /// Jobs run at once.
    pub parallel: usize,
    /// What the command line gives every job; a job's own keys override it.
    pub base: Options,
    pub policy: Policy,
    pub prune_when_full: bool,
    pub remote: Remote,
    pub record: Record,
}

/// A snapshot of DEST/current.
pub struct Snapshot {
    pub dest: Location,
    pub push_exit: Option<i32>,
    pub source: Option<String>,
    pub json: bool,
    pub policy: Policy,
    pub disk: DiskSettings,
    pub remote: Remote,
}

/// The list of DEST's snapshots.
pub struct Snapshots {
    pub dest: Location,
    pub json: bool,
    pub remote: Remote,
}

/// Retention applied to DEST's snapshots.
pub struct Prune {
    pub dest: Location,
    pub dry_run: bool,
    /// Give up snapshots until this many more bytes are free (a backup's far side).
    pub make_room: Option<u64>,
    pub policy: Policy,
    pub disk: DiskSettings,
    pub remote: Remote,
}

/// Runs `request`; returns the process exit code. `interrupted` is set by SIGINT/SIGTERM.
pub fn run(request: Request, interrupted: Arc<AtomicBool>) -> i32 {
    let report = match request {
        Request::Push(t) => push::push(&t, interrupted).map(|r| (t.opts, r)),
        Request::Pull(t) => push::pull(&t, interrupted).map(|r| (t.opts, r)),
        Request::Serve(s) => return serve::serve(&s, interrupted),
        Request::Watch(w) => return finish(watch::watch(w, interrupted)),
        Request::Status(s) => return finish(watch::status(&s)),
        Request::Backup(b) => return backup::backup(&b, interrupted),
        Request::BackupAll(b) => return backup_all::run_all(&b, interrupted),
        Request::Snapshot(s) => return snapshots::snapshot(&s, interrupted),
        Request::Snapshots(s) => return snapshots::snapshots(&s),
        Request::Prune(p) => return snapshots::prune(&p, interrupted),
        Request::Versions(v) => return restore::versions_cmd(&v),
        Request::Restore(r) => return restore::restore_cmd(&r, interrupted),
        Request::Verify(v) => return restore::verify_cmd(&v, interrupted),
    };
    match report {
        Ok((opts, report)) => print_report(&opts, &report),
        Err(e) => fail(e),
    }
}

/// The exit code of a command without a closing report, printing its error.
fn finish(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Prints `e` (unless a far side already said why) and returns its exit code.
pub fn fail(e: crate::Error) -> i32 {
    let msg = e.to_string();
    if !msg.is_empty() {
        eprintln!("fsync-repl: {msg}");
    }
    e.exit_code().code()
}

fn print_report(opts: &Options, report: &Report) -> i32 {
    for e in &report.errors {
        eprintln!("fsync-repl: {e}");
    }
    if opts.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else if !opts.quiet {
        println!("{}", report.human());
    }
    report.exit_code
}

/// Terminal output: items on stdout (stderr when stdout carries JSON), warnings on
/// stderr (none when quiet and `quiet_warnings`), a progress bar on a terminal.
struct Term {
    progress: ProgressMode,
    items_to_stderr: bool,
    quiet_warnings: bool,
}

impl Term {
    fn for_options(opts: &Options) -> Term {
        Term {
            progress: match (opts.quiet, std::io::stderr().is_terminal(), opts.progress) {
                (true, _, _) => ProgressMode::Off,
                (false, true, _) => ProgressMode::Terminal,
                (false, false, true) => ProgressMode::Lines,
                (false, false, false) => ProgressMode::Off,
            },
            items_to_stderr: opts.json,
            quiet_warnings: false,
        }
    }
}

impl Output for Term {
    fn item(&self, line: &str) {
        if self.items_to_stderr {
            eprintln!("{line}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
    fn warn(&self, line: &str) {
        if !self.quiet_warnings {
            eprintln!("fsync-repl: {line}");
        }
    }
    fn progress(&self) -> ProgressMode {
        self.progress
    }
}

//! Command-line syntax (clap) and its conversion into [`Options`].
//!
//! Only this module knows about clap: parsing validates the syntax, then
//! [`EngineArgs::to_options`] builds the plain options value the engine runs on
//! (the split ripgrep and fd use). The man page is generated from these definitions
//! by [`man_pages`]; `tests/man.rs` keeps the pages in `man/` current.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::config::{parse_rate, parse_reserve, FsyncMode, Options};
use crate::error::{Error, Result};

/// The exit-code table, shown by every command's help and the man pages.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0   everything replicated
  1   usage error (bad option or argument)
  2   protocol error with a remote peer, or it went silent or stopped reading past --timeout
  3   selection error: SRC or DEST missing or unusable, or SRC is not the source
      the replica was made from (see --accept-new-source)
  11  destination I/O error or not enough space on the destination
  12  destination busy: another run holds its lock (backup, snapshot, prune)
  20  interrupted by SIGINT or SIGTERM
  23  partial transfer: some files failed, the rest were replicated
  24  some source files vanished before they could be copied
  25  refused before deleting anything: more deletes than --max-delete allows"
    };
}

const EXIT_CODES: &str = exit_codes!();

const PUSH_DETAILS: &str = concat!(
    "\
Change detection: size and mtime; with --checksum, BLAKE3 of files of equal size. A
metadata-only change is applied in place unless the file has other hard links, in which
case it is rewritten so the other links never change.

Filters use gitignore syntax: --exclude and --exclude-from patterns apply from SRC's
root; .fsyncignore files apply to their directory and below, deeper files override
shallower ones, !pattern re-includes. Hidden and .gitignore'd files are copied. Excluded
paths are never deleted from DEST unless --delete-excluded.

Move detection: a new file whose content matches a file DEST holds at a path this run
deletes is renamed inside DEST; one whose twin stays is copied inside DEST.

Durability (--fsync): batch writes up to 2048 temporary files, makes them durable with
one syncfs, then renames them; file fsyncs each temporary file before its rename; none
relies on rename atomicity alone. Leftover .NAME.fsync-tmp.* files of a killed run are
removed by the next run.

Itemized lines (-i, --dry-run): two characters, a space, the path. First: + create,
> new content, . metadata only, ~ moved inside DEST (<= OLD), c copied inside DEST
(<= TWIN), = hard link (=> FIRST), - delete. Second: f file, d directory, L symlink
(-> TARGET), p FIFO, s socket, D device. Control characters, backslashes and non-UTF-8
bytes are escaped as \\xNN and \\\\.

",
    exit_codes!()
);

/// Replicate home directories to a secondary disk or host without starving user I/O.
#[derive(Debug, Parser)]
#[command(name = "fsync-repl", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DEST an exact replica of the contents of SRC.
    ///
    /// SRC's contents are mirrored into DEST whatever trailing slashes say; DEST is
    /// created if missing. Regular files, directories, symlinks (never followed), hard
    /// links, sparse files, permissions and nanosecond mtimes are replicated; owners,
    /// devices and FIFOs when running as root. Every destination file is written to a
    /// temporary file beside it, made durable and renamed into place, so an interrupted
    /// run leaves each file either old or new.
    #[command(after_help = EXIT_CODES, after_long_help = PUSH_DETAILS)]
    Push(PushArgs),
    /// Restore: make the local DEST a replica of the remote `[user@]host:SRC`.
    ///
    /// The remote side runs the engine (`fsync-repl serve --send`) and this side writes
    /// DEST with the same code as push: same semantics, options, output and exit codes.
    #[command(after_help = EXIT_CODES)]
    Pull(PushArgs),
    /// The far side of a remote push or pull, started over ssh; speaks the protocol on
    /// stdin and stdout, logs to stderr, and never leaves ROOT.
    Serve(ServeArgs),
    /// Keep DEST a replica of SRC continuously: one full push, then every change
    /// within about a second (fanotify as root, else inotify).
    ///
    /// After the first full push, the kernel's change notifications mark directories
    /// dirty; after --delay of quiet (or at --max-batch changed paths) a batch runs the
    /// same scan, plan and transfer as push on the dirty directories only, so renames
    /// inside SRC become renames on DEST. Watch always deletes what SRC no longer has
    /// (like push --delete). A remote DEST keeps one session across batches. When DEST
    /// misbehaves (full, unreachable, refusing writes) the changes are kept and retried
    /// with back-off from --retry-min to --retry-max until it recovers. If SRC's root
    /// disappears or is unmounted, watch stops with exit 3 and DEST is left untouched.
    /// SIGINT/SIGTERM start nothing new, let the files in flight finish (30 s at most),
    /// save the state file and exit 0.
    #[command(after_help = EXIT_CODES, after_long_help = WATCH_DETAILS)]
    Watch(WatchArgs),
    /// Print the state of a watch: backend, last successful batch, pending changes, lag
    /// per home, last error.
    Status(StatusArgs),
    /// Push SRC into DEST/current, then snapshot it (only if the push succeeded) and
    /// prune by the --keep-* rules; safe to run from cron.
    ///
    /// DEST may be `[user@]host:path`: the push goes over the remote transport and the
    /// snapshot and prune run on the far side. A second run on a DEST whose lock is held
    /// exits at once with code 12. With --all, runs every job of the config file.
    #[command(after_help = EXIT_CODES, after_long_help = BACKUP_DETAILS)]
    Backup(BackupArgs),
    /// Take a snapshot of DEST/current as DEST/snapshots/<UTC time>.
    #[command(after_help = EXIT_CODES)]
    Snapshot(SnapshotArgs),
    /// List DEST's snapshots: time, files, size, size added, push status.
    #[command(after_help = EXIT_CODES)]
    Snapshots(SnapshotsArgs),
    /// Remove DEST's snapshots that no --keep-* rule keeps.
    #[command(after_help = EXIT_CODES, after_long_help = RETENTION_DETAILS)]
    Prune(PruneArgs),
}

const WATCH_DETAILS: &str = concat!(
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

impl WatchArgs {
    /// The watch loop's settings (the state file defaults by SRC and DEST).
    pub fn to_watch_options(&self, src: &std::path::Path) -> Result<crate::watch::WatchOptions> {
        let d = |flag: &str, v: &str| {
            crate::config::parse_duration(v).map_err(|e| Error::Usage(format!("{flag} {e}")))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// Make each batch of temporary files durable with one syncfs before renaming it.
    Batch,
    /// fsync every temporary file before its rename (slower on many small files).
    File,
    /// No durability barrier: renames stay atomic for a crash of this process only.
    None,
}

/// Arguments of `push` and `pull`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Source directory (its contents are replicated); `[user@]host:path` for `pull`.
    pub src: OsString,
    /// Destination directory (created if missing); `[user@]host:path` for a remote one.
    pub dest: OsString,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How the remote side is reached.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Remote shell command instead of `ssh -T -o BatchMode=yes` (split like a shell
    /// would; the host and the remote command are appended).
    #[arg(short = 'e', long, value_name = "CMD")]
    pub rsh: Option<String>,
    /// ssh port of the remote host.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Path of fsync-repl on the remote host.
    #[arg(long, value_name = "PATH", default_value = "fsync-repl")]
    pub remote_bin: OsString,
    /// Give up when the remote side stays silent, or stops reading, this long (seconds;
    /// 0: never). The handshake gets at most 30 s.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Refuse a remote listing of more than N entries (or of more than N × 256 bytes of
    /// memory): a bound on what a far side can make this side hold.
    #[arg(long, value_name = "N", default_value_t = crate::dest::remote::MAX_LISTING)]
    pub max_listing: u64,
    /// Do not share one ssh connection between consecutive runs to the same host (by
    /// default, when the remote shell is ssh, the first run leaves a master connection
    /// open for 60 s, its socket in $XDG_RUNTIME_DIR/fsync-repl or /tmp/fsync-repl-UID).
    #[arg(long)]
    pub no_reuse: bool,
}

impl RemoteArgs {
    /// The remote shell these flags describe.
    pub fn shell(&self) -> crate::ssh::RemoteShell {
        crate::ssh::RemoteShell {
            rsh: self.rsh.clone(),
            port: self.port,
            remote_bin: self.remote_bin.clone(),
            reuse: !self.no_reuse,
        }
    }
}

/// Arguments of `serve`, the far side of a remote push or pull.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The directory this session is confined to.
    pub root: OsString,
    /// Run the replication engine with ROOT as the source (the far side of `pull`).
    #[arg(long)]
    pub send: bool,
    /// Give up when the peer stays silent, or stops reading, this long (seconds; 0: never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Options of the replication engine, shared by push, pull and serve.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Delete destination files that the source no longer has.
    #[arg(long)]
    pub delete: bool,
    /// With --delete, also delete excluded files from the destination.
    #[arg(long)]
    pub delete_excluded: bool,
    /// Refuse a run that would delete more than N entries, or more than PCT% of
    /// DEST's entries. Default: refuse deleting more than half of DEST (when that is
    /// over 100 entries). Any delete from an empty SRC is refused whatever the limit
    /// short of 100%, which turns the guard off.
    #[arg(long, value_name = "N|PCT%")]
    pub max_delete: Option<String>,
    /// Accept a SRC that is not the one this replica was made from (another
    /// filesystem or root directory, e.g. the homes moved to a new disk) and record it.
    /// Without it such a run stops with exit 3 before deleting anything.
    #[arg(long)]
    pub accept_new_source: bool,
    /// Compare file contents (BLAKE3) instead of size and mtime.
    #[arg(short = 'c', long)]
    pub checksum: bool,
    /// Exclude paths matching GLOB (gitignore syntax; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (gitignore syntax).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Do not cross filesystem boundaries in SRC (mount points are kept as empty directories).
    #[arg(short = 'x', long)]
    pub one_file_system: bool,
    /// Replicate extended attributes.
    #[arg(short = 'X', long)]
    pub xattrs: bool,
    /// Keep owners as numeric uid/gid (always the case for local destinations).
    #[arg(long)]
    pub numeric_ids: bool,
    /// Use rolling-checksum deltas for changed files (default for local: whole files).
    #[arg(long, conflicts_with = "whole_file")]
    pub delta: bool,
    /// Compress file data and deltas on the wire (zstd; remote transfers only).
    #[arg(short = 'z', long)]
    pub compress: bool,
    /// Always copy changed files whole.
    #[arg(short = 'W', long)]
    pub whole_file: bool,
    /// Worker threads for scanning and copying [default: number of cores].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Free space to keep on the destination: a size (10G, 500M) or a percentage (5%).
    /// Default: 5% of the filesystem, at most 10 GiB.
    #[arg(long, value_name = "SIZE|PCT")]
    pub min_free: Option<String>,
    /// How temporary files are made durable before their rename.
    #[arg(long, value_enum, default_value = "batch")]
    pub fsync: FsyncArg,
    /// Limit disk bytes read and written per second (binary units: 20M = 20 MiB/s).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Limit metadata operations (creates, renames, links, unlinks, fsyncs) per second.
    #[arg(long, value_name = "N")]
    pub iops_limit: Option<u32>,
    #[command(flatten)]
    pub priority: PriorityArgs,
    /// Back off when other processes wait on the disk more than PCT% of the time
    /// (the kernel's I/O pressure minus the tool's own waits) or read more than 2 MiB/s
    /// from the disks under SRC and DEST.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    pub max_io_pressure: f64,
    /// Never back off below this rate, so progress never stops.
    #[arg(long, value_name = "RATE", default_value = "1M")]
    pub min_rate: String,
    /// Do not adapt the rate to the disk's load (only --bwlimit applies).
    #[arg(long)]
    pub no_adaptive: bool,
    /// Leave what the run reads and writes in the page cache. By default the pages a
    /// run brings in are dropped once used (and written data once durable), so the
    /// users' cached files are not evicted; pages cached before the run stay.
    #[arg(long)]
    pub keep_cache: bool,
    /// Refuse a DEST whose last component is a symlink (backup's DEST/current).
    #[arg(long, hide = true)]
    pub no_follow_dest: bool,
    /// Show what would change and stop without writing anything.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print one line per change (see README: itemized output).
    #[arg(short = 'i', long)]
    pub itemize: bool,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print the closing summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print errors only.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// More detail (warnings for skipped files, timings).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl EngineArgs {
    /// Builds the engine's options, validating values clap cannot check alone.
    pub fn to_options(&self) -> Result<Options> {
        let mut excludes = self.exclude.clone();
        for file in &self.exclude_from {
            let text = std::fs::read(file).map_err(|e| {
                Error::Usage(format!(
                    "--exclude-from {}: {e}; give a readable file of patterns",
                    file.display()
                ))
            })?;
            for line in text.split(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(line)
                    .trim_end_matches('\r')
                    .to_string();
                if !line.trim().is_empty() && !line.starts_with('#') {
                    excludes.push(line);
                }
            }
        }
        let min_free = match &self.min_free {
            Some(s) => {
                Some(parse_reserve(s).map_err(|e| Error::Usage(format!("--min-free {s}: {e}")))?)
            }
            None => None,
        };
        let bwlimit = match &self.bwlimit {
            Some(s) => {
                Some(parse_rate(s).map_err(|e| Error::Usage(format!("--bwlimit {s}: {e}")))?)
            }
            None => None,
        };
        let priority = self.priority.to_priority()?;
        if !(0.0..=100.0).contains(&self.max_io_pressure) {
            return Err(Error::Usage(format!(
                "--max-io-pressure {}: give a percentage from 0 to 100",
                self.max_io_pressure
            )));
        }
        let min_rate = parse_rate(&self.min_rate)
            .map_err(|e| Error::Usage(format!("--min-rate {}: {e}", self.min_rate)))?;
        let adaptive = (!self.no_adaptive).then_some(crate::throttle::adaptive::Config {
            max_rate: bwlimit,
            min_rate: bwlimit.map_or(min_rate, |b| min_rate.min(b)),
            max_pressure: self.max_io_pressure / 100.0,
            ..Default::default()
        });
        if self.iops_limit == Some(0) {
            return Err(Error::Usage(
                "--iops-limit 0 would never finish; give a positive limit".into(),
            ));
        }
        if self.jobs == Some(0) {
            return Err(Error::Usage("--jobs 0: give at least 1 worker".into()));
        }
        let max_delete = match &self.max_delete {
            Some(s) => Some(
                crate::guard::parse_limit(s)
                    .map_err(|e| Error::Usage(format!("--max-delete {s}: {e}")))?,
            ),
            None => None,
        };
        Ok(Options {
            delete: self.delete || self.delete_excluded,
            delete_excluded: self.delete_excluded,
            checksum: self.checksum,
            excludes,
            one_file_system: self.one_file_system,
            xattrs: self.xattrs,
            delta: self.delta,
            jobs: self.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            min_free,
            fsync: match self.fsync {
                FsyncArg::Batch => FsyncMode::Batch,
                FsyncArg::File => FsyncMode::File,
                FsyncArg::None => FsyncMode::None,
            },
            bwlimit,
            iops_limit: self.iops_limit,
            adaptive,
            no_follow_dest: self.no_follow_dest,
            priority,
            dry_run: self.dry_run,
            itemize: self.itemize,
            progress: self.progress,
            json: self.json,
            quiet: self.quiet,
            verbose: self.verbose,
            max_delete,
            accept_new_source: self.accept_new_source,
            keep_cache: self.keep_cache,
            ..Options::default()
        })
    }
}

impl EngineArgs {
    /// The flags that make a remote `serve --send` run the engine as this side would
    /// (used by `pull`); `--exclude-from` files are read here and sent as patterns.
    pub fn forward(&self, opts: &Options) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut flag = |cond: bool, f: &str| {
            if cond {
                a.push(f.into());
            }
        };
        flag(self.delete, "--delete");
        flag(self.delete_excluded, "--delete-excluded");
        flag(self.checksum, "--checksum");
        flag(self.one_file_system, "--one-file-system");
        flag(self.xattrs, "--xattrs");
        flag(self.numeric_ids, "--numeric-ids");
        flag(self.whole_file, "--whole-file");
        flag(self.compress, "--compress");
        flag(self.accept_new_source, "--accept-new-source");
        flag(self.dry_run, "--dry-run");
        flag(self.itemize || self.dry_run, "--itemize");
        for p in &opts.excludes {
            a.push("--exclude".into());
            a.push(p.into());
        }
        if let Some(m) = &self.max_delete {
            a.push("--max-delete".into());
            a.push(m.into());
        }
        if let Some(j) = self.jobs {
            a.push("--jobs".into());
            a.push(j.to_string().into());
        }
        a.extend(self.forward_disk());
        a
    }

    /// The far side's own limits on its disk: reserve, rate, operations, priority, and
    /// the adaptive back-off's settings.
    pub fn forward_disk(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if self.no_adaptive {
            a.push("--no-adaptive".into());
        }
        a.push(format!("--max-io-pressure={}", self.max_io_pressure).into());
        a.push("--min-rate".into());
        a.push((&self.min_rate).into());
        if let Some(m) = &self.min_free {
            a.push("--min-free".into());
            a.push(m.into());
        }
        if let Some(b) = &self.bwlimit {
            a.push("--bwlimit".into());
            a.push(b.into());
        }
        if let Some(n) = self.iops_limit {
            a.push("--iops-limit".into());
            a.push(n.to_string().into());
        }
        a.extend(self.priority.forward());
        if self.keep_cache {
            a.push("--keep-cache".into());
        }
        a
    }
}

const RETENTION_DETAILS: &str = concat!(
    "\
Retention rules (restic's meaning): snapshots are taken newest first. --keep-last N
keeps the N newest. --keep-hourly/-daily/-weekly/-monthly N keep the newest snapshot of
each of the last N UTC hours, days, ISO weeks (Monday to Sunday) or months that have
one. --keep-within DURATION (h, d, w, m = 30 days, y = 365 days; e.g. 2w3d) keeps every
snapshot taken less than DURATION before the newest one. Rules add up; a snapshot any
rule keeps stays. The newest snapshot and the newest one of a successful push are never
removed. --dry-run prints each snapshot with what keeps it, or 'remove'.

",
    exit_codes!()
);

const BACKUP_DETAILS: &str = concat!(
    "\
Layout: DEST/current is the replica, DEST/snapshots/<UTC time> the snapshots (hard-link
copies of current), DEST/.fsync-repl the manifests and the lock. A push that fails
(any exit code but 0, or 24 when files vanished) takes no snapshot and prunes nothing.
backup implies --delete: current mirrors SRC, older snapshots keep what SRC deleted.

Retention rules (restic's meaning): --keep-last N keeps the N newest; --keep-hourly,
-daily, -weekly, -monthly N keep the newest snapshot of each of the last N UTC hours,
days, ISO weeks or months that have one; --keep-within DURATION keeps every snapshot
taken less than DURATION before the newest. The newest snapshot and the newest one of
a successful push are never removed.

--prune-when-full: when the push does not fit above the reserve, snapshots are given
up (first those the rules remove, then those they keep, oldest first; never the newest)
until it fits, on the far side for host:DEST; if it cannot fit, nothing is removed and
the exit code is 11.

Config file (--config, default /etc/fsync-repl.toml then ~/.config/fsync-repl/config.toml)
lists [[job]] entries; backup --all runs each of them, --parallel at a time (so a slow
job holds up none of the others), whatever the others do, and exits with the worst
job's code. See README: Backups.

",
    exit_codes!()
);

/// The `--keep-*` retention rules.
#[derive(Debug, Args, Clone, Default)]
pub struct RetentionArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every snapshot taken less than DURATION before the newest (e.g. 7d, 2w, 1y6m).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
}

impl RetentionArgs {
    /// The retention policy these flags describe.
    pub fn to_policy(&self) -> Result<crate::snapshot::retention::Policy> {
        let within_secs = match &self.keep_within {
            Some(d) => Some(
                crate::snapshot::retention::parse_duration(d)
                    .map_err(|e| Error::Usage(format!("--keep-within {e}")))?,
            ),
            None => None,
        };
        Ok(crate::snapshot::retention::Policy {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            within_secs,
        })
    }
}

/// CPU and I/O priority of every thread (`--ionice`, `--nice`).
#[derive(Debug, Args, Clone)]
pub struct PriorityArgs {
    /// I/O scheduling class of every thread: idle, best-effort:0-7, or none (leave it).
    /// Honoured by the BFQ scheduler and by mq-deadline since Linux 5.14.
    #[arg(long, value_name = "CLASS[:LEVEL]", default_value = "idle")]
    pub ionice: String,
    /// CPU niceness of every thread.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub nice: i32,
}

impl PriorityArgs {
    /// The priorities these flags describe.
    pub fn to_priority(&self) -> Result<crate::throttle::priority::Priority> {
        let io = crate::throttle::priority::IoClass::parse(&self.ionice)
            .map_err(|e| Error::Usage(format!("--ionice {e}")))?;
        if !(-20..=19).contains(&self.nice) {
            return Err(Error::Usage(format!(
                "--nice {}: give a niceness from -20 to 19",
                self.nice
            )));
        }
        Ok(crate::throttle::priority::Priority {
            io,
            nice: Some(self.nice),
        })
    }

    /// The same flags for a far-side command.
    pub fn forward(&self) -> Vec<OsString> {
        vec![
            "--ionice".into(),
            (&self.ionice).into(),
            format!("--nice={}", self.nice).into(),
        ]
    }
}

/// How hard snapshot and prune work may press on the disk.
#[derive(Debug, Args, Clone)]
pub struct DiskArgs {
    /// Limit links, unlinks, mkdirs (metadata operations) per second.
    #[arg(long, value_name = "N")]
    pub iops_limit: Option<u32>,
    #[command(flatten)]
    pub priority: PriorityArgs,
    /// Worker threads [default: number of cores].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Print errors only.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl DiskArgs {
    /// The plain settings these flags describe.
    pub fn to_settings(&self) -> Result<crate::jobs::DiskSettings> {
        let priority = self.priority.to_priority()?;
        if self.iops_limit == Some(0) || self.jobs == Some(0) {
            return Err(Error::Usage(
                "--iops-limit 0 and --jobs 0 would never finish; give a positive number".into(),
            ));
        }
        Ok(crate::jobs::DiskSettings {
            iops_limit: self.iops_limit,
            priority,
            jobs: self.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            quiet: self.quiet,
        })
    }

    /// The same flags for a far-side command.
    pub fn forward(&self) -> Vec<OsString> {
        let mut a = self.priority.forward();
        if let Some(n) = self.iops_limit {
            a.push(format!("--iops-limit={n}").into());
        }
        if let Some(j) = self.jobs {
            a.push(format!("--jobs={j}").into());
        }
        if self.quiet {
            a.push("--quiet".into());
        }
        a
    }
}

impl RetentionArgs {
    /// The same flags for a far-side command.
    pub fn forward(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        for (flag, v) in [
            ("--keep-last", self.keep_last),
            ("--keep-hourly", self.keep_hourly),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
        ] {
            if let Some(n) = v {
                a.push(format!("{flag}={n}").into());
            }
        }
        if let Some(w) = &self.keep_within {
            a.push(format!("--keep-within={w}").into());
        }
        a
    }
}

/// Arguments of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Source directory (its contents are backed up).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub src: Option<OsString>,
    /// Backup destination: DEST/current is the replica, DEST/snapshots the snapshots;
    /// `[user@]host:path` for a remote one.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub dest: Option<OsString>,
    /// Run every job of the config file.
    #[arg(long)]
    pub all: bool,
    /// With --all, how many jobs run at once, so one slow job does not hold up the
    /// rest (each keeps its own throttle and idle priority) [default: 2].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Config file listing jobs [default: $FSYNC_REPL_CONFIG, /etc/fsync-repl.toml,
    /// then ~/.config/fsync-repl/config.toml].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// When the push does not fit, remove the oldest snapshots (in retention order,
    /// never the newest) until it does.
    #[arg(long)]
    pub prune_when_full: bool,
    /// Append one line per job (time, job, outcome) to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Write Prometheus textfile-collector metrics per job to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Backup destination holding `current` (`[user@]host:path` runs it there).
    pub dest: OsString,
    /// Exit status of the push this snapshot captures (recorded in its manifest).
    #[arg(long, value_name = "CODE", hide = true)]
    pub push_exit: Option<i32>,
    /// Source of the push this snapshot captures (recorded in its manifest).
    #[arg(long, value_name = "SRC", hide = true)]
    pub source: Option<String>,
    /// Print the new snapshot's manifest as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub disk: DiskArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Backup destination (`[user@]host:path` lists the far side's).
    pub dest: OsString,
    /// Print a JSON array of manifests.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Backup destination (`[user@]host:path` prunes on the far side).
    pub dest: OsString,
    /// Show what would be removed and why each kept snapshot stays; remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Give up snapshots (removed by the rules first, then kept ones, oldest first, never
    /// the newest) until BYTES more are free; remove none if that cannot be done.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub make_room: Option<u64>,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub disk: DiskArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Renders the man pages from the clap definitions: `fsync-repl.1` for the tool and
/// one `fsync-repl-<command>.1` per subcommand, as (file name, contents) pairs.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = Cli::command();
    let mut pages = vec![("fsync-repl.1".to_string(), render(cmd.clone()))];
    for sub in cmd.get_subcommands() {
        let name = format!("fsync-repl-{}", sub.get_name());
        let page = render(
            sub.clone()
                .name(name.clone())
                .version(env!("CARGO_PKG_VERSION")),
        );
        pages.push((format!("{name}.1"), page));
    }
    pages
}

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    // A Vec<u8> sink cannot fail.
    let _ = clap_mangen::Man::new(cmd).render(&mut out);
    out
}

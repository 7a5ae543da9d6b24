//! The flags of `backup`, `snapshot`, `snapshots` and `prune`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::engine_args::{EngineArgs, PriorityArgs, RemoteArgs};
use crate::engine::{Backup, BackupAll, Record, Request};
use crate::error::{Error, Result};
use crate::ssh::parse_location;

pub(super) const RETENTION_DETAILS: &str = concat!(
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

pub(super) const BACKUP_DETAILS: &str = concat!(
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
    pub fn to_settings(&self) -> Result<crate::options::DiskSettings> {
        disk_settings(self.iops_limit, &self.priority, self.jobs, self.quiet)
    }
}

/// The disk settings of `--iops-limit`, `--ionice`/`--nice`, `--jobs` and `--quiet`
/// (snapshot and prune; restore and verify add a byte rate).
pub(super) fn disk_settings(
    iops_limit: Option<u32>,
    priority: &PriorityArgs,
    jobs: Option<usize>,
    quiet: bool,
) -> Result<crate::options::DiskSettings> {
    let priority = priority.to_priority()?;
    if iops_limit == Some(0) || jobs == Some(0) {
        return Err(Error::Usage(
            "--iops-limit 0 and --jobs 0 would never finish; give a positive number".into(),
        ));
    }
    Ok(crate::options::DiskSettings {
        iops_limit,
        priority,
        jobs: jobs.unwrap_or_else(crate::options::default_jobs),
        jobs_given: jobs.is_some(),
        quiet,
    })
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

impl BackupArgs {
    /// The backup, or with `--all` the backups of the config file, these arguments
    /// describe.
    pub fn to_request(&self) -> Result<Request> {
        let opts = self.engine.to_options()?;
        let policy = self.retention.to_policy()?;
        let record = Record {
            log_file: self.log_file.clone(),
            metrics_file: self.metrics_file.clone(),
        };
        if self.all {
            return Ok(Request::BackupAll(BackupAll {
                config: self.config.clone(),
                parallel: self.parallel.unwrap_or(2),
                base: opts,
                policy,
                prune_when_full: self.prune_when_full,
                remote: self.remote.to_remote(),
                record,
            }));
        }
        if self.parallel.is_some() {
            return Err(Error::Usage(
                "--parallel applies to backup --all; a single backup runs one job".into(),
            ));
        }
        let (Some(src), Some(dest)) = (&self.src, &self.dest) else {
            return Err(Error::Usage("backup needs SRC and DEST, or --all".into()));
        };
        let mut b = Backup::new(
            parse_location(src)?,
            dest.to_string_lossy().into_owned(),
            parse_location(dest)?,
            opts,
            self.remote.to_remote(),
        );
        b.policy = policy;
        b.prune_when_full = self.prune_when_full;
        b.record = record;
        Ok(Request::Backup(b))
    }
}

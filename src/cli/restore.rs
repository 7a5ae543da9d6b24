//! Command-line syntax of `versions`, `restore`, `verify` and `completions`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{PriorityArgs, RemoteArgs};
use crate::engine::restore::{ReadSettings, Restore, Verify, Versions};
use crate::error::{Error, Result};
use crate::units::parse_rate;

pub(super) const RESTORE_DETAILS: &str = concat!(
    "\
Paths: each PATH is a path inside the snapshots (alice/doc.txt), or an absolute path
under the source the backups were made of (/home/alice/doc.txt when SRC was /home).
It is restored at TARGET/PATH: `restore /backup alice/doc.txt --to /home` puts the file
back where it was; parent directories missing in TARGET are created.

Choosing the snapshot: --snapshot NAME (a name from `fsync-repl snapshots`, or current);
--at TIME takes the newest snapshot taken at or before TIME that holds every PATH. TIME
is UTC: 2026-11-26 (a day alone means its end), 2026-11-26T03:00, yesterday, today,
now, '3 days ago', '12h ago'. Without either, the newest snapshot holding every PATH.

Safety: restore writes with the same engine as push (temporary file, durable, rename;
confined beneath TARGET; throttled; idle I/O priority by default) and deletes nothing.
A file that exists in TARGET and differs from the snapshot's (content, size, mtime,
mode, or kind) is never replaced without --overwrite: such a run restores nothing,
names the files and exits 3. --dry-run lists what would change.

",
    exit_codes!()
);

pub(super) const VERIFY_DETAILS: &str = concat!(
    "\
What is read: every file of the chosen snapshots (the newest by default; --snapshot
NAME; --all) is read once per inode, however many snapshots hard-link it, and its BLAKE3
compared with the snapshot's content catalogue (recorded when the snapshot was taken).
--against SRC also compares DEST/current with SRC: entries, kinds, symlink targets and,
for files, their content. Snapshots taken before catalogues existed are named and
skipped.

Every differing file is named on stdout (DIFFERS PATH: what); the exit code is 26 when
any differs. An interrupted verify (SIGINT, SIGTERM) keeps its progress in
DEST/.fsync-repl/verify-progress.json and the next verify of the same snapshots resumes
there (--restart starts over). --metrics-file writes the result (differing files,
files, bytes, duration, exit code, last success) as Prometheus textfile metrics.

",
    exit_codes!()
);

/// Arguments of `versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Backup destination (`[user@]host:path` looks on the far side).
    pub dest: OsString,
    /// The file or directory, inside the snapshots or under the backed-up source.
    pub path: OsString,
    /// Print the versions as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Do not look inside directories (every directory counts as one version): enough
    /// to tell where a path is, as `restore` asks the far side.
    #[arg(long, hide = true)]
    pub shallow: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How hard a restore or verify may press on the disks.
#[derive(Debug, Args, Clone)]
pub struct ReadArgs {
    /// Limit disk bytes read and written per second (binary units: 20M = 20 MiB/s).
    #[arg(long, value_name = "RATE")]
    pub bwlimit: Option<String>,
    /// Limit metadata operations per second.
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

impl ReadArgs {
    /// (rate, operations, priority, workers) after validation.
    pub fn to_settings(&self) -> Result<ReadSettings> {
        let bwlimit = match &self.bwlimit {
            Some(s) => {
                Some(parse_rate(s).map_err(|e| Error::Usage(format!("--bwlimit {s}: {e}")))?)
            }
            None => None,
        };
        let d =
            super::backup::disk_settings(self.iops_limit, &self.priority, self.jobs, self.quiet)?;
        Ok(ReadSettings {
            bwlimit,
            iops_limit: d.iops_limit,
            priority: d.priority,
            jobs: d.jobs,
            jobs_given: d.jobs_given,
            quiet: d.quiet,
        })
    }
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup destination holding the snapshots (`[user@]host:path` for a remote one).
    pub dest: OsString,
    /// Files or directories to restore (see PATHS below).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<OsString>,
    /// Directory to restore into: each PATH lands at TARGET/PATH.
    #[arg(long, value_name = "TARGET")]
    pub to: PathBuf,
    /// Restore from this snapshot (a name from `fsync-repl snapshots`, or current).
    #[arg(long, value_name = "NAME", conflicts_with = "at")]
    pub snapshot: Option<String>,
    /// Restore from the newest snapshot taken at or before TIME (UTC; 2026-11-26,
    /// 2026-11-26T03:00, yesterday, '3 days ago').
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Replace files in TARGET that differ from the snapshot's.
    #[arg(long)]
    pub overwrite: bool,
    /// Show what would change and stop without writing anything.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Print one line per change (as push -i).
    #[arg(short = 'i', long)]
    pub itemize: bool,
    /// Restore extended attributes too.
    #[arg(short = 'X', long)]
    pub xattrs: bool,
    /// Print the closing summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup destination (`[user@]host:path` verifies on the far side).
    pub dest: OsString,
    /// Verify this snapshot (repeatable) [default: the newest].
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub snapshot: Vec<String>,
    /// Verify every snapshot.
    #[arg(long)]
    pub all: bool,
    /// Also compare DEST/current with SRC by content (a local DEST only).
    #[arg(long, value_name = "SRC")]
    pub against: Option<PathBuf>,
    /// Start over instead of resuming an interrupted verify of the same snapshots.
    #[arg(long)]
    pub restart: bool,
    /// Show a progress bar even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the result as Prometheus textfile-collector metrics to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// A shell to complete for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell (bash: source the output or put it in
    /// /usr/share/bash-completion/completions/fsync-repl).
    #[arg(value_enum)]
    pub shell: ShellArg,
}

impl VersionsArgs {
    /// The request these arguments describe.
    pub fn to_request(&self) -> Versions {
        Versions {
            dest: self.dest.clone(),
            path: self.path.clone(),
            json: self.json,
            shallow: self.shallow,
            remote: self.remote.to_remote(),
        }
    }
}

impl RestoreArgs {
    /// The request these arguments describe.
    pub fn to_request(&self) -> Result<Restore> {
        Ok(Restore {
            dest: self.dest.clone(),
            paths: self.paths.clone(),
            to: self.to.clone(),
            snapshot: self.snapshot.clone(),
            at: self.at.clone(),
            overwrite: self.overwrite,
            dry_run: self.dry_run,
            itemize: self.itemize,
            xattrs: self.xattrs,
            json: self.json,
            read: self.read.to_settings()?,
            remote: self.remote.to_remote(),
        })
    }
}

impl VerifyArgs {
    /// The request these arguments describe.
    pub fn to_request(&self) -> Result<Verify> {
        Ok(Verify {
            dest: self.dest.clone(),
            snapshot: self.snapshot.clone(),
            all: self.all,
            against: self.against.clone(),
            restart: self.restart,
            progress: self.progress,
            json: self.json,
            metrics_file: self.metrics_file.clone(),
            read: self.read.to_settings()?,
            remote: self.remote.to_remote(),
        })
    }
}

impl CompletionsArgs {
    /// Prints the completion script for the shell asked for.
    pub fn print(&self) {
        use clap::CommandFactory;
        let shell = match self.shell {
            ShellArg::Bash => clap_complete::Shell::Bash,
            ShellArg::Zsh => clap_complete::Shell::Zsh,
            ShellArg::Fish => clap_complete::Shell::Fish,
        };
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut super::Cli::command(), "fsync-repl", &mut out);
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &out);
    }
}

//! The flags shared by the commands that run the replication engine, and their
//! conversion into [`Options`] and [`Remote`] settings.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::engine::{Remote, Transfer};
use crate::error::{Error, Result};
use crate::options::{FsyncMode, Options};
use crate::space::parse_reserve;
use crate::ssh::parse_location;
use crate::units::parse_rate;

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

impl PushArgs {
    /// The transfer these arguments describe (push and pull alike).
    pub fn to_transfer(&self) -> Result<Transfer> {
        Ok(Transfer::new(
            parse_location(&self.src)?,
            parse_location(&self.dest)?,
            self.engine.to_options()?,
            self.remote.to_remote(),
        ))
    }
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
    /// The remote settings these flags describe.
    pub fn to_remote(&self) -> Remote {
        Remote {
            shell: crate::ssh::RemoteShell {
                rsh: self.rsh.clone(),
                port: self.port,
                remote_bin: self.remote_bin.clone(),
                reuse: !self.no_reuse,
            },
            timeout: self.timeout,
            max_listing: self.max_listing,
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
    /// Compress everything on the wire harder (zstd level 12), large files' data included
    /// (remote transfers only). Without it requests, deltas and small files still go
    /// through zstd level 1; already-compressed file types (jpg, zip, gz, mp4...) never do.
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
    /// Entries per piece of an initial copy, and per group of top-level directories
    /// when a remote DEST is compared with SRC (memory bound; tests use small ones).
    #[arg(long, value_name = "N", default_value_t = 1 << 16, hide = true)]
    pub piece_entries: usize,
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
            whole_file: self.whole_file,
            compress: self.compress,
            numeric_ids: self.numeric_ids,
            jobs_given: self.jobs.is_some(),
            jobs: self.jobs.unwrap_or_else(crate::options::default_jobs),
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
            piece_entries: self.piece_entries.max(1),
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
}

//! The command line: its syntax (clap) and its conversion, once, into a typed
//! [`Request`] for the engine.
//!
//! Only this module knows about clap. Parsing checks the syntax; [`Cli::into_request`]
//! checks the values clap cannot, turns every flag into the plain settings the
//! engine runs on ([`crate::options::Options`], [`crate::engine::Remote`], ...) and
//! leaves the defaults a request implies to the request's constructor (the split
//! ripgrep and fd use). The man pages are generated from these definitions by
//! [`man_pages`]; `tests/man.rs` keeps the pages in `man/` current.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::engine::{self, Location, Request};
use crate::error::{Error, Result};
use crate::ssh::parse_location;

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
  25  refused before deleting anything: more deletes than --max-delete allows
  26  verify found files that differ from their catalogue or from SRC (each named)"
    };
}

const EXIT_CODES: &str = exit_codes!();

mod restore;
pub use restore::*;

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
    /// A local SRC (a snapshot directory, say) is copied as push would copy it.
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
    /// Show every distinct version of a file or directory across DEST's snapshots and
    /// current: which snapshots hold it, its size and mtime, and where it stayed unchanged.
    #[command(after_help = EXIT_CODES)]
    Versions(VersionsArgs),
    /// Copy files or directories from a snapshot of DEST back into TARGET (the newest
    /// holding them, --snapshot NAME, or --at TIME); never replaces a differing file
    /// without --overwrite.
    #[command(after_help = EXIT_CODES, after_long_help = restore::RESTORE_DETAILS)]
    Restore(RestoreArgs),
    /// Re-read DEST's snapshots and check every file against its content catalogue
    /// (each inode once); --against SRC also compares current with SRC by content.
    #[command(after_help = EXIT_CODES, after_long_help = restore::VERIFY_DETAILS)]
    Verify(VerifyArgs),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(CompletionsArgs),
}

mod backup;
mod engine_args;
mod man;
mod watch;

pub use backup::{BackupArgs, DiskArgs, PruneArgs, RetentionArgs, SnapshotArgs, SnapshotsArgs};
pub use engine_args::{EngineArgs, FsyncArg, PriorityArgs, PushArgs, RemoteArgs, ServeArgs};
pub use man::man_pages;
pub use watch::{BackendArg, StatusArgs, WatchArgs};

use backup::{BACKUP_DETAILS, RETENTION_DETAILS};
use watch::WATCH_DETAILS;

/// Parses the process's arguments into a request. `Err` holds the exit code after
/// help, the version or shell completions were printed (0), or after a one-line
/// usage error (1).
pub fn parse() -> std::result::Result<Request, i32> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return Err(0);
        }
        Err(e) => {
            // One line, like every other error: clap's first line, then where to look.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let what = what.join(" ");
            eprintln!(
                "fsync-repl: {}; see fsync-repl --help",
                what.trim_start_matches("error: ")
            );
            return Err(1);
        }
    };
    if let Command::Completions(a) = &cli.command {
        a.print();
        return Err(0);
    }
    cli.into_request().map_err(engine::fail)
}

fn location(arg: &OsString) -> Result<Location> {
    parse_location(arg)
}

impl Cli {
    /// The engine request this command line stands for.
    pub fn into_request(self) -> Result<Request> {
        Ok(match self.command {
            Command::Push(a) => Request::Push(a.to_transfer()?),
            Command::Pull(a) => Request::Pull(a.to_transfer()?),
            Command::Serve(a) => Request::Serve(engine::Serve::new(
                a.root.clone().into(),
                a.send,
                a.timeout,
                a.engine.to_options()?,
            )),
            Command::Watch(a) => {
                let src = location(&a.src)?;
                let Location::Local(src_path) = &src else {
                    return Err(Error::Usage("watch needs a local SRC".into()));
                };
                let w = a.to_watch_options(src_path)?;
                Request::Watch(engine::Watch::new(
                    src,
                    location(&a.dest)?,
                    a.engine.to_options()?,
                    w,
                    a.remote.to_remote(),
                ))
            }
            Command::Status(a) => Request::Status(a.to_status()?),
            Command::Backup(a) => a.to_request()?,
            Command::Snapshot(a) => Request::Snapshot(engine::Snapshot {
                dest: location(&a.dest)?,
                push_exit: a.push_exit,
                source: a.source,
                json: a.json,
                policy: a.retention.to_policy()?,
                disk: a.disk.to_settings()?,
                remote: a.remote.to_remote(),
            }),
            Command::Snapshots(a) => Request::Snapshots(engine::Snapshots {
                dest: location(&a.dest)?,
                json: a.json,
                remote: a.remote.to_remote(),
            }),
            Command::Versions(a) => Request::Versions(a.to_request()),
            Command::Restore(a) => Request::Restore(a.to_request()?),
            Command::Verify(a) => Request::Verify(a.to_request()?),
            Command::Completions(_) => {
                return Err(Error::Usage(
                    "completions are printed while parsing, not run".into(),
                ))
            }
            Command::Prune(a) => Request::Prune(engine::Prune {
                dest: location(&a.dest)?,
                dry_run: a.dry_run,
                make_room: a.make_room,
                policy: a.retention.to_policy()?,
                disk: a.disk.to_settings()?,
                remote: a.remote.to_remote(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::far::{args, Far};

    fn request(argv: &[&str]) -> Request {
        let mut all = vec!["fsync-repl"];
        all.extend_from_slice(argv);
        Cli::try_parse_from(all).unwrap().into_request().unwrap()
    }

    /// The far side's command line, parsed as the far side parses it.
    fn far_side(far: &Far<'_>) -> Request {
        let mut argv: Vec<OsString> = vec!["fsync-repl".into()];
        argv.extend(args(far, 300, b"/some/where"));
        Cli::try_parse_from(argv).unwrap().into_request().unwrap()
    }

    #[test]
    fn a_pulls_far_side_runs_the_engine_as_this_side_would() {
        let Request::Pull(t) = request(&[
            "pull",
            "--delete",
            "--checksum",
            "-x",
            "-X",
            "--numeric-ids",
            "-z",
            "--accept-new-source",
            "--exclude",
            "*.o",
            "--exclude=-x",
            "--max-delete",
            "10%",
            "--jobs",
            "3",
            "--no-adaptive",
            "--min-free",
            "5%",
            "--bwlimit",
            "20M",
            "--iops-limit",
            "100",
            "--ionice",
            "best-effort:2",
            "--nice",
            "5",
            "--keep-cache",
            "h:/src",
            "/dst",
        ]) else {
            panic!("not a pull")
        };
        let Request::Serve(s) = far_side(&Far::Send(&t.opts)) else {
            panic!("not a serve")
        };
        assert!(s.send);
        assert_eq!(s.root, std::path::Path::new("/some/where"));
        assert_eq!(format!("{:?}", s.opts), format!("{:?}", t.opts));
    }

    #[test]
    fn a_pushs_far_side_keeps_this_sides_disk_limits() {
        let Request::Push(t) = request(&[
            "push",
            "--fsync",
            "file",
            "--max-io-pressure",
            "25",
            "--min-rate",
            "2M",
            "--min-free",
            "1G",
            "--bwlimit",
            "8M",
            "--iops-limit",
            "7",
            "--ionice",
            "idle",
            "--nice",
            "-3",
            "--dry-run",
            "/src",
            "h:/dst",
        ]) else {
            panic!("not a push")
        };
        let Request::Serve(s) = far_side(&Far::Receive(&t.opts)) else {
            panic!("not a serve")
        };
        assert!(!s.send);
        let o = &s.opts;
        let disk = |o: &crate::options::Options| {
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {} {}",
                o.fsync,
                o.adaptive,
                o.min_free,
                o.bwlimit,
                o.iops_limit,
                o.priority,
                o.keep_cache,
                o.dry_run
            )
        };
        assert_eq!(disk(o), disk(&t.opts));
        assert!(o.adaptive.is_some_and(|a| a.min_rate == 2 << 20));
    }

    #[test]
    fn a_remote_verify_and_versions_ask_the_far_side_for_the_same() {
        let Request::Verify(v) = request(&[
            "verify",
            "--snapshot",
            "2026-11-26T03:00:00Z",
            "--snapshot=-odd",
            "--restart",
            "--bwlimit",
            "4M",
            "--iops-limit",
            "50",
            "--jobs",
            "3",
            "-q",
            "--ionice",
            "best-effort:6",
            "h:/b",
        ]) else {
            panic!("not a verify")
        };
        let far = Far::Verify {
            snapshots: &v.snapshot,
            all: v.all,
            restart: v.restart,
            read: &v.read,
        };
        let Request::Verify(w) = far_side(&far) else {
            panic!("not a verify")
        };
        assert_eq!(w.snapshot, v.snapshot);
        assert_eq!((w.all, w.restart, w.json), (false, true, true));
        assert_eq!(format!("{:?}", w.read), format!("{:?}", v.read));
        let path = std::ffi::OsStr::new("-home/a b.txt");
        let Request::Versions(x) = far_side(&Far::Versions {
            shallow: true,
            path,
        }) else {
            panic!("not versions")
        };
        assert_eq!((x.path.as_os_str(), x.shallow, x.json), (path, true, true));
        assert_eq!(x.dest, "/some/where");
    }

    #[test]
    fn a_remote_prune_and_snapshot_get_the_same_rules_and_limits() {
        let Request::Prune(p) = request(&[
            "prune",
            "--keep-last",
            "2",
            "--keep-daily",
            "7",
            "--keep-within",
            "2w3d",
            "--iops-limit",
            "9",
            "--jobs",
            "2",
            "-q",
            "--ionice",
            "none",
            "h:/b",
        ]) else {
            panic!("not a prune")
        };
        let far = Far::Prune {
            dry_run: true,
            make_room: Some(12345),
            policy: &p.policy,
            disk: &p.disk,
        };
        let Request::Prune(q) = far_side(&far) else {
            panic!("not a prune")
        };
        assert_eq!(q.policy, p.policy);
        assert_eq!(format!("{:?}", q.disk), format!("{:?}", p.disk));
        assert_eq!((q.dry_run, q.make_room), (true, Some(12345)));
        let far = Far::Snapshot {
            push_exit: Some(24),
            source: Some("/home"),
            json: false,
            policy: &p.policy,
            disk: &p.disk,
        };
        let Request::Snapshot(s) = far_side(&far) else {
            panic!("not a snapshot")
        };
        assert_eq!((s.policy, s.push_exit), (p.policy, Some(24)));
        assert_eq!(s.source.as_deref(), Some("/home"));
    }
}

//! The far side's command line, made in one place from the typed settings.
//!
//! A remote push starts `fsync-repl serve ROOT`, a pull `serve --send ROOT`, a remote
//! backup `snapshot` and `prune` on the host that holds DEST, `versions` and `verify`
//! answer in JSON there. Each of them is
//! described by a [`Far`] value; [`args`] renders it, and only it, into the arguments
//! the far side's command line parses back into the same settings.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use crate::options::DiskSettings;
use crate::options::{FsyncMode, Options};
use crate::snapshot::retention::Policy;

/// A command for the far side.
pub enum Far<'a> {
    /// `serve ROOT`: the receiving end of a push, writing under its own limits.
    Receive(&'a Options),
    /// `serve --send ROOT`: the sending end of a pull, running the engine as this side
    /// would.
    Send(&'a Options),
    /// `snapshot DEST` after a remote backup's push.
    Snapshot {
        push_exit: Option<i32>,
        source: Option<&'a str>,
        json: bool,
        policy: &'a Policy,
        disk: &'a DiskSettings,
    },
    /// `snapshots DEST`.
    Snapshots { json: bool },
    /// `versions --json DEST PATH`, its answer read by this side.
    Versions {
        shallow: bool,
        path: &'a std::ffi::OsStr,
    },
    /// `verify --json DEST`, its answer read by this side.
    Verify {
        snapshots: &'a [String],
        all: bool,
        restart: bool,
        read: &'a crate::options::ReadSettings,
    },
    /// `prune DEST`, or `--make-room` for a backup's `--prune-when-full`.
    Prune {
        dry_run: bool,
        make_room: Option<u64>,
        policy: &'a Policy,
        disk: &'a DiskSettings,
    },
}

/// The arguments (after the program name) of `far` working on `path`, the idle
/// `timeout` in seconds of a serving session included.
pub fn args(far: &Far<'_>, timeout: u64, path: &[u8]) -> Vec<OsString> {
    let mut a = Args::default();
    // Positional arguments after DEST's path.
    let mut after: Vec<OsString> = Vec::new();
    match far {
        Far::Receive(o) => {
            a.word("serve");
            a.value("--timeout", timeout);
            a.value(
                "--fsync",
                match o.fsync {
                    FsyncMode::Batch => "batch",
                    FsyncMode::File => "file",
                    FsyncMode::None => "none",
                },
            );
            a.disk(o);
            a.flag(o.no_follow_dest, "--no-follow-dest");
            a.flag(o.dry_run, "--dry-run");
        }
        Far::Send(o) => {
            a.word("serve");
            a.word("--send");
            a.value("--timeout", timeout);
            a.flag(o.delete, "--delete");
            a.flag(o.delete_excluded, "--delete-excluded");
            a.flag(o.checksum, "--checksum");
            a.flag(o.one_file_system, "--one-file-system");
            a.flag(o.xattrs, "--xattrs");
            a.flag(o.numeric_ids, "--numeric-ids");
            a.flag(o.whole_file, "--whole-file");
            a.flag(o.compress, "--compress");
            a.flag(o.accept_new_source, "--accept-new-source");
            a.flag(o.dry_run, "--dry-run");
            a.flag(o.itemize || o.dry_run, "--itemize");
            // `--exclude-from` files were read on this side: their patterns travel.
            for p in &o.excludes {
                a.value("--exclude", p);
            }
            if let Some(m) = o.max_delete {
                a.value("--max-delete", m.to_arg());
            }
            if o.jobs_given {
                a.value("--jobs", o.jobs);
            }
            a.disk(o);
        }
        Far::Snapshot {
            push_exit,
            source,
            json,
            policy,
            disk,
        } => {
            a.word("snapshot");
            if let Some(c) = push_exit {
                a.value("--push-exit", c);
            }
            if let Some(s) = source {
                a.value("--source", s);
            }
            a.flag(*json, "--json");
            a.retention(policy);
            a.snapshot_disk(disk);
        }
        Far::Snapshots { json } => {
            a.word("snapshots");
            a.flag(*json, "--json");
        }
        Far::Versions { shallow, path } => {
            a.word("versions");
            a.word("--json");
            a.flag(*shallow, "--shallow");
            after.push(path.to_os_string());
        }
        Far::Verify {
            snapshots,
            all,
            restart,
            read,
        } => {
            a.word("verify");
            a.word("--json");
            for n in *snapshots {
                a.value("--snapshot", n);
            }
            a.flag(*all, "--all");
            a.flag(*restart, "--restart");
            a.priority(&read.priority);
            if let Some(b) = read.bwlimit {
                a.value("--bwlimit", b);
            }
            if let Some(n) = read.iops_limit {
                a.value("--iops-limit", n);
            }
            if read.jobs_given {
                a.value("--jobs", read.jobs);
            }
            a.flag(read.quiet, "--quiet");
        }
        Far::Prune {
            dry_run,
            make_room,
            policy,
            disk,
        } => {
            a.word("prune");
            a.flag(*dry_run, "--dry-run");
            if let Some(n) = make_room {
                a.value("--make-room", n);
            }
            a.retention(policy);
            a.snapshot_disk(disk);
        }
    }
    // After `--`: a path that starts with `-` is a path, not an option.
    a.word("--");
    a.0.push(OsString::from_vec(path.to_vec()));
    a.0.extend(after);
    a.0
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn word(&mut self, w: &str) {
        self.0.push(w.into());
    }

    fn flag(&mut self, on: bool, f: &str) {
        if on {
            self.word(f);
        }
    }

    /// `--flag=value`: one word, so a value that starts with `-` stays a value.
    fn value(&mut self, f: &str, v: impl std::fmt::Display) {
        self.0.push(format!("{f}={v}").into());
    }

    fn priority(&mut self, p: &crate::throttle::priority::Priority) {
        self.value("--ionice", p.io.to_arg());
        if let Some(n) = p.nice {
            self.value("--nice", n);
        }
    }

    /// The far side's own limits on its disk: reserve, rate, operations, priority,
    /// page cache and the adaptive back-off.
    fn disk(&mut self, o: &Options) {
        match &o.adaptive {
            None => self.word("--no-adaptive"),
            Some(c) => {
                // Back to the percentage given (a fraction times 100 can end in ...01).
                let pct = (c.max_pressure * 100.0 * 1e6).round() / 1e6;
                self.value("--max-io-pressure", pct);
                self.value("--min-rate", c.min_rate);
            }
        }
        if let Some(m) = o.min_free {
            self.value("--min-free", m.to_arg());
        }
        if let Some(b) = o.bwlimit {
            self.value("--bwlimit", b);
        }
        if let Some(n) = o.iops_limit {
            self.value("--iops-limit", n);
        }
        self.priority(&o.priority);
        self.flag(o.keep_cache, "--keep-cache");
    }

    fn snapshot_disk(&mut self, d: &DiskSettings) {
        self.priority(&d.priority);
        if let Some(n) = d.iops_limit {
            self.value("--iops-limit", n);
        }
        if d.jobs_given {
            self.value("--jobs", d.jobs);
        }
        self.flag(d.quiet, "--quiet");
    }

    fn retention(&mut self, p: &Policy) {
        for (flag, n) in [
            ("--keep-last", p.last),
            ("--keep-hourly", p.hourly),
            ("--keep-daily", p.daily),
            ("--keep-weekly", p.weekly),
            ("--keep-monthly", p.monthly),
        ] {
            if n > 0 {
                self.value(flag, n);
            }
        }
        if let Some(s) = p.within_secs {
            // Durations are whole hours at least (the unit `h` is the smallest).
            self.value("--keep-within", format!("{}h", s / 3600));
        }
    }
}

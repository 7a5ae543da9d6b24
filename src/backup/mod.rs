//! The backup commands at the binary's edge: `backup`, `snapshot`, `snapshots`, `prune`.
//!
//! `backup` pushes SRC into DEST/current with the push engine (local or remote), and
//! only when the push succeeded (exit 0, or 24 when source files vanished meanwhile)
//! takes a snapshot and prunes: a failed push changes no snapshot. A local DEST is
//! locked for the whole run; for `host:DEST` a lock on this machine covers the run and
//! the far side runs `snapshot` (which takes DEST's own lock) after the push. Like `app`, this module prints and maps errors to
//! exit codes; the work itself is in [`crate::snapshot`].

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod all;

use crate::cli::{BackupArgs, PruneArgs, PushArgs, RemoteArgs, SnapshotArgs, SnapshotsArgs};
use crate::error::{Error, Result};
use crate::jobs::{DiskSettings, JobResult};
use crate::report::{human_bytes, Report};
use crate::snapshot::retention::{self, Candidate, Policy};
use crate::snapshot::{Dest, Manifest, TakeOptions};
use crate::ssh::{parse_location, Location};
use crate::throttle::Throttle;
use crate::transfer::{Output, ProgressMode};

/// Output of a backup's push: items on stdout, warnings on stderr unless quiet.
struct Out {
    quiet: bool,
    progress: ProgressMode,
}

impl Output for Out {
    fn item(&self, line: &str) {
        println!("{line}");
    }
    fn warn(&self, line: &str) {
        if !self.quiet {
            eprintln!("fsync-repl: {line}");
        }
    }
    fn progress(&self) -> ProgressMode {
        self.progress
    }
}

/// Runs `fsync-repl ARGS` on `host` with this process's stdout and stderr; returns its
/// exit code.
fn remote_run(r: &RemoteArgs, host: &std::ffi::OsStr, args: &[OsString]) -> Result<i32> {
    let mut c = r.shell().command(host, args)?;
    c.stdin(std::process::Stdio::null());
    let status = c.status().map_err(|e| Error::Selection {
        path: PathBuf::from(host),
        what: format!("cannot start the remote shell: {e}; install ssh or pass --rsh"),
    })?;
    match status.code() {
        Some(c @ (0 | 1 | 2 | 3 | 11 | 12 | 20 | 23 | 24)) => Ok(c),
        other => Err(Error::Protocol(format!(
            "the remote fsync-repl ended with {}; is --remote-bin right?",
            other.map_or("a signal".to_string(), |c| format!("exit code {c}"))
        ))),
    }
}

pub(super) fn fail(e: Error) -> i32 {
    crate::app::finish(Err(e))
}

fn remote_path(path: &[u8]) -> OsString {
    OsString::from_vec(path.to_vec())
}

fn take_options<'a>(
    disk: &DiskSettings,
    throttle: &'a Throttle,
    cancel: &'a AtomicBool,
    source: Option<String>,
    push_exit: Option<i32>,
) -> TakeOptions<'a> {
    TakeOptions {
        throttle,
        priority: disk.priority,
        jobs: disk.jobs,
        owners: rustix::process::geteuid().is_root(),
        cancel,
        source,
        push_exit,
        now: crate::snapshot::now(),
        reserve: None,
    }
}

fn print_manifest(m: &Manifest) {
    println!(
        "snapshot {}: {} files, {}, {} added, {:.2} s",
        m.name,
        m.files,
        human_bytes(m.bytes),
        human_bytes(m.added_bytes),
        m.duration_secs
    );
}

/// `fsync-repl snapshot DEST`.
pub fn snapshot(a: SnapshotArgs, interrupted: Arc<AtomicBool>) -> i32 {
    let run = || -> Result<i32> {
        let disk = a.disk.to_settings()?;
        let policy = a.retention.to_policy()?;
        match parse_location(&a.dest)? {
            Location::Remote { host, path } => {
                let mut args: Vec<OsString> = vec!["snapshot".into()];
                if let Some(c) = a.push_exit {
                    args.push(format!("--push-exit={c}").into());
                }
                if let Some(s) = &a.source {
                    args.push(format!("--source={s}").into());
                }
                if a.json {
                    args.push("--json".into());
                }
                args.extend(a.retention.forward());
                args.extend(a.disk.forward());
                args.push("--".into());
                args.push(remote_path(&path));
                remote_run(&a.remote, &host, &args)
            }
            Location::Local(p) => {
                let _ = disk.priority.apply_to_current_thread();
                let dest = Dest::open(&p)?;
                let _lock = dest.lock()?;
                let throttle = Throttle::new(None, disk.iops_limit);
                dest.clean_up(&throttle)?;
                let o = take_options(
                    &disk,
                    &throttle,
                    &interrupted,
                    a.source.clone(),
                    a.push_exit,
                );
                let m = dest.take(&o)?;
                if a.json {
                    println!("{}", serde_json::to_string(&m).unwrap_or_default());
                } else if !disk.quiet {
                    print_manifest(&m);
                }
                if !policy.is_empty() {
                    prune_with(&dest, &policy, false, &throttle, &disk, &interrupted)?;
                }
                Ok(0)
            }
        }
    };
    run().unwrap_or_else(fail)
}

/// `fsync-repl snapshots DEST`.
pub fn snapshots(a: SnapshotsArgs) -> i32 {
    let run = || -> Result<i32> {
        match parse_location(&a.dest)? {
            Location::Remote { host, path } => {
                let mut args: Vec<OsString> = vec!["snapshots".into()];
                if a.json {
                    args.push("--json".into());
                }
                args.push("--".into());
                args.push(remote_path(&path));
                remote_run(&a.remote, &host, &args)
            }
            Location::Local(p) => {
                let list = Dest::open(&p)?.list()?;
                if a.json {
                    let v: Vec<serde_json::Value> = list
                        .iter()
                        .map(|s| match &s.manifest {
                            Some(m) => serde_json::to_value(m).unwrap_or_default(),
                            None => serde_json::json!({ "name": s.name, "time": s.time }),
                        })
                        .collect();
                    println!("{}", serde_json::to_string(&v).unwrap_or_default());
                    return Ok(0);
                }
                println!(
                    "{:<24} {:>10} {:>11} {:>11}  PUSH",
                    "SNAPSHOT", "FILES", "SIZE", "ADDED"
                );
                for s in &list {
                    match &s.manifest {
                        Some(m) => println!(
                            "{:<24} {:>10} {:>11} {:>11}  {}",
                            s.name,
                            m.files,
                            human_bytes(m.bytes),
                            human_bytes(m.added_bytes),
                            match m.push_exit {
                                Some(c) => format!("exit {c}"),
                                None => "-".into(),
                            }
                        ),
                        None => println!("{:<24} {:>10} {:>11} {:>11}  ?", s.name, "?", "?", "?"),
                    }
                }
                Ok(0)
            }
        }
    };
    run().unwrap_or_else(fail)
}

/// The retention decisions for DEST's snapshots, newest first.
fn decide(dest: &Dest, policy: &Policy) -> Result<Vec<retention::Decision>> {
    let cands: Vec<Candidate> = dest
        .list()?
        .into_iter()
        .map(|s| Candidate {
            successful_push: s.manifest.as_ref().is_some_and(Manifest::successful_push),
            name: s.name,
            time: s.time,
        })
        .collect();
    Ok(retention::apply(policy, &cands))
}

/// A signal stops a prune between snapshots (each one goes whole or, killed, is
/// left out of sight for the next run to finish).
fn stop_if(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Applies `policy` to DEST (the lock held); prints one line per snapshot.
fn prune_with(
    dest: &Dest,
    policy: &Policy,
    dry_run: bool,
    throttle: &Throttle,
    disk: &DiskSettings,
    cancel: &AtomicBool,
) -> Result<()> {
    for d in decide(dest, policy)? {
        if d.keep() {
            if dry_run || !disk.quiet {
                let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                println!("keep   {} ({})", d.name, why.join(", "));
            }
        } else {
            if dry_run {
                println!("remove {} (no rule keeps it)", d.name);
                continue;
            }
            stop_if(cancel)?;
            dest.remove(&d.name, throttle, disk.jobs, disk.priority)?;
            if !disk.quiet {
                println!("remove {} (no rule keeps it): removed", d.name);
            }
        }
    }
    Ok(())
}

/// `fsync-repl prune DEST`.
pub fn prune(a: PruneArgs, interrupted: Arc<AtomicBool>) -> i32 {
    let run = || -> Result<i32> {
        let disk = a.disk.to_settings()?;
        let policy = a.retention.to_policy()?;
        if policy.is_empty() && a.make_room.is_none() {
            return Err(Error::Usage(
                "prune needs at least one --keep-* rule (see fsync-repl prune --help)".into(),
            ));
        }
        match parse_location(&a.dest)? {
            Location::Remote { host, path } => {
                let mut args: Vec<OsString> = vec!["prune".into()];
                if a.dry_run {
                    args.push("--dry-run".into());
                }
                if let Some(n) = a.make_room {
                    args.push(format!("--make-room={n}").into());
                }
                args.extend(a.retention.forward());
                args.extend(a.disk.forward());
                args.push("--".into());
                args.push(remote_path(&path));
                remote_run(&a.remote, &host, &args)
            }
            Location::Local(p) => {
                let _ = disk.priority.apply_to_current_thread();
                let dest = Dest::open(&p)?;
                let _lock = dest.lock()?;
                let throttle = Throttle::new(None, disk.iops_limit);
                if !a.dry_run {
                    dest.clean_up(&throttle)?;
                }
                if let Some(n) = a.make_room {
                    give_up(&dest, &policy, n, &throttle, &disk, &interrupted)?;
                    return Ok(0);
                }
                prune_with(&dest, &policy, a.dry_run, &throttle, &disk, &interrupted)?;
                Ok(0)
            }
        }
    };
    run().unwrap_or_else(fail)
}

/// What one backup did, for the summary line, the log and the metrics.
pub(super) struct Done {
    pub(super) code: i32,
    pub(super) bytes: u64,
    pub(super) files: u64,
    /// Entries the push meant to change and could not.
    pub(super) failed: u64,
    pub(super) failure: Option<String>,
}

impl Done {
    /// The job's record for the log and the metrics; `clock` started with the job.
    pub(super) fn record(self, name: String, started: i64, clock: std::time::Instant) -> JobResult {
        JobResult {
            name,
            exit_code: self.code,
            started,
            duration_secs: clock.elapsed().as_secs_f64(),
            bytes: self.bytes,
            files: self.files,
            failed: self.failed,
            failure: self.failure,
        }
    }
}

fn disk_of(opts: &crate::config::Options, quiet: bool) -> DiskSettings {
    DiskSettings {
        iops_limit: opts.iops_limit,
        priority: opts.priority,
        jobs: opts.jobs,
        quiet,
    }
}

/// `fsync-repl backup` (one job or, with --all, every job of the config file).
pub fn backup(a: BackupArgs, interrupted: Arc<AtomicBool>) -> i32 {
    if a.all {
        return all::run_all(&a, interrupted);
    }
    if a.parallel.is_some() {
        return fail(Error::Usage(
            "--parallel applies to backup --all; a single backup runs one job".into(),
        ));
    }
    let name = a
        .dest
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let started = crate::snapshot::now();
    let clock = std::time::Instant::now();
    let result = backup_one(&a, interrupted).record(name, started, clock);
    if let Some(f) = &result.failure {
        eprintln!(
            "fsync-repl: backup {} failed (exit {}): {f}",
            result.name, result.exit_code
        );
    }
    all::record(&a, std::slice::from_ref(&result));
    result.exit_code
}

/// One backup, its failure described in one line (printed by the caller).
pub(super) fn backup_one(a: &BackupArgs, interrupted: Arc<AtomicBool>) -> Done {
    match try_backup(a, interrupted) {
        Ok(d) => d,
        Err(e) => Done {
            code: e.exit_code().code(),
            bytes: 0,
            files: 0,
            failed: 0,
            failure: Some(match e.to_string() {
                m if m.is_empty() => "the far side said why, above".into(),
                m => m,
            }),
        },
    }
}

fn summarize(code: i32, errors: &[String]) -> Option<String> {
    if code == 0 {
        return None;
    }
    let first = errors
        .first()
        .cloned()
        .unwrap_or_else(|| "see the messages above".into());
    Some(match errors.len() {
        0 | 1 => format!("push: {first}"),
        n => format!("push: {first} (and {} more)", n - 1),
    })
}

fn try_backup(a: &BackupArgs, interrupted: Arc<AtomicBool>) -> Result<Done> {
    let (Some(src), Some(dest)) = (&a.src, &a.dest) else {
        return Err(Error::Usage("backup needs SRC and DEST, or --all".into()));
    };
    let mut engine = a.engine.clone();
    engine.delete = true;
    // DEST/current is ours: a symlink planted there must not lead the push outside
    // DEST, here or on the far side.
    engine.no_follow_dest = true;
    let opts = engine.to_options()?;
    let policy = a.retention.to_policy()?;
    let quiet = opts.quiet;
    let Location::Local(src_path) = parse_location(src)? else {
        return Err(Error::Usage("backup needs a local SRC".into()));
    };
    let src_name = std::fs::canonicalize(&src_path)
        .unwrap_or_else(|_| src_path.clone())
        .display()
        .to_string();
    match parse_location(dest)? {
        Location::Remote { host, path } => {
            let _lock = crate::snapshot::lock::take_local(dest.as_bytes(), crate::snapshot::now())?;
            let mut current = path.clone();
            current.extend_from_slice(b"/current");
            let mut dest_arg = host.as_bytes().to_vec();
            dest_arg.push(b':');
            dest_arg.extend_from_slice(&current);
            let push = || PushArgs {
                src: src.clone(),
                dest: OsString::from_vec(dest_arg.clone()),
                engine: engine.clone(),
                remote: a.remote.clone(),
            };
            let report = match crate::app::push(push(), interrupted.clone()) {
                Err(e @ Error::NoSpace(_)) if a.prune_when_full && !opts.dry_run => {
                    let (n, msg) = missing(e)?;
                    let mut args: Vec<OsString> =
                        vec!["prune".into(), format!("--make-room={n}").into()];
                    args.extend(a.retention.forward());
                    args.extend(far_disk_args(a, quiet));
                    args.push("--".into());
                    args.push(remote_path(&path));
                    match remote_run(&a.remote, &host, &args)? {
                        0 => crate::app::push(push(), interrupted.clone())?.1,
                        11 => {
                            return Err(Error::NoSpace(
                                format!(
                                "{msg} Not enough could be freed on {}; no snapshot was removed.",
                                host.to_string_lossy()
                            )
                                .into(),
                            ))
                        }
                        c => return Err(Error::Reported(all::code_of(c))),
                    }
                }
                r => r?.1,
            };
            print_push(&opts, &report);
            let code = report.exit_code;
            if opts.dry_run || !matches!(code, 0 | 24) {
                return Ok(no_snapshot(&report, quiet));
            }
            let mut args: Vec<OsString> = vec![
                "snapshot".into(),
                format!("--push-exit={code}").into(),
                format!("--source={src_name}").into(),
            ];
            args.extend(a.retention.forward());
            args.extend(far_disk_args(a, quiet));
            args.push("--".into());
            args.push(remote_path(&path));
            let far = remote_run(&a.remote, &host, &args)?;
            Ok(Done {
                code: if far == 0 { code } else { far },
                bytes: report.bytes_literal,
                files: report.files_scanned,
                failed: report.failed,
                failure: (far != 0).then(|| {
                    format!(
                        "the snapshot on {} failed (exit {far})",
                        host.to_string_lossy()
                    )
                }),
            })
        }
        Location::Local(d) => {
            if !opts.dry_run {
                std::fs::create_dir_all(&d).map_err(|e| Error::Selection {
                    path: d.clone(),
                    what: format!("cannot create the backup destination: {e}"),
                })?;
            }
            let out = Out {
                quiet,
                progress: if !quiet && std::io::stderr().is_terminal() {
                    ProgressMode::Terminal
                } else {
                    ProgressMode::Off
                },
            };
            let current = d.join(crate::snapshot::CURRENT);
            if opts.dry_run && !d.exists() {
                let r = crate::transfer::push_local(&opts, &src_path, &current, &out, interrupted)?;
                print_push(&opts, &r);
                return Ok(no_snapshot(&r, quiet));
            }
            let dest = Dest::open(&d)?;
            let _lock = dest.lock()?;
            let disk = disk_of(&opts, quiet);
            let throttle = Throttle::new(None, opts.iops_limit);
            if !opts.dry_run {
                dest.clean_up(&throttle)?;
                dest.ensure_current()?;
            }
            let push = || {
                crate::transfer::push_local(&opts, &src_path, &current, &out, interrupted.clone())
            };
            let report = match push() {
                Err(e @ Error::NoSpace(_)) if a.prune_when_full && !opts.dry_run => {
                    let (n, msg) = missing(e)?;
                    give_up(&dest, &policy, n, &throttle, &disk, &interrupted)
                        .map_err(|e| Error::NoSpace(format!("{msg} {e}").into()))?;
                    push()?
                }
                r => r?,
            };
            print_push(&opts, &report);
            let code = report.exit_code;
            if opts.dry_run || !matches!(code, 0 | 24) {
                return Ok(no_snapshot(&report, quiet));
            }
            let o = TakeOptions {
                // The push's reserve holds for the snapshot that follows it.
                reserve: opts.min_free,
                ..take_options(&disk, &throttle, &interrupted, Some(src_name), Some(code))
            };
            let m = dest.take(&o)?;
            if !quiet && !opts.json {
                print_manifest(&m);
            }
            if !policy.is_empty() {
                prune_with(&dest, &policy, false, &throttle, &disk, &interrupted)?;
            }
            Ok(Done {
                code,
                bytes: report.bytes_literal,
                files: m.files,
                failed: report.failed,
                failure: None,
            })
        }
    }
}

/// The disk flags of a far-side snapshot or prune, from the backup's engine flags.
fn far_disk_args(a: &BackupArgs, quiet: bool) -> Vec<OsString> {
    let mut args = a.engine.priority.forward();
    if let Some(n) = a.engine.iops_limit {
        args.push(format!("--iops-limit={n}").into());
    }
    if let Some(j) = a.engine.jobs {
        args.push(format!("--jobs={j}").into());
    }
    if quiet {
        args.push("--quiet".into());
    }
    args
}

fn print_push(opts: &crate::config::Options, report: &Report) {
    if opts.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else if !opts.quiet {
        for e in &report.errors {
            eprintln!("fsync-repl: {e}");
        }
        println!("{}", report.human());
    }
}

fn no_snapshot(report: &Report, quiet: bool) -> Done {
    let code = report.exit_code;
    if !report.dry_run && !quiet {
        eprintln!("fsync-repl: no snapshot taken: the push ended with exit code {code}");
    }
    Done {
        code,
        bytes: report.bytes_literal,
        files: report.files_scanned,
        failed: report.failed,
        failure: summarize(code, &report.errors),
    }
}

/// `--prune-when-full`: gives up snapshots, in retention order and never the newest,
/// until `missing` more bytes are free; when even all of them would not do, removes none.
fn give_up(
    dest: &Dest,
    policy: &Policy,
    missing: u64,
    throttle: &Throttle,
    disk: &DiskSettings,
    cancel: &AtomicBool,
) -> Result<()> {
    let order = retention::give_up_order(&decide(dest, policy)?);
    let freed = dest.freed_by(&order, throttle)?;
    let Some(k) = freed.iter().position(|&f| f >= missing) else {
        let all = freed.last().copied().unwrap_or(0);
        return Err(Error::NoSpace(
            format!(
                "{}: removing every snapshot but the newest would free only {} of the {} missing; none was removed.",
                dest.path().display(),
                human_bytes(all),
                human_bytes(missing)
            )
            .into(),
        ));
    };
    for name in &order[..=k] {
        stop_if(cancel)?;
        dest.remove(name, throttle, disk.jobs, disk.priority)?;
        if !disk.quiet {
            println!("remove {name} (--prune-when-full: to make room)");
        }
    }
    Ok(())
}

/// The bytes a push that the preflight stopped was missing, or the error as it was.
fn missing(e: Error) -> std::result::Result<(u64, String), Error> {
    match e {
        Error::NoSpace(crate::error::Shortfall {
            message,
            bytes: Some(n),
        }) => Ok((n, message)),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_push_is_summed_up_in_one_line() {
        assert_eq!(summarize(0, &[]), None);
        assert_eq!(
            summarize(23, &["a: denied".into(), "b: denied".into()]).as_deref(),
            Some("push: a: denied (and 1 more)")
        );
        assert!(summarize(11, &[])
            .unwrap()
            .contains("see the messages above"));
    }
}

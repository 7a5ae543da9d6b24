//! `backup --all`: every job of the config file, then the log and the metrics.
//!
//! Jobs run `--parallel` at a time (default 2), taken in config order: a slow job
//! holds one worker while the rest go on through the others, and more at once would
//! only make each slower on the shared disks. A job that fails, or whose entry does
//! not even parse as a backup, is recorded and the next one starts. The exit code is
//! the worst job's by the usual severity order.

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{backup_one, fail, Done};
use crate::cli::BackupArgs;
use crate::error::{Error, ExitCode};
use crate::jobs::JobResult;

/// Writes the log lines and metrics of a run's jobs; a failure to do so is reported
/// but does not change the exit code (the backups themselves are done).
pub(super) fn record(a: &BackupArgs, results: &[JobResult]) {
    if let Some(p) = &a.log_file {
        if let Err(e) = crate::jobs::append_log(p, results) {
            eprintln!("fsync-repl: --log-file {}: {e}", p.display());
        }
    }
    if let Some(p) = &a.metrics_file {
        if let Err(e) = crate::jobs::write_metrics(p, results) {
            eprintln!("fsync-repl: --metrics-file {}: {e}", p.display());
        }
    }
}

/// `backup --all`: every job of the config file, `--parallel` at a time. A job that
/// fails (or cannot even start) does not stop the others; the exit code is the worst.
pub(super) fn run_all(a: &BackupArgs, interrupted: Arc<AtomicBool>) -> i32 {
    let path = crate::jobs::config_path(a.config.as_deref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return fail(Error::Selection {
                path,
                what: format!("cannot read the config file ({e}); give one with --config"),
            })
        }
    };
    let cfg = match crate::jobs::parse(&path, &text) {
        Ok(c) => c,
        Err(e) => return fail(Error::Usage(e)),
    };
    // What the command line says for every job; the rest comes from the job.
    let mut common: Vec<OsString> = Vec::new();
    if a.engine.quiet {
        common.push("--quiet".into());
    }
    if a.engine.dry_run {
        common.push("--dry-run".into());
    }
    if a.prune_when_full {
        common.push("--prune-when-full".into());
    }
    if let Some(r) = &a.remote.rsh {
        common.push(format!("--rsh={r}").into());
    }
    if let Some(p) = a.remote.port {
        common.push(format!("--port={p}").into());
    }
    let mut bin = OsString::from("--remote-bin=");
    bin.push(&a.remote.remote_bin);
    common.push(bin);
    common.push(format!("--timeout={}", a.remote.timeout).into());
    let parallel = a.parallel.unwrap_or(2);
    if parallel == 0 {
        return fail(Error::Usage("--parallel 0: give at least 1".into()));
    }
    // Jobs are handed out in config order to `--parallel` workers: a slow job holds
    // one worker while the others go on. Jobs into the same destination share its lock,
    // so they go to one worker, one after the other. Results stay in config order.
    let groups = by_destination(&cfg.jobs);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<JobResult>>> =
        cfg.jobs.iter().map(|_| Default::default()).collect();
    std::thread::scope(|s| {
        for _ in 0..parallel.min(groups.len()) {
            s.spawn(|| loop {
                let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(group) = groups.get(g) else {
                    return;
                };
                for &i in group {
                    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let r = run_job(&cfg.jobs[i], &common, &path, interrupted.clone());
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    let results: Vec<JobResult> = slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    record(a, &results);
    results
        .iter()
        .map(|r| r.exit_code)
        .max_by_key(|&c| crate::report::severity(code_of(c)))
        .unwrap_or(0)
}

/// The jobs' indexes grouped by destination, groups in order of their first job.
/// A local destination is compared by its resolved path (symlinks, `.`, `//`); a
/// remote one by its text (an ssh alias cannot be resolved here).
fn by_destination(jobs: &[crate::jobs::Job]) -> Vec<Vec<usize>> {
    let key = |dest: &str| -> OsString {
        match crate::ssh::parse_location(std::ffi::OsStr::new(dest)) {
            Ok(crate::ssh::Location::Local(p)) => resolved(&p).into_os_string(),
            _ => dest.trim_end_matches('/').into(),
        }
    };
    let mut groups: Vec<(OsString, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let dest = key(&job.destination);
        match groups.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, g)) => g.push(i),
            None => groups.push((dest, vec![i])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// `p` made absolute with its deepest existing ancestor resolved (a destination may
/// not exist yet: two spellings of it must still compare equal).
fn resolved(p: &std::path::Path) -> std::path::PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(base) {
            return rest.iter().rev().fold(real, |acc, c| acc.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return abs.components().collect(),
        }
    }
}

/// Runs one job of the config file as its own `backup` command line.
fn run_job(
    job: &crate::jobs::Job,
    common: &[OsString],
    path: &std::path::Path,
    interrupted: Arc<AtomicBool>,
) -> JobResult {
    let started = crate::snapshot::now();
    let clock = std::time::Instant::now();
    let mut argv: Vec<OsString> = vec!["fsync-repl".into(), "backup".into()];
    argv.extend(common.iter().cloned());
    argv.extend(job.to_args());
    let done = match <crate::cli::Cli as clap::Parser>::try_parse_from(&argv) {
        Ok(crate::cli::Cli {
            command: crate::cli::Command::Backup(b),
        }) => backup_one(&b, interrupted),
        Ok(_) => unreachable_job(),
        Err(e) => Done {
            code: ExitCode::Usage.code(),
            bytes: 0,
            files: 0,
            failed: 0,
            failure: Some(format!(
                "{}: {}",
                path.display(),
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("bad job")
                    .trim_start_matches("error: ")
            )),
        },
    };
    if let Some(f) = &done.failure {
        eprintln!(
            "fsync-repl: job {} failed (exit {}): {f}",
            job.name, done.code
        );
    }
    done.record(job.name.clone(), started, clock)
}

fn unreachable_job() -> Done {
    Done {
        code: ExitCode::Usage.code(),
        bytes: 0,
        files: 0,
        failed: 0,
        failure: Some("a job must describe a backup".into()),
    }
}

pub(super) fn code_of(c: i32) -> ExitCode {
    match c {
        0 => ExitCode::Ok,
        1 => ExitCode::Usage,
        2 => ExitCode::Protocol,
        3 => ExitCode::Selection,
        12 => ExitCode::Busy,
        20 => ExitCode::Interrupted,
        23 => ExitCode::Partial,
        24 => ExitCode::Vanished,
        _ => ExitCode::DestIo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_into_one_destination_run_one_after_the_other() {
        let job = |name: &str, dest: &str| crate::jobs::Job {
            name: name.into(),
            source: "/home/x".into(),
            destination: dest.into(),
            exclude: Vec::new(),
            throttle: Default::default(),
            retention: Default::default(),
        };
        let jobs = [
            job("a", "/b/one"),
            job("b", "host:/b"),
            job("c", "/b/one/"),
            job("d", "/b/two"),
            job("e", "/b/./one"),
            job("f", "host:/b/"),
        ];
        assert_eq!(
            by_destination(&jobs),
            vec![vec![0, 2, 4], vec![1, 5], vec![3]]
        );
    }

    #[test]
    fn destinations_not_made_yet_resolve_through_existing_links() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        let a = resolved(&t.path().join("link/new/one"));
        assert_eq!(a, resolved(&t.path().join("real/./new//one")));
        assert_eq!(a, std::fs::canonicalize(&real).unwrap().join("new/one"));
    }

    #[test]
    fn every_documented_code_maps_back_and_the_worst_wins() {
        for c in [0, 1, 2, 3, 11, 12, 20, 23, 24] {
            assert_eq!(code_of(c).code(), c);
        }
        let worst = [24, 0, 12, 23]
            .into_iter()
            .max_by_key(|&c| crate::report::severity(code_of(c)));
        assert_eq!(worst, Some(12));
    }
}

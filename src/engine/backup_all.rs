//! `backup --all`: every job of the config file, then the log and the metrics.
//!
//! Each job becomes a typed [`Backup`] request: the command line's settings with the
//! job's own keys laid over them ([`crate::config::Job::settings`]). Jobs run
//! `--parallel` at a time (default 2), taken in config order: a slow job holds one
//! worker while the rest go on through the others, and more at once would only make
//! each slower on the shared disks. A job that fails, or whose entry is invalid, is
//! recorded and the next one starts. The exit code is the worst job's by the usual
//! severity order.

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::backup::{backup_one, write_record, Done};
use super::{fail, Backup, BackupAll, Location};
use crate::config::{Job, JobResult};
use crate::error::{Error, ExitCode};
use crate::ssh::parse_location;

/// Runs every job of the config file, `--parallel` at a time. A job that fails (or
/// cannot even start) does not stop the others; the exit code is the worst.
pub(super) fn run_all(a: &BackupAll, interrupted: Arc<AtomicBool>) -> i32 {
    let path = crate::config::config_path(a.config.as_deref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return fail(Error::Selection {
                path,
                what: format!("cannot read the config file ({e}); give one with --config"),
            })
        }
    };
    let cfg = match crate::config::parse(&path, &text) {
        Ok(c) => c,
        Err(e) => return fail(Error::Usage(e)),
    };
    if a.parallel == 0 {
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
        for _ in 0..a.parallel.min(groups.len()) {
            s.spawn(|| loop {
                let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(group) = groups.get(g) else {
                    return;
                };
                for &i in group {
                    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let r = run_job(&cfg.jobs[i], a, &path, interrupted.clone());
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    let results: Vec<JobResult> = slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    write_record(&a.record, &results);
    results
        .iter()
        .map(|r| r.exit_code)
        .max_by_key(|&c| crate::report::severity(ExitCode::from_code(c)))
        .unwrap_or(0)
}

/// The typed backup a job stands for.
fn request(job: &Job, a: &BackupAll) -> Result<Backup, String> {
    let (opts, policy) = job.settings(&a.base, &a.policy)?;
    let dest = parse_location(std::ffi::OsStr::new(&job.destination)).map_err(|e| e.to_string())?;
    let mut b = Backup::new(
        Location::Local(job.source.clone()),
        job.destination.clone(),
        dest,
        opts,
        a.remote.clone(),
    );
    b.policy = policy;
    b.prune_when_full = a.prune_when_full;
    Ok(b)
}

/// Runs one job of the config file.
fn run_job(
    job: &Job,
    a: &BackupAll,
    path: &std::path::Path,
    interrupted: Arc<AtomicBool>,
) -> JobResult {
    let started = crate::snapshot::now();
    let clock = std::time::Instant::now();
    let done = match request(job, a) {
        Ok(b) => backup_one(&b, interrupted),
        Err(e) => Done::failed(ExitCode::Usage, format!("{}: {e}", path.display())),
    };
    if let Some(f) = &done.failure {
        eprintln!(
            "fsync-repl: job {} failed (exit {}): {f}",
            job.name, done.code
        );
    }
    done.record(job.name.clone(), started, clock)
}

/// The jobs' indexes grouped by destination, groups in order of their first job.
/// A local destination is compared by its resolved path (symlinks, `.`, `//`); a
/// remote one by its text (an ssh alias cannot be resolved here).
fn by_destination(jobs: &[Job]) -> Vec<Vec<usize>> {
    let key = |dest: &str| -> OsString {
        match parse_location(std::ffi::OsStr::new(dest)) {
            Ok(Location::Local(p)) => resolved(&p).into_os_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_into_one_destination_run_one_after_the_other() {
        let job = |name: &str, dest: &str| Job {
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
        for c in [0, 1, 2, 3, 11, 12, 20, 23, 24, 25] {
            assert_eq!(ExitCode::from_code(c).code(), c);
        }
        let worst = [24, 0, 12, 23]
            .into_iter()
            .max_by_key(|&c| crate::report::severity(ExitCode::from_code(c)));
        assert_eq!(worst, Some(12));
    }
}

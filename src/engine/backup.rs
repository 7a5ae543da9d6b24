//! `backup`: push SRC into DEST/current and, only when the push succeeded (exit 0, or
//! 24 when source files vanished meanwhile), take a snapshot and prune. A failed push
//! changes no snapshot. A local DEST is locked for the whole run; for `host:DEST` a
//! lock on this machine covers the run and the far side runs `snapshot` (which takes
//! DEST's own lock) after the push.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::far::Far;
use super::remote::run_far;
use super::snapshots::{give_up, print_manifest, prune_with, take_options};
use super::{Backup, Location, Record, Term, Transfer};
use crate::config::JobResult;
use crate::error::{Error, ExitCode, Result, Shortfall};
use crate::options::DiskSettings;
use crate::options::Options;
use crate::report::Report;
use crate::snapshot::{BackupDir, TakeOptions};
use crate::throttle::Throttle;
use crate::transfer::{push_local, ProgressMode};

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
    /// A backup that could not run at all.
    pub(super) fn failed(code: ExitCode, failure: String) -> Done {
        Done {
            code: code.code(),
            bytes: 0,
            files: 0,
            failed: 0,
            failure: Some(failure),
        }
    }

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

/// Writes the log lines and metrics of a run's jobs; a failure to do so is reported
/// but does not change the exit code (the backups themselves are done).
pub(super) fn write_record(record: &Record, results: &[JobResult]) {
    if let Some(p) = &record.log_file {
        if let Err(e) = crate::config::append_log(p, results) {
            eprintln!("fsync-repl: --log-file {}: {e}", p.display());
        }
    }
    if let Some(p) = &record.metrics_file {
        if let Err(e) = crate::config::write_metrics(p, results) {
            eprintln!("fsync-repl: --metrics-file {}: {e}", p.display());
        }
    }
}

/// `fsync-repl backup SRC DEST`.
pub(super) fn backup(b: &Backup, interrupted: Arc<AtomicBool>) -> i32 {
    let started = crate::snapshot::now();
    let clock = std::time::Instant::now();
    let result = backup_one(b, interrupted).record(b.name.clone(), started, clock);
    if let Some(f) = &result.failure {
        eprintln!(
            "fsync-repl: backup {} failed (exit {}): {f}",
            result.name, result.exit_code
        );
    }
    write_record(&b.record, std::slice::from_ref(&result));
    result.exit_code
}

/// One backup, its failure described in one line (printed by the caller).
pub(super) fn backup_one(b: &Backup, interrupted: Arc<AtomicBool>) -> Done {
    match try_backup(b, interrupted) {
        Ok(d) => d,
        Err(e) => Done::failed(
            e.exit_code(),
            match e.to_string() {
                m if m.is_empty() => "the far side said why, above".into(),
                m => m,
            },
        ),
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

/// The settings of the snapshot and prune that follow a backup's push.
fn disk_of(opts: &Options) -> DiskSettings {
    DiskSettings {
        iops_limit: opts.iops_limit,
        priority: opts.priority,
        jobs: opts.jobs,
        jobs_given: opts.jobs_given,
        quiet: opts.quiet,
    }
}

fn try_backup(b: &Backup, interrupted: Arc<AtomicBool>) -> Result<Done> {
    let opts = &b.opts;
    let Location::Local(src_path) = &b.src else {
        return Err(Error::Usage("backup needs a local SRC".into()));
    };
    let src_name = std::fs::canonicalize(src_path)
        .unwrap_or_else(|_| src_path.clone())
        .display()
        .to_string();
    match &b.dest {
        Location::Remote { host, path } => {
            let _lock =
                crate::snapshot::lock::take_local(b.name.as_bytes(), crate::snapshot::now())?;
            let mut current = path.clone();
            current.extend_from_slice(b"/current");
            let push = || {
                let dest = Location::Remote {
                    host: host.clone(),
                    path: current.clone(),
                };
                let t = Transfer::new(b.src.clone(), dest, opts.clone(), b.remote.clone());
                super::push::push(&t, interrupted.clone())
            };
            let disk = disk_of(opts);
            let report = match push() {
                Err(Error::NoSpace(Shortfall {
                    message,
                    bytes: Some(n),
                })) if b.prune_when_full && !opts.dry_run => {
                    let far = Far::Prune {
                        dry_run: false,
                        make_room: Some(n),
                        policy: &b.policy,
                        disk: &disk,
                    };
                    match run_far(&b.remote, host, &far, path)? {
                        0 => push()?,
                        11 => {
                            return Err(Error::NoSpace(
                                format!(
                                "{message} Not enough could be freed on {}; no snapshot was removed.",
                                host.to_string_lossy()
                            )
                                .into(),
                            ))
                        }
                        c => return Err(Error::Reported(ExitCode::from_code(c))),
                    }
                }
                r => r?,
            };
            print_push(opts, &report);
            let code = report.exit_code;
            if opts.dry_run || !matches!(code, 0 | 24) {
                return Ok(no_snapshot(&report, opts.quiet));
            }
            let far = Far::Snapshot {
                push_exit: Some(code),
                source: Some(&src_name),
                json: false,
                policy: &b.policy,
                disk: &disk,
            };
            let far = run_far(&b.remote, host, &far, path)?;
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
                std::fs::create_dir_all(d).map_err(|e| Error::Selection {
                    path: d.clone(),
                    what: format!("cannot create the backup destination: {e}"),
                })?;
            }
            let out = Term {
                progress: if !opts.quiet && std::io::stderr().is_terminal() {
                    ProgressMode::Terminal
                } else {
                    ProgressMode::Off
                },
                items_to_stderr: false,
                quiet_warnings: opts.quiet,
            };
            let current = d.join(crate::snapshot::CURRENT);
            if opts.dry_run && !d.exists() {
                let r = push_local(opts, src_path, &current, &out, interrupted)?;
                print_push(opts, &r);
                return Ok(no_snapshot(&r, opts.quiet));
            }
            let dest = BackupDir::open(d)?;
            let _lock = dest.lock()?;
            let disk = disk_of(opts);
            let throttle = Throttle::new(None, opts.iops_limit);
            if !opts.dry_run {
                dest.clean_up(&throttle)?;
                dest.ensure_current()?;
            }
            let push = || push_local(opts, src_path, &current, &out, interrupted.clone());
            let report = match push() {
                Err(Error::NoSpace(Shortfall {
                    message,
                    bytes: Some(n),
                })) if b.prune_when_full && !opts.dry_run => {
                    give_up(&dest, &b.policy, n, &throttle, &disk, &interrupted)
                        .map_err(|e| Error::NoSpace(format!("{message} {e}").into()))?;
                    push()?
                }
                r => r?,
            };
            print_push(opts, &report);
            let code = report.exit_code;
            if opts.dry_run || !matches!(code, 0 | 24) {
                return Ok(no_snapshot(&report, opts.quiet));
            }
            let o = TakeOptions {
                // The push's reserve holds for the snapshot that follows it.
                reserve: opts.min_free,
                ..take_options(&disk, &throttle, &interrupted, Some(src_name), Some(code))
            };
            let m = dest.take(&o)?;
            if !opts.quiet && !opts.json {
                print_manifest(&m);
            }
            if !b.policy.is_empty() {
                prune_with(&dest, &b.policy, false, &throttle, &disk, &interrupted)?;
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

fn print_push(opts: &Options, report: &Report) {
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

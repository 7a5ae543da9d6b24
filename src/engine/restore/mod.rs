//! The way back from the secondary: `versions`, `restore` and `verify`, run from their
//! typed requests (they print and map errors to exit codes).
//!
//! `restore` copies from a snapshot with the push engine itself (local DEST) or with
//! `pull` (remote DEST): atomic, confined, throttled, never deleting, and refusing to
//! replace a differing file without `--overwrite`. `verify` re-reads snapshots against
//! their content catalogues ([`crate::snapshot::catalogue`]). For `host:DEST` the far
//! side runs the same command with `--json` and this side renders what it says,
//! escaped: nothing the far side sends reaches the terminal raw (invariant 8).

mod against;
mod copy_back;
mod metrics;
pub mod verify;
pub mod versions;
pub mod when;

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::far::Far;
use super::remote::run_far_with;
use super::Remote;
use crate::error::{Error, ExitCode, Result};
pub use crate::options::ReadSettings;
use crate::snapshot::BackupDir;
use crate::ssh::{parse_location, Location};
use crate::throttle::Throttle;

/// `versions DEST PATH`.
pub struct Versions {
    /// DEST as given (local, or `host:path`).
    pub dest: OsString,
    pub path: OsString,
    pub json: bool,
    /// Every directory counts as one version (where a path is, not what it holds).
    pub shallow: bool,
    pub remote: Remote,
}

/// `restore DEST PATH... --to TARGET`.
pub struct Restore {
    /// DEST as given (local, or `host:path`).
    pub dest: OsString,
    pub paths: Vec<OsString>,
    pub to: PathBuf,
    pub snapshot: Option<String>,
    pub at: Option<String>,
    pub overwrite: bool,
    pub dry_run: bool,
    pub itemize: bool,
    pub xattrs: bool,
    pub json: bool,
    pub read: ReadSettings,
    pub remote: Remote,
}

/// `verify DEST`.
pub struct Verify {
    /// DEST as given (local, or `host:path`).
    pub dest: OsString,
    pub snapshot: Vec<String>,
    pub all: bool,
    pub against: Option<PathBuf>,
    pub restart: bool,
    pub progress: bool,
    pub json: bool,
    pub metrics_file: Option<PathBuf>,
    pub read: ReadSettings,
    pub remote: Remote,
}

/// Parses a far side's JSON answer; a far side that failed said why on stderr.
fn answer<T: serde::de::DeserializeOwned>(code: i32, out: &[u8]) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| match code {
        0 => Error::Protocol(format!("bad answer from the remote side: {e}")),
        c => Error::Reported(ExitCode::from_code(c)),
    })
}

/// The sources DEST's snapshots were taken of (for absolute PATHs).
fn sources(dest: &BackupDir) -> Result<Vec<String>> {
    let mut s: Vec<String> = dest
        .list()?
        .into_iter()
        .filter_map(|s| s.manifest?.source)
        .collect();
    s.sort();
    s.dedup();
    Ok(s)
}

/// The versions of PATH in DEST, local or remote.
pub(crate) fn find_versions(
    dest: &OsStr,
    path: &OsStr,
    shallow: bool,
    remote: &Remote,
) -> Result<(i32, versions::Versions)> {
    match parse_location(dest)? {
        Location::Local(p) => {
            let dest = BackupDir::open(&p)?;
            let rel =
                versions::relative(path.as_bytes(), &sources(&dest)?).map_err(Error::Usage)?;
            let throttle = Throttle::new(None, None);
            let v = versions::versions(&dest, &rel, shallow, &throttle)?;
            Ok((if v.versions.is_empty() { 3 } else { 0 }, v))
        }
        Location::Remote { host, path: dir } => {
            let far = Far::Versions { shallow, path };
            let (code, out) = run_far_with(remote, &host, &far, &dir, true)?;
            Ok((code, answer(code, &out)?))
        }
    }
}

/// `fsync-repl versions DEST PATH`.
pub fn versions_cmd(a: &Versions) -> i32 {
    let run = || -> Result<i32> {
        let (code, v) = find_versions(&a.dest, &a.path, a.shallow, &a.remote)?;
        if a.json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!("{}", v.human());
        }
        if code == 3 && !a.json {
            eprintln!(
                "fsync-repl: {}: in no snapshot of {} and not in its current",
                crate::text::escape(a.path.as_bytes()),
                a.dest.to_string_lossy()
            );
        }
        Ok(code)
    };
    run().unwrap_or_else(super::fail)
}

/// `fsync-repl restore DEST PATH... --to TARGET`.
pub fn restore_cmd(a: &Restore, interrupted: Arc<AtomicBool>) -> i32 {
    copy_back::run(a, interrupted).unwrap_or_else(super::fail)
}

/// `fsync-repl verify DEST`.
pub fn verify_cmd(a: &Verify, interrupted: Arc<AtomicBool>) -> i32 {
    let started = crate::snapshot::now();
    let run = || -> Result<verify::Outcome> {
        let s = a.read;
        match parse_location(&a.dest)? {
            Location::Remote { host, path } => {
                if a.against.is_some() {
                    return Err(Error::Usage(
                        "--against needs a local DEST: run verify --against on the machine \
                         that holds DEST"
                            .into(),
                    ));
                }
                let far = Far::Verify {
                    snapshots: &a.snapshot,
                    all: a.all,
                    restart: a.restart,
                    read: &a.read,
                };
                let (code, out) = run_far_with(&a.remote, &host, &far, &path, true)?;
                let o: verify::Outcome = answer(code, &out)?;
                match code {
                    0 | 26 => Ok(o),
                    c => Err(Error::Reported(ExitCode::from_code(c))),
                }
            }
            Location::Local(p) => {
                let _ = s.priority.apply_to_current_thread();
                let dest = BackupDir::open(&p)?;
                let list = dest.list()?;
                let names: Vec<String> = if a.all {
                    list.iter().map(|s| s.name.clone()).collect()
                } else if !a.snapshot.is_empty() {
                    for n in &a.snapshot {
                        if !list.iter().any(|s| &s.name == n) {
                            return Err(crate::snapshot::SnapshotError::NotFound {
                                path: p.clone(),
                                name: n.clone(),
                            }
                            .into());
                        }
                    }
                    a.snapshot.clone()
                } else {
                    list.last().map(|s| s.name.clone()).into_iter().collect()
                };
                if names.is_empty() && a.against.is_none() {
                    return Err(Error::Selection {
                        path: p,
                        what: "no snapshots to verify; take one first (fsync-repl snapshot DEST)"
                            .into(),
                    });
                }
                let pool = s
                    .priority
                    .pool_builder(s.jobs, "fsync-repl-verify")
                    .build()
                    .map_err(|e| Error::Usage(format!("cannot start {} workers: {e}", s.jobs)))?;
                let throttle = Throttle::new(s.bwlimit, s.iops_limit);
                let r = verify::Request {
                    snapshots: names,
                    against: a.against.clone(),
                    throttle: &throttle,
                    pool: &pool,
                    cancel: &interrupted,
                    progress: a.progress
                        || (std::io::stderr().is_terminal() && !s.quiet && !a.json),
                    restart: a.restart,
                };
                let mut o = verify::verify(&dest, &r)?;
                if let Some(src) = &r.against {
                    let t = std::time::Instant::now();
                    against::compare(&dest, src, &r, &mut o)?;
                    o.duration_secs += t.elapsed().as_secs_f64();
                }
                Ok(o)
            }
        }
    };
    let quiet = a.read.quiet;
    match run() {
        Ok(o) => {
            let code = if o.differ.is_empty() {
                0
            } else {
                ExitCode::Differs.code()
            };
            if a.json {
                println!("{}", serde_json::to_string(&o).unwrap_or_default());
            } else {
                let text = o.human();
                for line in text.lines() {
                    // The differences are the point: printed even with --quiet.
                    if !quiet || line.starts_with("DIFFERS") {
                        println!("{line}");
                    }
                }
            }
            if let Some(file) = &a.metrics_file {
                let label = a.dest.to_string_lossy();
                let written = metrics::write(file, |previous| {
                    metrics::render(
                        previous,
                        &label,
                        code,
                        o.differ.len() as u64,
                        o.files,
                        o.bytes_read,
                        o.duration_secs,
                        started + o.duration_secs as i64,
                    )
                });
                if let Err(e) = written {
                    eprintln!("fsync-repl: --metrics-file {}: {e}", file.display());
                    return ExitCode::DestIo.code().max(code);
                }
            }
            code
        }
        Err(e) => super::fail(e),
    }
}

//! The way back from the secondary: `versions`, `restore`, `verify` and `completions`,
//! at the binary's edge (they print and map errors to exit codes).
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
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{CompletionsArgs, RemoteArgs, RestoreArgs, ShellArg, VerifyArgs, VersionsArgs};
use crate::error::{Error, ExitCode, Result};
use crate::snapshot::Dest;
use crate::ssh::{parse_location, Location};
use crate::throttle::Throttle;

/// The most a far side's JSON answer may hold.
const MAX_ANSWER: u64 = 256 << 20;

/// Runs `fsync-repl ARGS` on `host`, its stdout captured (bounded), its stderr ours.
/// Returns its exit code (one of ours) and what it printed.
fn far(remote: &RemoteArgs, host: &OsStr, args: &[OsString]) -> Result<(i32, Vec<u8>)> {
    let mut c = remote.shell().command(host, args)?;
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| Error::Selection {
        path: PathBuf::from(host),
        what: format!("cannot start the remote shell: {e}; install ssh or pass --rsh"),
    })?;
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(MAX_ANSWER).read_to_end(&mut out);
    }
    let status = child
        .wait()
        .map_err(|e| Error::Protocol(format!("waiting for the remote shell: {e}")))?;
    match status.code() {
        Some(c @ (0 | 1 | 2 | 3 | 11 | 12 | 20 | 23 | 24 | 25 | 26)) => Ok((c, out)),
        other => Err(Error::Protocol(format!(
            "the remote fsync-repl ended with {}; is --remote-bin right?",
            other.map_or("a signal".to_string(), |c| format!("exit code {c}"))
        ))),
    }
}

/// The exit code a far side's code stands for.
fn code_of(c: i32) -> ExitCode {
    match c {
        0 => ExitCode::Ok,
        1 => ExitCode::Usage,
        3 => ExitCode::Selection,
        11 => ExitCode::DestIo,
        12 => ExitCode::Busy,
        20 => ExitCode::Interrupted,
        23 => ExitCode::Partial,
        24 => ExitCode::Vanished,
        25 => ExitCode::MaxDelete,
        26 => ExitCode::Differs,
        _ => ExitCode::Protocol,
    }
}

/// Parses a far side's JSON answer; a far side that failed said why on stderr.
fn answer<T: serde::de::DeserializeOwned>(code: i32, out: &[u8]) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| match code {
        0 => Error::Protocol(format!("bad answer from the remote side: {e}")),
        c => Error::Reported(code_of(c)),
    })
}

/// The sources DEST's snapshots were taken of (for absolute PATHs).
fn sources(dest: &Dest) -> Result<Vec<String>> {
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
    remote: &RemoteArgs,
) -> Result<(i32, versions::Versions)> {
    match parse_location(dest)? {
        Location::Local(p) => {
            let dest = Dest::open(&p)?;
            let rel =
                versions::relative(path.as_bytes(), &sources(&dest)?).map_err(Error::Usage)?;
            let throttle = Throttle::new(None, None);
            let v = versions::versions(&dest, &rel, shallow, &throttle)?;
            Ok((if v.versions.is_empty() { 3 } else { 0 }, v))
        }
        Location::Remote { host, path: dir } => {
            let mut args: Vec<OsString> = vec!["versions".into(), "--json".into()];
            if shallow {
                args.push("--shallow".into());
            }
            args.extend(["--".into(), OsString::from_vec(dir), path.to_owned()]);
            let (code, out) = far(remote, &host, &args)?;
            Ok((code, answer(code, &out)?))
        }
    }
}

/// `fsync-repl versions DEST PATH`.
pub fn versions_cmd(a: VersionsArgs) -> i32 {
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
    run().unwrap_or_else(|e| crate::app::finish(Err(e)))
}

/// `fsync-repl restore DEST PATH... --to TARGET`.
pub fn restore_cmd(a: RestoreArgs, interrupted: Arc<AtomicBool>) -> i32 {
    copy_back::run(&a, interrupted).unwrap_or_else(|e| crate::app::finish(Err(e)))
}

/// `fsync-repl verify DEST`.
pub fn verify_cmd(a: VerifyArgs, interrupted: Arc<AtomicBool>) -> i32 {
    let started = crate::snapshot::now();
    let run = || -> Result<verify::Outcome> {
        let s = a.read.to_settings()?;
        match parse_location(&a.dest)? {
            Location::Remote { host, path } => {
                if a.against.is_some() {
                    return Err(Error::Usage(
                        "--against needs a local DEST: run verify --against on the machine \
                         that holds DEST"
                            .into(),
                    ));
                }
                let mut args: Vec<OsString> = vec!["verify".into(), "--json".into()];
                for n in &a.snapshot {
                    args.push(format!("--snapshot={n}").into());
                }
                if a.all {
                    args.push("--all".into());
                }
                if a.restart {
                    args.push("--restart".into());
                }
                args.extend(a.read.forward());
                args.extend(["--".into(), OsString::from_vec(path)]);
                let (code, out) = far(&a.remote, &host, &args)?;
                let o: verify::Outcome = answer(code, &out)?;
                match code {
                    0 | 26 => Ok(o),
                    c => Err(Error::Reported(code_of(c))),
                }
            }
            Location::Local(p) => {
                let _ = s.priority.apply_to_current_thread();
                let dest = Dest::open(&p)?;
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
                verify::verify(&dest, &r)
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
        Err(e) => crate::app::finish(Err(e)),
    }
}

/// `fsync-repl completions SHELL`.
pub fn completions(a: CompletionsArgs) -> i32 {
    use clap::CommandFactory;
    let shell = match a.shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut crate::cli::Cli::command(),
        "fsync-repl",
        &mut out,
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), &out);
    0
}

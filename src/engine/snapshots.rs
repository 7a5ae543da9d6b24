//! `snapshot`, `snapshots` and `prune`, and the retention steps a backup shares with
//! them. A remote DEST runs the same command on its host.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::far::Far;
use super::remote::run_far;
use super::{fail, Location, Prune, Snapshot, Snapshots};
use crate::error::{Error, Result};
use crate::options::DiskSettings;
use crate::snapshot::retention::{self, Candidate, Policy};
use crate::snapshot::{BackupDir, Manifest, TakeOptions};
use crate::throttle::Throttle;
use crate::units::human_bytes;

/// The options of a snapshot taken at the current time.
pub(super) fn take_options<'a>(
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

pub(super) fn print_manifest(m: &Manifest) {
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
pub(super) fn snapshot(s: &Snapshot, interrupted: Arc<AtomicBool>) -> i32 {
    let run = || -> Result<i32> {
        let disk = &s.disk;
        match &s.dest {
            Location::Remote { host, path } => {
                let far = Far::Snapshot {
                    push_exit: s.push_exit,
                    source: s.source.as_deref(),
                    json: s.json,
                    policy: &s.policy,
                    disk,
                };
                run_far(&s.remote, host, &far, path)
            }
            Location::Local(p) => {
                let _ = disk.priority.apply_to_current_thread();
                let dest = BackupDir::open(p)?;
                let _lock = dest.lock()?;
                let throttle = Throttle::new(None, disk.iops_limit);
                dest.clean_up(&throttle)?;
                let o = take_options(disk, &throttle, &interrupted, s.source.clone(), s.push_exit);
                let m = dest.take(&o)?;
                if s.json {
                    println!("{}", serde_json::to_string(&m).unwrap_or_default());
                } else if !disk.quiet {
                    print_manifest(&m);
                }
                if !s.policy.is_empty() {
                    prune_with(&dest, &s.policy, false, &throttle, disk, &interrupted)?;
                }
                Ok(0)
            }
        }
    };
    run().unwrap_or_else(fail)
}

/// `fsync-repl snapshots DEST`.
pub(super) fn snapshots(s: &Snapshots) -> i32 {
    let run = || -> Result<i32> {
        match &s.dest {
            Location::Remote { host, path } => {
                run_far(&s.remote, host, &Far::Snapshots { json: s.json }, path)
            }
            Location::Local(p) => {
                let list = BackupDir::open(p)?.list()?;
                if s.json {
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

/// `fsync-repl prune DEST`.
pub(super) fn prune(p: &Prune, interrupted: Arc<AtomicBool>) -> i32 {
    let run = || -> Result<i32> {
        let disk = &p.disk;
        if p.policy.is_empty() && p.make_room.is_none() {
            return Err(Error::Usage(
                "prune needs at least one --keep-* rule (see fsync-repl prune --help)".into(),
            ));
        }
        match &p.dest {
            Location::Remote { host, path } => {
                let far = Far::Prune {
                    dry_run: p.dry_run,
                    make_room: p.make_room,
                    policy: &p.policy,
                    disk,
                };
                run_far(&p.remote, host, &far, path)
            }
            Location::Local(d) => {
                let _ = disk.priority.apply_to_current_thread();
                let dest = BackupDir::open(d)?;
                let _lock = dest.lock()?;
                let throttle = Throttle::new(None, disk.iops_limit);
                if !p.dry_run {
                    dest.clean_up(&throttle)?;
                }
                if let Some(n) = p.make_room {
                    give_up(&dest, &p.policy, n, &throttle, disk, &interrupted)?;
                    return Ok(0);
                }
                prune_with(&dest, &p.policy, p.dry_run, &throttle, disk, &interrupted)?;
                Ok(0)
            }
        }
    };
    run().unwrap_or_else(fail)
}

/// The retention decisions for DEST's snapshots, newest first.
fn decide(dest: &BackupDir, policy: &Policy) -> Result<Vec<retention::Decision>> {
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
pub(super) fn prune_with(
    dest: &BackupDir,
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

/// `--prune-when-full`: gives up snapshots, in retention order and never the newest,
/// until `missing` more bytes are free; when even all of them would not do, removes none.
pub(super) fn give_up(
    dest: &BackupDir,
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

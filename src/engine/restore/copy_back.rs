//! `restore`: choose the snapshot, check TARGET, then copy with the engine.
//!
//! Each PATH is one run of the push engine (a local DEST) or of `pull` (a remote one,
//! in this process)
//! from the snapshot into TARGET: a directory from itself into TARGET/PATH; a file from
//! its directory into TARGET's, with filters that admit that one name. Nothing is
//! deleted. Before anything is written, a dry run of every PATH lists what would
//! change; a file of TARGET that would be replaced or changed stops the whole restore
//! unless `--overwrite` (so a refused restore writes nothing at all). TARGET is not a
//! replica: the engine's record of its source is not left in it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::versions::{in_snapshot, Versions};
use super::{ReadSettings, Restore};
use crate::engine::push::pull_into;
use crate::engine::Transfer;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::report::Report;
use crate::snapshot::CURRENT;
use crate::ssh::{parse_location, Location};
use crate::transfer::{Output, ProgressMode};
use crate::tree;

/// Which snapshot a restore takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Newest,
    Named(String),
    At(i64),
}

/// One engine run of a restore.
#[derive(Debug, Clone)]
struct Item {
    /// PATH inside the snapshot, as the user will read it.
    shown: String,
    /// Where PATH lands (TARGET/PATH).
    lands: PathBuf,
    /// The run's source beneath DEST.
    src: Vec<u8>,
    /// The run's destination.
    target: PathBuf,
    excludes: Vec<String>,
}

/// The snapshot to restore from: the newest `pick` allows in which every PATH is.
pub fn choose(all: &[Versions], pick: &Pick, typed: &[OsString]) -> Result<String> {
    let Some(first) = all.first() else {
        return Err(Error::Usage("give at least one PATH".into()));
    };
    let allowed = |name: &str, time: Option<i64>| match pick {
        Pick::Named(n) => n == name,
        Pick::At(t) => time.is_some_and(|s| s <= *t),
        Pick::Newest => time.is_some(),
    };
    for (i, h) in first.holdings.iter().enumerate().rev() {
        if !allowed(&h.snapshot, h.time) {
            continue;
        }
        let everywhere = all.iter().all(|v| {
            v.holdings
                .get(i)
                .is_some_and(|g| g.snapshot == h.snapshot && g.version.is_some())
        });
        if everywhere {
            return Ok(h.snapshot.clone());
        }
        if matches!(pick, Pick::Named(_)) {
            break;
        }
    }
    let missing = all
        .iter()
        .zip(typed)
        .find(|(v, _)| {
            !v.holdings
                .iter()
                .any(|h| allowed(&h.snapshot, h.time) && h.version.is_some())
        })
        .map(|(_, t)| crate::text::escape(t.as_bytes()))
        .unwrap_or_else(|| "the paths".into());
    let exists = first.holdings.iter().any(|h| allowed(&h.snapshot, h.time));
    Err(Error::Selection {
        path: PathBuf::from(&missing),
        what: match pick {
            Pick::Named(n) if !exists => {
                format!("no snapshot named {n}; see fsync-repl snapshots DEST")
            }
            Pick::Named(n) => format!(
                "not in snapshot {n} (with the other PATHs); see fsync-repl versions DEST PATH"
            ),
            Pick::At(t) => format!(
                "no snapshot taken at or before {} holds it (with the other PATHs); see \
                 fsync-repl versions DEST PATH",
                crate::snapshot::retention::format_utc(*t)
            ),
            Pick::Newest => {
                "no snapshot holds it (with the other PATHs); see fsync-repl versions DEST PATH"
                    .into()
            }
        },
    })
}

/// A gitignore pattern that matches exactly `name` at the root.
fn exact_pattern(name: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(name).map_err(|_| {
        Error::Usage(format!(
            "{}: a single file whose name is not UTF-8 cannot be selected; restore its \
             directory",
            crate::text::escape(name)
        ))
    })?;
    let mut p = String::from("!/");
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '!' | '#' | ' ') {
            p.push('\\');
        }
        p.push(c);
    }
    Ok(p)
}

/// The engine runs that restore `v`'s path from `snapshot` into `to`.
fn item(v: &Versions, snapshot: &str, to: &Path) -> Result<Item> {
    // The names come from a far side for a remote DEST: a snapshot's name or current.
    let named = crate::fsutil::valid_name(snapshot.as_bytes())
        && crate::snapshot::retention::parse_utc(snapshot).is_some();
    if snapshot != CURRENT && !named {
        return Err(Error::Protocol(format!(
            "bad snapshot name from the remote side: {}",
            crate::text::escape_str(snapshot)
        )));
    }
    let rel = crate::text::unescape(&v.path)
        .filter(|r| r.is_empty() || crate::fsutil::valid_rel_path(r))
        .ok_or_else(|| Error::Protocol(format!("bad path from the remote side: {}", v.path)))?;
    let dir = v
        .holdings
        .iter()
        .find(|h| h.snapshot == snapshot)
        .and_then(|h| v.versions.get(h.version? - 1))
        .is_some_and(|x| x.kind == "dir");
    let shown = if rel.is_empty() {
        ".".into()
    } else {
        crate::text::escape(&rel)
    };
    if dir || rel.is_empty() {
        return Ok(Item {
            shown,
            lands: to.join(tree::as_path(&rel)),
            src: in_snapshot(snapshot, &rel),
            target: to.join(tree::as_path(&rel)),
            excludes: Vec::new(),
        });
    }
    let parent = tree::parent(&rel);
    Ok(Item {
        shown,
        lands: to.join(tree::as_path(&rel)),
        src: in_snapshot(snapshot, parent),
        target: to.join(tree::as_path(parent)),
        excludes: vec!["/*".into(), exact_pattern(tree::file_name(&rel))?],
    })
}

/// Item lines of a dry run that would change something TARGET already holds.
fn conflicts(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 3
                && b[2] == b' '
                && b"fdLpsD".contains(&b[1])
                && match b[0] {
                    b'>' | b'~' | b'-' => true,
                    b'.' => b[1] != b'd',
                    _ => false,
                }
        })
        .collect()
}

/// Output that keeps the item lines (for the check before a restore).
struct Capture(Mutex<Vec<String>>);

impl Output for Capture {
    fn item(&self, line: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.to_string());
    }
    fn warn(&self, line: &str) {
        eprintln!("fsync-repl: {line}");
    }
    fn progress(&self) -> ProgressMode {
        ProgressMode::Off
    }
}

fn options(a: &Restore, s: &ReadSettings, it: &Item) -> Options {
    Options {
        excludes: it.excludes.clone(),
        xattrs: a.xattrs,
        jobs: s.jobs,
        jobs_given: s.jobs_given,
        bwlimit: s.bwlimit,
        iops_limit: s.iops_limit,
        priority: s.priority,
        dry_run: a.dry_run,
        itemize: a.itemize || a.dry_run,
        quiet: s.quiet || a.json,
        ..Options::default()
    }
}

/// The record a run leaves in a directory it treats as a replica.
fn record_of(target: &Path) -> PathBuf {
    target.join(OsStr::from_bytes(crate::identity::SIDECAR))
}

/// Removes the source record a restore left in `target` (when there was none before).
fn forget_record(target: &Path, had: bool) {
    if !had {
        let dir = record_of(target);
        let _ = std::fs::remove_file(dir.join(OsStr::from_bytes(crate::identity::RECORD)));
        let _ = std::fs::remove_dir(dir);
    }
}

/// One item's copy: from DEST's snapshot (local, or over `pull` from a remote one) into
/// its place in TARGET, lines to `out`.
fn copy(
    a: &Restore,
    location: &Location,
    it: &Item,
    o: Options,
    out: &dyn Output,
    interrupted: &Arc<AtomicBool>,
) -> Result<Report> {
    match location {
        Location::Local(d) => {
            let src = d.join(tree::as_path(&it.src));
            crate::transfer::push_local(&o, &src, &it.target, out, interrupted.clone())
        }
        Location::Remote { host, path } => {
            let mut src = path.clone();
            src.push(b'/');
            src.extend_from_slice(&it.src);
            let from = Location::Remote {
                host: host.clone(),
                path: src,
            };
            let to = Location::Local(it.target.clone());
            let t = Transfer::new(from, to, o, a.remote.clone());
            pull_into(&t, out, interrupted.clone())
        }
    }
}

/// Runs `restore`; returns the exit code.
pub fn run(a: &Restore, interrupted: Arc<AtomicBool>) -> Result<i32> {
    let s = a.read;
    let pick = match (&a.snapshot, &a.at) {
        (Some(n), _) => Pick::Named(n.clone()),
        (None, Some(t)) => Pick::At(
            super::when::parse_at(t, crate::snapshot::now())
                .map_err(|e| Error::Usage(format!("--at {e}")))?,
        ),
        (None, None) => Pick::Newest,
    };
    let mut all = Vec::new();
    for p in &a.paths {
        let (_, v) = super::find_versions(&a.dest, p, true, &a.remote)?;
        all.push(v);
    }
    let snapshot = choose(&all, &pick, &a.paths)?;
    let items: Vec<Item> = all
        .iter()
        .map(|v| item(v, &snapshot, &a.to))
        .collect::<Result<_>>()?;
    let location = parse_location(&a.dest)?;
    let from = if snapshot == CURRENT {
        "current".to_string()
    } else {
        format!("snapshot {snapshot}")
    };
    // Every PATH checked before any is written.
    let mut found = Vec::new();
    for it in &items {
        let o = Options {
            dry_run: true,
            itemize: true,
            quiet: true,
            ..options(a, &s, it)
        };
        let cap = Capture(Mutex::new(Vec::new()));
        let r = copy(a, &location, it, o, &cap, &interrupted)?;
        if r.exit_code != 0 {
            return Err(Error::Reported(crate::error::ExitCode::from_code(
                r.exit_code,
            )));
        }
        let lines = cap.0.into_inner().unwrap_or_else(|p| p.into_inner());
        for c in conflicts(&lines) {
            let what = match c.as_bytes()[0] {
                b'>' => "its content differs",
                b'.' => "its metadata differs",
                _ => "it would be replaced",
            };
            found.push(format!("{}/{}: {what}", it.target.display(), &c[3..]));
        }
    }
    if !found.is_empty() && !a.overwrite {
        for f in &found {
            eprintln!("fsync-repl: differs in TARGET, not replaced: {f}");
        }
        return Err(Error::Selection {
            path: a.to.clone(),
            what: format!(
                "{} there differ{} from {from} (listed above); nothing was restored. \
                 Pass --overwrite to replace them, or restore --to another directory",
                match found.len() {
                    1 => "1 entry".to_string(),
                    n => format!("{n} entries"),
                },
                if found.len() == 1 { "s" } else { "" }
            ),
        });
    }
    let mut worst = 0;
    let mut reports = Vec::new();
    for it in &items {
        let had = record_of(&it.target).exists();
        let o = options(a, &s, it);
        let term = crate::engine::Term::for_options(&o);
        let r = copy(a, &location, it, o, &term, &interrupted);
        forget_record(&it.target, had);
        let r = r?;
        for e in &r.errors {
            eprintln!("fsync-repl: {e}");
        }
        if !s.quiet && !a.json {
            println!(
                "{} {} from {from} to {}",
                if a.dry_run {
                    "would restore"
                } else {
                    "restored"
                },
                it.shown,
                it.lands.display()
            );
            println!("{}", r.human());
        }
        let code = r.exit_code;
        reports.push(serde_json::json!({
            "path": it.shown, "snapshot": snapshot, "target": it.lands, "report": r,
        }));
        if worst == 0 {
            worst = code;
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "snapshot": snapshot, "restored": reports })
        );
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::restore::versions::{Holding, Version};

    fn v(path: &str, present: &[Option<usize>]) -> Versions {
        let names = [
            "2026-11-25T03:00:00Z",
            "2026-11-26T03:00:00Z",
            "2026-11-27T03:00:00Z",
        ];
        let mut holdings: Vec<Holding> = names
            .iter()
            .zip(present)
            .map(|(n, p)| Holding {
                snapshot: n.to_string(),
                time: crate::snapshot::retention::parse_utc(n),
                version: *p,
                unchanged: false,
            })
            .collect();
        holdings.push(Holding {
            snapshot: "current".into(),
            time: None,
            version: Some(1),
            unchanged: false,
        });
        Versions {
            path: path.into(),
            versions: vec![Version {
                version: 1,
                kind: "file".into(),
                size: 1,
                mtime: 0,
                ino: 1,
                snapshots: Vec::new(),
            }],
            holdings,
        }
    }

    #[test]
    fn the_newest_allowed_snapshot_holding_every_path() {
        let a = v("a", &[Some(1), Some(1), None]);
        let b = v("b", &[Some(1), Some(1), Some(1)]);
        let typed = [OsString::from("a"), OsString::from("b")];
        let both = [a.clone(), b.clone()];
        assert_eq!(
            choose(&both, &Pick::Newest, &typed).unwrap(),
            "2026-11-26T03:00:00Z"
        );
        assert_eq!(
            choose(std::slice::from_ref(&b), &Pick::Newest, &typed[1..]).unwrap(),
            "2026-11-27T03:00:00Z"
        );
        let at = crate::snapshot::retention::parse_utc("2026-11-25T23:59:59Z").unwrap();
        assert_eq!(
            choose(&both, &Pick::At(at), &typed).unwrap(),
            "2026-11-25T03:00:00Z"
        );
        assert!(choose(&both, &Pick::At(0), &typed).is_err());
        let named = Pick::Named("2026-11-27T03:00:00Z".into());
        let e = choose(&both, &named, &typed).unwrap_err().to_string();
        assert!(e.starts_with("a: not in snapshot"), "{e}");
        let e = choose(&both, &Pick::Named("x".into()), &typed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no snapshot named x"), "{e}");
        assert_eq!(
            choose(&both, &Pick::Named("current".into()), &typed).unwrap(),
            "current"
        );
    }

    #[test]
    fn a_file_is_selected_by_an_exact_pattern_and_conflicts_are_replacements() {
        assert_eq!(
            exact_pattern(b"a*b [1]!.txt").unwrap(),
            "!/a\\*b\\ \\[1\\]\\!.txt"
        );
        assert!(exact_pattern(b"\xff").is_err());
        let lines: Vec<String> = [
            "+f new",
            ">f changed",
            ".d dir",
            ".f mode",
            "cf twin",
            "> text",
        ]
        .map(String::from)
        .to_vec();
        let c: Vec<&str> = conflicts(&lines).iter().map(|s| s.as_str()).collect();
        assert_eq!(c, [">f changed", ".f mode"]);
    }
}

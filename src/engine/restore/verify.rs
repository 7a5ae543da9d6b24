//! `verify`: re-read the snapshots and compare them with their content catalogues, and
//! (`--against SRC`) compare `current` with SRC by content.
//!
//! The files of all the chosen snapshots are grouped by inode first, so a file that
//! several snapshots hard-link is read once, whatever the number of its names; what
//! one read gives is compared with the catalogue entry of every name. Only one name per
//! inode is held in memory (one snapshot's catalogue at a time); the names of an inode
//! found bad are collected by a second pass over the catalogues. Reads pass the
//! throttle (invariant 6) on workers at the run's priority; nothing of DEST is written
//! but a small progress record in `DEST/.fsync-repl/verify-progress.json`, so an
//! interrupted run resumes where it stopped (the inodes are taken in a fixed order).
//! Every path is opened beneath DEST without following a symlink (invariant 3).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::snapshot::catalogue;
use crate::snapshot::{BackupDir, SIDECAR};
use crate::throttle::Throttle;

/// The progress record's name in DEST's side-car directory.
const PROGRESS: &str = "verify-progress.json";
/// Inodes read per worker between two looks at the clock (and the stop flag).
const PER_WORKER: usize = 4;

/// One file that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Beneath DEST (`snapshots/NAME/…` or `current/…`), escaped.
    pub path: String,
    pub what: String,
}

/// The result of a verify.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The snapshots checked against their catalogues.
    pub snapshots: Vec<String>,
    /// Chosen snapshots that have no catalogue (taken by an older version): not checked.
    pub uncatalogued: Vec<String>,
    /// Chosen snapshots removed (pruned) while they were verified: not judged.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Catalogue entries (names) checked.
    pub files: u64,
    /// Distinct inodes read (each once) in this run.
    pub inodes_read: u64,
    pub bytes_read: u64,
    /// Inodes an interrupted earlier run had checked already (not read again).
    pub resumed: u64,
    /// With `--against`: entries of SRC compared with `current`.
    pub compared: u64,
    pub differ: Vec<Difference>,
    pub duration_secs: f64,
}

/// What a verify is asked to do.
pub struct Request<'a> {
    pub snapshots: Vec<String>,
    pub against: Option<PathBuf>,
    pub throttle: &'a Throttle,
    pub pool: &'a rayon::ThreadPool,
    pub cancel: &'a AtomicBool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Ignore (and replace) an interrupted run's progress record.
    pub restart: bool,
}

/// The progress of an interrupted run.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    key: String,
    done: u64,
    bad: Vec<Bad>,
}

/// An inode that is not what a catalogue says: what reading it gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bad {
    dev: u64,
    ino: u64,
    /// Its BLAKE3 (hex), or why it could not be read.
    got: std::result::Result<String, String>,
}

/// One inode to read: a name to read it by, and what its catalogue entries say.
struct Group {
    ino: (u64, u64),
    first: Vec<u8>,
    hash: [u8; 32],
    /// Its size on disk.
    size: u64,
    /// Every name's entry gives the same hash, and the size it has.
    agree: bool,
}

fn bar(on: bool, total: u64) -> indicatif::ProgressBar {
    if !on {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(s) = indicatif::ProgressStyle::with_template(
        "verify {binary_bytes}/{binary_total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
    ) {
        b.set_style(s);
    }
    b
}

/// Runs a verify of DEST.
pub fn verify(dest: &BackupDir, r: &Request<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut out = Outcome::default();
    // Pass 1: every name, grouped by inode (only one name kept per inode).
    let mut by_ino: HashMap<(u64, u64), Group> = HashMap::new();
    let mut missing = Vec::new();
    let (files, none) = visit(
        dest,
        &r.snapshots,
        r.throttle,
        &mut |path, e, st| match st {
            Some(st) if is_file(st) => {
                let g = by_ino
                    .entry((st.st_dev, st.st_ino))
                    .or_insert_with(|| Group {
                        ino: (st.st_dev, st.st_ino),
                        first: path.to_vec(),
                        hash: e.hash,
                        size: st.st_size as u64,
                        agree: true,
                    });
                g.agree &= g.hash == e.hash && g.size == e.size;
            }
            Some(_) => missing.push(Difference {
                path: crate::text::escape(path),
                what: "no longer a regular file".into(),
            }),
            None => missing.push(Difference {
                path: crate::text::escape(path),
                what: "missing (listed in the catalogue)".into(),
            }),
        },
    )?;
    out.files = files;
    out.uncatalogued = none;
    let uncatalogued: std::collections::HashSet<&String> = out.uncatalogued.iter().collect();
    out.snapshots = r
        .snapshots
        .iter()
        .filter(|n| !uncatalogued.contains(n))
        .cloned()
        .collect();
    out.differ = missing;
    let mut groups: Vec<Group> = by_ino.into_values().collect();
    groups.sort_unstable_by_key(|g| g.ino);
    let bad = check_snapshots(dest, r, groups, &mut out)?;
    // Pass 2, only when an inode is bad: every name of it, judged by its own entry.
    if !bad.is_empty() {
        let bad: HashMap<(u64, u64), Bad> = bad.into_iter().map(|b| ((b.dev, b.ino), b)).collect();
        let mut found = Vec::new();
        visit(dest, &out.snapshots, r.throttle, &mut |path, e, st| {
            let Some(b) = st.and_then(|st| bad.get(&(st.st_dev, st.st_ino))) else {
                return;
            };
            let size = st.map_or(0, |st| st.st_size as u64);
            let what = match &b.got {
                Err(why) => Some(why.clone()),
                Ok(_) if size != e.size => {
                    Some(format!("size {size} but {} in the catalogue", e.size))
                }
                Ok(h) if *h != blake3::Hash::from(e.hash).to_hex().as_str() => {
                    Some("content differs from the catalogue".into())
                }
                Ok(_) => None,
            };
            if let Some(what) = what {
                found.push(Difference {
                    path: crate::text::escape(path),
                    what,
                });
            }
        })?;
        out.differ.extend(found);
    }
    out.differ.sort_by(|a, b| a.path.cmp(&b.path));
    // A snapshot pruned meanwhile is gone, not damaged.
    let gone: Vec<String> = out
        .snapshots
        .iter()
        .filter(|n| {
            super::versions::kind_at(dest, &super::versions::in_snapshot(n, b"")).ok()
                != Some(Some("dir"))
        })
        .cloned()
        .collect();
    if !gone.is_empty() {
        // A difference's snapshot is its path up to the second '/' ("snapshots/NAME/").
        let prefixes: std::collections::HashSet<String> = gone
            .iter()
            .map(|g| {
                format!(
                    "{}/",
                    crate::text::escape(&super::versions::in_snapshot(g, b""))
                )
            })
            .collect();
        out.differ
            .retain(|d| match d.path.match_indices('/').nth(1) {
                Some((i, _)) => !prefixes.contains(&d.path[..=i]),
                None => true,
            });
        let gone_set: std::collections::HashSet<&String> = gone.iter().collect();
        out.snapshots.retain(|n| !gone_set.contains(n));
        out.removed.extend(gone);
    }
    out.duration_secs = started.elapsed().as_secs_f64();
    Ok(out)
}

fn is_file(st: &rustix::fs::Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
}

/// What [`visit`] calls for each entry: its path beneath DEST, the entry, the stat.
type Visitor<'a> = dyn FnMut(&[u8], &catalogue::Entry, Option<&rustix::fs::Stat>) + 'a;

/// Calls `f` with every catalogue entry of the snapshots `names` (its path beneath
/// DEST) and what its name holds now (`None`: nothing). One snapshot's catalogue is in
/// memory at a time. Returns the entries seen and the snapshots without a catalogue.
fn visit(
    dest: &BackupDir,
    names: &[String],
    throttle: &Throttle,
    f: &mut Visitor<'_>,
) -> Result<(u64, Vec<String>)> {
    let (mut files, mut none) = (0, Vec::new());
    for name in names {
        let Some(c) = dest.catalogue(name)? else {
            none.push(name.clone());
            continue;
        };
        files += c.entries.len() as u64;
        let base = super::versions::in_snapshot(name, b"");
        for dir in c
            .entries
            .chunk_by(|a, b| crate::tree::parent(&a.path) == crate::tree::parent(&b.path))
        {
            let parent = crate::tree::join(&base, crate::tree::parent(&dir[0].path));
            throttle.op();
            let fd = match fsutil::open_dir(dest.root(), &parent) {
                Ok(fd) => Some(fd),
                Err(e) if fsutil::is_not_found(&e) => None,
                Err(e) => {
                    return Err(Error::dest(
                        "open",
                        dest.path().join(crate::tree::as_path(&parent)),
                        e,
                    ))
                }
            };
            for e in dir {
                let name = crate::tree::file_name(&e.path);
                let st = fd
                    .as_ref()
                    .and_then(|fd| fsutil::stat_at(fd.as_fd(), name).ok());
                f(&crate::tree::join(&parent, name), e, st.as_ref());
            }
        }
    }
    Ok((files, none))
}

/// A key for the selection, so a progress record is only resumed by the same verify.
fn key(r: &Request<'_>, groups: &[Group]) -> String {
    let mut h = blake3::Hasher::new();
    for s in &r.snapshots {
        h.update(s.as_bytes());
        h.update(b"\0");
    }
    h.update(&(groups.len() as u64).to_le_bytes());
    h.finalize().to_hex().to_string()
}

fn progress_path(dest: &BackupDir) -> PathBuf {
    dest.path().join(SIDECAR).join(PROGRESS)
}

fn load_progress(dest: &BackupDir) -> Option<Progress> {
    let text = std::fs::read_to_string(progress_path(dest)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Saves the progress record (temporary file, rename); a DEST that cannot take it
/// (read-only) only loses the ability to resume.
fn save_progress(dest: &BackupDir, p: &Progress) {
    let path = progress_path(dest);
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let ok = serde_json::to_vec(p)
        .ok()
        .and_then(|t| std::fs::write(&temp, t).ok())
        .and_then(|_| std::fs::rename(&temp, &path).ok());
    if ok.is_none() {
        let _ = std::fs::remove_file(&temp);
    }
}

/// Reads every inode (after those an interrupted run did); returns the bad ones.
fn check_snapshots(
    dest: &BackupDir,
    r: &Request<'_>,
    groups: Vec<Group>,
    out: &mut Outcome,
) -> Result<Vec<Bad>> {
    let key = key(r, &groups);
    let mut progress = match load_progress(dest) {
        Some(p) if p.key == key && !r.restart && p.done as usize <= groups.len() => p,
        _ => Progress {
            key,
            ..Default::default()
        },
    };
    out.resumed = progress.done;
    let todo = &groups[progress.done as usize..];
    let total: u64 = todo.iter().map(|g| g.size).sum();
    let bar = bar(r.progress, total);
    let (inodes, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let found: Mutex<Vec<Bad>> = Mutex::new(Vec::new());
    let mut saved = Instant::now();
    for chunk in todo.chunks(r.pool.current_num_threads().max(1) * PER_WORKER) {
        if r.cancel.load(Ordering::Relaxed) {
            save_progress(dest, &progress);
            bar.abandon();
            return Err(Error::Interrupted);
        }
        r.pool.install(|| {
            chunk.par_iter().for_each(|g| {
                let b = check_group(dest, g, r.throttle, &inodes, &bytes);
                bar.inc(g.size);
                if let Some(b) = b {
                    found.lock().unwrap_or_else(|p| p.into_inner()).push(b);
                }
            })
        });
        progress.done += chunk.len() as u64;
        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
        progress.bad.append(&mut f);
        if saved.elapsed().as_secs() >= 2 {
            save_progress(dest, &progress);
            saved = Instant::now();
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(progress_path(dest));
    out.inodes_read = inodes.into_inner();
    out.bytes_read = bytes.into_inner();
    Ok(progress.bad)
}

/// Reads one inode; `Some` when it is not what its catalogue entries say.
fn check_group(
    dest: &BackupDir,
    g: &Group,
    throttle: &Throttle,
    inodes: &AtomicU64,
    bytes: &AtomicU64,
) -> Option<Bad> {
    let got = catalogue::hash_at(dest.root(), &g.first, throttle);
    inodes.fetch_add(1, Ordering::Relaxed);
    let got = match got {
        Ok((_, ino)) if ino != g.ino.1 => Err("replaced while it was verified".to_string()),
        Ok((hash, _)) => {
            bytes.fetch_add(g.size, Ordering::Relaxed);
            if hash == g.hash && g.agree {
                return None;
            }
            Ok(blake3::Hash::from(hash).to_hex().to_string())
        }
        Err(e) => Err(format!("cannot be read: {e}")),
    };
    Some(Bad {
        dev: g.ino.0,
        ino: g.ino.1,
        got,
    })
}

impl Outcome {
    /// The closing lines for a terminal (every name escaped already).
    pub fn human(&self) -> String {
        let mut s = String::new();
        for d in &self.differ {
            s.push_str(&format!(
                "DIFFERS {}: {}\n",
                crate::text::escape_str(&d.path),
                crate::text::escape_str(&d.what)
            ));
        }
        for u in &self.removed {
            s.push_str(&format!(
                "not checked: snapshot {} was removed during the verify\n",
                crate::text::escape_str(u)
            ));
        }
        for u in &self.uncatalogued {
            s.push_str(&format!(
                "not checked: snapshot {} has no content catalogue\n",
                crate::text::escape_str(u)
            ));
        }
        s.push_str(&format!(
            "verify: {} snapshot(s), {} files, {} inodes read ({}){}{}, {} differ, {:.1} s",
            self.snapshots.len(),
            self.files,
            self.inodes_read,
            crate::units::human_bytes(self.bytes_read),
            if self.resumed > 0 {
                format!(", resumed after {} inodes", self.resumed)
            } else {
                String::new()
            },
            if self.compared > 0 {
                format!(", {} entries compared with SRC", self.compared)
            } else {
                String::new()
            },
            self.differ.len(),
            self.duration_secs
        ));
        s
    }
}

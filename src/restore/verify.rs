//! `verify`: re-read the snapshots and compare them with their content catalogues, and
//! (`--against SRC`) compare `current` with SRC by content.
//!
//! The files of all the chosen snapshots are grouped by inode first, so a file that
//! several snapshots hard-link is read once, whatever the number of its names; what
//! one read gives is compared with the catalogue entry of every name. Reads pass the
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
use crate::snapshot::{Dest, SIDECAR};
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
    differ: Vec<Difference>,
}

/// The names of one inode: (path beneath DEST, hash and size from the catalogue).
struct Group {
    ino: (u64, u64),
    names: Vec<(Vec<u8>, [u8; 32], u64)>,
    size: u64,
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
pub fn verify(dest: &Dest, r: &Request<'_>) -> Result<Outcome> {
    let started = Instant::now();
    let mut out = Outcome::default();
    let mut entries: Vec<(Vec<u8>, [u8; 32], u64)> = Vec::new();
    for name in &r.snapshots {
        match dest.catalogue(name)? {
            None => out.uncatalogued.push(name.clone()),
            Some(c) => {
                out.snapshots.push(name.clone());
                let base = super::versions::in_snapshot(name, b"");
                entries.extend(
                    c.entries
                        .into_iter()
                        .map(|e| (crate::tree::join(&base, &e.path), e.hash, e.size)),
                );
            }
        }
    }
    out.files = entries.len() as u64;
    let (groups, missing) = group(dest, entries, r.throttle)?;
    out.differ.extend(missing);
    check_snapshots(dest, r, groups, &mut out)?;
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
    for g in &gone {
        let prefix = format!(
            "{}/",
            crate::text::escape(&super::versions::in_snapshot(g, b""))
        );
        out.differ.retain(|d| !d.path.starts_with(&prefix));
        out.snapshots.retain(|n| n != g);
        out.removed.push(g.clone());
    }
    if let Some(src) = &r.against {
        super::against::compare(dest, src, r, &mut out)?;
    }
    out.duration_secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Groups the names by inode (in inode order); names that are gone or not regular
/// files any more are differences at once.
fn group(
    dest: &Dest,
    mut entries: Vec<(Vec<u8>, [u8; 32], u64)>,
    throttle: &Throttle,
) -> Result<(Vec<Group>, Vec<Difference>)> {
    entries.sort_unstable_by(|a, b| crate::tree::path_cmp(&a.0, &b.0));
    let mut by_ino: HashMap<(u64, u64), Group> = HashMap::new();
    let mut missing = Vec::new();
    for dir in entries.chunk_by(|a, b| crate::tree::parent(&a.0) == crate::tree::parent(&b.0)) {
        let parent = crate::tree::parent(&dir[0].0);
        throttle.op();
        let fd = match fsutil::open_dir(dest.root(), parent) {
            Ok(fd) => Some(fd),
            Err(e) if fsutil::is_not_found(&e) => None,
            Err(e) => {
                return Err(Error::dest(
                    "open",
                    dest.path().join(crate::tree::as_path(parent)),
                    e,
                ))
            }
        };
        for (path, hash, size) in dir {
            let st = fd
                .as_ref()
                .and_then(|fd| fsutil::stat_at(fd.as_fd(), crate::tree::file_name(path)).ok());
            match st {
                Some(st)
                    if rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::RegularFile =>
                {
                    let g = by_ino
                        .entry((st.st_dev, st.st_ino))
                        .or_insert_with(|| Group {
                            ino: (st.st_dev, st.st_ino),
                            names: Vec::new(),
                            size: st.st_size as u64,
                        });
                    g.names.push((path.clone(), *hash, *size));
                }
                Some(_) => missing.push(Difference {
                    path: crate::text::escape(path),
                    what: "no longer a regular file".into(),
                }),
                None => missing.push(Difference {
                    path: crate::text::escape(path),
                    what: "missing (listed in the catalogue)".into(),
                }),
            }
        }
    }
    let mut groups: Vec<Group> = by_ino.into_values().collect();
    groups.sort_unstable_by_key(|g| g.ino);
    Ok((groups, missing))
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

fn progress_path(dest: &Dest) -> PathBuf {
    dest.path().join(SIDECAR).join(PROGRESS)
}

fn load_progress(dest: &Dest) -> Option<Progress> {
    let text = std::fs::read_to_string(progress_path(dest)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Saves the progress record (temporary file, rename); a DEST that cannot take it
/// (read-only) only loses the ability to resume.
fn save_progress(dest: &Dest, p: &Progress) {
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

fn check_snapshots(
    dest: &Dest,
    r: &Request<'_>,
    groups: Vec<Group>,
    out: &mut Outcome,
) -> Result<()> {
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
    let found: Mutex<Vec<Difference>> = Mutex::new(Vec::new());
    let mut saved = Instant::now();
    for chunk in todo.chunks(r.pool.current_num_threads().max(1) * PER_WORKER) {
        if r.cancel.load(Ordering::Relaxed) {
            save_progress(dest, &progress);
            bar.abandon();
            return Err(Error::Interrupted);
        }
        r.pool.install(|| {
            chunk.par_iter().for_each(|g| {
                let diffs = check_group(dest, g, r.throttle, &inodes, &bytes);
                bar.inc(g.size);
                if !diffs.is_empty() {
                    found
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(diffs);
                }
            })
        });
        progress.done += chunk.len() as u64;
        let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
        progress.differ.append(&mut f);
        if saved.elapsed().as_secs() >= 2 {
            save_progress(dest, &progress);
            saved = Instant::now();
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(progress_path(dest));
    out.inodes_read = inodes.into_inner();
    out.bytes_read = bytes.into_inner();
    let mut differ = std::mem::take(&mut progress.differ);
    differ.sort_by(|a, b| a.path.cmp(&b.path));
    out.differ.extend(differ);
    Ok(())
}

/// Reads one inode and compares it with the catalogue entry of each of its names.
fn check_group(
    dest: &Dest,
    g: &Group,
    throttle: &Throttle,
    inodes: &AtomicU64,
    bytes: &AtomicU64,
) -> Vec<Difference> {
    let first = &g.names[0].0;
    let diff = |path: &[u8], what: String| Difference {
        path: crate::text::escape(path),
        what,
    };
    let got = catalogue::hash_at(dest.root(), first, throttle);
    inodes.fetch_add(1, Ordering::Relaxed);
    match got {
        Ok((_, ino)) if ino != g.ino.1 => {
            vec![diff(first, "replaced while it was verified".into())]
        }
        Ok((hash, _)) => {
            bytes.fetch_add(g.size, Ordering::Relaxed);
            g.names
                .iter()
                .filter_map(|(path, want, size)| {
                    if *size != g.size {
                        Some(diff(
                            path,
                            format!("size {} but {size} in the catalogue", g.size),
                        ))
                    } else if hash != *want {
                        Some(diff(path, "content differs from the catalogue".into()))
                    } else {
                        None
                    }
                })
                .collect()
        }
        Err(e) => g
            .names
            .iter()
            .map(|(path, _, _)| diff(path, format!("cannot be read: {e}")))
            .collect(),
    }
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
            crate::report::human_bytes(self.bytes_read),
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

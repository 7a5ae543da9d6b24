//! Runs a replication: scan both sides, plan, check space, execute the plan.
//!
//! The plan is executed phase by phase on a rayon pool. File data is written in
//! batches: each batch's temporary files are written in parallel, made durable with
//! one barrier ([`Destination::commit`]), then renamed, so a rename never precedes the
//! durability of its data and no file costs an fsync of its own. A failing file goes
//! into the report and the exit code; only a full destination, a destination error
//! that makes further work pointless, or an interrupt stops the run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::config::Options;
use crate::dest::local::LocalDest;
use crate::dest::{DataMode, DataStats, Destination, PutError, SetMeta, Staged, Started};
use crate::error::{Error, ExitCode, Result};
use crate::identity::SourceId;
use crate::plan::{self, ContentHasher, FileOp, FileSource, Hash, Plan, PlanOptions, Side};
use crate::report::{escape, itemize, Counters, Report};
use crate::scan::{ScanOptions, Scanned};
use crate::source::Source;
use crate::space;
use crate::throttle::Throttle;
use crate::tree::{self, Entry, Kind, Listing};

/// Where output goes; the binary decides, tests capture.
pub trait Output: Sync {
    /// A line of itemized output or the plan.
    fn item(&self, line: &str);
    /// A warning or error line.
    fn warn(&self, line: &str);
    /// How to show progress.
    fn progress(&self) -> ProgressMode;
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Off,
    /// A bar redrawn in place on a terminal.
    Terminal,
    /// One plain line a second (logs, pipes).
    Lines,
}

/// Progress as plain lines on stderr, for `--progress` off a terminal.
#[derive(Debug)]
struct PlainLines;

impl indicatif::TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        if !s.trim().is_empty() {
            eprintln!("{s}");
        }
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn progress_bar(mode: ProgressMode, bytes: u64, files: u64) -> ProgressBar {
    let (target, template) = match mode {
        _ if bytes == 0 && files == 0 => return ProgressBar::hidden(),
        ProgressMode::Off => return ProgressBar::hidden(),
        ProgressMode::Terminal => (
            ProgressDrawTarget::stderr(),
            "{msg} {binary_bytes}/{binary_total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
        ),
        ProgressMode::Lines => (
            ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines), 1),
            "progress: {msg}, {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, ETA {eta}",
        ),
    };
    let bar = ProgressBar::with_draw_target(Some(bytes), target);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("0/{files} files"));
    bar
}

/// The result of a run: the report and, for `--itemize`/`--dry-run`, the lines.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
}

struct Hasher<'a> {
    src: &'a Source,
    dst: &'a dyn Destination,
    sl: &'a Listing,
    dl: &'a Listing,
    throttle: &'a Throttle,
    /// A signal: no more hashing (the plan is dropped).
    stop: &'a AtomicBool,
}

impl ContentHasher for Hasher<'_> {
    fn hash(&self, side: Side, idx: usize) -> Option<Hash> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        match side {
            Side::Src => self.src.hash(self.sl.path(idx), self.throttle),
            Side::Dst => self.dst.hash(self.dl.path(idx)),
        }
    }
}

/// Checks that SRC is a readable directory.
pub fn check_source(src: &Path) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(|e| Error::Selection {
        path: src.to_path_buf(),
        what: format!("cannot read the source ({e}); give an existing directory"),
    })?;
    if !meta.is_dir() {
        return Err(Error::Selection {
            path: src.to_path_buf(),
            what: "the source is not a directory; give the directory whose contents to replicate"
                .into(),
        });
    }
    Ok(())
}

/// Checks SRC and DEST before anything is opened for writing.
pub fn check_selection(src: &Path, dest: &Path) -> Result<()> {
    check_source(src)?;
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        let dir_or_link_to_dir = m.is_dir() || (m.file_type().is_symlink() && dest.is_dir());
        if !dir_or_link_to_dir {
            return Err(Error::Selection {
                path: dest.to_path_buf(),
                what: "the destination exists and is not a directory; give a directory path".into(),
            });
        }
    }
    let s = std::fs::canonicalize(src).map_err(|e| Error::Selection {
        path: src.to_path_buf(),
        what: e.to_string(),
    })?;
    let d = canonical_dest(dest);
    if d.starts_with(&s) || s.starts_with(&d) {
        return Err(Error::Selection {
            path: dest.to_path_buf(),
            what: format!(
                "the destination and the source {} contain each other; choose a destination outside the source",
                s.display()
            ),
        });
    }
    Ok(())
}

/// Canonical form of a destination that may not exist yet.
fn canonical_dest(dest: &Path) -> std::path::PathBuf {
    let mut tail = Vec::new();
    let mut p = dest.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&p) {
            let mut c = c;
            for t in tail.iter().rev() {
                c.push(t);
            }
            return c;
        }
        match (p.file_name().map(|n| n.to_os_string()), p.parent()) {
            (Some(n), Some(parent)) => {
                tail.push(n);
                p = if parent.as_os_str().is_empty() {
                    ".".into()
                } else {
                    parent.to_path_buf()
                };
            }
            _ => return dest.to_path_buf(),
        }
    }
}

/// True if the open source root was deleted, or `path` now names another directory.
fn root_replaced(src: &Source, path: &Path) -> bool {
    let Ok(open) = rustix::fs::fstat(src.root()) else {
        return true;
    };
    match rustix::fs::stat(path) {
        Ok(now) => open.st_nlink == 0 || (now.st_dev, now.st_ino) != (open.st_dev, open.st_ino),
        Err(_) => true,
    }
}

/// The digest of an entry's extended attributes (0: none).
fn xattr_digest(m: Option<&tree::Meta>) -> u64 {
    match m.and_then(|m| m.extra.as_ref()) {
        Some(tree::Extra::Xattrs(d)) => *d,
        _ => 0,
    }
}

fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count()
}

fn set_meta_of(e: &Entry, opts: &Options) -> SetMeta {
    SetMeta {
        kind: e.kind,
        perm: e.perm,
        owner: opts.owners.then_some((e.uid, e.gid)),
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
    }
}

/// Bytes the plan adds to the destination, plus the temporary files held at once.
/// An updated file whose old version has other links (a snapshot) counts in full.
pub fn bytes_needed(plan: &Plan, src: &Listing, dst: &Listing, batch_bytes: u64) -> u64 {
    let mut add = 0u64;
    let mut temp = 0u64;
    for op in &plan.files {
        let e = src.get(op.src as usize);
        // Sparse files take what their data takes.
        let size = e.alloc().min(e.size);
        match &op.from {
            FileSource::Source { old: Some(j) } => {
                let old = dst.get(*j as usize);
                if old.nlink > 1 {
                    // Another name (a snapshot, say) keeps the old content: replacing
                    // it frees nothing, so the new version needs all its space.
                    add += size;
                } else {
                    add += size.saturating_sub(old.size);
                    temp += size.min(old.size);
                }
            }
            _ => add += size,
        }
    }
    add + temp.min(batch_bytes)
}

/// Checks SRC against the source DEST records (invariant 7) before DEST is listed: a
/// run that may delete refuses another filesystem or root unless told
/// `--accept-new-source`. Returns the record to write once the run is cleared to
/// change DEST (none when DEST already records this source).
fn source_identity(
    opts: &Options,
    src: &Source,
    dest: &dyn Destination,
    src_path: &Path,
    dest_path: &Path,
) -> Result<Option<String>> {
    let now = SourceId::of(src.root()).map_err(|e| Error::Selection {
        path: src_path.to_path_buf(),
        what: format!("cannot read the source's identity: {e}"),
    })?;
    let was = match dest.source_record() {
        Ok(r) => r.as_deref().and_then(SourceId::parse),
        // Only a run that may delete depends on it.
        Err(e) if opts.delete => {
            return Err(Error::dest("read the source record of", dest_path, e))
        }
        Err(_) => return Ok(None),
    };
    match was {
        Some(was) if was.same_source(&now) => Ok(None),
        Some(was) if opts.delete && !opts.accept_new_source => {
            Err(Error::NewSource(crate::identity::mismatch(
                &src_path.display().to_string(),
                &dest_path.display().to_string(),
                &was,
                &now,
            )))
        }
        // A run that deletes nothing cannot empty the replica, and does not speak for
        // its source either.
        Some(_) if !opts.accept_new_source => Ok(None),
        _ => Ok(Some(now.to_record())),
    }
}

/// Destination entries the plan removes: deletes, and whole subtrees cleared to make
/// way for another kind of entry.
fn doomed_entries(plan: &Plan, dl: &Listing) -> u64 {
    let cleared: u64 = plan
        .clear
        .iter()
        .map(|&j| {
            // A sorted listing holds a directory's subtree right after it.
            let p = dl.path(j as usize);
            (j as usize..dl.len())
                .take_while(|&k| tree::is_within(dl.path(k), p))
                .count() as u64
        })
        .sum();
    plan.deletes.len() as u64 + cleared
}

/// Inodes the plan takes on the destination at its peak: every new file, directory,
/// symlink and special file, plus the temporary files of one batch of rewrites (each
/// frees its old inode only once renamed into place).
pub fn inodes_needed(plan: &Plan, batch_files: usize) -> u64 {
    let rewrites = plan
        .files
        .iter()
        .filter(|f| matches!(f.from, FileSource::Source { old: Some(_) }))
        .count();
    let fresh = plan.files.len() - rewrites;
    (fresh + plan.mkdirs.len() + plan.symlinks.len() + plan.specials.len()) as u64
        + rewrites.min(batch_files) as u64
}

/// Splits doomed directories into those a scoped run may delete and those it must
/// not: directories whose own entries it did not list, and every doomed ancestor of
/// one (its rmdir would fail). The second list keeps only the topmost.
fn unlisted_deletes<'p>(
    dirs: Vec<u32>,
    path: impl Fn(u32) -> &'p [u8],
    scope: &crate::scope::Scope,
) -> (Vec<u32>, Vec<u32>) {
    // Every blocked directory and all its ancestors.
    let mut above: std::collections::HashSet<&[u8]> = Default::default();
    for &j in &dirs {
        let mut p = path(j);
        if scope.lists(p) {
            continue;
        }
        while !p.is_empty() && above.insert(p) {
            p = crate::tree::parent(p);
        }
    }
    if above.is_empty() {
        return (dirs, Vec::new());
    }
    let (keep, held): (Vec<u32>, Vec<u32>) =
        dirs.into_iter().partition(|&j| !above.contains(path(j)));
    let held_set: std::collections::HashSet<&[u8]> = held.iter().map(|&j| path(j)).collect();
    let top = held
        .into_iter()
        .filter(|&j| {
            let mut p = crate::tree::parent(path(j));
            while !p.is_empty() {
                if held_set.contains(p) {
                    return false;
                }
                p = crate::tree::parent(p);
            }
            true
        })
        .collect();
    (keep, top)
}

fn draining(opts: &Options) -> bool {
    opts.drain
        .as_ref()
        .is_some_and(|d| d.load(Ordering::Relaxed))
}

struct Run<'a> {
    opts: &'a Options,
    /// DEST as the user named it, for messages.
    dest_name: &'a Path,
    src: &'a Source,
    dest: &'a dyn Destination,
    sl: &'a Listing,
    dl: &'a Listing,
    counters: Counters,
    stop: AtomicBool,
    interrupted: &'a AtomicBool,
    bar: ProgressBar,
    files_total: u64,
    files_done: std::sync::atomic::AtomicU64,
    /// For a remote destination: a wider pool for the phases that are one round trip
    /// per entry (mkdir, links, metadata, deletes), so many requests are in flight.
    /// Its threads only wait on answers; source files are read on the main pool.
    wide: Option<rayon::ThreadPool>,
    throttle: &'a Throttle,
    /// Directory deletes left for a run that lists them whole.
    relist: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl<'a> Run<'a> {
    fn advance(&self, bytes: u64) {
        let n = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 32 == 0 || n == self.files_total {
            self.bar
                .set_message(format!("{n}/{} files", self.files_total));
        }
        self.bar.inc(bytes);
    }

    /// Runs `f` on every item, in parallel (on the wide pool when there is one); once
    /// the run is halted, the items not yet started are left for the next run.
    fn each<T: Sync>(&self, items: &[T], f: impl Fn(&T) + Sync + Send) {
        let f = |t: &T| {
            if !self.halted() {
                f(t)
            }
        };
        match &self.wide {
            Some(pool) => pool.install(|| items.par_iter().for_each(f)),
            None => items.par_iter().for_each(f),
        }
    }

    /// True when the run must end now, dropping work in progress.
    fn cut(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.interrupted.load(Ordering::Relaxed)
            || self.dest.broken().is_some()
    }

    /// True when the run is asked to wind down: finish what is in flight, start nothing.
    fn draining(&self) -> bool {
        draining(self.opts)
    }

    /// True when nothing new may start.
    fn halted(&self) -> bool {
        self.cut() || self.draining()
    }

    /// Records a destination error met on `path`: a fault of the whole destination
    /// stops the run with one message; any other fails that entry alone (exit 23).
    fn dest_error(&self, op: &str, path: &[u8], e: std::io::Error) {
        if self.dest.broken().is_some() {
            // One protocol error is reported for the whole run, not one per file.
        } else if crate::fsutil::is_dest_wide(&e) {
            self.dest_wide(op, path, &e);
        } else {
            self.counters.add(&self.counters.failed, 1);
            self.counters.problem(
                ExitCode::Partial,
                format!("{}: {op} on the destination: {e}", self.shown(path)),
            );
        }
    }

    /// `path` for a message: the destination itself when empty (a batch-level error).
    fn shown(&self, path: &[u8]) -> String {
        if path.is_empty() {
            self.dest_name.display().to_string()
        } else {
            escape(path)
        }
    }

    /// Stops the run once, with one message, for a fault of the whole destination.
    fn dest_wide(&self, op: &str, path: &[u8], e: &std::io::Error) {
        if self.stop.swap(true, Ordering::Relaxed) {
            return;
        }
        let space = self.dest.space().ok();
        let dest = self.dest_name.display();
        let what = crate::space::fault(e, space, &dest.to_string());
        let msg = if path.is_empty() {
            format!("{what} ({op}); the run stopped and every file is old or new.")
        } else {
            format!(
                "{what} ({op} {}); the run stopped and every file is old or new.",
                escape(path)
            )
        };
        self.counters.problem(ExitCode::DestIo, msg);
    }

    /// Starts one file's temporary copy, retrying once if the source changed; `None`
    /// when the run is halted.
    fn start(&self, op: &FileOp) -> Option<Result<Started<'a>, PutError>> {
        if self.halted() {
            return None;
        }
        let path = self.sl.path(op.src as usize);
        let e = self.sl.get(op.src as usize);
        let meta = set_meta_of(e, self.opts);
        Some(match &op.from {
            FileSource::Local(from) => self
                .dest
                .stage_local_copy(path, from, &meta)
                .map(|s| Started::Done(s, Default::default())),
            FileSource::Source { old } => {
                let mode = if self.opts.delta && old.is_some() {
                    DataMode::Delta
                } else {
                    DataMode::Whole
                };
                let mut attempt = 0;
                loop {
                    let f = match self.src.open_file(path) {
                        Ok(f) => f,
                        Err(err) if crate::fsutil::is_not_found(&err) => {
                            break Err(PutError::SourceVanished)
                        }
                        Err(err) => break Err(PutError::Source(err)),
                    };
                    if self.throttle.rate().is_some_and(|r| r < READAHEAD_RATE) {
                        f.no_readahead();
                    }
                    // The file may have changed since the scan: its bytes and its
                    // metadata both come from this open (the copy checks it stays so).
                    let meta = SetMeta {
                        perm: f.perm,
                        owner: meta.owner.map(|_| f.owner),
                        mtime: f.mtime.0,
                        mtime_nsec: f.mtime.1,
                        ..meta
                    };
                    match self
                        .dest
                        .start_file(path, &f, &meta, mode, self.opts.xattrs)
                    {
                        Err(PutError::SourceChanged) if attempt == 0 => attempt += 1,
                        r => break r,
                    }
                }
            }
        })
    }

    /// A started file once its temporary copy is written: what to count when it lands,
    /// or the failure recorded (`None`).
    fn settle(
        &self,
        op: &FileOp,
        result: Result<(Staged, DataStats), PutError>,
    ) -> Option<(Staged, DataStats)> {
        let path = self.sl.path(op.src as usize);
        match result {
            Ok(done) => Some(done),
            Err(_) if self.dest.broken().is_some() => None,
            Err(err) => {
                let name = escape(path);
                let c = &self.counters;
                match err {
                    PutError::NoSpace => {
                        self.dest_wide("write", path, &rustix::io::Errno::NOSPC.into())
                    }
                    PutError::Interrupted => {}
                    PutError::SourceVanished => c.problem(
                        ExitCode::Vanished,
                        format!("{name}: vanished from the source before it was copied"),
                    ),
                    PutError::SourceChanged => {
                        c.add(&c.failed, 1);
                        c.problem(
                            ExitCode::Partial,
                            format!("{name}: changed while it was read (twice); the old copy was kept, the next run will copy it"),
                        )
                    }
                    PutError::Source(e) => {
                        c.add(&c.failed, 1);
                        c.problem(
                            ExitCode::Partial,
                            format!("{name}: cannot read the source: {e}"),
                        )
                    }
                    PutError::Dest { op, err } => self.dest_error(op, path, err),
                }
                None
            }
        }
    }

    /// Counts a file that landed under its final name.
    fn landed(&self, op: &FileOp, stats: &DataStats) {
        let e = self.sl.get(op.src as usize);
        let c = &self.counters;
        match &op.from {
            FileSource::Local(_) => {
                c.add(&c.moved_bytes, e.size);
                c.add(&c.created, 1);
            }
            FileSource::Source { old } => {
                c.add(
                    if old.is_some() {
                        &c.updated
                    } else {
                        &c.created
                    },
                    1,
                );
                c.add(&c.literal, stats.literal);
                c.add(&c.matched, stats.matched);
                c.add(&c.cloned, stats.cloned);
            }
        }
        self.advance(e.size);
    }

    fn files(&self, ops: &[FileOp]) {
        let mut start = 0;
        while start < ops.len() && !self.halted() {
            let mut end = start;
            let mut bytes = 0u64;
            while end < ops.len()
                && end - start < self.opts.batch_files
                && bytes < self.opts.batch_bytes
            {
                bytes += self.sl.get(ops[end].src as usize).size;
                end += 1;
            }
            // Start every file of the batch, then collect the answers in order: a
            // remote destination answers while later files are still being sent.
            let started: Vec<(&FileOp, Result<Started<'a>, PutError>)> = ops[start..end]
                .par_iter()
                .filter_map(|op| Some((op, self.start(op)?)))
                .collect();
            let done: Vec<(&FileOp, Staged, DataStats)> = started
                .into_iter()
                .filter_map(|(op, r)| {
                    let (s, stats) = self.settle(op, r.and_then(Started::finish))?;
                    Some((op, s, stats))
                })
                .collect();
            let staged: Vec<Staged> = done.iter().map(|(_, s, _)| s.clone()).collect();
            // Draining, the files already copied are still put in place.
            if self.cut() {
                for s in &staged {
                    self.dest.discard(s);
                }
                return;
            }
            match self.dest.commit(&staged) {
                Ok(refused) => {
                    let refused: std::collections::HashMap<usize, std::io::Error> =
                        refused.into_iter().collect();
                    for (k, (op, _, stats)) in done.iter().enumerate() {
                        match refused.get(&k) {
                            None => self.landed(op, stats),
                            Some(e) => self.dest_error(
                                "rename into place",
                                self.sl.path(op.src as usize),
                                std::io::Error::new(e.kind(), e.to_string()),
                            ),
                        }
                    }
                }
                Err(e) => {
                    for s in &staged {
                        self.dest.discard(s);
                    }
                    self.dest_error("commit", b"", e);
                    self.stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
            start = end;
        }
    }

    /// Hands directories back for a run that lists them whole.
    fn relist<'p>(&self, dirs: impl Iterator<Item = &'p [u8]>) {
        let mut r = self.relist.lock().unwrap_or_else(|p| p.into_inner());
        r.extend(dirs.map(<[u8]>::to_vec));
    }

    /// Runs `f` over `items` level by level of path depth, in parallel within a level.
    fn by_depth<T: Sync>(
        &self,
        items: &[T],
        depth: impl Fn(&T) -> usize,
        deepest_first: bool,
        f: impl Fn(&T) + Sync,
    ) {
        let mut levels: Vec<(usize, Vec<&T>)> = Vec::new();
        let mut sorted: Vec<&T> = items.iter().collect();
        sorted.sort_by_key(|t| depth(t));
        for t in sorted {
            let d = depth(t);
            match levels.last_mut() {
                Some((ld, v)) if *ld == d => v.push(t),
                _ => levels.push((d, vec![t])),
            }
        }
        if deepest_first {
            levels.reverse();
        }
        for (_, level) in levels {
            if self.halted() {
                return;
            }
            self.each(&level, |t| f(t));
        }
    }

    fn execute(&self, plan: &Plan) {
        let (sl, dl, dest, opts) = (self.sl, self.dl, self.dest, self.opts);
        if self.halted() {
            return;
        }
        for &j in &plan.temps {
            let p = dl.path(j as usize);
            if let Err(e) = dest.remove(p, dl.get(j as usize).kind) {
                self.dest_error("remove leftover temporary file", p, e);
            }
        }
        for &j in &plan.clear {
            let p = dl.path(j as usize);
            match dest.remove_tree(p) {
                Ok(()) => self.counters.add(&self.counters.deleted, 1),
                Err(e) => self.dest_error("remove (to make way)", p, e),
            }
        }
        self.by_depth(
            &plan.mkdirs,
            |&i| depth(sl.path(i as usize)),
            false,
            |&i| {
                let p = sl.path(i as usize);
                match dest.mkdir(p, sl.get(i as usize).perm) {
                    Ok(()) => self.counters.add(&self.counters.created, 1),
                    Err(e) => self.dest_error("mkdir", p, e),
                }
            },
        );
        if self.halted() {
            // Moves need the directories just made.
            return;
        }
        self.each(&plan.moves, |&(i, j)| {
            let (to, from) = (sl.path(i as usize), dl.path(j as usize));
            let e = sl.get(i as usize);
            match dest
                .rename(from, to)
                .and_then(|()| dest.set_meta(to, &set_meta_of(e, opts)))
            {
                Ok(()) => {
                    self.counters.add(&self.counters.moved, 1);
                    self.counters.add(&self.counters.moved_bytes, e.size);
                    self.advance(e.size);
                }
                Err(e) => self.dest_error("rename", to, e),
            }
        });
        self.files(&plan.files);
        if self.halted() {
            return;
        }
        self.each(&plan.links, |&(i, l)| {
            let p = sl.path(i as usize);
            match dest.link(p, sl.path(l as usize)) {
                Ok(()) => self.counters.add(&self.counters.linked, 1),
                Err(e) => self.dest_error("hard link", p, e),
            }
        });
        self.each(&plan.symlinks, |&i| {
            let p = sl.path(i as usize);
            match dest.symlink(
                p,
                sl.target(i as usize),
                &set_meta_of(sl.get(i as usize), opts),
            ) {
                Ok(()) => self.counters.add(&self.counters.created, 1),
                Err(e) => self.dest_error("symlink", p, e),
            }
        });
        self.each(&plan.specials, |&i| {
            let p = sl.path(i as usize);
            match dest.mknod(
                p,
                &set_meta_of(sl.get(i as usize), opts),
                sl.rdev(i as usize),
            ) {
                Ok(()) => self.counters.add(&self.counters.created, 1),
                Err(e) => self.dest_error("mknod", p, e),
            }
        });
        self.each(&plan.meta, |&(i, _)| {
            let p = sl.path(i as usize);
            match dest.set_meta(p, &set_meta_of(sl.get(i as usize), opts)) {
                Ok(()) => self.counters.add(&self.counters.meta, 1),
                Err(e) => self.dest_error("set metadata", p, e),
            }
        });
        if self.halted() {
            return;
        }
        // Deletes: files first (in parallel), then directories children-first.
        let (dirs, others): (Vec<u32>, Vec<u32>) = plan
            .deletes
            .iter()
            .partition(|&&j| dl.get(j as usize).kind == Kind::Dir);
        if let Some(scope) = &opts.scope {
            // An ignore file that goes (or moves away) lets through what it excluded
            // beneath its directory: list that whole.
            let gone = others
                .iter()
                .map(|&j| dl.path(j as usize))
                .chain(plan.moves.iter().map(|&(_, j)| dl.path(j as usize)));
            self.relist(gone.filter_map(|p| {
                let dir = crate::tree::parent(p);
                (crate::tree::file_name(p) == crate::scan::IGNORE_FILE && !scope.covers_all(dir))
                    .then_some(dir)
            }));
        }
        self.each(&others, |&j| {
            let p = dl.path(j as usize);
            match dest.remove(p, dl.get(j as usize).kind) {
                Ok(()) => self.counters.add(&self.counters.deleted, 1),
                Err(e) => self.dest_error("delete", p, e),
            }
        });
        // A directory whose contents this run's scope did not list is not deleted
        // blind, nor any doomed directory above it: the caller lists the topmost
        // whole next (see `Report::relist_dirs`).
        let dirs = match &opts.scope {
            None => dirs,
            Some(scope) => {
                let (keep, unlisted) = unlisted_deletes(dirs, |j| dl.path(j as usize), scope);
                self.relist(unlisted.iter().map(|&j| dl.path(j as usize)));
                keep
            }
        };
        self.by_depth(
            &dirs,
            |&j| depth(dl.path(j as usize)),
            true,
            |&j| {
                let p = dl.path(j as usize);
                match dest.remove(p, Kind::Dir) {
                    Ok(()) => self.counters.add(&self.counters.deleted, 1),
                    Err(e) => self.dest_error("delete directory", p, e),
                }
            },
        );
        self.by_depth(
            &plan.dirmeta,
            |&i| depth(sl.path(i as usize)),
            true,
            |&i| {
                let p = sl.path(i as usize);
                if opts.xattrs {
                    match self.src.dir_xattrs(p) {
                        Ok(x) => {
                            if let Err(e) = dest.set_dir_xattrs(p, &x) {
                                self.dest_error("set extended attributes", p, e);
                            }
                        }
                        Err(e) => self.counters.problem(
                            ExitCode::Partial,
                            format!("{}: cannot read extended attributes: {e}", escape(p)),
                        ),
                    }
                }
                if let Err(e) = dest.set_dir_meta(p, &set_meta_of(sl.get(i as usize), opts)) {
                    self.dest_error("set directory metadata", p, e);
                }
            },
        );
    }
}

/// Replicates the local directory `src` into the local directory `dest`.
pub fn push_local(
    opts: &Options,
    src: &Path,
    dest: &Path,
    out: &dyn Output,
    interrupted: Arc<AtomicBool>,
) -> Result<Report> {
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    push_local_with(opts, src, dest, out, interrupted, throttle)
}

/// [`push_local`] with a throttle that outlives the run (watch mode's batches share
/// one, so the limits hold across batches).
pub fn push_local_with(
    opts: &Options,
    src: &Path,
    dest: &Path,
    out: &dyn Output,
    interrupted: Arc<AtomicBool>,
    throttle: Arc<Throttle>,
) -> Result<Report> {
    check_selection(src, dest)?;
    // A missing DEST is made only once the run is cleared to write (a refused run
    // creates nothing).
    let local = if !dest.exists() {
        None
    } else {
        Some(
            LocalDest::open(dest, opts, throttle.clone(), interrupted.clone()).map_err(|e| {
                Error::Selection {
                    path: dest.to_path_buf(),
                    what: format!("cannot open or create the destination: {e}"),
                }
            })?,
        )
    };
    let target = Target {
        dest: local.as_ref().map(|d| d as &dyn Destination),
        name: dest,
        throttle,
    };
    push_to(opts, src, target, out, interrupted)
}

/// Where a run writes: a destination (absent in a dry run whose DEST does not exist yet),
/// its name for messages, and the throttle its disk work shares.
pub struct Target<'a> {
    pub dest: Option<&'a dyn Destination>,
    pub name: &'a Path,
    pub throttle: Arc<Throttle>,
}

/// Below this byte rate source files are read without the kernel's read-ahead.
const READAHEAD_RATE: u64 = 64 << 20;

/// Requests in flight per worker in the round-trip-bound phases of a remote run.
const REMOTE_FANOUT: usize = 8;

fn wide_pool(dest: &dyn Destination, opts: &Options) -> Option<rayon::ThreadPool> {
    if !dest.is_remote() {
        return None;
    }
    opts.priority
        .pool_builder(opts.jobs.max(1) * REMOTE_FANOUT, "fsync-repl-wait")
        .build()
        .ok()
}

/// Replicates the local directory `src` into any destination, on a pool of `opts.jobs`
/// workers.
pub fn push_to(
    opts: &Options,
    src: &Path,
    target: Target<'_>,
    out: &dyn Output,
    interrupted: Arc<AtomicBool>,
) -> Result<Report> {
    // Workers and this thread run at the configured CPU and I/O priority (best effort:
    // raising priority needs privileges, lowering never fails).
    let priority = opts.priority;
    let _ = priority.apply_to_current_thread();
    let pool = priority
        .pool_builder(opts.jobs, "fsync-repl")
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {} worker threads: {e}", opts.jobs)))?;
    let throttle = target.throttle.clone();
    let stop = AtomicBool::new(false);
    // The kernel's I/O pressure is system-wide and this machine's own: react to it only
    // when this side's disk work touches a block device (not tmpfs; a remote DEST's disk
    // is another machine's).
    let remote = target.dest.is_some_and(|d| d.is_remote());
    let devices = if remote {
        crate::throttle::adaptive::devices_of(&[src])
    } else {
        crate::throttle::adaptive::devices_of(&[src, target.name])
    };
    let adaptive = opts
        .adaptive
        .filter(|_| !opts.dry_run && !devices.is_empty());
    pool.install(|| {
        std::thread::scope(|s| {
            let controller = adaptive.map(|cfg| {
                let (throttle, stop, devices) = (&throttle, &stop, &devices);
                let log = move |m: String| {
                    if opts.verbose > 0 {
                        out.warn(&m);
                    }
                };
                s.spawn(move || {
                    let _ = priority.apply_to_current_thread();
                    crate::throttle::adaptive::run(throttle, cfg, devices, stop, &log)
                })
            });
            let result = push_in_pool(opts, src, target, out, &interrupted);
            stop.store(true, Ordering::Relaxed);
            let changes = controller.and_then(|c| c.join().ok()).unwrap_or(0);
            result.map(|mut r| {
                r.rate_changes = changes;
                r
            })
        })
    })
}

fn push_in_pool(
    opts: &Options,
    src_path: &Path,
    target: Target<'_>,
    out: &dyn Output,
    interrupted: &Arc<AtomicBool>,
) -> Result<Report> {
    let started = Instant::now();
    let Target {
        dest,
        name: dest_path,
        throttle,
    } = target;
    let src = Source::open(src_path)
        .map(|s| s.keep_cache(opts.keep_cache))
        .map_err(|e| Error::Selection {
            path: src_path.to_path_buf(),
            what: format!("cannot open the source: {e}"),
        })?;

    // A signal stops the listing and planning too (a watch's stop: nothing is in
    // flight yet, so nothing needs draining).
    let stop = opts.drain.clone().unwrap_or_else(|| interrupted.clone());
    let stopped = || -> Result<()> {
        if stop.load(Ordering::Relaxed) || interrupted.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    };
    let record = match dest {
        Some(d) => source_identity(opts, &src, d, src_path, dest_path)?,
        // A new DEST records its source from the start.
        None => SourceId::of(src.root()).ok().map(|id| id.to_record()),
    };

    let src_opts = ScanOptions {
        excludes: opts.excludes.clone(),
        ignore_files: true,
        one_file_system: opts.one_file_system,
        xattrs: opts.xattrs,
        throttle: Some(throttle.clone()),
        scope: opts.scope.clone(),
        cancel: Some(stop.clone()),
    };
    let dst_opts = ScanOptions {
        // Listed whole: the plan decides what excluded entries to keep, which needs
        // to see them (a directory holding excluded files must not be deleted).
        excludes: Vec::new(),
        ignore_files: false,
        one_file_system: false,
        xattrs: opts.xattrs,
        // The destination counts its own reads.
        throttle: None,
        // Both sides cover exactly the same part, so deletes stay inside it.
        scope: opts.scope.clone(),
        cancel: Some(stop.clone()),
    };
    let list_dest = || match dest {
        Some(d) => d.list(&dst_opts),
        None => Ok(Scanned::default()),
    };
    // A remote listing is mostly waiting, so it overlaps the local scan; two local
    // scans run one after the other (each is parallel already), which keeps only one
    // listing's assembly in memory at a time.
    let (scanned, dscanned) = if dest.is_some_and(|d| d.is_remote()) {
        rayon::join(|| crate::scan::scan(src.root(), &src_opts), list_dest)
    } else {
        let s = crate::scan::scan(src.root(), &src_opts);
        (s, list_dest())
    };
    let scanned = scanned.map_err(|e| Error::Selection {
        path: src_path.to_path_buf(),
        what: e,
    })?;
    let dscanned = dscanned.map_err(|e| Error::Selection {
        path: dest_path.to_path_buf(),
        what: e,
    })?;
    stopped()?;
    // Owners only where the writing side can set them: a receiver that is not root
    // cannot, so they are neither compared nor sent (rsync does the same).
    let without_owners;
    let opts = if opts.owners && dest.is_some_and(|d| !d.sets_owners()) {
        without_owners = Options {
            owners: false,
            ..opts.clone()
        };
        &without_owners
    } else {
        opts
    };
    if root_replaced(&src, src_path) {
        // A root deleted or unmounted under the scan lists as empty: never let that
        // become deleting DEST.
        return Err(Error::Selection {
            path: src_path.to_path_buf(),
            what: "the source root disappeared or was replaced while it was scanned; \
                   nothing was changed"
                .into(),
        });
    }
    let counters = Counters::default();
    for p in &scanned.problems {
        let code = if p.vanished {
            ExitCode::Vanished
        } else {
            ExitCode::Partial
        };
        counters.problem(code, format!("{}: {}", escape(&p.path), p.what));
    }
    for p in &dscanned.problems {
        counters.problem(
            ExitCode::DestIo,
            format!("destination {}: {}", escape(&p.path), p.what),
        );
    }
    let (sl, dl) = (&scanned.listing, &dscanned.listing);

    let plan_opts = PlanOptions {
        delete: opts.delete,
        delete_excluded: opts.delete_excluded,
        checksum: opts.checksum,
        owners: opts.owners,
        specials: opts.specials,
        move_min_size: 1,
        xattrs: opts.xattrs,
    };
    let empty = Listing::new();
    let plan = match dest {
        Some(d) => {
            let hasher = Hasher {
                src: &src,
                dst: d,
                sl,
                dl,
                throttle: &throttle,
                stop: &stop,
            };
            plan::build(sl, dl, &scanned.filter, &plan_opts, &hasher)
        }
        None => {
            struct NoHash;
            impl ContentHasher for NoHash {
                fn hash(&self, _: Side, _: usize) -> Option<Hash> {
                    None
                }
            }
            plan::build(sl, &empty, &scanned.filter, &plan_opts, &NoHash)
        }
    };
    stopped()?;
    for &(i, why) in &plan.skipped {
        if opts.verbose > 0 || !opts.quiet {
            out.warn(&format!("warning: {}: {why}", escape(sl.path(i as usize))));
        }
    }

    if opts.dry_run || opts.itemize {
        for line in itemize(&plan, sl, dl) {
            out.item(&line);
        }
    }
    // Invariant 7: nothing is written when the plan would empty the replica.
    crate::guard::check(
        crate::guard::Deletes {
            doomed: doomed_entries(&plan, dl),
            dest_entries: (dl.len() as u64).max(opts.dest_entries.unwrap_or(0)),
            source_empty: opts.scope.is_none() && sl.is_empty(),
        },
        opts.max_delete,
        &src_path.display().to_string(),
        &dest_path.display().to_string(),
    )
    .map_err(Error::TooManyDeletes)?;
    let unchanged = plan.unchanged;
    if opts.dry_run {
        let mut r = Report::from_counters(
            &counters,
            sl.len() as u64,
            unchanged,
            started.elapsed(),
            Duration::ZERO,
        );
        r.dry_run = true;
        if dest.is_some() {
            r.bytes_needed = bytes_needed(&plan, sl, dl, opts.batch_bytes);
        }
        r.created = (plan
            .files
            .iter()
            .filter(|f| !matches!(f.from, FileSource::Source { old: Some(_) }))
            .count()
            + plan.mkdirs.len()
            + plan.symlinks.len()
            + plan.specials.len()) as u64;
        r.updated = plan
            .files
            .iter()
            .filter(|f| matches!(f.from, FileSource::Source { old: Some(_) }))
            .count() as u64;
        r.deleted = (plan.deletes.len() + plan.clear.len()) as u64;
        r.moved = plan.moves.len() as u64;
        r.linked = plan.links.len() as u64;
        return Ok(r);
    }
    // Space preflight (invariant 5); a DEST still to be made is on the filesystem of
    // its nearest existing ancestor.
    let needed = bytes_needed(&plan, sl, dl, opts.batch_bytes);
    let inodes = inodes_needed(&plan, opts.batch_files);
    if needed > 0 || inodes > 0 {
        let space = match dest {
            Some(d) => d.space(),
            None => crate::fsutil::space_near(dest_path),
        }
        .map_err(|e| Error::dest("statvfs", dest_path, e))?;
        let check = space::check_with_inodes(space, opts.min_free, needed, inodes);
        if !check.fits() {
            return Err(Error::NoSpace(
                check.message(&dest_path.display().to_string()),
            ));
        }
    }

    let made;
    let dest: &dyn Destination = match dest {
        Some(d) => d,
        None => {
            made = LocalDest::open(dest_path, opts, throttle.clone(), interrupted.clone())
                .map_err(|e| Error::Selection {
                    path: dest_path.to_path_buf(),
                    what: format!("cannot create the destination: {e}"),
                })?;
            &made
        }
    };
    if let Some(record) = record {
        // The first run, or a new source accepted: recorded before anything changes.
        dest.set_source_record(record.as_bytes()).map_err(|e| {
            if crate::fsutil::is_dest_wide(&e) {
                let space = dest.space().ok();
                Error::NoSpace(space::fault(&e, space, &dest_path.display().to_string()))
            } else {
                Error::dest("write the source record in", dest_path, e)
            }
        })?;
    }

    let total: u64 = plan
        .files
        .iter()
        .map(|f| sl.get(f.src as usize).size)
        .sum::<u64>()
        + plan
            .moves
            .iter()
            .map(|m| sl.get(m.0 as usize).size)
            .sum::<u64>();
    let files_total = (plan.files.len() + plan.moves.len()) as u64;
    let bar = progress_bar(out.progress(), total, files_total);
    let run = Run {
        opts,
        dest_name: dest_path,
        src: &src,
        dest,
        sl,
        dl,
        counters,
        stop: AtomicBool::new(false),
        interrupted,
        bar,
        files_total,
        files_done: Default::default(),
        wide: wide_pool(dest, opts),
        throttle: &throttle,
        relist: Default::default(),
    };
    run.execute(&plan);
    if !run.halted() {
        // The root's own mode and mtime, after everything beneath it.
        if let Ok(st) = rustix::fs::fstat(src.root()) {
            if let Some(m) = tree::Meta::from_stat(&st) {
                let meta = SetMeta {
                    kind: Kind::Dir,
                    perm: m.perm,
                    owner: opts.owners.then_some((m.uid, m.gid)),
                    mtime: m.mtime,
                    mtime_nsec: m.mtime_nsec,
                };
                let same = !plan.root_dirty
                    && dscanned.root.as_ref().is_some_and(|c| {
                        c.perm == m.perm
                            && c.mtime == m.mtime
                            && c.mtime_nsec == m.mtime_nsec
                            && (!opts.owners || (c.uid == m.uid && c.gid == m.gid))
                    });
                let xattrs_same =
                    xattr_digest(scanned.root.as_ref()) == xattr_digest(dscanned.root.as_ref());
                if opts.xattrs && !xattrs_same {
                    let x = src.dir_xattrs(b"").unwrap_or_default();
                    if let Err(e) = dest.set_dir_xattrs(b"", &x) {
                        run.dest_error("set extended attributes of the destination root", b"", e);
                    }
                }
                if !same {
                    if let Err(e) = dest.set_dir_meta(b"", &meta) {
                        run.dest_error("set metadata of the destination root", b"", e);
                    }
                }
            }
        }
    }
    if let Err(e) = dest.finish() {
        run.dest_error("syncfs", b"", e);
    }
    if let Some(why) = dest.broken() {
        run.counters.problem(
            ExitCode::Protocol,
            format!("{why}; every file is old or new, the next run completes the replica"),
        );
    }
    run.bar.finish_and_clear();
    if interrupted.load(Ordering::Relaxed) {
        run.counters.problem(
            ExitCode::Interrupted,
            "interrupted: files already renamed into place are complete, the rest are unchanged"
                .into(),
        );
    } else if draining(opts) {
        run.counters.problem(
            ExitCode::Interrupted,
            "stopped: the files in flight were completed, the rest are unchanged".into(),
        );
    }
    let mut report = Report::from_counters(
        &run.counters,
        sl.len() as u64,
        unchanged,
        started.elapsed(),
        throttle.waited(),
    );
    if opts.scope.is_some() {
        report.links_outside_scope = crate::scope::links_outside(sl, &plan);
        report.relist_dirs =
            std::mem::take(&mut *run.relist.lock().unwrap_or_else(|p| p.into_inner()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_directories_and_their_doomed_ancestors_are_held_back() {
        let paths: [&[u8]; 5] = [b"x", b"x/y", b"x/y/z", b"w", b"v/u"];
        let scope =
            crate::scope::Scope::from_pairs([(&b"x"[..], false), (b"w", true), (b"v", false)])
                .unwrap();
        // x/y and v/u were listed as entries only; x/y/z, below x/y, not at all.
        let (keep, held) = unlisted_deletes(vec![0, 1, 2, 3, 4], |j| paths[j as usize], &scope);
        assert_eq!(keep, vec![3]);
        assert_eq!(held, vec![0, 4]);
        let everything = crate::scope::Scope::everything();
        let (keep, held) = unlisted_deletes(vec![0, 1, 2], |j| paths[j as usize], &everything);
        assert_eq!((keep, held), (vec![0, 1, 2], vec![]));
    }

    #[test]
    fn a_source_root_moved_or_deleted_under_the_run_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let src = Source::open(&root).unwrap();
        assert!(!root_replaced(&src, &root));
        // Replaced by another directory of the same name (an unmount leaves one).
        std::fs::rename(&root, dir.path().join("away")).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(root_replaced(&src, &root));
        // Deleted while open.
        let src = Source::open(&root).unwrap();
        std::fs::remove_dir(&root).unwrap();
        assert!(root_replaced(&src, &root));
    }
}

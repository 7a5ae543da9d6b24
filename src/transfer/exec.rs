//! Executes a plan against a destination, phase by phase, on the run's pool.
//!
//! File data is written in batches: each batch's temporary files are written in
//! parallel, made durable with one barrier ([`Destination::commit`]), then renamed. A
//! file the destination refuses fails alone; a fault of the whole destination, a lost
//! connection or a signal halts the run, and every file stays old or new.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::dest::{
    DataMode, DataStats, Destination, FileWrite, PutError, SetMeta, Staged, Started,
};
use crate::error::ExitCode;
use crate::options::Options;
use crate::plan::{FileOp, FileSource, Plan};
use crate::report::Counters;
use crate::source::Source;
use crate::text::escape;
use crate::throttle::Throttle;
use crate::tree::{Entry, Kind, Listing};

/// The directories a worker opened last on either side, kept for one batch.
#[derive(Default)]
pub(super) struct Dirs {
    src: crate::fsutil::DirCache,
    dest: crate::fsutil::DirCache,
}

/// The files of a batch whose temporary copies are written: what to commit, and beside
/// it (same order) each one's operation and counts.
#[derive(Default)]
struct Done<'o> {
    staged: Vec<Staged>,
    files: Vec<(&'o FileOp, DataStats)>,
}

pub(super) fn depth(path: &[u8]) -> usize {
    path.iter().filter(|&&b| b == b'/').count()
}

pub(super) fn set_meta_of(e: &Entry, opts: &Options) -> SetMeta {
    SetMeta {
        kind: e.kind,
        perm: e.perm,
        owner: opts.owners.then_some((e.uid, e.gid)),
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
    }
}

/// Splits doomed directories into those a scoped run may delete and those it must
/// not: directories whose own entries it did not list, and every doomed ancestor of
/// one (its rmdir would fail). The second list keeps only the topmost.
pub(super) fn unlisted_deletes<'p>(
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

pub(super) fn draining(opts: &Options) -> bool {
    opts.drain
        .as_ref()
        .is_some_and(|d| d.load(Ordering::Relaxed))
}

pub(super) struct Run<'a> {
    pub(super) opts: &'a Options,
    /// DEST as the user named it, for messages.
    pub(super) dest_name: &'a Path,
    pub(super) src: &'a Source,
    pub(super) dest: &'a dyn Destination,
    pub(super) sl: &'a Listing,
    pub(super) dl: &'a Listing,
    /// Shared by the pieces of one run, as are `stop` and `files_done`.
    pub(super) counters: &'a Counters,
    pub(super) stop: &'a AtomicBool,
    pub(super) interrupted: &'a AtomicBool,
    pub(super) bar: ProgressBar,
    pub(super) files_total: u64,
    pub(super) files_done: &'a std::sync::atomic::AtomicU64,
    /// For a remote destination: a wider pool for the phases that are one round trip
    /// per entry (mkdir, links, metadata, deletes), so many requests are in flight.
    /// Its threads only wait on answers; source files are read on the main pool.
    pub(super) wide: Option<&'a rayon::ThreadPool>,
    pub(super) throttle: &'a Throttle,
    /// Directory deletes left for a run that lists them whole.
    pub(super) relist: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl<'a> Run<'a> {
    /// The same run over another pair of listings (a piece of an initial copy, see
    /// `pieces`): counters, progress, the halt and the wide pool are shared; `files`
    /// more files to come.
    pub(super) fn with_listings<'b>(
        &'b self,
        sl: &'b Listing,
        dl: &'b Listing,
        files: u64,
    ) -> Run<'b> {
        Run {
            opts: self.opts,
            dest_name: self.dest_name,
            src: self.src,
            dest: self.dest,
            sl,
            dl,
            counters: self.counters,
            stop: self.stop,
            interrupted: self.interrupted,
            bar: self.bar.clone(),
            files_total: self.files_done.load(Ordering::Relaxed) + files,
            files_done: self.files_done,
            wide: self.wide,
            throttle: self.throttle,
            relist: Default::default(),
        }
    }

    pub(super) fn advance(&self, bytes: u64) {
        let n = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 32 == 0 || n == self.files_total {
            self.bar
                .set_message(format!("{n}/{} files", self.files_total));
        }
        self.bar.inc(bytes);
    }

    /// Runs `f` on every item, in parallel (on the wide pool when there is one); once
    /// the run is halted, the items not yet started are left for the next run.
    pub(super) fn each<T: Sync>(&self, items: &[T], f: impl Fn(&T) + Sync + Send) {
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
    pub(super) fn cut(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.interrupted.load(Ordering::Relaxed)
            || self.dest.broken().is_some()
    }

    /// True when the run is asked to wind down: finish what is in flight, start nothing.
    pub(super) fn draining(&self) -> bool {
        draining(self.opts)
    }

    /// True when nothing new may start.
    pub(super) fn halted(&self) -> bool {
        self.cut() || self.draining()
    }

    /// Records a destination error met on `path`: a fault of the whole destination
    /// stops the run with one message; any other fails that entry alone (exit 23).
    pub(super) fn dest_error(&self, op: &str, path: &[u8], e: std::io::Error) {
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
    pub(super) fn shown(&self, path: &[u8]) -> String {
        if path.is_empty() {
            self.dest_name.display().to_string()
        } else {
            escape(path)
        }
    }

    /// Stops the run once, with one message, for a fault of the whole destination.
    pub(super) fn dest_wide(&self, op: &str, path: &[u8], e: &std::io::Error) {
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
    pub(super) fn start(
        &self,
        op: &FileOp,
        dirs: &mut Dirs,
    ) -> Option<Result<Started<'a>, PutError>> {
        if self.halted() {
            return None;
        }
        let path = self.sl.path(op.src as usize);
        let e = self.sl.get(op.src as usize);
        let meta = set_meta_of(e, self.opts);
        Some(match &op.from {
            FileSource::Local(from) => self
                .dest
                .stage_local_copy(path, from.path(self.sl, self.dl), &meta)
                .map(|s| Started::Done(s, Default::default())),
            FileSource::Source { old } => {
                let mode = if self.opts.delta && old.is_some() {
                    DataMode::Delta
                } else {
                    DataMode::Whole
                };
                let mut attempt = 0;
                loop {
                    let f = match self.src.open_file_in(&mut dirs.src, path) {
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
                    let write = FileWrite {
                        rel: path,
                        src: &f,
                        meta: &meta,
                        mode,
                        xattrs: self.opts.xattrs,
                    };
                    match self.dest.start_file(&mut dirs.dest, write) {
                        Err(PutError::SourceChanged) if attempt == 0 => attempt += 1,
                        r => break r,
                    }
                }
            }
        })
    }

    /// A started file once its temporary copy is written: what to count when it lands,
    /// or the failure recorded (`None`).
    pub(super) fn settle(
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
    pub(super) fn landed(&self, op: &FileOp, stats: &DataStats) {
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

    /// Writes the files of `ops` in batches. Into a local destination a batch is
    /// committed (barrier, then renames: one thread's work) while the next batch's
    /// temporary files are written on the other workers, so no core waits for the
    /// renames. A batch is only ever committed after all its files were written, and
    /// the next one's files are covered by the next barrier: every name stays old or new.
    pub(super) fn files(&self, ops: &[FileOp]) {
        let overlap = !self.dest.is_remote();
        let mut pending = Done::default();
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
            let batch = &ops[start..end];
            let (committed, done) = if overlap {
                let prev = std::mem::take(&mut pending);
                rayon::join(|| self.commit(prev), || self.stage(batch))
            } else {
                (true, self.stage(batch))
            };
            // Draining, the files already copied are still put in place.
            if !committed || self.cut() {
                self.discard(&done);
                return;
            }
            if overlap {
                pending = done;
            } else if !self.commit(done) {
                return;
            }
            start = end;
        }
        if self.cut() {
            self.discard(&pending);
        } else {
            self.commit(pending);
        }
    }

    /// Writes the temporary files of one batch: what is ready to commit.
    fn stage<'o>(&self, batch: &'o [FileOp]) -> Done<'o> {
        // Start every file of the batch, then collect the answers in order: a remote
        // destination answers while later files are still being sent.
        let started: Vec<(&FileOp, Result<Started<'a>, PutError>)> = batch
            .par_iter()
            .map_init(Dirs::default, |dirs, op| Some((op, self.start(op, dirs)?)))
            .flatten()
            .collect();
        // Files still waiting for a signature or an answer (remote) finish on the wide
        // pool, so that their round trips overlap.
        let settle = |(op, r): (_, Result<Started<'a>, PutError>)| {
            let (s, stats) = self.settle(op, r.and_then(Started::finish))?;
            Some((s, (op, stats)))
        };
        let (staged, files) = match &self.wide {
            Some(pool) => pool.install(|| started.into_par_iter().filter_map(settle).unzip()),
            _ => started.into_iter().filter_map(settle).unzip(),
        };
        Done { staged, files }
    }

    fn discard(&self, done: &Done<'_>) {
        for s in &done.staged {
            self.dest.discard(s);
        }
    }

    /// Makes a batch durable and renames it into place; false when the run must stop.
    fn commit(&self, done: Done<'_>) -> bool {
        if done.staged.is_empty() {
            return true;
        }
        match self.dest.commit(&done.staged) {
            Ok(refused) => {
                let mut refused: std::collections::HashMap<usize, std::io::Error> =
                    refused.into_iter().collect();
                for (k, (op, stats)) in done.files.iter().enumerate() {
                    match refused.remove(&k) {
                        None => self.landed(op, stats),
                        // Left old by a signal: the run's own message says so.
                        Some(e)
                            if e.kind() == std::io::ErrorKind::Interrupted
                                && self.interrupted.load(Ordering::Relaxed) => {}
                        Some(e) => {
                            self.dest_error("rename into place", self.sl.path(op.src as usize), e)
                        }
                    }
                }
                true
            }
            Err(e) => {
                self.discard(&done);
                self.dest_error("commit", b"", e);
                self.stop.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hands directories back for a run that lists them whole.
    pub(super) fn relist<'p>(&self, dirs: impl Iterator<Item = &'p [u8]>) {
        let mut r = self.relist.lock().unwrap_or_else(|p| p.into_inner());
        r.extend(dirs.map(<[u8]>::to_vec));
    }

    /// Runs `f` over `items` level by level of path depth, in parallel within a level.
    pub(super) fn by_depth<T: Sync>(
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

    pub(super) fn execute(&self, plan: &Plan) {
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
        let (dirs, mut others): (Vec<u32>, Vec<u32>) = plan
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
        // Directory by directory (in pieces, so that one huge directory still goes in
        // parallel): a local destination opens each directory once for its deletes. The
        // plan lists a subdirectory's files between its parent's: grouped first. A
        // remote one removes an entry per round trip: one a piece, and the wide pool
        // keeps many in flight.
        let path = |j: u32| dl.path(j as usize);
        others.sort_by(|&a, &b| crate::tree::parent(path(a)).cmp(crate::tree::parent(path(b))));
        let piece = if dest.is_remote() { 1 } else { 256 };
        let pieces: Vec<&[u32]> = others
            .chunk_by(|&a, &b| crate::tree::parent(path(a)) == crate::tree::parent(path(b)))
            .flat_map(|group| group.chunks(piece))
            .collect();
        self.each(&pieces, |piece| {
            let names: Vec<(&[u8], Kind)> = piece
                .iter()
                .map(|&j| (crate::tree::file_name(path(j)), dl.get(j as usize).kind))
                .collect();
            let dir = crate::tree::parent(path(piece[0]));
            dest.remove_in(dir, &names, &mut |k, r| match r {
                Ok(()) => self.counters.add(&self.counters.deleted, 1),
                Err(e) => self.dest_error("delete", path(piece[k]), e),
            });
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
            |&i| self.dir_meta(sl.path(i as usize), &set_meta_of(sl.get(i as usize), opts)),
        );
    }

    /// Sets a directory's attributes, mode, owner and mtime, once its contents are done.
    pub(super) fn dir_meta(&self, p: &[u8], meta: &SetMeta) {
        if self.opts.xattrs {
            match self.src.dir_xattrs(p) {
                Ok(x) => {
                    if let Err(e) = self.dest.set_dir_xattrs(p, &x) {
                        self.dest_error("set extended attributes", p, e);
                    }
                }
                Err(e) => self.counters.problem(
                    ExitCode::Partial,
                    format!("{}: cannot read extended attributes: {e}", escape(p)),
                ),
            }
        }
        if let Err(e) = self.dest.set_dir_meta(p, meta) {
            self.dest_error("set directory metadata", p, e);
        }
    }
}

/// Below this byte rate source files are read without the kernel's read-ahead.
const READAHEAD_RATE: u64 = 64 << 20;

/// Requests in flight per worker in the round-trip-bound phases of a remote run.
const REMOTE_FANOUT: usize = 8;

pub(super) fn wide_pool(dest: &dyn Destination, opts: &Options) -> Option<rayon::ThreadPool> {
    if !dest.is_remote() {
        return None;
    }
    opts.priority
        .pool_builder(opts.jobs.max(1) * REMOTE_FANOUT, "fsync-repl-wait")
        .build()
        .ok()
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
}

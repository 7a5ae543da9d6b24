//! Runs a replication: open SRC, check it against the replica's record, list both
//! sides, plan, check the plan (mass deletes, space and inodes), then execute it.
//!
//! `preflight` holds what is checked before anything is written, `exec` the executor
//! (batches of temporary files made durable with one barrier, then renamed; a file the
//! destination refuses fails alone), `progress` what the run shows. This module puts
//! them together on a pool at the run's priority, with the adaptive controller beside.

mod exec;
mod pieces;
mod preflight;
mod progress;
mod session;

use exec::{draining, wide_pool, Run};
pub use preflight::{bytes_needed, check_selection, check_source, inodes_needed};
use preflight::{doomed_entries, root_replaced, source_identity};
use progress::progress_bar;
pub use progress::{Output, ProgressMode};
pub use session::push_over;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dest::local::LocalDest;
use crate::dest::{Destination, ListError, PairError, SetMeta};
use crate::error::{Error, ExitCode, Result};
use crate::identity::SourceId;
use crate::options::Options;
use crate::plan::{self, ContentHasher, FileSource, Hash, PlanOptions, Side};
use crate::report::{itemize, Counters, Report};
use crate::scan::{Problem, ScanOptions, Scanned};
use crate::source::Source;
use crate::space;
use crate::text::escape;
use crate::throttle::Throttle;
use crate::tree::{self, Kind, Listing};

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

/// The hasher of a plan against an empty listing, which never asks.
struct NoHash;

impl ContentHasher for NoHash {
    fn hash(&self, _: Side, _: usize) -> Option<Hash> {
        None
    }
}

/// Records a source walk's problems as the run's: vanished entries (exit 24) or
/// unreadable ones (23).
fn note_problems(counters: &Counters, problems: &[Problem]) {
    for p in problems {
        let code = if p.vanished {
            ExitCode::Vanished
        } else {
            ExitCode::Partial
        };
        counters.problem(code, format!("{}: {}", escape(&p.path), p.what));
    }
}

/// The space preflight (invariant 5): `needed` bytes and `inodes` must fit above the
/// reserve. A DEST still to be made is on the filesystem of its nearest existing
/// ancestor.
fn check_space(
    dest: Option<&dyn Destination>,
    dest_path: &Path,
    opts: &Options,
    needed: u64,
    inodes: u64,
) -> Result<()> {
    if needed == 0 && inodes == 0 {
        return Ok(());
    }
    let space = match dest {
        Some(d) => d.space(),
        None => crate::fsutil::space_near(dest_path),
    }
    .map_err(|e| Error::dest("statvfs", dest_path, e))?;
    let check = space::check_with_inodes(space, opts.min_free, needed, inodes);
    if !check.fits() {
        return Err(Error::NoSpace(
            check.shortfall(&dest_path.display().to_string()),
        ));
    }
    Ok(())
}

/// What a run shows of its plan: a warning for each entry skipped, and with
/// `--itemize` or `--dry-run` a line for each change.
fn show_plan(plan: &plan::Plan, sl: &Listing, dl: &Listing, opts: &Options, out: &dyn Output) {
    for &(i, why) in &plan.skipped {
        if opts.verbose > 0 || !opts.quiet {
            out.warn(&format!("warning: {}: {why}", escape(sl.path(i as usize))));
        }
    }
    if opts.dry_run || opts.itemize {
        itemize(plan, sl, dl, |line| out.item(line));
    }
}

/// The digest of an entry's extended attributes (0: none).
fn xattr_digest(m: Option<&tree::Meta>) -> u64 {
    match m.and_then(|m| m.extra.as_ref()) {
        Some(tree::Extra::Xattrs(d)) => *d,
        _ => 0,
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
            let changes = controller
                .and_then(|c| {
                    crate::throttle::adaptive::stop(&stop, c.thread());
                    c.join().ok()
                })
                .unwrap_or(0);
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
        Some(d) => source_identity(opts, &src, d.source_record(), src_path, dest_path)?,
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
        // New subtrees go piece by piece (see `pieces`): not under `--checksum` (both
        // sides listed whole), nor in a watch's scoped batches or a dry run.
        defer_new: !opts.checksum && opts.scope.is_none() && !opts.dry_run,
        group_entries: 0,
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
        defer_new: false,
        group_entries: opts.piece_entries,
    };
    let list_dest = |dst_opts: &ScanOptions| match dest {
        Some(d) => d.list(dst_opts),
        None => Ok(Scanned::default()),
    };
    let src_error = |what: String| Error::Selection {
        path: src_path.to_path_buf(),
        what,
    };
    let dest_error = |e: ListError| match e {
        ListError::Unreadable(what) => Error::Selection {
            path: dest_path.to_path_buf(),
            what,
        },
        ListError::Session(e) => Error::Protocol(e.to_string()),
    };
    // SRC and DEST are listed together, and only what differs is held: entries equal
    // on both sides are counted, not held, so a run that changes little holds what
    // changed and the directories. A local DEST is walked beside SRC, however large the
    // tree; a remote one a group of top-level directories at a time, each listed while
    // SRC's part is walked and compared as it is unpacked. (`--checksum` compares
    // contents, so it lists both sides whole.)
    let paired = dest
        .filter(|_| !opts.checksum)
        .and_then(|d| d.list_with_source(src.root(), &src_opts, &dst_opts, plan::TWIN_MIN_SIZE));
    let (mut scanned, dscanned, equal) = match paired {
        Some(p) => {
            let p = p.map_err(|e| match e {
                PairError::Source(what) => src_error(what),
                PairError::Dest(e) => dest_error(e),
            })?;
            (p.src, p.dst, p.equal)
        }
        None => {
            // `--checksum`: both sides whole, DEST listed beside the walk (and new
            // subtrees walked whole: `defer_new` is off). Or a DEST still to be made,
            // with nothing to list.
            let (s, d) = rayon::join(
                || crate::scan::scan(src.root(), &src_opts),
                || list_dest(&dst_opts),
            );
            (s.map_err(src_error)?, d.map_err(dest_error)?, 0)
        }
    };
    let sl = std::mem::take(&mut scanned.listing);
    let pending = std::mem::take(&mut scanned.pending);
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
    note_problems(&counters, &scanned.problems);
    for p in &dscanned.problems {
        counters.problem(
            ExitCode::DestIo,
            format!("destination {}: {}", escape(&p.path), p.what),
        );
    }
    let (sl, dl) = (&sl, &dscanned.listing);

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
    let mut plan = match dest {
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
        None => plan::build(sl, &empty, &scanned.filter, &plan_opts, &NoHash),
    };
    stopped()?;
    // A directory to clear (another kind of entry takes its place) whose subtree this
    // run's scope did not list is neither cleared blind nor replaced: its contents would
    // escape the mass-delete guard. The caller lists it whole next (a watch's next batch).
    let deferred = match &opts.scope {
        Some(scope) => defer_unlisted_clears(&mut plan, sl, dl, scope),
        None => Vec::new(),
    };
    show_plan(&plan, sl, dl, opts, out);
    // Invariant 7: nothing is written when the plan would empty the replica.
    crate::guard::check(
        crate::guard::Deletes {
            doomed: doomed_entries(&plan, dl),
            dest_entries: (dl.len() as u64 + equal).max(opts.dest_entries.unwrap_or(0)),
            source_empty: opts.scope.is_none() && sl.is_empty() && equal == 0,
        },
        opts.max_delete,
        &src_path.display().to_string(),
        &dest_path.display().to_string(),
    )
    .map_err(Error::TooManyDeletes)?;
    plan.unchanged += equal;
    let unchanged = plan.unchanged;
    if opts.dry_run {
        let mut r = Report::from_counters(
            &counters,
            sl.len() as u64 + equal,
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
    // New subtrees go piece by piece; the first is listed now, so that a run refused
    // for space writes nothing (a tree smaller than a piece is checked whole).
    let mut piecewise = (!pending.is_empty())
        .then(|| pieces::Piecewise::new(src.root(), &src_opts, &plan_opts, src_path, pending));
    let mut next_piece = None;
    if let Some(pw) = &mut piecewise {
        pw.adopt(&mut plan, sl, opts);
        next_piece = pw.next(opts, &counters)?;
        stopped()?;
    }
    // Space preflight (invariant 5); each later piece is checked before it is written.
    let mut needed = bytes_needed(&plan, sl, dl, opts.batch_bytes);
    let mut inodes = inodes_needed(&plan, opts.batch_files);
    if let Some(p) = &next_piece {
        needed += p.needed;
        inodes += p.inodes;
    }
    if let Err(e) = check_space(dest, dest_path, opts, needed, inodes) {
        return Err(match &mut piecewise {
            Some(pw) => pw.shortfall(e, (needed, inodes), dest, dest_path, opts, false),
            None => e,
        });
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
                Error::NoSpace(space::fault(&e, space, &dest_path.display().to_string()).into())
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
    // With pieces to come, a bar even when this plan copies nothing: the pieces add
    // their files and bytes to it as they are listed.
    let bar = progress_bar(
        out.progress(),
        total,
        files_total.max(u64::from(piecewise.is_some())),
    );
    let (halt, files_done) = (AtomicBool::new(false), Default::default());
    let wide = wide_pool(dest, opts);
    let run = Run {
        opts,
        dest_name: dest_path,
        src: &src,
        dest,
        sl,
        dl,
        counters: &counters,
        stop: &halt,
        interrupted,
        bar,
        files_total,
        files_done: &files_done,
        wide: wide.as_ref(),
        throttle: &throttle,
        relist: Default::default(),
    };
    run.execute(&plan);
    let mut scanned_entries = sl.len() as u64 + equal;
    if let Some(pw) = piecewise {
        scanned_entries += pw.copy_all(&run, next_piece, out);
    }
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
    // A run that completed leaves no partial file of a cut transfer behind.
    if !run.halted() && dest.broken().is_none() && run.counters.problems().is_empty() {
        if let Err(e) = dest.completed() {
            run.dest_error("remove partial files", b"", e);
        }
    }
    if let Err(e) = dest.finish() {
        run.dest_error("syncfs", b"", e);
    }
    if let Some(why) = dest.broken() {
        // A session this side ended after a signal (the files in flight did not finish
        // within the grace) was interrupted, not lost.
        let code = if interrupted.load(Ordering::Relaxed) {
            ExitCode::Interrupted
        } else {
            ExitCode::Protocol
        };
        run.counters.problem(
            code,
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
        run.counters,
        scanned_entries,
        unchanged,
        started.elapsed(),
        throttle.waited(),
    );
    if opts.scope.is_some() {
        report.links_outside_scope = crate::scope::links_outside(sl, plan.touched());
        report.relist_dirs =
            std::mem::take(&mut *run.relist.lock().unwrap_or_else(|p| p.into_inner()));
        report.relist_dirs.extend(deferred);
    }
    Ok(report)
}

/// Takes out of `plan` the clears of directories whose subtrees `scope` does not list
/// whole, with the entries that were to replace them; returns their paths.
fn defer_unlisted_clears(
    plan: &mut plan::Plan,
    sl: &Listing,
    dl: &Listing,
    scope: &crate::scope::Scope,
) -> Vec<Vec<u8>> {
    let deferred: std::collections::HashSet<Vec<u8>> = plan
        .clear
        .iter()
        .map(|&j| dl.path(j as usize))
        .filter(|&p| {
            dl.find(p)
                .is_some_and(|j| dl.get(j).kind == Kind::Dir && !scope.covers_all(p))
        })
        .map(<[u8]>::to_vec)
        .collect();
    if deferred.is_empty() {
        return Vec::new();
    }
    let gone = |p: &[u8]| deferred.contains(p);
    plan.clear.retain(|&j| !gone(dl.path(j as usize)));
    plan.files.retain(|f| !gone(sl.path(f.src as usize)));
    plan.symlinks.retain(|&i| !gone(sl.path(i as usize)));
    plan.specials.retain(|&i| !gone(sl.path(i as usize)));
    plan.moves.retain(|&(i, _)| !gone(sl.path(i as usize)));
    plan.links
        .retain(|&(i, l)| !gone(sl.path(i as usize)) && !gone(sl.path(l as usize)));
    deferred.into_iter().collect()
}

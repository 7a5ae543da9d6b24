//! New subtrees copied piece by piece: an initial copy, or a new home, into a local
//! destination whose listing holds no file they could be a move or a copy of.
//!
//! The walk left them unwalked ([`crate::scan::ScanOptions::defer_new`]); here they are
//! listed a piece at a time ([`Pieces`]), and each piece is planned against nothing,
//! checked for space and inodes, and copied before the next is listed. What a piece
//! cannot finish alone is carried over, and stays small:
//! - a directory's mode and mtime are set once the last piece is copied (after
//!   everything written inside it), deepest first, from a list of the directories only;
//! - a hard-link group met in an earlier piece is joined by linking to the copy made
//!   then ([`Links`]), so the group stays one inode on the destination.

use std::collections::{HashMap, HashSet};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::exec::{depth, set_meta_of, Run};
use super::progress::Output;
use super::{bytes_needed, check_space, inodes_needed, note_problems, NoHash};
use crate::dest::{Destination, SetMeta};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::plan::{self, Plan, PlanOptions};
use crate::report::{itemize, Counters};
use crate::scan::{Pending, Pieces, ScanOptions, Scanned};
use crate::text::escape;
use crate::tree::Listing;

/// Hard-link groups with members still to come in later pieces.
#[derive(Default)]
pub(super) struct Links {
    /// (device, inode) → the path of the group's copy, and the links not met yet.
    open: HashMap<(u64, u64), (Vec<u8>, u32)>,
}

impl Links {
    /// Notes the groups of a listing about to be copied by `plan`, and takes out of the
    /// plan the members of groups copied earlier: returned as (member, path of the copy
    /// to link to).
    pub(super) fn rewire(&mut self, sl: &Listing, plan: &mut Plan) -> Vec<(u32, Vec<u8>)> {
        let mut cross = Vec::new();
        // Members met here of each group new here, keyed by its leader.
        let mut here: HashMap<u32, u32> = HashMap::new();
        for (m, l) in sl.link_leaders() {
            let Some(key) = sl.link_key(l as usize) else {
                continue;
            };
            match self.open.get_mut(&key) {
                Some((path, left)) => {
                    cross.push((m, path.clone()));
                    *left = left.saturating_sub(1);
                }
                None => *here.entry(l).or_default() += 1,
            }
        }
        for (l, met) in here {
            let nlink = u32::from(sl.get(l as usize).nlink);
            if let (Some(key), true) = (sl.link_key(l as usize), nlink > met) {
                self.open
                    .insert(key, (sl.path(l as usize).to_vec(), nlink - met));
            }
        }
        self.open.retain(|_, (_, left)| *left > 0);
        if !cross.is_empty() {
            let joined: HashSet<u32> = cross.iter().map(|c| c.0).collect();
            plan.files.retain(|f| !joined.contains(&f.src));
            plan.links.retain(|(m, _)| !joined.contains(m));
        }
        cross
    }
}

/// Directories whose mode, owner and mtime are set after the last piece.
pub(super) type Later = Vec<(Vec<u8>, SetMeta)>;

/// One piece, listed and planned.
pub(super) struct Piece {
    scanned: Scanned,
    plan: Plan,
    /// Members of hard-link groups copied by an earlier piece, and the copy to link to.
    cross: Vec<(u32, Vec<u8>)>,
    /// What the piece needs on the destination (see [`bytes_needed`], [`inodes_needed`]).
    pub(super) needed: u64,
    pub(super) inodes: u64,
}

/// The new subtrees of a run, listed and planned a piece at a time, and what the
/// pieces carry over.
pub(super) struct Piecewise<'a> {
    pieces: Pieces<'a>,
    plan_opts: &'a PlanOptions,
    src_path: &'a Path,
    links: Links,
    /// Set after the last piece.
    later: Later,
    /// Entries listed so far.
    entries: u64,
}

impl<'a> Piecewise<'a> {
    pub(super) fn new(
        root: BorrowedFd<'a>,
        src_opts: &'a ScanOptions,
        plan_opts: &'a PlanOptions,
        src_path: &'a Path,
        pending: Vec<Pending>,
    ) -> Self {
        Piecewise {
            pieces: Pieces::new(root, src_opts, pending),
            plan_opts,
            src_path,
            links: Links::default(),
            later: Later::new(),
            entries: 0,
        }
    }

    /// Takes over what the run's own plan cannot finish before the pieces: its
    /// directories' metadata, and its hard-link groups (members may come later).
    pub(super) fn adopt(&mut self, plan: &mut Plan, sl: &Listing, opts: &Options) {
        self.defer_dir_meta(plan, sl, opts);
        self.links.rewire(sl, plan);
    }

    fn defer_dir_meta(&mut self, plan: &mut Plan, sl: &Listing, opts: &Options) {
        self.later.extend(plan.dirmeta.drain(..).map(|i| {
            let i = i as usize;
            (sl.path(i).to_vec(), set_meta_of(sl.get(i), opts))
        }));
    }

    /// Lists and plans the next piece, its walk's problems recorded in `counters`;
    /// `None` once the walk is done, or when a signal cut the piece short.
    pub(super) fn next(&mut self, opts: &Options, counters: &Counters) -> Result<Option<Piece>> {
        let Some(scanned) =
            self.pieces
                .next_piece(opts.piece_entries)
                .map_err(|what| Error::Selection {
                    path: self.src_path.to_path_buf(),
                    what,
                })?
        else {
            return Ok(None);
        };
        if self.pieces.cancelled() {
            return Ok(None);
        }
        note_problems(counters, &scanned.problems);
        let sl = &scanned.listing;
        self.entries += sl.len() as u64;
        let empty = Listing::new();
        let mut plan = plan::build(sl, &empty, &scanned.filter, self.plan_opts, &NoHash);
        let cross = self.links.rewire(sl, &mut plan);
        self.defer_dir_meta(&mut plan, sl, opts);
        let needed = bytes_needed(&plan, sl, &empty, opts.batch_bytes);
        let inodes = inodes_needed(&plan, opts.batch_files);
        Ok(Some(Piece {
            scanned,
            plan,
            cross,
            needed,
            inodes,
        }))
    }

    /// The refusal of a run whose next piece does not fit: the rest of the walk is
    /// counted (one piece held at a time), so that `short`'s message says how much is
    /// missing for everything still to copy, `needed` bytes and `inodes` (what did not
    /// fit) included.
    pub(super) fn shortfall(
        &mut self,
        short: Error,
        (mut needed, mut inodes): (u64, u64),
        dest: Option<&dyn Destination>,
        dest_path: &Path,
        opts: &Options,
        copied: Option<u64>,
    ) -> Error {
        let counters = Counters::default();
        loop {
            match self.next(opts, &counters) {
                Ok(Some(rest)) => {
                    needed += rest.needed;
                    inodes += rest.inodes;
                }
                Ok(None) if self.pieces.is_done() => break,
                _ => return short,
            }
        }
        match check_space(dest, dest_path, opts, needed, inodes) {
            Err(Error::NoSpace(mut s)) => {
                if let Some(n) = copied {
                    s.message = format!(
                        "{} The {n} entries copied before this stay; the next run goes on from there.",
                        s.message
                    );
                }
                Error::NoSpace(s)
            }
            _ => short,
        }
    }

    /// Copies the pieces on `run`: `first` (listed before the run's preflight, which
    /// counted it), then the rest, each checked for space and inodes before it is
    /// written; then the directories' metadata, deepest first. Returns the entries
    /// listed. A piece that does not fit ends the run with what the rest needs.
    pub(super) fn copy_all(
        mut self,
        run: &Run<'_>,
        first: Option<Piece>,
        out: &dyn Output,
    ) -> Result<u64> {
        let (opts, dest) = (run.opts, run.dest);
        let mut next = first;
        let mut checked = true;
        while let (Some(piece), false) = (next.take(), run.halted()) {
            if !checked {
                let need = (piece.needed, piece.inodes);
                if let Err(e) = check_space(Some(dest), run.dest_name, opts, need.0, need.1) {
                    let copied = run.counters.created.load(Ordering::Relaxed);
                    return Err(self.shortfall(
                        e,
                        need,
                        Some(dest),
                        run.dest_name,
                        opts,
                        Some(copied),
                    ));
                }
            }
            checked = false;
            copy(run, &piece, out);
            // Only one piece is held at a time.
            drop(piece);
            if !run.halted() {
                next = self.next(opts, run.counters)?;
            }
        }
        if !run.halted() {
            run.by_depth(
                &self.later,
                |d| depth(&d.0),
                true,
                |(p, m)| run.dir_meta(p, m),
            );
        }
        Ok(self.entries)
    }
}

/// Copies a piece on `run`: its plan, then the links to copies earlier pieces made.
pub(super) fn copy(run: &Run<'_>, piece: &Piece, out: &dyn Output) {
    let (opts, sl, plan) = (run.opts, &piece.scanned.listing, &piece.plan);
    let empty = Listing::new();
    for &(i, why) in &plan.skipped {
        if opts.verbose > 0 || !opts.quiet {
            out.warn(&format!("warning: {}: {why}", escape(sl.path(i as usize))));
        }
    }
    if opts.itemize {
        itemize(plan, sl, &empty, |line| out.item(line));
    }
    let bytes: u64 = plan.files.iter().map(|f| sl.get(f.src as usize).size).sum();
    run.bar.inc_length(bytes);
    let here = run.with_listings(sl, &empty, plan.files.len() as u64);
    here.execute(plan);
    here.each(&piece.cross, |(i, to)| {
        let p = sl.path(*i as usize);
        match run.dest.link(p, to) {
            Ok(()) => run.counters.add(&run.counters.linked, 1),
            Err(e) => here.dest_error("hard link", p, e),
        }
    });
}

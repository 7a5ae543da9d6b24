//! New subtrees copied piece by piece: an initial copy, a new home, or what a cut
//! initial copy left, into a destination whose listing holds no file they could be a
//! move or a copy of (into a remote one, SRC's top-level directories that DEST lacks,
//! once the rest has been compared).
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
use crate::report::Counters;
use crate::scan::{Pending, Pieces, ScanOptions, Scanned};
use crate::text::escape;
use crate::tree::Listing;

/// Hard-link groups with members still to come in later pieces.
#[derive(Default)]
pub(super) struct Links {
    /// (device, inode) → the group's copy and the links not met yet.
    open: HashMap<(u64, u64), Open>,
}

/// A hard-link group copied by an earlier piece.
struct Open {
    /// Where its copy is.
    path: Vec<u8>,
    /// The file's size and mtime: an inode number freed and used again by another file
    /// while the run goes on does not make that file a member.
    size: u64,
    mtime: (i64, u32),
    /// Links not met yet; `u32::MAX`: more than the listing counts (its count stops
    /// at 65,535), so the group stays open to the end.
    left: u32,
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
            let e = sl.get(l as usize);
            match self.open.get_mut(&key) {
                Some(g) if g.size == e.size && g.mtime == (e.mtime, e.mtime_nsec) => {
                    cross.push((m, g.path.clone()));
                    g.left = g.left.saturating_sub(u32::from(g.left != u32::MAX));
                }
                _ => *here.entry(l).or_default() += 1,
            }
        }
        for (l, met) in here {
            let Some(key) = sl.link_key(l as usize) else {
                continue;
            };
            let e = sl.get(l as usize);
            let left = match e.nlink {
                u16::MAX => u32::MAX,
                n => u32::from(n).saturating_sub(met),
            };
            if left > 0 {
                let path = sl.path(l as usize).to_vec();
                let (size, mtime) = (e.size, (e.mtime, e.mtime_nsec));
                let open = Open {
                    path,
                    size,
                    mtime,
                    left,
                };
                self.open.insert(key, open);
            } else {
                self.open.remove(&key);
            }
        }
        self.open.retain(|_, g| g.left > 0);
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

    /// Lists and plans the next piece, its walk's problems recorded in `counters`.
    /// `None` once the walk is done, and also when a signal cut the piece short (the
    /// caller sees the signal itself): a piece not listed whole is never copied.
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
    /// fit) included. `mid_run`: earlier pieces were copied.
    pub(super) fn shortfall(
        &mut self,
        short: Error,
        (mut needed, mut inodes): (u64, u64),
        dest: Option<&dyn Destination>,
        dest_path: &Path,
        opts: &Options,
        mid_run: bool,
    ) -> Error {
        let counters = Counters::default();
        let counted = loop {
            match self.next(opts, &counters) {
                Ok(Some(rest)) => {
                    needed += rest.needed;
                    inodes += rest.inodes;
                }
                Ok(None) if self.pieces.is_done() => break true,
                // A signal or an unreadable root: this piece's figure is what is known.
                _ => break false,
            }
        };
        let e = match (counted, check_space(dest, dest_path, opts, needed, inodes)) {
            (true, Err(e @ Error::NoSpace(_))) => e,
            _ => short,
        };
        match e {
            Error::NoSpace(mut s) if mid_run => {
                s.message = format!(
                    "{} What was copied before this stays; the next run goes on from there.",
                    s.message
                );
                Error::NoSpace(s)
            }
            e => e,
        }
    }

    /// Copies the pieces on `run`: `first` (listed before the run's preflight, which
    /// counted it), then the rest, each checked for space and inodes before it is
    /// written; then the directories' metadata, deepest first. Returns the entries
    /// listed. A piece that does not fit stops the run (exit 11) with what all the rest
    /// needs; the directories already copied get their metadata.
    pub(super) fn copy_all(mut self, run: &Run<'_>, first: Option<Piece>, out: &dyn Output) -> u64 {
        let (opts, dest) = (run.opts, run.dest);
        let mut next = first;
        let (mut checked, mut copied) = (true, 0);
        while let (Some(piece), false) = (next.take(), run.halted()) {
            if !checked {
                let need = (piece.needed, piece.inodes);
                if let Err(e) = check_space(Some(dest), run.dest_name, opts, need.0, need.1) {
                    let e = self.shortfall(e, need, Some(dest), run.dest_name, opts, true);
                    run.counters.problem(e.exit_code(), e.to_string());
                    self.set_dir_meta(run);
                    run.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            checked = false;
            self.copy(run, piece, out);
            copied += 1;
            if !run.halted() {
                match self.next(opts, run.counters) {
                    Ok(p) => next = p,
                    Err(e) => {
                        run.counters.problem(e.exit_code(), e.to_string());
                        run.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        if !run.halted() {
            self.set_dir_meta(run);
        }
        if opts.verbose > 0 {
            out.warn(&format!(
                "new subtrees copied in {copied} pieces ({} entries)",
                self.entries
            ));
        }
        self.entries
    }

    /// Sets the metadata of the directories the pieces copied, deepest first.
    fn set_dir_meta(&self, run: &Run<'_>) {
        run.by_depth(
            &self.later,
            |d| depth(&d.0),
            true,
            |(p, m)| run.dir_meta(p, m),
        );
    }

    /// Copies a piece on `run`: its plan, then the links to copies earlier pieces
    /// made. Only one piece is held at a time: this one is dropped here.
    fn copy(&mut self, run: &Run<'_>, mut piece: Piece, out: &dyn Output) {
        let (opts, sl) = (run.opts, &piece.scanned.listing);
        let empty = Listing::new();
        super::show_plan(&piece.plan, sl, &empty, opts, out);
        if opts.itemize {
            for (i, to) in &piece.cross {
                out.item(&format!(
                    "=f {} => {}",
                    escape(sl.path(*i as usize)),
                    escape(to)
                ));
            }
        }
        self.defer_dir_meta(&mut piece.plan, sl, opts);
        let bytes: u64 = piece
            .plan
            .files
            .iter()
            .map(|f| sl.get(f.src as usize).size)
            .sum();
        run.bar.inc_length(bytes);
        let here = run.with_listings(sl, &empty, piece.plan.files.len() as u64);
        here.execute(&piece.plan);
        here.each(&piece.cross, |(i, to)| {
            let p = sl.path(*i as usize);
            match run.dest.link(p, to) {
                Ok(()) => run.counters.add(&run.counters.linked, 1),
                Err(e) => here.dest_error("hard link", p, e),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FileOp, FileSource};
    use crate::tree::{Kind, Meta};

    /// A listing of one hard-linked file (inode 7 on device 1, `nlink` links) and the
    /// plan that copies it.
    fn one(path: &str, mtime: i64, nlink: u32) -> (Listing, Plan) {
        let mut l = Listing::new();
        l.push(
            path.as_bytes(),
            Meta {
                kind: Kind::File,
                perm: 0o644,
                uid: 0,
                gid: 0,
                size: 5,
                alloc: 5,
                mtime,
                mtime_nsec: 0,
                nlink,
                ino: 7,
                dev: 1,
                extra: None,
            },
        );
        let plan = Plan {
            files: vec![FileOp {
                src: 0,
                from: FileSource::Source { old: None },
            }],
            ..Plan::default()
        };
        (l, plan)
    }

    #[test]
    fn a_group_is_joined_across_pieces_until_its_last_link() {
        let mut links = Links::default();
        let (a, mut pa) = one("a", 100, 3);
        assert!(links.rewire(&a, &mut pa).is_empty());
        assert_eq!(pa.files.len(), 1, "the first member is copied");
        let (b, mut pb) = one("b", 100, 3);
        assert_eq!(links.rewire(&b, &mut pb), vec![(0, b"a".to_vec())]);
        assert!(pb.files.is_empty(), "a later member is linked, not copied");
        let (c, mut pc) = one("c", 100, 3);
        assert_eq!(links.rewire(&c, &mut pc).len(), 1);
        assert!(
            links.open.is_empty(),
            "all three links met: the group is closed"
        );
    }

    #[test]
    fn an_inode_used_again_by_another_file_starts_a_new_group() {
        let mut links = Links::default();
        let (a, mut pa) = one("a", 100, 2);
        links.rewire(&a, &mut pa);
        // Same device and inode, another mtime: another file.
        let (b, mut pb) = one("b", 200, 2);
        assert!(links.rewire(&b, &mut pb).is_empty());
        assert_eq!(pb.files.len(), 1, "copied, not linked to a");
        assert_eq!(links.open[&(1, 7)].path, b"b");
    }

    #[test]
    fn a_group_past_the_link_count_stays_open() {
        let mut links = Links::default();
        let (a, mut pa) = one("a", 100, 70_000);
        links.rewire(&a, &mut pa);
        for k in 0..3 {
            let (b, mut pb) = one(&format!("b{k}"), 100, 70_000);
            assert_eq!(links.rewire(&b, &mut pb).len(), 1);
        }
        assert_eq!(links.open[&(1, 7)].left, u32::MAX);
    }
}

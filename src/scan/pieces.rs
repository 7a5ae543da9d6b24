//! The walk of new subtrees in pieces.
//!
//! An initial copy (or a new home) lists nothing the destination has, so its listing
//! need not be held whole: the walk stops once a piece holds enough entries, the caller
//! copies that piece, then asks for the next. Memory follows the piece, not the tree.
//! Directories are walked depth first (a home's files stay together), a few dozen
//! siblings at a time in parallel; a directory is never split, so one piece holds all
//! of a directory's entries or none of them.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rayon::prelude::*;

use super::{read_one, Chain, Ctx, ScanOptions, Scanned};

/// A directory whose entries are still to be listed, with the filters in force there.
#[derive(Debug)]
pub struct Pending {
    pub(super) rel: Vec<u8>,
    pub(super) chain: Option<Arc<Chain>>,
}

impl Pending {
    /// The directory's path, relative to the root.
    pub fn path(&self) -> &[u8] {
        &self.rel
    }
}

/// Directories listed at once, in parallel.
const SIBLINGS: usize = 32;

/// The rest of a walk, handed out in pieces.
pub struct Pieces<'a> {
    root: BorrowedFd<'a>,
    opts: &'a ScanOptions,
    /// Directories still to list; the next one last.
    stack: Vec<Pending>,
}

impl<'a> Pieces<'a> {
    /// The walk of the `pending` directories of `root` (from [`super::Scanned::pending`]).
    pub fn new(root: BorrowedFd<'a>, opts: &'a ScanOptions, mut pending: Vec<Pending>) -> Self {
        pending.sort_by(|a, b| crate::tree::path_cmp(&b.rel, &a.rel));
        Pieces {
            root,
            opts,
            stack: pending,
        }
    }

    /// True when every directory has been listed.
    pub fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    /// True when a signal stops the walk (the last piece may not be whole).
    pub fn cancelled(&self) -> bool {
        self.opts.cancelled()
    }

    /// Lists whole directories until the piece holds at least `entries` entries (or
    /// the walk ends, or a signal stops it); `None` once nothing is left.
    pub fn next_piece(&mut self, entries: usize) -> Result<Option<Scanned>, String> {
        if self.stack.is_empty() {
            return Ok(None);
        }
        let ctx = Ctx::new(self.root, self.opts)?;
        let entries = entries.max(1);
        let mut listed = 0;
        while listed < entries && !self.stack.is_empty() && !ctx.cancelled() {
            // No more directories than entries still wanted: small pieces stay small.
            let take = self.stack.len().min(SIBLINGS).min(entries - listed);
            let batch = self.stack.split_off(self.stack.len() - take);
            let read: Vec<(usize, Vec<Pending>)> = batch
                .into_par_iter()
                .map(|p| read_one(&ctx, p.rel, p.chain))
                .collect();
            // The batch's first directory is the deepest in the stack: its
            // subdirectories go below those of the ones after it.
            for (n, subs) in read {
                listed += n;
                self.stack.extend(subs.into_iter().rev());
            }
        }
        Ok(Some(ctx.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pieces_list_every_entry_once_and_never_split_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for h in 0..5 {
            for d in 0..4 {
                let p = root.join(format!("h{h}/d{d}"));
                std::fs::create_dir_all(&p).unwrap();
                for f in 0..7 {
                    std::fs::write(p.join(format!("f{f}")), b"x").unwrap();
                }
            }
        }
        std::fs::write(root.join("top"), b"t").unwrap();
        let fd = std::fs::File::open(root).unwrap();
        let opts = ScanOptions {
            defer_new: true,
            ..ScanOptions::default()
        };
        let first = super::super::scan(fd.as_fd(), &opts).unwrap();
        assert_eq!(first.listing.len(), 6, "the root's own entries only");
        assert_eq!(first.pending.len(), 5);
        let mut pieces = Pieces::new(fd.as_fd(), &opts, first.pending);
        let mut seen: Vec<Vec<u8>> = (0..first.listing.len())
            .map(|i| first.listing.path(i).to_vec())
            .collect();
        let mut count = 0;
        while let Some(piece) = pieces.next_piece(10).unwrap() {
            count += 1;
            let l = &piece.listing;
            // Every directory's entries are in one piece: a file's siblings are here.
            for i in 0..l.len() {
                let p = l.path(i);
                if p.ends_with(b"f0") {
                    let parent = crate::tree::parent(p);
                    let here = (0..l.len())
                        .filter(|&k| crate::tree::parent(l.path(k)) == parent)
                        .count();
                    assert_eq!(here, 7, "{}", String::from_utf8_lossy(p));
                }
                seen.push(p.to_vec());
            }
            assert!(
                l.len() < 10 + SIBLINGS * 8,
                "a piece stops soon after its size"
            );
        }
        assert!(pieces.is_done());
        assert!(count >= 2, "{count} pieces");
        let whole = super::super::scan(fd.as_fd(), &ScanOptions::default()).unwrap();
        let mut want: Vec<Vec<u8>> = (0..whole.listing.len())
            .map(|i| whole.listing.path(i).to_vec())
            .collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
    }
}

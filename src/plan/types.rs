//! The plan's vocabulary: what it asks of the hasher, the options that shape it, and the
//! [`Plan`] value itself. Indices name entries of the two listings, never paths, so a
//! plan of millions of files stays small.

use crate::tree::Listing;

/// A BLAKE3 content hash.
pub type Hash = [u8; 32];

/// Which listing an index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Src,
    Dst,
}

/// Supplies content hashes of regular files; `None` when the file cannot be read.
pub trait ContentHasher: Sync {
    fn hash(&self, side: Side, idx: usize) -> Option<Hash>;
}

/// Options that change the plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    pub delete: bool,
    pub delete_excluded: bool,
    pub checksum: bool,
    /// Compare and replicate owners.
    pub owners: bool,
    /// Replicate FIFOs, sockets and devices.
    pub specials: bool,
    /// Smallest file considered for move detection.
    pub move_min_size: u64,
    /// Compare extended attributes (listing digests).
    pub xattrs: bool,
}

/// Where the content of a new file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Read from SRC; `old` is the destination entry it replaces (a delta basis).
    Source { old: Option<u32> },
    /// Copy a file the destination already holds (before any deletes).
    Local(Origin),
}

/// Where a file to copy inside the destination is, once the renames are done; an index,
/// not a path, so that a plan of millions of files stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Where the destination entry `dst` is.
    Dst(u32),
    /// Where the source entry `src` now is (the file was renamed there).
    Moved(u32),
}

impl Origin {
    /// The path the origin names.
    pub fn path<'a>(self, src: &'a Listing, dst: &'a Listing) -> &'a [u8] {
        match self {
            Origin::Dst(j) => dst.path(j as usize),
            Origin::Moved(i) => src.path(i as usize),
        }
    }
}

/// Regular file data to produce at a source entry's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOp {
    pub src: u32,
    pub from: FileSource,
}

/// The plan of a run.
#[derive(Debug, Default)]
pub struct Plan {
    /// Temporary files of an interrupted run (dst index), removed first whatever
    /// `--delete` says. A source entry with such a name is replicated like any other.
    pub temps: Vec<u32>,
    /// Destination entries (dst index) in the way of a different kind: removed (whole
    /// subtree for directories) before anything is created.
    pub clear: Vec<u32>,
    /// Directories to create (src index), parents first.
    pub mkdirs: Vec<u32>,
    /// Renames inside the destination: (src index of the new path, dst index of the old).
    pub moves: Vec<(u32, u32)>,
    /// File data to write: from SRC, or copied from inside the destination.
    pub files: Vec<FileOp>,
    /// Hard links: (src index of the member, src index of its group leader).
    pub links: Vec<(u32, u32)>,
    /// Symlinks to create or replace (src index).
    pub symlinks: Vec<u32>,
    /// FIFOs, sockets and devices to create or replace (src index).
    pub specials: Vec<u32>,
    /// In-place metadata updates of files and symlinks: (src index, dst index).
    pub meta: Vec<(u32, u32)>,
    /// Destination entries to delete (dst index), children before parents.
    pub deletes: Vec<u32>,
    /// Directories whose mode, owner and mtime are set last (src index), deepest first.
    pub dirmeta: Vec<u32>,
    /// Source entries skipped, with the reason (src index).
    pub skipped: Vec<(u32, &'static str)>,
    /// Source entries already up to date.
    pub unchanged: u64,
    /// The root directory's contents change (its mtime must be set again).
    pub root_dirty: bool,
}

impl Plan {
    /// Indexes of the source entries whose destination the plan changes (content,
    /// metadata, links or moves).
    pub fn touched(&self) -> impl Iterator<Item = u32> + '_ {
        self.files
            .iter()
            .map(|f| f.src)
            .chain(self.meta.iter().map(|m| m.0))
            .chain(self.links.iter().map(|l| l.0))
            .chain(self.moves.iter().map(|m| m.0))
    }

    /// Number of changes the plan makes.
    pub fn changes(&self) -> usize {
        self.temps.len()
            + self.clear.len()
            + self.mkdirs.len()
            + self.moves.len()
            + self.files.len()
            + self.links.len()
            + self.symlinks.len()
            + self.specials.len()
            + self.meta.len()
            + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes() == 0 && self.dirmeta.is_empty()
    }
}

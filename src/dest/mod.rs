//! The destination seam: what the transfer needs from the side it writes to.
//!
//! [`local::LocalDest`] implements it on a directory of this machine; a remote
//! implementation speaks the same operations over a protocol. Every implementation
//! keeps the invariants: nothing is written in place (data goes to a temporary file
//! that is made durable and renamed), every operation stays beneath the root, and
//! nothing is written past the free-space reserve.

pub mod aside;
pub mod local;
pub mod remote;

use std::io;

use crate::plan::Hash;
use crate::scan::{Paired, ScanOptions, Scanned};
pub use crate::space::Space;
pub use crate::temp::Staged;
use crate::tree::Kind;
pub use crate::tree::SetMeta;

/// Why listing the source and the destination together failed.
#[derive(Debug)]
pub enum PairError {
    /// The source could not be walked (or, for a local destination, either side).
    Source(String),
    /// The destination's listing failed.
    Dest(ListError),
}

/// Why a destination could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Its tree could not be read: the root, or a directory the walk must enter.
    #[error("{0}")]
    Unreadable(String),
    /// The session failed, or the far side broke the protocol or a bound (the session
    /// is over).
    #[error("{0}")]
    Session(#[source] io::Error),
}

/// How file data is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// Copy the whole file (reflink, copy_file_range, or read/write; holes kept).
    Whole,
    /// Rebuild from the destination's older version at the same path with rsync deltas.
    Delta,
}

/// Bytes moved to produce one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DataStats {
    /// Bytes read from the source and written as new data.
    pub literal: u64,
    /// Bytes reused from the destination's older version.
    pub matched: u64,
    /// Bytes cloned by reflink.
    pub cloned: u64,
}

/// Why writing one file failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The source changed while it was read; nothing was put in place.
    #[error("changed while it was read")]
    SourceChanged,
    /// The source vanished.
    #[error("vanished before it could be copied")]
    SourceVanished,
    /// Reading the source failed.
    #[error("read: {0}")]
    Source(io::Error),
    /// The run was interrupted; nothing was put in place.
    #[error("interrupted")]
    Interrupted,
    /// The destination is full.
    #[error("no space left on the destination")]
    NoSpace,
    /// Another destination error.
    #[error("{op}: {err}")]
    Dest { op: &'static str, err: io::Error },
}

impl PutError {
    pub fn dest(op: &'static str) -> impl FnOnce(io::Error) -> PutError {
        move |err| {
            if crate::fsutil::is_no_space(&err) {
                PutError::NoSpace
            } else {
                PutError::Dest { op, err }
            }
        }
    }
}

/// One file to write: its path, the open source, the metadata to give it, and how its
/// data is made.
#[derive(Clone, Copy)]
pub struct FileWrite<'a> {
    pub rel: &'a [u8],
    pub src: &'a crate::source::SourceFile,
    pub meta: &'a SetMeta,
    pub mode: DataMode,
    /// Copy the source file's extended attributes.
    pub xattrs: bool,
}

impl FileWrite<'_> {
    /// The same file, its data made another way.
    pub fn with_mode(self, mode: DataMode) -> Self {
        FileWrite { mode, ..self }
    }
}

/// A file whose data has been handed to the destination.
pub enum Started<'a> {
    /// The temporary file is written.
    Done(Staged, DataStats),
    /// The data is on its way; the function returns once the far side has written it
    /// (with what the transfer cost, known only then for a delta).
    Waiting(Box<dyn FnOnce() -> Result<(Staged, DataStats), PutError> + Send + 'a>),
}

impl Started<'_> {
    /// Waits for the temporary file.
    pub fn finish(self) -> Result<(Staged, DataStats), PutError> {
        match self {
            Started::Done(s, stats) => Ok((s, stats)),
            Started::Waiting(wait) => wait(),
        }
    }
}

/// The operations the transfer runs against a destination. Paths are relative to the
/// root, validated, and never contain `.` or `..` components.
pub trait Destination: Sync {
    /// Lists the destination (temporary files of interrupted runs are reported apart).
    fn list(&self, opts: &ScanOptions) -> Result<Scanned, ListError>;
    /// Lists the source (`src`, walked with `src_opts`) and the destination together,
    /// only what differs: the entries [`crate::tree::unchanged`] on both sides are
    /// counted, not held ([`crate::scan::scan_pair`] for a local destination). With
    /// [`ScanOptions::defer_new`] the source's new subtrees may come back unwalked in
    /// `Paired::src.pending`, for the caller to copy in pieces. `None` where this
    /// destination cannot (then both are listed whole).
    fn list_with_source(
        &self,
        _src: std::os::fd::BorrowedFd<'_>,
        _src_opts: &ScanOptions,
        _opts: &ScanOptions,
        _keep_from: u64,
    ) -> Option<Result<Paired, PairError>> {
        None
    }
    /// Free space on the destination's filesystem.
    fn space(&self) -> io::Result<Space>;
    /// Content hash of a regular file.
    fn hash(&self, rel: &[u8]) -> Option<Hash>;
    /// Removes a non-directory entry, or an empty directory.
    fn remove(&self, rel: &[u8], kind: Kind) -> io::Result<()>;
    /// Removes the non-directory entries `names` (name, kind) of the directory `dir`,
    /// calling `done` with each one's index and result. A local destination opens the
    /// directory once for all of them, and stops at a signal (the rest get no call).
    fn remove_in(
        &self,
        dir: &[u8],
        names: &[(&[u8], Kind)],
        done: &mut dyn FnMut(usize, io::Result<()>),
    ) {
        for (k, &(name, kind)) in names.iter().enumerate() {
            done(k, self.remove(&crate::tree::join(dir, name), kind));
        }
    }
    /// Removes an entry and, for a directory, everything beneath it.
    fn remove_tree(&self, rel: &[u8]) -> io::Result<()>;
    /// Creates a directory (its final metadata is set later by `set_dir_meta`).
    fn mkdir(&self, rel: &[u8], perm: u32) -> io::Result<()>;
    /// Renames an entry inside the destination (move detection).
    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()>;
    /// Writes a file's data from the source into a temporary file beside `rel`; may
    /// return as soon as the data is sent, before the far side has answered, so that a
    /// slow link carries many files at once. A worker keeps `dirs` for its batch: a
    /// local destination opens a file's directory only when it is not the last one's.
    fn start_file(
        &self,
        dirs: &mut crate::fsutil::DirCache,
        f: FileWrite<'_>,
    ) -> Result<Started<'_>, PutError>;
    /// Copies a file the destination holds at `from` into a temporary file beside `rel`.
    fn stage_local_copy(&self, rel: &[u8], from: &[u8], meta: &SetMeta)
        -> Result<Staged, PutError>;
    /// Makes staged files durable (per the fsync mode) and renames them into place.
    /// A file the destination refuses on its own (EPERM, EACCES, ENAMETOOLONG, ...)
    /// is left out, its temporary file removed, and returned with its index in
    /// `staged` and the error; the rest are committed. A destination-wide fault
    /// ([`crate::fsutil::is_dest_wide`]) or a failed sync ends the batch with `Err`
    /// (each file then old or new). A signal stops the renames: the files not renamed
    /// yet are removed and returned with `ErrorKind::Interrupted`.
    fn commit(&self, staged: &[Staged]) -> io::Result<Vec<(usize, io::Error)>>;
    /// Makes `rel` a hard link to `leader` (atomically replacing `rel`).
    fn link(&self, rel: &[u8], leader: &[u8]) -> io::Result<()>;
    /// Creates or atomically replaces a symlink.
    fn symlink(&self, rel: &[u8], target: &[u8], meta: &SetMeta) -> io::Result<()>;
    /// Creates or atomically replaces a FIFO, socket or device node.
    fn mknod(&self, rel: &[u8], meta: &SetMeta, rdev: u64) -> io::Result<()>;
    /// Sets metadata of an existing non-directory in place.
    fn set_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()>;
    /// Makes a directory's extended attributes exactly `xattrs` (`rel` empty: the root).
    fn set_dir_xattrs(&self, rel: &[u8], xattrs: &crate::fsutil::Xattrs) -> io::Result<()>;
    /// Sets metadata of a directory (`rel` empty: the root).
    fn set_dir_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()>;
    /// Discards a staged file that will not be committed.
    fn discard(&self, staged: &Staged);
    /// Whether this destination can set owners (its writer runs as root); known for a
    /// remote one once it has been listed.
    fn sets_owners(&self) -> bool {
        rustix::process::geteuid().is_root()
    }
    /// Whether requests travel to another process (listing then overlaps local work).
    fn is_remote(&self) -> bool {
        false
    }
    /// Why the destination can take no more requests (a lost connection), if so.
    fn broken(&self) -> Option<String> {
        None
    }
    /// The run completed: what cut transfers kept for a later run
    /// ([`local::partial`]) is no longer needed.
    fn completed(&self) -> io::Result<()> {
        Ok(())
    }
    /// Final durability barrier for directory entries (renames, links, deletes).
    fn finish(&self) -> io::Result<()>;
    /// The record of the source this replica was made from
    /// (`.fsync-repl/source`, see [`crate::identity`]); `None` when there is none.
    fn source_record(&self) -> io::Result<Option<Vec<u8>>>;
    /// Records the source this replica is made from, atomically and durably.
    fn set_source_record(&self, record: &[u8]) -> io::Result<()>;
}

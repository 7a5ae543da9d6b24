//! The wire protocol between a replicating engine and a `serve` process.
//!
//! Every message type is here. The side that runs the engine (scan, plan, transfer) is
//! the *sender*; the side that owns the destination is the *receiver*. For `push
//! host:DEST` the local process is the sender and the remote `serve` the receiver; for
//! `pull host:SRC` the roles swap and the remote `serve --send` runs the engine, so the
//! same code writes every destination.
//!
//! Framing ([`frame`]): after a handshake of magic bytes and versions, each message is a
//! little-endian `u32` length followed by a postcard body, at most [`frame::MAX_FRAME`]
//! bytes; after the handshake a frame may instead be a part of the side's zstd stream
//! ([`zstream`]: a length with its top bit set), and listings travel coded by
//! [`listing`] (version 5). Requests carry an id; the receiver answers each one with a
//! [`Reply`] carrying the same id, in order, so the sender can keep many requests in
//! flight (pipelining).
//! Decoding never panics and never allocates more than a frame; the receiver validates
//! every path, size and parameter before use.

pub mod frame;
pub mod listing;
pub mod zstream;

use serde::{Deserialize, Serialize};

use crate::temp::Staged;
use crate::tree::SetMeta;
use crate::tree::{Kind, Meta};

/// Protocol version; both sides must speak the same one (5: compact listings).
pub const VERSION: u32 = 6;

/// An entry of a listing on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub kind: WireKind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub alloc: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    pub ino: u64,
    pub dev: u64,
    /// Symlink target.
    #[serde(with = "serde_bytes")]
    pub target: Vec<u8>,
    pub rdev: u64,
    pub xattr_digest: u64,
}

/// [`Kind`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl From<Kind> for WireKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::File => WireKind::File,
            Kind::Dir => WireKind::Dir,
            Kind::Symlink => WireKind::Symlink,
            Kind::Fifo => WireKind::Fifo,
            Kind::Socket => WireKind::Socket,
            Kind::CharDev => WireKind::CharDev,
            Kind::BlockDev => WireKind::BlockDev,
        }
    }
}

impl From<WireKind> for Kind {
    fn from(k: WireKind) -> Self {
        match k {
            WireKind::File => Kind::File,
            WireKind::Dir => Kind::Dir,
            WireKind::Symlink => Kind::Symlink,
            WireKind::Fifo => Kind::Fifo,
            WireKind::Socket => Kind::Socket,
            WireKind::CharDev => Kind::CharDev,
            WireKind::BlockDev => Kind::BlockDev,
        }
    }
}

impl WireEntry {
    /// The listing metadata this entry describes.
    pub fn meta(&self) -> Meta {
        let kind: Kind = self.kind.into();
        Meta {
            kind,
            perm: self.perm & 0o7777,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            alloc: self.alloc,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec.min(999_999_999),
            nlink: self.nlink,
            ino: self.ino,
            dev: self.dev,
            extra: match kind {
                Kind::Symlink => Some(crate::tree::Extra::Target(self.target.clone())),
                Kind::CharDev | Kind::BlockDev => Some(crate::tree::Extra::Rdev(self.rdev)),
                _ if self.xattr_digest != 0 => Some(crate::tree::Extra::Xattrs(self.xattr_digest)),
                _ => None,
            },
        }
    }
}

/// [`SetMeta`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMeta {
    pub kind: WireKind,
    pub perm: u32,
    pub owner: Option<(u32, u32)>,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl From<&SetMeta> for WireMeta {
    fn from(m: &SetMeta) -> Self {
        WireMeta {
            kind: m.kind.into(),
            perm: m.perm,
            owner: m.owner,
            mtime: m.mtime,
            mtime_nsec: m.mtime_nsec,
        }
    }
}

impl From<WireMeta> for SetMeta {
    fn from(m: WireMeta) -> Self {
        SetMeta {
            kind: m.kind.into(),
            perm: m.perm & 0o7777,
            owner: m.owner,
            mtime: m.mtime,
            mtime_nsec: m.mtime_nsec.min(999_999_999),
        }
    }
}

/// A staged temporary file on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStaged {
    #[serde(with = "serde_bytes")]
    pub dir: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub tmp: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
}

impl From<&Staged> for WireStaged {
    fn from(s: &Staged) -> Self {
        WireStaged {
            dir: s.dir.clone(),
            tmp: s.tmp.clone(),
            name: s.name.clone(),
        }
    }
}

impl From<WireStaged> for Staged {
    fn from(s: WireStaged) -> Self {
        Staged {
            dir: s.dir,
            tmp: s.tmp,
            name: s.name,
        }
    }
}

/// An extended attribute (name, value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireXattr(
    #[serde(with = "serde_bytes")] pub Vec<u8>,
    #[serde(with = "serde_bytes")] pub Vec<u8>,
);

/// How a file's content arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMode {
    /// `Data` frames at offsets; holes stay holes.
    Whole,
    /// `Delta` frames, one per window, against the receiver's current file.
    Delta,
}

/// Requests from the sender to the receiver. Each has an id answered by one [`Reply`]
/// (except `Data`, `Delta` and `Discard`, which are answered by the file's `End`, or
/// never).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// List the receiver's tree: answered by `Listing` chunks then `ListEnd`. With a
    /// `scope` (watch mode), only that part: (directory, recursive?) pairs, each
    /// directory a valid relative path or empty for the root (see [`crate::scope`]).
    List {
        id: u64,
        xattrs: bool,
        scope: Option<Vec<(serde_bytes::ByteBuf, bool)>>,
    },
    /// Free space of the receiver's filesystem.
    Space { id: u64 },
    /// BLAKE3 of the receiver's file at `path`.
    Hash {
        id: u64,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// A filesystem operation on the receiver's tree.
    Op { id: u64, op: FsOp },
    /// Start a temporary file for `path` of `size` bytes. For `Delta`, the receiver
    /// answers with `Signature` (or `NoBase`, after which the sender sends `Whole` data).
    Begin {
        id: u64,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        size: u64,
        mode: WireMode,
    },
    /// File data at `offset` for file `id`.
    Data {
        id: u64,
        offset: u64,
        /// `data` is the next part of the session's zstd stream ([`zstream`]); at most
        /// [`frame::DATA_CHUNK`] unpacked.
        zstd: bool,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Part `part` of the delta of window `index` for file `id`, in window order. A
    /// window's delta is cut into parts of at most [`frame::DELTA_PART`] bytes, each a
    /// complete delta against the same base window; `last` closes the window.
    Delta {
        id: u64,
        index: u32,
        part: u32,
        last: bool,
        /// `delta` is the next part of the session's zstd stream ([`zstream`]).
        zstd: bool,
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// The file's content is complete: BLAKE3 of the whole content; answered by `Staged`.
    End {
        id: u64,
        hash: [u8; 32],
        meta: WireMeta,
        xattrs: Vec<WireXattr>,
    },
    /// Give up file `id` (its source changed while it was read); no reply.
    Abort { id: u64 },
    /// Copy the receiver's own file `from` into a temporary file for `path`.
    LocalCopy {
        id: u64,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        meta: WireMeta,
    },
    /// Make staged files durable and rename them into place.
    Commit { id: u64, staged: Vec<WireStaged> },
    /// Remove staged files that will not be committed (no reply).
    Discard { staged: Vec<WireStaged> },
    /// Final durability barrier, then the session ends.
    Finish { id: u64 },
    /// The receiver's record of the source its tree was made from: answered by
    /// `Record`.
    SourceRecord { id: u64 },
    /// Replace that record (at most [`crate::identity::MAX_RECORD`] bytes): `Done`.
    SetSourceRecord {
        id: u64,
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Like `Begin` with `Delta`, for a large file the receiver keeps as a partial file
    /// if the transfer is cut ([`crate::dest::local::partial`]): the signatures answered
    /// are those of the partial file a cut transfer of the same source file (`size`,
    /// `mtime`) left, or `NoBase`.
    Resume {
        id: u64,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        size: u64,
        mtime: i64,
        mtime_nsec: u32,
    },
    /// The run completed: partial files of cut transfers are removed; `Done`.
    Completed { id: u64 },
}

/// Filesystem operations (see [`crate::dest::Destination`] for their meaning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FsOp {
    Remove {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        kind: WireKind,
    },
    RemoveTree {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    Mkdir {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        perm: u32,
    },
    Rename {
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        #[serde(with = "serde_bytes")]
        to: Vec<u8>,
    },
    Link {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        #[serde(with = "serde_bytes")]
        leader: Vec<u8>,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        meta: WireMeta,
    },
    Mknod {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        meta: WireMeta,
        rdev: u64,
    },
    SetMeta {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        meta: WireMeta,
    },
    SetDirMeta {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        meta: WireMeta,
    },
    SetDirXattrs {
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        xattrs: Vec<WireXattr>,
    },
}

/// Why a receiver-side operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// The filesystem is full.
    NoSpace,
    /// The run was interrupted on the receiver.
    Interrupted,
    /// The received content does not hash like the sender's file.
    Corrupt,
    /// An OS error with its errno and text.
    Os { errno: i32, op: String, msg: String },
}

/// Answers from the receiver, each to the request with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// A chunk of the listing, coded by [`listing`] (sorted within the chunk or not:
    /// the sender sorts).
    Listing {
        id: u64,
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// The listing is complete; problems met while walking (path, message, vanished).
    ListEnd {
        id: u64,
        /// The root directory's own metadata (its path is empty).
        root: Option<WireEntry>,
        /// Whether this side can set owners (it runs as root); when not, the sender
        /// neither compares nor sends them, like rsync with a non-root receiver.
        owners: bool,
        problems: Vec<(serde_bytes::ByteBuf, String, bool)>,
    },
    /// Free and total bytes, free and total inodes.
    Space {
        id: u64,
        space: Option<(u64, u64, u64, u64)>,
    },
    Hash {
        id: u64,
        hash: Option<[u8; 32]>,
    },
    /// The signatures of the receiver's current file, one per window.
    Signature {
        id: u64,
        block_size: u32,
        windows: Vec<serde_bytes::ByteBuf>,
    },
    /// No current file to diff against: send whole data.
    NoBase {
        id: u64,
    },
    Staged {
        id: u64,
        result: Result<WireStaged, WireError>,
    },
    Done {
        id: u64,
        result: Result<(), WireError>,
    },
    /// The receiver's source record (`None`: it has none), or why it cannot be read.
    Record {
        id: u64,
        result: Result<Option<serde_bytes::ByteBuf>, WireError>,
    },
    /// A batch committed: the files refused one by one (index in the batch, why), or
    /// the fault that stopped the whole batch.
    Committed {
        id: u64,
        result: Result<Vec<(u32, WireError)>, WireError>,
    },
}

impl Reply {
    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        match self {
            Reply::Listing { id, .. }
            | Reply::ListEnd { id, .. }
            | Reply::Space { id, .. }
            | Reply::Hash { id, .. }
            | Reply::Signature { id, .. }
            | Reply::NoBase { id }
            | Reply::Staged { id, .. }
            | Reply::Done { id, .. }
            | Reply::Committed { id, .. }
            | Reply::Record { id, .. } => *id,
        }
    }
}

/// Messages the remote engine sends to the local client in `pull` (where the remote
/// side runs the engine): output lines and the final report, interleaved with requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    Item(String),
    Warn(String),
    /// The run's report as JSON, and the error line when it failed before reporting.
    Report(String),
    Failed {
        exit_code: i32,
        message: String,
    },
}

/// Everything the sender side writes: requests, or notices (pull only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToReceiver {
    Request(Request),
    Notice(Notice),
}

//! The receiving side of the protocol: a [`LocalDest`] driven by frames.
//!
//! `fsync-repl serve ROOT` runs this on the far side of a push; `pull` runs it locally.
//! Every request is validated before use — paths through the destination's own checks
//! (single components, no `..`, resolved beneath the root), sizes, window indexes and
//! counts here — and written with exactly the local engine's code: the same temporary
//! files, metadata, durability barriers and confinement. A malformed frame ends the
//! session with a protocol error.
//!
//! Nothing from the peer is trusted (invariant 8): a FIFO or a device it names is never
//! opened (see [`crate::fsutil::open_regular`]); the free-space reserve counts what every
//! file in flight will still write, and local copies (invariant 5); the options of this
//! side's own user hold whatever the peer sends ([`Policy`]: no deletes or moves without
//! `--delete`, no extended attributes without `-X`). However a session ends, the
//! temporary files of unfinished and of never-committed transfers are removed (a large
//! file's partial file stays in the replica's own directory for the next run to resume,
//! see [`crate::dest::local::partial`]), and entries set aside to make way are put back.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant};

use crate::delta;
use crate::dest::aside::SetAside;
use crate::dest::local::{map_range, LocalDest, TempFile};
use crate::dest::{Destination, PutError, SetMeta, Staged};
use crate::fsutil;
use crate::protocol::frame::{self, ProtoError};
use crate::protocol::zstream::{self, Unpacker, ZReader, ZWriter};
use crate::protocol::{
    FsOp, Notice, Reply, Request, ToReceiver, WireEntry, WireError, WireMode, WireStaged, WireXattr,
};
use crate::scan::ScanOptions;
use crate::tree::Kind;
use crate::wire::WireIn;

/// Files being received at once, at most.
const MAX_OPEN_FILES: usize = 4096;
/// Largest file size a peer may announce (16 TiB).
const MAX_FILE_SIZE: u64 = 16 << 40;
/// Files with more windows than this are sent whole (their signatures would not fit a frame).
const MAX_SIG_WINDOWS: u64 = 128;
/// The longest an answer waits for others to share its write while requests keep
/// coming.
const GATHER: Duration = Duration::from_millis(1);
/// Listing entries per frame, at most ([`crate::protocol::listing::MAX_ENTRIES`]).
const LIST_CHUNK: usize = 4096;
/// Coded listing bytes per frame before compression, about.
const LIST_CHUNK_BYTES: usize = 1 << 20;

fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError::Bad(msg.into())
}

/// Converts a local error into its wire form.
pub fn wire_error(op: &str, e: &io::Error) -> WireError {
    if fsutil::is_no_space(e) {
        WireError::NoSpace
    } else {
        WireError::Os {
            errno: e.raw_os_error().unwrap_or(0),
            op: op.to_string(),
            msg: e.to_string(),
        }
    }
}

fn put_error(e: PutError) -> WireError {
    match e {
        PutError::NoSpace => WireError::NoSpace,
        PutError::Interrupted => WireError::Interrupted,
        PutError::Dest { op, err } => wire_error(op, &err),
        other => WireError::Os {
            errno: 0,
            op: "write".into(),
            msg: other.to_string(),
        },
    }
}

/// A file being received.
struct Incoming {
    temp: TempFile,
    size: u64,
    mode: WireMode,
    /// Delta basis: the current file and its length.
    old: Option<(crate::cache::Tracked, u64)>,
    next_window: u32,
    /// Next part of the current window, and where the window's output starts.
    next_part: u32,
    window_start: u64,
    windows: u32,
    written: u64,
    hasher: blake3::Hasher,
}

impl Incoming {
    /// Bytes announced and not written yet.
    fn owes(&self) -> u64 {
        self.size.saturating_sub(self.written)
    }

    /// A file sent whole into `temp` (until a basis is offered).
    fn new(temp: TempFile, size: u64) -> Incoming {
        Incoming {
            temp,
            size,
            mode: WireMode::Whole,
            old: None,
            next_window: 0,
            next_part: 0,
            window_start: 0,
            windows: 0,
            written: 0,
            hasher: blake3::Hasher::new(),
        }
    }
}

/// What the receiver's own side asked for: a peer that sends more is refused, whatever
/// it sends (the far side of a pull runs the engine, but the client gave the options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Entries may be deleted (`--delete`).
    pub delete: bool,
    /// Extended attributes may be set (`-X`).
    pub xattrs: bool,
}

impl Policy {
    /// The far side of a push does what its client asks.
    pub const ANY: Policy = Policy {
        delete: true,
        xattrs: true,
    };
}

/// The receiving loop's state.
pub struct Receiver<'a> {
    dest: &'a LocalDest,
    /// This side's own free-space reserve (`--min-free`), checked before each file.
    reserve: Option<crate::space::Reserve>,
    /// A dry run: only listing, hashing and space queries are served.
    read_only: bool,
    policy: Policy,
    /// Entries set aside to make way without `--delete`.
    aside: SetAside,
    files: HashMap<u64, Incoming>,
    /// What the files in flight still owe, summed (see [`Receiver::in_flight`]).
    owed: u64,
    /// Temporary files written and not yet committed or discarded: removed when the
    /// session ends, however it ends.
    staged: HashSet<Staged>,
    out: ZWriter<BufWriter<Box<dyn Write + 'a>>>,
    /// When the oldest answer still in `out` was written (see [`Receiver::reply`]).
    unflushed: Option<Instant>,
    /// The decoder of the peer's compressed payloads, once one came.
    unpacker: Option<Unpacker>,
}

impl<'a> Receiver<'a> {
    pub fn new(
        dest: &'a LocalDest,
        reserve: Option<crate::space::Reserve>,
        out: Box<dyn Write + 'a>,
    ) -> Receiver<'a> {
        Receiver {
            dest,
            reserve,
            read_only: false,
            policy: Policy::ANY,
            aside: SetAside::default(),
            files: HashMap::new(),
            owed: 0,
            staged: HashSet::new(),
            out: ZWriter::new(
                BufWriter::with_capacity(256 << 10, out),
                Some(zstream::LIGHT),
            ),
            unflushed: None,
            unpacker: None,
        }
    }

    /// Refuses what `policy` does not allow.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Serves only requests that write nothing (for `--dry-run`); any other ends the
    /// session with a protocol error.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A payload as sent, or decoded as the next part of the session's stream.
    fn unpack(&mut self, data: Vec<u8>, zstd: bool, limit: usize) -> Result<Vec<u8>, ProtoError> {
        if !zstd {
            return Ok(data);
        }
        let u = match &mut self.unpacker {
            Some(u) => u,
            None => self.unpacker.insert(Unpacker::new()?),
        };
        u.unpack(&data, limit)
    }

    /// Answers a request. Answers are gathered while more requests wait to be read;
    /// [`Receiver::serve`] sends them when none does, before a slow request, or when
    /// the oldest is [`GATHER`] old: a burst of small requests is answered in a few
    /// writes, not one each.
    fn reply(&mut self, r: Reply) -> Result<(), ProtoError> {
        frame::write_frame(&mut self.out, &r)?;
        self.unflushed.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProtoError> {
        self.unflushed = None;
        self.out.flush()?;
        Ok(())
    }

    /// Serves requests from `input` until it ends. The peer's handshake must come within
    /// `handshake` (else the error `no_hello`). Notices (pull) go to `notice`. Whatever
    /// the end, the temporary files of unfinished transfers are removed.
    pub fn run(
        &mut self,
        input: &mut WireIn,
        handshake: (Duration, String),
        notice: &mut dyn FnMut(Notice),
    ) -> Result<(), ProtoError> {
        let result = self.serve(input, handshake, notice);
        // Cut transfers: what a partial file holds stays for the next run.
        self.owed = 0;
        for (_, f) in self.files.drain() {
            self.dest.keep_temp(f.temp);
        }
        for s in self.staged.drain() {
            self.dest.discard_at_end(&s);
        }
        self.aside.put_back(self.dest);
        let _ = self.out.flush();
        result
    }

    fn serve(
        &mut self,
        input: &mut WireIn,
        (limit, no_hello): (Duration, String),
        notice: &mut dyn FnMut(Notice),
    ) -> Result<(), ProtoError> {
        frame::write_hello(self.out.raw()?)?;
        input.with_deadline(limit, no_hello, frame::read_hello)?;
        let mut buf = Vec::new();
        let mut input = ZReader::new(input);
        loop {
            // Before waiting for the peer, or once the oldest answer is old enough,
            // what was answered goes out.
            if let Some(since) = self.unflushed {
                if since.elapsed() >= GATHER || !input.buffered() && !input.get_ref().pending() {
                    self.flush()?;
                }
            }
            let msg = frame::read_frame::<ToReceiver, _>(&mut input, &mut buf)?;
            // What may take long (a copy, a hash, a commit's sync, the terminal) does
            // not keep the answers before it waiting.
            let slow = match &msg {
                Some(ToReceiver::Request(r)) => matches!(
                    r,
                    Request::LocalCopy { .. }
                        | Request::Commit { .. }
                        | Request::Finish { .. }
                        | Request::Hash { .. }
                        | Request::Resume { .. }
                ),
                _ => true,
            };
            if slow && self.unflushed.is_some() {
                self.flush()?;
            }
            match msg {
                None => return Ok(()),
                Some(ToReceiver::Notice(n)) => notice(n),
                Some(ToReceiver::Request(req)) => self.handle(req)?,
            }
        }
    }

    fn handle(&mut self, req: Request) -> Result<(), ProtoError> {
        let harmless = matches!(
            req,
            Request::List { .. }
                | Request::Space { .. }
                | Request::Hash { .. }
                | Request::Finish { .. }
                | Request::SourceRecord { .. }
        );
        if self.read_only && !harmless {
            return Err(bad("the peer asked to write during a dry run"));
        }
        match req {
            Request::List { id, xattrs, scope } => self.list(id, xattrs, scope),
            Request::Space { id } => {
                let space = self
                    .dest
                    .space()
                    .ok()
                    .map(|s| (s.avail, s.total, s.inodes_avail, s.inodes_total));
                self.reply(Reply::Space { id, space })
            }
            Request::Hash { id, path } => {
                let hash = self.dest.hash(&path);
                self.reply(Reply::Hash { id, hash })
            }
            Request::Op { id, op } => {
                let result = self.op(op);
                self.reply(Reply::Done { id, result })
            }
            Request::Begin {
                id,
                path,
                size,
                mode,
            } => self.begin(id, path, size, mode),
            Request::Data {
                id,
                offset,
                zstd,
                data,
            } => {
                let data = self.unpack(data, zstd, frame::DATA_CHUNK)?;
                self.data(id, offset, &data)
            }
            Request::Delta {
                id,
                index,
                part,
                last,
                zstd,
                delta,
            } => {
                let delta = self.unpack(delta, zstd, frame::DELTA_PART)?;
                self.delta(id, index, part, last, &delta)
            }
            Request::End {
                id,
                hash,
                meta,
                xattrs,
            } => self.end(id, hash, meta.into(), xattrs),
            Request::Abort { id } => {
                if let Some(f) = self.take(id) {
                    self.dest.abort_temp(f.temp);
                }
                Ok(())
            }
            Request::LocalCopy {
                id,
                path,
                from,
                meta,
            } => {
                let result = self.local_copy(&path, &from, meta.into());
                self.reply(Reply::Staged { id, result })
            }
            Request::Commit { id, staged } => {
                let staged: Vec<Staged> = staged.into_iter().map(Staged::from).collect();
                let result = self
                    .dest
                    .commit(&staged)
                    .map(|failed| {
                        failed
                            .into_iter()
                            .map(|(k, e)| (k as u32, wire_error("rename into place", &e)))
                            .collect::<Vec<_>>()
                    })
                    .map_err(|e| wire_error("commit", &e));
                if let Ok(failed) = &result {
                    // Refused files had their temporary file removed; the others stand
                    // where an entry set aside had been.
                    let refused: HashSet<usize> = failed.iter().map(|(k, _)| *k as usize).collect();
                    for (k, s) in staged.iter().enumerate() {
                        self.staged.remove(s);
                        if refused.contains(&k) {
                            continue;
                        }
                        let path = match s.dir.is_empty() {
                            true => s.name.clone(),
                            false => [&s.dir[..], b"/", &s.name].concat(),
                        };
                        self.aside.replaced(self.dest, &path);
                    }
                }
                self.reply(Reply::Committed { id, result })
            }
            Request::Discard { staged } => {
                for s in staged {
                    let s = Staged::from(s);
                    self.dest.discard(&s);
                    self.staged.remove(&s);
                }
                Ok(())
            }
            Request::Finish { id } => {
                let result = self.dest.finish().map_err(|e| wire_error("syncfs", &e));
                self.reply(Reply::Done { id, result })
            }
            Request::SourceRecord { id } => {
                let result = self
                    .dest
                    .source_record()
                    .map(|r| r.map(serde_bytes::ByteBuf::from))
                    .map_err(|e| wire_error("read the source record", &e));
                self.reply(Reply::Record { id, result })
            }
            Request::Resume {
                id,
                path,
                size,
                mtime,
                mtime_nsec,
            } => {
                let ident = crate::dest::local::partial::Ident {
                    size,
                    mtime,
                    mtime_nsec,
                };
                self.resume(id, path, ident)
            }
            Request::Completed { id } => {
                let result = self.dest.completed();
                let result = result.map_err(|e| wire_error("remove partial files", &e));
                self.reply(Reply::Done { id, result })
            }
            Request::SetSourceRecord { id, record } => {
                let result = self
                    .dest
                    .set_source_record(&record)
                    .map_err(|e| wire_error("write the source record", &e));
                self.reply(Reply::Done { id, result })
            }
        }
    }

    fn op(&mut self, op: FsOp) -> Result<(), WireError> {
        if let Some(why) = self.forbidden(&op) {
            return Err(WireError::Os {
                errno: rustix::io::Errno::PERM.raw_os_error(),
                op: "refused".into(),
                msg: why.into(),
            });
        }
        let d = self.dest;
        let keep = !self.policy.delete;
        let r = match &op {
            FsOp::Remove { path, kind } => d.remove(path, (*kind).into()),
            // Without --delete, making way replaces, it does not delete.
            FsOp::RemoveTree { path } if keep => self.aside.make_way(d, path),
            FsOp::RemoveTree { path } => d.remove_tree(path),
            FsOp::Mkdir { path, .. } if keep && self.aside.restore_dir(d, path) => Ok(()),
            FsOp::Mkdir { path, perm } => d.mkdir(path, *perm),
            FsOp::Rename { from, to } => d.rename(from, to),
            FsOp::Link { path, leader } => d.link(path, leader),
            FsOp::Symlink { path, target, meta } => d.symlink(path, target, &(*meta).into()),
            FsOp::Mknod { path, meta, rdev } => d.mknod(path, &(*meta).into(), *rdev),
            FsOp::SetMeta { path, meta } => d.set_meta(path, &(*meta).into()),
            FsOp::SetDirMeta { path, meta } => d.set_dir_meta(path, &(*meta).into()),
            FsOp::SetDirXattrs { path, xattrs } => {
                let x: fsutil::Xattrs = xattrs.iter().map(|w| (w.0.clone(), w.1.clone())).collect();
                d.set_dir_xattrs(path, &x)
            }
        };
        if r.is_ok() {
            // What now stands at a path replaces what was set aside for it.
            match &op {
                FsOp::Mkdir { path, .. }
                | FsOp::Link { path, .. }
                | FsOp::Symlink { path, .. }
                | FsOp::Mknod { path, .. }
                | FsOp::Rename { to: path, .. } => self.aside.replaced(d, path),
                _ => {}
            }
        }
        r.map_err(|e| wire_error("filesystem operation", &e))
    }

    /// Why `op` goes beyond what this side's options allow, if it does.
    fn forbidden(&self, op: &FsOp) -> Option<&'static str> {
        let paths: &[&Vec<u8>] = match op {
            FsOp::Rename { from, to } => &[from, to],
            FsOp::Link { path, leader } => &[path, leader],
            FsOp::Remove { path, .. }
            | FsOp::RemoveTree { path }
            | FsOp::Mkdir { path, .. }
            | FsOp::Symlink { path, .. }
            | FsOp::Mknod { path, .. }
            | FsOp::SetMeta { path, .. }
            | FsOp::SetDirMeta { path, .. }
            | FsOp::SetDirXattrs { path, .. } => &[path],
        };
        if paths.iter().any(|p| self.aside.holds(p)) {
            return Some("the entry was set aside until its replacement stands");
        }
        match op {
            // Leftover temporary files go whatever `--delete` says.
            FsOp::Remove { path, .. }
                if !self.policy.delete
                    && !crate::temp::is_temp_name(crate::tree::file_name(path)) =>
            {
                Some("the sender asked to delete an entry without --delete")
            }
            // The engine moves only files that --delete removes from their old path.
            FsOp::Rename { .. } if !self.policy.delete => {
                Some("the sender asked to move an entry without --delete")
            }
            FsOp::SetDirXattrs { .. } if !self.policy.xattrs => {
                Some("the sender sent extended attributes without -X")
            }
            _ => None,
        }
    }

    /// Remembers a staged temporary file until it is committed or discarded.
    fn track(&mut self, s: Staged) -> WireStaged {
        let w = WireStaged::from(&s);
        self.staged.insert(s);
        w
    }

    /// Bytes announced by the files in flight and not written yet: they will take that
    /// much of the free space, whatever it is now. A running sum: adding them up for
    /// each file announced would cost the square of the files in flight.
    fn in_flight(&self) -> u64 {
        debug_assert_eq!(
            self.owed,
            self.files.values().map(Incoming::owes).sum::<u64>()
        );
        self.owed
    }

    /// Takes file `id` in flight.
    fn admit(&mut self, id: u64, f: Incoming) {
        self.owed += f.owes();
        if let Some(old) = self.files.insert(id, f) {
            self.owed -= old.owes();
        }
    }

    /// Takes file `id` out of flight.
    fn take(&mut self, id: u64) -> Option<Incoming> {
        let f = self.files.remove(&id)?;
        self.owed -= f.owes();
        Some(f)
    }

    /// Whether `size` more bytes, on top of those of every file in flight, stay above this
    /// side's reserve. A filesystem that cannot tell its free space is not checked.
    fn fits(&self, size: u64) -> bool {
        let needed = size.saturating_add(self.in_flight());
        self.dest.space().map_or(true, |space| {
            crate::space::check(space, self.reserve, needed).fits()
        })
    }

    /// A copy of the receiver's own file `from` for `path`, counted against the reserve
    /// like data from the wire.
    fn local_copy(
        &mut self,
        path: &[u8],
        from: &[u8],
        meta: SetMeta,
    ) -> Result<WireStaged, WireError> {
        // Its size, read without opening it (it may be anything the peer named).
        if let Ok((_, st)) = fsutil::path_of_regular(self.dest.root(), from) {
            if !self.fits(st.st_size as u64) {
                return Err(WireError::NoSpace);
            }
        }
        let s = self
            .dest
            .stage_local_copy(path, from, &meta)
            .map_err(put_error)?;
        Ok(self.track(s))
    }
}

mod file;
mod list;

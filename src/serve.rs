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
//! temporary files of unfinished and of never-committed transfers are removed, and
//! entries set aside to make way are put back.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use crate::delta;
use crate::dest::aside::SetAside;
use crate::dest::local::{map_range, LocalDest, TempFile};
use crate::dest::{Destination, PutError, SetMeta, Staged};
use crate::fsutil;
use crate::protocol::frame::{self, ProtoError};
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
/// Listing entries per frame.
const LIST_CHUNK: usize = 2048;

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

/// Writes at a temporary file's running offset through the destination's throttle.
struct TempWriter<'a> {
    dest: &'a LocalDest,
    temp: &'a TempFile,
    offset: &'a mut u64,
    hasher: &'a mut blake3::Hasher,
}

impl Write for TempWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dest
            .write_temp(self.temp, *self.offset, buf)
            .map_err(|e| match e {
                PutError::NoSpace => io::Error::from(rustix::io::Errno::NOSPC),
                other => io::Error::other(other.to_string()),
            })?;
        self.hasher.update(buf);
        *self.offset += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
    reserve: Option<crate::config::Reserve>,
    /// A dry run: only listing, hashing and space queries are served.
    read_only: bool,
    policy: Policy,
    /// Entries set aside to make way without `--delete`.
    aside: SetAside,
    files: HashMap<u64, Incoming>,
    /// Temporary files written and not yet committed or discarded: removed when the
    /// session ends, however it ends.
    staged: HashSet<Staged>,
    out: BufWriter<Box<dyn Write + 'a>>,
}

impl<'a> Receiver<'a> {
    pub fn new(
        dest: &'a LocalDest,
        reserve: Option<crate::config::Reserve>,
        out: Box<dyn Write + 'a>,
    ) -> Receiver<'a> {
        Receiver {
            dest,
            reserve,
            read_only: false,
            policy: Policy::ANY,
            aside: SetAside::default(),
            files: HashMap::new(),
            staged: HashSet::new(),
            out: BufWriter::with_capacity(256 << 10, out),
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

    fn reply(&mut self, r: Reply) -> Result<(), ProtoError> {
        frame::write_frame(&mut self.out, &r)?;
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
        for (_, f) in self.files.drain() {
            self.dest.abort_temp(f.temp);
        }
        for s in self.staged.drain() {
            self.dest.discard(&s);
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
        frame::write_hello(&mut self.out)?;
        input.with_deadline(limit, no_hello, frame::read_hello)?;
        let mut buf = Vec::new();
        loop {
            match frame::read_frame::<ToReceiver, _>(input, &mut buf)? {
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
                let data = frame::unpack(data, zstd, frame::DATA_CHUNK)?;
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
                let delta = frame::unpack(delta, zstd, frame::DELTA_PART)?;
                self.delta(id, index, part, last, &delta)
            }
            Request::End {
                id,
                hash,
                meta,
                xattrs,
            } => self.end(id, hash, meta.into(), xattrs),
            Request::Abort { id } => {
                if let Some(f) = self.files.remove(&id) {
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
            Request::SetSourceRecord { id, record } => {
                let result = self
                    .dest
                    .set_source_record(&record)
                    .map_err(|e| wire_error("write the source record", &e));
                self.reply(Reply::Done { id, result })
            }
        }
    }

    fn list(
        &mut self,
        id: u64,
        xattrs: bool,
        scope: Option<Vec<(serde_bytes::ByteBuf, bool)>>,
    ) -> Result<(), ProtoError> {
        let scope = match scope {
            Some(pairs) => Some(std::sync::Arc::new(
                crate::scope::Scope::from_pairs(pairs.iter().map(|(p, r)| (p.as_slice(), *r)))
                    .map_err(|e| bad(format!("list request: {e}")))?,
            )),
            None => None,
        };
        let opts = ScanOptions {
            xattrs,
            scope,
            ..ScanOptions::default()
        };
        let scanned = match self.dest.list(&opts) {
            Ok(s) => s,
            Err(e) => {
                return self.reply(Reply::ListEnd {
                    id,
                    root: None,
                    owners: self.dest.sets_owners(),
                    problems: vec![(serde_bytes::ByteBuf::new(), e, false)],
                })
            }
        };
        let l = &scanned.listing;
        let mut chunk = Vec::with_capacity(LIST_CHUNK);
        for i in 0..l.len() {
            let e = l.get(i);
            chunk.push(WireEntry {
                path: l.path(i).to_vec(),
                kind: e.kind.into(),
                perm: e.perm,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                alloc: l.alloc(i),
                mtime: e.mtime,
                mtime_nsec: e.mtime_nsec,
                nlink: e.nlink.into(),
                ino: l.ino(i),
                dev: 0,
                target: l.target(i).to_vec(),
                rdev: l.rdev(i),
                xattr_digest: l.xattr_digest(i),
            });
            if chunk.len() == LIST_CHUNK {
                let entries = std::mem::take(&mut chunk);
                frame::write_frame(&mut self.out, &Reply::Listing { id, entries })?;
            }
        }
        if !chunk.is_empty() {
            frame::write_frame(&mut self.out, &Reply::Listing { id, entries: chunk })?;
        }
        let problems = scanned
            .problems
            .into_iter()
            .map(|p| (serde_bytes::ByteBuf::from(p.path), p.what, p.vanished))
            .collect();
        let root = scanned.root.as_ref().map(|m| WireEntry {
            path: Vec::new(),
            kind: m.kind.into(),
            perm: m.perm,
            uid: m.uid,
            gid: m.gid,
            size: 0,
            alloc: 0,
            mtime: m.mtime,
            mtime_nsec: m.mtime_nsec,
            nlink: m.nlink,
            ino: m.ino,
            dev: 0,
            target: Vec::new(),
            rdev: 0,
            xattr_digest: match m.extra {
                Some(crate::tree::Extra::Xattrs(d)) => d,
                _ => 0,
            },
        });
        self.reply(Reply::ListEnd {
            id,
            root,
            owners: self.dest.sets_owners(),
            problems,
        })
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
                    && !crate::scan::is_temp_name(crate::tree::file_name(path)) =>
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

    fn begin(
        &mut self,
        id: u64,
        path: Vec<u8>,
        size: u64,
        mode: WireMode,
    ) -> Result<(), ProtoError> {
        if self.files.contains_key(&id) {
            return Err(bad(format!("file id {id} announced twice")));
        }
        if self.files.len() >= MAX_OPEN_FILES {
            return Err(bad("too many files in flight"));
        }
        if size > MAX_FILE_SIZE {
            return Err(bad(format!("announced file size {size} is absurd")));
        }
        // The receiver keeps its own reserve whatever the sender planned (invariant 5).
        if !self.fits(size) {
            return self.reply(Reply::Staged {
                id,
                result: Err(WireError::NoSpace),
            });
        }
        let temp = match self.dest.begin_temp(&path) {
            Ok(t) => t,
            Err(e) => {
                // Answered at End (the sender streams without waiting); remember the failure.
                // Its later frames are ignored; the sender reads this answer at End.
                return self.reply(Reply::Staged {
                    id,
                    result: Err(put_error(e)),
                });
            }
        };
        let mut inc = Incoming {
            temp,
            size,
            mode,
            old: None,
            next_window: 0,
            next_part: 0,
            window_start: 0,
            windows: 0,
            written: 0,
            hasher: blake3::Hasher::new(),
        };
        if mode == WireMode::Delta {
            let windows = size.div_ceil(delta::DEFAULT_WINDOW as u64);
            let old = self.dest.open_old(&path).filter(|(_, len)| *len > 0);
            match old {
                Some((file, old_len)) if windows <= MAX_SIG_WINDOWS && size > 0 => {
                    let params = delta::SigParams::for_len(size.min(delta::DEFAULT_WINDOW as u64));
                    let mut sigs = Vec::new();
                    for w in delta::windows(size, old_len, delta::DEFAULT_WINDOW) {
                        let base = map_range(&file, &w.base).map_err(ProtoError::Io)?;
                        self.dest.throttle().bytes(base.len() as u64);
                        let sig =
                            delta::signature(&base, params).map_err(|e| bad(e.to_string()))?;
                        sigs.push(serde_bytes::ByteBuf::from(sig));
                    }
                    inc.windows = sigs.len() as u32;
                    inc.old = Some((file, old_len));
                    self.files.insert(id, inc);
                    return self.reply(Reply::Signature {
                        id,
                        block_size: params.block_size,
                        windows: sigs,
                    });
                }
                _ => {
                    inc.mode = WireMode::Whole;
                    self.files.insert(id, inc);
                    return self.reply(Reply::NoBase { id });
                }
            }
        }
        self.files.insert(id, inc);
        Ok(())
    }

    fn data(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<(), ProtoError> {
        let Some(f) = self.files.get_mut(&id) else {
            return Ok(()); // a file that already failed
        };
        if f.mode != WireMode::Whole {
            return Err(bad("data frame for a delta transfer"));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= f.size)
            .ok_or_else(|| bad(format!("data beyond the announced size of file {id}")))?;
        if let Err(e) = self.dest.write_temp(&f.temp, offset, data) {
            self.fail(id, e)?;
            return Ok(());
        }
        f.written = f.written.max(end);
        Ok(())
    }

    fn fail(&mut self, id: u64, e: PutError) -> Result<(), ProtoError> {
        if let Some(f) = self.files.remove(&id) {
            self.dest.abort_temp(f.temp);
        }
        self.reply(Reply::Staged {
            id,
            result: Err(put_error(e)),
        })
    }

    fn delta(
        &mut self,
        id: u64,
        index: u32,
        part: u32,
        last: bool,
        delta_bytes: &[u8],
    ) -> Result<(), ProtoError> {
        let Some(f) = self.files.get_mut(&id) else {
            return Ok(());
        };
        if f.mode != WireMode::Delta
            || index != f.next_window
            || index >= f.windows
            || part != f.next_part
        {
            return Err(bad(format!(
                "unexpected delta window {index} for file {id}"
            )));
        }
        let Some((old, old_len)) = &f.old else {
            return Err(bad("delta without a basis"));
        };
        let Some(w) = delta::windows(f.size, *old_len, delta::DEFAULT_WINDOW).nth(index as usize)
        else {
            return Err(bad("delta window out of range"));
        };
        let base = map_range(old, &w.base).map_err(ProtoError::Io)?;
        let want = (w.new.end - w.new.start) as usize;
        if part == 0 {
            f.window_start = f.written;
        }
        // What the window may still produce.
        let room = (f.window_start + want as u64).saturating_sub(f.written) as usize;
        let mut wr = TempWriter {
            dest: self.dest,
            temp: &f.temp,
            offset: &mut f.written,
            hasher: &mut f.hasher,
        };
        match delta::apply(&base, delta_bytes, &mut wr, room) {
            Ok(_) if !last => {
                f.next_part += 1;
                Ok(())
            }
            Ok(_) if f.written - f.window_start == want as u64 => {
                f.next_window += 1;
                f.next_part = 0;
                Ok(())
            }
            Ok(_) => Err(bad(format!(
                "delta window {index} of file {id} has the wrong length"
            ))),
            Err(delta::DeltaError::Io(e)) if fsutil::is_no_space(&e) => {
                self.fail(id, PutError::NoSpace)
            }
            Err(delta::DeltaError::Io(e)) => self.fail(
                id,
                PutError::Dest {
                    op: "write",
                    err: e,
                },
            ),
            Err(e) => Err(bad(format!("bad delta for file {id}: {e}"))),
        }
    }

    fn end(
        &mut self,
        id: u64,
        hash: [u8; 32],
        meta: SetMeta,
        xattrs: Vec<WireXattr>,
    ) -> Result<(), ProtoError> {
        let Some(f) = self.files.remove(&id) else {
            return Ok(()); // failed earlier: its Staged error was sent then
        };
        let complete = match f.mode {
            WireMode::Whole => {
                // Holes at the end: set the length (a no-op when all data was written).
                if f.written < f.size {
                    if let Err(e) = f.temp.file.set_len(f.size) {
                        self.dest.abort_temp(f.temp);
                        return self.reply(Reply::Staged {
                            id,
                            result: Err(wire_error("truncate", &e)),
                        });
                    }
                }
                true
            }
            WireMode::Delta => {
                f.next_window == f.windows && *f.hasher.finalize().as_bytes() == hash
            }
        };
        if !complete || meta.kind != Kind::File {
            self.dest.abort_temp(f.temp);
            return self.reply(Reply::Staged {
                id,
                result: Err(WireError::Corrupt),
            });
        }
        // Extended attributes nobody asked for (-X) are not applied.
        let x: fsutil::Xattrs = match self.policy.xattrs {
            true => xattrs.into_iter().map(|w| (w.0, w.1)).collect(),
            false => Vec::new(),
        };
        let result = self.dest.finish_temp(f.temp, &meta, &x).map_err(put_error);
        let result = result.map(|s| self.track(s));
        self.reply(Reply::Staged { id, result })
    }

    /// Remembers a staged temporary file until it is committed or discarded.
    fn track(&mut self, s: Staged) -> WireStaged {
        let w = WireStaged::from(&s);
        self.staged.insert(s);
        w
    }

    /// Bytes announced by the files in flight and not written yet: they will take that
    /// much of the free space, whatever it is now.
    fn in_flight(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.size.saturating_sub(f.written))
            .sum()
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

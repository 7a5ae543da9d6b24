//! A destination reached through the protocol: the sending side of a `serve` session.
//!
//! Requests are written under one lock and answered in order; a reader thread routes
//! each [`Reply`] to the worker waiting for its id, so the transfer's many workers keep
//! many requests in flight on one connection (pipelining) and a high-latency link is
//! not idle per file. File data streams in chunks; changed files go as rsync deltas
//! against signatures the receiver computes, window by window, so neither side holds a
//! whole file. Every wait has the session's idle timeout, every write too (a peer that
//! stops reading is a silent peer), and a session that failed ends its remote shell and
//! everything it started ([`RemoteChild::end`]), so that nothing waits for it.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DataMode, DataStats, Destination, PutError, SetMeta, Space, Staged, Started};
use crate::delta;
use crate::fsutil;
use crate::plan::Hash;
use crate::protocol::frame::{self, ProtoError, DATA_CHUNK};
use crate::protocol::{
    FsOp, Notice, Reply, Request, ToReceiver, WireEntry, WireError, WireMode, WireStaged, WireXattr,
};
use crate::scan::{Problem, ScanOptions, Scanned};
use crate::source::SourceFile;
use crate::ssh::{RemoteChild, EXIT_GRACE};
use crate::text::{escape, escape_str};
use crate::throttle::Throttle;
use crate::tree::{Kind, Listing};
use crate::wire::{Abort, WireIn, WireOut};

/// Files smaller than this go whole: a delta cannot pay for its round trip.
const DELTA_MIN: u64 = 64 << 10;

/// Entries of a remote listing accepted by default (`--max-listing`): some 4 GiB of
/// listing in memory at most.
pub const MAX_LISTING: u64 = 50_000_000;

/// Memory a listing entry may take on average, with its names, under `--max-listing`.
const LISTING_ENTRY_BYTES: u64 = 256;

/// What an entry of a listing costs in memory, roughly: the entry and its names.
const ENTRY_OVERHEAD: u64 = 96;

/// The failure of a session ended by SIGINT/SIGTERM.
pub const INTERRUPTED: &str = "interrupted";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One protocol session.
pub struct Conn {
    writer: Mutex<BufWriter<Box<dyn Write + Send>>>,
    waiters: Arc<Mutex<HashMap<u64, Sender<Reply>>>>,
    dead: Arc<Mutex<Option<String>>>,
    next: AtomicU64,
    timeout: Duration,
    child: Mutex<Option<RemoteChild>>,
    /// Set by `close`: the peer hanging up after this is the normal end.
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the session failed or ended: no read or write of it waits any more.
    abort: Abort,
    /// The most entries of a remote listing this side accepts (`--max-listing`).
    max_listing: u64,
    /// Bytes written to and read from the far side's pipes.
    sent: crate::wire::Counter,
    received: crate::wire::Counter,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("dead", &*lock(&self.dead))
            .finish()
    }
}

fn io_proto(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("protocol: {e}"))
}

impl Conn {
    /// Performs the handshake on `reader`/`writer` (within `handshake` time) and starts
    /// the reply router. `abort` is the flag both ends of the wire share; `child` the
    /// remote shell, ended with the session (at once if the handshake fails).
    pub fn start(
        mut reader: WireIn,
        writer: WireOut,
        abort: Abort,
        mut child: Option<RemoteChild>,
        timeout: Duration,
        handshake: Duration,
    ) -> Result<Conn, ProtoError> {
        let (sent, received) = (writer.counter(), reader.counter());
        let writer: Box<dyn Write + Send> = Box::new(writer);
        let mut writer = BufWriter::with_capacity(1 << 20, writer);
        // A peer that died at once shows as a closed pipe: the read below says why.
        let written = frame::write_hello(&mut writer);
        // The handshake read runs on the router thread so it can time out.
        let (tx, rx) = mpsc::channel::<Result<(), ProtoError>>();
        let waiters: Arc<Mutex<HashMap<u64, Sender<Reply>>>> = Arc::default();
        let dead: Arc<Mutex<Option<String>>> = Arc::default();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w2, d2, c2, a2) = (
            waiters.clone(),
            dead.clone(),
            closing.clone(),
            abort.clone(),
        );
        std::thread::Builder::new()
            .name("fsync-repl-router".into())
            .spawn(move || {
                let hello = frame::read_hello(&mut reader);
                let ok = hello.is_ok();
                let _ = tx.send(hello.map(|_| ()));
                if ok {
                    route(&mut reader, &w2, &d2, &c2, &a2);
                }
            })
            .map_err(ProtoError::Io)?;
        let failed = |abort: &Abort, child: &mut Option<RemoteChild>| {
            abort.store(true, Ordering::Relaxed);
            child.as_mut().and_then(|c| c.end(Duration::ZERO))
        };
        match rx.recv_timeout(handshake) {
            Ok(Ok(())) => {
                if let Err(e) = written {
                    failed(&abort, &mut child);
                    return Err(e.into());
                }
            }
            Ok(Err(ProtoError::Closed)) => {
                // Did our own binary start and refuse (bad root, say)? It said why.
                drop(writer);
                let code = child
                    .as_mut()
                    .and_then(|c| c.end(EXIT_GRACE))
                    .and_then(|s| s.code());
                abort.store(true, Ordering::Relaxed);
                return Err(match code {
                    Some(c @ (1 | 3 | 11 | 25)) => ProtoError::RemoteExit(c),
                    _ => ProtoError::Closed,
                });
            }
            Ok(Err(e)) => {
                failed(&abort, &mut child);
                return Err(e);
            }
            Err(_) => {
                failed(&abort, &mut child);
                return Err(ProtoError::Bad(frame::no_handshake(handshake)));
            }
        }
        Ok(Conn {
            writer: Mutex::new(writer),
            waiters,
            dead,
            next: AtomicU64::new(1),
            timeout,
            child: Mutex::new(child),
            closing,
            abort,
            max_listing: MAX_LISTING,
            sent,
            received,
        })
    }

    /// Bytes sent to and received from the far side so far, both directions of its pipes.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.sent.get(), self.received.get())
    }

    /// Ends the session `grace` after `flag` (the run's SIGINT/SIGTERM) is set, unless it
    /// was closed by then: the remote shell runs in a process group of its own and never
    /// sees the terminal's signals, so a hung far side must not hold the run until
    /// --timeout. Every wait and write of the session then stops with "interrupted".
    pub fn with_interrupt(self, flag: Arc<std::sync::atomic::AtomicBool>, grace: Duration) -> Conn {
        let closing = Arc::downgrade(&self.closing);
        let (dead, abort) = (self.dead.clone(), self.abort.clone());
        let _ = std::thread::Builder::new()
            .name("fsync-repl-interrupt".into())
            .spawn(move || {
                let mut since: Option<std::time::Instant> = None;
                loop {
                    match closing.upgrade() {
                        Some(c) if !c.load(Ordering::Relaxed) => {}
                        _ => return,
                    }
                    if since.is_none() && flag.load(Ordering::Relaxed) {
                        since = Some(std::time::Instant::now());
                    }
                    if since.is_some_and(|t| t.elapsed() >= grace) {
                        let mut d = lock(&dead);
                        if d.is_none() {
                            *d = Some(INTERRUPTED.into());
                        }
                        abort.store(true, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        self
    }

    /// Accepts remote listings of at most `n` entries (and `n` × 256 bytes).
    pub fn with_max_listing(mut self, n: u64) -> Conn {
        self.max_listing = n;
        self
    }

    /// Why the session ended early, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.dead).clone()
    }

    /// Records why the session failed (the first reason wins) and stops every wait of it.
    fn fail(&self, msg: String) -> io::Error {
        let mut d = lock(&self.dead);
        if d.is_none() {
            *d = Some(msg.clone());
        }
        self.abort.store(true, Ordering::Relaxed);
        io_proto(msg)
    }

    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, msg: &ToReceiver, flush: bool) -> io::Result<()> {
        if let Some(d) = self.failure() {
            return Err(io_proto(d));
        }
        let mut w = lock(&self.writer);
        frame::write_frame(&mut *w, msg).map_err(|e| self.fail(e.to_string()))?;
        if flush {
            w.flush()
                .map_err(|e| self.fail(format!("writing to the remote side: {e}")))?;
        }
        Ok(())
    }

    /// Sends a chunk of file data (compressed when that pays and `compress` is set).
    fn send_data(&self, id: u64, offset: u64, data: &[u8], compress: bool) -> io::Result<()> {
        if compress {
            let (data, zstd) = frame::pack(data.to_vec(), true);
            return self.send_req(
                Request::Data {
                    id,
                    offset,
                    zstd,
                    data,
                },
                false,
            );
        }
        if let Some(d) = self.failure() {
            return Err(io_proto(d));
        }
        let mut w = lock(&self.writer);
        frame::write_data_frame(&mut *w, id, offset, false, data)
            .map_err(|e| self.fail(e.to_string()))
    }

    fn send_req(&self, r: Request, flush: bool) -> io::Result<()> {
        self.send(&ToReceiver::Request(r), flush)
    }

    /// Registers a waiter for `id` (before its request is sent).
    fn expect(&self, id: u64) -> Receiver<Reply> {
        let (tx, rx) = mpsc::channel();
        lock(&self.waiters).insert(id, tx);
        rx
    }

    fn wait(&self, id: u64, rx: &Receiver<Reply>) -> io::Result<Reply> {
        match rx.recv_timeout(self.timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.waiters).remove(&id);
                Err(self.fail(format!(
                    "no answer from the remote side for {} s (--timeout)",
                    self.timeout.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(io_proto(self.failure().unwrap_or_else(|| {
                    "the remote side closed the connection".into()
                })))
            }
        }
    }

    /// Sends a request and waits for its single answer.
    fn call(&self, id: u64, r: Request) -> io::Result<Reply> {
        let rx = self.expect(id);
        self.send_req(r, true)?;
        let reply = self.wait(id, &rx);
        lock(&self.waiters).remove(&id);
        reply
    }

    /// Sends a notice (the remote engine's output in `pull`).
    pub fn notice(&self, n: Notice) -> io::Result<()> {
        self.send(&ToReceiver::Notice(n), true)
    }

    /// Sends the session's last notice (the report or the failure), even after the
    /// session failed, as long as the peer still reads: it is how the far side of a pull
    /// tells why it stopped. Never waits for a peer that stopped reading.
    pub fn last_notice(&self, n: Notice) -> io::Result<()> {
        let mut w = lock(&self.writer);
        frame::write_frame(&mut *w, &ToReceiver::Notice(n)).map_err(|e| match e {
            ProtoError::Io(e) => e,
            e => io_proto(e),
        })?;
        w.flush()
    }

    /// Ends the session: closes our side, then ends the remote shell: after a normal
    /// end it has [`EXIT_GRACE`] to exit by itself, after a failure none; then its
    /// process group is terminated (see [`RemoteChild::end`]). Bounded in time.
    pub fn close(&self) -> Option<std::process::ExitStatus> {
        self.closing.store(true, Ordering::Relaxed);
        let failed = self.failure().is_some();
        if failed {
            self.abort.store(true, Ordering::Relaxed);
        }
        {
            // A writer blocked on a full pipe lets go within its timeout, or at once
            // when the session failed (the abort flag).
            let mut w = lock(&self.writer);
            if !failed {
                let _ = w.flush();
            }
            // Replacing the writer drops the pipe to the child, which sees end of input.
            let old = std::mem::replace(&mut *w, BufWriter::new(Box::new(io::sink())));
            let _ = old.into_parts();
        }
        let grace = if failed { Duration::ZERO } else { EXIT_GRACE };
        let status = lock(&self.child).take().and_then(|mut c| c.end(grace));
        self.abort.store(true, Ordering::Relaxed);
        status
    }
}

fn route(
    reader: &mut WireIn,
    waiters: &Mutex<HashMap<u64, Sender<Reply>>>,
    dead: &Mutex<Option<String>>,
    closing: &std::sync::atomic::AtomicBool,
    abort: &std::sync::atomic::AtomicBool,
) {
    let mut buf = Vec::new();
    let why = loop {
        match frame::read_frame::<Reply, _>(reader, &mut buf) {
            Ok(Some(r)) => {
                let tx = lock(waiters).get(&r.id()).cloned();
                match tx {
                    Some(tx) => {
                        let _ = tx.send(r);
                    }
                    None => {
                        break format!("protocol error: an answer to unknown request {}", r.id())
                    }
                }
            }
            Ok(None) if closing.load(Ordering::Relaxed) => {
                lock(waiters).clear();
                return;
            }
            Ok(None) => break "the remote side closed the connection".to_string(),
            Err(_) if closing.load(Ordering::Relaxed) => {
                lock(waiters).clear();
                return;
            }
            Err(e) => break e.to_string(),
        }
    };
    let mut d = lock(dead);
    if d.is_none() {
        *d = Some(why);
    }
    drop(d);
    abort.store(true, Ordering::Relaxed);
    lock(waiters).clear();
}

/// The local form of a receiver's error; its texts come from the peer and are escaped
/// here, before anything can print them.
fn from_wire(e: WireError) -> io::Error {
    match e {
        WireError::NoSpace => io::Error::from(rustix::io::Errno::NOSPC),
        WireError::Interrupted => io::Error::from(rustix::io::Errno::INTR),
        WireError::Corrupt => io::Error::other("received content did not verify"),
        WireError::Os { errno, op, msg } if errno != 0 => {
            let base = io::Error::from_raw_os_error(errno);
            io::Error::new(
                base.kind(),
                format!("{}: {}", escape_str(&op), escape_str(&msg)),
            )
        }
        WireError::Os { op, msg, .. } => {
            io::Error::other(format!("{}: {}", escape_str(&op), escape_str(&msg)))
        }
    }
}

fn put_from_wire(e: WireError) -> PutError {
    match e {
        WireError::NoSpace => PutError::NoSpace,
        WireError::Interrupted => PutError::Interrupted,
        other => PutError::Dest {
            op: "remote write",
            err: from_wire(other),
        },
    }
}

/// A destination on the far side of a [`Conn`].
#[derive(Debug)]
pub struct RemoteDest {
    conn: Arc<Conn>,
    throttle: Arc<Throttle>,
    /// zstd-compress file data and deltas (`--compress`).
    compress: bool,
    /// Whether the far side can set owners (from its listing).
    far_owners: std::sync::atomic::AtomicBool,
}

impl RemoteDest {
    pub fn new(conn: Arc<Conn>, throttle: Arc<Throttle>, compress: bool) -> RemoteDest {
        RemoteDest {
            conn,
            throttle,
            compress,
            far_owners: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Sends a request answered by `Done` and returns its result.
    fn call_done(&self, id: u64, r: Request) -> io::Result<()> {
        match self.conn.call(id, r)? {
            Reply::Done { result, .. } => result.map_err(from_wire),
            other => Err(self
                .conn
                .fail(format!("protocol error: unexpected answer {other:?}"))),
        }
    }

    fn op(&self, op: FsOp) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(id, Request::Op { id, op })
    }

    fn wait_staged(&self, id: u64, rx: &Receiver<Reply>) -> Result<Staged, PutError> {
        let r = self.conn.wait(id, rx);
        lock(&self.conn.waiters).remove(&id);
        match r.map_err(|e| PutError::Dest {
            op: "remote",
            err: e,
        })? {
            Reply::Staged { result: Ok(s), .. } => valid_staged(s).ok_or_else(|| PutError::Dest {
                op: "remote",
                err: self.conn.fail("protocol error: invalid staged name".into()),
            }),
            Reply::Staged {
                result: Err(WireError::Corrupt),
                ..
            } => Err(PutError::SourceChanged),
            Reply::Staged { result: Err(e), .. } => Err(put_from_wire(e)),
            other => Err(PutError::Dest {
                op: "remote",
                err: self
                    .conn
                    .fail(format!("protocol error: unexpected answer {other:?}")),
            }),
        }
    }

    fn send_whole(&self, id: u64, src: &SourceFile) -> Result<u64, PutError> {
        let segments = if src.sparse {
            crate::dest::local::data_segments(&src.file, src.size)?
        } else {
            vec![(0, src.size)]
        };
        let mut sent = 0;
        let mut buf = vec![0u8; DATA_CHUNK.min(src.size.max(1) as usize)];
        for (start, end) in segments {
            let mut off = start;
            while off < end {
                let want = ((end - off) as usize).min(buf.len());
                let n = self
                    .throttle
                    .io(|| src.file.read_at(&mut buf[..want], off))
                    .map_err(PutError::Source)?;
                if n == 0 {
                    return Err(PutError::SourceChanged);
                }
                self.throttle.bytes(n as u64);
                self.conn
                    .send_data(id, off, &buf[..n], self.compress)
                    .map_err(|e| PutError::Dest { op: "send", err: e })?;
                off += n as u64;
                sent += n as u64;
            }
        }
        Ok(sent)
    }

    /// Sends the deltas of every window; returns the stats and the source's hash.
    fn send_deltas(
        &self,
        id: u64,
        src: &SourceFile,
        sigs: &[serde_bytes::ByteBuf],
    ) -> Result<(DataStats, Hash), PutError> {
        let mut stats = DataStats::default();
        let mut h = blake3::Hasher::new();
        let mut out = Vec::new();
        let w = delta::DEFAULT_WINDOW as u64;
        let windows = src.size.div_ceil(w);
        if windows != sigs.len() as u64 {
            return Err(PutError::Dest {
                op: "remote",
                err: self
                    .conn
                    .fail("protocol error: signature count does not match the file".into()),
            });
        }
        for (i, sig) in sigs.iter().enumerate() {
            let range = i as u64 * w..((i as u64 + 1) * w).min(src.size);
            let new = crate::dest::local::map_range(&src.file, &range).map_err(PutError::Source)?;
            self.throttle.bytes(new.len() as u64);
            h.update(&new);
            out.clear();
            delta::diff(sig, &new, &mut out).map_err(|e| PutError::Dest {
                op: "remote",
                err: self.conn.fail(format!(
                    "protocol error: bad signature from the remote side: {e}"
                )),
            })?;
            let s = delta::delta_stats(&out).map_err(|e| PutError::Dest {
                op: "delta",
                err: io::Error::other(e.to_string()),
            })?;
            stats.literal += s.literal;
            stats.matched += s.matched;
            let parts =
                delta::split_delta(&out, frame::DELTA_PART).map_err(|e| PutError::Dest {
                    op: "delta",
                    err: io::Error::other(e.to_string()),
                })?;
            let n = parts.len();
            for (part, piece) in parts.into_iter().enumerate() {
                let (delta, zstd) = frame::pack(piece, self.compress);
                self.conn
                    .send_req(
                        Request::Delta {
                            id,
                            index: i as u32,
                            part: part as u32,
                            last: part + 1 == n,
                            zstd,
                            delta,
                        },
                        false,
                    )
                    .map_err(|e| PutError::Dest { op: "send", err: e })?;
            }
        }
        Ok((stats, *h.finalize().as_bytes()))
    }

    fn stage_once(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        mode: DataMode,
        xattrs: bool,
    ) -> Result<(Staged, DataStats), PutError> {
        let (id, rx, stats) = self.send_file(rel, src, meta, mode, xattrs)?;
        Ok((self.wait_staged(id, &rx)?, stats))
    }

    /// Sends one file (its data or deltas, then its metadata); the far side's `Staged`
    /// answer arrives on the returned receiver.
    fn send_file(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        mode: DataMode,
        xattrs: bool,
    ) -> Result<(u64, Receiver<Reply>, DataStats), PutError> {
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        let want_delta = !Self::sends_whole(src, mode);
        let wmode = if want_delta {
            WireMode::Delta
        } else {
            WireMode::Whole
        };
        let send_err = |e| PutError::Dest { op: "send", err: e };
        self.conn
            .send_req(
                Request::Begin {
                    id,
                    path: rel.to_vec(),
                    size: src.size,
                    mode: wmode,
                },
                want_delta,
            )
            .map_err(send_err)?;
        // From here on, a failure of ours must tell the far side, or its temporary
        // file and slot stay open until the session ends.
        match self.send_body(id, &rx, src, meta, xattrs, want_delta) {
            Ok(stats) => Ok((id, rx, stats)),
            Err(e) => {
                if !matches!(e, PutError::Dest { .. }) {
                    let _ = self.conn.send_req(Request::Abort { id }, true);
                }
                lock(&self.conn.waiters).remove(&id);
                Err(e)
            }
        }
    }

    /// The data and the end of a file whose `Begin` went out.
    fn send_body(
        &self,
        id: u64,
        rx: &Receiver<Reply>,
        src: &SourceFile,
        meta: &SetMeta,
        xattrs: bool,
        want_delta: bool,
    ) -> Result<DataStats, PutError> {
        let send_err = |e| PutError::Dest { op: "send", err: e };
        let mut stats = DataStats::default();
        let mut hash = [0u8; 32];
        let mut whole = !want_delta;
        if want_delta {
            match self.conn.wait(id, rx).map_err(send_err)? {
                Reply::Signature { windows, .. } => {
                    let (s, h) = self.send_deltas(id, src, &windows)?;
                    stats = s;
                    hash = h;
                }
                Reply::NoBase { .. } => whole = true,
                // The far side gave the file up (the abort that follows is a no-op).
                Reply::Staged { result: Err(e), .. } => return Err(put_from_wire(e)),
                other => {
                    return Err(PutError::Dest {
                        op: "remote",
                        err: self
                            .conn
                            .fail(format!("protocol error: unexpected answer {other:?}")),
                    })
                }
            }
        }
        if whole {
            stats.literal = self.send_whole(id, src)?;
        }
        if !src.unchanged().map_err(PutError::Source)? {
            return Err(PutError::SourceChanged);
        }
        let xattrs = if xattrs {
            fsutil::xattrs_of_fd(src.file.as_fd())
                .map_err(PutError::Source)?
                .into_iter()
                .map(|(n, v)| WireXattr(n, v))
                .collect()
        } else {
            Vec::new()
        };
        self.conn
            .send_req(
                Request::End {
                    id,
                    hash,
                    meta: meta.into(),
                    xattrs,
                },
                true,
            )
            .map_err(send_err)?;
        Ok(stats)
    }

    /// Whether `stage_once` would send the file whole (no signature round trip).
    fn sends_whole(src: &SourceFile, mode: DataMode) -> bool {
        !(mode == DataMode::Delta && src.size >= DELTA_MIN && !src.sparse)
    }
}

fn valid_staged(s: WireStaged) -> Option<Staged> {
    let s: Staged = s.into();
    (fsutil::valid_name(&s.name)
        && fsutil::valid_name(&s.tmp)
        && (s.dir.is_empty() || fsutil::valid_rel_path(&s.dir)))
    .then_some(s)
}

impl Destination for RemoteDest {
    fn broken(&self) -> Option<String> {
        self.conn.failure()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn sets_owners(&self) -> bool {
        self.far_owners.load(Ordering::Relaxed)
    }

    fn list(&self, opts: &ScanOptions) -> Result<Scanned, String> {
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        self.conn
            .send_req(
                Request::List {
                    id,
                    xattrs: opts.xattrs,
                    scope: opts.scope.as_ref().map(|s| {
                        s.pairs()
                            .map(|(p, r)| (serde_bytes::ByteBuf::from(p.to_vec()), r))
                            .collect()
                    }),
                },
                true,
            )
            .map_err(|e| e.to_string())?;
        let mut listing = Listing::new();
        // A far side that lists without end is refused before it exhausts this side.
        let (max, mut count, mut bytes) = (self.conn.max_listing, 0u64, 0u64);
        let max_bytes = max.saturating_mul(LISTING_ENTRY_BYTES);
        let (problems, root) = loop {
            match self.conn.wait(id, &rx).map_err(|e| e.to_string())? {
                Reply::Listing { entries, .. } => {
                    for e in entries {
                        count += 1;
                        bytes += ENTRY_OVERHEAD + (e.path.len() + e.target.len()) as u64;
                        if count > max || bytes > max_bytes {
                            let what = match count > max {
                                true => format!("more than {max} entries"),
                                false => format!("more than {max_bytes} bytes of entries"),
                            };
                            return Err(self
                                .conn
                                .fail(format!(
                                    "the remote listing has {what}; refusing it (raise --max-listing if DEST is that large)"
                                ))
                                .to_string());
                        }
                        if opts.scope.as_ref().is_some_and(|s| !s.admits(&e.path)) {
                            return Err(self
                                .conn
                                .fail(format!(
                                    "protocol error: the remote listing has \"{}\", outside the requested part of the tree",
                                    escape(&e.path)
                                ))
                                .to_string());
                        }
                        add_entry(&mut listing, e).map_err(|m| self.conn.fail(m).to_string())?;
                    }
                }
                Reply::ListEnd {
                    problems: p,
                    root,
                    owners,
                    ..
                } => {
                    self.far_owners.store(owners, Ordering::Relaxed);
                    let p: Vec<Problem> = p
                        .into_iter()
                        .map(|(path, what, vanished)| Problem {
                            path: path.into_vec(),
                            // The peer's text: escaped before anything prints it.
                            what: escape_str(&what),
                            vanished,
                        })
                        .collect();
                    break (p, root.map(|r| r.meta()));
                }
                other => {
                    return Err(self
                        .conn
                        .fail(format!("protocol error: unexpected answer {other:?}"))
                        .to_string())
                }
            }
        };
        lock(&self.conn.waiters).remove(&id);
        listing.sort();
        if let Some(i) = (1..listing.len()).find(|&i| listing.path(i) == listing.path(i - 1)) {
            return Err(self
                .conn
                .fail(format!(
                    "protocol error: the remote listing has duplicate entries for \"{}\"",
                    escape(listing.path(i))
                ))
                .to_string());
        }
        Ok(Scanned {
            root,
            listing,
            problems,
            ..Scanned::default()
        })
    }

    fn space(&self) -> io::Result<Space> {
        let id = self.conn.id();
        match self.conn.call(id, Request::Space { id })? {
            Reply::Space {
                space: Some((avail, total, inodes_avail, inodes_total)),
                ..
            } => Ok(Space {
                avail,
                total,
                inodes_avail,
                inodes_total,
            }),
            Reply::Space { space: None, .. } => Err(io::Error::other(
                "the remote side cannot tell its free space",
            )),
            other => Err(self
                .conn
                .fail(format!("protocol error: unexpected answer {other:?}"))),
        }
    }

    fn hash(&self, rel: &[u8]) -> Option<Hash> {
        let id = self.conn.id();
        match self
            .conn
            .call(
                id,
                Request::Hash {
                    id,
                    path: rel.to_vec(),
                },
            )
            .ok()?
        {
            Reply::Hash { hash, .. } => hash,
            _ => None,
        }
    }

    fn remove(&self, rel: &[u8], kind: Kind) -> io::Result<()> {
        self.op(FsOp::Remove {
            path: rel.to_vec(),
            kind: kind.into(),
        })
    }

    fn remove_tree(&self, rel: &[u8]) -> io::Result<()> {
        self.op(FsOp::RemoveTree { path: rel.to_vec() })
    }

    fn mkdir(&self, rel: &[u8], perm: u32) -> io::Result<()> {
        self.op(FsOp::Mkdir {
            path: rel.to_vec(),
            perm,
        })
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        self.op(FsOp::Rename {
            from: from.to_vec(),
            to: to.to_vec(),
        })
    }

    fn stage_file(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        mode: DataMode,
        xattrs: bool,
    ) -> Result<(Staged, DataStats), PutError> {
        match self.stage_once(rel, src, meta, mode, xattrs) {
            // A delta that did not verify on the far side: send whole.
            Err(PutError::SourceChanged)
                if mode == DataMode::Delta && src.unchanged().unwrap_or(false) =>
            {
                self.stage_once(rel, src, meta, DataMode::Whole, xattrs)
            }
            r => r,
        }
    }

    fn start_file(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        mode: DataMode,
        xattrs: bool,
    ) -> Result<Started<'_>, PutError> {
        if !Self::sends_whole(src, mode) {
            // A delta waits for signatures and may be resent whole: keep it in step.
            return self
                .stage_file(rel, src, meta, mode, xattrs)
                .map(|(s, stats)| Started::Done(s, stats));
        }
        // Whole data needs no answer before the next file: many files are in flight.
        let (id, rx, stats) = self.send_file(rel, src, meta, mode, xattrs)?;
        Ok(Started::Waiting {
            stats,
            wait: Box::new(move || self.wait_staged(id, &rx)),
        })
    }

    fn stage_local_copy(
        &self,
        rel: &[u8],
        from: &[u8],
        meta: &SetMeta,
    ) -> Result<Staged, PutError> {
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        self.conn
            .send_req(
                Request::LocalCopy {
                    id,
                    path: rel.to_vec(),
                    from: from.to_vec(),
                    meta: meta.into(),
                },
                true,
            )
            .map_err(|e| PutError::Dest { op: "send", err: e })?;
        self.wait_staged(id, &rx)
    }

    fn commit(&self, staged: &[Staged]) -> io::Result<Vec<(usize, io::Error)>> {
        let id = self.conn.id();
        let n = staged.len();
        let staged = staged.iter().map(WireStaged::from).collect();
        match self.conn.call(id, Request::Commit { id, staged })? {
            Reply::Committed { result, .. } => {
                let failed = result.map_err(from_wire)?;
                // Indices name files of this batch, each once.
                let mut seen = std::collections::HashSet::new();
                failed
                    .into_iter()
                    .map(|(k, e)| {
                        let k = k as usize;
                        if k < n && seen.insert(k) {
                            Ok((k, from_wire(e)))
                        } else {
                            Err(self.conn.fail(
                                "protocol error: a commit failure names no file of the batch"
                                    .into(),
                            ))
                        }
                    })
                    .collect()
            }
            other => Err(self
                .conn
                .fail(format!("protocol error: unexpected answer {other:?}"))),
        }
    }

    fn discard(&self, staged: &Staged) {
        let _ = self.conn.send_req(
            Request::Discard {
                staged: vec![staged.into()],
            },
            true,
        );
    }

    fn link(&self, rel: &[u8], leader: &[u8]) -> io::Result<()> {
        self.op(FsOp::Link {
            path: rel.to_vec(),
            leader: leader.to_vec(),
        })
    }

    fn symlink(&self, rel: &[u8], target: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::Symlink {
            path: rel.to_vec(),
            target: target.to_vec(),
            meta: meta.into(),
        })
    }

    fn mknod(&self, rel: &[u8], meta: &SetMeta, rdev: u64) -> io::Result<()> {
        self.op(FsOp::Mknod {
            path: rel.to_vec(),
            meta: meta.into(),
            rdev,
        })
    }

    fn set_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::SetMeta {
            path: rel.to_vec(),
            meta: meta.into(),
        })
    }

    fn set_dir_xattrs(&self, rel: &[u8], xattrs: &fsutil::Xattrs) -> io::Result<()> {
        let xattrs = xattrs
            .iter()
            .map(|(n, v)| WireXattr(n.clone(), v.clone()))
            .collect();
        self.op(FsOp::SetDirXattrs {
            path: rel.to_vec(),
            xattrs,
        })
    }

    fn set_dir_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::SetDirMeta {
            path: rel.to_vec(),
            meta: meta.into(),
        })
    }

    fn finish(&self) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(id, Request::Finish { id })
    }

    fn source_record(&self) -> io::Result<Option<Vec<u8>>> {
        let id = self.conn.id();
        match self.conn.call(id, Request::SourceRecord { id })? {
            Reply::Record { result, .. } => match result.map_err(from_wire)? {
                Some(r) if r.len() > crate::identity::MAX_RECORD => Err(self
                    .conn
                    .fail("protocol error: the source record is too large".into())),
                r => Ok(r.map(serde_bytes::ByteBuf::into_vec)),
            },
            other => Err(self
                .conn
                .fail(format!("protocol error: unexpected answer {other:?}"))),
        }
    }

    fn set_source_record(&self, record: &[u8]) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(
            id,
            Request::SetSourceRecord {
                id,
                record: record.to_vec(),
            },
        )
    }
}

/// Adds a wire entry to a listing after validating its path.
fn add_entry(l: &mut Listing, e: WireEntry) -> Result<(), String> {
    if !fsutil::valid_rel_path(&e.path) {
        return Err(format!(
            "protocol error: the remote listing has an invalid path \"{}\"",
            escape(&e.path)
        ));
    }
    l.push(&e.path, e.meta());
    Ok(())
}

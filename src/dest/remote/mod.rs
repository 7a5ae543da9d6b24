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
use std::time::{Duration, Instant};

use super::{
    DataMode, DataStats, Destination, FileWrite, ListError, PutError, SetMeta, Space, Staged,
    Started,
};
use crate::delta;
use crate::fsutil;
use crate::plan::Hash;
use crate::protocol::frame::{self, ProtoError, DATA_CHUNK};
use crate::protocol::zstream::{self, ZReader, ZWriter};
use crate::protocol::{
    FsOp, Notice, Reply, Request, ToReceiver, WireError, WireMode, WireStaged, WireXattr,
};
use crate::scan::{Problem, ScanOptions, Scanned};
use crate::source::SourceFile;
use crate::ssh::{RemoteChild, EXIT_GRACE};
use crate::text::{escape, escape_str};
use crate::throttle::Throttle;
use crate::tree::{Kind, Listing};
use crate::wire::{Abort, WireIn, WireOut};

/// Files smaller than this go whole: below it a delta (its signature, at least one
/// 700-byte block of literal data and its commands) costs more bytes than the file.
const DELTA_MIN: u64 = 1024;

/// Entries of a remote listing accepted by default (`--max-listing`): some 4 GiB of
/// listing in memory at most.
pub const MAX_LISTING: u64 = 50_000_000;

/// Memory a listing entry may take on average, with its names, under `--max-listing`.
const LISTING_ENTRY_BYTES: u64 = 256;

/// What an entry of a listing costs in memory, roughly: the entry and its names.
const ENTRY_OVERHEAD: u64 = 96;

/// The failure of a session ended by SIGINT/SIGTERM.
pub const INTERRUPTED: &str = "interrupted";

/// How often a thread waiting for the far side flushes what others wrote meanwhile.
const FLUSH_SLICE: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One protocol session.
pub struct Conn {
    writer: Mutex<ZWriter<BufWriter<Box<dyn Write + Send>>>>,
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
    /// Written since the last flush. Requests are flushed by whoever next waits for an
    /// answer: many small requests then leave in one write, not one pipe write (and one
    /// ssh packet, and a wake-up of every process on the way) each.
    unflushed: std::sync::atomic::AtomicBool,
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
                    route(&mut ZReader::new(reader), &w2, &d2, &c2, &a2);
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
            writer: Mutex::new(ZWriter::new(writer, Some(zstream::LIGHT))),
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
            unflushed: Default::default(),
        })
    }

    /// Bytes sent to and received from the far side so far, both directions of its pipes.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.sent.get(), self.received.get())
    }

    /// The zstd level of what this side writes (before anything was compressed).
    pub fn set_level(&self, level: i32) {
        lock(&self.writer).set_level(Some(level));
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

    /// Fails the session on an answer the request cannot have.
    fn unexpected(&self, answer: &Reply) -> io::Error {
        self.fail(format!("protocol error: unexpected answer {answer:?}"))
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
            self.unflushed.store(false, Ordering::Relaxed);
            w.flush()
                .map_err(|e| self.fail(format!("writing to the remote side: {e}")))?;
        } else {
            self.unflushed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Flushes what was written since the last flush. Every thread that wrote calls it
    /// before it blocks (on an answer or anything else): then what the far side is to
    /// answer has reached it whenever this side waits.
    pub(super) fn flush_pending(&self) -> io::Result<()> {
        // Set under the writer's lock after each write: seen here, that write is
        // in the buffer once the lock is ours.
        if !self.unflushed.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        lock(&self.writer)
            .flush()
            .map_err(|e| self.fail(format!("writing to the remote side: {e}")))
    }

    /// Sends a chunk of file data, in the compressed stream when `compress` is set,
    /// else raw beside it.
    fn send_data(&self, id: u64, offset: u64, data: &[u8], compress: bool) -> io::Result<()> {
        if let Some(d) = self.failure() {
            return Err(io_proto(d));
        }
        let mut w = lock(&self.writer);
        let r = match compress {
            true => frame::write_data_frame(&mut *w, id, offset, false, data),
            false => w
                .raw()
                .map_err(ProtoError::Io)
                .and_then(|raw| frame::write_data_frame(raw, id, offset, false, data)),
        };
        self.unflushed.store(true, Ordering::Relaxed);
        r.map_err(|e| self.fail(e.to_string()))
    }

    /// Sends one part of a window's delta, placed like [`Conn::send_data`]'s data.
    fn send_delta(
        &self,
        (id, index, part, last): (u64, u32, u32, bool),
        delta: Vec<u8>,
        compress: bool,
    ) -> io::Result<()> {
        if let Some(d) = self.failure() {
            return Err(io_proto(d));
        }
        let mut w = lock(&self.writer);
        let msg = ToReceiver::Request(Request::Delta {
            id,
            index,
            part,
            last,
            zstd: false,
            delta,
        });
        let r = match compress {
            true => frame::write_frame(&mut *w, &msg),
            false => w
                .raw()
                .map_err(ProtoError::Io)
                .and_then(|raw| frame::write_frame(raw, &msg)),
        };
        self.unflushed.store(true, Ordering::Relaxed);
        r.map_err(|e| self.fail(e.to_string()))
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
        // An answer already here needs nothing sent; before waiting, all must go.
        if let Ok(r) = rx.try_recv() {
            return Ok(r);
        }
        let started = Instant::now();
        let got = loop {
            // Again and again while waiting: another thread may have left part of a
            // frame in the buffer and gone idle, and the far side, waiting for the rest
            // of it, would hold this answer until the timeout.
            self.flush_pending()?;
            let left = self.timeout.saturating_sub(started.elapsed());
            match rx.recv_timeout(left.min(FLUSH_SLICE)) {
                Err(RecvTimeoutError::Timeout) if !left.is_zero() => continue,
                other => break other,
            }
        };
        match got {
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
        self.send_req(r, false)?;
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
            let sink: Box<dyn Write + Send> = Box::new(io::sink());
            let old = std::mem::replace(&mut *w, ZWriter::new(BufWriter::new(sink), None));
            let _ = old.into_inner().into_parts();
        }
        let grace = if failed { Duration::ZERO } else { EXIT_GRACE };
        let status = lock(&self.child).take().and_then(|mut c| c.end(grace));
        self.abort.store(true, Ordering::Relaxed);
        status
    }
}

fn route(
    reader: &mut impl io::Read,
    waiters: &Mutex<HashMap<u64, Sender<Reply>>>,
    dead: &Mutex<Option<String>>,
    closing: &std::sync::atomic::AtomicBool,
    abort: &std::sync::atomic::AtomicBool,
) {
    // Were this thread to die of a bug, nothing would answer the waiting threads, and
    // each would wait out its own --timeout in turn: the session fails at once instead.
    let _bug = FailOnPanic {
        waiters,
        dead,
        abort,
    };
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

/// Fails the session when the router unwinds from a panic: records why, stops every
/// read and write of it, and lets every waiting thread go (their answers cannot come).
struct FailOnPanic<'a> {
    waiters: &'a Mutex<HashMap<u64, Sender<Reply>>>,
    dead: &'a Mutex<Option<String>>,
    abort: &'a std::sync::atomic::AtomicBool,
}

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut d = lock(self.dead);
        if d.is_none() {
            *d = Some("internal error: the reader of the remote side's answers failed".into());
        }
        drop(d);
        self.abort.store(true, Ordering::Relaxed);
        lock(self.waiters).clear();
    }
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
    /// Compress the data of large files too (`--compress`).
    compress: bool,
    /// Whether the far side can set owners (from its listing).
    far_owners: std::sync::atomic::AtomicBool,
    /// The workers sending small files' deltas.
    pipe: pipe::Pipe,
}

impl RemoteDest {
    /// Requests, small files and deltas are always compressed (lightly); with
    /// `compress`, all file data is, at a higher level. Data of already compressed
    /// types never is.
    pub fn new(conn: Arc<Conn>, throttle: Arc<Throttle>, compress: bool) -> RemoteDest {
        conn.set_level(match compress {
            true => zstream::STRONG,
            false => zstream::LIGHT,
        });
        RemoteDest {
            conn,
            throttle,
            compress,
            far_owners: std::sync::atomic::AtomicBool::new(false),
            pipe: pipe::Pipe::default(),
        }
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Sends a request answered by `Done` and returns its result.
    fn call_done(&self, id: u64, r: Request) -> io::Result<()> {
        match self.conn.call(id, r)? {
            Reply::Done { result, .. } => result.map_err(from_wire),
            other => Err(self.conn.unexpected(&other)),
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
                err: self.conn.unexpected(&other),
            }),
        }
    }
}

fn valid_staged(s: WireStaged) -> Option<Staged> {
    let s: Staged = s.into();
    (fsutil::valid_name(&s.name)
        && fsutil::valid_name(&s.tmp)
        && (s.dir.is_empty() || fsutil::valid_rel_path(&s.dir)))
    .then_some(s)
}

mod dest;
mod listing;
mod pipe;
mod send;

/// A destination connected to an in-process far side, for the protocol's unit tests.
#[cfg(test)]
mod testing {
    use super::*;
    use std::fs::File;

    /// A [`RemoteDest`] whose far side is `peer`, run on a thread with its input and
    /// output pipes; join the handle for what the peer returns.
    pub(super) fn connected<T: Send + 'static>(
        peer: impl FnOnce(File, File) -> T + Send + 'static,
    ) -> (RemoteDest, std::thread::JoinHandle<T>) {
        let (to_peer_r, to_peer_w) = rustix::pipe::pipe().unwrap();
        let (from_peer_r, from_peer_w) = rustix::pipe::pipe().unwrap();
        let peer = std::thread::spawn(move || peer(File::from(to_peer_r), File::from(from_peer_w)));
        let abort = Abort::default();
        let t = Duration::from_secs(30);
        let conn = Conn::start(
            WireIn::new(from_peer_r, Some(t), abort.clone(), "silent".into()),
            WireOut::new(to_peer_w, Some(t), abort.clone(), "stalled".into()),
            abort,
            None,
            t,
            t,
        )
        .unwrap();
        let dest = RemoteDest::new(Arc::new(conn), Arc::new(Throttle::new(None, None)), false);
        (dest, peer)
    }

    /// Metadata for a test file.
    pub(super) fn file_meta() -> SetMeta {
        SetMeta {
            kind: Kind::File,
            perm: 0o644,
            owner: None,
            mtime: 1,
            mtime_nsec: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_router_that_dies_of_a_bug_fails_the_session_and_frees_every_waiter() {
        struct Bug;
        impl io::Read for Bug {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("a bug while reading answers")
            }
        }
        let waiters: Arc<Mutex<HashMap<u64, Sender<Reply>>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        lock(&waiters).insert(7, tx);
        let dead: Arc<Mutex<Option<String>>> = Arc::default();
        let abort = Abort::default();
        let (w, d, a) = (waiters.clone(), dead.clone(), abort.clone());
        let router =
            std::thread::spawn(move || route(&mut Bug, &w, &d, &AtomicBool::new(false), &a));
        assert!(router.join().is_err(), "the reader's panic ends the router");
        // Without the guard the sender stays registered and this waits forever.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(lock(&dead)
            .as_deref()
            .is_some_and(|d| d.contains("internal error")));
        assert!(abort.load(Ordering::Relaxed));
    }
}

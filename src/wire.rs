//! The byte streams of a remote session: reads and writes that never wait forever.
//!
//! A peer that stops talking and a peer that stops reading are both silent peers
//! (`--timeout`). [`WireIn`] waits for input with `poll` before each read, and
//! [`WireOut`] writes without blocking and waits with `poll` when the pipe is full, so each
//! gives up after its timeout without data moving, with an error that names the timeout.
//! Both also stop within a fraction of a second once the session is aborted (a shared
//! flag), so a session that failed on one thread never leaves another blocked in I/O.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

/// How often a waiting read or write looks at the abort flag.
const SLICE: Duration = Duration::from_millis(200);

/// A session's abort flag: once set, nothing of the session waits any more.
pub type Abort = Arc<AtomicBool>;

/// Waits until `fd` is ready for `events`. `Ok(false)`: `timeout` passed first.
fn wait_ready(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
    abort: &AtomicBool,
) -> io::Result<bool> {
    let start = Instant::now();
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err(io::Error::other("the session was ended"));
        }
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        if left == Some(Duration::ZERO) {
            return Ok(false);
        }
        let slice = left.map_or(SLICE, |l| l.min(SLICE));
        match poll_one(fd, events, slice.as_millis().max(1) as libc::c_int) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(true) => return Ok(true),
            Ok(false) => {}
        }
    }
}

/// One poll of `fd` for `events`, waiting at most `ms` milliseconds. Readiness, hang-up
/// and errors all count as ready: the read or write that follows reports them.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    ms: libc::c_int,
) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        n => Ok(n > 0),
    }
}

fn timed_out(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, msg.to_string())
}

/// Bytes a [`WireIn`] reads ahead (frame headers and small frames cost no system call).
const READ_AHEAD: usize = 64 << 10;

/// Bytes that crossed one direction of a session's pipe, as the kernel took them:
/// what `--json` reports as `wire_bytes_sent` and `wire_bytes_received`.
#[derive(Debug, Clone, Default)]
pub struct Counter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Counter {
    fn add(&self, n: usize) {
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bytes so far.
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The reading end of a session, buffered.
#[derive(Debug)]
pub struct WireIn {
    count: Counter,
    fd: OwnedFd,
    timeout: Option<Duration>,
    abort: Abort,
    silent: String,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
}

impl WireIn {
    /// Reads from `fd`, giving up after `timeout` without input (`None`: never) with the
    /// error `silent`.
    pub fn new(fd: OwnedFd, timeout: Option<Duration>, abort: Abort, silent: String) -> WireIn {
        WireIn {
            count: Counter::default(),
            fd,
            timeout,
            abort,
            silent,
            buf: vec![0; READ_AHEAD].into_boxed_slice(),
            pos: 0,
            end: 0,
        }
    }

    /// One read from the descriptor, waiting at most the timeout for input.
    fn read_fd(&mut self, mut into: Option<&mut [u8]>) -> io::Result<usize> {
        loop {
            if !wait_ready(self.fd.as_fd(), libc::POLLIN, self.timeout, &self.abort)? {
                return Err(timed_out(&self.silent));
            }
            let r = match into {
                Some(ref mut out) => rustix::io::read(&self.fd, &mut **out),
                None => rustix::io::read(&self.fd, &mut self.buf[..]),
            };
            match r {
                Ok(n) => {
                    self.count.add(n);
                    return Ok(n);
                }
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The count of bytes read from the pipe (shared: it goes on counting).
    pub fn counter(&self) -> Counter {
        self.count.clone()
    }

    /// Whether a read would not wait: input is buffered or ready on the descriptor.
    pub fn pending(&self) -> bool {
        // A failed poll says "pending" too: the read that follows reports it.
        self.pos < self.end || poll_one(self.fd.as_fd(), libc::POLLIN, 0).unwrap_or(true)
    }

    /// Runs `f` with another timeout and message (the handshake's).
    pub fn with_deadline<T>(
        &mut self,
        timeout: Duration,
        silent: String,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let old_t = self.timeout.replace(timeout);
        let old_s = std::mem::replace(&mut self.silent, silent);
        let r = f(self);
        self.timeout = old_t;
        self.silent = old_s;
        r
    }
}

impl Read for WireIn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            if out.len() >= self.buf.len() {
                // Large reads (file data) go straight to the caller.
                return self.read_fd(Some(out));
            }
            self.end = self.read_fd(None)?;
            self.pos = 0;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The writing end of a session: non-blocking underneath.
#[derive(Debug)]
pub struct WireOut {
    count: Counter,
    fd: OwnedFd,
    timeout: Option<Duration>,
    abort: Abort,
    stalled: String,
    /// The descriptor's flags before this made it non-blocking (restored on drop).
    restore: Option<OFlags>,
}

impl WireOut {
    /// Writes to `fd`, giving up after `timeout` without the peer reading anything
    /// (`None`: never) with the error `stalled`.
    pub fn new(fd: OwnedFd, timeout: Option<Duration>, abort: Abort, stalled: String) -> WireOut {
        let restore = rfs::fcntl_getfl(&fd)
            .ok()
            .filter(|f| !f.contains(OFlags::NONBLOCK))
            .filter(|f| rfs::fcntl_setfl(&fd, *f | OFlags::NONBLOCK).is_ok());
        WireOut {
            count: Counter::default(),
            fd,
            timeout,
            abort,
            stalled,
            restore,
        }
    }
}

impl WireOut {
    /// The count of bytes written to the pipe (shared: it goes on counting).
    pub fn counter(&self) -> Counter {
        self.count.clone()
    }
}

impl Write for WireOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::io::write(&self.fd, buf) {
                Ok(n) => {
                    self.count.add(n);
                    return Ok(n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {
                    if !wait_ready(self.fd.as_fd(), libc::POLLOUT, self.timeout, &self.abort)? {
                        return Err(timed_out(&self.stalled));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for WireOut {
    fn drop(&mut self) {
        if let Some(f) = self.restore {
            let _ = rfs::fcntl_setfl(&self.fd, f);
        }
    }
}

/// This process's standard input as a descriptor of its own.
pub fn stdin() -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(
        std::io::stdin().as_fd(),
        3,
    )?)
}

/// This process's standard output as a descriptor of its own. A pipe is opened anew
/// (through /proc), so making it non-blocking touches no descriptor shared with another
/// process; anything else is duplicated.
pub fn stdout() -> io::Result<OwnedFd> {
    let stdout = std::io::stdout();
    let out = stdout.as_fd();
    let is_pipe =
        rfs::fstat(out).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo);
    if is_pipe {
        // Non-blocking: opening a pipe's write end waits for a reader otherwise.
        if let Ok(fd) = rfs::open(
            "/proc/self/fd/1",
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            return Ok(fd);
        }
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(out, 3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn a_silent_writer_times_out_the_reader() {
        let (r, _w) = pipe();
        let abort = Abort::default();
        let t = Duration::from_millis(300);
        let mut input = WireIn::new(r, Some(t), abort, "silent".into());
        let start = Instant::now();
        let e = input.read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "silent");
        assert!(start.elapsed() >= t);
    }

    #[test]
    fn a_reader_that_stops_reading_times_out_the_writer() {
        let (_r, w) = pipe();
        let abort = Abort::default();
        let t = Duration::from_millis(300);
        let mut out = WireOut::new(w, Some(t), abort, "stalled".into());
        let chunk = vec![7u8; 1 << 16];
        let e = loop {
            if let Err(e) = out.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "stalled");
    }

    #[test]
    fn an_abort_ends_a_wait_at_once() {
        let (r, _w) = pipe();
        let abort = Abort::default();
        let mut input = WireIn::new(r, None, abort.clone(), "silent".into());
        let t = std::thread::spawn(move || input.read(&mut [0; 8]));
        std::thread::sleep(Duration::from_millis(50));
        abort.store(true, Ordering::Relaxed);
        let r = t.join().unwrap();
        assert!(r.is_err());
    }

    #[test]
    fn small_and_large_reads_see_every_byte_in_order() {
        let (r, w) = pipe();
        let abort = Abort::default();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            let abort = abort.clone();
            std::thread::spawn(move || {
                let mut out = WireOut::new(w, None, abort, String::new());
                out.write_all(&data).unwrap();
            })
        };
        let mut input = WireIn::new(r, Some(Duration::from_secs(20)), abort, String::new());
        let mut got = vec![0u8; 3];
        input.read_exact(&mut got).unwrap();
        let mut big = vec![0u8; 200_000];
        input.read_exact(&mut big).unwrap();
        got.extend_from_slice(&big);
        input.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn data_and_end_of_input_pass() {
        let (r, w) = pipe();
        let abort = Abort::default();
        let mut out = WireOut::new(w, None, abort.clone(), String::new());
        out.write_all(b"hello").unwrap();
        drop(out);
        let mut input = WireIn::new(r, Some(Duration::from_secs(5)), abort, String::new());
        let mut s = Vec::new();
        input.read_to_end(&mut s).unwrap();
        assert_eq!(s, b"hello");
    }
}

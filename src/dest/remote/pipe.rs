//! The delta workers: small files' deltas computed and sent as their signatures arrive,
//! apart from the threads that wait for the far side's answers.
//!
//! A small file's `Begin` goes out when the transfer starts it; its signature comes back
//! in order with the others. Were the thread that collects the file also to compute and
//! send its delta, then wait for the far side's `Staged`, every collecting thread would
//! spend a round trip per file and the far side would sit idle between them. Here a
//! couple of workers take the files in the order they were started, send each delta and
//! `End` at once and hand the file back; the collector only waits for its answer, which
//! the far side writes while the next deltas are already on their way.

use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};

use super::send::Small;
use super::*;

/// Threads computing and sending small files' deltas.
const WORKERS: usize = 2;

/// A small file whose `Begin` went out: the worker waits for its signature on `rx`,
/// sends its delta (or whole data) and `End`, and hands back what the collector needs.
pub(super) struct Job {
    pub id: u64,
    pub rx: Receiver<Reply>,
    pub small: Small,
    pub done: mpsc::SyncSender<Sent>,
}

/// A job handed back: its answer channel, the file, and what sending it cost.
pub(super) type Sent = (Receiver<Reply>, Small, Result<DataStats, PutError>);

/// The queue of the delta workers, started with the first small file.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// Jobs the workers finished: a collector waiting longer than the timeout for a
    /// file behind many others keeps waiting while this moves.
    finished: Arc<AtomicU64>,
}

impl RemoteDest {
    /// Hands `job` to the delta workers; gives it back when none can be started.
    pub(super) fn enqueue(&self, job: Job) -> Result<(), Box<Job>> {
        let mut q = lock(&self.pipe.queue);
        if q.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..WORKERS {
                let me = self.worker_twin();
                let (rx, finished) = (rx.clone(), self.pipe.finished.clone());
                let started = std::thread::Builder::new()
                    .name("fsync-repl-delta".into())
                    .spawn(move || me.work(&rx, &finished));
                if started.is_err() {
                    break;
                }
            }
            // With no worker started, `rx` is gone and the send below fails.
            *q = Some(tx);
        }
        let tx = q.as_ref().expect("set above");
        tx.send(job).map_err(|e| Box::new(e.0))
    }

    /// What a worker needs of this destination: the session and its settings.
    fn worker_twin(&self) -> RemoteDest {
        RemoteDest {
            conn: self.conn.clone(),
            throttle: self.throttle.clone(),
            compress: self.compress,
            far_owners: std::sync::atomic::AtomicBool::new(false),
            pipe: Pipe::default(),
        }
    }

    /// A worker's loop: until the queue closes (its destination is dropped).
    fn work(&self, jobs: &Mutex<mpsc::Receiver<Job>>, finished: &AtomicU64) {
        loop {
            // What this worker sent goes out before it waits, for the queue or for
            // another worker waiting on it: every thread that waits for an answer may be
            // waiting for one of these. (A failed flush failed the session, which the
            // next send says.)
            let job = {
                let q = match jobs.try_lock() {
                    Ok(q) => q,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        let _ = self.conn.flush_pending();
                        lock(jobs)
                    }
                };
                match q.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => {
                        let _ = self.conn.flush_pending();
                        match q.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    }
                }
            };
            let sent = self.send_small(job.id, &job.rx, &job.small);
            finished.fetch_add(1, Ordering::Relaxed);
            // A collector that gave up is no reason to stop the others.
            let _ = job.done.send((job.rx, job.small, sent));
        }
    }

    /// Waits for a job handed to the workers, while they finish others within the
    /// session's timeout (each of their waits for the far side has that timeout too).
    pub(super) fn collect(&self, done: &mpsc::Receiver<Sent>) -> Result<Sent, PutError> {
        let mut seen = self.pipe.finished.load(Ordering::Relaxed);
        let mut since = std::time::Instant::now();
        let waited = loop {
            // Flushed again and again, as in `Conn::wait`.
            let _ = self.conn.flush_pending();
            match done.recv_timeout(FLUSH_SLICE) {
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.pipe.finished.load(Ordering::Relaxed);
                    if now != seen {
                        (seen, since) = (now, std::time::Instant::now());
                    } else if since.elapsed() >= self.conn.timeout {
                        break Err(RecvTimeoutError::Timeout);
                    }
                }
                other => break other,
            }
        };
        match waited {
            Ok(s) => Ok(s),
            Err(RecvTimeoutError::Timeout) => Err(PutError::Dest {
                op: "remote",
                err: self.conn.fail(format!(
                    "no answer from the remote side for {} s (--timeout)",
                    self.conn.timeout.as_secs()
                )),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(PutError::Dest {
                op: "send",
                err: io_proto(
                    self.conn
                        .failure()
                        .unwrap_or_else(|| "a delta worker stopped".into()),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{read_frame, read_hello, write_frame, write_hello};
    use crate::protocol::{ToReceiver, WireStaged};
    use std::fs::File;

    /// A far side that answers every `Begin` with a signature of `basis` but answers no
    /// `End` before it has the `End` of all `files`: it returns the delta bytes it got.
    fn holding_peer(mut input: File, mut output: File, basis: Vec<u8>, files: usize) -> usize {
        write_hello(&mut output).unwrap();
        read_hello(&mut input).unwrap();
        let mut input = crate::protocol::zstream::ZReader::new(input);
        let (mut buf, mut ends, mut deltas) = (Vec::new(), Vec::new(), 0);
        while let Some(ToReceiver::Request(r)) = read_frame(&mut input, &mut buf).unwrap() {
            match r {
                Request::Begin { id, size, .. } => {
                    let p = delta::SigParams::for_len(size);
                    let sig = delta::signature(&basis, p).unwrap();
                    let reply = Reply::Signature {
                        id,
                        block_size: p.block_size,
                        windows: vec![serde_bytes::ByteBuf::from(sig)],
                    };
                    write_frame(&mut output, &reply).unwrap();
                    io::Write::flush(&mut output).unwrap();
                }
                Request::Delta { delta, .. } => deltas += delta.len(),
                Request::End { id, .. } => {
                    ends.push(id);
                    if ends.len() == files {
                        for &id in &ends {
                            let name = format!("f{id}").into_bytes();
                            let result = Ok(WireStaged {
                                dir: Vec::new(),
                                tmp: [b".", &name[..], b".tmp"].concat(),
                                name,
                            });
                            write_frame(&mut output, &Reply::Staged { id, result }).unwrap();
                        }
                        io::Write::flush(&mut output).unwrap();
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        deltas
    }

    #[test]
    fn a_waiting_thread_sends_what_another_wrote_after_it_began_to_wait() {
        // The far side answers the first request only once the second has come. The
        // second is written after the first thread began to wait, by a thread that
        // then waits for nothing: were the waiter to flush only once, before waiting,
        // the session would sit until its timeout.
        let (dest, peer) = super::super::testing::connected(|mut input, mut output| {
            write_hello(&mut output).unwrap();
            read_hello(&mut input).unwrap();
            let mut input = crate::protocol::zstream::ZReader::new(input);
            let (mut buf, mut ids) = (Vec::new(), Vec::new());
            while ids.len() < 2 {
                match read_frame::<ToReceiver, _>(&mut input, &mut buf).unwrap() {
                    Some(ToReceiver::Request(Request::Space { id })) => ids.push(id),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let reply = Reply::Space {
                id: ids[0],
                space: None,
            };
            write_frame(&mut output, &reply).unwrap();
            io::Write::flush(&mut output).unwrap();
            ids
        });
        let conn = dest.conn().clone();
        let first = conn.id();
        let rx = conn.expect(first);
        conn.send_req(Request::Space { id: first }, false).unwrap();
        let waiter = {
            let conn = conn.clone();
            std::thread::spawn(move || conn.wait(first, &rx))
        };
        // Ordering only: let the waiter flush and begin to wait first.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = conn.id();
        conn.send_req(Request::Space { id: second }, false).unwrap();
        let answer = waiter.join().unwrap();
        assert!(
            matches!(answer, Ok(Reply::Space { id, .. }) if id == first),
            "{answer:?}"
        );
        conn.close();
        assert_eq!(peer.join().unwrap(), vec![first, second]);
    }

    #[test]
    fn small_deltas_all_go_out_before_any_answer_is_awaited() {
        // The collector below waits for one file at a time, as a transfer with a
        // single thread would: only workers that send every delta without waiting for
        // the answers let the far side answer at all.
        let files = 40;
        let basis: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut sources = Vec::new();
        for k in 0..files {
            let mut new = basis.clone();
            new[k * 500..k * 500 + 50].fill(b'x');
            let path = dir.path().join(format!("f{k}"));
            std::fs::write(&path, &new).unwrap();
            let file = File::open(&path).unwrap();
            let st = rustix::fs::fstat(&file).unwrap();
            sources.push(SourceFile::from_parts(file, &st));
        }
        let b = basis.clone();
        let (dest, peer) =
            super::super::testing::connected(move |i, o| holding_peer(i, o, b, files));
        let meta = super::super::testing::file_meta();
        let started: Vec<Started<'_>> = sources
            .iter()
            .enumerate()
            .map(|(k, src)| {
                assert!(RemoteDest::small_delta(src, DataMode::Delta));
                let rel = format!("f{k}").into_bytes();
                let f = FileWrite {
                    rel: &rel,
                    src,
                    meta: &meta,
                    mode: DataMode::Delta,
                    xattrs: false,
                };
                dest.start_file(&mut Default::default(), f).unwrap()
            })
            .collect();
        let mut literal = 0;
        for s in started {
            let (staged, stats) = s.finish().expect("answered once every delta was in");
            assert!(staged.name.starts_with(b"f"));
            assert_eq!(stats.literal + stats.matched, 30_000);
            literal += stats.literal;
        }
        assert!(literal < 40 * 2_000, "deltas, not whole files: {literal}");
        dest.conn().close();
        assert!(peer.join().unwrap() > 0);
    }
}

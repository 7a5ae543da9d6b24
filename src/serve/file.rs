//! Receiving one file: its temporary file, whole data or deltas against the current
//! file, and the BLAKE3 check before it is staged.

use super::*;
use crate::dest::local::partial::{Ident, Resumed};

/// Files up to this size get a short strong hash per block in their signature.
const SHORT_SUMS_MAX: u64 = 1 << 20;

/// A signature's parameters for a file of `len` bytes: rsync's block size (about the
/// square root of the length, at least 700 bytes) and, up to [`SHORT_SUMS_MAX`], rsync's
/// strong-hash length (2 or 3 bytes beside the 4-byte rolling sum, where the default
/// keeps 8): a block taken for another by mistake only costs a resend, as the rebuilt
/// file is checked against the sender's BLAKE3 and sent again whole when it differs.
pub(super) fn sig_params(len: u64) -> delta::SigParams {
    let mut p = delta::SigParams::for_len(len);
    if len <= SHORT_SUMS_MAX {
        // rsync's sum_sizes_sqroot: 10 bits of bias, 2 per bit of the length, less one
        // per bit of the block size, less the rolling sum's 32, rounded up to bytes.
        let bits = |mut v: u64| {
            let mut n = 0i64;
            while v > 1 {
                v >>= 1;
                n += 1;
            }
            n
        };
        let b = (10 + 2 * bits(len) - bits(u64::from(p.block_size))).max(0);
        p.strong_len = ((b + 1 - 32 + 7) / 8).clamp(2, delta::DEFAULT_STRONG_LEN as i64) as u32;
    }
    p
}

/// The most of a delta's output gathered before it is written.
const APPLY_BUFFER: usize = 256 << 10;

/// A basis above this size takes a while to read and sign (and any basis may wait on
/// `--bwlimit`): the answers gathered before it go out first.
const SLOW_BASIS: u64 = 1 << 20;

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

impl Receiver<'_> {
    pub(super) fn begin(
        &mut self,
        id: u64,
        path: Vec<u8>,
        size: u64,
        mode: WireMode,
    ) -> Result<(), ProtoError> {
        if !self.announced(id, size)? {
            return Ok(());
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
        let inc = Incoming::new(temp, size);
        if mode != WireMode::Delta {
            self.admit(id, inc);
            return Ok(());
        }
        let old = self.dest.open_old(&path).filter(|(_, len)| *len > 0);
        self.offer_basis(id, inc, old)
    }

    /// A large file kept as a partial file if its transfer is cut: answered with the
    /// signatures of what a cut transfer of the same source file kept, or `NoBase`.
    pub(super) fn resume(
        &mut self,
        id: u64,
        path: Vec<u8>,
        ident: Ident,
    ) -> Result<(), ProtoError> {
        let size = ident.size;
        if !self.announced(id, size)? {
            return Ok(());
        }
        let (temp, resumed) = match self.dest.begin_partial(&path, ident, false) {
            Ok(Some(x)) => x,
            Ok(None) => {
                // No partial file for it: an ordinary whole transfer.
                self.begin(id, path, size, WireMode::Whole)?;
                return match self.files.contains_key(&id) {
                    true => self.reply(Reply::NoBase { id }),
                    false => Ok(()), // answered with its failure
                };
            }
            Err(e) => {
                return self.reply(Reply::Staged {
                    id,
                    result: Err(put_error(e)),
                })
            }
        };
        let basis = match resumed {
            Resumed::Basis(file, len) => Some((file, len)),
            _ => None,
        };
        self.offer_basis(id, Incoming::new(temp, size), basis)
    }

    /// Checks a file's announcement (bad ones end the session) and the receiver's own
    /// reserve (invariant 5, whatever the sender planned): `false` when the file was
    /// answered with no space.
    fn announced(&mut self, id: u64, size: u64) -> Result<bool, ProtoError> {
        if self.files.contains_key(&id) {
            return Err(bad(format!("file id {id} announced twice")));
        }
        if self.files.len() >= MAX_OPEN_FILES {
            return Err(bad("too many files in flight"));
        }
        if size > MAX_FILE_SIZE {
            return Err(bad(format!("announced file size {size} is absurd")));
        }
        if !self.fits(size) {
            self.reply(Reply::Staged {
                id,
                result: Err(WireError::NoSpace),
            })?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Takes file `id` in: against `basis` (a file and its length) when there is one
    /// to offer, answered with its signatures window by window; otherwise whole, with
    /// `NoBase`.
    fn offer_basis(
        &mut self,
        id: u64,
        mut inc: Incoming,
        basis: Option<(crate::cache::Tracked, u64)>,
    ) -> Result<(), ProtoError> {
        let size = inc.size;
        let windows = size.div_ceil(delta::DEFAULT_WINDOW as u64);
        let Some((file, old_len)) = basis.filter(|_| windows <= MAX_SIG_WINDOWS && size > 0) else {
            self.admit(id, inc);
            return self.reply(Reply::NoBase { id });
        };
        let slow = old_len > SLOW_BASIS || self.dest.throttle().rate().is_some();
        if slow && self.unflushed.is_some() {
            self.flush()?;
        }
        let params = sig_params(size.min(delta::DEFAULT_WINDOW as u64));
        let mut sigs = Vec::new();
        for w in delta::windows(size, old_len, delta::DEFAULT_WINDOW) {
            let Ok(base) = map_range(&file, &w.base) else {
                // The basis shrank or went unreadable since it was opened: whole, then.
                self.admit(id, inc);
                return self.reply(Reply::NoBase { id });
            };
            self.dest.throttle().bytes(base.len() as u64);
            let sig = delta::signature(&base, params).map_err(|e| bad(e.to_string()))?;
            sigs.push(serde_bytes::ByteBuf::from(sig));
        }
        inc.mode = WireMode::Delta;
        inc.windows = sigs.len() as u32;
        inc.old = Some((file, old_len));
        self.admit(id, inc);
        self.reply(Reply::Signature {
            id,
            block_size: params.block_size,
            windows: sigs,
        })
    }

    pub(super) fn data(&mut self, id: u64, offset: u64, data: &[u8]) -> Result<(), ProtoError> {
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
        let owed = f.owes();
        f.written = f.written.max(end);
        self.owed = self.owed - owed + f.owes();
        Ok(())
    }

    pub(super) fn fail(&mut self, id: u64, e: PutError) -> Result<(), ProtoError> {
        if let Some(f) = self.take(id) {
            self.dest.fail_temp(f.temp);
        }
        self.reply(Reply::Staged {
            id,
            result: Err(put_error(e)),
        })
    }

    pub(super) fn delta(
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
        let base = match map_range(old, &w.base) {
            Ok(b) => b,
            // The basis shrank under the transfer: this file fails, not the session.
            Err(err) => return self.fail(id, PutError::Dest { op: "read", err }),
        };
        let want = (w.new.end - w.new.start) as usize;
        if part == 0 {
            f.window_start = f.written;
        }
        // What the window may still produce.
        let room = (f.window_start + want as u64).saturating_sub(f.written) as usize;
        let owed = f.owes();
        // A delta is many short copies and literals: written in a few large writes.
        let mut wr = BufWriter::with_capacity(
            APPLY_BUFFER.min(room.max(1)),
            TempWriter {
                dest: self.dest,
                temp: &f.temp,
                offset: &mut f.written,
                hasher: &mut f.hasher,
            },
        );
        let applied = delta::apply(&base, delta_bytes, &mut wr, room)
            .and_then(|s| wr.flush().map(|()| s).map_err(delta::DeltaError::Io));
        // What a failed write left buffered is dropped, not written.
        drop(wr.into_parts());
        if let Ok(st) = &applied {
            // The matched blocks were read from the basis again: disk work like the rest.
            self.dest.throttle().bytes(st.matched);
        }
        self.owed = self.owed - owed + f.owes();
        match applied {
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

    pub(super) fn end(
        &mut self,
        id: u64,
        hash: [u8; 32],
        meta: SetMeta,
        xattrs: Vec<WireXattr>,
    ) -> Result<(), ProtoError> {
        let Some(f) = self.take(id) else {
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
}

#[cfg(test)]
mod tests {
    use super::sig_params;
    use super::*;
    use crate::protocol::zstream::ZReader;
    use crate::protocol::ToReceiver;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what it is given and counts the writes.
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<Vec<u8>>>, Arc<AtomicUsize>);

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs a receiver on `dest` over the hello and `requests` (as one piece of input),
    /// and returns its replies and how many writes it made of them.
    fn exchange(
        dest: &LocalDest,
        requests: impl IntoIterator<Item = Request>,
    ) -> (Vec<Reply>, usize) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut w = std::fs::File::from(w);
        frame::write_hello(&mut w).unwrap();
        for req in requests {
            frame::write_frame(&mut w, &ToReceiver::Request(req)).unwrap();
        }
        drop(w);
        let out = Counting::default();
        let mut input = WireIn::new(r, None, Arc::default(), String::new());
        let hello = (Duration::from_secs(10), "no hello".to_string());
        Receiver::new(dest, None, Box::new(out.clone()))
            .run(&mut input, hello, &mut |_| {})
            .unwrap();
        let bytes = out.0.lock().unwrap().clone();
        let mut from = &bytes[..];
        frame::read_hello(&mut from).unwrap();
        let mut from = ZReader::new(from);
        let (mut buf, mut replies) = (Vec::new(), Vec::new());
        while let Some(reply) = frame::read_frame::<Reply, _>(&mut from, &mut buf).unwrap() {
            replies.push(reply);
        }
        (replies, out.1.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[test]
    fn a_burst_of_requests_is_answered_in_a_few_writes() {
        // 500 requests that came in one piece: answering each with a write of its own
        // costs a pipe write, an ssh packet and a wake-up of every process on the way.
        let dir = tempfile::tempdir().unwrap();
        let dest = LocalDest::for_tests(dir.path());
        let (replies, writes) = exchange(&dest, (1..=500).map(|id| Request::Space { id }));
        let ids: Vec<u64> = replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Space { id, .. } => id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            (1..=500).collect::<Vec<_>>(),
            "every request answered, in order"
        );
        assert!(writes <= 10, "{writes} writes for 500 answers");
    }

    #[test]
    fn applying_a_delta_charges_the_throttle_for_the_basis_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let base: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.path().join("f"), &base).unwrap();
        let mut new = base.clone();
        new[100_000..100_010].copy_from_slice(b"0123456789");
        let dest = LocalDest::for_tests(dir.path());
        let before = dest.throttle().total_bytes();

        // The sender's side, scripted: the receiver's signature is computed here the
        // same way, so the delta can be written before the answer is read.
        let sig = delta::signature(&base, sig_params(new.len() as u64)).unwrap();
        let mut d = Vec::new();
        delta::diff(&sig, &new, &mut d).unwrap();
        let id = 1;
        let path = b"f".to_vec();
        let size = new.len() as u64;
        let requests = [
            Request::Begin {
                id,
                path,
                size,
                mode: WireMode::Delta,
            },
            Request::Delta {
                id,
                index: 0,
                part: 0,
                last: true,
                zstd: false,
                delta: d,
            },
            Request::End {
                id,
                hash: *blake3::hash(&new).as_bytes(),
                meta: crate::protocol::WireMeta {
                    kind: crate::protocol::WireKind::File,
                    perm: 0o644,
                    owner: None,
                    mtime: 0,
                    mtime_nsec: 0,
                },
                xattrs: Vec::new(),
            },
        ];
        let mut staged = false;
        for reply in exchange(&dest, requests).0 {
            match reply {
                Reply::Signature { .. } => {}
                Reply::Staged { result, .. } => staged = result.is_ok(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(staged, "the delta was applied and the file staged");
        // The signature's read of the basis, the basis read again for the matched
        // blocks, and the file written: nearly three times the file.
        let charged = dest.throttle().total_bytes() - before;
        let floor = 3 * size - 8192;
        assert!(
            charged >= floor,
            "{charged} bytes charged, at least {floor} expected"
        );
    }

    #[test]
    fn small_files_get_rsync_s_short_sums_and_large_ones_the_default() {
        let p = sig_params(20_000);
        assert_eq!((p.block_size, p.strong_len), (700, 2));
        assert_eq!(sig_params(1 << 20).strong_len, 2);
        assert_eq!(sig_params(1000).block_size, 700);
        assert_eq!(
            sig_params(64 << 20).strong_len,
            crate::delta::DEFAULT_STRONG_LEN
        );
    }
}

//! Sending one file: whole data in chunks, or deltas against the far side's signatures.
//!
//! A small file (at most [`SMALL_DELTA_MAX`]) that the far side has an older version of
//! is read into memory once, so that its delta needs no second read and many such files
//! are in flight at once: its `Begin` goes out at start, and the signature, the delta and
//! the far side's answer are handled when the transfer collects it. The far side checks
//! the rebuilt file's BLAKE3 against the sender's; on a mismatch the file goes again,
//! whole, from the same bytes. The deltas are computed and sent by the delta workers
//! ([`super::pipe`]) as the signatures arrive.

use super::pipe::Job;
use super::*;
use crate::dest::local::{data_segments, read_chunks};

/// Files up to this size go as in-memory deltas (see the module documentation).
const SMALL_DELTA_MAX: u64 = 1 << 20;

/// A small file's content, read once, and what goes with it.
pub(super) struct Small {
    rel: Vec<u8>,
    data: Vec<u8>,
    hash: Hash,
    meta: SetMeta,
    xattrs: Vec<WireXattr>,
}

impl RemoteDest {
    /// Whether `start_file` sends this file as an in-memory delta.
    pub(super) fn small_delta(src: &SourceFile, mode: DataMode) -> bool {
        !Self::sends_whole(src, mode) && src.size <= SMALL_DELTA_MAX
    }

    /// Starts an in-memory delta: reads the file, sends `Begin`; the rest is done when
    /// the returned transfer is collected.
    pub(super) fn start_small(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        xattrs: bool,
    ) -> Result<Started<'_>, PutError> {
        let mut data = vec![0u8; src.size as usize];
        let mut off = 0;
        while off < data.len() {
            let n = self
                .throttle
                .io(|| src.file.read_at(&mut data[off..], off as u64))
                .map_err(PutError::Source)?;
            if n == 0 {
                return Err(PutError::SourceChanged);
            }
            self.throttle.bytes(n as u64);
            off += n;
        }
        if !src.unchanged().map_err(PutError::Source)? {
            return Err(PutError::SourceChanged);
        }
        let xattrs = match xattrs {
            true => fsutil::xattrs_of_fd(src.file.as_fd())
                .map_err(PutError::Source)?
                .into_iter()
                .map(|(n, v)| WireXattr(n, v))
                .collect(),
            false => Vec::new(),
        };
        let small = Small {
            rel: rel.to_vec(),
            hash: *blake3::hash(&data).as_bytes(),
            data,
            meta: *meta,
            xattrs,
        };
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        let begin = Request::Begin {
            id,
            path: small.rel.clone(),
            size: small.data.len() as u64,
            mode: WireMode::Delta,
        };
        if let Err(e) = self.conn.send_req(begin, false) {
            lock(&self.conn.waiters).remove(&id);
            return Err(PutError::Dest { op: "send", err: e });
        }
        let (done, sent) = std::sync::mpsc::sync_channel(1);
        match self.enqueue(Job {
            id,
            rx,
            small,
            done,
        }) {
            Ok(()) => Ok(Started::Waiting(Box::new(move || {
                let (rx, small, stats) = self.collect(&sent).inspect_err(|_| {
                    lock(&self.conn.waiters).remove(&id);
                })?;
                self.finish_small(id, &rx, &small, stats)
            }))),
            // No worker: this file's collector sends it.
            Err(job) => Ok(Started::Waiting(Box::new(move || {
                let stats = self.send_small(job.id, &job.rx, &job.small);
                self.finish_small(job.id, &job.rx, &job.small, stats)
            }))),
        }
    }

    /// The signature and the delta (or whole data) of an in-memory delta, then `End`;
    /// a failure of ours tells the far side to drop the file.
    pub(super) fn send_small(
        &self,
        id: u64,
        rx: &Receiver<Reply>,
        small: &Small,
    ) -> Result<DataStats, PutError> {
        let sent = self.small_body(id, rx, small);
        if let Err(e) = &sent {
            if !matches!(e, PutError::Dest { .. }) {
                let _ = self.conn.send_req(Request::Abort { id }, true);
            }
            lock(&self.conn.waiters).remove(&id);
        }
        sent
    }

    /// The far side's answer to a sent in-memory delta; whole on mismatch.
    fn finish_small(
        &self,
        id: u64,
        rx: &Receiver<Reply>,
        small: &Small,
        sent: Result<DataStats, PutError>,
    ) -> Result<(Staged, DataStats), PutError> {
        let stats = sent?;
        match self.wait_staged(id, rx) {
            // The far side's rebuilt file did not hash like ours: send it whole.
            Err(PutError::SourceChanged) => {
                let id = self.conn.id();
                let rx = self.conn.expect(id);
                let send_err = |e| PutError::Dest { op: "send", err: e };
                let begin = Request::Begin {
                    id,
                    path: small.rel.clone(),
                    size: small.data.len() as u64,
                    mode: WireMode::Whole,
                };
                let sent = self
                    .conn
                    .send_req(begin, false)
                    .and_then(|()| self.send_small_data(id, small))
                    .and_then(|()| self.send_end(id, [0; 32], small));
                if let Err(e) = sent {
                    lock(&self.conn.waiters).remove(&id);
                    return Err(send_err(e));
                }
                let literal = small.data.len() as u64;
                self.wait_staged(id, &rx).map(|s| {
                    (
                        s,
                        DataStats {
                            literal,
                            ..DataStats::default()
                        },
                    )
                })
            }
            r => r.map(|s| (s, stats)),
        }
    }

    /// After `Begin`: the delta against the far side's signature (or the whole data when
    /// it has no basis), then `End`.
    fn small_body(
        &self,
        id: u64,
        rx: &Receiver<Reply>,
        small: &Small,
    ) -> Result<DataStats, PutError> {
        let send_err = |e| PutError::Dest { op: "send", err: e };
        let mut stats = DataStats::default();
        match self.conn.wait(id, rx).map_err(send_err)? {
            Reply::Signature { windows, .. } if windows.len() == 1 => {
                let mut out = Vec::new();
                let s = self.diff(&windows[0], &small.data, &mut out)?;
                stats.literal = s.literal;
                stats.matched = s.matched;
                self.send_window(id, &small.rel, 0, out)?;
                self.send_end(id, small.hash, small).map_err(send_err)?;
            }
            Reply::NoBase { .. } => {
                stats.literal = small.data.len() as u64;
                self.send_small_data(id, small).map_err(send_err)?;
                self.send_end(id, small.hash, small).map_err(send_err)?;
            }
            Reply::Staged { result: Err(e), .. } => return Err(put_from_wire(e)),
            other => {
                return Err(PutError::Dest {
                    op: "remote",
                    err: self.conn.unexpected(&other),
                })
            }
        }
        Ok(stats)
    }

    fn send_small_data(&self, id: u64, small: &Small) -> io::Result<()> {
        let compress = !zstream::precompressed(&small.rel);
        for (k, chunk) in small.data.chunks(DATA_CHUNK).enumerate() {
            self.conn
                .send_data(id, (k * DATA_CHUNK) as u64, chunk, compress)?;
        }
        Ok(())
    }

    fn send_end(&self, id: u64, hash: Hash, small: &Small) -> io::Result<()> {
        let end = Request::End {
            id,
            hash,
            meta: (&small.meta).into(),
            xattrs: small.xattrs.clone(),
        };
        self.conn.send_req(end, false)
    }

    /// Sends window `index`'s delta, in parts of at most [`frame::DELTA_PART`],
    /// compressed unless the file is of an already compressed type.
    fn send_window(&self, id: u64, rel: &[u8], index: u32, out: Vec<u8>) -> Result<(), PutError> {
        let parts = delta::split_delta(&out, frame::DELTA_PART).map_err(|e| PutError::Dest {
            op: "delta",
            err: io::Error::other(e.to_string()),
        })?;
        let n = parts.len();
        let compress = !zstream::precompressed(rel);
        for (part, piece) in parts.into_iter().enumerate() {
            self.conn
                .send_delta((id, index, part as u32, part + 1 == n), piece, compress)
                .map_err(|e| PutError::Dest { op: "send", err: e })?;
        }
        Ok(())
    }

    /// Sends a file's data whole: compressed when small, or under `--compress`, unless
    /// it is of an already compressed type.
    fn send_whole(&self, id: u64, rel: &[u8], src: &SourceFile) -> Result<u64, PutError> {
        let compress =
            (self.compress || src.size <= SMALL_DELTA_MAX) && !zstream::precompressed(rel);
        let segments = if src.sparse {
            data_segments(&src.file, src.size)?
        } else {
            vec![(0, src.size)]
        };
        let mut sent = 0;
        let mut buf = vec![0u8; DATA_CHUNK.min(src.size.max(1) as usize)];
        for range in segments {
            read_chunks(src, &self.throttle, range, &mut buf, |off, data| {
                sent += data.len() as u64;
                self.conn
                    .send_data(id, off, data, compress)
                    .map_err(|e| PutError::Dest { op: "send", err: e })
            })?;
        }
        Ok(sent)
    }

    /// Sends the deltas of every window; returns the stats and the source's hash.
    fn send_deltas(
        &self,
        id: u64,
        rel: &[u8],
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
            let new = crate::dest::local::source_range(&src.file, &range)?;
            self.throttle.bytes(new.len() as u64);
            h.update(&new);
            out.clear();
            let s = self.diff(sig, &new, &mut out)?;
            stats.literal += s.literal;
            stats.matched += s.matched;
            self.send_window(id, rel, i as u32, std::mem::take(&mut out))?;
        }
        Ok((stats, *h.finalize().as_bytes()))
    }

    /// The delta of `data` against the far side's `signature`, into `out`, and what it
    /// holds. A signature that does not parse ends the session (it came from the peer).
    fn diff(
        &self,
        signature: &[u8],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<delta::DeltaStats, PutError> {
        delta::diff(signature, data, out).map_err(|e| PutError::Dest {
            op: "remote",
            err: self.conn.fail(format!(
                "protocol error: bad signature from the remote side: {e}"
            )),
        })?;
        delta::delta_stats(out).map_err(|e| PutError::Dest {
            op: "delta",
            err: io::Error::other(e.to_string()),
        })
    }

    pub(super) fn stage_once(&self, f: FileWrite<'_>) -> Result<(Staged, DataStats), PutError> {
        let (id, rx, stats) = self.send_file(f)?;
        Ok((self.wait_staged(id, &rx)?, stats))
    }

    /// Sends one file (its data or deltas, then its metadata); the far side's `Staged`
    /// answer arrives on the returned receiver.
    pub(super) fn send_file(
        &self,
        f: FileWrite<'_>,
    ) -> Result<(u64, Receiver<Reply>, DataStats), PutError> {
        let FileWrite {
            rel,
            src,
            meta,
            mode,
            xattrs,
        } = f;
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        // A large file sent whole is resumed from what a cut transfer left on the far
        // side, as a delta against it.
        let resume = Self::resumes(src, mode);
        let want_delta = !Self::sends_whole(src, mode) || resume;
        let wmode = if want_delta {
            WireMode::Delta
        } else {
            WireMode::Whole
        };
        let send_err = |e| PutError::Dest { op: "send", err: e };
        let begin = match resume {
            true => Request::Resume {
                id,
                path: rel.to_vec(),
                size: src.size,
                mtime: src.mtime.0,
                mtime_nsec: src.mtime.1,
            },
            false => Request::Begin {
                id,
                path: rel.to_vec(),
                size: src.size,
                mode: wmode,
            },
        };
        self.conn.send_req(begin, false).map_err(send_err)?;
        // From here on, a failure of ours must tell the far side, or its temporary
        // file and slot stay open until the session ends.
        match self.send_body((id, &rx), rel, src, meta, xattrs, want_delta) {
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
        (id, rx): (u64, &Receiver<Reply>),
        rel: &[u8],
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
                    let (s, h) = self.send_deltas(id, rel, src, &windows)?;
                    stats = s;
                    hash = h;
                }
                Reply::NoBase { .. } => whole = true,
                // The far side gave the file up (the abort that follows is a no-op).
                Reply::Staged { result: Err(e), .. } => return Err(put_from_wire(e)),
                other => {
                    return Err(PutError::Dest {
                        op: "remote",
                        err: self.conn.unexpected(&other),
                    })
                }
            }
        }
        if whole {
            stats.literal = self.send_whole(id, rel, src)?;
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
                false,
            )
            .map_err(send_err)?;
        Ok(stats)
    }

    /// Whether the file is sent as a resumable one (a delta against what a cut transfer
    /// kept on the far side, if anything).
    pub(super) fn resumes(src: &SourceFile, mode: DataMode) -> bool {
        mode == DataMode::Whole && crate::dest::local::partial::resumable(src.size, src.sparse)
    }

    /// Whether `stage_once` would send the file whole (no signature round trip).
    pub(super) fn sends_whole(src: &SourceFile, mode: DataMode) -> bool {
        !(mode == DataMode::Delta && src.size >= DELTA_MIN && !src.sparse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{read_frame, read_hello, write_frame, write_hello};
    use std::fs::File;

    /// A far side that answers a small file's delta with a signature of another basis
    /// than the one it applies (as when its file changed meanwhile), so the rebuilt file
    /// does not verify; it records the file that then comes whole.
    fn lying_peer(mut input: File, mut output: File, basis: Vec<u8>, expected: Vec<u8>) -> Vec<u8> {
        write_hello(&mut output).unwrap();
        read_hello(&mut input).unwrap();
        let mut input = crate::protocol::zstream::ZReader::new(input);
        let (mut buf, mut whole, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        let mut unpacker = crate::protocol::zstream::Unpacker::new().unwrap();
        loop {
            let Some(ToReceiver::Request(r)) = read_frame(&mut input, &mut buf).unwrap() else {
                return whole;
            };
            let reply = match r {
                Request::Begin { id, mode, size, .. } => {
                    assert_eq!(size, 40_000);
                    match mode {
                        WireMode::Delta => {
                            let p = delta::SigParams::for_len(size);
                            let sig = delta::signature(&basis, p).unwrap();
                            Some(Reply::Signature {
                                id,
                                block_size: p.block_size,
                                windows: vec![serde_bytes::ByteBuf::from(sig)],
                            })
                        }
                        WireMode::Whole => None,
                    }
                }
                Request::Delta { zstd, delta, .. } => {
                    if zstd {
                        unpacker.unpack(&delta, 1 << 20).unwrap();
                    }
                    None
                }
                Request::Data {
                    offset, data, zstd, ..
                } => {
                    assert_eq!(offset as usize, whole.len());
                    let data = match zstd {
                        true => unpacker.unpack(&data, 1 << 20).unwrap(),
                        false => data,
                    };
                    whole.extend_from_slice(&data);
                    None
                }
                Request::End { id, hash, .. } if hashes.is_empty() => {
                    assert_eq!(hash, *blake3::hash(&expected).as_bytes());
                    hashes.push(hash);
                    Some(Reply::Staged {
                        id,
                        result: Err(WireError::Corrupt),
                    })
                }
                Request::End { id, .. } => Some(Reply::Staged {
                    id,
                    result: Ok(WireStaged {
                        dir: Vec::new(),
                        tmp: b".f.tmp".to_vec(),
                        name: b"f".to_vec(),
                    }),
                }),
                other => panic!("unexpected {other:?}"),
            };
            if let Some(reply) = reply {
                write_frame(&mut output, &reply).unwrap();
                std::io::Write::flush(&mut output).unwrap();
            }
        }
    }

    #[test]
    fn a_small_delta_that_does_not_verify_goes_again_whole() {
        let new: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut basis = new.clone();
        basis[20_000..20_100].fill(0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), &new).unwrap();
        let file = File::open(dir.path().join("f")).unwrap();
        let st = rustix::fs::fstat(&file).unwrap();
        let src = SourceFile::from_parts(file, &st);

        let expected = new.clone();
        let (dest, peer) =
            super::super::testing::connected(move |i, o| lying_peer(i, o, basis, expected));
        let meta = super::super::testing::file_meta();
        assert!(RemoteDest::small_delta(&src, DataMode::Delta));
        let started = dest
            .start_file(
                &mut Default::default(),
                FileWrite {
                    rel: b"f",
                    src: &src,
                    meta: &meta,
                    mode: DataMode::Delta,
                    xattrs: false,
                },
            )
            .unwrap();
        assert!(matches!(started, Started::Waiting(_)));
        let (staged, stats) = started.finish().unwrap();
        assert_eq!(staged.name, b"f");
        assert_eq!(stats.literal, 40_000, "the second attempt went whole");
        dest.conn().close();
        let whole = peer.join().unwrap();
        assert!(whole == new, "the whole copy is the source, byte for byte");
    }
}

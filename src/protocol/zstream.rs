//! A session's compression: what a side writes is one zstd stream, so a request or a
//! small file compresses against everything sent before it, as rsync's zlib stream does;
//! frames that would not pay (data of already compressed file types, large files'
//! data without `--compress`, listing chunks compressed already) go raw beside it.
//!
//! On the wire, a frame whose length has [`ZFRAME`] set is a part of the stream: it
//! decodes to bytes of ordinary frames (possibly cut anywhere). [`ZWriter`] gathers the
//! frames written to it and turns them into such a part at each flush, or before a raw
//! frame; [`ZReader`] undoes that, passing raw frames through, so the frame decoder
//! reads one plain byte stream. A part decodes to at most [`MAX_FRAME`] bytes (no
//! decompression bombs). An older per-payload form (the `zstd` flag of `Data` and
//! `Delta`) is still decoded by the receiver with [`Unpacker`].

use std::io::{self, Write};

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use std::io::Read;

use super::frame::{ProtoError, MAX_FRAME};

/// The bit of a frame's length that marks a part of the compressed stream.
pub const ZFRAME: u32 = 1 << 31;

/// Frame bytes gathered before they are compressed even without a flush.
const GATHER: usize = 256 << 10;

/// zstd level of requests, answers, small files and deltas, always compressed.
pub const LIGHT: i32 = 1;
/// zstd level under `--compress`, where all file data is compressed: on source trees'
/// deltas some 30% fewer bytes than zlib's level 6 (rsync -z) at about its CPU time
/// (level 6: 27% fewer at a third of it; 19 would give 37% at ten times it). Changing the
/// level mid-session would cost the stream's history: zstd keeps a frame's level.
pub const STRONG: i32 = 12;

/// Extensions of file types whose data is already compressed: sent as they are.
const PACKED_TYPES: &[&str] = &[
    "7z", "aac", "apk", "avi", "avif", "br", "bz2", "deb", "docx", "epub", "flac", "gif", "gz",
    "heic", "jar", "jpeg", "jpg", "lz", "lz4", "lzma", "m4a", "m4v", "mkv", "mov", "mp3", "mp4",
    "odp", "ods", "odt", "ogg", "opus", "png", "pptx", "rar", "rpm", "tgz", "txz", "webm", "webp",
    "whl", "xlsx", "xz", "zip", "zst",
];

/// Whether the file at `path` is of a type whose data is already compressed.
pub fn precompressed(path: &[u8]) -> bool {
    let name = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    let Some(dot) = name.iter().rposition(|&c| c == b'.') else {
        return false;
    };
    let ext = &name[dot + 1..];
    ext.len() <= 5
        && PACKED_TYPES
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(ext))
}

/// The sending half.
pub struct Packer {
    enc: zstd::stream::write::Encoder<'static, Vec<u8>>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packer")
    }
}

impl Packer {
    pub fn new(level: i32) -> io::Result<Packer> {
        Ok(Packer {
            enc: zstd::stream::write::Encoder::new(Vec::new(), level)?,
        })
    }

    /// The next part of the stream, which decodes to `data`.
    pub fn pack(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.enc.write_all(data)?;
        self.enc.flush()?;
        Ok(std::mem::take(self.enc.get_mut()))
    }
}

/// The receiving half.
pub struct Unpacker {
    dec: Decoder<'static>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Unpacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unpacker")
    }
}

impl Unpacker {
    pub fn new() -> io::Result<Unpacker> {
        let mut dec = Decoder::new()?;
        // A peer's stream may not make this side hold a window of more than 16 MiB
        // (zstd's own default allows 128 MiB; our levels use at most 4 MiB).
        dec.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(24))?;
        Ok(Unpacker {
            dec,
            scratch: vec![0; 64 << 10],
        })
    }

    /// Decodes the next part of the stream, refusing more than `limit` bytes of output.
    pub fn unpack(&mut self, data: &[u8], limit: usize) -> Result<Vec<u8>, ProtoError> {
        let bad = |e: io::Error| ProtoError::Bad(format!("bad compressed payload: {e}"));
        let mut out = Vec::new();
        let mut input = InBuffer::around(data);
        loop {
            let mut ob = OutBuffer::around(&mut self.scratch[..]);
            self.dec.run(&mut input, &mut ob).map_err(bad)?;
            let n = ob.pos();
            if out.len() + n > limit {
                return Err(ProtoError::Bad(format!(
                    "a compressed payload unpacks to more than {limit} bytes"
                )));
            }
            out.extend_from_slice(&self.scratch[..n]);
            if input.pos() == data.len() && n < self.scratch.len() {
                return Ok(out);
            }
        }
    }
}

/// The writing end of a session: frames written to it are compressed at each flush, or
/// before a raw frame; without a level it passes everything through.
pub struct ZWriter<W: Write> {
    out: W,
    level: Option<i32>,
    packer: Option<Packer>,
    pending: Vec<u8>,
}

impl<W: Write> ZWriter<W> {
    /// Compresses at `level` (`None`: never).
    pub fn new(out: W, level: Option<i32>) -> ZWriter<W> {
        ZWriter {
            out,
            level,
            packer: None,
            pending: Vec::new(),
        }
    }

    /// Sets the level before anything was compressed (later, it stays as it was).
    pub fn set_level(&mut self, level: Option<i32>) {
        if self.packer.is_none() {
            self.level = level;
        }
    }

    /// Whether frames written are compressed.
    pub fn compresses(&self) -> bool {
        self.level.is_some()
    }

    /// Writes what was gathered as one part of the stream (without flushing `out`).
    fn drain(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let packer = match (&mut self.packer, self.level) {
            (Some(p), _) => p,
            (p @ None, Some(level)) => p.insert(Packer::new(level)?),
            (None, None) => {
                self.out.write_all(&self.pending)?;
                self.pending.clear();
                return Ok(());
            }
        };
        // A part never exceeds a frame: gathering stops well below it.
        let part = packer.pack(&self.pending)?;
        self.pending.clear();
        self.out
            .write_all(&(part.len() as u32 | ZFRAME).to_le_bytes())?;
        self.out.write_all(&part)
    }

    /// Where a raw frame goes: after what was gathered, outside the stream.
    pub fn raw(&mut self) -> io::Result<&mut W> {
        self.drain()?;
        Ok(&mut self.out)
    }

    /// The underlying writer, with what was gathered dropped.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Write for ZWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.level.is_none() {
            return self.out.write(buf);
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= GATHER {
            self.drain()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.out.flush()
    }
}

/// The reading end: parts of the compressed stream decoded, raw frames passed through.
pub struct ZReader<R: Read> {
    input: R,
    unpacker: Option<Unpacker>,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes of a raw frame's body still to pass through.
    raw_left: u64,
}

impl<R: Read> ZReader<R> {
    pub fn new(input: R) -> ZReader<R> {
        ZReader {
            input,
            unpacker: None,
            buf: Vec::new(),
            pos: 0,
            raw_left: 0,
        }
    }

    fn bad(msg: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    /// Whether what was read already holds more to give (not counting `input`: the rest
    /// of a raw block is still to come from there).
    pub fn buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    pub fn get_ref(&self) -> &R {
        &self.input
    }
}

impl<R: Read> Read for ZReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.raw_left > 0 {
                let want = out.len().min(self.raw_left.min(usize::MAX as u64) as usize);
                let n = self.input.read(&mut out[..want])?;
                if n == 0 {
                    return Err(Self::bad("truncated frame".into()));
                }
                self.raw_left -= n as u64;
                return Ok(n);
            }
            if out.is_empty() {
                return Ok(0);
            }
            // The next frame's header: the end of the stream is only clean here.
            let mut head = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                match self.input.read(&mut head[got..]) {
                    Ok(0) if got == 0 => return Ok(0),
                    Ok(0) => return Err(Self::bad("truncated frame header".into())),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let len = u32::from_le_bytes(head);
            self.buf.clear();
            self.pos = 0;
            if len & ZFRAME == 0 {
                // A raw frame: its header, then its body straight from the input.
                self.buf.extend_from_slice(&head);
                self.raw_left = u64::from(len);
                continue;
            }
            let len = len & !ZFRAME;
            if len > MAX_FRAME {
                return Err(Self::bad(format!(
                    "compressed part of {len} bytes exceeds the limit of {MAX_FRAME}"
                )));
            }
            let mut part = Vec::new();
            (&mut self.input)
                .take(u64::from(len))
                .read_to_end(&mut part)?;
            if part.len() < len as usize {
                return Err(Self::bad("truncated compressed part".into()));
            }
            let u = match &mut self.unpacker {
                Some(u) => u,
                None => self.unpacker.insert(Unpacker::new()?),
            };
            self.buf = u
                .unpack(&part, MAX_FRAME as usize)
                .map_err(|e| Self::bad(e.to_string()))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_later_ones_compress_against_earlier_ones() {
        let mut p = Packer::new(LIGHT).unwrap();
        let mut u = Unpacker::new().unwrap();
        let text: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("line {} of a source file\n", i * 7919 % 10007).into_bytes())
            .collect();
        let first = p.pack(&text).unwrap();
        assert_eq!(u.unpack(&first, 1 << 20).unwrap(), text);
        // The same content again costs next to nothing: it refers to the first.
        let again = p.pack(&text).unwrap();
        assert!(
            again.len() < first.len() / 20,
            "{} vs {}",
            again.len(),
            first.len()
        );
        assert_eq!(u.unpack(&again, 1 << 20).unwrap(), text);
        let empty = p.pack(b"").unwrap();
        assert_eq!(u.unpack(&empty, 10).unwrap(), b"");
    }

    #[test]
    fn bombs_and_junk_are_refused() {
        let mut p = Packer::new(LIGHT).unwrap();
        let zeros = p.pack(&vec![0u8; 1 << 20]).unwrap();
        let mut u = Unpacker::new().unwrap();
        assert!(u.unpack(&zeros, 1000).is_err());
        let mut u = Unpacker::new().unwrap();
        assert!(u.unpack(b"certainly not zstd", 1000).is_err());
    }

    #[test]
    fn frames_through_a_zwriter_read_back_in_order_with_raw_ones_between() {
        use crate::protocol::frame::{read_frame, write_frame};
        let mut wire = Vec::new();
        let mut w = ZWriter::new(&mut wire, Some(LIGHT));
        let msgs: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000 + i as usize]).collect();
        for (k, m) in msgs.iter().enumerate() {
            if k % 7 == 3 {
                write_frame(w.raw().unwrap(), m).unwrap();
            } else {
                write_frame(&mut w, m).unwrap();
            }
            if k % 5 == 0 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        drop(w);
        assert!(wire.len() < 25_000, "{} bytes", wire.len());
        let mut r = ZReader::new(&wire[..]);
        let mut buf = Vec::new();
        for m in &msgs {
            assert_eq!(
                &read_frame::<Vec<u8>, _>(&mut r, &mut buf).unwrap().unwrap(),
                m
            );
        }
        assert!(read_frame::<Vec<u8>, _>(&mut r, &mut buf)
            .unwrap()
            .is_none());
    }

    #[test]
    fn hostile_parts_are_refused() {
        let mut p = Packer::new(LIGHT).unwrap();
        let bomb = p.pack(&vec![0u8; MAX_FRAME as usize + 10]).unwrap();
        let mut wire = (bomb.len() as u32 | ZFRAME).to_le_bytes().to_vec();
        wire.extend_from_slice(&bomb);
        let mut out = Vec::new();
        assert!(ZReader::new(&wire[..]).read_to_end(&mut out).is_err());
        let mut huge = ((MAX_FRAME + 1) | ZFRAME).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(ZReader::new(&huge[..]).read_to_end(&mut out).is_err());
        let mut junk = (5 | ZFRAME).to_le_bytes().to_vec();
        junk.extend_from_slice(b"junk!");
        assert!(ZReader::new(&junk[..]).read_to_end(&mut out).is_err());
        let cut = (9 | ZFRAME).to_le_bytes().to_vec();
        assert!(ZReader::new(&cut[..]).read_to_end(&mut out).is_err());
    }

    #[test]
    fn compressed_types_are_known_by_extension() {
        for p in [&b"a/b.JPG"[..], b"x.tar.gz", b"v.mp4", b"d.zip"] {
            assert!(precompressed(p), "{}", String::from_utf8_lossy(p));
        }
        for p in [&b"a/b.py"[..], b"gz", b"dir.zip/file", b"x."] {
            assert!(!precompressed(p), "{}", String::from_utf8_lossy(p));
        }
    }
}

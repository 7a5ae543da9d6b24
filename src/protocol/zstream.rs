//! A session's compression: each payload (file data, a delta) compressed as the next
//! part of one zstd stream, so a small file compresses against everything sent before
//! it, as rsync's zlib stream does; payloads that do not pay (data of already
//! compressed file types) go raw beside it.
//!
//! The sender flushes the stream after each payload, so the receiver decodes each one
//! as it arrives, never more than the frame's limit (no decompression bombs). Both sides
//! must see the compressed payloads in the same order: the sender compresses while it
//! holds the session's writer, and the receiver decodes every compressed payload, also
//! those of files it has given up.

use std::io::{self, Write};

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::frame::ProtoError;

/// zstd level of the payloads of small files and deltas, always compressed.
pub const LIGHT: i32 = 1;
/// zstd level under `--compress`, where every payload is compressed: ahead of zlib's
/// ratio (rsync -z) at a fraction of its CPU time.
pub const STRONG: i32 = 3;

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
        Ok(Unpacker {
            dec: Decoder::new()?,
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
    fn compressed_types_are_known_by_extension() {
        for p in [&b"a/b.JPG"[..], b"x.tar.gz", b"v.mp4", b"d.zip"] {
            assert!(precompressed(p), "{}", String::from_utf8_lossy(p));
        }
        for p in [&b"a/b.py"[..], b"gz", b"dir.zip/file", b"x."] {
            assert!(!precompressed(p), "{}", String::from_utf8_lossy(p));
        }
    }
}

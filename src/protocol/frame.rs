//! Framing and handshake: magic bytes, versions, length-prefixed postcard frames.
//!
//! Pure encode/decode over `Read`/`Write`: a frame longer than [`MAX_FRAME`] is refused
//! before anything is allocated, a truncated frame is an error, and junk before the
//! handshake (a remote shell's start-up files printing text) is reported with what was
//! read, not decoded.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::VERSION;

/// First bytes each side writes.
pub const MAGIC: &[u8; 8] = b"FSYNCRP\x01";

/// Largest frame body accepted (data travels in chunks well below this).
pub const MAX_FRAME: u32 = 16 << 20;

/// Largest data chunk the sender puts in one frame.
pub const DATA_CHUNK: usize = 1 << 20;

/// Largest part of a window's delta in one frame.
pub const DELTA_PART: usize = 4 << 20;

/// Compresses a payload for `--compress` when that makes it smaller: (bytes, compressed).
pub fn pack(data: Vec<u8>, compress: bool) -> (Vec<u8>, bool) {
    if compress && data.len() > 128 {
        if let Ok(z) = zstd::bulk::compress(&data, 3) {
            if z.len() < data.len() {
                return (z, true);
            }
        }
    }
    (data, false)
}

/// Undoes [`pack`], refusing to produce more than `limit` bytes (no decompression bombs).
pub fn unpack(data: Vec<u8>, compressed: bool, limit: usize) -> Result<Vec<u8>, ProtoError> {
    if !compressed {
        return Ok(data);
    }
    zstd::bulk::decompress(&data, limit)
        .map_err(|e| ProtoError::Bad(format!("bad compressed payload: {e}")))
}

/// A protocol failure, with a message fit for one line.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("the remote side closed the connection before the handshake; is fsync-repl installed there (see --remote-bin)?")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Bad(String),
    /// The far side exited before the handshake with one of our exit codes, after
    /// printing its own one-line error (forwarded on stderr).
    #[error("the remote side failed with exit code {0}")]
    RemoteExit(i32),
}

/// The error of a remote side that did not complete the handshake within `limit`.
pub fn no_handshake(limit: std::time::Duration) -> String {
    format!(
        "no handshake from the remote side within {} s (--timeout, at most 30 s for the handshake); \
         is fsync-repl installed there (see --remote-bin)?",
        limit.as_secs()
    )
}

/// Writes the handshake: magic and version.
pub fn write_hello(w: &mut impl Write) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.flush()
}

/// Reads the peer's handshake. Junk before it is reported as text (a noisy shell).
pub fn read_hello<R: Read + ?Sized>(r: &mut R) -> Result<u32, ProtoError> {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(ProtoError::Closed),
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if got < head.len() || &head[..8] != MAGIC {
        // Show what the peer printed instead, so the cause is visible: read on until the
        // handshake shows up (a noisy shell prints before it), the end, or 200 bytes.
        let mut junk = head[..got].to_vec();
        let mut byte = [0u8; 1];
        while junk.len() < 200 && !junk.ends_with(MAGIC) && got == head.len() {
            match r.read(&mut byte) {
                Ok(1) => junk.push(byte[0]),
                _ => break,
            }
        }
        if junk.ends_with(MAGIC) {
            junk.truncate(junk.len() - MAGIC.len());
        } else if let Some(i) = junk.windows(MAGIC.len()).position(|w| w == MAGIC) {
            junk.truncate(i);
        }
        let text = crate::text::escape(&junk);
        return Err(ProtoError::Bad(format!(
            "the remote side did not start with the fsync-repl handshake but printed \"{text}\"; \
             make the remote shell's start-up files (e.g. ~/.bashrc) silent for non-interactive \
             sessions, or check --remote-bin"
        )));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(ProtoError::Bad(format!(
            "protocol version mismatch: this side speaks {VERSION}, the remote side {version}; \
             install the same fsync-repl version on both sides"
        )));
    }
    Ok(version)
}

/// Encodes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ProtoError> {
    let body = postcard::to_allocvec(msg).map_err(|e| ProtoError::Bad(format!("encode: {e}")))?;
    if body.len() > MAX_FRAME as usize {
        return Err(ProtoError::Bad(format!(
            "frame of {} bytes is too large",
            body.len()
        )));
    }
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    Ok(())
}

/// Writes the frame of `ToReceiver::Request(Request::Data { id, offset, zstd, data })`
/// straight from `data`, byte for byte what [`write_frame`] writes, without copying a
/// chunk into a message and the message into a buffer first.
pub fn write_data_frame(
    w: &mut impl Write,
    id: u64,
    offset: u64,
    zstd: bool,
    data: &[u8],
) -> Result<(), ProtoError> {
    // postcard puts a byte string last as a varint length and the bytes: encode the
    // message with no data, whose final byte is that length (0), and append.
    let empty = super::ToReceiver::Request(super::Request::Data {
        id,
        offset,
        zstd,
        data: Vec::new(),
    });
    let mut head = [0u8; 48];
    let used = postcard::to_slice(&empty, &mut head)
        .map_err(|e| ProtoError::Bad(format!("encode: {e}")))?
        .len();
    let mut len = [0u8; 10];
    let len = varint(data.len() as u64, &mut len);
    let body = used - 1 + len.len() + data.len();
    if body > MAX_FRAME as usize {
        return Err(ProtoError::Bad(format!(
            "frame of {body} bytes is too large"
        )));
    }
    w.write_all(&(body as u32).to_le_bytes())?;
    w.write_all(&head[..used - 1])?;
    w.write_all(len)?;
    w.write_all(data)?;
    Ok(())
}

/// postcard's unsigned varint (LEB128) of `v` in `buf`.
fn varint(mut v: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            return &buf[..=n];
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
}

/// Decodes one frame; `Ok(None)` at a clean end of stream between frames.
pub fn read_frame<T: DeserializeOwned, R: Read + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Bad("truncated frame header".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(ProtoError::Bad(format!(
            "frame of {len} bytes exceeds the limit of {MAX_FRAME}"
        )));
    }
    buf.clear();
    // Read without zero-filling the buffer first (a data frame is a megabyte).
    buf.reserve(len as usize);
    let got = r.take(u64::from(len)).read_to_end(buf)?;
    if got < len as usize {
        return Err(ProtoError::Bad("truncated frame".into()));
    }
    decode(buf).map(Some)
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    postcard::from_bytes(body).map_err(|e| ProtoError::Bad(format!("malformed frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::{FsOp, Reply, Request, ToReceiver, WireKind};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn data_frames_match_the_generic_encoder() {
        for len in [0usize, 1, 127, 128, 300, 16383, 16384, DATA_CHUNK] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for (id, offset, zstd) in [(1, 0, false), (u64::MAX, 1 << 40, true)] {
                let mut fast = Vec::new();
                write_data_frame(&mut fast, id, offset, zstd, &data).unwrap();
                let mut generic = Vec::new();
                let msg = ToReceiver::Request(Request::Data {
                    id,
                    offset,
                    zstd,
                    data: data.clone(),
                });
                write_frame(&mut generic, &msg).unwrap();
                assert_eq!(fast, generic, "len {len}");
                let got: ToReceiver = read_frame(&mut &fast[..], &mut Vec::new())
                    .unwrap()
                    .unwrap();
                assert_eq!(got, msg);
            }
        }
    }

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            ToReceiver::Request(Request::Op {
                id: 7,
                op: FsOp::Remove {
                    path: b"a/\xffb".to_vec(),
                    kind: WireKind::File,
                },
            }),
            ToReceiver::Request(Request::Data {
                id: 1,
                offset: 1 << 40,
                zstd: false,
                data: vec![9; 100_000],
            }),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            write_frame(&mut wire, m).unwrap();
        }
        let mut r = &wire[..];
        let mut buf = Vec::new();
        for m in &msgs {
            let got: ToReceiver = read_frame(&mut r, &mut buf).unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(read_frame::<ToReceiver, _>(&mut r, &mut buf)
            .unwrap()
            .is_none());
    }

    #[test]
    fn handshake_rejects_junk_and_versions() {
        let mut ok = Vec::new();
        write_hello(&mut ok).unwrap();
        assert_eq!(read_hello(&mut &ok[..]).unwrap(), VERSION);
        let junk = b"Welcome to host!\nLast login: never\n";
        let err = read_hello(&mut &junk[..]).unwrap_err().to_string();
        assert!(err.contains("Welcome to host!"), "{err}");
        assert!(err.contains(".bashrc"), "{err}");
        let mut other = MAGIC.to_vec();
        other.extend_from_slice(&99u32.to_le_bytes());
        assert!(read_hello(&mut &other[..])
            .unwrap_err()
            .to_string()
            .contains("version"));
        assert!(matches!(read_hello(&mut &b""[..]), Err(ProtoError::Closed)));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let mut buf = Vec::new();
        assert!(read_frame::<Reply, _>(&mut &huge[..], &mut buf).is_err());
        assert!(
            buf.capacity() < 1024,
            "nothing allocated for a refused frame"
        );
        let mut wire = Vec::new();
        write_frame(&mut wire, &Reply::NoBase { id: 3 }).unwrap();
        wire.pop();
        assert!(read_frame::<Reply, _>(&mut &wire[..], &mut buf).is_err());
        assert!(read_frame::<Reply, _>(&mut &[1u8, 0][..], &mut buf).is_err());
    }

    #[test]
    fn compression_round_trips_and_refuses_bombs() {
        let data = vec![b'a'; 1 << 20];
        let (z, packed) = pack(data.clone(), true);
        assert!(packed && z.len() < 10_000);
        assert_eq!(unpack(z.clone(), true, 1 << 20).unwrap(), data);
        assert!(
            unpack(z, true, 1000).is_err(),
            "output over the limit is refused"
        );
        assert_eq!(pack(b"short".to_vec(), true), (b"short".to_vec(), false));
        assert!(unpack(b"not zstd".to_vec(), true, 100).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = Vec::new();
            let mut r = &bytes[..];
            for _ in 0..4 {
                match read_frame::<ToReceiver, _>(&mut r, &mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            let mut r = &bytes[..];
            let _ = read_frame::<Reply, _>(&mut r, &mut buf);
            let _ = read_hello(&mut &bytes[..]);
        }

        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ToReceiver>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }
    }
}

//! The compact listing: [`WireEntry`] chunks as few bytes as a listing can take.
//!
//! Each entry is coded against the one before it, as rsync codes its file list: the
//! name as the length of the prefix it shares with the previous name plus the rest;
//! the kind, permissions, owner, modification time and inode as "same as before" flags
//! or as differences; the allocated size as a flag when it is the size rounded up to
//! 4 KiB; the fields most entries do not have (symlink target, device number, xattr
//! digest, device) only when present. A chunk is then zstd-compressed. A chunk decodes
//! on its own (the first entry is coded against an empty one).
//!
//! Decoding is pure and bounded: it never panics, never reads past its input, refuses
//! more than the given number of entries, and never produces more than the
//! decompression limit, so a hostile peer costs at most one frame of memory.

use super::{WireEntry, WireKind};

/// Largest decompressed chunk accepted (and the size at which an encoder starts a new
/// chunk, well below it).
pub const MAX_CHUNK: usize = 8 << 20;

/// Most entries a chunk may hold.
pub const MAX_ENTRIES: usize = 16384;

/// zstd level of listing chunks: listings are small and compress well.
const LEVEL: i32 = 6;

const SAME_KIND: u32 = 1;
const SAME_PERM: u32 = 1 << 1;
const SAME_OWNER: u32 = 1 << 2;
const SAME_MTIME: u32 = 1 << 3;
const SAME_NSEC: u32 = 1 << 4;
const ALLOC_ROUNDED: u32 = 1 << 5;
const NLINK_ONE: u32 = 1 << 6;
const HAS_TARGET: u32 = 1 << 7;
const HAS_RDEV: u32 = 1 << 8;
const HAS_XATTR: u32 = 1 << 9;
const HAS_DEV: u32 = 1 << 10;
const ALL_FLAGS: u32 = (1 << 11) - 1;

fn empty() -> WireEntry {
    WireEntry {
        path: Vec::new(),
        kind: WireKind::File,
        perm: 0,
        uid: 0,
        gid: 0,
        size: 0,
        alloc: 0,
        mtime: 0,
        mtime_nsec: 0,
        nlink: 1,
        ino: 0,
        dev: 0,
        target: Vec::new(),
        rdev: 0,
        xattr_digest: 0,
    }
}

fn kind_code(k: WireKind) -> u8 {
    match k {
        WireKind::File => 0,
        WireKind::Dir => 1,
        WireKind::Symlink => 2,
        WireKind::Fifo => 3,
        WireKind::Socket => 4,
        WireKind::CharDev => 5,
        WireKind::BlockDev => 6,
    }
}

fn kind_of(c: u64) -> Option<WireKind> {
    Some(match c {
        0 => WireKind::File,
        1 => WireKind::Dir,
        2 => WireKind::Symlink,
        3 => WireKind::Fifo,
        4 => WireKind::Socket,
        5 => WireKind::CharDev,
        6 => WireKind::BlockDev,
        _ => return None,
    })
}

/// The allocation a file of `size` bytes has without holes or preallocation.
fn rounded(size: u64) -> u64 {
    size.div_ceil(4096).saturating_mul(4096)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Codes entries one after the other into raw (uncompressed) chunk bytes.
#[derive(Debug)]
pub struct Encoder {
    prev: WireEntry,
    raw: Vec<u8>,
    count: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            prev: empty(),
            raw: Vec::new(),
            count: 0,
        }
    }
}

impl Encoder {
    /// Adds one entry.
    pub fn push(&mut self, e: &WireEntry) {
        let p = &self.prev;
        let out = &mut self.raw;
        let mut flags = 0;
        let mut set = |cond: bool, bit: u32| {
            if cond {
                flags |= bit
            }
        };
        set(e.kind == p.kind, SAME_KIND);
        set(e.perm == p.perm, SAME_PERM);
        set(e.uid == p.uid && e.gid == p.gid, SAME_OWNER);
        set(e.mtime == p.mtime, SAME_MTIME);
        set(e.mtime_nsec == p.mtime_nsec, SAME_NSEC);
        set(e.alloc == rounded(e.size), ALLOC_ROUNDED);
        set(e.nlink == 1, NLINK_ONE);
        set(!e.target.is_empty(), HAS_TARGET);
        set(e.rdev != 0, HAS_RDEV);
        set(e.xattr_digest != 0, HAS_XATTR);
        set(e.dev != 0, HAS_DEV);
        put(out, u64::from(flags));
        let shared = e
            .path
            .iter()
            .zip(&p.path)
            .take_while(|(a, b)| a == b)
            .count();
        put(out, shared as u64);
        put_bytes(out, &e.path[shared..]);
        if flags & SAME_KIND == 0 {
            out.push(kind_code(e.kind));
        }
        if flags & SAME_PERM == 0 {
            put(out, u64::from(e.perm));
        }
        if flags & SAME_OWNER == 0 {
            put(out, u64::from(e.uid));
            put(out, u64::from(e.gid));
        }
        put(out, e.size);
        if flags & ALLOC_ROUNDED == 0 {
            put(out, e.alloc);
        }
        if flags & SAME_MTIME == 0 {
            put_signed(out, e.mtime.wrapping_sub(p.mtime));
        }
        if flags & SAME_NSEC == 0 {
            put(out, u64::from(e.mtime_nsec));
        }
        if flags & NLINK_ONE == 0 {
            put(out, u64::from(e.nlink));
        }
        put_signed(out, e.ino.wrapping_sub(p.ino) as i64);
        if flags & HAS_TARGET != 0 {
            put_bytes(out, &e.target);
        }
        if flags & HAS_RDEV != 0 {
            put(out, e.rdev);
        }
        if flags & HAS_XATTR != 0 {
            out.extend_from_slice(&e.xattr_digest.to_le_bytes());
        }
        if flags & HAS_DEV != 0 {
            put(out, e.dev);
        }
        self.prev.clone_from(e);
        self.count += 1;
    }

    /// Entries coded so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing was coded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Raw bytes coded so far.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// The compressed chunk; the encoder starts afresh.
    pub fn finish(&mut self) -> Vec<u8> {
        let raw = std::mem::take(&mut self.raw);
        self.prev = empty();
        self.count = 0;
        // Compression of a buffer in memory only fails on allocation; the raw form is
        // then sent behind a marker byte.
        match zstd::bulk::compress(&raw, LEVEL) {
            Ok(mut z) => {
                z.insert(0, 1);
                z
            }
            Err(_) => {
                let mut r = Vec::with_capacity(raw.len() + 1);
                r.push(0);
                r.extend_from_slice(&raw);
                r
            }
        }
    }
}

/// Codes `entries` as one chunk.
pub fn encode(entries: &[WireEntry]) -> Vec<u8> {
    let mut enc = Encoder::default();
    for e in entries {
        enc.push(e);
    }
    enc.finish()
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or("truncated listing chunk")?;
        self.0 = rest;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("listing varint overflows".into());
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("listing varint too long".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.uint()?).map_err(|_| "listing field out of range".to_string())
    }

    fn signed(&mut self) -> Result<i64, String> {
        let v = self.uint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.uint()?;
        if n > self.0.len() as u64 {
            return Err("listing string runs past the chunk".into());
        }
        let (b, rest) = self.0.split_at(n as usize);
        self.0 = rest;
        Ok(b)
    }
}

/// Decodes one chunk of at most `max_entries` entries whose names and symlink targets
/// take at most `max_bytes` in all (the names are not validated here: the caller checks
/// them as it checks any name from a peer).
pub fn decode(chunk: &[u8], max_entries: usize, max_bytes: u64) -> Result<Vec<WireEntry>, String> {
    decode_bounded(chunk, max_entries, max_bytes).map_err(|e| e.to_string())
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It holds more entries or more bytes of names than allowed.
    #[error("listing chunk has more than {0}")]
    Bound(String),
    /// It is malformed.
    #[error("{0}")]
    Bad(String),
}

/// [`decode`], telling a chunk over its bounds from a malformed one.
pub fn decode_bounded(
    chunk: &[u8],
    max_entries: usize,
    max_bytes: u64,
) -> Result<Vec<WireEntry>, DecodeError> {
    let bad = DecodeError::Bad;
    let (&marker, body) = chunk
        .split_first()
        .ok_or_else(|| bad("empty listing chunk".into()))?;
    let raw = match marker {
        0 => body.to_vec(),
        1 => zstd::bulk::decompress(body, MAX_CHUNK)
            .map_err(|e| bad(format!("bad compressed listing chunk: {e}")))?,
        m => return Err(bad(format!("unknown listing chunk form {m}"))),
    };
    let mut input = Input(&raw);
    let mut out: Vec<WireEntry> = Vec::new();
    let mut prev = empty();
    let mut bytes = 0u64;
    while !input.0.is_empty() {
        if out.len() >= max_entries {
            return Err(DecodeError::Bound(format!("{max_entries} entries")));
        }
        let e = next_entry(&mut input, &prev).map_err(bad)?;
        bytes += (e.path.len() + e.target.len()) as u64;
        if bytes > max_bytes {
            return Err(DecodeError::Bound(format!("{max_bytes} bytes of names")));
        }
        prev.clone_from(&e);
        out.push(e);
    }
    Ok(out)
}

/// Decodes the entry after `prev`.
fn next_entry(input: &mut Input<'_>, prev: &WireEntry) -> Result<WireEntry, String> {
    let flags = input.uint()?;
    if flags > u64::from(ALL_FLAGS) {
        return Err("unknown listing entry flags".into());
    }
    let flags = flags as u32;
    let shared = input.uint()?;
    if shared > prev.path.len() as u64 {
        return Err("listing name shares more than the previous name has".into());
    }
    let mut e = prev.clone();
    e.path.truncate(shared as usize);
    e.path.extend_from_slice(input.bytes()?);
    if flags & SAME_KIND == 0 {
        e.kind = kind_of(u64::from(input.byte()?)).ok_or("unknown entry kind in listing")?;
    }
    if flags & SAME_PERM == 0 {
        e.perm = input.u32()?;
    }
    if flags & SAME_OWNER == 0 {
        e.uid = input.u32()?;
        e.gid = input.u32()?;
    }
    e.size = input.uint()?;
    e.alloc = match flags & ALLOC_ROUNDED {
        0 => input.uint()?,
        _ => rounded(e.size),
    };
    if flags & SAME_MTIME == 0 {
        e.mtime = prev.mtime.wrapping_add(input.signed()?);
    }
    if flags & SAME_NSEC == 0 {
        e.mtime_nsec = input.u32()?;
    }
    e.nlink = match flags & NLINK_ONE {
        0 => input.u32()?,
        _ => 1,
    };
    e.ino = prev.ino.wrapping_add(input.signed()? as u64);
    e.target = match flags & HAS_TARGET {
        0 => Vec::new(),
        _ => input.bytes()?.to_vec(),
    };
    e.rdev = match flags & HAS_RDEV {
        0 => 0,
        _ => input.uint()?,
    };
    e.xattr_digest = match flags & HAS_XATTR {
        0 => 0,
        _ => {
            let mut d = [0u8; 8];
            for b in &mut d {
                *b = input.byte()?;
            }
            u64::from_le_bytes(d)
        }
    };
    e.dev = match flags & HAS_DEV {
        0 => 0,
        _ => input.uint()?,
    };
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, size: u64, mtime: i64, ino: u64) -> WireEntry {
        WireEntry {
            path: path.as_bytes().to_vec(),
            kind: WireKind::File,
            perm: 0o644,
            uid: 1000,
            gid: 1000,
            size,
            alloc: rounded(size),
            mtime,
            mtime_nsec: 0,
            nlink: 1,
            ino,
            dev: 0,
            target: Vec::new(),
            rdev: 0,
            xattr_digest: 0,
        }
    }

    #[test]
    fn a_source_tree_costs_a_few_bytes_an_entry() {
        let entries: Vec<WireEntry> = (0..4000u64)
            .map(|i| {
                file(
                    &format!("project/src/module{:03}/file_{i:05}.py", i / 40),
                    1000 + i * 37 % 9000,
                    1_700_000_000 + (i % 7) as i64,
                    100_000 + i,
                )
            })
            .collect();
        let chunk = encode(&entries);
        assert_eq!(decode(&chunk, usize::MAX, u64::MAX).unwrap(), entries);
        let per = chunk.len() as f64 / entries.len() as f64;
        assert!(per < 8.0, "{per:.1} bytes per entry");
    }

    #[test]
    fn every_field_round_trips() {
        let mut odd = file("a/b", 5, -3, u64::MAX);
        odd.kind = WireKind::CharDev;
        odd.rdev = 0x0801;
        odd.alloc = 0;
        odd.mtime_nsec = 999_999_999;
        odd.nlink = 7;
        odd.xattr_digest = 0xdead_beef_0000_0001;
        odd.dev = 42;
        let mut link = file("a/b/c", 3, i64::MAX, 0);
        link.kind = WireKind::Symlink;
        link.target = b"../\xff".to_vec();
        link.uid = u32::MAX;
        let entries = vec![file("", 0, i64::MIN, 1), odd, link, file("a/b/c", 0, 0, 5)];
        assert_eq!(decode(&encode(&entries), 10, 100).unwrap(), entries);
        assert_eq!(decode(&encode(&[]), 0, 0).unwrap(), vec![]);
    }

    #[test]
    fn hostile_chunks_are_refused_not_obeyed() {
        let entries = vec![file("x", 1, 1, 1), file("xy", 1, 1, 2)];
        let chunk = encode(&entries);
        assert!(decode(&chunk, 1, 99).unwrap_err().contains("more than 1"));
        assert!(decode(&chunk, 9, 2).unwrap_err().contains("bytes"));
        // A name that shares more than the previous one has.
        let mut raw = vec![0u8];
        raw.extend_from_slice(&[0, 5, 0]);
        assert!(decode(&raw, 9, 99).is_err());
        // A string that runs past the end; an unknown form; an unknown kind.
        assert!(decode(&[0, 0, 0, 200, 1], 9, 99).is_err());
        assert!(decode(&[7, 0], 9, 99).is_err());
        assert!(decode(&[0, 0, 0, 0, 9], 9, 99).is_err());
        assert!(decode(&[], 9, 99).is_err());
        // A decompression bomb: more than MAX_CHUNK once unpacked.
        let mut bomb = vec![1u8];
        bomb.extend(zstd::bulk::compress(&vec![0u8; MAX_CHUNK + 1], 3).unwrap());
        assert!(decode(&bomb, usize::MAX, u64::MAX).is_err());
    }

    fn arb_entry() -> impl Strategy<Value = WireEntry> {
        (
            (
                proptest::collection::vec(any::<u8>(), 0..12),
                0u8..7,
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<bool>(),
            ),
            (
                any::<i64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..6),
                any::<u64>(),
                any::<u64>(),
            ),
        )
            .prop_map(|((path, k, perm, uid, gid, size, rounded_alloc), rest)| {
                let (mtime, nsec, nlink, ino, dev, target, rdev, xd) = rest;
                WireEntry {
                    path,
                    kind: kind_of(u64::from(k)).unwrap(),
                    perm,
                    uid,
                    gid,
                    size,
                    alloc: if rounded_alloc {
                        rounded(size)
                    } else {
                        size / 3
                    },
                    mtime,
                    mtime_nsec: nsec,
                    nlink,
                    ino,
                    dev,
                    target,
                    rdev,
                    xattr_digest: xd,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn round_trip(entries in proptest::collection::vec(arb_entry(), 0..40)) {
            prop_assert_eq!(decode(&encode(&entries), entries.len(), u64::MAX).unwrap(), entries);
        }

        #[test]
        fn arbitrary_chunks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut raw = vec![0u8];
            raw.extend_from_slice(&bytes);
            let _ = decode(&raw, 1000, 1 << 20);
            let _ = decode(&bytes, 1000, 1 << 20);
        }
    }
}

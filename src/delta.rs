//! Rolling-checksum deltas (librsync format, computed by `fast_rsync`) with bounded memory.
//!
//! The pieces are exposed separately so that a remote transfer can run them on different
//! hosts: the receiver computes a [`signature`] of its old copy, the sender runs [`diff`]
//! of its new file against that signature, and the receiver runs [`apply`] on the delta.
//! [`delta_copy`] chains the three locally (`push --delta`). `fast_rsync` needs whole
//! in-memory buffers, so big files are processed in [`windows`] of the new file, each
//! matched against the same offsets of the base file widened by a margin; memory stays
//! O(window) whatever the file size. Invariants: nothing that arrives from a peer (signature
//! parameters, signatures, deltas) can make this module panic, loop forever or allocate
//! without bound: [`SigParams::validate`] and [`signature_params`] reject what
//! `fast_rsync` would panic on, and [`apply`] refuses to write more than its `limit`,
//! checking the whole command stream before it writes a byte. MD4 matches can collide, so
//! a delta may rebuild wrong data: callers must compare the returned BLAKE3 hash with the
//! source's and fall back to a whole copy on mismatch.

use std::io::{self, Write};
use std::ops::{AddAssign, Range};

use fast_rsync::{ApplyError, DiffError, Signature, SignatureOptions};

/// Default window of the new file processed at once by [`delta_copy`] (64 MiB).
pub const DEFAULT_WINDOW: usize = 64 << 20;

/// Smallest block size chosen by [`block_size`].
pub const MIN_BLOCK_SIZE: u32 = 700;

/// Largest block size chosen by [`block_size`].
pub const MAX_BLOCK_SIZE: u32 = 128 << 10;

/// Largest block size [`SigParams::validate`] accepts (from a peer, say).
pub const MAX_SIG_BLOCK_SIZE: u32 = 1 << 20;

/// Default number of MD4 bytes kept per block in a signature.
pub const DEFAULT_STRONG_LEN: u32 = 8;

/// Largest strong-hash length: the size of an MD4 digest.
pub const MAX_STRONG_LEN: u32 = 16;

/// librsync magic of an MD4 signature.
const MD4_MAGIC: u32 = 0x7273_0136;
/// librsync magic of a BLAKE2 signature (which `fast_rsync` cannot diff against).
const BLAKE2_MAGIC: u32 = 0x7273_0137;
/// librsync magic of a delta.
const DELTA_MAGIC: u32 = 0x7273_0236;
/// Signature header: magic, block size, strong length (big-endian u32 each).
const SIG_HEADER_LEN: usize = 12;
/// Each signature block entry: a 4-byte rolling checksum, then the strong hash.
const SIG_CRC_LEN: usize = 4;

// librsync delta commands.
const OP_END: u8 = 0x00;
const OP_LITERAL_1: u8 = 0x01;
const OP_LITERAL_64: u8 = 0x40;
const OP_LITERAL_N1: u8 = 0x41;
const OP_LITERAL_N8: u8 = 0x44;
const OP_COPY_N1_N1: u8 = 0x45;
const OP_COPY_N8_N8: u8 = 0x54;

/// Why a delta operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Signature parameters that `fast_rsync` cannot work with.
    #[error("bad signature parameters (block size {block_size}, strong hash length {strong_len}): {why}")]
    BadParams {
        block_size: u32,
        strong_len: u32,
        why: &'static str,
    },
    /// A serialized signature that does not parse.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// A delta whose command stream is invalid or does not fit its base.
    #[error("malformed delta: {0}")]
    MalformedDelta(String),
    /// Applying the delta would write more than the caller allowed.
    #[error("delta output of {wanted} bytes exceeds the limit of {limit} bytes")]
    OutputLimit { wanted: u64, limit: usize },
    /// Writing the output failed.
    #[error("writing delta output: {0}")]
    Io(#[from] io::Error),
}

/// The block size for a file of `len` bytes: about √len, rounded to a multiple of 8 and
/// clamped to [`MIN_BLOCK_SIZE`]`..=`[`MAX_BLOCK_SIZE`] (the lower bound is used as is).
pub fn block_size(len: u64) -> u32 {
    let rounded = (isqrt(len) + 4) / 8 * 8;
    // The clamp makes the value fit in u32.
    rounded.clamp(u64::from(MIN_BLOCK_SIZE), u64::from(MAX_BLOCK_SIZE)) as u32
}

/// ⌊√n⌋, exact for every u64 (a float estimate corrected in integers).
fn isqrt(n: u64) -> u64 {
    let mut x = (n as f64).sqrt() as u64;
    while u128::from(x) * u128::from(x) > u128::from(n) {
        x -= 1;
    }
    while u128::from(x + 1) * u128::from(x + 1) <= u128::from(n) {
        x += 1;
    }
    x
}

/// One window of a windowed delta: a range of the new file and the range of the base file
/// it is matched against (the same offsets widened by a margin, clamped; may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub new: Range<u64>,
    pub base: Range<u64>,
}

/// Splits a new file of `new_len` bytes into windows of `window` bytes (the last may be
/// shorter; a `window` of 0 counts as 1). Window i covers `new[i*W .. min((i+1)*W, new_len))`
/// and `base[i*W - W/8 .. (i+1)*W + W/8)` clamped to `0..base_len`. An empty new file gives
/// no windows. The iterator is lazy, so even a tiny window over a huge file costs no memory.
pub fn windows(new_len: u64, base_len: u64, window: usize) -> Windows {
    let w = (window as u64).max(1);
    Windows {
        next: 0,
        new_len,
        base_len,
        window: w,
        margin: w / 8,
    }
}

/// The iterator returned by [`windows`].
#[derive(Debug, Clone)]
pub struct Windows {
    next: u64,
    new_len: u64,
    base_len: u64,
    window: u64,
    margin: u64,
}

impl Iterator for Windows {
    type Item = Window;

    fn next(&mut self) -> Option<Window> {
        let start = self.next;
        if start >= self.new_len {
            return None;
        }
        let end = start.saturating_add(self.window).min(self.new_len);
        let base_end = end.saturating_add(self.margin).min(self.base_len);
        let base_start = start.saturating_sub(self.margin).min(base_end);
        self.next = end;
        Some(Window {
            new: start..end,
            base: base_start..base_end,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.new_len.saturating_sub(self.next).div_ceil(self.window);
        match usize::try_from(left) {
            Ok(n) => (n, Some(n)),
            Err(_) => (usize::MAX, None),
        }
    }
}

/// Parameters of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigParams {
    /// Bytes per block of the base file.
    pub block_size: u32,
    /// Bytes of MD4 kept per block, 1..=16.
    pub strong_len: u32,
}

impl SigParams {
    /// The default parameters for a file of `len` bytes: [`block_size`]`(len)` and
    /// [`DEFAULT_STRONG_LEN`].
    pub fn for_len(len: u64) -> SigParams {
        SigParams {
            block_size: block_size(len),
            strong_len: DEFAULT_STRONG_LEN,
        }
    }

    /// Rejects parameters `fast_rsync` would panic or misbehave on (a peer may send any).
    pub fn validate(&self) -> Result<(), DeltaError> {
        let why = if self.block_size == 0 {
            "block size is 0"
        } else if self.block_size > MAX_SIG_BLOCK_SIZE {
            "block size is over 1 MiB"
        } else if self.strong_len == 0 {
            "strong hash length is 0"
        } else if self.strong_len > MAX_STRONG_LEN {
            "strong hash length is over 16 (the MD4 digest size)"
        } else {
            return Ok(());
        };
        Err(DeltaError::BadParams {
            block_size: self.block_size,
            strong_len: self.strong_len,
            why,
        })
    }

    fn options(&self) -> SignatureOptions {
        SignatureOptions {
            block_size: self.block_size,
            crypto_hash_size: self.strong_len,
        }
    }
}

/// Bytes written and where they came from when a delta is applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes carried literally in the delta.
    pub literal: u64,
    /// Bytes copied from the base.
    pub matched: u64,
}

impl DeltaStats {
    /// Total output size, `literal + matched` (saturating).
    pub fn total(&self) -> u64 {
        self.literal.saturating_add(self.matched)
    }
}

impl AddAssign for DeltaStats {
    fn add_assign(&mut self, rhs: DeltaStats) {
        self.literal = self.literal.saturating_add(rhs.literal);
        self.matched = self.matched.saturating_add(rhs.matched);
    }
}

/// Computes the serialized MD4 signature of `base` (O(len / block_size) bytes).
pub fn signature(base: &[u8], p: SigParams) -> Result<Vec<u8>, DeltaError> {
    p.validate()?;
    Ok(Signature::calculate(base, p.options()).into_serialized())
}

/// Reads and checks the header of a serialized signature: MD4 magic, valid parameters and
/// a body made of whole block entries. [`diff`] calls it; a receiver may call it early.
pub fn signature_params(signature: &[u8]) -> Result<SigParams, DeltaError> {
    let header = signature.get(..SIG_HEADER_LEN).ok_or_else(|| {
        DeltaError::MalformedSignature(format!(
            "{} bytes, shorter than the {SIG_HEADER_LEN}-byte header",
            signature.len()
        ))
    })?;
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    match word(0) {
        MD4_MAGIC => {}
        BLAKE2_MAGIC => {
            return Err(DeltaError::MalformedSignature(
                "BLAKE2 signatures are not supported".into(),
            ))
        }
        magic => {
            return Err(DeltaError::MalformedSignature(format!(
                "bad magic {magic:#010x}"
            )))
        }
    }
    let p = SigParams {
        block_size: word(4),
        strong_len: word(8),
    };
    p.validate()?;
    let body = signature.len() - SIG_HEADER_LEN;
    let entry = SIG_CRC_LEN + p.strong_len as usize;
    if body % entry != 0 {
        return Err(DeltaError::MalformedSignature(format!(
            "body of {body} bytes is not a whole number of {entry}-byte block entries"
        )));
    }
    Ok(p)
}

/// Appends to `out` the delta that turns the signature's base into `new`.
pub fn diff(signature: &[u8], new: &[u8], out: &mut Vec<u8>) -> Result<(), DeltaError> {
    signature_params(signature)?;
    if signature.len() == SIG_HEADER_LEN {
        // No blocks (an empty base, as past the end of a shorter basis): nothing can
        // match, so all is literal, without rolling a checksum over every byte.
        out.extend_from_slice(&DELTA_MAGIC.to_be_bytes());
        for chunk in new.chunks(u32::MAX as usize) {
            out.push(OP_LITERAL_N1 + 2);
            out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out.push(OP_END);
        return Ok(());
    }
    let sig = Signature::deserialize(signature.to_vec())
        .map_err(|e| DeltaError::MalformedSignature(e.to_string()))?;
    diff_parsed(&sig, new, out)
}

fn diff_parsed(sig: &Signature, new: &[u8], out: &mut Vec<u8>) -> Result<(), DeltaError> {
    fast_rsync::diff(&sig.index(), new, out).map_err(|e| match e {
        DiffError::InvalidSignature => DeltaError::MalformedSignature(e.to_string()),
        DiffError::Io(e) => DeltaError::Io(e),
    })
}

/// Applies `delta` to `base`, writing the result to `out`. The whole command stream is
/// checked first ([`delta_stats`]): a malformed delta or one whose output would exceed
/// `limit` bytes is rejected before anything is written. A copy outside `base` is caught
/// while applying, so `out` may then have received a prefix of the output.
pub fn apply(
    base: &[u8],
    delta: &[u8],
    out: &mut impl Write,
    limit: usize,
) -> Result<DeltaStats, DeltaError> {
    let stats = delta_stats(delta)?;
    let wanted = stats.literal.checked_add(stats.matched);
    match wanted {
        Some(n) if n <= limit as u64 => {}
        _ => {
            return Err(DeltaError::OutputLimit {
                wanted: wanted.unwrap_or(u64::MAX),
                limit,
            })
        }
    }
    fast_rsync::apply_limited(base, delta, out, limit).map_err(|e| match e {
        ApplyError::Io(e) => DeltaError::Io(e),
        ApplyError::OutputLimit { wanted, .. } => DeltaError::OutputLimit {
            wanted: wanted as u64,
            limit,
        },
        other => DeltaError::MalformedDelta(other.to_string()),
    })?;
    Ok(stats)
}

/// A bounds-checked reader over a delta.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], DeltaError> {
        let avail = self.0.len();
        match usize::try_from(n) {
            Ok(n) if n <= avail => {
                let (head, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(head)
            }
            _ => Err(DeltaError::MalformedDelta(format!(
                "truncated {what}: wanted {n} bytes, {avail} left"
            ))),
        }
    }

    /// A big-endian unsigned integer of `width` (1..=8) bytes.
    fn uint(&mut self, width: usize, what: &str) -> Result<u64, DeltaError> {
        let bytes = self.take(width as u64, what)?;
        Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Parses a librsync delta's command stream without applying it: LITERAL commands count
/// as literal bytes, COPY commands as matched bytes. Rejects a bad magic, unknown or
/// truncated commands, zero-length or overflowing copies, and data after the END command.
pub fn delta_stats(delta: &[u8]) -> Result<DeltaStats, DeltaError> {
    let mut cur = Cursor(delta);
    let magic = cur.uint(4, "magic")?;
    if magic != u64::from(DELTA_MAGIC) {
        return Err(DeltaError::MalformedDelta(format!(
            "bad magic {magic:#010x}"
        )));
    }
    let overflow = || DeltaError::MalformedDelta("output size overflows 64 bits".into());
    let mut stats = DeltaStats::default();
    loop {
        let cmd = cur.uint(1, "command")? as u8;
        match cmd {
            OP_END => break,
            OP_LITERAL_1..=OP_LITERAL_N8 => {
                let n = if cmd <= OP_LITERAL_64 {
                    u64::from(cmd - OP_LITERAL_1 + 1)
                } else {
                    cur.uint(1 << (cmd - OP_LITERAL_N1), "literal length")?
                };
                cur.take(n, "literal")?;
                stats.literal = stats.literal.checked_add(n).ok_or_else(overflow)?;
            }
            OP_COPY_N1_N1..=OP_COPY_N8_N8 => {
                let mode = cmd - OP_COPY_N1_N1;
                let offset = cur.uint(1 << (mode / 4), "copy offset")?;
                let len = cur.uint(1 << (mode % 4), "copy length")?;
                if len == 0 {
                    return Err(DeltaError::MalformedDelta("zero-length copy".into()));
                }
                if offset.checked_add(len).is_none() {
                    return Err(DeltaError::MalformedDelta(format!(
                        "copy of {len} bytes at offset {offset} overflows"
                    )));
                }
                stats.matched = stats.matched.checked_add(len).ok_or_else(overflow)?;
            }
            _ => {
                return Err(DeltaError::MalformedDelta(format!(
                    "unknown command byte {cmd:#04x}"
                )))
            }
        }
    }
    if !cur.0.is_empty() {
        return Err(DeltaError::MalformedDelta(format!(
            "{} bytes after the end command",
            cur.0.len()
        )));
    }
    Ok(stats)
}

/// Splits a valid delta into deltas of at most `max` bytes each (`max` ≥ 64) that,
/// applied one after another against the same base, produce the same output. Long
/// literals are cut into several literal commands; copies are kept whole. Used to send
/// a window's delta in frames of bounded size.
pub fn split_delta(delta: &[u8], max: usize) -> Result<Vec<Vec<u8>>, DeltaError> {
    let max = max.max(64);
    let mut cur = Cursor(delta);
    let magic = cur.uint(4, "magic")?;
    if magic != u64::from(DELTA_MAGIC) {
        return Err(DeltaError::MalformedDelta(format!(
            "bad magic {magic:#010x}"
        )));
    }
    let new_piece = || DELTA_MAGIC.to_be_bytes().to_vec();
    let mut pieces = Vec::new();
    let mut piece = new_piece();
    // Room for a command of `n` bytes plus the END byte.
    let fits = |piece: &Vec<u8>, n: usize| piece.len() + n < max;
    loop {
        let start = cur.0;
        let cmd = cur.uint(1, "command")? as u8;
        match cmd {
            OP_END => break,
            OP_LITERAL_1..=OP_LITERAL_N8 => {
                let n = if cmd <= OP_LITERAL_64 {
                    u64::from(cmd - OP_LITERAL_1 + 1)
                } else {
                    cur.uint(1 << (cmd - OP_LITERAL_N1), "literal length")?
                };
                let mut data = cur.take(n, "literal")?;
                while !data.is_empty() {
                    // A literal command header is at most 5 bytes here (N4 form).
                    if !fits(&piece, 6) {
                        piece.push(OP_END);
                        pieces.push(std::mem::replace(&mut piece, new_piece()));
                    }
                    let room = max - piece.len() - 6;
                    let take = data.len().min(room).min(u32::MAX as usize);
                    piece.push(OP_LITERAL_N1 + 2);
                    piece.extend_from_slice(&(take as u32).to_be_bytes());
                    piece.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
            }
            OP_COPY_N1_N1..=OP_COPY_N8_N8 => {
                let mode = cmd - OP_COPY_N1_N1;
                cur.uint(1 << (mode / 4), "copy offset")?;
                cur.uint(1 << (mode % 4), "copy length")?;
                let raw = &start[..start.len() - cur.0.len()];
                if !fits(&piece, raw.len()) {
                    piece.push(OP_END);
                    pieces.push(std::mem::replace(&mut piece, new_piece()));
                }
                piece.extend_from_slice(raw);
            }
            _ => {
                return Err(DeltaError::MalformedDelta(format!(
                    "unknown command byte {cmd:#04x}"
                )))
            }
        }
    }
    piece.push(OP_END);
    pieces.push(piece);
    Ok(pieces)
}

/// A writer that hashes what it passes on.
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Rebuilds `new` into `out` from `base` by deltas, window by window (see [`windows`]):
/// signature of the base window, diff of the new window, apply. Returns the summed stats
/// and the BLAKE3 hash of everything written; compare it with the source's hash and fall
/// back to a whole copy on mismatch (MD4 collisions). `out` is flushed at the end.
/// Memory is O(`window`) whatever the input sizes (e.g. memory maps of huge files);
/// `window` 0 counts as 1, and block sizes follow [`block_size`] of one window's length.
pub fn delta_copy(
    base: &[u8],
    new: &[u8],
    out: &mut impl Write,
    window: usize,
) -> Result<(DeltaStats, blake3::Hash), DeltaError> {
    let params = SigParams::for_len(new.len().min(window.max(1)) as u64);
    let mut writer = HashingWriter {
        inner: out,
        hasher: blake3::Hasher::new(),
    };
    let mut stats = DeltaStats::default();
    let mut delta = Vec::new();
    for w in windows(new.len() as u64, base.len() as u64, window) {
        // Window ranges lie within the slices, so they fit in usize.
        let base_w = &base[w.base.start as usize..w.base.end as usize];
        let new_w = &new[w.new.start as usize..w.new.end as usize];
        let sig = Signature::calculate(base_w, params.options());
        delta.clear();
        diff_parsed(&sig, new_w, &mut delta)?;
        drop(sig);
        let s = apply(base_w, &delta, &mut writer, new_w.len())?;
        if s.total() != new_w.len() as u64 {
            return Err(DeltaError::MalformedDelta(format!(
                "window {}..{} rebuilt as {} bytes",
                w.new.start,
                w.new.end,
                s.total()
            )));
        }
        stats += s;
    }
    writer.flush()?;
    Ok((stats, writer.hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    #[test]
    fn block_size_values() {
        assert_eq!(block_size(0), 700);
        assert_eq!(block_size(100), 700);
        assert_eq!(block_size(696 * 696), 700);
        assert_eq!(block_size(700 * 700), 704);
        assert_eq!(block_size(1000 * 1000), 1000);
        assert_eq!(block_size(1001 * 1001), 1000);
        assert_eq!(block_size(1005 * 1005), 1008);
        assert_eq!(block_size(1 << 20), 1024);
        assert_eq!(block_size(4 << 30), 65536);
        assert_eq!(block_size(1 << 34), 131072);
        assert_eq!(block_size(1 << 50), 131072);
        assert_eq!(block_size(u64::MAX), 131072);
        for len in [1u64 << 21, 12_345_678, 9_876_543_210] {
            let b = block_size(len);
            assert_eq!(b % 8, 0);
            let r = isqrt(len) as i64;
            assert!((i64::from(b) - r).abs() <= 4, "{len}: {b} vs {r}");
        }
    }

    #[test]
    fn isqrt_is_exact() {
        for n in [
            0u64,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            u64::MAX,
            u64::MAX - 1,
            1 << 62,
        ] {
            let r = isqrt(n);
            assert!(u128::from(r) * u128::from(r) <= u128::from(n));
            assert!(u128::from(r + 1) * u128::from(r + 1) > u128::from(n));
        }
    }

    fn check_windows(new_len: u64, base_len: u64, w: usize) {
        let mut at = 0;
        for win in windows(new_len, base_len, w) {
            assert_eq!(win.new.start, at, "gap or overlap");
            assert!(win.new.end > win.new.start);
            assert!(win.new.end - win.new.start <= (w.max(1)) as u64);
            assert!(win.base.start <= win.base.end && win.base.end <= base_len);
            // The base range covers the same offsets, where the base has them.
            assert!(win.base.start <= win.new.start.min(win.base.end));
            assert!(win.base.end >= win.new.end.min(base_len));
            at = win.new.end;
        }
        assert_eq!(at, new_len);
    }

    #[test]
    fn windows_tile_new() {
        assert_eq!(windows(0, 100, 4096).count(), 0);
        assert_eq!(windows(10_000, 0, 4096).size_hint(), (3, Some(3)));
        for (n, b, w) in [
            (1, 0, 4096),
            (4096, 4096, 4096),
            (4097, 10, 4096),
            (100_000, 200_000, 4096),
            (100_000, 50_000, 1000),
            (10, 10, 0),
            (7, 7, 3),
            (u64::MAX / 2, 5, usize::MAX),
        ] {
            check_windows(n, b, w);
        }
        let ws: Vec<Window> = windows(20_000, 20_000, 8192).collect();
        assert_eq!(ws.len(), 3);
        assert_eq!(ws[1].new, 8192..16384);
        assert_eq!(ws[1].base, 7168..17408);
        assert_eq!(ws[2].base, 15360..20000);
    }

    #[test]
    fn validate_rejects_bad_params() {
        let ok = |b, s| SigParams {
            block_size: b,
            strong_len: s,
        };
        assert!(ok(700, 8).validate().is_ok());
        assert!(ok(1, 1).validate().is_ok());
        assert!(ok(1 << 20, 16).validate().is_ok());
        for (b, s) in [
            (0, 8),
            ((1 << 20) + 1, 8),
            (u32::MAX, 8),
            (700, 0),
            (700, 17),
        ] {
            assert!(matches!(
                ok(b, s).validate(),
                Err(DeltaError::BadParams { .. })
            ));
            assert!(signature(b"abc", ok(b, s)).is_err());
        }
    }

    #[test]
    fn signature_header_checks() {
        let sig = signature(&[7u8; 3000], SigParams::for_len(3000)).expect("signature");
        assert_eq!(
            signature_params(&sig).expect("parse"),
            SigParams::for_len(3000)
        );
        assert!(signature_params(&sig[..11]).is_err());
        assert!(signature_params(&sig[..sig.len() - 1]).is_err());
        let mut blake2 = sig.clone();
        blake2[3] = 0x37;
        assert!(signature_params(&blake2).is_err());
        // A zero block size would make fast_rsync's diff loop forever or panic.
        let mut zero = sig.clone();
        zero[4..8].copy_from_slice(&0u32.to_be_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            diff(&zero, b"some new data", &mut out),
            Err(DeltaError::BadParams { .. })
        ));
    }

    fn known_delta() -> Vec<u8> {
        let mut d = DELTA_MAGIC.to_be_bytes().to_vec();
        d.push(OP_LITERAL_1 + 2); // literal of 3
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&[OP_COPY_N1_N1, 5, 10]); // copy 10 at 5
        d.extend_from_slice(&[OP_COPY_N1_N1 + 5, 0x01, 0x00, 0x01, 0x2c]); // 300 at 256
        d.extend_from_slice(&[OP_LITERAL_N1, 100]);
        d.extend_from_slice(&[b'x'; 100]);
        d.push(OP_END);
        d
    }

    #[test]
    fn delta_stats_on_known_delta() {
        let d = known_delta();
        let stats = delta_stats(&d).expect("stats");
        assert_eq!(
            stats,
            DeltaStats {
                literal: 103,
                matched: 310
            }
        );
        let base: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        assert_eq!(apply(&base, &d, &mut out, 413).expect("apply"), stats);
        let mut want = b"abc".to_vec();
        want.extend_from_slice(&base[5..15]);
        want.extend_from_slice(&base[256..556]);
        want.extend_from_slice(&[b'x'; 100]);
        assert_eq!(out, want);

        // Over the limit: rejected before anything is written.
        let mut out = Vec::new();
        assert!(matches!(
            apply(&base, &d, &mut out, 412),
            Err(DeltaError::OutputLimit {
                wanted: 413,
                limit: 412
            })
        ));
        assert!(out.is_empty());
        // Copy beyond a short base.
        assert!(matches!(
            apply(&base[..100], &d, &mut Vec::new(), 1000),
            Err(DeltaError::MalformedDelta(_))
        ));
    }

    #[test]
    fn delta_stats_rejects_malformed() {
        let d = known_delta();
        let mut trailing = d.clone();
        trailing.push(0);
        let mut bad_magic = d.clone();
        bad_magic[0] ^= 1;
        let mut unknown = d[..4].to_vec();
        unknown.extend_from_slice(&[0x55, 0]);
        let mut zero_copy = d[..4].to_vec();
        zero_copy.extend_from_slice(&[OP_COPY_N1_N1, 0, 0, OP_END]);
        let mut huge_literal = d[..4].to_vec();
        huge_literal.extend_from_slice(&[
            OP_LITERAL_N8,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        for bad in [
            &d[..d.len() - 1],
            &d[..3],
            &[][..],
            &trailing,
            &bad_magic,
            &unknown,
            &zero_copy,
            &huge_literal,
        ] {
            assert!(matches!(
                delta_stats(bad),
                Err(DeltaError::MalformedDelta(_))
            ));
            assert!(apply(&[0; 64], bad, &mut Vec::new(), usize::MAX).is_err());
        }
    }

    #[test]
    fn pieces_match_delta_copy() {
        let base: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = base.clone();
        new.splice(20_000..20_010, *b"0123456789abcdef");
        new.drain(40_000..40_500);
        let mut rebuilt = Vec::new();
        let mut stats = DeltaStats::default();
        for w in windows(new.len() as u64, base.len() as u64, 8192) {
            let b = &base[w.base.start as usize..w.base.end as usize];
            let n = &new[w.new.start as usize..w.new.end as usize];
            let sig = signature(b, SigParams::for_len(8192)).expect("signature");
            let mut d = Vec::new();
            diff(&sig, n, &mut d).expect("diff");
            assert_eq!(delta_stats(&d).expect("stats").total(), n.len() as u64);
            stats += apply(b, &d, &mut rebuilt, n.len()).expect("apply");
        }
        assert_eq!(rebuilt, new);
        let mut out = Vec::new();
        let (s, h) = delta_copy(&base, &new, &mut out, 8192).expect("delta_copy");
        assert_eq!(out, new);
        assert_eq!(s, stats);
        assert_eq!(h, blake3::hash(&new));
        assert!(s.matched > 40_000, "{s:?}");
        assert!(s.literal < 8_000, "{s:?}");
    }

    #[test]
    fn delta_copy_empty_inputs() {
        let mut out = Vec::new();
        let (s, h) = delta_copy(b"", b"", &mut out, 4096).expect("empty");
        assert_eq!(
            (s, h, out.len()),
            (DeltaStats::default(), blake3::hash(b""), 0)
        );
        let (s, _) = delta_copy(b"", b"hello", &mut out, 4096).expect("no base");
        assert_eq!(out, b"hello");
        assert_eq!(s.literal, 5);
    }

    #[test]
    fn a_signature_of_no_blocks_gives_one_literal_that_applies_and_splits() {
        let new: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sig = signature(b"", SigParams::for_len(new.len() as u64)).unwrap();
        assert_eq!(sig.len(), SIG_HEADER_LEN, "no blocks");
        let mut d = Vec::new();
        diff(&sig, &new, &mut d).unwrap();
        let st = delta_stats(&d).unwrap();
        assert_eq!((st.literal, st.matched), (100_000, 0));
        let mut out = Vec::new();
        apply(b"", &d, &mut out, new.len()).unwrap();
        assert_eq!(out, new);
        let mut joined = Vec::new();
        for part in split_delta(&d, 4096).unwrap() {
            apply(b"", &part, &mut joined, new.len()).unwrap();
        }
        assert_eq!(joined, new);
        d.clear();
        diff(&sig, b"", &mut d).unwrap();
        assert_eq!(delta_stats(&d).unwrap(), DeltaStats::default());
    }

    /// `base` and a copy of it with a few overwrites, insertions and deletions.
    fn base_and_edited() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let edit = (
            any::<Index>(),
            0u8..3,
            prop::collection::vec(any::<u8>(), 1..300),
        );
        (
            prop::collection::vec(any::<u8>(), 0..65536),
            prop::collection::vec(edit, 0..8),
        )
            .prop_map(|(base, edits)| {
                let mut new = base.clone();
                for (at, kind, bytes) in edits {
                    let pos = at.index(new.len() + 1);
                    match kind {
                        0 => {
                            for (dst, src) in new[pos..].iter_mut().zip(&bytes) {
                                *dst = *src;
                            }
                        }
                        1 => {
                            new.splice(pos..pos, bytes);
                        }
                        _ => {
                            let end = (pos + bytes.len()).min(new.len());
                            new.drain(pos..end);
                        }
                    }
                }
                (base, new)
            })
    }

    fn check_round_trip(base: &[u8], new: &[u8], window: usize) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        let (stats, hash) = delta_copy(base, new, &mut out, window)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(out == new, "output differs from new");
        prop_assert_eq!(hash, blake3::hash(new));
        prop_assert_eq!(stats.total(), new.len() as u64);
        Ok(())
    }

    /// Headers of plausible and hostile signatures, with a random body.
    fn garbage_signature() -> impl Strategy<Value = Vec<u8>> {
        let magic = prop_oneof![Just(MD4_MAGIC), Just(BLAKE2_MAGIC), any::<u32>()];
        let block = prop_oneof![
            Just(0u32),
            Just(1),
            Just(7),
            Just(700),
            Just(1 << 20),
            Just((1 << 20) + 1),
            Just(u32::MAX),
            any::<u32>()
        ];
        let strong = prop_oneof![
            Just(0u32),
            1u32..=16,
            Just(17),
            Just(u32::MAX),
            any::<u32>()
        ];
        let body = prop::collection::vec(any::<u8>(), 0..600);
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            (magic, block, strong, body).prop_map(|(m, b, s, body)| {
                let mut v = Vec::new();
                for x in [m, b, s] {
                    v.extend_from_slice(&x.to_be_bytes());
                }
                v.extend_from_slice(&body);
                v
            }),
        ]
    }

    /// Deltas made of random bytes, or of plausible commands with random fields.
    fn garbage_delta() -> impl Strategy<Value = Vec<u8>> {
        let cmd = prop_oneof![
            prop::collection::vec(any::<u8>(), 1..4),
            (1u8..=64).prop_map(|n| {
                let mut v = vec![b'L'; usize::from(n) + 1];
                v[0] = OP_LITERAL_1 + n - 1;
                v
            }),
            (0u64..3000, 0u64..3000).prop_map(|(off, len)| {
                let mut v = vec![OP_COPY_N1_N1 + 10];
                v.extend_from_slice(&(off as u32).to_be_bytes());
                v.extend_from_slice(&(len as u32).to_be_bytes());
                v
            }),
        ];
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            (prop::collection::vec(cmd, 0..12), any::<bool>()).prop_map(|(cmds, end)| {
                let mut v = DELTA_MAGIC.to_be_bytes().to_vec();
                v.extend(cmds.into_iter().flatten());
                if end {
                    v.push(OP_END);
                }
                v
            }),
        ]
    }

    #[test]
    fn split_deltas_apply_to_the_same_output() {
        let base: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let mut new = base.clone();
        new[50_000..120_000]
            .iter_mut()
            .for_each(|b| *b = b.wrapping_add(7));
        new.extend_from_slice(&[3u8; 30_000]);
        let sig = signature(&base, SigParams::for_len(new.len() as u64)).unwrap();
        let mut d = Vec::new();
        diff(&sig, &new, &mut d).unwrap();
        for max in [64, 1000, 4096, 1 << 20] {
            let pieces = split_delta(&d, max).unwrap();
            let mut out = Vec::new();
            for p in &pieces {
                assert!(
                    p.len() <= max.max(64),
                    "piece of {} bytes over {max}",
                    p.len()
                );
                apply(&base, p, &mut out, new.len()).unwrap();
            }
            assert!(out == new, "max {max}");
        }
        assert!(split_delta(b"junk", 100).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip_arbitrary(
            base in prop::collection::vec(any::<u8>(), 0..65536),
            new in prop::collection::vec(any::<u8>(), 0..65536),
        ) {
            check_round_trip(&base, &new, 4096)?;
        }

        #[test]
        fn round_trip_edited((base, new) in base_and_edited()) {
            check_round_trip(&base, &new, 4096)?;
        }

        #[test]
        fn round_trip_low_entropy(
            base in prop::collection::vec(0u8..3, 0..20000),
            new in prop::collection::vec(0u8..3, 0..20000),
            window in 1usize..5000,
        ) {
            check_round_trip(&base, &new, window)?;
        }

        #[test]
        fn apply_garbage_never_panics(
            base in prop::collection::vec(any::<u8>(), 0..2048),
            delta in garbage_delta(),
            limit in 0usize..4096,
        ) {
            let mut out = Vec::new();
            if let Ok(stats) = apply(&base, &delta, &mut out, limit) {
                prop_assert_eq!(stats.total(), out.len() as u64);
                prop_assert!(out.len() <= limit);
            }
        }

        #[test]
        fn diff_garbage_signature_never_panics(
            sig in garbage_signature(),
            new in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut out = Vec::new();
            if diff(&sig, &new, &mut out).is_ok() {
                // Whatever it matched, the delta is well formed and sized like `new`.
                let stats = delta_stats(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(stats.total(), new.len() as u64);
            }
        }
    }
}

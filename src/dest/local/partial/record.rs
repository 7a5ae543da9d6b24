//! The record kept beside a partial file: the relative path and the identity (size,
//! mtime) of the source file it comes from, and the name partial files go by.

use crate::source::SourceFile;

/// Largest record read back: a path of at most PATH_MAX bytes, in hex, and three numbers.
pub(super) const MAX_ID: usize = 9 << 10;

/// The record's first line.
const MAGIC: &str = "fsync-repl partial 1";

/// What identifies the source file a partial file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Ident {
    pub fn of(src: &SourceFile) -> Ident {
        Ident {
            size: src.size,
            mtime: src.mtime.0,
            mtime_nsec: src.mtime.1,
        }
    }
}

/// The name partial files of `rel` go by (a hash of the path: any path gives a plain
/// name of 32 hex digits).
pub fn key(rel: &[u8]) -> String {
    let h = blake3::hash(rel);
    h.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) fn encode(rel: &[u8], id: Ident) -> Vec<u8> {
    let hex: String = rel.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{MAGIC}\n{} {} {}\n{hex}\n",
        id.size, id.mtime, id.mtime_nsec
    )
    .into_bytes()
}

/// A record's path and identity; `None` when it does not parse.
pub(super) fn parse(buf: &[u8]) -> Option<(Vec<u8>, Ident)> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut lines = text.strip_suffix('\n')?.split('\n');
    if lines.next()? != MAGIC {
        return None;
    }
    let mut nums = lines.next()?.split(' ');
    let id = Ident {
        size: nums.next()?.parse().ok()?,
        mtime: nums.next()?.parse().ok()?,
        mtime_nsec: nums.next()?.parse().ok().filter(|&n| n < 1_000_000_000)?,
    };
    let hex = lines.next()?.as_bytes();
    if nums.next().is_some() || lines.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let path = hex
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some((path, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_what_is_not_one() {
        let id = Ident {
            size: 1 << 30,
            mtime: -5,
            mtime_nsec: 7,
        };
        let rec = encode(b"d/e\nf", id);
        assert_eq!(parse(&rec), Some((b"d/e\nf".to_vec(), id)));
        for bad in [
            &b""[..],
            b"fsync-repl partial 1\n1 2 3\n616\n",
            b"fsync-repl partial 1\n1 2 3000000000\n61\n",
            b"fsync-repl partial 1\n1 2\n61\n",
            b"fsync-repl partial 1\n1 2 3\n61\nextra\n",
            b"fsync-repl partial 1\n1 2 3\nzz\n",
            b"fsync-repl partial 2\n1 2 3\n61\n",
            b"fsync-repl partial 1\n99999999999999999999999 2 3\n61\n",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(key(b"a").len(), 32);
        assert_ne!(key(b"a"), key(b"b"));
    }
}

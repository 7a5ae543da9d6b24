//! The content catalogue of a snapshot: `DEST/.fsync-repl/snapshots/NAME.b3`, the
//! BLAKE3 of every regular file it holds, which `verify` re-reads and compares.
//!
//! A snapshot hard-links the files of `current`, and the engine never writes a file in
//! place (invariant 2), so a file that keeps its inode keeps its content: its entry is
//! taken from the previous snapshot's catalogue, and only inodes new since then are
//! read. A snapshot of an unchanged tree hashes nothing. Reads go through the throttle
//! (invariant 6) on the snapshot's workers, at their idle priority, and leave the page
//! cache as they found it.
//!
//! The file is text, one line per file: `HASH INODE SIZE PATH`, the path escaped by
//! [`crate::text::escape`] (invertible, no spaces or newlines added), after a header
//! line. It is written to a temporary name, made durable and renamed into place before
//! the snapshot gets its final name. A catalogue that cannot be read is reported as
//! missing; nothing in it is trusted to name a path outside the snapshot.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{self as rfs, Mode, OFlags};

use crate::fsutil;
use crate::throttle::Throttle;

/// The catalogue's file name suffix beside the manifest `NAME.json`.
pub const SUFFIX: &str = ".b3";
const HEADER: &str = "fsync-repl catalogue 1";

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub hash: [u8; 32],
    pub ino: u64,
    pub size: u64,
    /// Relative to the snapshot's root.
    pub path: Vec<u8>,
}

impl Entry {
    /// Appends the entry's line to `s`.
    fn render(&self, s: &mut String) {
        use std::fmt::Write as _;
        push_hex(s, &self.hash);
        let _ = write!(s, " {} {} ", self.ino, self.size);
        s.push_str(&crate::text::escape(&self.path));
        s.push('\n');
    }
}

/// A snapshot's files and their hashes, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub entries: Vec<Entry>,
}

/// What building a catalogue cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Inodes read and hashed (not found in the previous catalogue).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

fn push_hex(out: &mut String, h: &[u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in h {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nibble(s[2 * i])? << 4 | nibble(s[2 * i + 1])?;
    }
    Some(out)
}

impl Catalogue {
    /// The text form (see the module's documentation).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(64 + self.entries.len() * 120);
        s.push_str(HEADER);
        s.push('\n');
        for e in &self.entries {
            e.render(&mut s);
        }
        s
    }

    /// Parses the text form; `None` when any line is malformed or names a path that
    /// is not a plain relative path.
    pub fn parse(text: &str) -> Option<Catalogue> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut entries = Vec::new();
        for line in lines {
            let mut f = line.splitn(4, ' ');
            let hash = unhex(f.next()?)?;
            let ino = f.next()?.parse().ok()?;
            let size = f.next()?.parse().ok()?;
            let path = crate::text::unescape(f.next()?)?;
            if !fsutil::valid_rel_path(&path) {
                return None;
            }
            entries.push(Entry {
                hash,
                ino,
                size,
                path,
            });
        }
        Some(Catalogue { entries })
    }

    /// Hash by inode (with the size recorded for it).
    pub fn by_inode(&self) -> HashMap<u64, (u64, [u8; 32])> {
        self.entries
            .iter()
            .map(|e| (e.ino, (e.size, e.hash)))
            .collect()
    }
}

/// The hash by inode of the catalogue text `text` (what a new snapshot takes from the
/// previous one), without the paths; `None` when it is malformed.
pub fn parse_inodes(text: &str) -> Option<HashMap<u64, (u64, [u8; 32])>> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut out = HashMap::with_capacity(text.len() / 100);
    for line in lines {
        let mut f = line.splitn(4, ' ');
        let hash = unhex(f.next()?)?;
        let ino = f.next()?.parse().ok()?;
        let size = f.next()?.parse().ok()?;
        out.insert(ino, (size, hash));
    }
    Some(out)
}

/// Reads the hash-by-inode map of snapshot `name`'s catalogue ([`parse_inodes`]);
/// `None` when it has none or it cannot be read.
pub fn read_inodes(dir: BorrowedFd<'_>, name: &str) -> Option<HashMap<u64, (u64, [u8; 32])>> {
    let fd = fsutil::open_beneath(
        dir,
        format!("{name}{SUFFIX}").as_bytes(),
        OFlags::RDONLY,
        Mode::empty(),
    )
    .ok()?;
    let mut s = String::new();
    io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).ok()?;
    parse_inodes(&s)
}

/// Reads the catalogue of snapshot `name` from the manifests directory (`Ok(None)`:
/// there is none; `Err` with InvalidData: it cannot be parsed).
pub fn read(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<Catalogue>> {
    let fd = match fsutil::open_beneath(
        dir,
        format!("{name}{SUFFIX}").as_bytes(),
        OFlags::RDONLY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if fsutil::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut s = String::new();
    io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s)?;
    Catalogue::parse(&s)
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed catalogue"))
}

/// Writes the catalogue of snapshot `name`: temporary name, fsync, rename.
pub fn write(
    dir: BorrowedFd<'_>,
    name: &str,
    c: &Catalogue,
    throttle: &Throttle,
) -> io::Result<()> {
    let temp = format!("{}{name}{SUFFIX}", super::TEMP_PREFIX);
    throttle.op();
    let fd = rfs::openat(
        dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    )?;
    let mut f = io::BufWriter::with_capacity(1 << 20, std::fs::File::from(fd));
    writeln!(f, "{HEADER}")?;
    let mut line = String::with_capacity(256);
    for e in &c.entries {
        line.clear();
        e.render(&mut line);
        throttle.bytes(line.len() as u64);
        f.write_all(line.as_bytes())?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    throttle.op();
    rfs::renameat(dir, temp.as_str(), dir, format!("{name}{SUFFIX}").as_str())?;
    Ok(())
}

impl super::BackupDir {
    /// DEST's directory, for reads beneath it ([`fsutil::open_beneath`]).
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The content catalogue of snapshot `name` (`None`: it has none).
    pub fn catalogue(&self, name: &str) -> super::Result<Option<Catalogue>> {
        let rel = format!("{}/{}", super::SIDECAR, super::SNAPSHOTS);
        let Some(dir) = self.dir(&rel, false)? else {
            return Ok(None);
        };
        super::io_at(
            "read catalogue in",
            &self.sub(&rel),
            read(dir.as_fd(), name),
        )
    }
}

/// BLAKE3 of the regular file at `rel` beneath `root` (never following a symlink),
/// read through the throttle; pages it brought into the cache are dropped after.
/// Returns the hash and the inode read.
pub fn hash_at(
    root: BorrowedFd<'_>,
    rel: &[u8],
    throttle: &Throttle,
) -> io::Result<([u8; 32], u64)> {
    let (fd, st) = fsutil::open_regular(root, rel)?;
    let file = std::fs::File::from(fd);
    let size = st.st_size as u64;
    let resident = crate::cache::Resident::of(&file, size);
    let h = crate::source::hash_file(&file, size, throttle)?;
    resident.release(&file, size);
    Ok((h, st.st_ino))
}

/// Builds the catalogue of the tree at `root` (a snapshot being taken) from its
/// regular files `list` (path, inode, size), taking the hash of an inode an earlier
/// catalogue holds from `known` ([`Catalogue::by_inode`]). Runs on the caller's pool.
pub fn build(
    root: BorrowedFd<'_>,
    mut list: Vec<(Vec<u8>, u64, u64)>,
    known: &HashMap<u64, (u64, [u8; 32])>,
    throttle: &Throttle,
    cancel: &AtomicBool,
) -> Result<(Catalogue, Cost), (Vec<u8>, io::Error)> {
    list.sort_unstable_by(|a, b| crate::tree::path_cmp(&a.0, &b.0));
    // Each inode new since `prev` is read once, however many names it has.
    let mut todo: HashMap<u64, (&[u8], u64)> = HashMap::new();
    for (path, ino, size) in &list {
        if known.get(ino).is_none_or(|k| k.0 != *size) {
            todo.entry(*ino).or_insert((path, *size));
        }
    }
    let (files, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let todo: Vec<(u64, (&[u8], u64))> = todo.into_iter().collect();
    let hashed: HashMap<u64, [u8; 32]> = todo
        .par_iter()
        .map(|&(ino, (path, size))| {
            if cancel.load(Ordering::Relaxed) {
                return Err((path.to_vec(), io::Error::from(io::ErrorKind::Interrupted)));
            }
            let (h, read) = hash_at(root, path, throttle).map_err(|e| (path.to_vec(), e))?;
            if read != ino {
                return Err((
                    path.to_vec(),
                    io::Error::other("replaced while it was read"),
                ));
            }
            files.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(size, Ordering::Relaxed);
            Ok((ino, h))
        })
        .collect::<Result<_, _>>()?;
    let entries = list
        .into_iter()
        .map(|(path, ino, size)| Entry {
            hash: hashed
                .get(&ino)
                .copied()
                .or_else(|| known.get(&ino).map(|k| k.1))
                .unwrap_or_default(),
            ino,
            size,
            path,
        })
        .collect();
    let cost = Cost {
        hashed_files: files.into_inner(),
        hashed_bytes: bytes.into_inner(),
    };
    Ok((Catalogue { entries }, cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regular files beneath `root` (path, inode, size), in path order; the sidecar
    /// at the root and temporary files are left out, as a snapshot leaves them out.
    fn files(
        root: BorrowedFd<'_>,
        throttle: &Throttle,
        cancel: &AtomicBool,
    ) -> io::Result<Vec<(Vec<u8>, u64, u64)>> {
        let mut out = Vec::new();
        let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            throttle.op();
            let dir = fsutil::open_dir(root, &rel)?;
            for name in fsutil::read_dir_names(dir.as_fd())? {
                if rel.is_empty() && name == crate::identity::SIDECAR {
                    continue;
                }
                let st = fsutil::stat_at(dir.as_fd(), &name)?;
                let path = crate::tree::join(&rel, &name);
                match rfs::FileType::from_raw_mode(st.st_mode) {
                    rfs::FileType::Directory => stack.push(path),
                    rfs::FileType::RegularFile if !crate::temp::is_temp_name(&name) => {
                        out.push((path, st.st_ino, st.st_size as u64))
                    }
                    _ => {}
                }
            }
        }
        out.sort_unstable_by(|a, b| crate::tree::path_cmp(&a.0, &b.0));
        Ok(out)
    }

    fn open(p: &std::path::Path) -> std::os::fd::OwnedFd {
        rfs::open(p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn text_form_round_trips_odd_names_and_refuses_escapes() {
        let c = Catalogue {
            entries: vec![Entry {
                hash: [7; 32],
                ino: 42,
                size: 5,
                path: b"a b/new\nline\\x\xff".to_vec(),
            }],
        };
        assert_eq!(Catalogue::parse(&c.render()), Some(c.clone()));
        let bad = c.render().replace("a b/", "../");
        assert_eq!(Catalogue::parse(&bad), None);
        assert_eq!(Catalogue::parse("something else\n"), None);
    }

    #[test]
    fn unchanged_inodes_are_taken_from_the_previous_catalogue() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d/.fsync-repl")).unwrap();
        std::fs::write(t.path().join("d/a"), b"hello").unwrap();
        std::fs::write(t.path().join("d/b"), b"world!").unwrap();
        std::fs::hard_link(t.path().join("d/b"), t.path().join("d/b2")).unwrap();
        std::fs::write(t.path().join("d/.fsync-repl/source"), b"x").unwrap();
        let th = Throttle::new(None, None);
        let no = AtomicBool::new(false);
        let root = open(&t.path().join("d"));
        let list = || files(root.as_fd(), &th, &no).unwrap();
        let (c1, cost) = build(root.as_fd(), list(), &HashMap::new(), &th, &no).unwrap();
        assert_eq!(cost.hashed_files, 2);
        assert_eq!(cost.hashed_bytes, 11);
        let names: Vec<&[u8]> = c1.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"b2"]);
        assert_eq!(c1.entries[0].hash, *blake3::hash(b"hello").as_bytes());
        // Nothing changed: nothing read.
        let before = th.total_bytes();
        let (c2, cost) = build(root.as_fd(), list(), &c1.by_inode(), &th, &no).unwrap();
        assert_eq!((cost, th.total_bytes()), (Cost::default(), before));
        assert_eq!(c1, c2);
        // A replaced file (a new inode) is read again.
        std::fs::write(t.path().join("d/a.new"), b"HELLO").unwrap();
        std::fs::rename(t.path().join("d/a.new"), t.path().join("d/a")).unwrap();
        let (c3, cost) = build(root.as_fd(), list(), &c2.by_inode(), &th, &no).unwrap();
        assert_eq!(cost.hashed_files, 1);
        assert_eq!(c3.entries[0].hash, *blake3::hash(b"HELLO").as_bytes());
        let m = open(t.path());
        write(m.as_fd(), "snap", &c3, &th).unwrap();
        assert_eq!(read_inodes(m.as_fd(), "snap"), Some(c3.by_inode()));
        assert_eq!(read(m.as_fd(), "snap").unwrap(), Some(c3));
        assert_eq!(read(m.as_fd(), "none").unwrap(), None);
    }
}

//! Leave the page cache as it was found: replication must not evict the users' files.
//!
//! Every byte the tool reads or writes passes through the page cache, and under
//! memory pressure the kernel makes room for it by evicting the users' hot files. So
//! before a file is read (a copy, a hash, a delta basis), [`Resident::of`] notes which
//! of its pages are already cached (`mincore` on a mapping that is never touched, so
//! nothing is faulted in); afterwards [`Resident::release`] drops only the pages that
//! were not (`POSIX_FADV_DONTNEED`). Pages the users had cached stay; pages this run
//! brought in go. Written data is dropped once durable ([`drop_written`]). With
//! `--keep-cache` none of this runs.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

/// Files above this size keep what reading them brings into the cache: their residency
/// map (a byte per page) would cost 16 MiB per worker.
const MAX_TRACKED: u64 = 64 << 30;

/// Page size for residency maps (the kernel's base page).
fn page() -> u64 {
    // SAFETY: sysconf reads a constant of the running kernel.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Which pages of a file's first `len` bytes were cached before the tool read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resident {
    /// None of them: everything read may go.
    Nothing,
    /// All of them: nothing read may go.
    All,
    /// Some: one byte per page, bit 0 set when cached.
    Some(Vec<u8>),
    /// Leave the cache alone (`--keep-cache`, or residency unknown).
    Keep,
}

impl Resident {
    /// The residency of `file`'s first `len` bytes now; [`Resident::Keep`] when it
    /// cannot be told (the file cannot be mapped).
    pub fn of(file: &File, len: u64) -> Resident {
        if len == 0 {
            return Resident::Nothing;
        }
        if len > MAX_TRACKED {
            // The map would cost a byte per page held for the whole read.
            return Resident::Keep;
        }
        match mincore(file, len) {
            Ok(v) if v.iter().all(|b| b & 1 == 0) => Resident::Nothing,
            Ok(v) if v.iter().all(|b| b & 1 == 1) => Resident::All,
            Ok(v) => Resident::Some(v),
            Err(_) => Resident::Keep,
        }
    }

    /// Drops from the cache the pages of `file` that were not cached when `self` was
    /// taken (clean ones: written data must be durable first).
    pub fn release(&self, file: &File, len: u64) {
        let advise = |off: u64, n: u64| {
            let _ = rustix::fs::fadvise(
                file.as_fd(),
                off,
                std::num::NonZeroU64::new(n),
                rustix::fs::Advice::DontNeed,
            );
        };
        match self {
            Resident::Nothing => advise(0, len),
            Resident::Some(map) => {
                let p = page();
                let mut k = 0;
                while k < map.len() {
                    if map[k] & 1 == 1 {
                        k += 1;
                        continue;
                    }
                    let start = k;
                    while k < map.len() && map[k] & 1 == 0 {
                        k += 1;
                    }
                    advise(start as u64 * p, (k - start) as u64 * p);
                }
            }
            Resident::All | Resident::Keep => {}
        }
    }
}

/// The `mincore` map of a file's first `len` bytes, from a read-only shared mapping
/// that is never touched (mapping does not fault pages in).
fn mincore(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let map_len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
    // SAFETY: a read-only shared mapping of a file we hold open, never dereferenced
    // here; only its address range is handed to mincore. A file truncated meanwhile
    // makes mincore fail (ENOMEM), never a fault.
    let map = unsafe { memmap2::MmapOptions::new().len(map_len).map(file)? };
    let pages = map_len.div_ceil(page() as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map_len` bytes and `vec` has one byte per
    // page of it, as mincore(2) requires.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map_len, vec.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec)
}

/// A file read on the run's behalf: the pages its reads brought into the cache are
/// dropped when it is dropped (it derefs to the `File`).
#[derive(Debug)]
pub struct Tracked {
    file: File,
    len: u64,
    resident: Resident,
}

impl Tracked {
    /// Notes `file`'s residency now (unless `keep`: then nothing is dropped).
    pub fn new(file: File, len: u64, keep: bool) -> Tracked {
        let resident = if keep {
            Resident::Keep
        } else {
            Resident::of(&file, len)
        };
        Tracked {
            file,
            len,
            resident,
        }
    }
}

impl std::ops::Deref for Tracked {
    type Target = File;
    fn deref(&self) -> &File {
        &self.file
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.resident.release(&self.file, self.len);
    }
}

/// Whether the filesystem of `fd` keeps its files in the page cache itself (tmpfs,
/// ramfs): there, dropping pages frees nothing and only costs system calls.
pub fn memory_backed(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    rustix::fs::fstatfs(fd).is_ok_and(|s| matches!(s.f_type as u64, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// Drops the cached pages of a file this run wrote, once its data is durable (the
/// replica must not fill the secondary's cache either).
pub fn drop_written(file: &File) {
    let _ = rustix::fs::fadvise(file.as_fd(), 0, None, rustix::fs::Advice::DontNeed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn cached_pages(f: &File, len: u64) -> usize {
        mincore(f, len)
            .unwrap()
            .iter()
            .filter(|b| *b & 1 == 1)
            .count()
    }

    #[test]
    fn only_the_pages_brought_in_are_dropped() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let len = 64 * page();
        std::fs::write(&path, vec![1u8; len as usize]).unwrap();
        let f = File::open(&path).unwrap();
        // Start from nothing cached, then cache the first half as a user would.
        f.sync_all().unwrap();
        Resident::Nothing.release(&f, len);
        if !crate::require(
            cached_pages(&f, len) == 0,
            "/var/tmp that drops cached pages",
        ) {
            return;
        }
        // Without read-ahead, so that exactly the half read is cached.
        rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::Random).unwrap();
        let mut half = vec![0u8; (len / 2) as usize];
        (&f).read_exact(&mut half).unwrap();
        assert_eq!(cached_pages(&f, len), 32);
        let before = Resident::of(&f, len);
        assert!(matches!(before, Resident::Some(_)), "{before:?}");
        // The tool reads all of it, then releases what it brought in.
        let mut all = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(cached_pages(&f, len), 64);
        before.release(&f, len);
        let after = mincore(&f, len).unwrap();
        assert!(
            after[..32].iter().all(|b| b & 1 == 1),
            "the user's pages went"
        );
        assert!(
            after[32..].iter().all(|b| b & 1 == 0),
            "the run's pages stayed"
        );
    }
}

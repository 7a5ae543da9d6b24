//! Read-only access to the source tree (invariant 1).
//!
//! Files are opened beneath the source root without following symlinks, read-only,
//! with `O_NOATIME` where permitted, and only when they are regular files (a FIFO is
//! never opened for reading). A file is stat'ed before and after it is read; a
//! difference means it changed under us and the copy must not be put in place.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::fsutil;
use crate::plan::Hash;
use crate::throttle::Throttle;

/// The source tree's root.
#[derive(Debug)]
pub struct Source {
    root: OwnedFd,
    path: PathBuf,
    /// Leave in the cache what reading brought in (`--keep-cache`).
    keep_cache: bool,
    /// The root's device when its filesystem lives in memory (tmpfs): its files'
    /// pages are their data, and are left alone.
    memory_dev: Option<u64>,
}

/// An open source file and its state when opened.
#[derive(Debug)]
pub struct SourceFile {
    pub file: File,
    pub size: u64,
    /// Fewer blocks allocated than the size needs: has holes.
    pub sparse: bool,
    pub dev: u64,
    /// Permission bits, owner and mtime when opened: the metadata that belongs with
    /// the bytes read from it (not an earlier scan's).
    pub perm: u32,
    pub owner: (u32, u32),
    pub mtime: (i64, u32),
    before: (i64, i64, i64, i64, u64),
    /// What was cached before this file was read: the rest is dropped with it.
    resident: crate::cache::Resident,
}

impl Drop for SourceFile {
    fn drop(&mut self) {
        self.resident.release(&self.file, self.size);
    }
}

/// What tells a file's content changed or was replaced: its mtime, ctime and size.
pub(crate) fn fingerprint(st: &rustix::fs::Stat) -> (i64, i64, i64, i64, u64) {
    (
        st.st_mtime,
        st.st_mtime_nsec as i64,
        st.st_ctime,
        st.st_ctime_nsec as i64,
        st.st_size as u64,
    )
}

impl SourceFile {
    /// Wraps an already open regular file and its `fstat`.
    pub fn from_parts(file: File, st: &rustix::fs::Stat) -> SourceFile {
        SourceFile {
            file,
            size: st.st_size as u64,
            sparse: (st.st_blocks as u64) * 512 < st.st_size as u64,
            dev: st.st_dev,
            perm: st.st_mode & 0o7777,
            owner: (st.st_uid, st.st_gid),
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            before: fingerprint(st),
            resident: crate::cache::Resident::Keep,
        }
    }

    /// Notes what of the file is cached now, so that dropping it drops only the pages
    /// its reads brought in.
    pub fn tracking_cache(mut self) -> SourceFile {
        self.resident = crate::cache::Resident::of(&self.file, self.size);
        self
    }

    /// Turns off the kernel's read-ahead for this file, so the disk reads only what the
    /// throttle let through: with a large `read_ahead_kb` one throttled read of a big
    /// file would otherwise pull megabytes past the limit.
    pub fn no_readahead(&self) {
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::Random);
    }

    /// True if the file still looks as it did when opened (size, mtime, ctime).
    pub fn unchanged(&self) -> io::Result<bool> {
        let st = rustix::fs::fstat(&self.file)?;
        Ok(fingerprint(&st) == self.before)
    }
}

impl Source {
    /// Opens the source root directory.
    pub fn open(path: &Path) -> io::Result<Source> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let memory_dev = crate::cache::memory_backed(root.as_fd())
            .then(|| rustix::fs::fstat(&root).map(|s| s.st_dev).ok())
            .flatten();
        Ok(Source {
            root,
            path: path.to_path_buf(),
            keep_cache: false,
            memory_dev,
        })
    }

    /// With `keep` the page cache keeps what reading brought in (`--keep-cache`).
    pub fn keep_cache(mut self, keep: bool) -> Source {
        self.keep_cache = keep;
        self
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, rel: &[u8]) -> io::Result<SourceFile> {
        let (fd, st) = fsutil::open_source_file(self.root.as_fd(), rel)?;
        Ok(self.wrap(fd, &st))
    }

    /// [`Source::open_file`], opened in its directory from (and kept in) `dirs`: a
    /// worker copying files in path order opens each directory once.
    pub fn open_file_in(&self, dirs: &mut fsutil::DirCache, rel: &[u8]) -> io::Result<SourceFile> {
        let dir = dirs.open(self.root.as_fd(), crate::tree::parent(rel))?;
        let (fd, st) = fsutil::open_source_file(dir.as_fd(), crate::tree::file_name(rel))?;
        Ok(self.wrap(fd, &st))
    }

    /// An opened source file, tracking the pages it brings into the cache unless they
    /// are to stay (`--keep-cache`, or a source in memory).
    fn wrap(&self, fd: std::os::fd::OwnedFd, st: &rustix::fs::Stat) -> SourceFile {
        let f = SourceFile::from_parts(File::from(fd), st);
        if self.keep_cache || self.memory_dev == Some(f.dev) {
            f
        } else {
            f.tracking_cache()
        }
    }

    /// Extended attributes of a source directory (`rel` empty: the root).
    pub fn dir_xattrs(&self, rel: &[u8]) -> io::Result<fsutil::Xattrs> {
        let dir = fsutil::open_dir(self.root.as_fd(), rel)?;
        fsutil::xattrs_of_fd(dir.as_fd())
    }

    /// BLAKE3 of a source file's content, read through the throttle.
    pub fn hash(&self, rel: &[u8], throttle: &Throttle) -> Option<Hash> {
        let f = self.open_file(rel).ok()?;
        hash_file(&f.file, f.size, throttle).ok()
    }
}

/// BLAKE3 of an open file, read in throttle-sized chunks (memory stays bounded).
pub fn hash_file(file: &File, size: u64, throttle: &Throttle) -> io::Result<Hash> {
    use std::os::unix::fs::FileExt;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; (size as usize).clamp(1, throttle.chunk().min(1 << 20))];
    let mut off = 0u64;
    loop {
        let n = throttle.io(|| file.read_at(&mut buf, off))?;
        if n == 0 {
            break;
        }
        throttle.bytes(n as u64);
        h.update(&buf[..n]);
        off += n as u64;
    }
    Ok(*h.finalize().as_bytes())
}

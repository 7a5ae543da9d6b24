//! A destination directory on this machine: confined, atomic, throttled.
//!
//! Every operation resolves its parent directory beneath the root with
//! [`fsutil::open_dir`] (no symlink followed, paths longer than PATH_MAX in chunks)
//! and acts on a single validated name through that descriptor (invariant 3). File data
//! is written to `.<name>.fsync-tmp.<random>` beside the target, its metadata set on the
//! open descriptor, made durable, then renamed over the target (invariants 2 and 4).
//! All bytes and operations pass the run's [`Throttle`] (invariant 6).

mod data;
pub mod partial;
mod remove;
mod temp_file;
pub use data::{data_segments, map_range, read_chunks, source_range, MapOrEmpty, Tee};
pub use temp_file::TempFile;

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::{
    DataMode, DataStats, Destination, FileWrite, ListError, PairError, PutError, SetMeta, Space,
    Staged,
};
use crate::cache::Tracked;
use crate::fsutil;
use crate::identity::{MAX_RECORD, RECORD, SIDECAR};
use crate::options::FsyncMode;
use crate::plan::Hash;
use crate::scan::{self, ScanOptions, Scanned};
use crate::source::{hash_file, SourceFile};
use crate::throttle::Throttle;
use crate::tree::{self, Kind};

/// A local destination rooted at an open directory.
#[derive(Debug)]
pub struct LocalDest {
    root: OwnedFd,
    path: PathBuf,
    dev: u64,
    fsync: FsyncMode,
    throttle: Arc<Throttle>,
    reflink_ok: AtomicBool,
    seq: AtomicU64,
    salt: u32,
    cancel: Arc<AtomicBool>,
    /// Leave what is read and written in the page cache (`--keep-cache`).
    keep_cache: bool,
    /// Start each file's writeback as it is finished (not on a filesystem in memory).
    writeback: bool,
    /// Partial files of this run (see [`partial`]).
    partials: partial::State,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// Splits a validated relative path into (parent, name).
fn split(rel: &[u8]) -> io::Result<(&[u8], &[u8])> {
    if !fsutil::valid_rel_path(rel) {
        return Err(invalid("invalid relative path"));
    }
    Ok((tree::parent(rel), tree::file_name(rel)))
}

fn ts(sec: i64, nsec: u32) -> Timespec {
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    }
}

fn times(meta: &SetMeta) -> Timestamps {
    Timestamps {
        last_access: ts(meta.mtime, meta.mtime_nsec),
        last_modification: ts(meta.mtime, meta.mtime_nsec),
    }
}

impl LocalDest {
    /// Opens (creating if missing) the destination directory; with `opts.no_follow_dest`
    /// a symlink in its place is refused. `cancel` is polled between chunks of large
    /// copies, so an interrupt does not wait for a big file to finish.
    pub fn open(
        path: &Path,
        opts: &crate::options::Options,
        throttle: Arc<Throttle>,
        cancel: Arc<AtomicBool>,
    ) -> io::Result<LocalDest> {
        std::fs::create_dir_all(path)?;
        let follow = if opts.no_follow_dest {
            OFlags::NOFOLLOW
        } else {
            OFlags::empty()
        };
        let root = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | follow,
            Mode::empty(),
        )?;
        let fsync = opts.fsync;
        let dev = rfs::fstat(&root)?.st_dev;
        // A DEST in memory (tmpfs) has no cache to spare and nothing to write back.
        let in_memory = crate::cache::memory_backed(root.as_fd());
        let keep_cache = opts.keep_cache || in_memory;
        Ok(LocalDest {
            root,
            path: path.to_path_buf(),
            dev,
            fsync,
            throttle,
            reflink_ok: AtomicBool::new(true),
            seq: AtomicU64::new(0),
            salt: temp_salt(),
            cancel,
            keep_cache,
            writeback: !in_memory,
            partials: Default::default(),
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        if !rel.is_empty() && !fsutil::valid_rel_path(rel) {
            return Err(invalid("invalid relative path"));
        }
        fsutil::open_dir(self.root.as_fd(), rel)
    }

    /// A fresh temporary name for `name` (see [`crate::temp::name`]).
    fn temp_name(&self, name: &[u8]) -> Vec<u8> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        crate::temp::name(name, self.salt, n)
    }

    fn create_temp(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<(Vec<u8>, File), PutError> {
        loop {
            let tmp = self.temp_name(name);
            self.throttle.op();
            match rfs::openat(
                dir,
                tmp.as_slice(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((tmp, File::from(fd))),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(PutError::dest("create temporary file")(e.into())),
            }
        }
    }

    /// Applies owner, mode and times to an open temporary file (owner first: chown
    /// clears set-id bits).
    fn apply_meta_fd(&self, fd: BorrowedFd<'_>, meta: &SetMeta) -> io::Result<()> {
        if let Some((uid, gid)) = meta.owner {
            rfs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(meta.perm))?;
        rfs::futimens(fd, &times(meta))?;
        Ok(())
    }

    fn apply_meta_at(&self, dir: BorrowedFd<'_>, name: &[u8], meta: &SetMeta) -> io::Result<()> {
        if let Some((uid, gid)) = meta.owner {
            rfs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        match meta.kind {
            Kind::Symlink => {}
            Kind::File => {
                // Through an O_PATH descriptor: chmod by name could follow a symlink
                // swapped in, and opening the entry could open a FIFO or a device.
                fsutil::chmod_regular(dir, name, Mode::from_raw_mode(meta.perm))?;
            }
            _ => {
                // FIFOs and devices are never opened; fchmodat2 refuses nothing but
                // symlinks with AT_SYMLINK_NOFOLLOW, so check the kind first.
                let st = fsutil::stat_at(dir, name)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    return Err(invalid("a symlink appeared where a special file was"));
                }
                rfs::chmodat(dir, name, Mode::from_raw_mode(meta.perm), AtFlags::empty())?;
            }
        }
        rfs::utimensat(dir, name, &times(meta), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// The regular file the destination holds at `rel`, with its length (a delta basis).
    /// Anything else (a FIFO, a device) is never opened ([`fsutil::open_regular`]).
    /// The pages its reads bring into the cache go when it is dropped.
    pub fn open_old(&self, rel: &[u8]) -> Option<(Tracked, u64)> {
        if !fsutil::valid_rel_path(rel) {
            return None;
        }
        let (fd, st) = fsutil::open_regular(self.root.as_fd(), rel).ok()?;
        let len = st.st_size as u64;
        Some((Tracked::new(File::from(fd), len, self.keep_cache), len))
    }

    /// Accounts bytes read by the caller on the destination's behalf (delta bases).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Renames `tmp` over `name` in one directory.
    fn rename_into_place(&self, dir: BorrowedFd<'_>, tmp: &[u8], name: &[u8]) -> io::Result<()> {
        self.throttle.op();
        rfs::renameat(dir, tmp, dir, name)?;
        Ok(())
    }
}

/// A staged file's names are single components and its temporary name is one of ours.
fn valid_staged(s: &Staged) -> bool {
    fsutil::valid_name(&s.name)
        && fsutil::valid_name(&s.tmp)
        && crate::temp::is_temp_name(&s.tmp)
        && (s.dir.is_empty() || fsutil::valid_rel_path(&s.dir))
}

/// Per-run randomness for temporary names, so two runs never pick the same name.
fn temp_salt() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    std::process::id().wrapping_mul(2654435761) ^ t
}

impl LocalDest {
    /// [`Destination::discard`], the file's directory from (and kept in) `dirs`.
    fn discard_in(&self, dirs: &mut fsutil::DirCache, staged: &Staged) {
        // A stop removes what was in flight at once, however low the limits are.
        self.discard_with(dirs, staged, !self.cancelled());
    }

    /// Removes a file staged by a session that ended (its client stopped or went away)
    /// at once, as after a stop.
    pub fn discard_at_end(&self, staged: &Staged) {
        self.discard_with(&mut fsutil::DirCache::default(), staged, false);
    }

    fn discard_with(&self, dirs: &mut fsutil::DirCache, staged: &Staged, throttled: bool) {
        if !valid_staged(staged) {
            return;
        }
        if let Ok(dir) = dirs.open(self.root.as_fd(), &staged.dir) {
            if throttled {
                self.throttle.op();
            }
            let _ = rfs::unlinkat(&*dir, staged.tmp.as_slice(), AtFlags::empty());
        }
        self.unparked(staged);
    }

    /// Writes a file's data from the source into a temporary file beside `rel`, the
    /// file's directory from (and kept in) `dirs` ([`Destination::start_file`]).
    fn stage_file(
        &self,
        dirs: &mut fsutil::DirCache,
        f: FileWrite<'_>,
    ) -> Result<(Staged, DataStats), PutError> {
        let src = f.src;
        if f.mode == DataMode::Whole && partial::resumable(src.size, src.sparse) {
            if let Some(r) = self.stage_resumable(f.rel, src, f.meta, f.xattrs) {
                return r;
            }
        }
        let mut t = self.begin_temp_in(dirs, f.rel)?;
        let result = (|| {
            let stats = match f.mode {
                DataMode::Whole => self.copy_whole(src, &t.file)?,
                DataMode::Delta => {
                    self.copy_delta(t.dir.as_fd(), &t.staged.name, src, &mut t.file)?
                }
            };
            if !src.unchanged().map_err(PutError::Source)? {
                return Err(PutError::SourceChanged);
            }
            let x = if f.xattrs {
                fsutil::xattrs_of_fd(src.file.as_fd()).map_err(PutError::Source)?
            } else {
                Vec::new()
            };
            Ok((stats, x))
        })();
        match result {
            Ok((stats, x)) => Ok((self.finish_temp(t, f.meta, &x)?, stats)),
            Err(e) => {
                self.abort_temp(t);
                Err(e)
            }
        }
    }
}

impl Destination for LocalDest {
    fn list(&self, opts: &ScanOptions) -> Result<Scanned, ListError> {
        let opts = ScanOptions {
            throttle: Some(self.throttle.clone()),
            ..opts.clone()
        };
        scan::scan(self.root.as_fd(), &opts).map_err(ListError::Unreadable)
    }

    fn list_with_source(
        &self,
        src: BorrowedFd<'_>,
        src_opts: &ScanOptions,
        opts: &ScanOptions,
        keep_from: u64,
    ) -> Option<Result<scan::Paired, PairError>> {
        let opts = ScanOptions {
            throttle: Some(self.throttle.clone()),
            ..opts.clone()
        };
        Some(
            scan::scan_pair(src, src_opts, self.root.as_fd(), &opts, keep_from)
                .map_err(PairError::Source),
        )
    }

    fn space(&self) -> io::Result<Space> {
        Ok(Space::of(&rfs::fstatvfs(&self.root)?))
    }

    fn hash(&self, rel: &[u8]) -> Option<Hash> {
        let (file, len) = self.open_old(rel)?;
        hash_file(&file, len, &self.throttle).ok()
    }

    fn remove(&self, rel: &[u8], kind: Kind) -> io::Result<()> {
        self.remove_entry(rel, kind)
    }

    fn remove_in(
        &self,
        dir: &[u8],
        names: &[(&[u8], Kind)],
        done: &mut dyn FnMut(usize, io::Result<()>),
    ) {
        self.remove_files_in(dir, names, done)
    }

    fn remove_tree(&self, rel: &[u8]) -> io::Result<()> {
        self.remove_subtree(rel)
    }

    fn mkdir(&self, rel: &[u8], perm: u32) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        self.throttle.op();
        match rfs::mkdirat(&dir, name, Mode::from_raw_mode((perm | 0o700) & 0o7777)) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                let st = fsutil::stat_at(dir.as_fd(), name)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    Ok(())
                } else {
                    Err(io::Error::from(rustix::io::Errno::EXIST))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        let fdir = self.dir(fp)?;
        let tdir = self.dir(tp)?;
        self.throttle.op();
        rfs::renameat(&fdir, fname, &tdir, tname)?;
        Ok(())
    }

    fn start_file(
        &self,
        dirs: &mut fsutil::DirCache,
        f: FileWrite<'_>,
    ) -> Result<crate::dest::Started<'_>, PutError> {
        self.stage_file(dirs, f)
            .map(|(s, stats)| crate::dest::Started::Done(s, stats))
    }

    fn stage_local_copy(
        &self,
        rel: &[u8],
        from: &[u8],
        meta: &SetMeta,
    ) -> Result<Staged, PutError> {
        if !fsutil::valid_rel_path(from) {
            return Err(PutError::dest("local copy")(invalid(
                "invalid relative path",
            )));
        }
        // A name from the wire: never open a FIFO or a device for it.
        let (fd, st) = fsutil::open_regular(self.root.as_fd(), from)
            .map_err(PutError::dest("open local copy source"))?;
        let src = SourceFile::from_parts(File::from(fd), &st);
        let dirs = &mut fsutil::DirCache::default();
        let f = FileWrite {
            rel,
            src: &src,
            meta,
            mode: DataMode::Whole,
            xattrs: false,
        };
        self.stage_file(dirs, f).map(|(s, _)| s)
    }

    fn source_record(&self) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let path = [SIDECAR, RECORD].join(&b'/');
        // Never anything but a regular file, even for a moment.
        let file = match fsutil::open_regular(self.root.as_fd(), &path) {
            Ok((fd, _)) => File::from(fd),
            Err(e) if fsutil::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.throttle.op();
        let mut buf = Vec::new();
        file.take(MAX_RECORD as u64 + 1).read_to_end(&mut buf)?;
        if buf.len() > MAX_RECORD {
            return Err(invalid("the source record is too large"));
        }
        Ok(Some(buf))
    }

    fn set_source_record(&self, record: &[u8]) -> io::Result<()> {
        if record.len() > MAX_RECORD {
            return Err(invalid("the source record is too large"));
        }
        self.throttle.op();
        match rfs::mkdirat(&self.root, SIDECAR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = self.dir(SIDECAR)?;
        self.remove_sidecar_temps(dir.as_fd())?;
        let (tmp, file) = self.create_temp(dir.as_fd(), RECORD).map_err(|e| match e {
            PutError::Dest { err, .. } => err,
            PutError::NoSpace => rustix::io::Errno::NOSPC.into(),
            other => io::Error::other(other.to_string()),
        })?;
        let written = std::os::unix::fs::FileExt::write_all_at(&file, record, 0)
            .and_then(|()| file.sync_all())
            .and_then(|()| self.rename_into_place(dir.as_fd(), &tmp, RECORD));
        if let Err(e) = written {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        self.throttle.op();
        rfs::fsync(&dir)?;
        Ok(())
    }

    fn commit(&self, staged: &[Staged]) -> io::Result<Vec<(usize, io::Error)>> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        // Names may come from the wire: each must be one plain component, the temporary
        // one of this tool's making.
        if let Some(bad) = staged.iter().find(|s| !valid_staged(s)) {
            return Err(invalid(&format!("invalid staged file {:?}", bad.name)));
        }
        if self.fsync == FsyncMode::Batch {
            self.throttle.op();
            self.throttle.io(|| rfs::syncfs(&self.root))?;
        }
        let drop_pages = self.fsync == FsyncMode::Batch && !self.keep_cache;
        let mut failed = Vec::new();
        // Staged files come in path order: consecutive ones share their directory.
        let mut dirs = fsutil::DirCache::default();
        for (k, s) in staged.iter().enumerate() {
            if self.cancelled() {
                // A signal: what is renamed stays new, the rest stays old and goes.
                for (k, s) in staged.iter().enumerate().skip(k) {
                    self.discard_in(&mut dirs, s);
                    failed.push((k, io::ErrorKind::Interrupted.into()));
                }
                break;
            }
            let result = dirs.open(self.root.as_fd(), &s.dir).and_then(|dir| {
                if drop_pages {
                    // Durable now: its pages need not stay in the secondary's cache.
                    // Names may come from the wire: a regular file only, never a device.
                    if let Ok((f, _)) = fsutil::open_regular(dir.as_fd(), &s.tmp) {
                        crate::cache::drop_written(&File::from(f));
                    }
                }
                self.rename_into_place(dir.as_fd(), &s.tmp, &s.name)
                    .inspect_err(|_| {
                        let _ = rfs::unlinkat(&*dir, s.tmp.as_slice(), AtFlags::empty());
                    })
            });
            match result {
                Ok(()) => self.landed(s),
                Err(e) if fsutil::is_dest_wide(&e) => return Err(e),
                Err(e) => failed.push((k, e)),
            }
        }
        Ok(failed)
    }

    fn discard(&self, staged: &Staged) {
        self.discard_in(&mut fsutil::DirCache::default(), staged);
    }

    fn link(&self, rel: &[u8], leader: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let (lparent, lname) = split(leader)?;
        let dir = self.dir(parent)?;
        let ldir = self.dir(lparent)?;
        let tmp = self.temp_name(name);
        self.throttle.op();
        rfs::linkat(&ldir, lname, &dir, tmp.as_slice(), AtFlags::empty())?;
        self.rename_into_place(dir.as_fd(), &tmp, name)?;
        // rename(2) does nothing when both names are already the same inode.
        if rfs::statat(&dir, tmp.as_slice(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
        }
        Ok(())
    }

    fn symlink(&self, rel: &[u8], target: &[u8], meta: &SetMeta) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        let tmp = self.temp_name(name);
        self.throttle.op();
        rfs::symlinkat(target, &dir, tmp.as_slice())?;
        if let Err(e) = self.apply_meta_at(dir.as_fd(), &tmp, meta) {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        self.rename_into_place(dir.as_fd(), &tmp, name)
    }

    fn mknod(&self, rel: &[u8], meta: &SetMeta, rdev: u64) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        let tmp = self.temp_name(name);
        let ft = match meta.kind {
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
            Kind::CharDev => FileType::CharacterDevice,
            Kind::BlockDev => FileType::BlockDevice,
            _ => return Err(invalid("not a special file")),
        };
        self.throttle.op();
        rfs::mknodat(
            &dir,
            tmp.as_slice(),
            ft,
            Mode::from_raw_mode(meta.perm),
            rdev,
        )?;
        if let Err(e) = self.apply_meta_at(dir.as_fd(), &tmp, meta) {
            let _ = rfs::unlinkat(&dir, tmp.as_slice(), AtFlags::empty());
            return Err(e);
        }
        self.rename_into_place(dir.as_fd(), &tmp, name)
    }

    fn set_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        self.throttle.op();
        self.apply_meta_at(dir.as_fd(), name, meta)
    }

    fn set_dir_xattrs(&self, rel: &[u8], xattrs: &fsutil::Xattrs) -> io::Result<()> {
        let dir = self.dir(rel)?;
        let current = fsutil::xattrs_of_fd(dir.as_fd())?;
        for (name, _) in current
            .iter()
            .filter(|(n, _)| !xattrs.iter().any(|(m, _)| m == n))
        {
            self.throttle.op();
            rfs::fremovexattr(&dir, name.as_slice())?;
        }
        for (name, value) in xattrs.iter().filter(|x| !current.contains(x)) {
            self.throttle.op();
            rfs::fsetxattr(&dir, name.as_slice(), value, rfs::XattrFlags::empty())?;
        }
        Ok(())
    }

    fn set_dir_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        let dir = self.dir(rel)?;
        self.throttle.op();
        self.apply_meta_fd(dir.as_fd(), meta)
    }

    fn completed(&self) -> io::Result<()> {
        self.clear_partials()
    }

    fn finish(&self) -> io::Result<()> {
        if self.fsync != FsyncMode::None {
            self.throttle.op();
            self.throttle.io(|| rfs::syncfs(&self.root))?;
        }
        Ok(())
    }
}

/// Unit tests' destination: default options, no limits.
#[cfg(test)]
impl LocalDest {
    pub fn for_tests(path: &Path) -> LocalDest {
        let throttle = Arc::new(Throttle::new(None, None));
        LocalDest::open(
            path,
            &crate::options::Options::default(),
            throttle,
            Arc::default(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_discarded_temporary_file_is_removed_through_the_throttle() {
        let t = tempfile::tempdir().unwrap();
        let d = LocalDest::for_tests(t.path());
        let temp = d.begin_temp(b"f").unwrap();
        let staged = temp.staged.clone();
        drop(temp);
        let tmp = t.path().join(std::ffi::OsStr::from_bytes(&staged.tmp));
        assert!(tmp.exists());
        let before = d.throttle.total_ops();
        d.discard(&staged);
        assert!(!tmp.exists(), "the temporary file is gone");
        assert_eq!(
            d.throttle.total_ops(),
            before + 1,
            "its unlink was accounted"
        );
        // What a session leaves when it ends goes at once, as after a stop.
        let temp = d.begin_temp(b"g").unwrap();
        let staged = temp.staged.clone();
        drop(temp);
        let before = d.throttle.total_ops();
        d.discard_at_end(&staged);
        assert!(!t
            .path()
            .join(std::ffi::OsStr::from_bytes(&staged.tmp))
            .exists());
        assert_eq!(d.throttle.total_ops(), before, "not held by the throttle");
    }
}

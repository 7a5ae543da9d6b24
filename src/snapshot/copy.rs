//! Hard-link copies and removals of whole trees, in parallel and throttled.
//!
//! A copy recreates every directory (created private, given its final mode, owner and
//! times once its contents are in), recreates every symlink (so a metadata change to
//! the original can never reach the copy) and hard-links everything else. Each worker
//! opens the directories it works on by their path beneath the two roots with
//! [`fsutil::open_dir`] (no symlink followed, never outside a root) and acts on single
//! names read from the directory, so at most a few descriptors per worker are open
//! whatever the depth. Every directory read, link, unlink, mkdir and symlink passes the
//! throttle's operations limiter (invariant 6). The source tree is only read. Temporary
//! files of a push or watch writing into the source meanwhile are left out: they are not
//! part of the replica until renamed, so each file copied is old or new.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, Timestamps};

use crate::fsutil;
use crate::throttle::Throttle;
use crate::tree;

/// A failure with the relative path and operation it concerns.
#[derive(Debug)]
pub struct TreeError {
    pub op: &'static str,
    pub rel: Vec<u8>,
    pub source: io::Error,
}

type Result<T> = std::result::Result<T, TreeError>;

fn at<T>(op: &'static str, rel: &[u8], r: io::Result<T>) -> Result<T> {
    r.map_err(|source| TreeError {
        op,
        rel: rel.to_vec(),
        source,
    })
}

fn interrupted(rel: &[u8]) -> TreeError {
    TreeError {
        op: "interrupted at",
        rel: rel.to_vec(),
        source: io::Error::from(io::ErrorKind::Interrupted),
    }
}

/// What a copy found.
#[derive(Debug, Default)]
pub struct Counts {
    pub files: AtomicU64,
    pub dirs: AtomicU64,
    pub symlinks: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes of files with no other name than the one copied (nothing else holds them).
    pub added: AtomicU64,
    /// (inode, link count, size) of files with several names, to settle at the end.
    shared: Mutex<Vec<(u64, u64, u64)>>,
    /// (path, inode, size) of the regular files as linked into the copy (for its
    /// content catalogue).
    pub linked: Mutex<Vec<(Vec<u8>, u64, u64)>>,
}

impl Counts {
    /// Bytes held by no earlier copy: single-name files, plus files all of whose names
    /// are inside the copied tree.
    pub fn added_bytes(&self) -> u64 {
        let mut shared =
            std::mem::take(&mut *self.shared.lock().unwrap_or_else(|p| p.into_inner()));
        shared.sort_unstable();
        let mut extra = 0;
        for group in shared.chunk_by(|a, b| a.0 == b.0) {
            if group.len() as u64 >= group[0].1 {
                extra += group[0].2;
            }
        }
        self.added.load(Ordering::Relaxed) + extra
    }
}

/// A copy or removal in progress: the roots, the throttle and the stop flag.
pub struct Ctx<'a> {
    pub src: BorrowedFd<'a>,
    pub dst: BorrowedFd<'a>,
    pub throttle: &'a Throttle,
    pub owners: bool,
    pub cancel: &'a AtomicBool,
    pub counts: Counts,
}

fn times(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Names and types of a directory's entries (the type from `getdents` when the
/// filesystem gives it, else from `fstatat`).
fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    let dup = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
    let mut d = rfs::Dir::new(dup)?;
    d.rewind();
    let mut out = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut ty = ent.file_type();
        if ty == FileType::Unknown {
            ty = FileType::from_raw_mode(fsutil::stat_at(dir, name)?.st_mode);
        }
        out.push((name.to_vec(), ty));
    }
    Ok(out)
}

impl Ctx<'_> {
    /// Copies the directory `rel` of the source into the (existing) directory `rel` of
    /// the destination, then gives the copy the original's metadata.
    pub fn copy_dir(&self, rel: &[u8]) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(interrupted(rel));
        }
        let src = at("open", rel, fsutil::open_dir(self.src, rel))?;
        let st = at("stat", rel, rfs::fstat(&src).map_err(io::Error::from))?;
        let subdirs = {
            let dst = at("open", rel, fsutil::open_dir(self.dst, rel))?;
            self.copy_entries(rel, src.as_fd(), dst.as_fd())?
        };
        drop(src);
        subdirs
            .par_iter()
            .try_for_each(|name| self.copy_dir(&tree::join(rel, name)))?;
        let dst = at("open", rel, fsutil::open_dir(self.dst, rel))?;
        self.throttle.op();
        at("set metadata of", rel, self.set_dir_meta(dst.as_fd(), &st))
    }

    fn set_dir_meta(&self, dir: BorrowedFd<'_>, st: &rfs::Stat) -> io::Result<()> {
        if self.owners {
            rfs::fchown(
                dir,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
            )?;
        }
        rfs::fchmod(dir, Mode::from_raw_mode(st.st_mode & 0o7777))?;
        rfs::futimens(dir, &times(st))?;
        Ok(())
    }

    /// Links and recreates the entries of one directory; returns its subdirectories
    /// (already created in the destination).
    fn copy_entries(
        &self,
        rel: &[u8],
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
    ) -> Result<Vec<Vec<u8>>> {
        self.throttle.op();
        let list = at("read directory", rel, entries(src))?;
        let mut subdirs = Vec::new();
        let mut shared = Vec::new();
        let mut linked = Vec::new();
        for (name, ty) in list {
            if rel.is_empty() && name == crate::identity::SIDECAR {
                // `current`'s own records are not part of the tree.
                continue;
            }
            let path = || tree::join(rel, &name);
            match ty {
                FileType::Directory => {
                    self.throttle.op();
                    at(
                        "create directory",
                        &path(),
                        rfs::mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700))
                            .map_err(io::Error::from),
                    )?;
                    self.counts.dirs.fetch_add(1, Ordering::Relaxed);
                    subdirs.push(name);
                }
                FileType::Symlink => {
                    let r = (|| {
                        let st = fsutil::stat_at(src, &name)?;
                        let target = fsutil::readlink_at(src, &name)?;
                        self.throttle.op();
                        rfs::symlinkat(target.as_slice(), dst, name.as_slice())?;
                        if self.owners {
                            rfs::chownat(
                                dst,
                                name.as_slice(),
                                Some(rfs::Uid::from_raw(st.st_uid)),
                                Some(rfs::Gid::from_raw(st.st_gid)),
                                AtFlags::SYMLINK_NOFOLLOW,
                            )?;
                        }
                        rfs::utimensat(
                            dst,
                            name.as_slice(),
                            &times(&st),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )?;
                        io::Result::Ok(())
                    })();
                    at("recreate symlink", &path(), r)?;
                    self.counts.symlinks.fetch_add(1, Ordering::Relaxed);
                }
                // A file the engine is writing right now: not part of the replica yet.
                _ if crate::temp::is_temp_name(&name) => {}
                _ => {
                    let st = at("stat", &path(), fsutil::stat_at(src, &name))?;
                    self.throttle.op();
                    at(
                        "hard-link",
                        &path(),
                        rfs::linkat(src, name.as_slice(), dst, name.as_slice(), AtFlags::empty())
                            .map_err(io::Error::from),
                    )?;
                    self.counts.files.fetch_add(1, Ordering::Relaxed);
                    // What the copy holds (the name in SRC may have been replaced
                    // since the stat above).
                    if let Ok(d) = fsutil::stat_at(dst, &name) {
                        if d.st_mode & 0o170000 == 0o100000 {
                            linked.push((path(), d.st_ino, d.st_size as u64));
                        }
                    }
                    if st.st_mode & 0o170000 == 0o100000 {
                        let size = st.st_size as u64;
                        self.counts.bytes.fetch_add(size, Ordering::Relaxed);
                        if st.st_nlink <= 1 {
                            self.counts.added.fetch_add(size, Ordering::Relaxed);
                        } else {
                            shared.push((st.st_ino, st.st_nlink, size));
                        }
                    }
                }
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(interrupted(rel));
            }
        }
        if !linked.is_empty() {
            self.counts
                .linked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(linked);
        }
        if !shared.is_empty() {
            self.counts
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(shared);
        }
        Ok(subdirs)
    }
}

/// Empties the directory `rel` beneath `root` and removes it, in parallel, one
/// throttled operation per unlink. `root` itself is never removed (`rel` empty: only
/// emptied). Directories without write permission are opened up first.
pub fn remove_tree(root: BorrowedFd<'_>, rel: &[u8], throttle: &Throttle) -> Result<()> {
    let dir: OwnedFd = at("open", rel, fsutil::open_dir(root, rel))?;
    let st = at("stat", rel, rfs::fstat(&dir).map_err(io::Error::from))?;
    if st.st_mode & 0o700 != 0o700 {
        at(
            "open up",
            rel,
            rfs::fchmod(&dir, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))
                .map_err(io::Error::from),
        )?;
    }
    throttle.op();
    let list = at("read directory", rel, entries(dir.as_fd()))?;
    let mut subdirs = Vec::new();
    for (name, ty) in list {
        if ty == FileType::Directory {
            subdirs.push(name);
            continue;
        }
        throttle.op();
        match rfs::unlinkat(&dir, name.as_slice(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return at("remove", &tree::join(rel, &name), Err(e.into())),
        }
    }
    drop(dir);
    subdirs
        .par_iter()
        .try_for_each(|name| remove_tree(root, &tree::join(rel, name), throttle))?;
    if rel.is_empty() {
        return Ok(());
    }
    let parent = at("open", rel, fsutil::open_dir(root, tree::parent(rel)))?;
    throttle.op();
    match rfs::unlinkat(&parent, tree::file_name(rel), AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => at("remove", rel, Err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn open(p: &std::path::Path) -> OwnedFd {
        rfs::open(
            p,
            rfs::OFlags::RDONLY | rfs::OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn copies_link_files_and_recreate_dirs_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(a.join("d/e")).unwrap();
        std::fs::write(a.join("d/f"), b"12345").unwrap();
        std::fs::hard_link(a.join("d/f"), a.join("g")).unwrap();
        std::fs::write(a.join("single"), b"xy").unwrap();
        std::fs::write(a.join("d/.f.fsync-tmp.0001"), b"half").unwrap();
        std::os::unix::fs::symlink("d/f", a.join("l")).unwrap();
        std::fs::set_permissions(a.join("d/e"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::create_dir(&b).unwrap();
        let (sa, sb) = (open(&a), open(&b));
        let cancel = AtomicBool::new(false);
        let throttle = Throttle::new(None, None);
        let ctx = Ctx {
            src: sa.as_fd(),
            dst: sb.as_fd(),
            throttle: &throttle,
            owners: false,
            cancel: &cancel,
            counts: Counts::default(),
        };
        ctx.copy_dir(b"").unwrap();
        let ino = |p: std::path::PathBuf| std::fs::symlink_metadata(p).unwrap().ino();
        assert_eq!(ino(a.join("d/f")), ino(b.join("d/f")));
        assert_ne!(ino(a.join("l")), ino(b.join("l")));
        assert_ne!(ino(a.join("d")), ino(b.join("d")));
        assert_eq!(
            std::fs::read_link(b.join("l")).unwrap(),
            std::path::Path::new("d/f")
        );
        let mode = std::fs::metadata(b.join("d/e")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o555);
        assert_eq!(ctx.counts.files.load(Ordering::Relaxed), 3);
        assert!(!b.join("d/.f.fsync-tmp.0001").exists());
        assert_eq!(ctx.counts.bytes.load(Ordering::Relaxed), 12);
        // "single" had one name; f/g had two, both inside the copied tree.
        assert_eq!(ctx.counts.added_bytes(), 7);
        assert!(throttle.total_ops() >= 6);
        remove_tree(sb.as_fd(), b"", &throttle).unwrap();
        assert_eq!(std::fs::read_dir(&b).unwrap().count(), 0);
        assert_eq!(std::fs::read(a.join("g")).unwrap(), b"12345");
    }
}

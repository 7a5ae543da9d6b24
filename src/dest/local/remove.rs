//! Removing entries from the replica: one entry, a directory's files through one open
//! of the directory, a whole subtree. Every removal is one throttled operation.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::{invalid, split, LocalDest};
use crate::fsutil;
use crate::tree::Kind;

impl LocalDest {
    /// Removes a non-directory entry, or an empty directory (gone already: done).
    pub(super) fn remove_entry(&self, rel: &[u8], kind: Kind) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        self.throttle.op();
        let flags = if kind == Kind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rfs::unlinkat(&dir, name, flags) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes files of one directory through one open of it; stops at a signal.
    pub(super) fn remove_files_in(
        &self,
        dir: &[u8],
        names: &[(&[u8], Kind)],
        done: &mut dyn FnMut(usize, io::Result<()>),
    ) {
        let fd = match self.dir(dir) {
            Ok(fd) => fd,
            Err(e) => {
                // Each name gets the error, its errno kept (a device error stops the run).
                for k in 0..names.len() {
                    let each = match e.raw_os_error() {
                        Some(code) => io::Error::from_raw_os_error(code),
                        None => io::Error::new(e.kind(), e.to_string()),
                    };
                    done(k, Err(each));
                }
                return;
            }
        };
        for (k, &(name, kind)) in names.iter().enumerate() {
            if self.cancelled() {
                // A signal: the rest stay for the next run.
                return;
            }
            if kind == Kind::Dir || !fsutil::valid_name(name) {
                done(k, Err(invalid("not a file name")));
                continue;
            }
            self.throttle.op();
            done(
                k,
                match rfs::unlinkat(&fd, name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(e.into()),
                },
            );
        }
    }

    /// Removes an entry and everything beneath it.
    pub(super) fn remove_subtree(&self, rel: &[u8]) -> io::Result<()> {
        let (parent, name) = split(rel)?;
        let dir = self.dir(parent)?;
        match self.remove_tree_at(dir.as_fd(), name) {
            Err(e) if fsutil::is_not_found(&e) => Ok(()),
            r => r,
        }
    }

    pub(super) fn remove_tree_at(&self, dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
        let st = fsutil::stat_at(dir, name)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub =
                fsutil::open_beneath(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
            for child in fsutil::read_dir_names(sub.as_fd())? {
                self.remove_tree_at(sub.as_fd(), &child)?;
            }
            self.throttle.op();
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            self.throttle.op();
            rfs::unlinkat(dir, name, AtFlags::empty())?;
        }
        Ok(())
    }
}

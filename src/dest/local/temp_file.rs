//! A temporary file written piece by piece (the receiving side of a pull or a push),
//! then made durable and renamed, or removed.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags};

use super::{split, LocalDest};
use crate::dest::{PutError, SetMeta, Staged};
use crate::fsutil;
use crate::options::FsyncMode;

/// A temporary file being written beside the entry it will replace.
#[derive(Debug)]
pub struct TempFile {
    pub file: File,
    pub(super) dir: std::sync::Arc<OwnedFd>,
    pub(super) staged: Staged,
    /// Written as a partial file, kept if the transfer is cut (see [`super::partial`]).
    pub(super) partial: Option<super::partial::Slot>,
}

impl LocalDest {
    /// Creates the temporary file that will replace `rel` (which need not exist).
    pub fn begin_temp(&self, rel: &[u8]) -> Result<TempFile, PutError> {
        self.begin_temp_in(&mut fsutil::DirCache::default(), rel)
    }

    /// [`LocalDest::begin_temp`], its directory from (and kept in) `dirs`.
    pub(super) fn begin_temp_in(
        &self,
        dirs: &mut fsutil::DirCache,
        rel: &[u8],
    ) -> Result<TempFile, PutError> {
        let (parent, name) = split(rel).map_err(PutError::dest("path"))?;
        let dir = dirs
            .open(self.root.as_fd(), parent)
            .map_err(PutError::dest("open directory"))?;
        let (tmp, file) = self.create_temp(dir.as_fd(), name)?;
        Ok(TempFile {
            file,
            dir,
            staged: Staged {
                dir: parent.to_vec(),
                tmp,
                name: name.to_vec(),
            },
            partial: None,
        })
    }

    /// Writes `data` at `offset` of a temporary file, through the throttle.
    pub fn write_temp(&self, t: &TempFile, offset: u64, data: &[u8]) -> Result<(), PutError> {
        use std::os::unix::fs::FileExt;
        if self.cancelled() {
            return Err(PutError::Interrupted);
        }
        self.throttle.bytes(data.len() as u64);
        self.throttle
            .io(|| t.file.write_all_at(data, offset))
            .map_err(PutError::dest("write"))
    }

    /// Sets extended attributes (exactly `xattrs`), owner, mode and times on a finished
    /// temporary file, fsyncs it in `--fsync file` mode, and returns it ready to commit.
    /// On error the temporary file is removed.
    pub fn finish_temp(
        &self,
        mut t: TempFile,
        meta: &SetMeta,
        xattrs: &fsutil::Xattrs,
    ) -> Result<Staged, PutError> {
        let r = (|| {
            self.unpark(&mut t)?;
            for (name, value) in xattrs {
                self.throttle.op();
                rfs::fsetxattr(&t.file, name.as_slice(), value, rfs::XattrFlags::empty())
                    .map_err(|e| PutError::dest("set extended attribute")(e.into()))?;
            }
            self.apply_meta_fd(t.file.as_fd(), meta)
                .map_err(PutError::dest("set metadata"))?;
            match self.fsync {
                FsyncMode::File => {
                    self.throttle.op();
                    t.file.sync_all().map_err(PutError::dest("fsync"))?;
                    if !self.keep_cache {
                        crate::cache::drop_written(&t.file);
                    }
                }
                FsyncMode::Batch if self.writeback => {
                    self.throttle.io(|| fsutil::start_writeback(t.file.as_fd()))
                }
                FsyncMode::Batch => {}
                FsyncMode::None => {}
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(t.staged),
            Err(e) => {
                self.abort_temp(t);
                Err(e)
            }
        }
    }

    /// Removes a temporary file that will not be committed (a partial file too, with
    /// its record; see [`LocalDest::keep_temp`] for a cut transfer).
    pub fn abort_temp(&self, t: TempFile) {
        let TempFile {
            file,
            dir,
            staged,
            partial,
        } = t;
        drop(file);
        match partial {
            Some(slot) => self.drop_partial(&slot),
            None => {
                let _ = rfs::unlinkat(&dir, staged.tmp.as_slice(), AtFlags::empty());
            }
        }
    }
}

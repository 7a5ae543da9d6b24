//! Replacing without deleting: how a receiver without `--delete` makes way.
//!
//! A run replaces a destination entry of another kind than the source's (a directory
//! where the source has a file, say) by removing it first. A receiver whose client did
//! not pass `--delete` cannot tell that removal from a hostile sender emptying DEST, so
//! it sets the entry aside instead: renamed, within its directory, to a temporary name
//! (`.<name>.fsync-tmp.aside…`, beneath the root like every operation). Once something
//! stands at the path again, what was set aside goes for good; what nothing replaced is
//! put back when the session ends. A sender can thus replace entries, as the engine does,
//! but never make one disappear. A directory "replaced" by a new directory gets its old
//! self back, contents included.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, Mode, OFlags};

use super::local::LocalDest;
use super::Destination;
use crate::fsutil;
use crate::tree;

/// Entries set aside in a session: path → temporary path beside it.
#[derive(Debug, Default)]
pub struct SetAside {
    aside: HashMap<Vec<u8>, Vec<u8>>,
    /// The temporary paths of `aside`, for [`SetAside::holds`] in O(depth).
    names: std::collections::HashSet<Vec<u8>>,
    seq: u64,
}

fn exists(dest: &LocalDest, rel: &[u8]) -> bool {
    fsutil::open_beneath(dest.root(), rel, OFlags::PATH, Mode::empty()).is_ok()
}

fn is_dir(dest: &LocalDest, rel: &[u8]) -> bool {
    fsutil::open_beneath(dest.root(), rel, OFlags::PATH, Mode::empty())
        .ok()
        .and_then(|fd| rfs::fstat(fd.as_fd()).ok())
        .is_some_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory)
}

impl SetAside {
    /// Whether `path` is an entry set aside, or lies beneath one: the sender may not
    /// touch it (it would see its temporary name in a listing).
    pub fn holds(&self, path: &[u8]) -> bool {
        tree::within_any(&self.names, path)
    }

    /// Moves the entry at `path` out of the way (a missing entry is no error).
    pub fn make_way(&mut self, dest: &LocalDest, path: &[u8]) -> io::Result<()> {
        if !fsutil::valid_rel_path(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid relative path",
            ));
        }
        if self.aside.contains_key(path) {
            // Already aside; whatever stands there now was put by this session.
            return dest.remove_tree(path);
        }
        let (parent, name) = (tree::parent(path), tree::file_name(path));
        self.seq += 1;
        let mut aside = parent.to_vec();
        if !aside.is_empty() {
            aside.push(b'/');
        }
        aside.push(b'.');
        aside.extend_from_slice(&name[..name.len().min(200)]);
        aside.extend_from_slice(
            format!(".fsync-tmp.aside{:x}.{:x}", std::process::id(), self.seq).as_bytes(),
        );
        match dest.rename(path, &aside) {
            Ok(()) => {
                self.names.insert(aside.clone());
                self.aside.insert(path.to_vec(), aside);
                Ok(())
            }
            Err(e) if fsutil::is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A directory is to be created at `path`: if a directory was set aside there, it
    /// comes back instead (`true`), with its contents.
    pub fn restore_dir(&mut self, dest: &LocalDest, path: &[u8]) -> bool {
        let Some(aside) = self.aside.get(path) else {
            return false;
        };
        if !is_dir(dest, aside) || exists(dest, path) || dest.rename(aside, path).is_err() {
            return false;
        }
        if let Some(a) = self.aside.remove(path) {
            self.names.remove(&a);
        }
        true
    }

    /// Something now stands at `path`: what was set aside for it goes for good.
    pub fn replaced(&mut self, dest: &LocalDest, path: &[u8]) {
        if let Some(aside) = self.aside.remove(path) {
            self.names.remove(&aside);
            let _ = dest.remove_tree(&aside);
        }
    }

    /// At the end of the session: puts back every entry nothing replaced (one that was
    /// replaced after all goes).
    pub fn put_back(&mut self, dest: &LocalDest) {
        self.names.clear();
        for (path, aside) in self.aside.drain() {
            if exists(dest, &path) || dest.rename(&aside, &path).is_err() {
                let _ = dest.remove_tree(&aside);
            }
        }
    }
}

//! What a run checks before it writes: the selection (SRC and DEST usable, not inside
//! each other), the source's identity against the replica's record (invariant 7), the
//! plan's deletes for the mass-delete guard, and the bytes and inodes it needs for the
//! free-space preflight (invariant 5).

use std::path::Path;

use crate::error::{Error, Result};
use crate::identity::SourceId;
use crate::options::Options;
use crate::plan::{FileSource, Plan};
use crate::source::Source;
use crate::tree::{self, Listing};

/// Checks that SRC is a readable directory.
pub fn check_source(src: &Path) -> Result<()> {
    let meta = std::fs::metadata(src).map_err(|e| Error::Selection {
        path: src.to_path_buf(),
        what: format!("cannot read the source ({e}); give an existing directory"),
    })?;
    if !meta.is_dir() {
        return Err(Error::Selection {
            path: src.to_path_buf(),
            what: "the source is not a directory; give the directory whose contents to replicate"
                .into(),
        });
    }
    Ok(())
}

/// Checks SRC and DEST before anything is opened for writing.
pub fn check_selection(src: &Path, dest: &Path) -> Result<()> {
    check_source(src)?;
    if let Ok(m) = std::fs::symlink_metadata(dest) {
        let dir_or_link_to_dir = m.is_dir() || (m.file_type().is_symlink() && dest.is_dir());
        if !dir_or_link_to_dir {
            return Err(Error::Selection {
                path: dest.to_path_buf(),
                what: "the destination exists and is not a directory; give a directory path".into(),
            });
        }
    }
    let s = std::fs::canonicalize(src).map_err(|e| Error::Selection {
        path: src.to_path_buf(),
        what: e.to_string(),
    })?;
    let d = canonical_dest(dest);
    if d.starts_with(&s) || s.starts_with(&d) {
        return Err(Error::Selection {
            path: dest.to_path_buf(),
            what: format!(
                "the destination and the source {} contain each other; choose a destination outside the source",
                s.display()
            ),
        });
    }
    Ok(())
}

/// Canonical form of a destination that may not exist yet.
fn canonical_dest(dest: &Path) -> std::path::PathBuf {
    let mut tail = Vec::new();
    let mut p = dest.to_path_buf();
    loop {
        if let Ok(c) = std::fs::canonicalize(&p) {
            let mut c = c;
            for t in tail.iter().rev() {
                c.push(t);
            }
            return c;
        }
        match (p.file_name().map(|n| n.to_os_string()), p.parent()) {
            (Some(n), Some(parent)) => {
                tail.push(n);
                p = if parent.as_os_str().is_empty() {
                    ".".into()
                } else {
                    parent.to_path_buf()
                };
            }
            _ => return dest.to_path_buf(),
        }
    }
}

/// True if the open source root was deleted, or `path` now names another directory.
pub(super) fn root_replaced(src: &Source, path: &Path) -> bool {
    let Ok(open) = rustix::fs::fstat(src.root()) else {
        return true;
    };
    match rustix::fs::stat(path) {
        Ok(now) => open.st_nlink == 0 || (now.st_dev, now.st_ino) != (open.st_dev, open.st_ino),
        Err(_) => true,
    }
}

/// Batches whose temporary files can be on the destination at once: one is renamed
/// into place while the next is written (see `exec::Run::files`).
pub(super) const BATCHES_IN_FLIGHT: u64 = 2;

/// Bytes the plan adds to the destination, plus the temporary files held at once.
/// An updated file whose old version has other links (a snapshot) counts in full.
pub fn bytes_needed(plan: &Plan, src: &Listing, dst: &Listing, batch_bytes: u64) -> u64 {
    let mut add = 0u64;
    let mut temp = 0u64;
    for op in &plan.files {
        let e = src.get(op.src as usize);
        // Sparse files take what their data takes.
        let size = src.alloc(op.src as usize).min(e.size);
        match &op.from {
            FileSource::Source { old: Some(j) } => {
                let old = dst.get(*j as usize);
                if old.nlink > 1 {
                    // Another name (a snapshot, say) keeps the old content: replacing
                    // it frees nothing, so the new version needs all its space.
                    add += size;
                } else {
                    add += size.saturating_sub(old.size);
                    temp += size.min(old.size);
                }
            }
            _ => add += size,
        }
    }
    add + temp.min(batch_bytes.saturating_mul(BATCHES_IN_FLIGHT))
}

/// Checks SRC against the source DEST records (invariant 7; `recorded` is what
/// [`crate::dest::Destination::source_record`] gave) before DEST is listed: a run that
/// may delete refuses another filesystem or root unless told `--accept-new-source`.
/// Returns the record to write once the run is cleared to change DEST (none when DEST
/// already records this source).
pub(super) fn source_identity(
    opts: &Options,
    src: &Source,
    recorded: std::io::Result<Option<Vec<u8>>>,
    src_path: &Path,
    dest_path: &Path,
) -> Result<Option<String>> {
    let now = SourceId::of(src.root()).map_err(|e| Error::Selection {
        path: src_path.to_path_buf(),
        what: format!("cannot read the source's identity: {e}"),
    })?;
    let was = match recorded {
        Ok(None) => None,
        Ok(Some(text)) => match SourceId::parse(&text) {
            Some(id) => Some(id),
            // Not one this version wrote: it is not silently replaced by a run that
            // may delete.
            None if opts.delete && !opts.accept_new_source => {
                return Err(Error::NewSource(format!(
                    "{}: its record of the source it was made from (.fsync-repl/source) \
                     cannot be read; nothing was changed. If {} is the right source, run \
                     once with --accept-new-source",
                    dest_path.display(),
                    src_path.display()
                )))
            }
            // Replaced only when accepted; a run that cannot delete leaves it alone.
            None if !opts.accept_new_source => return Ok(None),
            None => None,
        },
        // Only a run that may delete depends on it.
        Err(e) if opts.delete => {
            return Err(Error::dest("read the source record of", dest_path, e))
        }
        Err(_) => return Ok(None),
    };
    match was {
        Some(was) if was.same_source(&now) => Ok(None),
        Some(was) if opts.delete && !opts.accept_new_source => {
            Err(Error::NewSource(crate::identity::mismatch(
                &src_path.display().to_string(),
                &dest_path.display().to_string(),
                &was,
                &now,
            )))
        }
        // A run that deletes nothing cannot empty the replica, and does not speak for
        // its source either.
        Some(_) if !opts.accept_new_source => Ok(None),
        _ => Ok(Some(now.to_record())),
    }
}

/// Destination entries the plan removes: deletes, and whole subtrees cleared to make
/// way for another kind of entry.
pub(super) fn doomed_entries(plan: &Plan, dl: &Listing) -> u64 {
    let cleared: u64 = plan
        .clear
        .iter()
        .map(|&j| {
            // A sorted listing holds a directory's subtree right after it.
            let p = dl.path(j as usize);
            (j as usize..dl.len())
                .take_while(|&k| tree::is_within(dl.path(k), p))
                .count() as u64
        })
        .sum();
    plan.deletes.len() as u64 + cleared
}

/// Inodes the plan takes on the destination at its peak: every new file, directory,
/// symlink and special file, plus the temporary files of the batches of rewrites in
/// flight (each frees its old inode only once renamed into place).
pub fn inodes_needed(plan: &Plan, batch_files: usize) -> u64 {
    let rewrites = plan
        .files
        .iter()
        .filter(|f| matches!(f.from, FileSource::Source { old: Some(_) }))
        .count();
    let fresh = plan.files.len() - rewrites;
    (fresh + plan.mkdirs.len() + plan.symlinks.len() + plan.specials.len()) as u64
        + (rewrites as u64).min((batch_files as u64).saturating_mul(BATCHES_IN_FLIGHT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_root_moved_or_deleted_under_the_run_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let src = Source::open(&root).unwrap();
        assert!(!root_replaced(&src, &root));
        // Replaced by another directory of the same name (an unmount leaves one).
        std::fs::rename(&root, dir.path().join("away")).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(root_replaced(&src, &root));
        // Deleted while open.
        let src = Source::open(&root).unwrap();
        std::fs::remove_dir(&root).unwrap();
        assert!(root_replaced(&src, &root));
    }

    #[test]
    fn the_temporary_files_of_two_batches_are_counted() {
        use crate::plan::FileOp;
        let op = |i: u32, old: Option<u32>| FileOp {
            src: i,
            from: FileSource::Source { old },
        };
        let mut plan = Plan::default();
        plan.files.extend((0..5000).map(|i| op(i, Some(i))));
        plan.files.extend((5000..5010).map(|i| op(i, None)));
        // A batch is renamed while the next one is written: two batches of rewrites
        // hold a temporary inode each beside the old one.
        assert_eq!(inodes_needed(&plan, 2048), 10 + 2 * 2048);
        assert_eq!(inodes_needed(&plan, 4096), 10 + 5000);
    }
}

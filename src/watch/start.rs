//! What a watch does before its first batch: which directories it starts from (a
//! full push or a resumed dirty set), the files of its own it must not watch, and
//! its log.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::resume;
use super::state::State;
use super::WatchOptions;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::scope::Scope;
use crate::transfer::Output;

/// The relative paths of the state and metrics files (and their temporary names) and
/// the log file, for those that lie inside SRC.
pub(super) fn own_files(src: &Path, w: &WatchOptions) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(root) = std::fs::canonicalize(src) else {
        return Vec::new();
    };
    let tmp = |f: &Path| {
        let mut t = f.as_os_str().to_owned();
        t.push(format!(".tmp.{}", std::process::id()));
        std::path::PathBuf::from(t)
    };
    [
        Some(w.state_file.clone()),
        Some(tmp(&w.state_file)),
        w.log_file.clone(),
        w.metrics_file.clone(),
        w.metrics_file.as_deref().map(tmp),
    ]
    .into_iter()
    .flatten()
    .filter_map(|f| {
        let dir = std::fs::canonicalize(f.parent()?).ok()?;
        let rel = dir.join(f.file_name()?);
        let rel = rel.strip_prefix(&root).ok()?;
        Some(rel.as_os_str().as_bytes().to_vec())
    })
    .collect()
}

/// Identity of the source root: device and inode.
pub(super) fn identity(src: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(src).ok().map(|m| (m.dev(), m.ino()))
}

pub(super) fn root_gone(src: &Path) -> Error {
    Error::Selection {
        path: src.to_path_buf(),
        what: "the source root disappeared or was replaced (unmounted?); stopped without \
               touching the destination. Restore it and start the watch again"
            .into(),
    }
}

/// The top-level directories of SRC (the homes), not following symlinks.
pub(super) fn top_dirs(src: &Path) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = std::fs::read_dir(src) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect()
}

/// What the first batch covers: the saved dirty set and what changed since the last
/// clean stop, or everything (see [`resume`]).
pub(super) fn first_scope(
    prev: Option<&State>,
    now: &State,
    dest_empty: bool,
    src: &Path,
    opts: &Options,
    w: &WatchOptions,
    out: &dyn Output,
) -> Scope {
    let Some(prev) = prev else {
        return Scope::everything();
    };
    if w.full_start {
        if opts.verbose > 0 {
            out.warn("starting with a full push (--full-start)");
        }
        return Scope::everything();
    }

    let want = resume::Expect {
        now_ns: now_ns(),
        src: &now.src,
        dest: &now.dest,
        src_id: now.src_id,
        dest_id: now.dest_id,
        selection: &now.selection,
        dest_empty,
    };
    let resumed = resume::saved_scope(prev, &want).and_then(|mut scope| {
        let since = prev.stopped_ns.unwrap_or(0) - resume::SLACK_NS;
        let walk = resume::Walk {
            one_file_system: opts.one_file_system,
            jobs: opts.jobs,
            priority: opts.priority,
        };
        let changed = resume::changed_since(src, since, walk)
            .map_err(|e| format!("cannot walk the source: {e}"))?;
        let saved = scope.len();
        scope.merge(&changed);
        Ok((scope, saved))
    });
    match resumed {
        Ok(_) if prev.tree_entries.is_none() => {
            // A state from before the tree's size was kept: batches could not weigh
            // their deletes against the whole replica, so the first lists all of it.
            if !opts.quiet {
                out.warn(
                    "starting with a full push: the state file does not say how large the tree is",
                );
            }
            Scope::everything()
        }
        Ok((scope, saved)) => {
            if !opts.quiet {
                out.warn(&format!(
                    "resuming after a clean stop: {saved} directories were pending, {} to replicate \
                     with what changed meanwhile (--full-start for a full push)",
                    scope.len()
                ));
            }
            scope
        }
        Err(why) => {
            if opts.verbose > 0 {
                out.warn(&format!("starting with a full push: {why}"));
            }
            Scope::everything()
        }
    }
}

/// Points stderr at the end of `path` (created if missing), so every line the watch
/// prints goes there; called again on SIGHUP after the file was rotated.
pub(super) fn open_log(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Usage(format!("--log-file {}: {e}", path.display())))?;
    // SAFETY: dup2 onto fd 2 with a valid open descriptor; `f` closes its own copy.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(Error::Usage(format!(
            "--log-file {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The wall clock in nanoseconds since the epoch (0 before it).
pub(super) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

//! The per-destination lock that keeps overlapping runs (two cron jobs, a slow backup
//! and the next one) from changing one DEST at once.
//!
//! It is an `flock` on `DEST/.fsync-repl/lock`, taken without waiting. The kernel drops
//! an flock when its holder dies, however it dies, so a lock left by a dead process is
//! simply taken over; the pid, host and start time written into the file only serve to
//! tell a second run who holds the lock. The file is never removed (removing it would let
//! a third run lock a new file while the second still holds the old one).

use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags};

use super::{Result, SnapshotError};

/// The lock file's name inside the side-car directory.
pub const LOCK_FILE: &str = "lock";

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

impl Lock {
    /// Takes the lock in `sidecar` (the open `DEST/.fsync-repl`), or says who holds it.
    pub fn take(sidecar: BorrowedFd<'_>, dest: &Path, now: i64) -> Result<Lock> {
        let path = dest.join(super::SIDECAR).join(LOCK_FILE);
        Lock::take_file(sidecar, LOCK_FILE, dest, path, now)
    }

    /// Takes the lock file `name` in `dir`; `shown` names what it protects in messages.
    fn take_file(
        dir: BorrowedFd<'_>,
        name: &str,
        shown: &Path,
        path: std::path::PathBuf,
        now: i64,
    ) -> Result<Lock> {
        let dest = shown;
        let io = |op, e: std::io::Error| SnapshotError::Io {
            op,
            path: path.clone(),
            source: e,
        };
        let fd = rfs::openat(
            dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("open", e.into()))?;
        let mut file = std::fs::File::from(fd);
        match rfs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    crate::text::escape(holder.as_bytes())
                };
                return Err(SnapshotError::Locked(format!(
                    "{}: locked by {holder}; another run is using this destination, so this one stops (run it again when that one ends)",
                    dest.display()
                )));
            }
            Err(e) => return Err(io("lock", e.into())),
        }
        let text = format!(
            "pid {} on {} since {}\n",
            std::process::id(),
            host_name(),
            super::retention::format_utc(now)
        );
        let write = (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(text.as_bytes())
        })();
        write.map_err(|e| io("write", e))?;
        Ok(Lock { _file: file })
    }
}

/// The directory for locks this machine takes on remote destinations' behalf.
fn local_lock_dir() -> std::path::PathBuf {
    let uid = rustix::process::geteuid().as_raw();
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| std::env::temp_dir().join(format!("fsync-repl-{uid}")))
        .join("fsync-repl-locks")
}

/// Takes a lock on this machine for a remote destination `key` (`host:path`), so that
/// two overlapping runs from here never push into one far DEST at once; the far side's
/// snapshot and prune take DEST's own lock as well.
pub fn take_local(key: &[u8], now: i64) -> Result<Lock> {
    let dir = local_lock_dir();
    let io = |op, e: std::io::Error| SnapshotError::Io {
        op,
        path: dir.clone(),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
    let fd = rfs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| io("open", e.into()))?;
    let st = rfs::fstat(&fd).map_err(|e| io("stat", e.into()))?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io(
            "use",
            std::io::Error::other("the lock directory belongs to another user"),
        ));
    }
    let name = blake3::hash(key).to_hex();
    let name = &name[..32];
    let shown = Path::new(std::ffi::OsStr::from_bytes(key));
    Lock::take_file(fd.as_fd(), name, shown, dir.join(name), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_told_who_holds_it() {
        let t = tempfile::tempdir().unwrap();
        let dir = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let held = Lock::take(dir.as_fd(), t.path(), 0).unwrap();
        let err = Lock::take(dir.as_fd(), t.path(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("1970-01-01T00:00:00Z"), "{err}");
        drop(held);
        // Released (as when its holder dies): the next one takes it over.
        let again = Lock::take(dir.as_fd(), t.path(), 60).unwrap();
        let text = std::fs::read_to_string(t.path().join(LOCK_FILE)).unwrap();
        assert!(text.contains("1970-01-01T00:01:00Z"), "{text}");
        drop(again);
    }
}

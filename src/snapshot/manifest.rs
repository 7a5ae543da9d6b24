//! Snapshot manifests: `DEST/.fsync-repl/snapshots/NAME.json`, one per snapshot.
//!
//! A manifest is written to a temporary name, made durable and renamed into place
//! before its snapshot gets its final name, so a listed snapshot normally has one; a
//! manifest whose snapshot is gone (a killed prune) is removed by the next run. An
//! unreadable manifest only costs the listing its figures: the snapshot stays listed.

use std::io::{self, Write};

use rustix::fs::{self as rfs, Mode, OFlags};

use super::TEMP_PREFIX;
use crate::fsutil;
use crate::throttle::Throttle;

/// What a manifest records about one snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub name: String,
    /// UTC seconds since the epoch.
    pub time: i64,
    /// The source of the push it captured (None: a bare `snapshot`).
    pub source: Option<String>,
    /// Exit status of the push it captured (None: a bare `snapshot`).
    pub push_exit: Option<i32>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of the regular files it holds.
    pub bytes: u64,
    /// Bytes it holds that no earlier snapshot held when it was taken.
    pub added_bytes: u64,
    pub duration_secs: f64,
    /// Files its content catalogue had to read (inodes no earlier snapshot held).
    #[serde(default)]
    pub hashed_files: u64,
    /// Bytes its content catalogue had to read.
    #[serde(default)]
    pub hashed_bytes: u64,
}

impl Manifest {
    /// Whether it captured a push that succeeded (exit 0, or 24: files vanished).
    pub fn successful_push(&self) -> bool {
        matches!(self.push_exit, Some(0) | Some(24))
    }
}

pub(super) fn read_manifest(dir: std::os::fd::BorrowedFd<'_>, name: &str) -> Option<Manifest> {
    let fd = fsutil::open_beneath(
        dir,
        format!("{name}.json").as_bytes(),
        OFlags::RDONLY,
        Mode::empty(),
    )
    .ok()?;
    let mut s = String::new();
    io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).ok()?;
    serde_json::from_str(&s).ok()
}

pub(super) fn write_manifest(
    dir: std::os::fd::BorrowedFd<'_>,
    m: &Manifest,
    throttle: &Throttle,
) -> io::Result<()> {
    let temp = format!("{TEMP_PREFIX}{}.json", m.name);
    throttle.op();
    let fd = rfs::openat(
        dir,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    )?;
    let mut f = std::fs::File::from(fd);
    let text = serde_json::to_string_pretty(m).map_err(io::Error::other)?;
    throttle.bytes(text.len() as u64);
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    throttle.op();
    rfs::renameat(dir, temp.as_str(), dir, format!("{}.json", m.name).as_str())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn manifests_round_trip_and_a_bad_one_reads_as_none() {
        let t = tempfile::tempdir().unwrap();
        let dir = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let m = Manifest {
            name: "2026-11-27T01:02:03Z".into(),
            time: 1_795_741_323,
            source: Some("/home/alice".into()),
            push_exit: Some(24),
            files: 3,
            dirs: 1,
            symlinks: 0,
            bytes: 10,
            added_bytes: 4,
            duration_secs: 0.5,
            hashed_files: 1,
            hashed_bytes: 4,
        };
        let th = Throttle::new(None, None);
        write_manifest(dir.as_fd(), &m, &th).unwrap();
        assert_eq!(read_manifest(dir.as_fd(), &m.name), Some(m.clone()));
        assert!(m.successful_push());
        assert!(th.total_ops() >= 2);
        std::fs::write(t.path().join("x.json"), b"{not json").unwrap();
        assert_eq!(read_manifest(dir.as_fd(), "x"), None);
        assert_eq!(read_manifest(dir.as_fd(), "missing"), None);
    }
}

//! Which source a replica was made from (invariant 7).
//!
//! An unmounted disk leaves an empty directory where the homes were; a restored or
//! re-created tree is another directory at the same path. Either lists as "everything
//! was deleted". So every run records, in the replica's own `.fsync-repl/source`, the
//! identity of the SRC it copied: the filesystem (its `statfs` id and type, and the
//! device), the root directory's inode, and whether SRC is a mount point. A later run
//! that would delete from the replica first compares: a different filesystem or root
//! stops it (exit 3) before DEST is even listed, until the user says
//! `--accept-new-source` once. The record is plain text, small, and parsed strictly.

use std::io;
use std::os::fd::BorrowedFd;

/// The replica's own directory at the root of DEST: never listed, copied or deleted
/// as part of the tree.
pub const SIDECAR: &[u8] = b".fsync-repl";
/// The file in [`SIDECAR`] that holds the source's identity.
pub const RECORD: &[u8] = b"source";
/// The most a record may hold (it is a few lines).
pub const MAX_RECORD: usize = 4096;

/// What identifies a source tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    /// `statfs` filesystem id (0 where the filesystem gives none).
    pub fsid: u64,
    /// `statfs` filesystem type (magic number).
    pub fstype: u64,
    /// `st_dev` of the root.
    pub dev: u64,
    /// Inode of the root directory.
    pub ino: u64,
    /// Whether the root is the root of a mount (`None`: the kernel did not say).
    pub mount_root: Option<bool>,
}

impl SourceId {
    /// The identity of the directory open at `root`.
    pub fn of(root: BorrowedFd<'_>) -> io::Result<SourceId> {
        use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
        let st = rustix::fs::fstat(root)?;
        let vfs = rustix::fs::fstatvfs(root)?;
        let fs = rustix::fs::fstatfs(root)?;
        let mount_root = rustix::fs::statx(root, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
            .ok()
            .filter(|x| x.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT))
            .map(|x| x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
        Ok(SourceId {
            fsid: vfs.f_fsid,
            fstype: fs.f_type as u64,
            dev: st.st_dev,
            ino: st.st_ino,
            mount_root,
        })
    }

    /// True when `self` and `other` are the same tree: the same filesystem (by its id,
    /// or by device where either has no id) and the same root directory.
    pub fn same_source(&self, other: &SourceId) -> bool {
        let same_fs = if self.fsid != 0 && other.fsid != 0 {
            self.fsid == other.fsid
        } else {
            self.dev == other.dev
        };
        same_fs && self.fstype == other.fstype && self.ino == other.ino
    }

    /// `major:minor` of the device.
    fn device(&self) -> String {
        format!(
            "{}:{}",
            rustix::fs::major(self.dev),
            rustix::fs::minor(self.dev)
        )
    }

    /// The record's text.
    pub fn to_record(&self) -> String {
        format!(
            "# the source this replica was made from (fsync-repl)\nfsid={:016x}\nfstype={:x}\ndev={}\nino={}\nmount_root={}\n",
            self.fsid,
            self.fstype,
            self.device(),
            self.ino,
            match self.mount_root {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
        )
    }

    /// Parses a record; `None` for anything this module did not write.
    pub fn parse(text: &[u8]) -> Option<SourceId> {
        let text = std::str::from_utf8(text).ok()?;
        let (mut fsid, mut fstype, mut dev, mut ino, mut mount_root) =
            (None, None, None, None, None);
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (k, v) = line.split_once('=')?;
            match k {
                "fsid" => fsid = Some(u64::from_str_radix(v, 16).ok()?),
                "fstype" => fstype = Some(u64::from_str_radix(v, 16).ok()?),
                "dev" => {
                    let (ma, mi) = v.split_once(':')?;
                    dev = Some(rustix::fs::makedev(ma.parse().ok()?, mi.parse().ok()?));
                }
                "ino" => ino = Some(v.parse().ok()?),
                "mount_root" => {
                    mount_root = Some(match v {
                        "yes" => Some(true),
                        "no" => Some(false),
                        "unknown" => None,
                        _ => return None,
                    })
                }
                _ => {}
            }
        }
        Some(SourceId {
            fsid: fsid?,
            fstype: fstype?,
            dev: dev?,
            ino: ino?,
            mount_root: mount_root?,
        })
    }

    /// One phrase for messages.
    pub fn describe(&self) -> String {
        format!(
            "filesystem {:016x} (type {:x}, device {}), root inode {}{}",
            self.fsid,
            self.fstype,
            self.device(),
            self.ino,
            match self.mount_root {
                Some(true) => ", a mount point",
                Some(false) => ", not a mount point",
                None => "",
            }
        )
    }
}

/// The message of a run refused because SRC is not the recorded source.
pub fn mismatch(src: &str, dest: &str, was: &SourceId, now: &SourceId) -> String {
    let hint = if was.mount_root == Some(true) && now.mount_root == Some(false) {
        format!(" {src} was a mount point and is not one now: is its filesystem mounted?")
    } else {
        String::new()
    };
    format!(
        "{src}: not the source {dest} was made from (then: {}; now: {}).{hint} Nothing was \
         changed. If the tree really moved (a new disk, a restore), run once with \
         --accept-new-source",
        was.describe(),
        now.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SourceId {
        SourceId {
            fsid: 0x1234_5678_9abc_def0,
            fstype: 0xef53,
            dev: rustix::fs::makedev(8, 1),
            ino: 2,
            mount_root: Some(true),
        }
    }

    #[test]
    fn a_record_round_trips_and_junk_is_refused() {
        let a = id();
        assert_eq!(SourceId::parse(a.to_record().as_bytes()), Some(a));
        let b = SourceId {
            mount_root: None,
            fsid: 0,
            ..a
        };
        assert_eq!(SourceId::parse(b.to_record().as_bytes()), Some(b));
        assert_eq!(SourceId::parse(b"fsid=zz\n"), None);
        assert_eq!(SourceId::parse(b"\xff\xfe"), None);
        assert_eq!(SourceId::parse(b"fsid=1\nfstype=2\n"), None);
    }

    #[test]
    fn another_filesystem_or_root_is_another_source() {
        let a = id();
        assert!(a.same_source(&a));
        // Remounted elsewhere (another device number), same filesystem id: same tree.
        assert!(a.same_source(&SourceId {
            dev: rustix::fs::makedev(8, 17),
            ..a
        }));
        // The empty mount point: the parent's filesystem.
        let empty = SourceId {
            fsid: 0x99,
            dev: rustix::fs::makedev(254, 0),
            ino: 41,
            mount_root: Some(false),
            ..a
        };
        assert!(!a.same_source(&empty));
        let m = mismatch("/home", "/b", &a, &empty);
        assert!(
            m.contains("is its filesystem mounted") && m.contains("--accept-new-source"),
            "{m}"
        );
        // A directory re-created on the same filesystem.
        assert!(!a.same_source(&SourceId { ino: 77, ..a }));
        // Without filesystem ids, the device decides.
        let n = SourceId { fsid: 0, ..a };
        assert!(n.same_source(&n));
        assert!(!n.same_source(&SourceId {
            dev: rustix::fs::makedev(8, 2),
            ..n
        }));
    }
}

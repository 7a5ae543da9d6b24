//! Free-space preflight and the reserve (invariant 5).
//!
//! Before the first write the run computes what it will add to the destination and
//! compares it with the filesystem's free space minus the reserve (`--min-free`,
//! default 5% of the filesystem, at most 10 GiB). A run that will not fit writes
//! nothing and says how many bytes are missing.

use crate::units::{human_bytes, parse_percent, parse_size};

/// Free and total bytes and inodes of the destination's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Space {
    pub avail: u64,
    pub total: u64,
    /// Inodes an unprivileged writer can still take; with `inodes_total` 0 the
    /// filesystem has no fixed inode count (btrfs, some network filesystems).
    pub inodes_avail: u64,
    pub inodes_total: u64,
}

impl Space {
    /// The figures of a `statvfs`.
    pub fn of(s: &rustix::fs::StatVfs) -> Space {
        Space {
            avail: s.f_bavail * s.f_frsize,
            total: s.f_blocks * s.f_frsize,
            inodes_avail: s.f_favail,
            inodes_total: s.f_files,
        }
    }
}

/// The free-space reserve kept on the destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    Bytes(u64),
    Percent(f64),
}

impl Reserve {
    /// Bytes to keep free on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(b) => b,
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

impl Reserve {
    /// The `--min-free` value that parses back to this reserve.
    pub fn to_arg(self) -> String {
        match self {
            Reserve::Bytes(b) => b.to_string(),
            Reserve::Percent(p) => format!("{p}%"),
        }
    }
}

/// Default reserve: 5% of the filesystem, capped at 10 GiB.
pub fn default_reserve(total: u64) -> u64 {
    (total / 20).min(10 << 30)
}

/// Parses `--min-free`: a size or a percentage of the filesystem (`5%`).
pub fn parse_reserve(s: &str) -> Result<Reserve, String> {
    match parse_percent(s) {
        Some(p) => p.map(Reserve::Percent),
        None => parse_size(s).map(Reserve::Bytes),
    }
}

/// The outcome of a preflight check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub needed: u64,
    pub usable: u64,
    pub reserve: u64,
    /// Inodes the run will take, and those free above the inode reserve (`None`: the
    /// filesystem has no fixed inode count).
    pub inodes_needed: u64,
    pub inodes_usable: Option<u64>,
}

/// Inodes kept free on a filesystem with a fixed inode count: 1% of them, so a run
/// never takes the last inodes another writer needs.
fn inode_reserve(total: u64) -> u64 {
    total / 100
}

impl Check {
    /// Bytes missing for the run to fit (0 when it fits).
    pub fn missing(&self) -> u64 {
        self.needed.saturating_sub(self.usable)
    }

    /// Inodes missing for the run to fit (0 when it fits).
    pub fn missing_inodes(&self) -> u64 {
        self.inodes_usable
            .map_or(0, |u| self.inodes_needed.saturating_sub(u))
    }

    pub fn fits(&self) -> bool {
        self.missing() == 0 && self.missing_inodes() == 0
    }

    /// The error value of a run that does not fit.
    pub fn shortfall(&self, dest: &str) -> crate::error::Shortfall {
        crate::error::Shortfall {
            message: self.message(dest),
            bytes: (self.missing() > 0).then(|| self.missing()),
        }
    }

    /// The one-line explanation for a run that does not fit.
    pub fn message(&self, dest: &str) -> String {
        if self.missing() == 0 && self.missing_inodes() > 0 {
            return format!(
                "{dest}: out of inodes: this run creates {} files and directories but only {} inodes are free above the reserve of 1%; {} inodes missing (free bytes do not help). Remove files on the destination, or give it a filesystem with more inodes.",
                self.inodes_needed,
                self.inodes_usable.unwrap_or(0),
                self.missing_inodes()
            );
        }
        format!(
            "{dest}: not enough space: this run needs {} but only {} is free above the reserve of {}; {} ({} bytes) missing. Free space on the destination or lower --min-free.",
            human_bytes(self.needed),
            human_bytes(self.usable),
            human_bytes(self.reserve),
            human_bytes(self.missing()),
            self.missing()
        )
    }
}

/// Compares `needed` bytes with the free space above the reserve.
pub fn check(space: Space, reserve: Option<Reserve>, needed: u64) -> Check {
    check_with_inodes(space, reserve, needed, 0)
}

/// Compares `needed` bytes and `inodes` new inodes with what is free above the
/// reserves.
pub fn check_with_inodes(
    space: Space,
    reserve: Option<Reserve>,
    needed: u64,
    inodes: u64,
) -> Check {
    let reserve = match reserve {
        Some(r) => r.bytes(space.total),
        None => default_reserve(space.total),
    };
    let inodes_usable = (space.inodes_total > 0).then(|| {
        space
            .inodes_avail
            .saturating_sub(inode_reserve(space.inodes_total))
    });
    Check {
        needed,
        usable: space.avail.saturating_sub(reserve),
        reserve,
        inodes_needed: inodes,
        inodes_usable,
    }
}

/// Says what a destination-wide fault met mid-run means for DEST, and what to do.
pub fn fault(e: &std::io::Error, space: Option<Space>, dest: &str) -> String {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    match errno {
        Some(Errno::NOSPC) => match space {
            Some(s) if s.inodes_total > 0 && s.inodes_avail == 0 => format!(
                "{dest}: out of inodes ({} of {} free, with {} of space left; free bytes do not help). Remove files on the destination or give it a filesystem with more inodes",
                s.inodes_avail,
                s.inodes_total,
                human_bytes(s.avail)
            ),
            Some(s) => format!(
                "{dest}: destination full: {} free. Free space on the destination, or raise --min-free to keep a larger reserve",
                human_bytes(s.avail)
            ),
            None => format!("{dest}: destination full. Free space on the destination"),
        },
        Some(Errno::DQUOT) => format!(
            "{dest}: disk quota exceeded for the user writing it. Raise the quota or free space within it"
        ),
        Some(Errno::ROFS) => format!(
            "{dest}: the destination is read-only (the filesystem may have been remounted read-only after an error). Check it and mount it read-write"
        ),
        _ => format!("{dest}: I/O error on the destination: {e}. Check the disk and the kernel log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bytes_account_for_the_reserve() {
        let space = Space {
            avail: 1000,
            total: 10_000,
            ..Space::default()
        };
        let c = check(space, None, 600);
        assert_eq!(c.reserve, 500);
        assert_eq!(c.usable, 500);
        assert_eq!(c.missing(), 100);
        assert!(!c.fits());
        assert!(c.message("/mnt/b").contains("100 bytes"));
        assert_eq!(c.shortfall("/mnt/b").bytes, Some(100));
        assert!(check(space, Some(Reserve::Bytes(0)), 1000).fits());
        assert!(!check(space, Some(Reserve::Percent(50.0)), 1).fits());
    }

    #[test]
    fn inodes_are_counted_apart_from_bytes() {
        let space = Space {
            avail: 1 << 30,
            total: 2 << 30,
            inodes_avail: 150,
            inodes_total: 1000,
        };
        // 10 inodes kept back: 140 usable.
        let c = check_with_inodes(space, Some(Reserve::Bytes(0)), 10, 141);
        assert!(!c.fits());
        assert_eq!(c.missing(), 0);
        assert_eq!(c.missing_inodes(), 1);
        let m = c.message("/mnt/b");
        assert!(
            m.contains("out of inodes") && m.contains("1 inodes missing"),
            "{m}"
        );
        assert!(!m.contains("--min-free"), "{m}");
        assert!(check_with_inodes(space, Some(Reserve::Bytes(0)), 10, 140).fits());
        // No fixed inode count: only bytes matter.
        let unlimited = Space {
            inodes_total: 0,
            inodes_avail: 0,
            ..space
        };
        assert!(check_with_inodes(unlimited, None, 10, 1 << 40).fits());
    }

    #[test]
    fn faults_are_named_for_what_they_are() {
        let full_inodes = Space {
            avail: 5 << 30,
            total: 10 << 30,
            inodes_avail: 0,
            inodes_total: 2000,
        };
        let nospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let m = fault(&nospc, Some(full_inodes), "/b");
        assert!(
            m.contains("out of inodes") && !m.contains("--min-free"),
            "{m}"
        );
        let m = fault(
            &nospc,
            Some(Space {
                inodes_avail: 5,
                ..full_inodes
            }),
            "/b",
        );
        assert!(m.contains("destination full"), "{m}");
        let m = fault(&std::io::Error::from_raw_os_error(libc::EDQUOT), None, "/b");
        assert!(m.contains("quota"), "{m}");
        let m = fault(&std::io::Error::from_raw_os_error(libc::EROFS), None, "/b");
        assert!(m.contains("read-only"), "{m}");
    }

    #[test]
    fn reserve_percent_and_default_cap() {
        assert_eq!(parse_reserve("5%").unwrap().bytes(1000), 50);
        assert_eq!(parse_reserve("1M").unwrap().bytes(1000), 1 << 20);
        assert!(parse_reserve("150%").is_err());
        assert_eq!(default_reserve(100 << 30), 5 << 30);
        assert_eq!(default_reserve(1 << 40), 10 << 30);
    }
}

//! Free-space preflight and the reserve (invariant 5).
//!
//! Before the first write the run computes what it will add to the destination and
//! compares it with the filesystem's free space minus the reserve (`--min-free`,
//! default 5% of the filesystem, at most 10 GiB). A run that will not fit writes
//! nothing and says how many bytes are missing.

use crate::config::{default_reserve, Reserve};
use crate::dest::Space;
use crate::report::human_bytes;

/// The outcome of a preflight check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub needed: u64,
    pub usable: u64,
    pub reserve: u64,
}

impl Check {
    /// Bytes missing for the run to fit (0 when it fits).
    pub fn missing(&self) -> u64 {
        self.needed.saturating_sub(self.usable)
    }

    pub fn fits(&self) -> bool {
        self.missing() == 0
    }

    /// The one-line explanation for a run that does not fit.
    pub fn message(&self, dest: &str) -> String {
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

/// The byte count a [`Check::message`] says is missing: how `backup --prune-when-full`
/// learns, from a run the preflight stopped, how much it must free.
pub fn missing_in(message: &str) -> Option<u64> {
    let end = message.find(" bytes) missing")?;
    let start = message[..end].rfind('(')? + 1;
    message[start..end].parse().ok()
}

/// Compares `needed` bytes with the free space above the reserve.
pub fn check(space: Space, reserve: Option<Reserve>, needed: u64) -> Check {
    let reserve = match reserve {
        Some(r) => r.bytes(space.total),
        None => default_reserve(space.total),
    };
    Check {
        needed,
        usable: space.avail.saturating_sub(reserve),
        reserve,
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
        };
        let c = check(space, None, 600);
        assert_eq!(c.reserve, 500);
        assert_eq!(c.usable, 500);
        assert_eq!(c.missing(), 100);
        assert!(!c.fits());
        assert!(c.message("/mnt/b").contains("100 bytes"));
        assert_eq!(missing_in(&c.message("/mnt/(x) b")), Some(100));
        assert_eq!(missing_in("something else"), None);
        assert!(check(space, Some(Reserve::Bytes(0)), 1000).fits());
        assert!(!check(space, Some(Reserve::Percent(50.0)), 1).fits());
    }
}

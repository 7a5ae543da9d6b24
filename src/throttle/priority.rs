//! CPU and I/O priority of the tool's threads (`--nice`, `--ionice`).
//!
//! Linux keeps both per thread, so they are applied to the main thread and, through the
//! worker pool's start handler, to every worker. The I/O class is honoured by the BFQ
//! scheduler, and by mq-deadline since Linux 5.14; `none` and kyber ignore it, which is
//! why the throttle also limits rates and backs off under pressure.

use std::io;

/// An I/O scheduling class (`ioprio_set`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// Served only when no one else wants the disk (the default).
    Idle,
    /// Normal class with a level from 0 (highest) to 7 (lowest).
    BestEffort(u8),
    /// Leave the inherited class alone.
    Unchanged,
}

impl IoClass {
    /// Parses `idle`, `best-effort[:0-7]` (also `be`), or `none`.
    pub fn parse(s: &str) -> Result<IoClass, String> {
        let (class, level) = match s.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (s, None),
        };
        match (class.trim().to_ascii_lowercase().as_str(), level) {
            ("idle", None) => Ok(IoClass::Idle),
            ("none", None) => Ok(IoClass::Unchanged),
            ("best-effort" | "be", level) => {
                let l: u8 = match level {
                    Some(l) => l
                        .trim()
                        .parse()
                        .ok()
                        .filter(|l| *l <= 7)
                        .ok_or_else(|| format!("'{s}': the best-effort level is 0 to 7"))?,
                    None => 4,
                };
                Ok(IoClass::BestEffort(l))
            }
            _ => Err(format!("'{s}': use idle, best-effort:0-7 or none")),
        }
    }

    /// The `--ionice` value that parses back to this class.
    pub fn to_arg(self) -> String {
        match self {
            IoClass::Idle => "idle".into(),
            IoClass::BestEffort(l) => format!("best-effort:{l}"),
            IoClass::Unchanged => "none".into(),
        }
    }

    /// The `ioprio` value (class << 13 | level), or `None` to leave it alone.
    fn ioprio(self) -> Option<i32> {
        match self {
            IoClass::Idle => Some(3 << 13),
            IoClass::BestEffort(l) => Some((2 << 13) | l as i32),
            IoClass::Unchanged => None,
        }
    }
}

/// Priorities applied to every thread of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub io: IoClass,
    /// Niceness to set (`None`: leave alone).
    pub nice: Option<i32>,
}

impl Default for Priority {
    fn default() -> Self {
        Priority {
            io: IoClass::Idle,
            nice: Some(10),
        }
    }
}

const IOPRIO_WHO_PROCESS: libc::c_int = 1;

impl Priority {
    /// A rayon pool of `threads` workers named `name-N`, each running at this priority
    /// from its start.
    pub fn pool_builder(self, threads: usize, name: &'static str) -> rayon::ThreadPoolBuilder {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{name}-{i}"))
            .start_handler(move |_| {
                let _ = self.apply_to_current_thread();
            })
    }

    /// Applies the priorities to the calling thread.
    pub fn apply_to_current_thread(self) -> io::Result<()> {
        if let Some(prio) = self.io.ioprio() {
            // SAFETY: ioprio_set takes plain integers; `0` means the calling thread.
            let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(n) = self.nice {
            // SAFETY: setpriority with PRIO_PROCESS and 0 affects the calling thread on Linux.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The calling thread's `ioprio` value.
pub fn current_ioprio() -> io::Result<i32> {
    // SAFETY: ioprio_get takes plain integers; `0` means the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse() {
        assert_eq!(IoClass::parse("idle"), Ok(IoClass::Idle));
        assert_eq!(IoClass::parse("none"), Ok(IoClass::Unchanged));
        assert_eq!(IoClass::parse("best-effort:7"), Ok(IoClass::BestEffort(7)));
        assert_eq!(IoClass::parse("be"), Ok(IoClass::BestEffort(4)));
        assert!(IoClass::parse("best-effort:8").is_err());
        assert!(IoClass::parse("realtime").is_err());
    }

    #[test]
    fn applies_to_the_calling_thread_only() {
        let before = current_ioprio().unwrap();
        let seen = std::thread::spawn(|| {
            Priority {
                io: IoClass::Idle,
                nice: Some(5),
            }
            .apply_to_current_thread()
            .unwrap();
            // SAFETY: getpriority with PRIO_PROCESS and 0 reads the calling thread's niceness.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (current_ioprio().unwrap(), nice)
        })
        .join()
        .unwrap();
        assert_eq!(seen.0 >> 13, 3, "idle class");
        assert!(seen.1 >= 5, "niceness {}", seen.1);
        assert_eq!(
            current_ioprio().unwrap(),
            before,
            "other threads keep theirs"
        );
    }
}

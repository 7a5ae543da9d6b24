//! Adaptive back-off: AIMD on the byte rate, driven by what other processes do on the
//! disks under SRC and DEST.
//!
//! Every ~250 ms the controller takes two congestion signals and runs AIMD on the rate:
//!
//! - **Other processes' reads** (the primary signal): the bytes the kernel read from the
//!   devices under SRC and DEST (/proc/diskstats) minus the bytes this process read
//!   (/proc/self/io `read_bytes`, which counts every read the block layer issued for it,
//!   read-ahead and metadata included). Reads are what users wait for; their buffered
//!   writes land in the page cache. More than [`Config::max_users_read`] per second
//!   means someone is using the disk.
//! - **The users' I/O stalls**: the kernel's cumulative `some` stall time
//!   (/proc/pressure/io) minus the time the tool's own workers spent inside disk reads
//!   and writes. Measured here, this alone misses a user running next to the tool: a
//!   process doing synchronous I/O is stalled nearly all the time whether or not the tool
//!   slows it, and with the tool at idle priority its own waits are as long as the
//!   users' and cancel them out. It still catches stalls with no reads behind them.
//!
//! When either signal says the disk is busy, the rate is halved (never below
//! `--min-rate`, so progress never stops). A run starts at [`Config::start_rate`] and,
//! while nothing has been seen, doubles each quiet sample (slow start); after a back-off
//! it waits [`QUIET_SAMPLES`] quiet samples (~1 s) and then grows by a fixed step per
//! quiet sample toward `--bwlimit`, or back to unlimited once the limit no longer
//! binds; after [`GONE_SAMPLES`] quiet samples (~2 s) the users count as gone and it
//! doubles again, so a copy speeds up soon after they go quiet. The logic is a pure function of samples ([`Aimd::observe`]); the sampling
//! thread is [`run`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Throttle;

/// Sampling period.
pub const PERIOD: Duration = Duration::from_millis(250);

/// What one metadata operation (create, rename, link, unlink) costs of the byte budget
/// while the controller holds the rate down: about a small random write's disk time at
/// streaming speed.
pub const OP_COST: u64 = 64 << 10;

/// Quiet samples in a row needed before the rate grows again after a back-off.
pub const QUIET_SAMPLES: u32 = 4;

/// Quiet samples in a row after which the users count as gone and the rate grows
/// multiplicatively again (slow start).
pub const GONE_SAMPLES: u32 = 8;

/// Settings of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The ceiling (`--bwlimit`), `None` for unlimited.
    pub max_rate: Option<u64>,
    /// The floor (`--min-rate`).
    pub min_rate: u64,
    /// The rate a run starts at (capped by the ceiling, raised to the floor).
    pub start_rate: u64,
    /// The users' stall share that triggers a back-off (`--max-io-pressure`, 0..1).
    pub max_pressure: f64,
    /// Other processes' disk reads, bytes per second, that trigger a back-off.
    pub max_users_read: u64,
    /// Additive increase per quiet sample, bytes per second.
    pub step: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rate: None,
            min_rate: 1 << 20,
            start_rate: 16 << 20,
            max_pressure: 0.10,
            max_users_read: 2 << 20,
            step: 16 << 20,
        }
    }
}

/// One sample of cumulative counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Monotonic time of the sample.
    pub at: Duration,
    /// Cumulative `some` I/O stall time in microseconds (`None`: no PSI on this kernel).
    pub stall_us: Option<u64>,
    /// Cumulative time the tool spent in disk reads and writes, microseconds.
    pub own_io_us: u64,
    /// Cumulative bytes the tool moved.
    pub bytes: u64,
    /// Cumulative bytes read from the watched devices by everyone (`None`: unknown).
    pub disk_read: Option<u64>,
    /// Cumulative bytes the block layer read for this process (`None`: unknown).
    pub own_read: Option<u64>,
}

/// Why the disk counts as busy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// Other processes read this many bytes per second from the disk.
    Reads(u64),
    /// Other processes waited on the disk for this share of the interval.
    Stalls(f64),
}

/// A rate change and its cause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The disk is busy: back off.
    Down { to: u64, cause: Cause },
    /// Quiet: speed up (`None`: unlimited again).
    Up { to: Option<u64> },
}

/// The AIMD state.
#[derive(Debug, Clone)]
pub struct Aimd {
    cfg: Config,
    rate: Option<u64>,
    prev: Option<Sample>,
    /// No back-off yet: grow multiplicatively while quiet.
    slow_start: bool,
    /// Quiet samples in a row.
    quiet: u32,
}

impl Aimd {
    /// Starts at the start rate (the ceiling when that is lower).
    pub fn new(cfg: Config) -> Aimd {
        let start = cfg.start_rate.max(cfg.min_rate);
        Aimd {
            cfg,
            rate: Some(cfg.max_rate.map_or(start, |m| m.min(start))),
            prev: None,
            slow_start: true,
            quiet: 0,
        }
    }

    /// The rate in force (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Whether a back-off holds the rate below the ceiling (metadata operations then
    /// also count against the byte budget: see [`OP_COST`]).
    pub fn held_down(&self) -> bool {
        !self.slow_start && self.rate != self.cfg.max_rate
    }

    /// The users' share of the interval spent stalled on I/O, from two samples.
    pub fn users_pressure(prev: &Sample, now: &Sample) -> Option<f64> {
        let dt = now.at.checked_sub(prev.at)?.as_micros() as u64;
        if dt == 0 {
            return None;
        }
        let stall = now.stall_us?.saturating_sub(prev.stall_us?);
        let own = now.own_io_us.saturating_sub(prev.own_io_us).min(dt);
        Some(stall.saturating_sub(own).min(dt) as f64 / dt as f64)
    }

    /// Bytes per second other processes read from the watched disks.
    pub fn users_reads(prev: &Sample, now: &Sample) -> Option<u64> {
        let dt = now.at.checked_sub(prev.at)?.as_secs_f64();
        if dt <= 0.0 {
            return None;
        }
        let all = now.disk_read?.saturating_sub(prev.disk_read?);
        let own = now.own_read?.saturating_sub(prev.own_read?);
        Some((all.saturating_sub(own) as f64 / dt) as u64)
    }

    /// Feeds one sample; returns the rate change it causes, if any.
    pub fn observe(&mut self, now: Sample) -> Option<Change> {
        let prev = self.prev.replace(now)?;
        let pressure = Self::users_pressure(&prev, &now);
        let reads = Self::users_reads(&prev, &now);
        if pressure.is_none() && reads.is_none() {
            return None;
        }
        let dt = (now.at - prev.at).as_secs_f64();
        if dt <= 0.0 {
            return None;
        }
        let throughput = (now.bytes.saturating_sub(prev.bytes) as f64 / dt) as u64;
        let busy = match (reads, pressure) {
            (Some(r), _) if r > self.cfg.max_users_read => Some(Cause::Reads(r)),
            (_, Some(p)) if p > self.cfg.max_pressure => Some(Cause::Stalls(p)),
            _ => None,
        };
        if let Some(cause) = busy {
            self.slow_start = false;
            self.quiet = 0;
            // Halve what is in force, or, when unlimited, what was achieved.
            let base = self
                .rate
                .unwrap_or(throughput.max(self.cfg.min_rate * 2))
                .min(throughput.max(self.cfg.min_rate * 2));
            let to = (base / 2).max(self.cfg.min_rate);
            if self.rate == Some(to) {
                return None;
            }
            self.rate = Some(to);
            return Some(Change::Down { to, cause });
        }
        let calm = reads.is_none_or(|r| r <= self.cfg.max_users_read / 2)
            && pressure.is_none_or(|p| p < self.cfg.max_pressure / 2.0);
        if !calm {
            self.quiet = 0;
            return None;
        }
        self.quiet += 1;
        if self.quiet >= GONE_SAMPLES {
            self.slow_start = true;
        }
        let r = self.rate?;
        let next = if self.slow_start {
            r.saturating_mul(2)
        } else if self.quiet >= QUIET_SAMPLES {
            r.saturating_add(self.cfg.step)
        } else {
            return None;
        };
        let to = match self.cfg.max_rate {
            Some(max) => Some(next.min(max)),
            // Without a ceiling, let go once the limit no longer binds.
            None if next >= throughput.saturating_mul(4).max(256 << 20) => None,
            None => Some(next),
        };
        if to == self.rate {
            return None;
        }
        self.rate = to;
        Some(Change::Up { to })
    }
}

/// Reads the cumulative `some` stall time from /proc/pressure/io.
pub fn read_psi() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/io").ok()?;
    parse_psi(&text)
}

fn parse_psi(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Bytes read so far from the block devices `devs` (major, minor), from /proc/diskstats.
pub fn read_disk_reads(devs: &[(u32, u32)]) -> Option<u64> {
    if devs.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/diskstats").ok()?;
    parse_diskstats(&text, devs)
}

fn parse_diskstats(text: &str, devs: &[(u32, u32)]) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let (Ok(major), Ok(minor)) = (f[0].parse::<u32>(), f[1].parse::<u32>()) else {
            continue;
        };
        if devs.contains(&(major, minor)) {
            // Field 6: sectors read, always in 512-byte units.
            let sectors: u64 = f[5].parse().ok()?;
            total = Some(total.unwrap_or(0) + sectors * 512);
        }
    }
    total
}

/// Bytes the block layer has read for this process (/proc/self/io `read_bytes`).
pub fn read_own_reads() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    parse_self_io(&text)
}

fn parse_self_io(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// The block devices (major, minor) holding `paths` (tmpfs and other virtual
/// filesystems have none), without duplicates.
pub fn devices_of(paths: &[&std::path::Path]) -> Vec<(u32, u32)> {
    let mut devs = Vec::new();
    for path in paths {
        let mut p = Some(*path);
        while let Some(q) = p {
            if let Ok(st) = rustix::fs::stat(q) {
                let d = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
                if d.0 != 0 && !devs.contains(&d) {
                    devs.push(d);
                }
                break;
            }
            p = q.parent();
        }
    }
    devs
}

fn describe(change: Change) -> String {
    let human = crate::units::human_bytes;
    match change {
        Change::Down {
            to,
            cause: Cause::Reads(r),
        } => format!(
            "rate {}/s: other processes read {}/s from the disk",
            human(to),
            human(r)
        ),
        Change::Down {
            to,
            cause: Cause::Stalls(p),
        } => format!(
            "rate {}/s: other processes waited on the disk {:.0}% of the time",
            human(to),
            p * 100.0
        ),
        Change::Up { to: Some(to) } => format!("rate {}/s: the disk is quiet", human(to)),
        Change::Up { to: None } => "rate unlimited: the disk is quiet".to_string(),
    }
}

/// Ends the controller [`run`] on `thread` with `flag`: sets the flag and wakes the
/// thread from its wait between samples, so it returns at once (join it next).
pub fn stop(flag: &AtomicBool, thread: &std::thread::Thread) {
    flag.store(true, Ordering::Relaxed);
    thread.unpark();
}

/// Runs the controller on `throttle` until the flag `stop` is set, watching the block
/// devices `devs`; `log` receives each change. Returns the number of changes. The
/// function [`stop`] ends it at once.
pub fn run(
    throttle: &Throttle,
    cfg: Config,
    devs: &[(u32, u32)],
    stop: &AtomicBool,
    log: &dyn Fn(String),
) -> u64 {
    let start = Instant::now();
    throttle.track_io();
    let mut aimd = Aimd::new(cfg);
    let sample = || Sample {
        at: start.elapsed(),
        stall_us: read_psi(),
        own_io_us: throttle.io_time().as_micros() as u64,
        bytes: throttle.total_bytes(),
        disk_read: read_disk_reads(devs),
        own_read: read_own_reads(),
    };
    let first = sample();
    if first.stall_us.is_none() && (first.disk_read.is_none() || first.own_read.is_none()) {
        log("adaptive back-off off: this kernel reports neither I/O pressure (/proc/pressure/io) nor disk and process I/O counters".into());
        return 0;
    }
    aimd.observe(first);
    throttle.set_rate(aimd.rate());
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        // Parked, so that whoever sets `stop` and unparks this thread ends the run's
        // wait at once.
        let until = Instant::now() + PERIOD;
        while !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(change) = aimd.observe(sample()) {
            changes += 1;
            throttle.set_rate(aimd.rate());
            log(describe(change));
        }
        // Also when the rate stays: the ceiling reached, or a quiet spell, ends it.
        throttle.set_op_cost(if aimd.held_down() { OP_COST } else { 0 });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// One 250 ms step of synthetic load.
    #[derive(Clone, Copy)]
    struct Step {
        /// Share of the step other processes spent stalled on I/O.
        users_stall: f64,
        /// Share of the step the tool's own workers spent in disk I/O.
        own_io: f64,
        /// Bytes per second other processes read from the disk.
        users_read: u64,
        /// Bytes the tool moved (and read from the disk) in the step.
        moved: u64,
    }

    const QUIET: Step = Step {
        users_stall: 0.0,
        own_io: 0.0,
        users_read: 0,
        moved: 10 * MIB,
    };

    /// A foreground process doing synchronous random reads at 60 MiB/s: stalled nearly
    /// all the time, like the tool's own idle-priority workers.
    const SYNC_READER: Step = Step {
        users_stall: 0.95,
        own_io: 1.8,
        users_read: 60 * MIB,
        moved: MIB / 4,
    };

    struct Feed {
        aimd: Aimd,
        now: Sample,
    }

    impl Feed {
        fn new(cfg: Config) -> Feed {
            let now = Sample {
                at: Duration::ZERO,
                stall_us: Some(0),
                own_io_us: 0,
                bytes: 0,
                disk_read: Some(0),
                own_read: Some(0),
            };
            let mut aimd = Aimd::new(cfg);
            aimd.observe(now);
            Feed { aimd, now }
        }

        fn run(&mut self, steps: &[Step]) -> Vec<Option<Change>> {
            steps
                .iter()
                .map(|s| {
                    let n = &mut self.now;
                    n.at += PERIOD;
                    // The kernel's "some" stall: at least the larger of the two shares.
                    let mine = s.own_io.min(1.0);
                    *n.stall_us.as_mut().unwrap() += (250_000.0
                        * s.users_stall.max(mine).max(s.users_stall + mine).min(1.0))
                        as u64;
                    n.own_io_us += (250_000.0 * s.own_io) as u64;
                    n.bytes += s.moved;
                    *n.own_read.as_mut().unwrap() += s.moved;
                    *n.disk_read.as_mut().unwrap() += s.moved + s.users_read / 4;
                    self.aimd.observe(*n)
                })
                .collect()
        }

        fn rate(&self) -> Option<u64> {
            self.aimd.rate()
        }
    }

    fn unlimited(cfg: Config) -> Feed {
        let mut f = Feed::new(cfg);
        f.run(&[QUIET; 8]);
        assert_eq!(f.rate(), None, "slow start ends unlimited on a quiet disk");
        f
    }

    #[test]
    fn slow_start_doubles_from_the_start_rate_then_lets_go() {
        let mut f = Feed::new(Config::default());
        assert_eq!(f.rate(), Some(16 * MIB));
        let c = f.run(&[QUIET; 5]);
        assert_eq!(c[0], Some(Change::Up { to: Some(32 * MIB) }));
        assert_eq!(c[1], Some(Change::Up { to: Some(64 * MIB) }));
        assert_eq!(f.rate(), None);
    }

    #[test]
    fn the_start_rate_respects_the_ceiling_and_the_floor() {
        let f = Feed::new(Config {
            max_rate: Some(8 * MIB),
            ..Config::default()
        });
        assert_eq!(f.rate(), Some(8 * MIB));
        let f = Feed::new(Config {
            min_rate: 32 * MIB,
            ..Config::default()
        });
        assert_eq!(f.rate(), Some(32 * MIB));
    }

    #[test]
    fn the_tools_own_io_does_not_throttle_it() {
        let mut f = unlimited(Config::default());
        // Users idle; the tool waits on the disk 90% of the time and reads 40 MiB/s.
        let own = Step {
            own_io: 0.9,
            ..QUIET
        };
        let c = f.run(&[own; 20]);
        assert!(c.iter().all(|c| c.is_none()), "{c:?}");
        assert_eq!(f.rate(), None);
    }

    #[test]
    fn a_synchronous_reader_is_seen_by_its_reads_though_stalls_cancel_out() {
        let mut f = unlimited(Config::default());
        // Stall share minus own I/O time says nothing here...
        let prev = f.now;
        let reader = Step {
            moved: 8 * MIB, // the tool still moves 32 MiB/s
            ..SYNC_READER
        };
        let c = f.run(&[reader]);
        assert_eq!(Aimd::users_pressure(&prev, &f.now), Some(0.0));
        // ...but its reads back the tool off, halving down to the floor.
        assert!(
            matches!(c[0], Some(Change::Down { to, cause: Cause::Reads(r) }) if r == 60 * MIB && to == 16 * MIB),
            "{c:?}"
        );
        f.run(&[SYNC_READER; 12]);
        assert_eq!(f.rate(), Some(MIB), "floor reached, never zero");
    }

    #[test]
    fn stalls_without_reads_also_back_off() {
        let mut f = unlimited(Config::default());
        let writer = Step {
            users_stall: 0.5,
            own_io: 0.1,
            ..QUIET
        };
        let c = f.run(&[writer]);
        assert!(matches!(
            c[0],
            Some(Change::Down {
                to,
                cause: Cause::Stalls(p)
            }) if to == 20 * MIB && (p - 0.5).abs() < 0.01
        ));
    }

    #[test]
    fn recovery_waits_for_a_quiet_second_then_is_additive_up_to_the_ceiling() {
        let mut f = Feed::new(Config {
            max_rate: Some(64 * MIB),
            ..Config::default()
        });
        f.run(&[QUIET; 3]);
        assert_eq!(f.rate(), Some(64 * MIB));
        let spike = Step {
            moved: 16 * MIB,
            ..SYNC_READER
        };
        let c = f.run(&[spike]);
        assert!(matches!(c[0], Some(Change::Down { to, .. }) if to == 32 * MIB));
        // Three quiet samples: no change yet; the fourth adds one step.
        let c = f.run(&[QUIET; 4]);
        assert_eq!(&c[..3], &[None, None, None]);
        assert_eq!(c[3], Some(Change::Up { to: Some(48 * MIB) }));
        let c = f.run(&[QUIET; 3]);
        assert_eq!(c[0], Some(Change::Up { to: Some(64 * MIB) }), "capped");
        assert_eq!(&c[1..], &[None, None]);
    }

    #[test]
    fn held_down_only_between_a_back_off_and_the_ceiling_or_a_quiet_spell() {
        let mut f = Feed::new(Config {
            max_rate: Some(20 * MIB),
            ..Config::default()
        });
        assert!(!f.aimd.held_down(), "slow start");
        f.run(&[SYNC_READER; 3]);
        assert!(f.aimd.held_down());
        // Back up to the ceiling within the quiet second's additive steps: not held.
        f.run(&[QUIET; 5]);
        assert_eq!(f.rate(), Some(20 * MIB));
        assert!(!f.aimd.held_down());
        // Unlimited runs: a quiet spell ends it too.
        let mut f = Feed::new(Config::default());
        f.run(&[SYNC_READER; 3]);
        assert!(f.aimd.held_down());
        f.run(&[QUIET; GONE_SAMPLES as usize]);
        assert!(!f.aimd.held_down());
    }

    #[test]
    fn two_quiet_seconds_after_a_back_off_restart_the_doubling() {
        let mut f = Feed::new(Config::default());
        f.run(&[SYNC_READER; 10]);
        assert_eq!(f.rate(), Some(MIB));
        let c = f.run(&[QUIET; 9]);
        let up = |to| Some(Change::Up { to });
        let expect = [
            None, // a quiet second first
            None,
            None,
            up(Some(17 * MIB)), // then additive
            up(Some(33 * MIB)),
            up(Some(49 * MIB)),
            up(Some(65 * MIB)),
            up(Some(130 * MIB)), // two quiet seconds: doubling again
            up(None),            // and let go
        ];
        assert_eq!(c, expect);
        assert_eq!(f.rate(), None);
    }

    #[test]
    fn light_background_reads_change_nothing_and_noise_restarts_the_quiet_count() {
        let mut f = Feed::new(Config {
            max_rate: Some(64 * MIB),
            ..Config::default()
        });
        f.run(&[SYNC_READER; 8]);
        assert_eq!(f.rate(), Some(MIB));
        let light = Step {
            users_read: 3 * MIB / 2, // under the 2 MiB/s trigger, over half of it
            ..QUIET
        };
        let c = f.run(&[QUIET, QUIET, QUIET, light, QUIET, QUIET, QUIET]);
        assert!(c.iter().all(|c| c.is_none()), "{c:?}");
        assert_eq!(f.run(&[QUIET])[0], Some(Change::Up { to: Some(17 * MIB) }));
    }

    #[test]
    fn unlimited_backs_off_from_the_achieved_rate() {
        let mut f = unlimited(Config::default());
        let c = f.run(&[Step {
            moved: 50 * MIB, // 200 MiB/s achieved
            ..SYNC_READER
        }]);
        assert!(matches!(c[0], Some(Change::Down { to, .. }) if to == 100 * MIB));
    }

    #[test]
    fn no_information_changes_nothing() {
        let mut a = Aimd::new(Config {
            max_rate: Some(8 * MIB),
            ..Config::default()
        });
        for k in 0..5 {
            let s = Sample {
                at: Duration::from_millis(250 * k),
                stall_us: None,
                own_io_us: 0,
                bytes: 0,
                disk_read: None,
                own_read: Some(0),
            };
            assert_eq!(a.observe(s), None);
        }
        assert_eq!(a.rate(), Some(8 * MIB));
    }

    #[test]
    fn kernel_counters_parse() {
        let t = "some avg10=0.00 avg60=0.15 avg300=0.20 total=19862653\nfull avg10=0.00 avg60=0.00 avg300=0.01 total=7858159\n";
        assert_eq!(parse_psi(t), Some(19_862_653));
        assert_eq!(parse_psi("garbage"), None);
        let d = " 254       0 vda 9138 2771 1062450 4052 0 0 0 0 0 9200 4052 0 0 0 0 0 0\n 254       1 vda1 100 0 2000 10 0 0 0 0 0 10 10 0 0 0 0 0 0\n   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_diskstats(d, &[(254, 0)]), Some(1_062_450 * 512));
        assert_eq!(
            parse_diskstats(d, &[(254, 0), (254, 1)]),
            Some((1_062_450 + 2000) * 512)
        );
        assert_eq!(parse_diskstats(d, &[(8, 0)]), None);
        let io = "rchar: 5\nwchar: 6\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_self_io(io), Some(4096));
    }

    #[test]
    fn this_machines_counters_are_readable() {
        let devs = devices_of(&[std::path::Path::new("/")]);
        if !crate::require(!devs.is_empty(), "/ on a block device") {
            return;
        }
        assert!(
            read_disk_reads(&devs).is_some(),
            "{devs:?} not in /proc/diskstats"
        );
        assert!(read_own_reads().is_some());
    }
}

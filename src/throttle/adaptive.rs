//! Adaptive back-off: AIMD on the byte rate, driven by the users' I/O stalls.
//!
//! Every ~250 ms the controller samples the kernel's I/O pressure (the cumulative `some`
//! stall time in /proc/pressure/io) and the time the tool's own workers spent inside disk
//! reads and writes. System-wide pressure includes the tool's own stalls, so a
//! controller that read it naively would throttle itself while the users are idle; the
//! stall time that the tool's own I/O cannot explain is taken as the users' share:
//!
//! `users = max(0, Δstall − Δown_io) / Δt`
//!
//! When that share exceeds `--max-io-pressure`, the rate is halved (never below
//! `--min-rate`, so progress never stops); when it stays under half of it, the rate grows
//! by a fixed step toward `--bwlimit`, or back to unlimited. The logic is a pure function
//! of samples ([`Aimd::observe`]); the sampling thread is [`run`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Throttle;

/// Sampling period.
pub const PERIOD: Duration = Duration::from_millis(250);

/// Settings of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// The ceiling (`--bwlimit`), `None` for unlimited.
    pub max_rate: Option<u64>,
    /// The floor (`--min-rate`).
    pub min_rate: u64,
    /// The users' stall share that triggers a back-off (`--max-io-pressure`, 0..1).
    pub max_pressure: f64,
    /// Additive increase per quiet sample, bytes per second.
    pub step: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rate: None,
            min_rate: 1 << 20,
            max_pressure: 0.10,
            step: 8 << 20,
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
}

/// A rate change and its cause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The users waited on the disk for this share of the interval: back off.
    Down { to: u64, users_pressure: f64 },
    /// Quiet: speed up (`None`: unlimited again).
    Up { to: Option<u64> },
}

/// The AIMD state.
#[derive(Debug, Clone)]
pub struct Aimd {
    cfg: Config,
    rate: Option<u64>,
    prev: Option<Sample>,
}

impl Aimd {
    /// Starts at the ceiling (unlimited when there is none).
    pub fn new(cfg: Config) -> Aimd {
        Aimd {
            cfg,
            rate: cfg.max_rate,
            prev: None,
        }
    }

    /// The rate in force (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
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

    /// Feeds one sample; returns the rate change it causes, if any.
    pub fn observe(&mut self, now: Sample) -> Option<Change> {
        let prev = self.prev.replace(now)?;
        let users = Self::users_pressure(&prev, &now)?;
        let dt = (now.at - prev.at).as_secs_f64();
        let throughput = (now.bytes.saturating_sub(prev.bytes) as f64 / dt) as u64;
        if users > self.cfg.max_pressure {
            // Halve what is in force, or, when unlimited, what was achieved.
            let base = self.rate.unwrap_or(throughput.max(self.cfg.min_rate * 2));
            let to = (base / 2).max(self.cfg.min_rate);
            if self.rate == Some(to) {
                return None;
            }
            self.rate = Some(to);
            return Some(Change::Down {
                to,
                users_pressure: users,
            });
        }
        if users < self.cfg.max_pressure / 2.0 {
            let r = self.rate?;
            let next = r.saturating_add(self.cfg.step);
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
            return Some(Change::Up { to });
        }
        None
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

/// Runs the controller on `throttle` until `stop` is set; `log` receives each change.
pub fn run(throttle: &Throttle, cfg: Config, stop: &AtomicBool, log: &dyn Fn(String)) -> u64 {
    let start = Instant::now();
    let mut aimd = Aimd::new(cfg);
    let mut changes = 0;
    if read_psi().is_none() {
        log(
            "adaptive back-off off: this kernel reports no I/O pressure (/proc/pressure/io)".into(),
        );
        return 0;
    }
    while !stop.load(Ordering::Relaxed) {
        let sample = Sample {
            at: start.elapsed(),
            stall_us: read_psi(),
            own_io_us: throttle.io_time().as_micros() as u64,
            bytes: throttle.total_bytes(),
        };
        if let Some(change) = aimd.observe(sample) {
            changes += 1;
            throttle.set_rate(aimd.rate());
            log(match change {
                Change::Down { to, users_pressure } => format!(
                    "rate {}/s: other processes waited on the disk {:.0}% of the time",
                    crate::report::human_bytes(to),
                    users_pressure * 100.0
                ),
                Change::Up { to: Some(to) } => format!(
                    "rate {}/s: the disk is quiet",
                    crate::report::human_bytes(to)
                ),
                Change::Up { to: None } => "rate unlimited: the disk is quiet".to_string(),
            });
        }
        // Sleep in short steps so the end of the run is not delayed.
        let until = Instant::now() + PERIOD;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Samples every 250 ms with the given users' stall share, own I/O share and rate.
    fn series(aimd: &mut Aimd, steps: &[(f64, f64)], moved_per_step: u64) -> Vec<Option<Change>> {
        let mut stall = 0u64;
        let mut own = 0u64;
        let mut bytes = 0u64;
        let mut out = Vec::new();
        let start = aimd.prev.map_or(0, |p| p.at.as_micros() as u64 / 250_000);
        if aimd.prev.is_none() {
            aimd.observe(Sample {
                at: Duration::ZERO,
                stall_us: Some(0),
                own_io_us: 0,
                bytes: 0,
            });
        } else if let Some(p) = aimd.prev {
            stall = p.stall_us.unwrap_or(0);
            own = p.own_io_us;
            bytes = p.bytes;
        }
        for (k, &(users, mine)) in steps.iter().enumerate() {
            // The kernel's "some" stall counts time when anyone waits: at least the
            // larger of the two shares.
            stall += (250_000.0 * users.max(mine).max(users + mine).min(1.0)) as u64;
            own += (250_000.0 * mine) as u64;
            bytes += moved_per_step;
            let at = Duration::from_micros((start + k as u64 + 1) * 250_000);
            out.push(aimd.observe(Sample {
                at,
                stall_us: Some(stall),
                own_io_us: own,
                bytes,
            }));
        }
        out
    }

    #[test]
    fn the_tools_own_stalls_do_not_throttle_it() {
        let mut a = Aimd::new(Config::default());
        // Users idle; the tool itself waits on the disk 90% of the time.
        let changes = series(&mut a, &[(0.0, 0.9); 20], 100 * MIB);
        assert!(changes.iter().all(|c| c.is_none()), "{changes:?}");
        assert_eq!(a.rate(), None);
    }

    #[test]
    fn sustained_user_load_halves_down_to_the_floor_and_never_stops() {
        let mut a = Aimd::new(Config {
            max_rate: Some(64 * MIB),
            ..Config::default()
        });
        series(&mut a, &[(0.5, 0.1); 12], 10 * MIB);
        assert_eq!(a.rate(), Some(MIB), "floor reached, not zero");
        // Further load keeps it at the floor.
        let c = series(&mut a, &[(0.8, 0.0); 3], MIB);
        assert!(c.iter().all(|c| c.is_none()));
        assert_eq!(a.rate(), Some(MIB));
    }

    #[test]
    fn a_spike_backs_off_once_then_recovery_is_additive_up_to_the_ceiling() {
        let cfg = Config {
            max_rate: Some(40 * MIB),
            step: 8 * MIB,
            ..Config::default()
        };
        let mut a = Aimd::new(cfg);
        let c = series(&mut a, &[(0.0, 0.2), (0.6, 0.2), (0.0, 0.2)], 10 * MIB);
        assert_eq!(
            c[1],
            Some(Change::Down {
                to: 20 * MIB,
                users_pressure: c1_pressure(&c[1])
            })
        );
        assert_eq!(c[2], Some(Change::Up { to: Some(28 * MIB) }));
        series(&mut a, &[(0.0, 0.2); 5], 10 * MIB);
        assert_eq!(a.rate(), Some(40 * MIB), "capped at --bwlimit");
    }

    fn c1_pressure(c: &Option<Change>) -> f64 {
        match c {
            Some(Change::Down { users_pressure, .. }) => *users_pressure,
            _ => f64::NAN,
        }
    }

    #[test]
    fn unlimited_backs_off_from_the_achieved_rate_and_lets_go_when_quiet() {
        let mut a = Aimd::new(Config::default());
        let c = series(&mut a, &[(0.5, 0.0)], 50 * MIB); // 200 MiB/s achieved
        assert_eq!(
            c[0].map(|c| matches!(c, Change::Down { to, .. } if to == 100 * MIB)),
            Some(true)
        );
        // Quiet: grows by steps, then unlimited once far above what the disk gives.
        series(&mut a, &[(0.0, 0.0); 40], 10 * MIB);
        assert_eq!(a.rate(), None);
    }

    #[test]
    fn no_pressure_information_changes_nothing() {
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
            };
            assert_eq!(a.observe(s), None);
        }
        assert_eq!(a.rate(), Some(8 * MIB));
    }

    #[test]
    fn psi_lines_parse() {
        let t = "some avg10=0.00 avg60=0.15 avg300=0.20 total=19862653\nfull avg10=0.00 avg60=0.00 avg300=0.01 total=7858159\n";
        assert_eq!(parse_psi(t), Some(19_862_653));
        assert_eq!(parse_psi("garbage"), None);
    }
}

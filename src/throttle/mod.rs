//! The throttle every byte and metadata operation of disk work passes (invariant 6),
//! and the priorities of the threads doing it.
//!
//! What counts as bytes: a copy counts each byte once (it is read and written in one
//! go, like rsync's `--bwlimit` counts transferred bytes); hashing counts what it reads;
//! a delta counts what it reads of both the old and the new version.
//!
//! A token bucket (governor) limits bytes per second; requests are cut into chunks no
//! larger than the bucket's burst (about 100 ms of the rate) so the rate also holds over
//! short windows. Waiting blocks the calling worker thread; there is no async runtime.
//! Without a limit the throttle only counts.

pub mod adaptive;
pub mod priority;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Wall-clock time with at least one operation in flight (overlaps counted once).
#[derive(Debug)]
struct Busy {
    in_flight: u32,
    since: Option<Instant>,
    before: Duration,
}

impl Busy {
    const fn new() -> Busy {
        Busy {
            in_flight: 0,
            since: None,
            before: Duration::ZERO,
        }
    }

    fn enter(&mut self, now: Instant) {
        if self.in_flight == 0 {
            self.since = Some(now);
        }
        self.in_flight += 1;
    }

    fn leave(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            if let Some(t) = self.since.take() {
                self.before += now.saturating_duration_since(t);
            }
        }
    }

    fn total(&self, now: Instant) -> Duration {
        self.before
            + self
                .since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>;

/// One token is this many bytes (keeps large rates inside governor's u32 cells).
const CELL: u64 = 1024;

/// Chunk size when no byte limit is in force.
const UNLIMITED_CHUNK: usize = 8 << 20;

/// A byte-rate bucket: the limiter and its burst in cells.
struct Bucket {
    limiter: Limiter,
    burst: u32,
}

fn bucket(rate: u64) -> Bucket {
    let cells_per_sec = (rate / CELL).clamp(1, u32::MAX as u64) as u32;
    let burst = (cells_per_sec / 10).max(1);
    let quota = Quota::per_second(NonZeroU32::new(cells_per_sec).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    Bucket {
        limiter: RateLimiter::direct(quota),
        burst,
    }
}

/// Byte-rate limiter shared by all workers of a run. The rate can change while the run
/// goes on (the adaptive controller sets it).
pub struct Throttle {
    bucket: RwLock<Option<Arc<Bucket>>>,
    /// The rate in force, bytes per second (0: unlimited).
    rate: AtomicU64,
    /// Metadata operations per second (`--iops-limit`).
    ops_limiter: Option<Limiter>,
    /// Bytes of the byte budget each metadata operation also takes (0: none). The
    /// adaptive controller sets it while it holds the rate down, so that a tree of
    /// small files, cheap in bytes but not in disk time, backs off too.
    op_cost: AtomicU64,
    clock: DefaultClock,
    bytes: AtomicU64,
    ops: AtomicU64,
    waited_ns: AtomicU64,
    /// The run's disk reads and writes in flight (see [`Throttle::io_time`]).
    busy: std::sync::Mutex<Busy>,
    /// Whether [`Throttle::io`] accounts its time (see [`Throttle::track_io`]).
    track_io: AtomicBool,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate.load(Ordering::Relaxed))
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl Throttle {
    /// A throttle limiting to `rate` bytes and `iops` metadata operations per second;
    /// `None` only counts.
    pub fn new(rate: Option<u64>, iops: Option<u32>) -> Throttle {
        let ops_limiter = iops.and_then(NonZeroU32::new).map(|n| {
            let burst = NonZeroU32::new((n.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct(Quota::per_second(n).allow_burst(burst))
        });
        Throttle {
            bucket: RwLock::new(rate.map(|r| Arc::new(bucket(r)))),
            rate: AtomicU64::new(rate.unwrap_or(0)),
            ops_limiter,
            op_cost: AtomicU64::new(0),
            clock: DefaultClock::default(),
            bytes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            waited_ns: AtomicU64::new(0),
            busy: std::sync::Mutex::new(Busy::new()),
            track_io: AtomicBool::new(false),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Option<Arc<Bucket>> {
        self.bucket
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the byte rate (`None`: unlimited).
    pub fn set_rate(&self, rate: Option<u64>) {
        let b = rate.map(|r| Arc::new(bucket(r)));
        *self.bucket.write().unwrap_or_else(|p| p.into_inner()) = b;
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    /// The byte rate in force (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        match self.rate.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r),
        }
    }

    /// Largest chunk of bytes one request should cover.
    pub fn chunk(&self) -> usize {
        match self.current() {
            // Half the burst: the bucket holds two chunks, so a worker that wakes a
            // little late does not lose the tokens that accrued meanwhile.
            Some(b) => (b.burst.div_ceil(2) as u64 * CELL) as usize,
            None => UNLIMITED_CHUNK,
        }
    }

    /// Makes every metadata operation also take `bytes` of the byte budget (0: none).
    pub fn set_op_cost(&self, bytes: u64) {
        self.op_cost.store(bytes, Ordering::Relaxed);
    }

    /// Accounts for `n` bytes of disk I/O, blocking while over the rate.
    pub fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.spend(n);
    }

    /// Blocks until the byte bucket grants `n` bytes.
    fn spend(&self, n: u64) {
        let Some(b) = self.current() else { return };
        let mut cells = n.div_ceil(CELL);
        while cells > 0 {
            let take = cells.min(b.burst as u64) as u32;
            let want = NonZeroU32::new(take).unwrap_or(NonZeroU32::MIN);
            loop {
                match b.limiter.check_n(want) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(self.clock.now());
                        self.waited_ns
                            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
                        std::thread::sleep(wait.max(Duration::from_micros(100)));
                    }
                    // Cannot happen: chunks never exceed the burst.
                    Err(_) => break,
                }
            }
            cells -= take as u64;
        }
    }

    /// Runs a disk read or write, accounting the time it was in flight (see
    /// [`Throttle::io_time`]).
    pub fn io<T>(&self, f: impl FnOnce() -> T) -> T {
        struct InFlight<'t>(&'t Throttle);
        impl Drop for InFlight<'_> {
            // On unwinding too: a count left behind would make every stall look like
            // the tool's own.
            fn drop(&mut self) {
                self.0.busy().leave(Instant::now());
            }
        }
        if !self.track_io.load(Ordering::Relaxed) {
            return f();
        }
        self.busy().enter(Instant::now());
        let _in_flight = InFlight(self);
        f()
    }

    /// Starts accounting the time disk work is in flight, for the adaptive controller
    /// (without one, nobody reads it and every read and write would pay for a lock and
    /// two clock reads).
    pub fn track_io(&self) {
        self.track_io.store(true, Ordering::Relaxed);
    }

    /// Wall-clock time during which any worker of this run was inside a disk read or
    /// write: the most the run adds to the system-wide "some" I/O stall, which is
    /// itself wall-clock time with at least one task stalled. Summed per thread
    /// instead, two busy workers would account for the whole interval and hide the
    /// users' stalls. (Jobs of `backup --all` side by side each count the other's
    /// stalls as the users': they back off more, never less.)
    pub fn io_time(&self) -> Duration {
        self.busy().total(Instant::now())
    }

    /// Accounts for one metadata operation (create, rename, link, unlink, fsync).
    pub fn op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        match self.op_cost.load(Ordering::Relaxed) {
            0 => {}
            cost => self.spend(cost),
        }
        let Some(lim) = &self.ops_limiter else { return };
        while let Err(not_until) = lim.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            self.waited_ns
                .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
            std::thread::sleep(wait.max(Duration::from_micros(50)));
        }
    }

    /// Metadata operations accounted so far.
    pub fn total_ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Bytes accounted so far.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Time spent waiting for the limiter.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_io_counts_its_wall_clock_time_once() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut b = Busy::new();
        b.enter(at(0));
        b.enter(at(10)); // a second worker, overlapping
        b.leave(at(30));
        assert_eq!(b.total(at(35)), Duration::from_millis(35));
        b.leave(at(40));
        b.enter(at(100)); // idle from 40 to 100
        b.leave(at(110));
        assert_eq!(b.total(at(500)), Duration::from_millis(50));
        b.leave(at(600)); // an unmatched leave changes nothing
        assert_eq!(b.total(at(700)), Duration::from_millis(50));
    }

    #[test]
    fn metadata_operations_take_the_byte_budget_only_while_held_down() {
        let t = Throttle::new(Some(1 << 20), None);
        for _ in 0..4 {
            t.op();
        }
        assert_eq!(
            t.waited(),
            Duration::ZERO,
            "no cost set: ops are free of bytes"
        );
        t.set_op_cost(64 << 10);
        // 4 x 64 KiB against a 1 MiB/s bucket holding ~100 KiB: someone must wait.
        for _ in 0..4 {
            t.op();
        }
        assert!(t.waited() > Duration::ZERO);
        assert_eq!(t.total_bytes(), 0, "waiting for ops is not counted as data");
        assert_eq!(t.total_ops(), 8);
    }

    #[test]
    fn unlimited_counts_without_waiting() {
        let t = Throttle::new(None, None);
        t.bytes(10 << 20);
        t.op();
        assert_eq!(t.total_bytes(), 10 << 20);
        assert_eq!(t.waited(), Duration::ZERO);
        assert_eq!(t.chunk(), 8 << 20);
    }

    #[test]
    fn chunks_fit_the_burst() {
        let t = Throttle::new(Some(20 << 20), None);
        // Half of 100 ms of 20 MiB/s.
        assert_eq!(t.chunk(), 1024 * 1024);
    }
}

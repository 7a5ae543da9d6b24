//! Events → dirty set → batches: a pure function of the events and an injected clock.
//!
//! Each change marks directories dirty (see [`dirty_of`]). The dirty set is a [`Scope`], so repeated changes in one
//! directory cost one entry. A batch is due when no event came for `delay` (the default
//! 250 ms coalesces an editor's write-temp-then-rename into one batch), when the oldest
//! pending change has waited `max_wait` (a file written without pause still goes out),
//! or at once when `max_batch` distinct paths changed. Nothing here sleeps or reads a
//! clock: the caller passes `now`, which the tests script.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::event::{dirty_of, Event};
use crate::scope::Scope;

/// Debounce settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    /// Quiet time after the last event before a batch starts.
    pub delay: Duration,
    /// Longest a change waits while events keep coming.
    pub max_wait: Duration,
    /// A batch starts at once when this many distinct paths changed.
    pub max_batch: usize,
}

impl Debounce {
    /// `delay` and `max_batch` from the command line; `max_wait` is four delays, at
    /// least one second.
    pub fn new(delay: Duration, max_batch: usize) -> Debounce {
        Debounce {
            delay,
            max_wait: (delay * 4).max(Duration::from_secs(1)),
            max_batch: max_batch.max(1),
        }
    }
}

/// The pending dirty set and its timing.
#[derive(Debug)]
pub struct Debouncer {
    cfg: Debounce,
    dirty: Scope,
    paths: HashSet<Vec<u8>>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(cfg: Debounce) -> Debouncer {
        Debouncer {
            cfg,
            dirty: Scope::new(),
            paths: HashSet::new(),
            first: None,
            last: None,
        }
    }

    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Records an event received at `now`.
    pub fn add(&mut self, ev: &Event, now: Instant) {
        match ev {
            Event::Change(c) => {
                for (d, r) in dirty_of(c) {
                    self.dirty.add(d, r);
                }
                if self.paths.len() < self.cfg.max_batch {
                    self.paths.insert(c.path.clone());
                }
            }
            Event::Rescan(d) => self.dirty.add(d, true),
        }
        self.touch(now);
    }

    /// Records directories whose events were lost (a full channel, an overflow) as if
    /// their events arrived at `now`.
    pub fn add_scope(&mut self, scope: &Scope, now: Instant) {
        if scope.is_empty() {
            return;
        }
        self.dirty.merge(scope);
        self.touch(now);
    }

    /// Marks a whole scope dirty (a failed batch to retry, a periodic scan). It does not
    /// restart the quiet time of pending events: `now` counts as the time of an event
    /// only if none is pending.
    pub fn mark(&mut self, scope: &Scope, now: Instant) {
        if scope.is_empty() {
            return;
        }
        self.dirty.merge(scope);
        if self.first.is_none() {
            self.touch(now);
        }
    }

    /// When the pending batch is due (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.paths.len() >= self.cfg.max_batch {
            return Some(last);
        }
        Some((last + self.cfg.delay).min(first + self.cfg.max_wait))
    }

    /// True when a batch should start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.due().is_some_and(|d| d <= now)
    }

    /// Takes the pending dirty set (empty when nothing is pending).
    pub fn take(&mut self) -> Scope {
        self.first = None;
        self.last = None;
        self.paths.clear();
        std::mem::take(&mut self.dirty)
    }

    /// Directories pending.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// The pending dirty set.
    pub fn dirty(&self) -> &Scope {
        &self.dirty
    }

    /// When the oldest pending change arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::event::{Change, ChangeKind};

    fn ch(path: &str, is_dir: bool, kind: ChangeKind) -> Event {
        Event::Change(Change {
            path: path.as_bytes().to_vec(),
            is_dir,
            kind,
        })
    }

    fn pairs(s: &Scope) -> Vec<(String, bool)> {
        s.pairs()
            .map(|(p, r)| (String::from_utf8_lossy(p).into_owned(), r))
            .collect()
    }

    #[test]
    fn changes_mark_their_parent_and_new_directories_whole() {
        use ChangeKind::*;
        // (change, expected dirty pairs)
        let table: &[(Event, &[(&str, bool)])] = &[
            (ch("a/f", false, Modified), &[("a", false)]),
            (ch("f", false, Attrib), &[("", false)]),
            (ch("a/d", true, Created), &[("a", false), ("a/d", true)]),
            (ch("a/d", true, MovedFrom), &[("a", false), ("a/d", true)]),
            (ch("a/d", true, MovedTo), &[("a", false), ("a/d", true)]),
            (ch("a/d", true, Removed), &[("a", false), ("a/d", true)]),
            (ch("a/d", true, Attrib), &[("a", false)]),
            (ch("a/.fsyncignore", false, Modified), &[("a", true)]),
            (ch("a/f", false, MovedTo), &[("a", false)]),
            (Event::Rescan(b"x/y".to_vec()), &[("x/y", true)]),
        ];
        let t0 = Instant::now();
        for (ev, want) in table {
            let mut d = Debouncer::new(Debounce::new(Duration::from_millis(250), 100));
            d.add(ev, t0);
            let want: Vec<(String, bool)> = want.iter().map(|(p, r)| (p.to_string(), *r)).collect();
            assert_eq!(pairs(d.dirty()), want, "{ev:?}");
        }
    }

    #[test]
    fn a_batch_waits_for_quiet_then_goes() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(ms(250), 100));
        assert_eq!(d.due(), None);
        d.add(&ch("a/f", false, ChangeKind::Modified), t0);
        assert!(!d.ready(t0 + ms(249)));
        d.add(&ch("a/g", false, ChangeKind::Created), t0 + ms(200));
        assert!(
            !d.ready(t0 + ms(400)),
            "quiet time restarts with each event"
        );
        assert!(d.ready(t0 + ms(450)));
        let batch = d.take();
        assert_eq!(pairs(&batch), vec![("a".to_string(), false)]);
        assert_eq!(d.due(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_steady_stream_still_goes_out_after_max_wait() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(ms(250), 100));
        // An event every 100 ms never leaves 250 ms of quiet.
        for i in 0..30 {
            let now = t0 + ms(100 * i);
            let ready = d.ready(now);
            d.add(&ch("log", false, ChangeKind::Modified), now);
            assert_eq!(ready, i >= 10, "at {} ms", 100 * i);
        }
        assert_eq!(d.due(), Some(t0 + ms(1000)));
    }

    #[test]
    fn max_batch_distinct_paths_cut_a_batch_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(Duration::from_secs(5), 3));
        for name in ["d/1", "d/2", "d/2"] {
            d.add(&ch(name, false, ChangeKind::Created), t0);
        }
        assert!(!d.ready(t0), "two distinct paths only");
        d.add(&ch("d/3", false, ChangeKind::Created), t0);
        assert!(d.ready(t0));
    }

    #[test]
    fn a_retried_scope_is_due_without_new_events() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(ms(250), 100));
        let mut s = Scope::new();
        s.add(b"a", true);
        d.mark(&s, t0);
        assert!(d.ready(t0 + ms(250)));
        assert_eq!(pairs(&d.take()), vec![("a".to_string(), true)]);
    }
}

//! Events → dirty set → batches: a pure function of the events and an injected clock.
//!
//! The dirty set is kept per home (top-level directory of SRC) and batches are filled
//! round-robin across the homes (see [`Debouncer::take`]).
//!
//! Each change marks directories dirty (see [`dirty_of`]). The dirty set is a [`Scope`], so repeated changes in one
//! directory cost one entry. A batch is due when no event came for `delay` (the default
//! 250 ms coalesces an editor's write-temp-then-rename into one batch), when the oldest
//! pending change has waited `max_wait` (a file written without pause still goes out),
//! or at once when `max_batch` distinct paths changed. Nothing here sleeps or reads a
//! clock: the caller passes `now`, which the tests script.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::event::{dirty_of, Event};
use crate::scope::Scope;
use crate::tree::keys_within;

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

/// The first component of a relative path: the home a directory belongs to (`""`:
/// SRC's root itself).
pub fn home_of(rel: &[u8]) -> &[u8] {
    match rel.iter().position(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => rel,
    }
}

/// One home's pending directories and their timing.
#[derive(Debug, Default)]
struct Home {
    dirty: Scope,
    paths: HashSet<Vec<u8>>,
    /// Changes counted per dirty directory (at most `max_batch` each): what listing it
    /// costs a batch, roughly.
    cost: BTreeMap<Vec<u8>, usize>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Left over by a full batch: due at once.
    backlog: bool,
}

impl Home {
    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Removes and returns the cost of listing `dir` (with its subtree when
    /// `recursive`): the changes counted there, at least 1.
    fn take_cost(&mut self, dir: &[u8], recursive: bool) -> usize {
        if dir.is_empty() && recursive {
            return std::mem::take(&mut self.cost)
                .into_values()
                .sum::<usize>()
                .max(1);
        }
        let mut n = self.cost.remove(dir).unwrap_or(0);
        if recursive {
            for k in keys_within(&self.cost, dir) {
                n += self.cost.remove(&k).unwrap_or(0);
            }
        }
        n.max(1)
    }

    fn due(&self, cfg: &Debounce) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.backlog || self.paths.len() >= cfg.max_batch {
            return Some(first.min(last));
        }
        Some((last + cfg.delay).min(first + cfg.max_wait))
    }
}

/// What one batch takes: the directories, and since when each home had waited (for
/// putting them back when the batch fails).
#[derive(Debug, Default)]
pub struct Batch {
    pub scope: Scope,
    pub since: BTreeMap<Vec<u8>, Instant>,
    /// The changes counted in each directory taken (restored by a put-back).
    cost: BTreeMap<Vec<u8>, usize>,
}

/// One home's state for `status`: name, oldest pending change, pending directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeLag {
    pub name: Vec<u8>,
    pub oldest: Instant,
    pub pending: usize,
}

/// The pending dirty set, kept per home (top-level directory of SRC), and its timing.
///
/// Each home has its own quiet time; a batch is due when any home is. A batch takes at
/// most `max_batch` directories, one from each pending home in turn (the home that
/// waited longest first), so a burst of changes in one home delays a change in
/// another by about one batch, never by the whole burst.
#[derive(Debug)]
pub struct Debouncer {
    cfg: Debounce,
    homes: BTreeMap<Vec<u8>, Home>,
}

impl Debouncer {
    pub fn new(cfg: Debounce) -> Debouncer {
        Debouncer {
            cfg,
            homes: BTreeMap::new(),
        }
    }

    /// Adds `dir` to its home's dirty set; the home it went to (`None`: already
    /// covered by a pending rescan of everything).
    fn add_dir(&mut self, dir: &[u8], recursive: bool) -> Option<Vec<u8>> {
        if self
            .homes
            .get(&b""[..])
            .is_some_and(|h| h.dirty.covers_all(dir))
        {
            return Some(Vec::new());
        }
        if dir.is_empty() && recursive {
            // Everything: one home holds it, as old as the oldest change.
            let mut all = Home::default();
            for (_, h) in std::mem::take(&mut self.homes) {
                all.first = [all.first, h.first].into_iter().flatten().min();
                all.last = [all.last, h.last].into_iter().flatten().max();
                all.paths.extend(h.paths);
                all.cost.extend(h.cost);
                all.backlog |= h.backlog;
            }
            all.dirty.add(b"", true);
            self.homes.insert(Vec::new(), all);
            return Some(Vec::new());
        }
        let home = home_of(dir).to_vec();
        self.homes
            .entry(home.clone())
            .or_default()
            .dirty
            .add(dir, recursive);
        Some(home)
    }

    /// Records an event received at `now`.
    pub fn add(&mut self, ev: &Event, now: Instant) {
        match ev {
            Event::Change(c) => {
                for (i, (d, r)) in dirty_of(c).into_iter().enumerate() {
                    let Some(home) = self.add_dir(d, r) else {
                        continue;
                    };
                    let max = self.cfg.max_batch;
                    if let Some(h) = self.homes.get_mut(&home) {
                        h.touch(now);
                        if i == 0 {
                            if h.paths.len() < max {
                                h.paths.insert(c.path.clone());
                            }
                            let n = h.cost.entry(d.to_vec()).or_default();
                            *n = (*n + 1).min(max);
                        }
                    }
                }
            }
            Event::Rescan(d) => {
                if let Some(h) = self.add_dir(d, true).and_then(|k| self.homes.get_mut(&k)) {
                    h.touch(now);
                }
            }
        }
    }

    /// Records directories whose events were lost (a full channel, an overflow) as if
    /// their events arrived at `now`.
    pub fn add_scope(&mut self, scope: &Scope, now: Instant) {
        for (d, r) in scope.pairs() {
            if let Some(h) = self.add_dir(d, r).and_then(|k| self.homes.get_mut(&k)) {
                h.touch(now);
            }
        }
    }

    /// Marks a whole scope dirty (a failed batch to retry, a periodic scan). It does not
    /// restart the quiet time of pending events: `now` counts as the time of an event
    /// only for a home with none pending.
    pub fn mark(&mut self, scope: &Scope, now: Instant) {
        for (d, r) in scope.pairs() {
            if let Some(h) = self.add_dir(d, r).and_then(|k| self.homes.get_mut(&k)) {
                if h.first.is_none() {
                    h.touch(now);
                }
            }
        }
    }

    /// Puts a batch that did not complete back, each home as old as it was when taken.
    pub fn put_back(&mut self, batch: &Batch, now: Instant) {
        for (d, r) in batch.scope.pairs() {
            let Some(k) = self.add_dir(d, r) else {
                continue;
            };
            let since = batch.since.get(home_of(d)).copied().unwrap_or(now);
            if let Some(h) = self.homes.get_mut(&k) {
                h.first = Some(h.first.map_or(since, |f| f.min(since)));
                h.last.get_or_insert(since);
                let cost = batch.cost.get(d).copied().unwrap_or(1);
                *h.cost.entry(d.to_vec()).or_default() += cost;
            }
        }
    }

    /// When the next batch is due (`None`: nothing pending).
    pub fn due(&self) -> Option<Instant> {
        self.homes.values().filter_map(|h| h.due(&self.cfg)).min()
    }

    /// True when a batch should start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.due().is_some_and(|d| d <= now)
    }

    /// Takes the next batch, one directory per pending home in turn, the home that
    /// waited longest first: the first round takes one of every home (up to
    /// `max_batch` directories); further rounds go on while the changes counted in the
    /// directories taken stay under `max_batch`. A burst of changes in one home thus
    /// fills a batch with about `max_batch` of its changes, and another home's change
    /// rides in the next batch. What does not fit stays pending, due at once. Empty
    /// when nothing is pending.
    pub fn take(&mut self) -> Batch {
        let mut order: Vec<(Instant, Vec<u8>)> = self
            .homes
            .iter()
            .filter(|(_, h)| !h.dirty.is_empty())
            .map(|(k, h)| (h.first.unwrap_or_else(Instant::now), k.clone()))
            .collect();
        order.sort();
        let max = self.cfg.max_batch;
        let mut batch = Batch::default();
        let (mut spent, mut dirs, mut first_round) = (0usize, 0usize, true);
        while !order.is_empty() && dirs < max && (first_round || spent < max) {
            order.retain(|(since, k)| {
                let Some(h) = self.homes.get_mut(k) else {
                    return false;
                };
                let open = dirs < max && (first_round || spent < max);
                if open && !h.dirty.is_empty() {
                    for (d, r) in h.dirty.split_off_first(1).pairs() {
                        let cost = h.take_cost(d, r);
                        spent += cost;
                        batch.cost.insert(d.to_vec(), cost);
                        batch.scope.add(d, r);
                    }
                    batch.since.entry(k.clone()).or_insert(*since);
                    dirs += 1;
                }
                !h.dirty.is_empty()
            });
            first_round = false;
        }
        self.homes.retain(|_, h| {
            if h.dirty.is_empty() {
                return false;
            }
            h.backlog = true;
            h.paths.clear();
            true
        });
        batch
    }

    /// Directories pending.
    pub fn pending(&self) -> usize {
        self.homes.values().map(|h| h.dirty.len()).sum()
    }

    /// The pending dirty set.
    pub fn dirty(&self) -> Scope {
        let mut all = Scope::new();
        for h in self.homes.values() {
            all.merge(&h.dirty);
        }
        all
    }

    /// When the oldest pending change arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.homes.values().filter_map(|h| h.first).min()
    }

    /// Every home with pending changes, by name.
    pub fn homes(&self) -> Vec<HomeLag> {
        self.homes
            .iter()
            .filter_map(|(k, h)| {
                Some(HomeLag {
                    name: k.clone(),
                    oldest: h.first?,
                    pending: h.dirty.len(),
                })
            })
            .collect()
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
            assert_eq!(pairs(&d.dirty()), want, "{ev:?}");
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
        assert_eq!(pairs(&batch.scope), vec![("a".to_string(), false)]);
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
        assert_eq!(pairs(&d.take().scope), vec![("a".to_string(), true)]);
    }

    /// Takes batches until `want` is in one; how many it took.
    fn batches_until(d: &mut Debouncer, want: &[u8], all: &mut Scope) -> usize {
        let mut n = 0;
        loop {
            let b = d.take();
            assert!(!b.scope.is_empty(), "{want:?} never came");
            assert!(
                b.scope.len() <= d.cfg.max_batch,
                "a batch holds {}",
                b.scope.len()
            );
            n += 1;
            all.merge(&b.scope);
            if b.scope.lists(want) {
                return n;
            }
        }
    }

    #[test]
    fn a_burst_in_one_home_delays_another_by_one_batch_at_most() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for other in ["alice", "zoe"] {
            let mut d = Debouncer::new(Debounce::new(ms(250), 1000));
            // 50,000 files unpacked into 5,000 directories of one home.
            for i in 0..50_000u32 {
                let p = format!("bob/src/d{}/f{}", i / 10, i % 10);
                d.add(
                    &ch(&p, false, ChangeKind::Created),
                    t0 + ms(u64::from(i / 1000)),
                );
            }
            // One change in another home, after the burst began.
            let mine = format!("{other}/notes");
            d.add(
                &ch(&format!("{mine}/todo"), false, ChangeKind::Modified),
                t0 + ms(60),
            );
            assert!(d.ready(t0 + ms(60)), "the burst filled a batch");
            let mut all = Scope::new();
            assert_eq!(
                batches_until(&mut d, mine.as_bytes(), &mut all),
                1,
                "{other}"
            );

            // A change arriving while the burst's backlog is replicated goes out in the
            // very next batch, not after the backlog.
            let later = format!("{other}/mail");
            d.add(
                &ch(&format!("{later}/new"), false, ChangeKind::Created),
                t0 + ms(500),
            );
            assert_eq!(
                batches_until(&mut d, later.as_bytes(), &mut all),
                1,
                "{other}"
            );
            // Nothing is lost: the rest of the burst follows, every directory of it.
            while d.pending() > 0 {
                assert!(d.ready(t0 + ms(500)), "a backlog is due at once");
                all.merge(&d.take().scope);
            }
            for i in 0..5_000 {
                assert!(all.lists(format!("bob/src/d{i}").as_bytes()), "d{i}");
            }
        }
    }

    #[test]
    fn homes_keep_their_own_quiet_time_and_lag() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(ms(250), 100));
        d.add(&ch("a/f", false, ChangeKind::Modified), t0);
        // A steady writer in "b" does not hold back "a"'s batch.
        for i in 0..5 {
            d.add(&ch("b/log", false, ChangeKind::Modified), t0 + ms(100 * i));
        }
        assert!(d.ready(t0 + ms(250)));
        let homes = d.homes();
        assert_eq!(homes.len(), 2);
        assert_eq!((homes[0].name.as_slice(), homes[0].oldest), (&b"a"[..], t0));
        assert_eq!(homes[1].pending, 1);
        // A failed batch goes back as old as it was.
        let b = d.take();
        assert_eq!(d.pending(), 0);
        d.put_back(&b, t0 + ms(900));
        assert_eq!(d.oldest(), Some(t0));
        assert_eq!(d.pending(), 2);
        // A rescan of everything absorbs every home and keeps the oldest time.
        d.mark(&Scope::everything(), t0 + ms(1000));
        assert_eq!(pairs(&d.dirty()), vec![(String::new(), true)]);
        assert_eq!(d.oldest(), Some(t0));
        d.add(&ch("c/x", false, ChangeKind::Created), t0 + ms(1100));
        assert_eq!(d.pending(), 1, "covered by the pending rescan");
    }

    #[test]
    fn a_batch_holds_about_max_batch_changes_of_a_burst() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Debounce::new(Duration::from_millis(250), 1000));
        // 50,000 files in 500 directories: few directories, many changes each.
        for i in 0..50_000u32 {
            let p = format!("bob/x/d{}/f{}", i / 100, i % 100);
            d.add(&ch(&p, false, ChangeKind::Created), t0);
        }
        d.add(&ch("zoe/notes/todo", false, ChangeKind::Modified), t0);
        let mut taken = 0;
        let mut batches = 0;
        let mut zoe_in = None;
        while d.pending() > 0 {
            let b = d.take();
            batches += 1;
            let bob = b
                .scope
                .pairs()
                .filter(|(p, _)| p.starts_with(b"bob/"))
                .count();
            // 100 changes a directory: about ten of them fill a batch.
            assert!(
                bob <= 11,
                "batch {batches} lists {bob} of bob's directories"
            );
            taken += bob;
            if b.scope.lists(b"zoe/notes") {
                zoe_in.get_or_insert(batches);
            }
        }
        assert_eq!(zoe_in, Some(1));
        assert_eq!(taken, 500, "every directory of the burst, once");
        // A failed batch goes back with its weight: the retry is no bigger.
        for i in 0..5_000u32 {
            let p = format!("bob/y/d{}/f{}", i / 100, i % 100);
            d.add(&ch(&p, false, ChangeKind::Created), t0);
        }
        let b = d.take();
        let n = b.scope.len();
        d.put_back(&b, t0);
        assert_eq!(d.take().scope.len(), n);
        assert!(batches >= 45, "{batches} batches");
    }
}

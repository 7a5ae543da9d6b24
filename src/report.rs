//! Run statistics, itemized change lines, the closing summary and the exit code.
//!
//! Workers add to a shared [`Counters`] with atomics; [`Report`] is the plain value the
//! binary prints (human or JSON). Every name printed goes through [`escape`], so control
//! characters and invalid UTF-8 in file names can never forge output lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::ExitCode;
use crate::plan::{FileSource, Plan};
use crate::tree::{self, Kind, Listing};
use crate::units::human_bytes;

use crate::text::escape;

/// Peak resident set size of this process, from /proc/self/status (0 if unavailable).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Counters shared by the workers of a run.
#[derive(Debug, Default)]
pub struct Counters {
    pub created: AtomicU64,
    pub updated: AtomicU64,
    pub deleted: AtomicU64,
    pub moved: AtomicU64,
    pub linked: AtomicU64,
    pub meta: AtomicU64,
    pub literal: AtomicU64,
    pub matched: AtomicU64,
    pub moved_bytes: AtomicU64,
    pub cloned: AtomicU64,
    /// Entries the run meant to create, update or delete and could not.
    pub failed: AtomicU64,
    worst: Mutex<Vec<(ExitCode, String)>>,
}

/// How bad an exit code is when several apply: the worst one is reported.
pub fn severity(c: ExitCode) -> u8 {
    match c {
        ExitCode::Ok => 0,
        ExitCode::Vanished => 1,
        // Only verify reports it, never beside a transfer's codes.
        ExitCode::Differs => 1,
        ExitCode::Partial => 2,
        ExitCode::Interrupted => 3,
        ExitCode::Busy => 4,
        ExitCode::DestIo => 5,
        ExitCode::Protocol => 6,
        ExitCode::MaxDelete => 7,
        ExitCode::Selection => 8,
        ExitCode::Usage => 9,
    }
}

impl Counters {
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a problem that sets the exit code; `msg` is printed as a warning or error.
    pub fn problem(&self, code: ExitCode, msg: String) {
        let mut w = self.worst.lock().unwrap_or_else(|p| p.into_inner());
        w.push((code, msg));
    }

    /// Problems recorded so far.
    pub fn problems(&self) -> Vec<(ExitCode, String)> {
        self.worst.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The closing summary of a run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub files_scanned: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub unchanged: u64,
    pub moved: u64,
    pub linked: u64,
    pub metadata_only: u64,
    /// Entries the run meant to change and could not (each named in `errors`).
    #[serde(default)]
    pub failed: u64,
    pub bytes_literal: u64,
    pub bytes_matched: u64,
    pub bytes_moved: u64,
    pub bytes_cloned: u64,
    pub elapsed_secs: f64,
    pub throughput_bytes_per_sec: f64,
    /// Time workers waited for the rate limiter, summed over workers.
    pub throttled_secs: f64,
    /// Rate changes made by the adaptive back-off.
    pub rate_changes: u64,
    /// Peak resident memory of the process (VmHWM), 0 where unknown.
    pub peak_rss_bytes: u64,
    pub dry_run: bool,
    /// In a dry run: what the run would add to the destination (the space preflight's
    /// figure), which `backup --prune-when-full` weighs against the space snapshots hold.
    #[serde(default)]
    pub bytes_needed: u64,
    /// A remote run's bytes on the wire, as written to and read from the far side's
    /// pipes (0 for a local run).
    #[serde(default)]
    pub wire_bytes_sent: u64,
    #[serde(default)]
    pub wire_bytes_received: u64,
    pub exit_code: i32,
    pub errors: Vec<String>,
    /// Changed files with hard links the run's scope did not list (watch mode): their
    /// other names are stale until the whole tree is reconciled.
    #[serde(default)]
    pub links_outside_scope: u64,
    /// Directories to delete whose contents the run's scope did not list (watch mode):
    /// left in place; a run that lists them whole deletes them.
    #[serde(skip)]
    pub relist_dirs: Vec<Vec<u8>>,
}

impl Report {
    /// Builds the report from the counters and the problems met.
    pub fn from_counters(
        c: &Counters,
        scanned: u64,
        unchanged: u64,
        elapsed: Duration,
        throttled: Duration,
    ) -> Report {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let problems = c.problems();
        let code = problems
            .iter()
            .map(|p| p.0)
            .max_by_key(|&c| severity(c))
            .unwrap_or(ExitCode::Ok);
        let written = g(&c.literal) + g(&c.matched) + g(&c.cloned);
        Report {
            files_scanned: scanned,
            created: g(&c.created),
            updated: g(&c.updated),
            deleted: g(&c.deleted),
            unchanged,
            moved: g(&c.moved),
            linked: g(&c.linked),
            metadata_only: g(&c.meta),
            failed: g(&c.failed),
            bytes_literal: g(&c.literal),
            bytes_matched: g(&c.matched),
            bytes_moved: g(&c.moved_bytes),
            bytes_cloned: g(&c.cloned),
            elapsed_secs: elapsed.as_secs_f64(),
            throughput_bytes_per_sec: written as f64 / elapsed.as_secs_f64().max(1e-9),
            throttled_secs: throttled.as_secs_f64(),
            rate_changes: 0,
            peak_rss_bytes: peak_rss(),
            dry_run: false,
            bytes_needed: 0,
            wire_bytes_sent: 0,
            wire_bytes_received: 0,
            exit_code: code.code(),
            errors: problems.into_iter().map(|p| p.1).collect(),
            links_outside_scope: 0,
            relist_dirs: Vec::new(),
        }
    }

    /// The human summary (a few lines).
    pub fn human(&self) -> String {
        format!(
            "{}{} scanned, {} created, {} updated, {} deleted, {} unchanged, {} moved, {} linked{}\n\
             bytes: {} literal, {} matched, {} moved, {} cloned; {:.2} s, {}/s",
            if self.dry_run { "dry run: " } else { "" },
            self.files_scanned,
            self.created,
            self.updated,
            self.deleted,
            self.unchanged,
            self.moved,
            self.linked,
            if self.failed > 0 {
                format!(", {} failed", self.failed)
            } else {
                String::new()
            },
            human_bytes(self.bytes_literal),
            human_bytes(self.bytes_matched),
            human_bytes(self.bytes_moved),
            human_bytes(self.bytes_cloned),
            self.elapsed_secs,
            human_bytes(self.throughput_bytes_per_sec as u64),
        ) + &self.throttle_note()
            + &self.wire_note()
    }

    /// `\nwire: X sent, Y received` for a remote run.
    fn wire_note(&self) -> String {
        if self.wire_bytes_sent == 0 && self.wire_bytes_received == 0 {
            return String::new();
        }
        format!(
            "\nwire: {} sent, {} received",
            human_bytes(self.wire_bytes_sent),
            human_bytes(self.wire_bytes_received)
        )
    }

    /// `; throttled S s, N rate changes` when the throttle slowed the run.
    fn throttle_note(&self) -> String {
        if self.throttled_secs < 0.05 && self.rate_changes == 0 {
            return String::new();
        }
        format!(
            "; throttled {:.1} s (summed over workers), {} rate changes",
            self.throttled_secs, self.rate_changes
        )
    }
}

/// The itemized lines of a plan, in path order. Format: two characters, a space, the
/// path; the first character says what happens (`+` create, `>` new content, `.`
/// metadata only, `~` moved inside the destination, `c` copied inside the destination,
/// `=` hard link, `-` delete), the second the kind (`f` file, `d` directory, `L`
/// symlink, `p` FIFO, `s` socket, `D` device). Moves and copies end with `<= OLD`,
/// hard links with `=> LEADER`, symlinks with `-> TARGET`.
///
/// The lines are made one at a time and handed to `emit`: what is held is one small
/// record per change (a million changes would otherwise be hundreds of megabytes of
/// text).
pub fn itemize(plan: &Plan, src: &Listing, dst: &Listing, mut emit: impl FnMut(&str)) {
    /// One line to make, by indices into the listings (or, for files, the plan).
    #[derive(Clone, Copy)]
    enum Item {
        Clear(u32),
        Mkdir(u32),
        Move(u32, u32),
        File(u32),
        Link(u32, u32),
        Symlink(u32),
        Special(u32),
        Meta(u32),
        Delete(u32),
        DirMeta(u32),
    }
    let mut items: Vec<Item> = Vec::new();
    items.extend(plan.clear.iter().map(|&j| Item::Clear(j)));
    items.extend(plan.mkdirs.iter().map(|&i| Item::Mkdir(i)));
    items.extend(plan.moves.iter().map(|&(i, j)| Item::Move(i, j)));
    items.extend((0..plan.files.len() as u32).map(Item::File));
    items.extend(plan.links.iter().map(|&(i, l)| Item::Link(i, l)));
    items.extend(plan.symlinks.iter().map(|&i| Item::Symlink(i)));
    items.extend(plan.specials.iter().map(|&i| Item::Special(i)));
    items.extend(plan.meta.iter().map(|&(i, _)| Item::Meta(i)));
    items.extend(plan.deletes.iter().map(|&j| Item::Delete(j)));
    items.extend(plan.dirmeta.iter().copied().filter_map(|i| {
        let p = src.path(i as usize);
        let j = dst.find(p)?;
        let (s, d) = (src.get(i as usize), dst.get(j));
        (d.kind == Kind::Dir
            && (s.perm != d.perm || s.mtime != d.mtime || s.mtime_nsec != d.mtime_nsec))
            .then_some(Item::DirMeta(i))
    }));
    let (sp, dp) = (|i: u32| src.path(i as usize), |j: u32| dst.path(j as usize));
    let path = |item: &Item| match *item {
        Item::Clear(j) | Item::Delete(j) => dp(j),
        Item::File(k) => sp(plan.files[k as usize].src),
        Item::Mkdir(i)
        | Item::Move(i, _)
        | Item::Link(i, _)
        | Item::Symlink(i)
        | Item::Special(i)
        | Item::Meta(i)
        | Item::DirMeta(i) => sp(i),
    };
    // Stable: entries at one path keep the order above (a clear before what replaces it).
    items.sort_by(|a, b| tree::path_cmp(path(a), path(b)));
    let k = |l: &Listing, i: u32| l.get(i as usize).kind.letter();
    for item in &items {
        let p = escape(path(item));
        let line = match *item {
            Item::Clear(j) | Item::Delete(j) => format!("-{} {p}", k(dst, j)),
            Item::Mkdir(_) => format!("+d {p}"),
            Item::Move(_, j) => format!("~f {p} <= {}", escape(dp(j))),
            Item::File(f) => match &plan.files[f as usize].from {
                FileSource::Source { old: None } => format!("+f {p}"),
                FileSource::Source { old: Some(_) } => format!(">f {p}"),
                FileSource::Local(from) => format!("cf {p} <= {}", escape(from.path(src, dst))),
            },
            Item::Link(_, l) => format!("=f {p} => {}", escape(sp(l))),
            Item::Symlink(i) => {
                let op = if dst.find(sp(i)).is_some() { '>' } else { '+' };
                format!("{op}L {p} -> {}", escape(src.target(i as usize)))
            }
            Item::Special(i) | Item::Meta(i) => {
                let op = if matches!(item, Item::Special(_)) {
                    '+'
                } else {
                    '.'
                };
                format!("{op}{} {p}", k(src, i))
            }
            Item::DirMeta(_) => format!(".d {p}"),
        };
        emit(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn worst_exit_code_wins() {
        let c = Counters::default();
        c.problem(ExitCode::Vanished, "a".into());
        c.problem(ExitCode::Partial, "b".into());
        let r = Report::from_counters(&c, 2, 0, Duration::from_secs(1), Duration::ZERO);
        assert_eq!(r.exit_code, 23);
        c.problem(ExitCode::DestIo, "c".into());
        let r = Report::from_counters(&c, 2, 0, Duration::from_secs(1), Duration::ZERO);
        assert_eq!(r.exit_code, 11);
    }
}

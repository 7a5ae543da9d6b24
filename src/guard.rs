//! The mass-delete guard (invariant 7): a replica never follows its source into
//! emptiness.
//!
//! A source that vanished, was unmounted or was swapped for another directory lists
//! as empty or as strangers, and the plan then deletes most of the replica. Before
//! anything is written, [`check`] weighs the plan's deletes against DEST's size and
//! refuses the run when they pass the limit: `--max-delete N` or `PCT%`, or by default
//! more than half of DEST (once over a small floor, so tiny trees are not nagged); and
//! any delete because SRC is empty, whatever the limit short of `100%`. Pure: counts in, verdict out.

/// The user's limit on deletes in one run (`--max-delete`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeleteLimit {
    /// At most this many entries.
    Count(u64),
    /// At most this percentage of the destination's entries.
    Percent(f64),
}

impl DeleteLimit {
    /// The `--max-delete` value that parses back to this limit.
    pub fn to_arg(self) -> String {
        match self {
            DeleteLimit::Count(n) => n.to_string(),
            DeleteLimit::Percent(p) => format!("{p}%"),
        }
    }
}

/// Below this many deletes the default rule never refuses.
pub const FLOOR: u64 = 100;

/// Parses `N` or `PCT%`.
pub fn parse_limit(s: &str) -> Result<DeleteLimit, String> {
    if let Some(p) = crate::units::parse_percent(s) {
        return p.map(DeleteLimit::Percent);
    }
    s.trim()
        .parse()
        .map(DeleteLimit::Count)
        .map_err(|_| format!("'{s}' is neither a count nor a percentage; write e.g. 1000 or 10%"))
}

/// What the guard weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletes {
    /// Entries the run would delete.
    pub doomed: u64,
    /// Entries DEST holds (the whole of it, also for a run limited to a part).
    pub dest_entries: u64,
    /// The run lists all of SRC and found it empty.
    pub source_empty: bool,
}

/// `Err(message)` when the run must be refused before it deletes anything.
pub fn check(d: Deletes, limit: Option<DeleteLimit>, src: &str, dest: &str) -> Result<(), String> {
    if d.doomed == 0 {
        return Ok(());
    }
    let share = |n: u64| n as f64 * 100.0 / d.dest_entries.max(1) as f64;
    let everything = matches!(limit, Some(DeleteLimit::Percent(p)) if p >= 100.0);
    if d.source_empty && !everything {
        // Whatever the limit: an empty SRC is what an unmounted disk looks like.
        return Err(format!(
            "{dest}: refusing to delete {} of its {} entries: the source {src} is empty. \
             Nothing was changed. If the source is right (check that {src} is mounted), \
             run again with --max-delete 100%",
            d.doomed, d.dest_entries
        ));
    }
    let why = match limit {
        Some(DeleteLimit::Count(n)) if d.doomed > n => format!("more than --max-delete {n}"),
        Some(DeleteLimit::Percent(p)) if share(d.doomed) > p => {
            format!("more than --max-delete {p}%")
        }
        Some(_) => return Ok(()),
        None if d.doomed > FLOOR && d.doomed * 2 > d.dest_entries => {
            "more than half of it".to_string()
        }
        None => return Ok(()),
    };
    Err(format!(
        "{dest}: refusing to delete {} of its {} entries ({:.0}%): {why}. Nothing was changed. \
         If the source is right (check that {src} is mounted and is the tree you mean), \
         run again with --max-delete {} (or --max-delete 100%)",
        d.doomed,
        d.dest_entries,
        share(d.doomed).min(100.0),
        d.doomed
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(doomed: u64, dest_entries: u64, source_empty: bool) -> Deletes {
        Deletes {
            doomed,
            dest_entries,
            source_empty,
        }
    }

    #[test]
    fn limits_parse_as_counts_or_percentages() {
        assert_eq!(parse_limit("1000"), Ok(DeleteLimit::Count(1000)));
        assert_eq!(parse_limit(" 10% "), Ok(DeleteLimit::Percent(10.0)));
        assert!(parse_limit("-3").is_err());
        assert!(parse_limit("150%").is_err());
        assert!(parse_limit("lots").unwrap_err().contains("lots"));
    }

    #[test]
    fn the_default_refuses_more_than_half_above_the_floor() {
        assert!(check(d(0, 0, true), None, "/s", "/d").is_ok());
        // Small trees are not nagged.
        assert!(check(d(FLOOR, FLOOR, false), None, "/s", "/d").is_ok());
        assert!(check(d(600, 1000, false), None, "/s", "/d").is_err());
        assert!(check(d(500, 1000, false), None, "/s", "/d").is_ok());
        let m = check(d(1000, 1000, false), None, "/s", "/d").unwrap_err();
        assert!(
            m.contains("1000 of its 1000") && m.contains("--max-delete 1000"),
            "{m}"
        );
    }

    #[test]
    fn an_empty_source_is_refused_whatever_the_size() {
        let m = check(d(3, 3, true), None, "/s", "/d").unwrap_err();
        assert!(m.contains("/s is empty"), "{m}");
    }

    #[test]
    fn an_explicit_limit_replaces_the_default() {
        let n = Some(DeleteLimit::Count(10));
        // An empty source needs 100% whatever the count.
        assert!(check(d(10, 10, true), n, "/s", "/d").is_err());
        assert!(check(d(10, 10, false), n, "/s", "/d").is_ok());
        assert!(check(d(11, 1000, false), n, "/s", "/d").is_err());
        let p = Some(DeleteLimit::Percent(100.0));
        assert!(check(d(1000, 1000, true), p, "/s", "/d").is_ok());
        let p = Some(DeleteLimit::Percent(1.0));
        assert!(check(d(11, 1000, false), p, "/s", "/d").is_err());
        assert!(check(d(10, 1000, false), p, "/s", "/d").is_ok());
        assert!(check(d(1, 10, false), Some(DeleteLimit::Count(0)), "/s", "/d").is_err());
    }
}

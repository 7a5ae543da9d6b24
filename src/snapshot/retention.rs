//! Retention rules: which snapshots a `prune` keeps, and why.
//!
//! A pure function of snapshot times (UTC seconds) and a [`Policy`]; no clock, no disk.
//! The rules mean what they mean in restic. Snapshots are taken newest first; each
//! bucketed rule (`hourly`, `daily`, `weekly`, `monthly`) keeps a snapshot when its
//! bucket (the UTC hour, day, ISO week or month it falls in) differs from the bucket of
//! the last snapshot that rule kept, until the rule has kept N — so `--keep-daily 7`
//! keeps the newest snapshot of each of the last 7 days that have one. `--keep-last N`
//! keeps the N newest. `--keep-within D` keeps every snapshot taken less than D before
//! the newest snapshot (relative to the newest one, not to now, so a backup that stopped
//! running never lets its history expire). Rules add up: a snapshot is kept when any
//! rule keeps it, and every reason is reported.
//!
//! Two protections hold whatever the policy says: the newest snapshot is always kept,
//! and so is the newest one that captured a successful push. Dates are computed in UTC
//! with a small civil-calendar conversion (Howard Hinnant's `days_from_civil`), so there
//! is no daylight-saving ambiguity and no dependency for a dozen lines of arithmetic.

use std::fmt;

/// How many snapshots each rule keeps (0: the rule is off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    /// Keep everything taken less than this many seconds before the newest snapshot.
    pub within_secs: Option<i64>,
}

impl Policy {
    /// Whether no rule is set (pruning with it would keep only the protected snapshots).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.within_secs.is_none()
    }
}

/// A snapshot as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// UTC seconds since the epoch.
    pub time: i64,
    /// Whether it captured a push that succeeded (a bare `snapshot` did not).
    pub successful_push: bool,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Newest,
    LastSuccessfulPush,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Within,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Newest => "newest snapshot",
            Reason::LastSuccessfulPush => "last successful push",
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Within => "within",
        })
    }
}

/// The verdict on one snapshot; `reasons` is empty when it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    pub time: i64,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day number: (year, month 1-12, day 1-31).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// ISO 8601 (year, week) of a day number: weeks start on Monday, week 1 holds the
/// year's first Thursday.
pub fn iso_week(days: i64) -> (i64, i64) {
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday; 1970-01-01 was a Thursday
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    (year, (thursday - days_from_civil(year, 1, 1)) / 7 + 1)
}

/// Formats UTC seconds as `2026-11-27T01:02:03Z`.
pub fn format_utc(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses `2026-11-27T01:02:03Z` (anything after the `Z` is ignored: it tells apart
/// snapshots taken within one second).
pub fn parse_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[19] != b'Z' || &b[4..5] != b"-" || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86400 + h * 3600 + mi * 60 + se)
}

/// The sequence number of a snapshot name: 0 for `…Z`, k for `…Z.k` (several
/// snapshots in one second). Orders snapshots of equal time.
pub fn name_seq(name: &str) -> u64 {
    name.rsplit_once("Z.")
        .and_then(|(_, k)| k.parse().ok())
        .unwrap_or(0)
}

/// Parses a `--keep-within` duration into seconds: numbers with units `h`, `d`, `w`,
/// `m` (30 days) and `y` (365 days), combined as in `1y6m` or `2d12h`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut num = String::new();
    let bad = || format!("'{s}' is not a duration; write e.g. 36h, 7d, 2w, 6m (30 days) or 1y");
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        let unit = match c {
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            'm' => 30 * 86400,
            'y' => 365 * 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

fn bucket(reason: Reason, t: i64) -> i64 {
    let days = t.div_euclid(86400);
    match reason {
        Reason::Hourly => t.div_euclid(3600),
        Reason::Daily => days,
        Reason::Weekly => {
            let (y, w) = iso_week(days);
            y * 100 + w
        }
        Reason::Monthly => {
            let (y, m, _) = civil_from_days(days);
            y * 100 + m as i64
        }
        _ => 0,
    }
}

/// Applies `policy` to `snaps` (any order). Returns one decision per snapshot, newest
/// first; ties in time are ordered by [`name_seq`], the greater being the newer.
pub fn apply(policy: &Policy, snaps: &[Candidate]) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = snaps.iter().collect();
    sorted.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then_with(|| name_seq(&b.name).cmp(&name_seq(&a.name)))
    });
    let newest = sorted.first().map(|c| c.time);
    let last_ok = sorted.iter().position(|c| c.successful_push);
    let mut rules = [
        (Reason::Hourly, policy.hourly, None::<i64>),
        (Reason::Daily, policy.daily, None),
        (Reason::Weekly, policy.weekly, None),
        (Reason::Monthly, policy.monthly, None),
    ];
    let mut out = Vec::with_capacity(sorted.len());
    for (i, c) in sorted.iter().enumerate() {
        let mut reasons = Vec::new();
        if i == 0 {
            reasons.push(Reason::Newest);
        }
        if last_ok == Some(i) {
            reasons.push(Reason::LastSuccessfulPush);
        }
        if (i as u64) < policy.last as u64 {
            reasons.push(Reason::Last);
        }
        for (reason, left, last) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = bucket(*reason, c.time);
            if *last != Some(b) {
                *last = Some(b);
                *left -= 1;
                reasons.push(*reason);
            }
        }
        if let (Some(w), Some(n)) = (policy.within_secs, newest) {
            if c.time > n - w {
                reasons.push(Reason::Within);
            }
        }
        out.push(Decision {
            name: c.name.clone(),
            time: c.time,
            reasons,
        });
    }
    out
}

/// The order in which `--prune-when-full` gives snapshots up: first those the policy
/// removes, oldest first, then those it keeps, oldest first. The newest snapshot and
/// the last successful push are never in it.
pub fn give_up_order(decisions: &[Decision]) -> Vec<String> {
    let protected = |d: &Decision| {
        d.reasons.contains(&Reason::Newest) || d.reasons.contains(&Reason::LastSuccessfulPush)
    };
    let removed = decisions.iter().rev().filter(|d| !d.keep());
    let kept = decisions.iter().rev().filter(|d| d.keep() && !protected(d));
    removed.chain(kept).map(|d| d.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        parse_utc(s).unwrap()
    }

    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|s| Candidate {
                name: s.to_string(),
                time: t(s),
                successful_push: true,
            })
            .collect()
    }

    fn kept(policy: Policy, times: &[&str]) -> Vec<String> {
        apply(&policy, &snaps(times))
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| d.name)
            .collect()
    }

    #[test]
    fn civil_dates_round_trip() {
        for (s, days) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T00:00:00Z", 11016),
            ("2026-11-27T00:00:00Z", 20784),
        ] {
            assert_eq!(t(s), days * 86400, "{s}");
            assert_eq!(format_utc(days * 86400), s);
        }
        for z in -800_000..800_000i64 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(
            format_utc(t("2026-11-27T01:02:03Z")),
            "2026-11-27T01:02:03Z"
        );
        assert_eq!(t("2026-11-27T01:02:03Z.1"), t("2026-11-27T01:02:03Z"));
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-11-27 01:02:03Z",
            "x",
            "2026-11-27T01:02:03",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_weeks_cross_years() {
        let w = |s: &str| iso_week(t(s).div_euclid(86400));
        assert_eq!(w("2026-01-01T00:00:00Z"), (2026, 1)); // a Thursday
        assert_eq!(w("2021-01-03T00:00:00Z"), (2020, 53)); // a Sunday
        assert_eq!(w("2021-01-04T00:00:00Z"), (2021, 1)); // a Monday
        assert_eq!(w("2024-12-30T00:00:00Z"), (2025, 1));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h").unwrap(), 36 * 3600);
        assert_eq!(parse_duration("1y6m").unwrap(), (365 + 180) * 86400);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86400);
        for bad in ["", "5", "3x", "h", "0d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rule_tables() {
        let hours = [
            "2026-11-27T10:59:59Z",
            "2026-11-27T10:00:00Z",
            "2026-11-27T09:59:59Z",
            "2026-11-27T09:30:00Z",
            "2026-11-27T08:00:00Z",
            "2026-11-26T23:59:59Z",
            "2026-11-26T00:00:00Z",
            "2026-11-25T12:00:00Z",
        ];
        let policy = |f: fn(&mut Policy)| {
            let mut p = Policy::default();
            f(&mut p);
            p
        };
        let cases: Vec<(Policy, Vec<&str>)> = vec![
            // Only the newest survives an empty policy.
            (Policy::default(), vec![hours[0]]),
            (policy(|p| p.last = 3), hours[..3].to_vec()),
            // The newest of each hour that has one: 10:59:59, 09:59:59, 08:00.
            (policy(|p| p.hourly = 3), vec![hours[0], hours[2], hours[4]]),
            // 23:59:59 and 00:00:00 are one second apart but two days.
            (policy(|p| p.daily = 2), vec![hours[0], hours[5]]),
            (policy(|p| p.daily = 10), vec![hours[0], hours[5], hours[7]]),
            (policy(|p| p.weekly = 5), vec![hours[0]]),
            (policy(|p| p.monthly = 5), vec![hours[0]]),
            // Within is relative to the newest and strict: exactly 1h before is out.
            (policy(|p| p.within_secs = Some(3600)), hours[..2].to_vec()),
            (policy(|p| p.within_secs = Some(3601)), hours[..3].to_vec()),
            (
                policy(|p| p.within_secs = Some(3600 + 1800 + 1)),
                hours[..4].to_vec(),
            ),
            // Rules add up.
            (
                policy(|p| {
                    p.last = 1;
                    p.daily = 3
                }),
                vec![hours[0], hours[5], hours[7]],
            ),
        ];
        for (p, want) in cases {
            assert_eq!(kept(p, &hours), want, "{p:?}");
        }
    }

    #[test]
    fn weeks_and_months_use_utc_boundaries() {
        let times = [
            "2026-03-02T00:00:00Z", // Monday: week 10
            "2026-03-01T23:59:59Z", // Sunday: week 9, and February is over
            "2026-02-28T12:00:00Z",
            "2026-01-31T00:00:00Z",
        ];
        let mut p = Policy {
            weekly: 2,
            ..Default::default()
        };
        assert_eq!(kept(p, &times), vec![times[0], times[1]]);
        p = Policy {
            monthly: 3,
            ..Default::default()
        };
        assert_eq!(kept(p, &times), vec![times[0], times[2], times[3]]);
    }

    #[test]
    fn ties_and_protections() {
        // Two snapshots in one second: the greater name is the newer.
        let mut s = snaps(&["2026-11-27T01:00:00Z", "2026-11-27T01:00:00Z"]);
        s[1].name = "2026-11-27T01:00:00Z.1".into();
        let d = apply(&Policy::default(), &s);
        assert_eq!(d[0].name, "2026-11-27T01:00:00Z.1");
        assert_eq!(name_seq("2026-11-27T01:00:00Z.12"), 12);
        let mut s10 = s.clone();
        s10[0].name = "2026-11-27T01:00:00Z.10".into();
        s10[1].name = "2026-11-27T01:00:00Z.9".into();
        assert_eq!(
            apply(&Policy::default(), &s10)[0].name,
            "2026-11-27T01:00:00Z.10"
        );
        assert_eq!(
            d[0].reasons,
            vec![Reason::Newest, Reason::LastSuccessfulPush]
        );
        assert!(!d[1].keep());
        // The last successful push is kept even when newer snapshots exist.
        let mut s = snaps(&[
            "2026-11-27T03:00:00Z",
            "2026-11-27T02:00:00Z",
            "2026-11-27T01:00:00Z",
        ]);
        s[0].successful_push = false;
        let d = apply(&Policy::default(), &s);
        assert_eq!(d[1].reasons, vec![Reason::LastSuccessfulPush]);
        assert!(!d[2].keep());
        assert_eq!(give_up_order(&d), vec!["2026-11-27T01:00:00Z".to_string()]);
        // The order to give snapshots up: removed ones, then kept ones, oldest first.
        let s = snaps(&hours_for_order());
        let p = Policy {
            daily: 2,
            ..Default::default()
        };
        let d = apply(&p, &s);
        assert_eq!(
            give_up_order(&d),
            vec![
                "2026-11-25T09:00:00Z",
                "2026-11-26T09:00:00Z",
                "2026-11-26T12:00:00Z"
            ]
        );
        assert!(apply(&p, &[]).is_empty());
    }

    fn hours_for_order() -> Vec<&'static str> {
        vec![
            "2026-11-27T12:00:00Z",
            "2026-11-26T12:00:00Z",
            "2026-11-26T09:00:00Z",
            "2026-11-25T09:00:00Z",
        ]
    }
}

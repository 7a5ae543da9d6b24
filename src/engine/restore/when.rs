//! The times people type for `restore --at`: `2026-11-26`, `2026-11-26T03:00`,
//! `2026-11-26 03:00:15`, `yesterday`, `today`, `now`, `3 days ago`, `2h ago`.
//!
//! All in UTC, like the snapshots' names. A day alone (a date, `today`, `yesterday`)
//! means the end of that day, so `--at yesterday` picks the last snapshot taken
//! yesterday; a time of day without seconds covers its whole minute. Pure: the clock is
//! a parameter.

use crate::snapshot::retention::days_from_civil;

/// The latest UTC second that `s` names, given the time `now`; `Err` says what is
/// accepted.
pub fn parse_at(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || {
        format!(
            "{s}: give a UTC time such as 2026-11-26, 2026-11-26T03:00, yesterday or \
             \"3 days ago\""
        )
    };
    let today = now.div_euclid(86400) * 86400;
    match t.as_str() {
        "now" => return Ok(now),
        "today" => return Ok(today + 86399),
        "yesterday" => return Ok(today - 1),
        _ => {}
    }
    if let Some(ago) = t.strip_suffix("ago") {
        return ago_secs(ago.trim()).map(|d| now - d).ok_or_else(bad);
    }
    parse_datetime(&t).ok_or_else(bad)
}

/// `3 days`, `2h`, `90 minutes`, `1 week` → seconds.
fn ago_secs(s: &str) -> Option<i64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit = unit.trim();
    let secs = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 7 * 86400,
        _ => return None,
    };
    n.checked_mul(secs)
}

/// `YYYY-MM-DD[( |T)HH[:MM[:SS]]][Z]`: the last second it covers.
fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.strip_suffix('z').unwrap_or(s);
    let (date, time) = match s.find(['t', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut d = date.split('-');
    let y: i64 = num(d.next()?, 4)?;
    let m: u32 = num(d.next()?, 2)? as u32;
    let day: u32 = num(d.next()?, 2)? as u32;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(y, m, day);
    // A day that does not exist (Feb 30) would land in the next month.
    if crate::snapshot::retention::civil_from_days(days) != (y, m, day) {
        return None;
    }
    let base = days * 86400;
    let Some(time) = time else {
        return Some(base + 86399);
    };
    let parts: Vec<&str> = time.split(':').collect();
    let h = num(parts.first()?, 2)?;
    let (mi, se, last) = match parts.len() {
        1 => (0, 0, 3599),
        2 => (num(parts[1], 2)?, 0, 59),
        3 => (num(parts[1], 2)?, num(parts[2], 2)?, 0),
        _ => return None,
    };
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(base + h * 3600 + mi * 60 + se + last)
}

/// A number of exactly `digits` ASCII digits.
fn num(s: &str, digits: usize) -> Option<i64> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::retention::parse_utc;

    fn utc(s: &str) -> i64 {
        parse_utc(s).unwrap()
    }

    #[test]
    fn the_formats_people_type() {
        let now = utc("2026-12-03T07:30:00Z");
        let at = |s: &str| parse_at(s, now);
        assert_eq!(at("2026-11-26"), Ok(utc("2026-11-26T23:59:59Z")));
        assert_eq!(at("2026-11-26T03:00"), Ok(utc("2026-11-26T03:00:59Z")));
        assert_eq!(at("2026-11-26 03:00:15"), Ok(utc("2026-11-26T03:00:15Z")));
        assert_eq!(at("2026-11-26T03:00:00Z"), Ok(utc("2026-11-26T03:00:00Z")));
        assert_eq!(at("2026-11-26T03"), Ok(utc("2026-11-26T03:59:59Z")));
        assert_eq!(at("yesterday"), Ok(utc("2026-12-02T23:59:59Z")));
        assert_eq!(at("Today"), Ok(utc("2026-12-03T23:59:59Z")));
        assert_eq!(at("now"), Ok(now));
        assert_eq!(at("3 days ago"), Ok(utc("2026-11-30T07:30:00Z")));
        assert_eq!(at("2h ago"), Ok(utc("2026-12-03T05:30:00Z")));
        assert_eq!(at("1 week ago"), Ok(utc("2026-11-26T07:30:00Z")));
        for bad in [
            "",
            "2026-02-30",
            "2026-13-01",
            "26-11-26",
            "3 fortnights ago",
            "ago",
            "tomorrow",
            "2026-11-26T25:00",
            "2026-11-26T03:00:00:00",
        ] {
            let e = at(bad).unwrap_err();
            assert!(e.contains("yesterday"), "{bad}: {e}");
        }
    }
}

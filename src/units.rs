//! Quantities people type and read: sizes and rates with binary units, percentages,
//! durations, and byte counts for humans.

/// Splits `12.5M` into its number and the unit after it (`None`: no number first).
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// Parses a size with optional binary unit: `512`, `64K`, `20M`, `1.5G`, `2T` (also `KiB`, `MB`…;
/// every unit is a power of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("'{s}' is not a size; write e.g. 512K, 20M or 1.5G"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit '{other}'; use K, M, G or T (powers of 1024)"
            ))
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(v as u64)
}

/// Parses a rate such as `20M` (bytes per second; `/s` suffix allowed). Zero is refused.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let v = parse_size(s.trim().trim_end_matches("/s"))?;
    if v == 0 {
        return Err("a rate of 0 would never finish; give a positive rate such as 20M".into());
    }
    Ok(v)
}

/// Parses `PCT%` (0 to 100); `None` when `s` does not end in `%`.
pub fn parse_percent(s: &str) -> Option<Result<f64, String>> {
    let p = s.trim().strip_suffix('%')?;
    Some(match p.trim().parse::<f64>() {
        Err(_) => Err(format!("'{s}' is not a percentage; write e.g. 5%")),
        Ok(p) if !(0.0..=100.0).contains(&p) => {
            Err(format!("'{s}': a percentage must be between 0% and 100%"))
        }
        Ok(p) => Ok(p),
    })
}

/// Parses a duration: a number with a unit `ms`, `s`, `m`, `h` or `d` (`250ms`, `1.5s`,
/// `5m`, `1h`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("'{s}' is not a duration; write e.g. 250ms, 5s, 10m or 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => return Err(format!("'{s}': unknown unit '{u}'; use ms, s, m, h or d")),
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("'{s}' is too long"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Formats a byte count with binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        use std::time::Duration;
        let table = [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2", Duration::from_secs(2)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text).unwrap(), want, "{text}");
        }
        for bad in ["", "x", "5 parsecs", "-1s", "1e99h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("fast").is_err());
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_rate("8M/s").unwrap(), 8 << 20);
    }
}

//! Plain option values the engine runs on, and parsers for sizes and rates.
//!
//! Core code never sees clap: `cli` converts its arguments into [`Options`], a config
//! file (later) will produce the same value.

/// How temporary files are made durable before they are renamed into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Write a batch of temporary files, `syncfs` the destination once, then rename them.
    #[default]
    Batch,
    /// `fsync` each temporary file before its rename.
    File,
    /// No durability barrier (atomic against a crash of this process, not of the machine).
    None,
}

/// The free-space reserve kept on the destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    Bytes(u64),
    Percent(f64),
}

impl Reserve {
    /// Bytes to keep free on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            Reserve::Bytes(b) => b,
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// Default reserve: 5% of the filesystem, capped at 10 GiB.
pub fn default_reserve(total: u64) -> u64 {
    (total / 20).min(10 << 30)
}

/// Options of a replication run. Every field is documented by its `push` flag.
#[derive(Debug, Clone)]
pub struct Options {
    /// Remove destination entries the source no longer has.
    pub delete: bool,
    /// Also remove destination entries that the filters exclude.
    pub delete_excluded: bool,
    /// Compare content hashes rather than size and mtime.
    pub checksum: bool,
    /// Exclude patterns (gitignore syntax), from `--exclude` and `--exclude-from`.
    pub excludes: Vec<String>,
    /// Stay on the source root's filesystem.
    pub one_file_system: bool,
    /// Replicate extended attributes.
    pub xattrs: bool,
    /// Use rolling-checksum deltas for files that exist in the destination.
    pub delta: bool,
    /// Worker threads.
    pub jobs: usize,
    /// Free space to keep on the destination (`None`: [`default_reserve`]).
    pub min_free: Option<Reserve>,
    /// Durability before rename.
    pub fsync: FsyncMode,
    /// Byte-rate limit on disk reads and writes, bytes per second.
    pub bwlimit: Option<u64>,
    /// Limit on metadata operations per second.
    pub iops_limit: Option<u32>,
    /// CPU and I/O priority of every thread.
    pub priority: crate::throttle::priority::Priority,
    /// Adaptive back-off (`None`: `--no-adaptive`).
    pub adaptive: Option<crate::throttle::adaptive::Config>,
    /// Plan only.
    pub dry_run: bool,
    /// One line per change.
    pub itemize: bool,
    /// Progress bar even off a terminal.
    pub progress: bool,
    /// JSON summary.
    pub json: bool,
    /// Errors only.
    pub quiet: bool,
    /// Verbosity level.
    pub verbose: u8,
    /// Preserve owners (true when running as root).
    pub owners: bool,
    /// Recreate devices, FIFOs and sockets (true when running as root).
    pub specials: bool,
    /// Files per durability batch.
    pub batch_files: usize,
    /// Bytes per durability batch.
    pub batch_bytes: u64,
    /// Leave what the run reads and writes in the page cache (`--keep-cache`).
    pub keep_cache: bool,
    /// The most a run may delete (`None`: the default rule of [`crate::guard`]).
    pub max_delete: Option<crate::guard::DeleteLimit>,
    /// Take a source that is not the one the replica was made from, and record it.
    pub accept_new_source: bool,
    /// Entries the whole DEST holds, for a run that lists only a part of it (watch
    /// batches): the mass-delete guard weighs deletes against all of DEST.
    pub dest_entries: Option<u64>,
    /// Only this part of both trees (set by watch mode for each batch; no flag).
    pub scope: Option<std::sync::Arc<crate::scope::Scope>>,
    /// Once set, nothing new starts: the files being copied finish and are put in
    /// place, and the run ends as interrupted (watch mode's SIGTERM; no flag).
    pub drain: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Refuse a destination root that is a symlink (backup's `DEST/current`, which a
    /// planted link must not lead outside DEST).
    pub no_follow_dest: bool,
}

impl Default for Options {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        Options {
            delete: false,
            delete_excluded: false,
            checksum: false,
            excludes: Vec::new(),
            one_file_system: false,
            xattrs: false,
            delta: false,
            jobs: 2,
            min_free: None,
            fsync: FsyncMode::Batch,
            bwlimit: None,
            iops_limit: None,
            priority: Default::default(),
            adaptive: Some(Default::default()),
            dry_run: false,
            itemize: false,
            progress: false,
            json: false,
            quiet: false,
            verbose: 0,
            owners: root,
            specials: root,
            batch_files: 2048,
            batch_bytes: 256 << 20,
            scope: None,
            drain: None,
            max_delete: None,
            keep_cache: false,
            accept_new_source: false,
            dest_entries: None,
            no_follow_dest: false,
        }
    }
}

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

/// Parses `--min-free`: a size or a percentage of the filesystem (`5%`).
pub fn parse_reserve(s: &str) -> Result<Reserve, String> {
    match parse_percent(s) {
        Some(p) => p.map(Reserve::Percent),
        None => parse_size(s).map(Reserve::Bytes),
    }
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

    #[test]
    fn reserve_percent_and_default_cap() {
        assert_eq!(parse_reserve("5%").unwrap().bytes(1000), 50);
        assert_eq!(parse_reserve("1M").unwrap().bytes(1000), 1 << 20);
        assert!(parse_reserve("150%").is_err());
        assert_eq!(default_reserve(100 << 30), 5 << 30);
        assert_eq!(default_reserve(1 << 40), 10 << 30);
    }
}

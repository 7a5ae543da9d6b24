//! Backup jobs: the TOML config file that lists them, and what cron needs around them
//! (a log line per job, Prometheus textfile metrics written atomically).
//!
//! A job's keys are the `backup` flags of the same names: [`Job::settings`] checks them
//! as the command line checks its flags and lays them over the command line's settings,
//! so a job and the same flags typed by hand behave alike. Unknown keys are errors that
//! name the key and its line (`deny_unknown_fields`); nothing runs on a bad file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::options::Options;
use crate::snapshot::retention::Policy;
use crate::throttle::priority::IoClass;

/// The config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, rename = "job")]
    pub jobs: Vec<Job>,
}

/// One `[[job]]`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    pub source: PathBuf,
    /// A local path or `[user@]host:path`.
    pub destination: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub throttle: JobThrottle,
    #[serde(default)]
    pub retention: JobRetention,
}

/// A job's `[job.throttle]`: the push flags of the same names.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobThrottle {
    pub bwlimit: Option<String>,
    pub iops_limit: Option<u32>,
    pub ionice: Option<String>,
    pub nice: Option<i32>,
    pub min_free: Option<String>,
}

/// A job's `[job.retention]`: the `--keep-*` flags of the same names.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<String>,
}

impl Job {
    /// This job's run settings over `base` (what the command line gives every job):
    /// the job's throttle, priority and reserve replace the base's, its excludes add to
    /// them, and its retention rules replace the base's when it has any. Values are
    /// checked as the flags of the same names are; an error names the key.
    pub fn settings(&self, base: &Options, policy: &Policy) -> Result<(Options, Policy), String> {
        let bad = |key: &str, e: String| format!("job {}: {key}: {e}", self.name);
        let mut o = base.clone();
        let t = &self.throttle;
        if let Some(r) = &t.bwlimit {
            o.bwlimit = Some(crate::units::parse_rate(r).map_err(|e| bad("bwlimit", e))?);
            if let Some(a) = &mut o.adaptive {
                a.max_rate = o.bwlimit;
                a.min_rate = a.min_rate.min(o.bwlimit.unwrap_or(u64::MAX));
            }
        }
        if let Some(n) = t.iops_limit {
            if n == 0 {
                return Err(bad(
                    "iops_limit",
                    "0 would never finish; give a positive limit".into(),
                ));
            }
            o.iops_limit = Some(n);
        }
        if let Some(c) = &t.ionice {
            o.priority.io = IoClass::parse(c).map_err(|e| bad("ionice", e))?;
        }
        if let Some(n) = t.nice {
            if !(-20..=19).contains(&n) {
                return Err(bad("nice", format!("{n}: give a niceness from -20 to 19")));
            }
            o.priority.nice = Some(n);
        }
        if let Some(m) = &t.min_free {
            o.min_free = Some(crate::space::parse_reserve(m).map_err(|e| bad("min_free", e))?);
        }
        o.excludes.extend(self.exclude.iter().cloned());
        let r = &self.retention;
        let within_secs = match &r.keep_within {
            Some(d) => Some(
                crate::snapshot::retention::parse_duration(d).map_err(|e| bad("keep_within", e))?,
            ),
            None => None,
        };
        let own = Policy {
            last: r.keep_last.unwrap_or(0),
            hourly: r.keep_hourly.unwrap_or(0),
            daily: r.keep_daily.unwrap_or(0),
            weekly: r.keep_weekly.unwrap_or(0),
            monthly: r.keep_monthly.unwrap_or(0),
            within_secs,
        };
        let policy = if own.is_empty() { *policy } else { own };
        Ok((o, policy))
    }
}

/// Where the config file is: `--config`, else $FSYNC_REPL_CONFIG, else
/// /etc/fsync-repl.toml when it exists, else ~/.config/fsync-repl/config.toml.
pub fn config_path(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("FSYNC_REPL_CONFIG").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let etc = PathBuf::from("/etc/fsync-repl.toml");
    if etc.exists() {
        return etc;
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".config/fsync-repl/config.toml")
}

/// Parses a config file's text; errors are one line: `PATH:LINE: what`.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, String> {
    let cfg: ConfigFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        format!(
            "{}:{line}: {}; fix the config file",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })?;
    let mut names: Vec<&str> = Vec::new();
    for j in &cfg.jobs {
        if j.name.is_empty() || names.contains(&j.name.as_str()) {
            return Err(format!(
                "{}: job name '{}' is empty or used twice; give every job its own name",
                path.display(),
                j.name
            ));
        }
        names.push(&j.name);
    }
    if cfg.jobs.is_empty() {
        return Err(format!("{}: no [[job]] in the config file", path.display()));
    }
    Ok(cfg)
}

/// The outcome of one job, for the log and the metrics.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub name: String,
    pub exit_code: i32,
    pub started: i64,
    pub duration_secs: f64,
    pub bytes: u64,
    pub files: u64,
    /// Entries the run meant to change and could not.
    pub failed: u64,
    /// One line saying what failed (None: success).
    pub failure: Option<String>,
}

/// Appends one line per job to the log file.
pub fn append_log(path: &Path, results: &[JobResult]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = String::new();
    for r in results {
        text.push_str(&format!(
            "{} job={} exit={} duration={:.1}s bytes={} files={} failed={} {}\n",
            crate::snapshot::retention::format_utc(r.started),
            r.name,
            r.exit_code,
            r.duration_secs,
            r.bytes,
            r.files,
            r.failed,
            r.failure.as_deref().unwrap_or("ok")
        ));
    }
    f.write_all(text.as_bytes())
}

const LAST_SUCCESS: &str = "fsync_repl_last_success_timestamp_seconds";

fn label(name: &str) -> String {
    name.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the metrics of `results`; `previous` is the old file's text, whose last
/// success times are kept for jobs that failed this time, and whose other jobs' lines
/// are kept as they were.
pub fn render_metrics(results: &[JobResult], previous: &str) -> String {
    let last_ok = |name: &str| -> Option<String> {
        let prefix = format!("{LAST_SUCCESS}{{job=\"{}\"}} ", label(name));
        previous
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    };
    type Value<'a> = &'a dyn Fn(&JobResult) -> Option<String>;
    let metrics: [(&str, &str, Value); 6] = [
        (
            LAST_SUCCESS,
            "Time of the job's last successful backup.",
            &|r| {
                if r.failure.is_none() {
                    Some((r.started as f64 + r.duration_secs).round().to_string())
                } else {
                    last_ok(&r.name)
                }
            },
        ),
        (
            "fsync_repl_duration_seconds",
            "Duration of the job's last run.",
            &|r| Some(format!("{:.3}", r.duration_secs)),
        ),
        (
            "fsync_repl_bytes",
            "Bytes the job's last run copied.",
            &|r| Some(r.bytes.to_string()),
        ),
        (
            "fsync_repl_files",
            "Files in the job's last snapshot (or scanned).",
            &|r| Some(r.files.to_string()),
        ),
        (
            "fsync_repl_failed_files",
            "Entries the job's last run could not replicate (each named in its log).",
            &|r| Some(r.failed.to_string()),
        ),
        (
            "fsync_repl_exit_code",
            "Exit code of the job's last run.",
            &|r| Some(r.exit_code.to_string()),
        ),
    ];
    let ours: Vec<String> = results
        .iter()
        .map(|r| format!("{{job=\"{}\"}} ", label(&r.name)))
        .collect();
    let mut out = String::new();
    for (name, help, value) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for r in results {
            if let Some(v) = value(r) {
                out.push_str(&format!("{name}{{job=\"{}\"}} {v}\n", label(&r.name)));
            }
        }
        // Other jobs' figures (another backup writing to the same file) stay.
        for line in previous.lines() {
            if let Some(rest) = line.strip_prefix(name) {
                if rest.starts_with("{job=\"") && !ours.iter().any(|o| rest.starts_with(o.as_str()))
                {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Writes the metrics file atomically (see [`crate::fsutil::replace_shared`]), keeping
/// other jobs' figures.
pub fn write_metrics(path: &Path, results: &[JobResult]) -> std::io::Result<()> {
    crate::fsutil::replace_shared(path, |previous| render_metrics(results, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let text = "[[job]]\nname = \"a\"\nsource = \"/s\"\ndestination = \"/d\"\nkeep_daily = 3\n";
        let e = parse(Path::new("/etc/x.toml"), text).unwrap_err();
        assert!(e.starts_with("/etc/x.toml:5: "), "{e}");
        assert!(e.contains("keep_daily"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse(Path::new("c"), "[[job]]\nname = \"a\"\n").unwrap_err();
        assert!(e.contains("source"), "{e}");
        let ok = "[[job]]\nname = \"a\"\nsource = \"/s\"\ndestination = \"h:/d\"\nexclude = [\"*.o\"]\n[job.throttle]\nbwlimit = \"20M\"\n[job.retention]\nkeep_daily = 7\nkeep_within = \"2d\"\n";
        let c = parse(Path::new("c"), ok).unwrap();
        let base = Options {
            excludes: vec!["*.tmp".into()],
            ..Options::default()
        };
        let keep_last = Policy {
            last: 3,
            ..Policy::default()
        };
        let (o, p) = c.jobs[0].settings(&base, &keep_last).unwrap();
        assert_eq!(o.bwlimit, Some(20 << 20));
        assert_eq!(o.excludes, ["*.tmp", "*.o"]);
        assert_eq!((p.daily, p.last, p.within_secs), (7, 0, Some(2 * 86400)));
        // A job without retention rules takes the command line's.
        let mut plain = c.jobs[0].clone();
        plain.retention = JobRetention::default();
        assert_eq!(plain.settings(&base, &keep_last).unwrap().1.last, 3);
        plain.throttle.ionice = Some("loud".into());
        let e = plain.settings(&base, &keep_last).unwrap_err();
        assert!(e.starts_with("job a: ionice: "), "{e}");
        let dup = format!("{ok}{ok}");
        assert!(parse(Path::new("c"), &dup).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_sample_config_parses() {
        let text = include_str!("../contrib/fsync-repl.toml");
        let c = parse(Path::new("contrib/fsync-repl.toml"), text).unwrap();
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(c.jobs[0].retention.keep_within.as_deref(), Some("2d"));
    }

    #[test]
    fn metrics_keep_the_last_success_of_a_failed_job() {
        let ok = JobResult {
            name: "a".into(),
            exit_code: 0,
            started: 1000,
            duration_secs: 5.0,
            bytes: 10,
            files: 2,
            failed: 0,
            failure: None,
        };
        let first = render_metrics(std::slice::from_ref(&ok), "");
        assert!(
            first.contains("fsync_repl_last_success_timestamp_seconds{job=\"a\"} 1005\n"),
            "{first}"
        );
        let failed = JobResult {
            exit_code: 11,
            started: 2000,
            failed: 3,
            failure: Some("no space".into()),
            ..ok
        };
        let second = render_metrics(std::slice::from_ref(&failed), &first);
        assert!(
            second.contains("fsync_repl_failed_files{job=\"a\"} 3\n"),
            "{second}"
        );
        assert!(second.contains("{job=\"a\"} 1005\n"), "{second}");
        assert!(
            second.contains("fsync_repl_exit_code{job=\"a\"} 11\n"),
            "{second}"
        );
        assert_eq!(
            second.matches("fsync_repl_exit_code{").count(),
            1,
            "{second}"
        );
        // Another job writing the same file keeps a's lines.
        let b = JobResult {
            name: "b".into(),
            ..failed
        };
        let third = render_metrics(&[b], &second);
        assert!(
            third.contains("fsync_repl_exit_code{job=\"a\"} 11\n"),
            "{third}"
        );
        assert!(
            third.contains("fsync_repl_exit_code{job=\"b\"} 11\n"),
            "{third}"
        );
        assert!(
            third.contains("fsync_repl_last_success_timestamp_seconds{job=\"a\"} 1005\n"),
            "{third}"
        );
    }
}

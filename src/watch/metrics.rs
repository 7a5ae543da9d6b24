//! Prometheus textfile metrics of a watch (`--metrics-file`), for node_exporter's
//! textfile collector.
//!
//! [`render`] is pure: counters and the per-home lag in, the exposition text out.
//! [`write`] replaces the file atomically (a temporary file beside it, then a rename),
//! so the collector never reads half a file; the loop calls it at most once a second.
//! Counters start at zero with each run of the watch, as Prometheus expects of a
//! restarted process.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::state::HomeState;

/// What the metrics file reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub backend: String,
    /// Batches run, failed ones included.
    pub batches: u64,
    /// Batches the destination failed (retried).
    pub failed_batches: u64,
    /// Entries a batch could not replicate (each reported in the log).
    pub failed_entries: u64,
    /// File data sent literally (what the deltas could not reuse).
    pub bytes_sent: u64,
    /// File data reused from the destination's old copies.
    pub bytes_matched: u64,
    /// Unix time of the last batch without a destination error.
    pub last_success: Option<u64>,
    pub homes: Vec<HomeState>,
}

/// A label value: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let mut section = |name: &str, kind: &str, help: &str, values: Vec<String>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for v in values {
            let _ = writeln!(out, "{name}{v}");
        }
    };
    section(
        "fsync_repl_watch_lag_seconds",
        "gauge",
        "Age of the oldest change not yet replicated, per top-level directory of SRC.",
        m.homes
            .iter()
            .map(|h| format!("{{home=\"{}\"}} {}", label(&h.name), h.lag_secs))
            .collect(),
    );
    section(
        "fsync_repl_watch_pending_directories",
        "gauge",
        "Directories waiting to be replicated, per top-level directory of SRC.",
        m.homes
            .iter()
            .map(|h| format!("{{home=\"{}\"}} {}", label(&h.name), h.pending))
            .collect(),
    );
    section(
        "fsync_repl_watch_batches_total",
        "counter",
        "Batches run since the watch started.",
        vec![format!(" {}", m.batches)],
    );
    section(
        "fsync_repl_watch_failed_batches_total",
        "counter",
        "Batches the destination failed (kept and retried).",
        vec![format!(" {}", m.failed_batches)],
    );
    section(
        "fsync_repl_watch_errors_total",
        "counter",
        "Entries a batch could not replicate.",
        vec![format!(" {}", m.failed_entries)],
    );
    section(
        "fsync_repl_watch_bytes_sent_total",
        "counter",
        "File data sent literally to the destination.",
        vec![format!(" {}", m.bytes_sent)],
    );
    section(
        "fsync_repl_watch_bytes_matched_total",
        "counter",
        "File data reused from the destination's old copies.",
        vec![format!(" {}", m.bytes_matched)],
    );
    section(
        "fsync_repl_watch_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last batch without a destination error (0: none yet).",
        vec![format!(" {}", m.last_success.unwrap_or(0))],
    );
    section(
        "fsync_repl_watch_backend_info",
        "gauge",
        "The change notification interface in use.",
        vec![format!("{{backend=\"{}\"}} 1", label(&m.backend))],
    );
    out
}

/// Replaces `path` with the metrics, atomically.
pub fn write(path: &Path, m: &Metrics) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(render(m).as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_escaped_labels() {
        let m = Metrics {
            backend: "fanotify".into(),
            batches: 7,
            failed_batches: 1,
            failed_entries: 2,
            bytes_sent: 4096,
            bytes_matched: 10,
            last_success: Some(1_700_000_000),
            homes: vec![
                HomeState {
                    name: "alice".into(),
                    lag_secs: 1.5,
                    pending: 3,
                },
                HomeState {
                    name: "we\"ird\\x0a".into(),
                    lag_secs: 0.0,
                    pending: 0,
                },
            ],
        };
        let t = render(&m);
        for want in [
            "fsync_repl_watch_lag_seconds{home=\"alice\"} 1.5\n",
            "fsync_repl_watch_pending_directories{home=\"alice\"} 3\n",
            "fsync_repl_watch_lag_seconds{home=\"we\\\"ird\\\\x0a\"} 0\n",
            "fsync_repl_watch_batches_total 7\n",
            "fsync_repl_watch_failed_batches_total 1\n",
            "fsync_repl_watch_errors_total 2\n",
            "fsync_repl_watch_bytes_sent_total 4096\n",
            "fsync_repl_watch_last_success_timestamp_seconds 1700000000\n",
            "fsync_repl_watch_backend_info{backend=\"fanotify\"} 1\n",
            "# TYPE fsync_repl_watch_batches_total counter\n",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        // Every sample line belongs to a declared metric.
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(t.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }

    #[test]
    fn the_file_is_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watch.prom");
        write(&p, &Metrics::default()).unwrap();
        write(
            &p,
            &Metrics {
                batches: 3,
                ..Metrics::default()
            },
        )
        .unwrap();
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("fsync_repl_watch_batches_total 3\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}

//! `verify --metrics-file`: the result as Prometheus textfile-collector metrics, one
//! sample per DEST (label `dest`), written atomically (temporary file, rename) so the
//! collector never reads half a file. The file may be shared with backups' metrics and
//! other DESTs' verifies: every other family and sample in it is kept.

use std::path::Path;

/// (name, help, value) of each family a verify writes.
fn families(
    exit_code: i32,
    differ: u64,
    files: u64,
    bytes: u64,
    secs: f64,
    now: i64,
    previous_ok: Option<String>,
) -> Vec<(&'static str, &'static str, Option<String>)> {
    vec![
        (
            "fsync_repl_verify_differing_files",
            "Files the last verify found differing from their catalogue or SRC.",
            Some(differ.to_string()),
        ),
        (
            "fsync_repl_verify_files",
            "Files the last verify checked.",
            Some(files.to_string()),
        ),
        (
            "fsync_repl_verify_bytes_read",
            "Bytes the last verify read.",
            Some(bytes.to_string()),
        ),
        (
            "fsync_repl_verify_duration_seconds",
            "Duration of the last verify.",
            Some(format!("{secs:.3}")),
        ),
        (
            "fsync_repl_verify_exit_code",
            "Exit code of the last verify (0: sound; 26: files differ).",
            Some(exit_code.to_string()),
        ),
        (
            "fsync_repl_verify_last_success_timestamp_seconds",
            "Time of the last verify that found every file sound.",
            if exit_code == 0 {
                Some(now.to_string())
            } else {
                previous_ok
            },
        ),
    ]
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metric name a sample or comment line is about.
fn family_of(line: &str) -> &str {
    let l = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
        .unwrap_or(line);
    l.split(['{', ' ']).next().unwrap_or("")
}

/// The new text of the metrics file: `previous` with this DEST's verify samples
/// replaced.
#[allow(clippy::too_many_arguments)]
pub fn render(
    previous: &str,
    dest: &str,
    exit_code: i32,
    differ: u64,
    files: u64,
    bytes: u64,
    secs: f64,
    now: i64,
) -> String {
    let ours = format!("{{dest=\"{}\"}} ", label(dest));
    let last_ok_name = "fsync_repl_verify_last_success_timestamp_seconds";
    let previous_ok = previous
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{last_ok_name}{ours}")))
        .map(str::to_string);
    let fams = families(exit_code, differ, files, bytes, secs, now, previous_ok);
    let mut out = String::new();
    // Everything that is not ours stays as it was.
    for line in previous.lines() {
        if !fams.iter().any(|f| f.0 == family_of(line)) && !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (name, help, value) in fams {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for line in previous.lines() {
            if let Some(rest) = line.strip_prefix(name) {
                if rest.starts_with("{dest=\"") && !rest.starts_with(&ours) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        if let Some(v) = value {
            out.push_str(&format!("{name}{ours}{v}\n"));
        }
    }
    out
}

/// Replaces the file at `path` with [`render`]'s text, atomically (see
/// [`crate::fsutil::replace_shared`]).
pub fn write(path: &Path, text_of: impl FnOnce(&str) -> String) -> std::io::Result<()> {
    crate::fsutil::replace_shared(path, text_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_families_and_other_dests_stay() {
        let backup = "# HELP fsync_repl_bytes x\n# TYPE fsync_repl_bytes gauge\nfsync_repl_bytes{job=\"a\"} 5\n";
        let one = render(backup, "/b1", 0, 0, 10, 100, 1.0, 1000);
        assert!(one.starts_with(backup), "{one}");
        assert!(one.contains("fsync_repl_verify_differing_files{dest=\"/b1\"} 0\n"));
        assert!(
            one.contains("fsync_repl_verify_last_success_timestamp_seconds{dest=\"/b1\"} 1000\n")
        );
        let two = render(&one, "/b2", 26, 3, 10, 100, 1.0, 2000);
        assert!(two.contains("fsync_repl_verify_differing_files{dest=\"/b1\"} 0\n"));
        assert!(two.contains("fsync_repl_verify_differing_files{dest=\"/b2\"} 3\n"));
        assert!(!two.contains("timestamp_seconds{dest=\"/b2\"}"), "{two}");
        // A failed run keeps the time of the last sound one.
        let three = render(&two, "/b1", 26, 1, 10, 100, 1.0, 3000);
        assert!(
            three.contains("fsync_repl_verify_last_success_timestamp_seconds{dest=\"/b1\"} 1000\n")
        );
        assert_eq!(
            three
                .matches("# TYPE fsync_repl_verify_files gauge")
                .count(),
            1
        );
        assert_eq!(three.matches("fsync_repl_bytes{job=\"a\"} 5").count(), 1);
    }
}

//! The watcher's state file: how current the secondary is, for `fsync-repl status`.
//!
//! Written after every batch and on exit as one JSON object, atomically (a temporary
//! file beside it, then a rename), so a reader never sees half a file. It records the
//! last successful batch, the pending dirty directories (their count, and the list when
//! the watcher stops), the last error and the lag: how long the oldest change not yet
//! replicated has waited. The default location is keyed by SRC and DEST under
//! `$XDG_STATE_HOME/fsync-repl/` (or `~/.local/state/fsync-repl/`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub src: String,
    pub dest: String,
    /// Process id of the watcher that wrote this.
    pub pid: u32,
    /// True while the watcher runs; false once it stopped.
    pub running: bool,
    /// Unix time of the watcher's start.
    pub started: u64,
    /// Unix time of the last batch that completed without a destination error.
    pub last_success: Option<u64>,
    /// Batches run since the start.
    pub batches: u64,
    /// Directories waiting to be replicated.
    pub pending_dirs: usize,
    /// The pending directories (escaped; `/` suffix: the whole subtree), saved on exit.
    pub pending: Vec<String>,
    /// Seconds the oldest change not yet replicated has waited.
    pub lag_secs: f64,
    /// The last error and its Unix time.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Remote sessions started (1 unless a connection was lost; 0 for a local DEST).
    pub sessions: u64,
    /// Directories left without an inotify watch (the watch limit); scanned periodically.
    pub unwatched_dirs: usize,
    /// When a clean stop stopped reading events (Unix nanoseconds): a restart resumes
    /// from here (see [`super::resume`]).
    pub stopped_ns: Option<i128>,
    /// Device and inode of the source root and of a local DEST.
    pub src_id: Option<(u64, u64)>,
    pub dest_id: Option<(u64, u64)>,
    /// Key of the options that decide what is replicated.
    pub selection: String,
    /// How this run began: "full push" or "resumed".
    pub start: String,
    /// The change notification interface: "fanotify" or "inotify".
    pub backend: String,
    /// Lag and pending directories per top-level directory of SRC.
    pub homes: Vec<HomeState>,
    /// Entries of SRC at the last full push: what a batch's deletes are weighed against.
    #[serde(default)]
    pub tree_entries: Option<u64>,
}

/// How current one top-level directory of SRC (a home) is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HomeState {
    /// Its name (escaped); "." stands for the entries of SRC's root itself.
    pub name: String,
    /// Seconds its oldest change not yet replicated has waited (0: current).
    pub lag_secs: f64,
    /// Its directories waiting to be replicated.
    pub pending: usize,
}

/// The per-home part of the state: every top-level directory of SRC in `tops`, and
/// any home with pending changes (one that vanished, or SRC's root itself, named
/// "."), by name; lag measured at `now`.
pub fn homes_state(
    tops: &[Vec<u8>],
    pending: &[super::debounce::HomeLag],
    now: std::time::Instant,
) -> Vec<HomeState> {
    let mut by: std::collections::BTreeMap<Vec<u8>, HomeState> = tops
        .iter()
        .map(|t| (t.clone(), HomeState::default()))
        .collect();
    for p in pending {
        let h = by.entry(p.name.clone()).or_default();
        h.lag_secs =
            (now.saturating_duration_since(p.oldest).as_secs_f64() * 1000.0).round() / 1000.0;
        h.pending = p.pending;
    }
    by.into_iter()
        .map(|(name, mut h)| {
            h.name = if name.is_empty() {
                ".".into()
            } else {
                crate::text::escape(&name)
            };
            h
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where default state files live.
pub fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("fsync-repl")
}

/// The default state file of the watch into `dest` (the newest, if several SRCs were
/// watched into it).
pub fn find_by_dest(dest: &std::ffi::OsStr) -> Result<PathBuf, String> {
    let dir = state_dir();
    let wanted = std::fs::canonicalize(dest).ok();
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(st) = State::load(&path) else {
            continue;
        };
        let same = st.dest.as_str() == dest.to_string_lossy()
            || (wanted.is_some() && std::fs::canonicalize(&st.dest).ok() == wanted);
        let modified = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        if same && best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, path));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "no watch state for {} in {}",
            dest.to_string_lossy(),
            dir.display()
        )
    })
}

/// The default state file for a SRC and DEST pair.
pub fn default_path(src: &Path, dest: &std::ffi::OsStr) -> PathBuf {
    let src = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
    let mut h = blake3::Hasher::new();
    h.update(src.as_os_str().as_encoded_bytes());
    h.update(b"\0");
    h.update(dest.as_encoded_bytes());
    let hex = h.finalize().to_hex();
    state_dir().join(format!("watch-{}.json", &hex.as_str()[..16]))
}

impl State {
    /// Writes the state atomically (temporary file, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        drop(f);
        std::fs::rename(&tmp, path)
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<State, String> {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        serde_json::from_slice(&text).map_err(|e| format!("not a watch state file: {e}"))
    }

    /// Marks a state whose writer is gone without stopping cleanly (killed, crashed).
    pub fn writer_gone(&mut self) {
        if self.running {
            self.running = false;
            self.last_error = Some(format!(
                "the watcher (pid {}) ended without saving its state; start it again",
                self.pid
            ));
        }
    }

    /// The human-readable form `status` prints, relative to the Unix time `now`.
    pub fn human(&self, now: u64) -> String {
        let ago = |t: u64| format!("{} s ago", now.saturating_sub(t));
        let mut s = format!(
            "watch {} -> {}\n  state: {}\n  last successful batch: {}\n  batches: {}\n  pending directories: {}\n  lag: {:.1} s\n",
            self.src,
            self.dest,
            if self.running {
                format!("running (pid {})", self.pid)
            } else {
                "stopped".to_string()
            },
            self.last_success.map_or("never".to_string(), ago),
            self.batches,
            self.pending_dirs,
            self.lag_secs,
        );
        if !self.start.is_empty() {
            s.push_str(&format!("  began with: {}\n", self.start));
        }
        if !self.backend.is_empty() {
            s.push_str(&format!("  backend: {}\n", self.backend));
        }
        if !self.homes.is_empty() {
            let mut behind: Vec<&HomeState> = self.homes.iter().filter(|h| h.pending > 0).collect();
            behind.sort_by(|a, b| b.lag_secs.total_cmp(&a.lag_secs));
            s.push_str(&format!(
                "  homes: {} ({} with pending changes)\n",
                self.homes.len(),
                behind.len()
            ));
            const SHOWN: usize = 20;
            for h in behind.iter().take(SHOWN) {
                s.push_str(&format!(
                    "    {}: lag {:.1} s, {} pending directories\n",
                    h.name, h.lag_secs, h.pending
                ));
            }
            if behind.len() > SHOWN {
                s.push_str(&format!(
                    "    ... {} more (status --json lists every home)\n",
                    behind.len() - SHOWN
                ));
            }
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!(
                "  last error ({}): {e}\n",
                self.last_error_at.map_or("?".to_string(), ago)
            ));
        }
        if self.failures > 0 {
            s.push_str(&format!("  failed attempts since: {}\n", self.failures));
        }
        if self.unwatched_dirs > 0 {
            s.push_str(&format!(
                "  directories without a watch (scanned periodically): {}\n",
                self.unwatched_dirs
            ));
        }
        s.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let st = State {
            src: "/home".into(),
            dest: "host:/backup".into(),
            pending_dirs: 2,
            pending: vec!["a".into(), "b/".into()],
            last_error: Some("destination full".into()),
            ..State::default()
        };
        st.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), st);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        assert!(State::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn human_form_names_what_matters() {
        let st = State {
            running: true,
            pid: 42,
            last_success: Some(90),
            last_error: Some("boom".into()),
            last_error_at: Some(95),
            failures: 3,
            ..State::default()
        };
        let h = st.human(100);
        assert!(h.contains("running (pid 42)"), "{h}");
        assert!(h.contains("last successful batch: 10 s ago"), "{h}");
        assert!(h.contains("last error (5 s ago): boom"), "{h}");
        assert!(h.contains("failed attempts since: 3"), "{h}");
    }

    #[test]
    fn homes_are_listed_with_their_lag() {
        use crate::watch::debounce::HomeLag;
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let pending = [
            HomeLag {
                name: b"bob".to_vec(),
                oldest: t0,
                pending: 4,
            },
            HomeLag {
                name: Vec::new(),
                oldest: t0 + Duration::from_secs(1),
                pending: 1,
            },
        ];
        let tops = [b"alice".to_vec(), b"bob".to_vec()];
        let homes = homes_state(&tops, &pending, t0 + Duration::from_millis(2500));
        let got: Vec<(&str, f64, usize)> = homes
            .iter()
            .map(|h| (h.name.as_str(), h.lag_secs, h.pending))
            .collect();
        assert_eq!(got, vec![(".", 1.5, 1), ("alice", 0.0, 0), ("bob", 2.5, 4)]);
        let st = State {
            backend: "fanotify".into(),
            homes,
            ..State::default()
        };
        let h = st.human(0);
        assert!(h.contains("backend: fanotify"), "{h}");
        assert!(h.contains("homes: 3 (2 with pending changes)"), "{h}");
        assert!(h.contains("bob: lag 2.5 s, 4 pending directories"), "{h}");
        assert!(!h.contains("alice:"), "{h}");
    }

    #[test]
    fn default_paths_differ_per_pair() {
        let a = default_path(Path::new("/a"), "x".as_ref());
        let b = default_path(Path::new("/a"), "y".as_ref());
        assert_ne!(a, b);
        assert!(a.to_string_lossy().contains("fsync-repl"));
    }
}

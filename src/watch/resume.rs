//! Resuming after a clean stop: the saved dirty set plus what changed while stopped.
//!
//! A watch that stopped cleanly (SIGTERM, SIGINT) saved its dirty directories and the
//! time it stopped reading events. The next start trusts DEST as that watch left it and
//! replicates only the saved directories plus those that changed meanwhile, found by a
//! walk of SRC alone (metadata only, nothing read from DEST): an entry whose ctime is at
//! or after the stop (less a slack for events still in flight then) changed, and the
//! kernel updates ctime on every write, chmod, chown, link, unlink and rename, for the
//! entry and for the directory whose entries changed. Ctime cannot be set from user
//! space, so a restored mtime (`cp -p`, `tar x`) does not hide a change.
//!
//! Rules, per changed entry: its parent directory is marked shallow (the entry's name
//! and metadata); a changed directory is marked too, shallow, or recursive when its
//! parent also changed — a directory created, copied or moved in changes both, and its
//! contents need not have changed ctimes. Deleted entries show as a changed parent.
//!
//! Anything else starts with the full push, as a first start does: a watch killed
//! without saving (its state still says running), a different SRC, DEST or selection
//! options, a replaced source root or local DEST, no usable state, or `--full-start`.
//! Changes made to DEST behind the watch's back are repaired by the periodic reconcile
//! (`--rescan-interval`), as they are while the watch runs.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::state::State;
use crate::config::Options;
use crate::report::unescape;
use crate::scope::Scope;

/// Nanoseconds before the recorded stop still counted as "changed while stopped":
/// events the kernel had queued but the watcher had not yet read, and the coarse
/// clock ctimes are taken from (a tick behind).
pub const SLACK_NS: i128 = 1_000_000_000;

/// A key of the options that decide what is replicated; a resume needs the same one.
pub fn selection_key(opts: &Options) -> String {
    let sel = format!(
        "{:?}",
        (
            &opts.excludes,
            opts.delete_excluded,
            opts.one_file_system,
            opts.xattrs,
            opts.owners,
            opts.specials,
        )
    );
    blake3::hash(sel.as_bytes()).to_hex()[..16].to_string()
}

/// What the previous watch must have left for this one to resume.
pub struct Expect<'a> {
    pub src: &'a str,
    pub dest: &'a str,
    pub src_id: Option<(u64, u64)>,
    pub dest_id: Option<(u64, u64)>,
    pub selection: &'a str,
}

/// The saved dirty set of `prev`, or why a resume is not possible.
pub fn saved_scope(prev: &State, want: &Expect<'_>) -> Result<Scope, String> {
    if prev.running {
        return Err(format!(
            "the last watch (pid {}) did not stop cleanly",
            prev.pid
        ));
    }
    if prev.stopped_ns.is_none() {
        return Err("the state file records no clean stop".into());
    }
    if prev.src != want.src || prev.dest != want.dest {
        return Err("the state file belongs to another SRC or DEST".into());
    }
    if prev.selection != want.selection {
        return Err("the selection options (excludes, -x, ...) changed".into());
    }
    if prev.src_id.is_none() || prev.src_id != want.src_id {
        return Err("the source root was replaced".into());
    }
    if prev.dest_id != want.dest_id {
        return Err("the destination was replaced".into());
    }
    let mut scope = Scope::new();
    for p in &prev.pending {
        let (name, recursive) = match p.strip_suffix('/') {
            Some(n) => (n, true),
            None => (p.as_str(), false),
        };
        let bytes = unescape(name).ok_or_else(|| format!("bad pending entry {p:?}"))?;
        let one = Scope::from_pairs([(bytes, recursive)]).map_err(|e| e.to_string())?;
        scope.merge(&one);
    }
    Ok(scope)
}

/// Directories of `src` with changes at or after `since_ns` (Unix nanoseconds, ctime).
pub fn changed_since(src: &Path, since_ns: i128, one_file_system: bool) -> std::io::Result<Scope> {
    let mut scope = Scope::new();
    // Changed directories seen so far (their children come after them in the walk).
    let mut changed: HashSet<Vec<u8>> = HashSet::new();
    let walk = walkdir::WalkDir::new(src)
        .follow_links(false)
        .same_file_system(one_file_system)
        .sort_by_file_name();
    let mut it = walk.into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            // A directory that vanished or cannot be read: let the batch see to it.
            Err(e) => {
                if let Some(p) = e.path().and_then(|p| p.strip_prefix(src).ok()) {
                    let rel = p.as_os_str().as_bytes();
                    scope.add(crate::tree::parent(rel), false);
                }
                if e.depth() == 0 {
                    return Err(e.into());
                }
                continue;
            }
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let ctime = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
        if ctime < since_ns {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(src)
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        if entry.depth() == 0 {
            scope.add(b"", false);
            changed.insert(Vec::new());
            continue;
        }
        let parent = crate::tree::parent(&rel).to_vec();
        scope.add(&parent, false);
        if entry.file_type().is_dir() {
            if changed.contains(&parent) {
                // New here (created, copied or moved in): all of it.
                scope.add(&rel, true);
                it.skip_current_dir();
            } else {
                scope.add(&rel, false);
                changed.insert(rel);
            }
        }
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &Scope) -> Vec<(String, bool)> {
        s.pairs()
            .map(|(p, r)| (String::from_utf8_lossy(p).into_owned(), r))
            .collect()
    }

    fn now_ns() -> i128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128
    }

    #[test]
    fn changes_after_the_stop_mark_their_directories() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("old/deep")).unwrap();
        std::fs::create_dir_all(src.join("quiet")).unwrap();
        std::fs::write(src.join("old/deep/f"), b"1").unwrap();
        std::fs::write(src.join("old/g"), b"1").unwrap();
        std::fs::create_dir_all(t.path().join("outside/tree/sub")).unwrap();
        std::fs::write(t.path().join("outside/tree/sub/x"), b"x").unwrap();
        // ctime granularity is a clock tick: leave a clear gap.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stop = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(changed_since(&src, stop, false).unwrap().is_empty());

        std::fs::write(src.join("old/deep/f"), b"2").unwrap();
        std::fs::rename(t.path().join("outside/tree"), src.join("quiet/tree")).unwrap();
        let s = changed_since(&src, stop, false).unwrap();
        assert_eq!(
            pairs(&s),
            vec![
                ("".into(), false),
                ("old/deep".into(), false),
                ("quiet".into(), false),
                ("quiet/tree".into(), true),
            ]
        );
    }

    fn state() -> State {
        State {
            src: "/s".into(),
            dest: "/d".into(),
            stopped_ns: Some(1),
            selection: "k".into(),
            src_id: Some((1, 2)),
            dest_id: Some((3, 4)),
            pending: vec!["a".into(), "b\\x0a/".into()],
            ..State::default()
        }
    }

    fn expect() -> Expect<'static> {
        Expect {
            src: "/s",
            dest: "/d",
            src_id: Some((1, 2)),
            dest_id: Some((3, 4)),
            selection: "k",
        }
    }

    #[test]
    fn a_clean_stop_resumes_its_pending_directories() {
        let s = saved_scope(&state(), &expect()).unwrap();
        assert_eq!(pairs(&s), vec![("a".into(), false), ("b\n".into(), true)]);
    }

    #[test]
    fn anything_else_starts_with_a_full_push() {
        type Change = fn(&mut State);
        let cases: [(&str, Change); 8] = [
            ("did not stop cleanly", |s| s.running = true),
            ("no clean stop", |s| s.stopped_ns = None),
            ("another SRC", |s| s.dest = "/e".into()),
            ("selection", |s| s.selection = "j".into()),
            ("source root", |s| s.src_id = Some((1, 3))),
            ("destination", |s| s.dest_id = None),
            ("bad pending", |s| s.pending = vec!["\\xzz".into()]),
            ("invalid scope", |s| s.pending = vec!["../x".into()]),
        ];
        for (why, change) in cases {
            let mut st = state();
            change(&mut st);
            let e = saved_scope(&st, &expect()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}

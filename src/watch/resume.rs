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

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use super::state::State;
use crate::options::Options;
use crate::scope::Scope;
use crate::text::unescape;

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
    /// The current time (Unix nanoseconds).
    pub now_ns: i128,
    pub src: &'a str,
    pub dest: &'a str,
    pub src_id: Option<(u64, u64)>,
    pub dest_id: Option<(u64, u64)>,
    pub selection: &'a str,
    /// A local DEST that is missing or empty (recreated: its inode number may be reused).
    pub dest_empty: bool,
}

/// The saved dirty set of `prev`, or why a resume is not possible.
pub fn saved_scope(prev: &State, want: &Expect<'_>) -> Result<Scope, String> {
    if prev.running {
        return Err(format!(
            "the last watch (pid {}) did not stop cleanly",
            prev.pid
        ));
    }
    let Some(stopped) = prev.stopped_ns else {
        return Err("the state file records no clean stop".into());
    };
    if stopped > want.now_ns {
        return Err("the clock is behind the recorded stop".into());
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
    if prev.dest_id != want.dest_id || want.dest_empty {
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

/// How the walk of [`changed_since`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    /// Stay on SRC's filesystem (`-x`).
    pub one_file_system: bool,
    /// Worker threads, at the run's CPU and I/O priority.
    pub jobs: usize,
    pub priority: crate::throttle::priority::Priority,
}

struct Ctx {
    /// SRC's root, which every directory is opened beneath (no symlink followed).
    root: crate::source::Source,
    since: i128,
    dev: u64,
    one_file_system: bool,
    out: Mutex<Scope>,
}

fn ctime_ns(st: &rustix::fs::Stat) -> i128 {
    i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec)
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    st.st_mode & 0o170000 == 0o040000
}

/// Directories of `src` with changes at or after `since_ns` (Unix nanoseconds, ctime),
/// walked in parallel (one task per directory), entries stat'ed without following
/// symlinks.
pub fn changed_since(src: &Path, since_ns: i128, walk: Walk) -> std::io::Result<Scope> {
    // SRC itself may be a symlink to the tree (the watch follows it too); nothing
    // beneath it is followed.
    let root = crate::source::Source::open(src)?;
    let st = rustix::fs::fstat(root.root())?;
    let ctx = Ctx {
        root,
        since: since_ns,
        dev: st.st_dev,
        one_file_system: walk.one_file_system,
        out: Mutex::new(Scope::new()),
    };
    let root_changed = ctime_ns(&st) >= since_ns;
    if root_changed {
        ctx.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(b"", false);
    }
    let priority = walk.priority;
    let _ = priority.apply_to_current_thread();
    let pool = priority
        .pool_builder(walk.jobs, "fsync-repl-resume")
        .build()
        .map_err(std::io::Error::other)?;
    let ctx = &ctx;
    pool.install(|| {
        rayon::scope(|s| visit(s, Vec::new(), root_changed, ctx));
    });
    let scope = ctx.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(scope)
}

fn visit<'s>(s: &rayon::Scope<'s>, rel: Vec<u8>, changed: bool, ctx: &'s Ctx) {
    let mut marks: Vec<(Vec<u8>, bool)> = Vec::new();
    let listed = crate::fsutil::open_dir(ctx.root.root(), &rel)
        .and_then(|dir| Ok((crate::fsutil::read_dir_names(dir.as_fd())?, dir)));
    match listed {
        // Unreadable, gone or replaced by a symlink: the batch lists it and reports
        // what it finds.
        Err(_) => marks.push((rel.clone(), false)),
        Ok((names, dir)) => {
            for name in names {
                let Ok(st) = crate::fsutil::stat_at(dir.as_fd(), &name) else {
                    // Vanished since it was listed: its directory changed.
                    marks.push((rel.clone(), false));
                    continue;
                };
                let child = crate::tree::join(&rel, &name);
                let c = ctime_ns(&st) >= ctx.since;
                if c {
                    // A changed ignore file changes what its whole directory holds.
                    let rules = name == crate::scan::IGNORE_FILE && !is_dir(&st);
                    marks.push((rel.clone(), rules));
                }
                if !is_dir(&st) {
                    continue;
                }
                if c && changed {
                    // New here (created, copied or moved in): all of it.
                    marks.push((child, true));
                    continue;
                }
                if c {
                    marks.push((child.clone(), false));
                }
                if ctx.one_file_system && st.st_dev != ctx.dev {
                    continue;
                }
                s.spawn(move |s| visit(s, child, c, ctx));
            }
        }
    }
    if !marks.is_empty() {
        let mut out = ctx.out.lock().unwrap_or_else(|p| p.into_inner());
        for (p, r) in marks {
            out.add(&p, r);
        }
    }
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
        let walk = Walk {
            one_file_system: false,
            jobs: 2,
            priority: Default::default(),
        };
        assert!(changed_since(&src, stop, walk).unwrap().is_empty());

        std::fs::write(src.join("old/deep/f"), b"2").unwrap();
        std::fs::rename(t.path().join("outside/tree"), src.join("quiet/tree")).unwrap();
        let s = changed_since(&src, stop, walk).unwrap();
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

    #[test]
    fn a_symlinked_root_and_a_changed_ignore_file() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("a/b")).unwrap();
        std::fs::write(real.join("top"), b"1").unwrap();
        std::fs::write(real.join("a/.fsyncignore"), b"*.log").unwrap();
        let src = t.path().join("src");
        std::os::unix::fs::symlink(&real, &src).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stop = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::remove_file(real.join("top")).unwrap();
        std::fs::write(real.join("a/.fsyncignore"), b"").unwrap();
        let walk = Walk {
            one_file_system: true,
            jobs: 1,
            priority: Default::default(),
        };
        let s = changed_since(&src, stop, walk).unwrap();
        assert_eq!(pairs(&s), vec![("".into(), false), ("a".into(), true)]);
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
            now_ns: 10,
            src: "/s",
            dest: "/d",
            src_id: Some((1, 2)),
            dest_id: Some((3, 4)),
            selection: "k",
            dest_empty: false,
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
        let cases: [(&str, Change); 9] = [
            ("did not stop cleanly", |s| s.running = true),
            ("no clean stop", |s| s.stopped_ns = None),
            ("clock is behind", |s| s.stopped_ns = Some(11)),
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
        let mut emptied = expect();
        emptied.dest_empty = true;
        let e = saved_scope(&state(), &emptied).unwrap_err();
        assert!(e.contains("replaced"), "{e}");
    }
}

//! Parallel, descriptor-based walk of a tree into a [`Listing`].
//!
//! The walk reads only: every directory is opened beneath the root without following
//! symlinks (see [`crate::fsutil`]), entries are `fstatat`ed with
//! `AT_SYMLINK_NOFOLLOW`, and symlinks are read, never followed (invariant 1). It runs
//! on the current rayon pool, one task per directory. Filters use gitignore syntax:
//! `--exclude` patterns apply from the root, and `.fsyncignore` files apply to their
//! directory and below, deeper files overriding shallower ones. The ignore crate's
//! default filters (hidden files, .gitignore) are deliberately not used: a backup must
//! not skip them. [`scan_pair`] walks a source and a local replica together and lists
//! only what differs.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use rustix::fs::{Mode, OFlags};

use crate::fsutil;
use crate::scope::Scope;
use crate::tree::{self, as_path, Kind, Listing};

mod pair;
mod pieces;
pub use pair::{scan_pair, Paired};
pub use pieces::{Pending, Pieces};

/// Name of the per-directory filter file.
pub const IGNORE_FILE: &[u8] = b".fsyncignore";
/// What to walk and how.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Root-anchored exclude patterns (gitignore syntax).
    pub excludes: Vec<String>,
    /// Read `.fsyncignore` files.
    pub ignore_files: bool,
    /// Stay on the root's filesystem.
    pub one_file_system: bool,
    /// Read extended attributes of files and directories (their digest is listed).
    pub xattrs: bool,
    /// Each directory read counts as one metadata operation here (invariant 6).
    pub throttle: Option<std::sync::Arc<crate::throttle::Throttle>>,
    /// Walk only this part of the tree (watch mode); `None`: all of it.
    pub scope: Option<Arc<Scope>>,
    /// Once set, no further directory is read (a signal): the caller drops the listing.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Leave the source's new subtrees unwalked, as [`Scanned::pending`], to be walked
    /// and copied piece by piece ([`Pieces`]): every subdirectory of the root in a walk
    /// of its own (no destination, or the root's part of a remote comparison), one
    /// found on the source only in a paired walk. A paired walk walks them after all
    /// when the destination side lists a regular file that a new file may be a move or
    /// a copy of (one SRC lacks at its path, or a large one).
    pub defer_new: bool,
    /// A remote destination compared with the source (`Destination::list_with_source`)
    /// is listed a group of top-level directories at a time, of about this many entries
    /// (0: whole, in one request).
    pub group_entries: usize,
}

/// A non-fatal problem met during the walk.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: Vec<u8>,
    pub what: String,
    /// The entry vanished during the walk (exit 24 rather than 23).
    pub vanished: bool,
}

/// The filters in force for a tree: command-line excludes plus `.fsyncignore` rules.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    cli: Option<Arc<Gitignore>>,
    rules: HashMap<Vec<u8>, Arc<Gitignore>>,
    /// Entries the scan could not read (not vanished: unreadable), as a set.
    unread: std::collections::HashSet<Vec<u8>>,
}

impl Filter {
    /// Adds what a walk of another part of the same tree, with the same options, found:
    /// its directories' `.fsyncignore` rules and its unreadable entries.
    pub fn merge(&mut self, other: Filter) {
        self.rules.extend(other.rules);
        self.unread.extend(other.unread);
    }

    /// Builds the command-line part of a filter.
    pub fn from_patterns(patterns: &[String]) -> Result<Filter, String> {
        if patterns.is_empty() {
            return Ok(Filter::default());
        }
        let mut b = GitignoreBuilder::new(".");
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| format!("exclude pattern '{p}': {e}"))?;
        }
        let gi = b.build().map_err(|e| format!("exclude patterns: {e}"))?;
        Ok(Filter {
            cli: Some(Arc::new(gi)),
            ..Filter::default()
        })
    }

    fn decide(&self, chain: Option<&Chain>, path: &[u8], is_dir: bool) -> bool {
        if let Some(cli) = &self.cli {
            match cli.matched(as_path(path), is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        let mut c = chain;
        while let Some(node) = c {
            let rel = if node.dir.is_empty() {
                path
            } else {
                &path[node.dir.len() + 1..]
            };
            match node.gi.matched(as_path(rel), is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
            c = node.parent.as_deref();
        }
        false
    }

    /// True if `path` or one of its ancestors could not be read by the scan (a
    /// directory it could not list, say): what DEST holds there is not known to be gone
    /// from SRC, so it is never deleted, `--delete-excluded` or not.
    pub fn within_unread(&self, path: &[u8]) -> bool {
        tree::within_any(&self.unread, path)
    }

    /// True if `path` or one of its ancestors is excluded. Used for destination-only
    /// entries, which must be kept unless `--delete-excluded`.
    pub fn excluded_or_within_excluded(&self, path: &[u8], is_dir: bool) -> bool {
        let mut prefixes: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .collect();
        prefixes.push(path.len());
        let mut chain: Option<Arc<Chain>> = self.rules.get(&b""[..]).map(|gi| {
            Arc::new(Chain {
                dir: Vec::new(),
                gi: gi.clone(),
                parent: None,
            })
        });
        for (k, &end) in prefixes.iter().enumerate() {
            let p = &path[..end];
            let last = k + 1 == prefixes.len();
            if self.decide(chain.as_deref(), p, !last || is_dir) {
                return true;
            }
            if let Some(gi) = self.rules.get(p) {
                chain = Some(Arc::new(Chain {
                    dir: p.to_vec(),
                    gi: gi.clone(),
                    parent: chain,
                }));
            }
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.cli.is_none() && self.rules.is_empty()
    }
}

#[derive(Debug)]
struct Chain {
    dir: Vec<u8>,
    gi: Arc<Gitignore>,
    parent: Option<Arc<Chain>>,
}

/// Result of a walk.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The root directory's own metadata.
    pub root: Option<tree::Meta>,
    pub listing: Listing,
    pub filter: Filter,
    pub problems: Vec<Problem>,
    /// New subtrees left for [`Pieces`] (see [`ScanOptions::defer_new`]).
    pub pending: Vec<Pending>,
}

/// Each directory's (start, count) range of entries, keyed by the directory's path.
type DirRanges = HashMap<Vec<u8>, (u32, u32)>;

struct Ctx<'a> {
    root: BorrowedFd<'a>,
    root_dev: u64,
    root_meta: Option<tree::Meta>,
    opts: &'a ScanOptions,
    filter: Filter,
    /// All entries, and each directory's range of them keyed by its path.
    out: Mutex<(Listing, DirRanges)>,
    rules: Mutex<HashMap<Vec<u8>, Arc<Gitignore>>>,
    problems: Mutex<Vec<Problem>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Walks the tree under `root` (an open directory) on the current rayon pool.
pub fn scan(root: BorrowedFd<'_>, opts: &ScanOptions) -> Result<Scanned, String> {
    let ctx = Ctx::new(root, opts)?;
    if opts.defer_new {
        // The root only: everything beneath it is new.
        let (_, pending) = read_one(&ctx, Vec::new(), None);
        let mut scanned = ctx.finish();
        scanned.pending = pending;
        return Ok(scanned);
    }
    rayon::scope(|s| walk(&ctx, s, Vec::new(), None));
    Ok(ctx.finish())
}

impl<'a> Ctx<'a> {
    fn new(root: BorrowedFd<'a>, opts: &'a ScanOptions) -> Result<Ctx<'a>, String> {
        let root_st = rustix::fs::fstat(root).map_err(|e| format!("stat of the root: {e}"))?;
        let mut root_meta = tree::Meta::from_stat(&root_st);
        if let (true, Some(m)) = (opts.xattrs, root_meta.as_mut()) {
            let x = fsutil::xattrs_of_fd(root).unwrap_or_default();
            if !x.is_empty() {
                m.extra = Some(tree::Extra::Xattrs(fsutil::xattrs_digest(&x)));
            }
        }
        Ok(Ctx {
            root,
            root_dev: root_st.st_dev,
            root_meta,
            opts,
            filter: Filter::from_patterns(&opts.excludes)?,
            out: Mutex::new((Listing::new(), HashMap::new())),
            rules: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
        })
    }

    /// The walk's result, its listing in path order.
    fn finish(self) -> Scanned {
        let (mut listing, ranges) = self.out.into_inner().unwrap_or_else(|p| p.into_inner());
        listing.order_by_dirs(ranges);
        let mut filter = self.filter;
        filter.rules = self.rules.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut problems = self
            .problems
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        problems.sort_by(|a, b| tree::path_cmp(&a.path, &b.path));
        filter.unread = problems
            .iter()
            .filter(|p| !p.vanished)
            .map(|p| p.path.clone())
            .collect();
        Scanned {
            root: self.root_meta,
            listing,
            filter,
            problems,
            pending: Vec::new(),
        }
    }
}

fn problem(ctx: &Ctx<'_>, path: &[u8], e: &std::io::Error) {
    lock(&ctx.problems).push(Problem {
        path: path.to_vec(),
        what: e.to_string(),
        vanished: fsutil::is_not_found(e),
    });
}

fn walk<'s>(ctx: &'s Ctx<'s>, s: &rayon::Scope<'s>, rel: Vec<u8>, chain: Option<Arc<Chain>>) {
    if ctx.cancelled() {
        return;
    }
    for sub in read_one(ctx, rel, chain).1 {
        s.spawn(move |s| walk(ctx, s, sub.rel, sub.chain));
    }
}

/// Lists one directory's entries; returns how many it listed and the subdirectories
/// to walk next.
fn read_one(ctx: &Ctx<'_>, rel: Vec<u8>, chain: Option<Arc<Chain>>) -> (usize, Vec<Pending>) {
    let Some((dir, names)) = ctx.read_dir(&rel) else {
        return (0, Vec::new());
    };
    let chain = ctx.chain_for(dir.as_fd(), &rel, &names, chain);
    let scope = ctx.opts.scope.as_deref();
    let listed = scope.is_none_or(|s| s.lists(&rel));
    let mut local = Listing::new();
    let mut subs = Vec::new();
    // One buffer for every entry's path; a directory to walk takes its own copy.
    let mut path = rel.clone();
    if !rel.is_empty() {
        path.push(b'/');
    }
    let base = path.len();
    for name in names {
        if rel.is_empty() && name == crate::identity::SIDECAR {
            // The replica's own records, at the root of either side.
            continue;
        }
        path.truncate(base);
        path.extend_from_slice(&name);
        if !listed && !scope.is_some_and(|s| s.leads_to(&path)) {
            continue;
        }
        let Some(meta) = ctx.meta(dir.as_fd(), &name, &path) else {
            continue;
        };
        if ctx.excluded(chain.as_deref(), &path, meta.kind == Kind::Dir) {
            continue;
        }
        let descend = ctx.descends(&path, &meta);
        local.push(&path, meta);
        if descend {
            subs.push(Pending {
                rel: path.clone(),
                chain: chain.clone(),
            });
        }
    }
    let n = local.len();
    ctx.add(rel, &local);
    (n, subs)
}

impl Ctx<'_> {
    /// Opens directory `rel` beneath the root and reads its names, one throttled
    /// operation; `None` when it cannot be read (the problem is recorded).
    fn read_dir(&self, rel: &[u8]) -> Option<(std::os::fd::OwnedFd, Vec<Vec<u8>>)> {
        let read = || {
            let dir = fsutil::open_dir(self.root, rel)?;
            if let Some(t) = &self.opts.throttle {
                t.op();
            }
            let names = fsutil::read_dir_names(dir.as_fd())?;
            Ok((dir, names))
        };
        read()
            .inspect_err(|e: &std::io::Error| problem(self, rel, e))
            .ok()
    }

    /// The filter chain in force beneath `rel`: the parent's, plus the directory's own
    /// `.fsyncignore` if it has one (and the walk reads them).
    fn chain_for(
        &self,
        dir: BorrowedFd<'_>,
        rel: &[u8],
        names: &[Vec<u8>],
        chain: Option<Arc<Chain>>,
    ) -> Option<Arc<Chain>> {
        if !self.opts.ignore_files || !names.iter().any(|n| n == IGNORE_FILE) {
            return chain;
        }
        match read_ignore_file(dir) {
            Ok(Some(gi)) => {
                let gi = Arc::new(gi);
                lock(&self.rules).insert(rel.to_vec(), gi.clone());
                Some(Arc::new(Chain {
                    dir: rel.to_vec(),
                    gi,
                    parent: chain,
                }))
            }
            Ok(None) => chain,
            Err(e) => {
                problem(self, &tree::join(rel, IGNORE_FILE), &e);
                chain
            }
        }
    }

    /// The entry `name` of `dir` (at `path`), with its attribute digest when the walk
    /// reads them; `None` when it cannot be listed (the problem is recorded).
    fn meta(&self, dir: BorrowedFd<'_>, name: &[u8], path: &[u8]) -> Option<tree::Meta> {
        match fsutil::meta_at(dir, name) {
            Ok(Some(mut m)) => {
                if self.opts.xattrs && matches!(m.kind, Kind::File | Kind::Dir) {
                    match fsutil::xattrs_at(dir, name) {
                        Ok(x) if !x.is_empty() => {
                            m.extra = Some(tree::Extra::Xattrs(fsutil::xattrs_digest(&x)))
                        }
                        Ok(_) => {}
                        Err(e) => problem(self, path, &e),
                    }
                }
                Some(m)
            }
            Ok(None) => None,
            Err(e) => {
                problem(self, path, &e);
                None
            }
        }
    }

    /// Whether the filters leave `path` out.
    fn excluded(&self, chain: Option<&Chain>, path: &[u8], is_dir: bool) -> bool {
        (!self.filter.is_empty() || chain.is_some()) && self.filter.decide(chain, path, is_dir)
    }

    /// Whether the walk goes on beneath `path`.
    fn descends(&self, path: &[u8], meta: &tree::Meta) -> bool {
        meta.kind == Kind::Dir
            && !(self.opts.one_file_system && meta.dev != self.root_dev)
            && self.opts.scope.as_deref().is_none_or(|s| s.descends(path))
    }

    /// Adds one directory's entries to the listing.
    fn add(&self, rel: Vec<u8>, local: &Listing) {
        if !local.is_empty() {
            let mut out = lock(&self.out);
            let range = out.0.extend_from(local);
            out.1.insert(rel, range);
        }
    }

    /// Whether a signal asked the walk to stop.
    fn cancelled(&self) -> bool {
        self.opts.cancelled()
    }
}

impl ScanOptions {
    /// Whether a signal asked the walk to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn read_ignore_file(dir: BorrowedFd<'_>) -> std::io::Result<Option<Gitignore>> {
    let fd = fsutil::open_beneath(
        dir,
        IGNORE_FILE,
        OFlags::RDONLY | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    if rustix::fs::fstat(&fd)?.st_mode & 0o170000 != 0o100000 {
        return Ok(None);
    }
    // SAFETY: `fd` is an owned, open descriptor whose ownership moves into the File.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd.into_raw_fd()) };
    let mut text = Vec::new();
    f.by_ref().take(1 << 20).read_to_end(&mut text)?;
    let mut b = GitignoreBuilder::new(".");
    for line in String::from_utf8_lossy(&text).lines() {
        // A bad line is skipped rather than failing the whole backup.
        let _ = b.add_line(None, line);
    }
    Ok(b.build().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scoped_walk_lists_the_scope_and_the_way_to_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/b/c", "a/z", "x/y", "r/s/t"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "top", "a/f", "a/b/f", "a/b/c/f", "a/z/f", "x/y/f", "r/f", "r/s/t/f",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let scope = Scope::from_pairs([(&b"a/b"[..], false), (&b"r"[..], true)]).unwrap();
        let fd = std::fs::File::open(root).unwrap();
        let opts = ScanOptions {
            scope: Some(Arc::new(scope.clone())),
            ..ScanOptions::default()
        };
        let got = scan(fd.as_fd(), &opts).unwrap();
        let paths: Vec<String> = (0..got.listing.len())
            .map(|i| String::from_utf8_lossy(got.listing.path(i)).into_owned())
            .collect();
        let want = [
            "a", "a/b", "a/b/c", "a/b/f", "r", "r/f", "r/s", "r/s/t", "r/s/t/f",
        ];
        assert_eq!(paths, want);
        for p in &paths {
            assert!(scope.admits(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn cli_patterns_are_gitignore_style() {
        let f = Filter::from_patterns(&["*.o".into(), "/top".into(), "cache/".into()]).unwrap();
        assert!(f.excluded_or_within_excluded(b"a/b.o", false));
        assert!(f.excluded_or_within_excluded(b"top", false));
        assert!(!f.excluded_or_within_excluded(b"a/top", false));
        assert!(f.excluded_or_within_excluded(b"x/cache", true));
        assert!(f.excluded_or_within_excluded(b"x/cache/f", false));
        assert!(!f.excluded_or_within_excluded(b"x/cache", false));
        assert!(!f.excluded_or_within_excluded(b"keep.c", false));
    }
}

//! The walk of a source and a local replica together.
//!
//! Directory by directory, both sides' names are read, sorted and merged. A file or
//! symlink whose compared fields are equal on both sides ([`tree::unchanged`]) is only
//! counted, so a run that changes little holds what differs and the directories, not
//! the tree: memory follows the change. Everything else is listed on each side as that
//! side's own walk ([`super::scan`]) lists it, and a subtree found on one side only is
//! walked by that side's walk. The plan built from the two listings is the plan the two
//! full listings would give, with the equal entries counted as up to date.
//!
//! With [`ScanOptions::defer_new`], a subtree found on the source only is not walked
//! but returned as pending, for the caller to list and copy in pieces — unless the
//! destination side lists a regular file, which a new file could be a move or a copy
//! of: then it is walked after all, and the plan is the full listings' plan again.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{lock, walk, Chain, Ctx, Pending, ScanOptions, Scanned};
use crate::tree::{self, Kind, Listing};

/// Both sides' listings of what differs, and how many entries were equal.
#[derive(Debug, Default)]
pub struct Paired {
    pub src: Scanned,
    pub dst: Scanned,
    /// Files and symlinks equal on both sides, listed on neither.
    pub equal: u64,
}

struct Pair<'a> {
    src: Ctx<'a>,
    dst: Ctx<'a>,
    keep_from: u64,
    equal: AtomicU64,
    /// Source-only subtrees left unwalked (`ScanOptions::defer_new`).
    pending: std::sync::Mutex<Vec<Pending>>,
    /// The destination side lists a file that a new file could be a move or a copy
    /// of: one without a file at its path on the source side (to be deleted or
    /// replaced), or one of `keep_from` bytes or more (a twin to copy from).
    sources: std::sync::atomic::AtomicBool,
}

/// Walks `src_root` and `dst_root` together (see the module's documentation). Files of
/// `keep_from` bytes and more are always listed: they are the candidates for copies
/// inside the destination.
pub fn scan_pair(
    src_root: BorrowedFd<'_>,
    src_opts: &ScanOptions,
    dst_root: BorrowedFd<'_>,
    dst_opts: &ScanOptions,
    keep_from: u64,
) -> Result<Paired, String> {
    let pair = Pair {
        src: Ctx::new(src_root, src_opts)?,
        dst: Ctx::new(dst_root, dst_opts).map_err(|e| format!("destination: {e}"))?,
        keep_from,
        equal: AtomicU64::new(0),
        pending: Default::default(),
        sources: Default::default(),
    };
    rayon::scope(|s| walk_pair(&pair, s, Vec::new(), None));
    let mut pending = std::mem::take(&mut *lock(&pair.pending));
    // A new file may be a move or a copy of a file the destination side lists: the plan
    // must see both, so the new subtrees are walked now after all.
    if pair.sources.load(Ordering::Relaxed) {
        rayon::scope(|s| {
            for p in pending.drain(..) {
                let src = &pair.src;
                s.spawn(move |s| walk(src, s, p.rel, p.chain));
            }
        });
    }
    let mut src = pair.src.finish();
    src.pending = pending;
    Ok(Paired {
        equal: pair.equal.into_inner(),
        src,
        dst: pair.dst.finish(),
    })
}

/// Opens and reads one side's directory, its names sorted.
fn read(ctx: &Ctx<'_>, rel: &[u8]) -> Option<(OwnedFd, Vec<Vec<u8>>)> {
    let (dir, mut names) = ctx.read_dir(rel)?;
    names.sort_unstable();
    Some((dir, names))
}

fn walk_pair<'s>(p: &'s Pair<'s>, s: &rayon::Scope<'s>, rel: Vec<u8>, chain: Option<Arc<Chain>>) {
    if p.src.cancelled() {
        return;
    }
    // A side that cannot be read is listed as its own walk lists it (nothing beneath,
    // a problem recorded), and the other side whole.
    let Some((sdir, snames)) = read(&p.src, &rel) else {
        p.sources.store(true, Ordering::Relaxed);
        return walk(&p.dst, s, rel, None);
    };
    let Some((ddir, dnames)) = read(&p.dst, &rel) else {
        return walk(&p.src, s, rel, chain);
    };
    let chain = p.src.chain_for(sdir.as_fd(), &rel, &snames, chain);
    let scope = p.src.opts.scope.as_deref();
    let listed = scope.is_none_or(|s| s.lists(&rel));
    let wanted = |name: &[u8], path: &[u8]| {
        !(rel.is_empty() && name == crate::identity::SIDECAR)
            && (listed || scope.is_some_and(|s| s.leads_to(path)))
    };
    let (mut sl, mut dl) = (Listing::new(), Listing::new());
    // One buffer for every entry's path: most entries are equal and only counted.
    let mut path = rel.clone();
    if !rel.is_empty() {
        path.push(b'/');
    }
    let base = path.len();
    let mut equal = 0;
    let (mut i, mut j) = (0, 0);
    while i < snames.len() || j < dnames.len() {
        let (ours, theirs) = match (snames.get(i), dnames.get(j)) {
            (Some(a), Some(b)) if a == b => (true, true),
            (Some(a), Some(b)) => (a < b, a > b),
            (a, _) => (a.is_some(), a.is_none()),
        };
        let name = if ours { &snames[i] } else { &dnames[j] };
        i += usize::from(ours);
        j += usize::from(theirs);
        path.truncate(base);
        path.extend_from_slice(name);
        if !wanted(name, &path) {
            continue;
        }
        let sm = ours
            .then(|| p.src.meta(sdir.as_fd(), name, &path))
            .flatten()
            .filter(|m| !p.src.excluded(chain.as_deref(), &path, m.kind == Kind::Dir));
        let dm = theirs
            .then(|| p.dst.meta(ddir.as_fd(), name, &path))
            .flatten();
        if let (Some(a), Some(b)) = (&sm, &dm) {
            if tree::unchanged(a, b, p.keep_from) {
                equal += 1;
                continue;
            }
        }
        if let Some(d) = dm.as_ref().filter(|d| d.kind == Kind::File) {
            if d.size >= p.keep_from || !sm.as_ref().is_some_and(|s| s.kind == Kind::File) {
                p.sources.store(true, Ordering::Relaxed);
            }
        }
        let src_down = sm.as_ref().is_some_and(|m| p.src.descends(&path, m));
        let dst_down = dm.as_ref().is_some_and(|m| p.dst.descends(&path, m));
        if let Some(m) = sm {
            sl.push(&path, m);
        }
        if let Some(m) = dm {
            dl.push(&path, m);
        }
        let sub = || path.clone();
        match (src_down, dst_down) {
            (true, true) => {
                let chain = chain.clone();
                let sub = sub();
                s.spawn(move |s| walk_pair(p, s, sub, chain));
            }
            (true, false) if p.src.opts.defer_new => lock(&p.pending).push(Pending {
                rel: sub(),
                chain: chain.clone(),
            }),
            (true, false) => {
                let chain = chain.clone();
                let sub = sub();
                s.spawn(move |s| walk(&p.src, s, sub, chain));
            }
            (false, true) => {
                // Whatever is beneath is on the destination side only.
                p.sources.store(true, Ordering::Relaxed);
                let sub = sub();
                s.spawn(move |s| walk(&p.dst, s, sub, None))
            }
            (false, false) => {}
        }
    }
    p.equal.fetch_add(equal, Ordering::Relaxed);
    p.src.add(rel.clone(), &sl);
    p.dst.add(rel, &dl);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(l: &Listing) -> Vec<String> {
        (0..l.len())
            .map(|i| String::from_utf8_lossy(l.path(i)).into_owned())
            .collect()
    }

    fn walk_one(root: &std::path::Path) -> Listing {
        let fd = std::fs::File::open(root).unwrap();
        super::super::scan(fd.as_fd(), &ScanOptions::default())
            .unwrap()
            .listing
    }

    #[test]
    fn a_paired_walk_lists_only_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for root in [&a, &b] {
            for d in ["d/e", "x", "gone/deep"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            for f in ["d/same", "d/e/same", "d/mode", "d/size", "x/only-here"] {
                std::fs::write(root.join(f), b"abc").unwrap();
            }
            std::os::unix::fs::symlink("t", root.join("d/link")).unwrap();
        }
        std::fs::remove_file(a.join("x/only-here")).unwrap();
        std::fs::remove_dir_all(a.join("gone")).unwrap();
        std::fs::create_dir_all(a.join("new/sub")).unwrap();
        std::fs::write(a.join("new/sub/f"), b"n").unwrap();
        std::fs::write(b.join("d/size"), b"abcd").unwrap();
        std::fs::write(b.join("d/extra"), b"abc").unwrap();
        std::fs::write(b.join("gone/deep/f"), b"g").unwrap();
        std::fs::set_permissions(b.join("d/mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // Same mtimes on both sides, as a replica has them.
        let t = std::fs::metadata(a.join("d/same"))
            .unwrap()
            .modified()
            .unwrap();
        for root in [&a, &b] {
            for f in ["d/same", "d/e/same", "d/mode", "d/size", "d/extra"] {
                let _ = std::fs::File::options()
                    .write(true)
                    .open(root.join(f))
                    .and_then(|f| f.set_modified(t));
            }
            let at = rustix::fs::Timespec {
                tv_sec: 1_700_000_000,
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: at,
                last_modification: at,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                root.join("d/link"),
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        let (fa, fb) = (
            std::fs::File::open(&a).unwrap(),
            std::fs::File::open(&b).unwrap(),
        );
        let opts = ScanOptions::default();
        let got = scan_pair(fa.as_fd(), &opts, fb.as_fd(), &opts, 1 << 16).unwrap();
        let (src, dst) = (names(&got.src.listing), names(&got.dst.listing));
        // Directories always; the changed, the new and the gone as they are; the equal
        // files and symlink not at all.
        assert_eq!(
            src,
            [
                "d",
                "d/e",
                "d/mode",
                "d/size",
                "new",
                "new/sub",
                "new/sub/f",
                "x"
            ]
        );
        assert_eq!(
            dst,
            [
                "d",
                "d/e",
                "d/extra",
                "d/mode",
                "d/size",
                "gone",
                "gone/deep",
                "gone/deep/f",
                "x",
                "x/only-here"
            ]
        );
        assert_eq!(got.equal, 3, "d/same, d/e/same and d/link");
        // Every entry of either side is listed or counted equal, once.
        assert_eq!(src.len() as u64 + got.equal, walk_one(&a).len() as u64);
        assert_eq!(dst.len() as u64 + got.equal, walk_one(&b).len() as u64);
    }
}

//! A part of a tree: the directories a run looks at, each shallow or recursive.
//!
//! Watch mode replicates what changed by running the ordinary scan → plan → transfer
//! pipeline on a [`Scope`] instead of the whole tree. A shallow directory contributes
//! its own entries (names and metadata of its children, not their contents); a
//! recursive one its whole subtree. Every ancestor directory on the way to a scope
//! directory is listed too (only the entries on the way), so the plan sees a complete
//! path to everything it creates. The source scan and the destination listing use the
//! SAME scope, so whatever the plan deletes lies inside it: a scope can never make a
//! run delete what it did not look at. [`Scope::admits`] is the membership rule both
//! sides obey; the client checks a remote listing against it.

use std::collections::BTreeMap;

use crate::fsutil::valid_rel_path;
use crate::tree::{keys_within, parent, Kind, Listing};

/// Directories (relative paths, `""` for the root) mapped to "recursive?".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    dirs: BTreeMap<Vec<u8>, bool>,
}

/// Why a scope received from a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope directory \"{0}\"")]
pub struct BadScope(pub String);

impl Scope {
    pub fn new() -> Scope {
        Scope::default()
    }

    /// The whole tree (the root, recursive).
    pub fn everything() -> Scope {
        let mut s = Scope::new();
        s.add(b"", true);
        s
    }

    /// Builds a scope from (dir, recursive) pairs, validating every path (the far side
    /// of a session uses this on what arrives from the wire).
    pub fn from_pairs<I, P>(pairs: I) -> Result<Scope, BadScope>
    where
        I: IntoIterator<Item = (P, bool)>,
        P: AsRef<[u8]>,
    {
        let mut s = Scope::new();
        for (p, r) in pairs {
            let p = p.as_ref();
            if !p.is_empty() && !valid_rel_path(p) {
                return Err(BadScope(crate::text::escape(p)));
            }
            s.add(p, r);
        }
        Ok(s)
    }

    /// The (dir, recursive) pairs, in byte order.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], bool)> {
        self.dirs.iter().map(|(k, &v)| (k.as_slice(), v))
    }

    /// Number of directories in the scope.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// True when the scope is the whole tree.
    pub fn is_everything(&self) -> bool {
        self.dirs.get(&b""[..]) == Some(&true)
    }

    /// Adds `dir`; a recursive entry absorbs everything beneath it.
    pub fn add(&mut self, dir: &[u8], recursive: bool) {
        if self.covers_all(dir) {
            return;
        }
        if recursive {
            for k in keys_within(&self.dirs, dir) {
                self.dirs.remove(&k);
            }
        }
        let e = self.dirs.entry(dir.to_vec()).or_insert(false);
        *e |= recursive;
    }

    /// Adds every directory of `other`.
    pub fn merge(&mut self, other: &Scope) {
        for (d, r) in other.pairs() {
            self.add(d, r);
        }
    }

    /// True if `dir` lies in (or is) a recursive scope directory.
    pub fn covers_all(&self, dir: &[u8]) -> bool {
        if self.dirs.get(&b""[..]) == Some(&true) {
            return true;
        }
        let mut end = 0;
        loop {
            let next = dir[end..].iter().position(|&b| b == b'/').map(|i| end + i);
            let prefix = &dir[..next.unwrap_or(dir.len())];
            if !prefix.is_empty() && self.dirs.get(prefix) == Some(&true) {
                return true;
            }
            match next {
                Some(i) => end = i + 1,
                None => return false,
            }
        }
    }

    /// True if `dir`'s own entries belong to the scope.
    pub fn lists(&self, dir: &[u8]) -> bool {
        self.dirs.contains_key(dir) || self.covers_all(dir)
    }

    /// True if `path` is a scope directory or an ancestor of one.
    pub fn leads_to(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return !self.dirs.is_empty();
        }
        if self.dirs.contains_key(path) {
            return true;
        }
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        self.dirs
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Whether an entry at `path` belongs in a listing of this scope.
    pub fn admits(&self, path: &[u8]) -> bool {
        self.lists(parent(path)) || self.leads_to(path)
    }

    /// Whether a walk should descend into the directory `path`.
    pub fn descends(&self, path: &[u8]) -> bool {
        self.covers_all(path) || self.leads_to(path)
    }

    /// Removes and returns up to `n` directories (in byte order).
    pub fn split_off_first(&mut self, n: usize) -> Scope {
        if n >= self.dirs.len() {
            return std::mem::take(self);
        }
        let Some(key) = self.dirs.keys().nth(n).cloned() else {
            return std::mem::take(self);
        };
        let rest = self.dirs.split_off(&key);
        let first = std::mem::replace(&mut self.dirs, rest);
        Scope { dirs: first }
    }
}

/// Files among `touched` (indexes into `sl` that a run changes) whose inode has more
/// names than the listing holds: in a run limited to a scope, the names outside it still
/// show the old content or metadata.
pub fn links_outside(sl: &Listing, touched: impl Iterator<Item = u32>) -> u64 {
    let mut names: std::collections::HashMap<u64, (u32, u16)> = Default::default();
    for (i, e) in sl.entries().iter().enumerate() {
        if e.kind == Kind::File && e.nlink > 1 {
            let n = names.entry(sl.ino(i)).or_insert((0, e.nlink));
            n.0 += 1;
        }
    }
    if names.is_empty() {
        return 0;
    }
    let mut inodes: Vec<u64> = touched
        .map(|i| sl.ino(i as usize))
        .filter(|ino| {
            names
                .get(ino)
                .is_some_and(|&(n, nlink)| n < u32::from(nlink))
        })
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(pairs: &[(&str, bool)]) -> Scope {
        Scope::from_pairs(pairs.iter().map(|(p, r)| (p.as_bytes(), *r))).unwrap()
    }

    #[test]
    fn recursive_entries_absorb_their_subtree() {
        let mut s = scope(&[("a/b", false), ("a/c/d", true), ("ab", false)]);
        s.add(b"a", true);
        let got: Vec<_> = s.pairs().map(|(p, r)| (p.to_vec(), r)).collect();
        assert_eq!(got, vec![(b"a".to_vec(), true), (b"ab".to_vec(), false)]);
        s.add(b"a/x", false);
        assert_eq!(s.len(), 2, "already covered");
        s.add(b"ab", true);
        assert_eq!(s.pairs().nth(1), Some((&b"ab"[..], true)));
    }

    #[test]
    fn membership_table() {
        let s = scope(&[("a/b", false), ("c", true)]);
        // (path, admits, descends)
        let table: &[(&str, bool, bool)] = &[
            ("a", true, true),      // ancestor of a scope dir
            ("x", false, false),    // sibling of an ancestor
            ("a/z", false, false),  // sibling inside an ancestor
            ("a/b", true, true),    // the scope dir itself
            ("a/b/f", true, false), // its entry: listed, not descended
            ("a/b/f/g", false, false),
            ("c/d/e", true, true), // under a recursive dir
            ("c", true, true),
            ("cc", false, false),    // a prefix that is not a parent
            ("a/b-x", false, false), // sorts between a/b and a/b/
        ];
        for &(p, admits, descends) in table {
            assert_eq!(s.admits(p.as_bytes()), admits, "admits {p}");
            assert_eq!(s.descends(p.as_bytes()), descends, "descends {p}");
        }
    }

    #[test]
    fn a_shallow_root_lists_only_top_level_names() {
        let s = scope(&[("", false)]);
        assert!(s.admits(b"top"));
        assert!(!s.admits(b"top/inner"));
        assert!(!s.descends(b"top"));
        assert!(!s.is_everything());
        assert!(Scope::everything().admits(b"any/thing/deep"));
    }

    #[test]
    fn bad_paths_from_a_peer_are_refused() {
        for bad in ["/abs", "a/../b", "a//b", "a/", ".."] {
            assert!(
                Scope::from_pairs([(bad.as_bytes(), false)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn split_off_first_keeps_the_rest() {
        let mut s = scope(&[("a", false), ("b", false), ("c", true)]);
        let first = s.split_off_first(2);
        assert_eq!(first.len(), 2);
        assert_eq!(s.pairs().collect::<Vec<_>>(), vec![(&b"c"[..], true)]);
        let all = s.split_off_first(5);
        assert_eq!(all.len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn changed_files_with_names_outside_the_listing_are_counted() {
        use crate::plan::{FileOp, FileSource, Plan};
        use crate::tree::Meta;
        let meta = |ino: u64, nlink: u32| Meta {
            kind: Kind::File,
            perm: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            alloc: 0,
            mtime: 0,
            mtime_nsec: 0,
            nlink,
            ino,
            dev: 1,
            extra: None,
        };
        let mut l = Listing::new();
        l.push(b"a/both1", meta(1, 2)); // both names listed
        l.push(b"a/both2", meta(1, 2));
        l.push(b"a/half", meta(2, 2)); // the other name is elsewhere
        l.push(b"a/single", meta(3, 1));
        let op = |i: u32| FileOp {
            src: i,
            from: FileSource::Source { old: None },
        };
        let mut plan = Plan {
            files: vec![op(0), op(3)],
            ..Plan::default()
        };
        assert_eq!(links_outside(&l, plan.touched()), 0);
        plan.meta = vec![(2, 0)];
        assert_eq!(links_outside(&l, plan.touched()), 1);
    }
}

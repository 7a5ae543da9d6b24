//! The entry and listing model shared by the scan, the destination and the plan.
//!
//! A [`Listing`] is a compact, sorted table of a tree: all relative paths live in one
//! byte arena and each [`Entry`] is a fixed-size record (≈ 60 bytes), so a listing of
//! millions of files stays small. Paths are raw bytes relative to the root, without a
//! leading slash; the root itself is not listed. Entries are sorted component-wise
//! (`/` sorts before every other byte), so a directory's subtree is a contiguous run
//! right after it.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Metadata applied to a created or updated entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetMeta {
    pub kind: Kind,
    pub perm: u32,
    /// Owner to set, when owners are replicated.
    pub owner: Option<(u32, u32)>,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    /// The kind encoded in a `st_mode`.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            0o020000 => Kind::CharDev,
            0o060000 => Kind::BlockDev,
            _ => return None,
        })
    }

    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev
        )
    }

    /// One letter used in itemized output.
    pub fn letter(self) -> char {
        match self {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'L',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::CharDev | Kind::BlockDev => 'D',
        }
    }
}

/// Metadata of one entry. Paths are stored in the listing's arena; what few entries
/// have (a symlink target, a device number, an attribute digest, a sparse file's
/// allocation, the inode of a file with more than one link) in side tables keyed by the
/// entry's index, so that the record stays at 48 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    path_off: u64,
    path_len: u32,
    pub kind: Kind,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes (files and symlinks).
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Link count, saturating at `u16::MAX` (only "more than one" matters).
    pub nlink: u16,
}

// Listings of millions of entries depend on the record's size.
const _: () = assert!(std::mem::size_of::<Entry>() <= 48);

/// Rare per-entry data kept out of the fixed-size record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    /// Symlink target, verbatim bytes.
    Target(Vec<u8>),
    /// Device number of a character or block device.
    Rdev(u64),
    /// Digest of a file's or directory's extended attributes (with `-X`).
    Xattrs(u64),
}

/// Everything needed to add an entry to a listing.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub alloc: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    pub ino: u64,
    pub dev: u64,
    pub extra: Option<Extra>,
}

impl Meta {
    /// From a `stat` result.
    pub fn from_stat(st: &rustix::fs::Stat) -> Option<Meta> {
        let mode = st.st_mode;
        Some(Meta {
            kind: Kind::from_mode(mode)?,
            perm: mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            alloc: st.st_blocks as u64 * 512,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec as u32,
            nlink: st.st_nlink as u32,
            ino: st.st_ino,
            dev: st.st_dev,
            extra: None,
        })
    }
}

/// A sorted, compact table of a tree's entries.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// (entry index, side data), sorted by index.
    extras: Vec<(u32, Extra)>,
    /// (entry index, bytes allocated) of files that take less than their size, sorted.
    sparse: Vec<(u32, u64)>,
    /// (entry index, device, inode) of regular files with more than one link, sorted.
    links: Vec<(u32, u64, u64)>,
    sorted: bool,
}

/// Component-wise path order: `/` sorts before any other byte, so a directory's
/// subtree follows it contiguously.
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    for (x, y) in a.iter().zip(b.iter()) {
        if x != y {
            return key(*x).cmp(&key(*y));
        }
    }
    a.len().cmp(&b.len())
}

/// True if `path` is `dir` or lies beneath it.
pub fn is_within(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// The keys of `map` within `dir` ([`is_within`]: `dir` itself and what lies beneath it),
/// in order. Two lookups, not a scan of every key that merely begins with `dir`'s bytes:
/// `dir-old/…` and `dir0` sort between `dir` and `dir/…`, and a scan would walk them all.
pub fn keys_within<V>(map: &std::collections::BTreeMap<Vec<u8>, V>, dir: &[u8]) -> Vec<Vec<u8>> {
    // Everything beneath `dir` lies in [dir + "/", dir + "0"): '0' follows '/'.
    let (mut lo, mut hi) = (dir.to_vec(), dir.to_vec());
    lo.push(b'/');
    hi.push(b'0');
    map.get_key_value(dir)
        .map(|(k, _)| k.clone())
        .into_iter()
        .chain(map.range(lo..hi).map(|(k, _)| k.clone()))
        .collect()
}

/// Whether `path` or one of its ancestors is in `set` (cheap when the set is empty).
pub fn within_any(set: &std::collections::HashSet<Vec<u8>>, path: &[u8]) -> bool {
    if set.is_empty() {
        return false;
    }
    let mut p = path;
    loop {
        if set.contains(p) {
            return true;
        }
        if p.is_empty() {
            return false;
        }
        p = parent(p);
    }
}

/// The parent directory of a relative path (`b""` for top-level names).
pub fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The last component of a relative path.
pub fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a relative directory and a name.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A relative path as a `Path` (for messages and std APIs).
pub fn as_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

impl Listing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry; the listing must be [`sort`](Self::sort)ed before lookups.
    pub fn push(&mut self, path: &[u8], meta: Meta) {
        let idx = self.entries.len() as u32;
        if let Some(x) = meta.extra {
            self.extras.push((idx, x));
        }
        if meta.kind == Kind::File && meta.alloc < meta.size {
            self.sparse.push((idx, meta.alloc));
        }
        if meta.kind == Kind::File && meta.nlink > 1 {
            self.links.push((idx, meta.dev, meta.ino));
        }
        self.entries.push(Entry {
            path_off: self.arena.len() as u64,
            path_len: path.len() as u32,
            kind: meta.kind,
            perm: meta.perm,
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            nlink: meta.nlink.min(u32::from(u16::MAX)) as u16,
        });
        self.arena.extend_from_slice(path);
        self.sorted = false;
    }

    /// Appends a directory's entries (a small listing) and returns their range
    /// (start, count) for [`order_by_dirs`](Self::order_by_dirs).
    pub fn extend_from(&mut self, part: &Listing) -> (u32, u32) {
        let start = self.entries.len() as u32;
        for i in 0..part.len() {
            self.push_copy(part, i);
        }
        (start, part.len() as u32)
    }

    /// Puts the entries in component-wise order without a global sort and without a
    /// second copy of the table: `ranges` gives each directory's entries (keyed by the
    /// directory's path, `""` for the root). Each range is sorted by name — siblings
    /// sort by name in [`path_cmp`] order — and a directory's entries are placed right
    /// after the directory, which is exactly component-wise order. The entries are then
    /// permuted in place; the extra memory is an index per entry.
    pub fn order_by_dirs(&mut self, mut ranges: std::collections::HashMap<Vec<u8>, (u32, u32)>) {
        let n = self.entries.len();
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let sorted_range = |l: &Listing, (start, len): (u32, u32)| {
            let mut idx: Vec<u32> = (start..start + len).collect();
            idx.sort_unstable_by(|&a, &b| path_cmp(l.path(a as usize), l.path(b as usize)));
            idx
        };
        // An explicit stack (a directory's sorted entries, next position): trees may be
        // thousands of levels deep.
        let mut stack: Vec<(Vec<u32>, usize)> = Vec::new();
        if let Some(r) = ranges.remove(&b""[..]) {
            stack.push((sorted_range(self, r), 0));
        }
        while let Some((idx, pos)) = stack.last_mut() {
            let Some(&i) = idx.get(*pos) else {
                stack.pop();
                continue;
            };
            *pos += 1;
            order.push(i);
            if self.entries[i as usize].kind == Kind::Dir {
                if let Some(r) = ranges.remove(self.path(i as usize)) {
                    stack.push((sorted_range(self, r), 0));
                }
            }
        }
        if order.len() != n {
            // Entries outside every range: fall back to a full sort.
            self.sort();
            return;
        }
        self.renumber_side(&order);
        // Gather in place, cycle by cycle: position k takes the entry at order[k].
        let mut done = vec![false; n];
        for k in 0..n {
            if done[k] {
                continue;
            }
            let first = self.entries[k];
            let mut cur = k;
            loop {
                done[cur] = true;
                let from = order[cur] as usize;
                if from == k {
                    self.entries[cur] = first;
                    break;
                }
                self.entries[cur] = self.entries[from];
                cur = from;
            }
        }
        self.sorted = true;
    }

    /// After entries move (entry `order[k]` goes to position `k`), the side tables
    /// follow them.
    fn renumber_side(&mut self, order: &[u32]) {
        if self.extras.is_empty() && self.sparse.is_empty() && self.links.is_empty() {
            return;
        }
        let mut new_index = vec![0u32; order.len()];
        for (k, &old) in order.iter().enumerate() {
            new_index[old as usize] = k as u32;
        }
        for x in &mut self.extras {
            x.0 = new_index[x.0 as usize];
        }
        self.extras.sort_by_key(|x| x.0);
        for x in &mut self.sparse {
            x.0 = new_index[x.0 as usize];
        }
        self.sparse.sort_unstable_by_key(|x| x.0);
        for l in &mut self.links {
            l.0 = new_index[l.0 as usize];
        }
        self.links.sort_unstable_by_key(|l| l.0);
    }

    /// Copies entry `i` of `from` (with its path and side data).
    fn push_copy(&mut self, from: &Listing, i: usize) {
        let e = from.entries[i];
        let idx = self.entries.len() as u32;
        let key = i as u32;
        if let Some(x) = from.extra(i) {
            self.extras.push((idx, x.clone()));
        }
        if let Ok(k) = from.sparse.binary_search_by_key(&key, |x| x.0) {
            self.sparse.push((idx, from.sparse[k].1));
        }
        if let Ok(k) = from.links.binary_search_by_key(&key, |l| l.0) {
            let (_, dev, ino) = from.links[k];
            self.links.push((idx, dev, ino));
        }
        self.entries.push(Entry {
            path_off: self.arena.len() as u64,
            ..e
        });
        self.arena.extend_from_slice(from.path(i));
        self.sorted = false;
    }

    /// Sorts entries by [`path_cmp`]. Link records follow their entries.
    pub fn sort(&mut self) {
        let arena = &self.arena;
        let path =
            |e: &Entry| &arena[e.path_off as usize..e.path_off as usize + e.path_len as usize];
        if !(self.extras.is_empty() && self.sparse.is_empty() && self.links.is_empty()) {
            // Side data is keyed by index: re-index it after sorting.
            let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                path_cmp(
                    path(&self.entries[a as usize]),
                    path(&self.entries[b as usize]),
                )
            });
            self.entries = order.iter().map(|&i| self.entries[i as usize]).collect();
            self.renumber_side(&order);
        } else {
            self.entries
                .sort_unstable_by(|a, b| path_cmp(path(a), path(b)));
        }
        self.sorted = true;
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries `keep` accepts, in the same order, with their side data.
    pub fn retain(&self, keep: impl FnMut(usize) -> bool) -> Listing {
        let mut out = Listing::new();
        out.extend_where(self, keep);
        out.sorted = self.sorted;
        out
    }

    /// Appends the entries of `part` that `keep` accepts, with their side data.
    pub fn extend_where(&mut self, part: &Listing, mut keep: impl FnMut(usize) -> bool) {
        for i in (0..part.len()).filter(|&i| keep(i)) {
            self.push_copy(part, i);
        }
    }

    /// Entry `i` as a [`Meta`], as it was pushed (the device of a file with one link
    /// is not kept: 0).
    pub fn meta(&self, i: usize) -> Meta {
        let e = &self.entries[i];
        let (dev, ino) = self.link_key(i).unwrap_or((0, 0));
        Meta {
            kind: e.kind,
            perm: e.perm,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            alloc: self.alloc(i),
            mtime: e.mtime,
            mtime_nsec: e.mtime_nsec,
            nlink: u32::from(e.nlink),
            ino,
            dev,
            extra: self.extra(i).cloned(),
        }
    }

    pub fn get(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    pub fn path(&self, i: usize) -> &[u8] {
        let e = &self.entries[i];
        &self.arena[e.path_off as usize..e.path_off as usize + e.path_len as usize]
    }

    pub fn extra(&self, i: usize) -> Option<&Extra> {
        let k = self
            .extras
            .binary_search_by_key(&(i as u32), |x| x.0)
            .ok()?;
        Some(&self.extras[k].1)
    }

    /// Bytes the entry takes on disk where that is less than its size (a sparse file);
    /// its size otherwise.
    pub fn alloc(&self, i: usize) -> u64 {
        match self.sparse.binary_search_by_key(&(i as u32), |x| x.0) {
            Ok(k) => self.sparse[k].1,
            Err(_) => self.entries[i].size,
        }
    }

    /// The (device, inode) of entry `i` when it is a file with other links.
    pub fn link_key(&self, i: usize) -> Option<(u64, u64)> {
        self.links
            .binary_search_by_key(&(i as u32), |l| l.0)
            .ok()
            .map(|k| (self.links[k].1, self.links[k].2))
    }

    /// The inode of a file with more than one link (0 for every other entry: only
    /// hard-link groups need it).
    pub fn ino(&self, i: usize) -> u64 {
        match self.links.binary_search_by_key(&(i as u32), |l| l.0) {
            Ok(k) => self.links[k].2,
            Err(_) => 0,
        }
    }

    /// The symlink target of entry `i`.
    pub fn target(&self, i: usize) -> &[u8] {
        match self.extra(i) {
            Some(Extra::Target(t)) => t,
            _ => b"",
        }
    }

    /// Digest of the entry's extended attributes (0: none or not read).
    pub fn xattr_digest(&self, i: usize) -> u64 {
        match self.extra(i) {
            Some(Extra::Xattrs(d)) => *d,
            _ => 0,
        }
    }

    pub fn rdev(&self, i: usize) -> u64 {
        match self.extra(i) {
            Some(Extra::Rdev(d)) => *d,
            _ => 0,
        }
    }

    /// Index of the entry at `path` (binary search; the listing must be sorted).
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        debug_assert!(self.sorted || self.entries.is_empty());
        self.entries
            .binary_search_by(|e| {
                path_cmp(
                    &self.arena[e.path_off as usize..e.path_off as usize + e.path_len as usize],
                    path,
                )
            })
            .ok()
    }

    /// Hard-link groups: for every file with more than one link, the index of its group
    /// leader (the first member in path order). Files without links map to themselves.
    pub fn link_leaders(&self) -> Vec<(u32, u32)> {
        let mut recs = self.links.clone();
        recs.sort_unstable_by_key(|&(i, d, n)| (d, n, i));
        let mut out = Vec::new();
        let mut k = 0;
        while k < recs.len() {
            let leader = recs[k].0;
            let key = (recs[k].1, recs[k].2);
            let mut j = k;
            while j < recs.len() && (recs[j].1, recs[j].2) == key {
                out.push((recs[j].0, leader));
                j += 1;
            }
            k = j;
        }
        out.sort_unstable();
        out
    }
}

/// Whether an entry needs no listing because the other side's entry at its path is
/// equal: a file or symlink whose every compared field is the same (kind, size, mtime,
/// mode, owner, one link on both sides, symlink target, extended-attribute digest).
/// Directories and hard-linked files are never left out (their sides are compared by
/// the plan), nor files from `keep_from` bytes up (candidates for copies inside the
/// destination). The plan counts such an entry as up to date, which is what it would
/// decide from both listings.
pub fn unchanged(a: &Meta, b: &Meta, keep_from: u64) -> bool {
    a.kind == b.kind
        && matches!(a.kind, Kind::File | Kind::Symlink)
        && a.nlink == 1
        && b.nlink == 1
        && a.size == b.size
        && (a.kind != Kind::File || a.size < keep_from)
        && a.mtime == b.mtime
        && a.mtime_nsec == b.mtime_nsec
        && a.perm == b.perm
        && a.uid == b.uid
        && a.gid == b.gid
        && a.extra == b.extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        Meta {
            kind,
            perm: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            alloc: 0,
            mtime: 0,
            mtime_nsec: 0,
            nlink: 1,
            ino: 1,
            dev: 1,
            extra: None,
        }
    }

    #[test]
    fn retain_keeps_each_entry_with_its_side_data_and_meta_gives_it_back() {
        let mut l = Listing::new();
        let link = Meta {
            extra: Some(Extra::Target(b"there".to_vec())),
            size: 5,
            alloc: 5,
            ..meta(Kind::Symlink)
        };
        let sparse = Meta {
            size: 1 << 20,
            alloc: 4096,
            ..meta(Kind::File)
        };
        let linked = Meta {
            size: 7,
            alloc: 7,
            nlink: 2,
            ino: 42,
            dev: 9,
            ..meta(Kind::File)
        };
        for (p, m) in [
            (&b"a"[..], &link),
            (b"b", &sparse),
            (b"c", &meta(Kind::Dir)),
            (b"d", &linked),
        ] {
            l.push(p, m.clone());
        }
        l.sort();
        let kept = l.retain(|i| i != 2);
        assert_eq!(kept.len(), 3);
        assert!(kept.find(b"d").is_some(), "a retained listing stays sorted");
        for (p, m) in [(&b"a"[..], &link), (b"b", &sparse), (b"d", &linked)] {
            let i = kept.find(p).unwrap();
            let got = kept.meta(i);
            assert!(unchanged(&got, m, u64::MAX) || m.nlink > 1, "{p:?}");
            assert_eq!(
                (got.extra.as_ref(), got.alloc, got.nlink),
                (m.extra.as_ref(), m.alloc, m.nlink)
            );
        }
        assert_eq!(kept.link_key(kept.find(b"d").unwrap()), Some((9, 42)));
        assert_eq!(kept.target(kept.find(b"a").unwrap()), b"there");
    }

    #[test]
    fn subtree_is_contiguous_after_sort() {
        let mut l = Listing::new();
        for p in ["a-b", "a/y", "a", "a0", "a/x", "a/x/z"] {
            l.push(p.as_bytes(), meta(Kind::Dir));
        }
        l.sort();
        let got: Vec<&[u8]> = (0..l.len()).map(|i| l.path(i)).collect();
        assert_eq!(
            got,
            vec![&b"a"[..], b"a/x", b"a/x/z", b"a/y", b"a-b", b"a0"]
        );
        assert_eq!(l.find(b"a/x/z"), Some(2));
        assert_eq!(l.find(b"a/q"), None);
    }

    #[test]
    fn link_groups_pick_first_path_as_leader() {
        let mut l = Listing::new();
        for (p, ino) in [("z", 7), ("b", 7), ("c", 9), ("a", 7)] {
            let mut m = meta(Kind::File);
            m.nlink = 3;
            m.ino = ino;
            l.push(p.as_bytes(), m);
        }
        l.push(b"c2", {
            let mut m = meta(Kind::File);
            m.nlink = 2;
            m.ino = 9;
            m
        });
        l.sort();
        let leaders = l.link_leaders();
        let a = l.find(b"a").unwrap() as u32;
        let z = l.find(b"z").unwrap() as u32;
        let c2 = l.find(b"c2").unwrap() as u32;
        let c = l.find(b"c").unwrap() as u32;
        assert!(leaders.contains(&(z, a)));
        assert!(leaders.contains(&(a, a)));
        assert!(leaders.contains(&(c2, c)));
    }

    #[test]
    fn only_equal_files_and_symlinks_are_unchanged() {
        let file = meta(Kind::File);
        assert!(unchanged(&file, &meta(Kind::File), 1 << 16));
        let mut later = meta(Kind::File);
        later.mtime = 1;
        assert!(!unchanged(&file, &later, 1 << 16));
        let mut mode = meta(Kind::File);
        mode.perm = 0o600;
        assert!(!unchanged(&file, &mode, 1 << 16));
        let mut linked = meta(Kind::File);
        linked.nlink = 2;
        assert!(!unchanged(&linked, &linked.clone(), 1 << 16));
        assert!(!unchanged(&meta(Kind::Dir), &meta(Kind::Dir), 1 << 16));
        let mut link = meta(Kind::Symlink);
        link.extra = Some(Extra::Target(b"t".to_vec()));
        let mut other = link.clone();
        assert!(unchanged(&link, &other, 1 << 16));
        other.extra = Some(Extra::Target(b"u".to_vec()));
        assert!(!unchanged(&link, &other, 1 << 16));
        // Files big enough to be copied inside DEST stay listed.
        let mut big = meta(Kind::File);
        big.size = 1 << 16;
        assert!(!unchanged(&big, &big.clone(), 1 << 16));
    }

    #[test]
    fn side_data_follows_its_entry_through_both_orderings() {
        // (path, symlink?, sparse allocation, links)
        let rows: [(&str, bool, u64, u32); 5] = [
            ("z", false, 0, 2),
            ("d/l", true, 0, 1),
            ("d", false, 0, 1),
            ("a", false, 4096, 1),
            ("b", false, 8192, 3),
        ];
        let build = |part: &[(&str, bool, u64, u32)]| {
            let mut l = Listing::new();
            for (n, &(p, link, alloc, nlink)) in part.iter().enumerate() {
                let mut m = meta(if p == "d" {
                    Kind::Dir
                } else if link {
                    Kind::Symlink
                } else {
                    Kind::File
                });
                m.size = 10_000;
                m.alloc = if alloc > 0 { alloc } else { 12_288 };
                m.nlink = nlink;
                m.ino = 100 + n as u64;
                if link {
                    m.extra = Some(Extra::Target(p.as_bytes().to_vec()));
                }
                l.push(p.as_bytes(), m);
            }
            l
        };
        let check = |l: &Listing| {
            let at = |p: &str| l.find(p.as_bytes()).unwrap();
            assert_eq!(l.target(at("d/l")), b"d/l");
            assert_eq!(l.extra(at("a")), None);
            assert_eq!(l.alloc(at("a")), 4096);
            assert_eq!(l.alloc(at("b")), 8192);
            assert_eq!(l.alloc(at("z")), 10_000);
            assert!(l.ino(at("z")) != 0 && l.ino(at("b")) != 0);
            assert_ne!(l.ino(at("z")), l.ino(at("b")));
            assert_eq!(l.ino(at("a")), 0);
        };
        let mut sorted = build(&rows);
        sorted.sort();
        check(&sorted);
        // As a walk assembles it: per directory, then ordered by directories.
        let mut walked = Listing::new();
        let mut ranges = std::collections::HashMap::new();
        ranges.insert(b"d".to_vec(), walked.extend_from(&build(&rows[1..2])));
        let top = [rows[0], rows[2], rows[3], rows[4]];
        ranges.insert(Vec::new(), walked.extend_from(&build(&top)));
        walked.order_by_dirs(ranges);
        check(&walked);
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"c"), b"");
        assert_eq!(file_name(b"a/b/c"), b"c");
        assert!(is_within(b"a/b", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"d", b"x"), b"d/x");
    }

    #[test]
    fn keys_within_a_directory_leave_out_siblings_that_share_its_bytes() {
        let names: &[&[u8]] = &[
            b"", b"a", b"a b", b"a-old", b"a-old/x", b"a.b", b"a/", b"a/b", b"a/b/c", b"a0",
            b"a0/x", b"aa", b"b", b"b/a",
        ];
        let map: std::collections::BTreeMap<Vec<u8>, ()> =
            names.iter().map(|n| (n.to_vec(), ())).collect();
        for dir in names {
            let naive: Vec<Vec<u8>> = map.keys().filter(|k| is_within(k, dir)).cloned().collect();
            assert_eq!(
                keys_within(&map, dir),
                naive,
                "{:?}",
                String::from_utf8_lossy(dir)
            );
        }
        assert_eq!(keys_within(&map, b"a").len(), 4, "a, a/, a/b, a/b/c");
        assert!(keys_within(&map, b"zz").is_empty());
    }
}

//! Planning: two listings and the options in, a [`Plan`] value out.
//!
//! Planning is pure apart from content hashes, which it asks of an injected
//! [`ContentHasher`] (real files in the engine, a table in tests). The plan is a list of
//! actions grouped in the order the transfer must run them: clear type conflicts →
//! create directories → moves and copies inside the destination → file data → hard
//! links → symlinks and special files → metadata → deletes → directory metadata
//! (deepest first, after their contents). `--dry-run` and `--itemize` print it.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::scan::Filter;
use crate::tree::{self, Kind, Listing};

mod types;
pub use types::*;

fn same_mtime(a: &tree::Entry, b: &tree::Entry) -> bool {
    a.mtime == b.mtime && a.mtime_nsec == b.mtime_nsec
}

fn meta_differs(s: &tree::Entry, d: &tree::Entry, opts: &PlanOptions, times: bool) -> bool {
    (s.kind != Kind::Symlink && s.perm != d.perm)
        || (opts.owners && (s.uid != d.uid || s.gid != d.gid))
        || (times && !same_mtime(s, d))
}

/// Move detection hashes a size class only when its destination candidates are at most
/// this many times its new files.
pub const MOVE_HASH_RATIO: u64 = 4;

/// Files that stay in DEST are hashed as twins of new files only from this size up;
/// below it a copy costs about what the hashing would.
pub const TWIN_MIN_SIZE: u64 = 64 << 10;

/// Builds the plan that turns `dst` into a replica of `src`. The listings may leave
/// out entries equal on both sides (see [`crate::scan::scan_pair`]): the caller counts
/// those as unchanged.
pub fn build(
    src: &Listing,
    dst: &Listing,
    filter: &Filter,
    opts: &PlanOptions,
    hasher: &dyn ContentHasher,
) -> Plan {
    let mut plan = Plan::default();
    // At most every source file is written: reserved once (pages untouched cost
    // nothing), the list of an initial copy of millions never grows by copying.
    let files = src.entries().iter().filter(|e| e.kind == Kind::File);
    plan.files.reserve_exact(files.count());
    let leaders: HashMap<u32, u32> = src
        .link_leaders()
        .into_iter()
        .filter(|(m, l)| m != l)
        .collect();
    let dst_leaders: HashMap<u32, u32> = dst.link_leaders().into_iter().collect();

    // Pairs needing a hash comparison under --checksum: (src, dst).
    let mut checksum_pairs: Vec<(u32, u32)> = Vec::new();
    // Destination files that stay as they are (twins for local copies).
    let mut staying: Vec<u32> = Vec::new();
    // Hard-link members already sharing their leader's inode: (member, leader).
    let mut linked_ok: Vec<(u32, u32)> = Vec::new();
    // Destination-only entries that are candidates for deletion, and kept ones.
    let mut doomed: Vec<u32> = Vec::new();
    let mut kept: Vec<u32> = Vec::new();
    // Directories whose contents change (their mtime must be set again).
    let mut dirty_dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut cleared: Option<Vec<u8>> = None;

    let (mut i, mut j) = (0usize, 0usize);
    while i < src.len() || j < dst.len() {
        let ord = match (i < src.len(), j < dst.len()) {
            (true, true) => tree::path_cmp(src.path(i), dst.path(j)),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                new_entry(src, i as u32, &leaders, opts, &mut plan);
                dirty(&mut dirty_dirs, tree::parent(src.path(i)));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let p = dst.path(j);
                if cleared.as_deref().is_some_and(|c| tree::is_within(p, c)) {
                    j += 1;
                    continue;
                }
                if dst.get(j).kind != Kind::Dir && crate::temp::is_temp_name(tree::file_name(p)) {
                    plan.temps.push(j as u32);
                    j += 1;
                    continue;
                }
                if opts.delete {
                    let d = dst.get(j);
                    if filter.within_unread(p)
                        || !opts.delete_excluded
                            && filter.excluded_or_within_excluded(p, d.kind == Kind::Dir)
                    {
                        kept.push(j as u32);
                    } else {
                        doomed.push(j as u32);
                    }
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (s, d) = (src.get(i), dst.get(j));
                let path = src.path(i);
                if s.kind != d.kind {
                    // Files and symlinks replace any non-directory by rename; everything
                    // else needs the old entry out of the way first.
                    let rename_replaces =
                        matches!(s.kind, Kind::File | Kind::Symlink) && d.kind != Kind::Dir;
                    if !rename_replaces {
                        plan.clear.push(j as u32);
                        if d.kind == Kind::Dir {
                            cleared = Some(path.to_vec());
                        }
                    }
                    new_entry(src, i as u32, &leaders, opts, &mut plan);
                    dirty(&mut dirty_dirs, tree::parent(path));
                } else {
                    let changed = same_kind(
                        src,
                        dst,
                        i,
                        j,
                        s,
                        d,
                        &leaders,
                        &dst_leaders,
                        opts,
                        &mut plan,
                        &mut checksum_pairs,
                        &mut staying,
                        &mut linked_ok,
                    );
                    if changed {
                        dirty(&mut dirty_dirs, tree::parent(path));
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }

    // Content hashes, computed in parallel, each file at most once.
    let mut want: HashSet<(Side, u32)> = HashSet::new();
    for &(s, d) in &checksum_pairs {
        want.insert((Side::Src, s));
        want.insert((Side::Dst, d));
    }
    // Move detection: new files and candidate destination files, grouped by size.
    // Doomed candidates (a rename saves a copy and a delete) are hashed when they are
    // at most `MOVE_HASH_RATIO` times the new files of their size: a renamed folder is
    // 1:1, while hashing many more reads more than the copies it could save. Staying
    // files (twins to copy inside DEST) are hashed only from `TWIN_MIN_SIZE` up, where
    // their bytes, not the opens, dominate. Each file is hashed at most once, and the
    // work is linear in new files plus candidates.
    let mut new_by_size: HashMap<u64, u64> = HashMap::new();
    // New regular files (produced from SRC, nothing replaced yet) may be produced from
    // destination content instead.
    let new_files = || {
        plan.files
            .iter()
            .filter(|op| op.from == FileSource::Source { old: None })
            .map(|op| op.src)
    };
    for i in new_files() {
        let size = src.get(i as usize).size;
        if size >= opts.move_min_size.max(1) {
            *new_by_size.entry(size).or_default() += 1;
        }
    }
    let mut by_size: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut classes = |cands: &[u32], min_size: u64| {
        let mut class: HashMap<u64, Vec<u32>> = HashMap::new();
        for &j in cands {
            let d = dst.get(j as usize);
            if d.kind == Kind::File && d.size >= min_size && new_by_size.contains_key(&d.size) {
                class.entry(d.size).or_default().push(j);
            }
        }
        for (size, js) in class {
            if js.len() as u64 <= MOVE_HASH_RATIO.saturating_mul(new_by_size[&size]) {
                by_size.entry(size).or_default().extend(js);
            }
        }
    };
    classes(&doomed, 0);
    classes(&staying, TWIN_MIN_SIZE);
    let movable: Vec<u32> = new_files()
        .filter(|&i| by_size.contains_key(&src.get(i as usize).size))
        .collect();
    for &i in &movable {
        want.insert((Side::Src, i));
    }
    for cands in by_size.values() {
        for &j in cands {
            want.insert((Side::Dst, j));
        }
    }
    let hashes: HashMap<(Side, u32), Hash> = want
        .into_par_iter()
        .filter_map(|(side, idx)| hasher.hash(side, idx as usize).map(|h| ((side, idx), h)))
        .collect();

    for (s, d) in checksum_pairs {
        let same = matches!(
            (hashes.get(&(Side::Src, s)), hashes.get(&(Side::Dst, d))),
            (Some(a), Some(b)) if a == b
        );
        let (se, de) = (src.get(s as usize), dst.get(d as usize));
        if same {
            if meta_differs(se, de, opts, true) {
                meta_or_rewrite(&mut plan, s, d, de);
            } else {
                plan.unchanged += 1;
            }
        } else {
            plan.files.push(FileOp {
                src: s,
                from: FileSource::Source { old: Some(d) },
            });
            dirty(&mut dirty_dirs, tree::parent(src.path(s as usize)));
        }
    }

    // Resolve new files against destination content. Per content hash: the first
    // candidate (a copy's source), and the renamable ones (doomed, one link), queued in
    // path order per metadata, so each new file takes the next in O(1).
    let doomed_set: HashSet<u32> = doomed.iter().copied().collect();
    let mut first_of: HashMap<Hash, u32> = HashMap::new();
    let mut renamable: HashMap<(Hash, u32, u32, u32), std::collections::VecDeque<u32>> =
        HashMap::new();
    let mut dst_hashed: Vec<(Hash, u32)> = hashes
        .iter()
        .filter(|((side, _), _)| *side == Side::Dst)
        .map(|(&(_, j), h)| (*h, j))
        .collect();
    dst_hashed.sort_unstable_by_key(|&(_, j)| j);
    let meta_key = |e: &tree::Entry| {
        if opts.owners {
            (e.perm, e.uid, e.gid)
        } else {
            (e.perm, 0, 0)
        }
    };
    for &(h, j) in &dst_hashed {
        first_of.entry(h).or_insert(j);
        let d = dst.get(j as usize);
        if doomed_set.contains(&j) && d.nlink == 1 {
            let (perm, uid, gid) = meta_key(d);
            renamable
                .entry((h, perm, uid, gid))
                .or_default()
                .push_back(j);
        }
    }
    let mut consumed: HashMap<u32, u32> = HashMap::new(); // dst idx → src idx it moved to
    let movable_set: HashSet<u32> = movable.iter().copied().collect();
    let content = |op: &FileOp| -> Option<(Hash, u32)> {
        if !movable_set.contains(&op.src) || !matches!(op.from, FileSource::Source { old: None }) {
            return None;
        }
        let h = *hashes.get(&(Side::Src, op.src))?;
        let &first = first_of.get(&h)?;
        (dst.get(first as usize).size == src.get(op.src as usize).size).then_some((h, first))
    };
    // First every rename (a doomed file with one link, whose metadata would not change
    // in place), then the copies: a copy's source must not be one a later rename takes
    // away, so it is named after all renames are known.
    for op in plan.files.iter() {
        let Some((h, _)) = content(op) else { continue };
        let (perm, uid, gid) = meta_key(src.get(op.src as usize));
        if let Some(j) = renamable
            .get_mut(&(h, perm, uid, gid))
            .and_then(|q| q.pop_front())
        {
            consumed.insert(j, op.src);
            plan.moves.push((op.src, j));
        }
    }
    let moved: HashSet<u32> = plan.moves.iter().map(|m| m.0).collect();
    for i in 0..plan.files.len() {
        if moved.contains(&plan.files[i].src) {
            continue;
        }
        let Some((_, first)) = content(&plan.files[i]) else {
            continue;
        };
        let from = match consumed.get(&first) {
            Some(&moved_to) => Origin::Moved(moved_to),
            None => Origin::Dst(first),
        };
        plan.files[i].from = FileSource::Local(from);
    }
    // A moved file gets the source's mtime set in place afterwards (it has no other link).
    plan.files.retain(|op| !moved.contains(&op.src));

    // A leader written anew gets a new inode: its members follow it, so the group stays
    // one group.
    // (A set of the leaders only: the files of an initial copy number millions.)
    let leaders_ok: HashSet<u32> = linked_ok.iter().map(|&(_, l)| l).collect();
    let rewritten: HashSet<u32> = plan
        .files
        .iter()
        .map(|op| op.src)
        .filter(|l| leaders_ok.contains(l))
        .collect();
    for (m, l) in linked_ok {
        if rewritten.contains(&l) {
            plan.unchanged -= 1;
            plan.links.push((m, l));
            dirty(&mut dirty_dirs, tree::parent(src.path(m as usize)));
        }
    }

    // Deletes: children before parents; never a directory that keeps excluded content.
    let mut keep_dirs: HashSet<&[u8]> = HashSet::new();
    for &k in &kept {
        let mut p = dst.path(k as usize);
        while !p.is_empty() {
            p = tree::parent(p);
            // One already there has its ancestors there too.
            if !keep_dirs.insert(p) {
                break;
            }
        }
    }
    doomed.retain(|j| !consumed.contains_key(j) && !keep_dirs.contains(dst.path(*j as usize)));
    for &j in &doomed {
        dirty(&mut dirty_dirs, tree::parent(dst.path(j as usize)));
    }
    doomed.reverse();
    plan.deletes = doomed;

    // Directory metadata: new directories, changed ones, and those whose contents changed.
    for &(s, _) in &plan.moves {
        dirty(&mut dirty_dirs, tree::parent(src.path(s as usize)));
    }
    let mut dirmeta: Vec<u32> = Vec::new();
    for (i, e) in src.entries().iter().enumerate() {
        if e.kind != Kind::Dir {
            continue;
        }
        let p = src.path(i);
        let needs = match dst.find(p) {
            Some(j) => {
                let d = dst.get(j);
                d.kind != Kind::Dir
                    || meta_differs(e, d, opts, true)
                    || dirty_dirs.contains(p)
                    || (opts.xattrs && src.xattr_digest(i) != dst.xattr_digest(j))
            }
            None => true,
        };
        if needs {
            dirmeta.push(i as u32);
        }
    }
    dirmeta.reverse();
    plan.dirmeta = dirmeta;
    plan.root_dirty = dirty_dirs.contains(&b""[..]) || !plan.temps.is_empty();
    plan
}

/// Notes a directory whose contents change; allocates only for a directory not noted yet
/// (an initial copy meets each directory once per entry in it).
fn dirty(dirs: &mut HashSet<Vec<u8>>, dir: &[u8]) {
    if !dirs.contains(dir) {
        dirs.insert(dir.to_vec());
    }
}

fn meta_or_rewrite(plan: &mut Plan, s: u32, d: u32, de: &tree::Entry) {
    // A file with other links (a snapshot, say) must not change in place: rewrite it.
    if de.kind == Kind::File && de.nlink > 1 {
        plan.files.push(FileOp {
            src: s,
            from: FileSource::Source { old: Some(d) },
        });
    } else {
        plan.meta.push((s, d));
    }
}

fn new_entry(
    src: &Listing,
    i: u32,
    leaders: &HashMap<u32, u32>,
    opts: &PlanOptions,
    plan: &mut Plan,
) {
    let e = src.get(i as usize);
    match e.kind {
        Kind::Dir => plan.mkdirs.push(i),
        Kind::File => {
            if let Some(&l) = leaders.get(&i) {
                plan.links.push((i, l));
            } else {
                plan.files.push(FileOp {
                    src: i,
                    from: FileSource::Source { old: None },
                });
            }
        }
        Kind::Symlink => plan.symlinks.push(i),
        _ if opts.specials => plan.specials.push(i),
        _ => plan.skipped.push((i, "special file skipped (needs root)")),
    }
}

#[allow(clippy::too_many_arguments)]
fn same_kind(
    src: &Listing,
    dst: &Listing,
    i: usize,
    j: usize,
    s: &tree::Entry,
    d: &tree::Entry,
    leaders: &HashMap<u32, u32>,
    dst_leaders: &HashMap<u32, u32>,
    opts: &PlanOptions,
    plan: &mut Plan,
    checksum_pairs: &mut Vec<(u32, u32)>,
    staying: &mut Vec<u32>,
    linked_ok: &mut Vec<(u32, u32)>,
) -> bool {
    let (iu, ju) = (i as u32, j as u32);
    match s.kind {
        Kind::Dir => false, // handled with directory metadata
        Kind::File => {
            if let Some(&l) = leaders.get(&iu) {
                // A hard-link member: correct if it shares the inode of the leader's copy.
                let ok = dst
                    .find(src.path(l as usize))
                    .is_some_and(|lj| dst.ino(lj) == dst.ino(j) && dst_leaders.contains_key(&ju));
                let leader_unchanged = dst.find(src.path(l as usize)).is_some_and(|lj| {
                    let (le, ld) = (src.get(l as usize), dst.get(lj));
                    le.size == ld.size && same_mtime(le, ld) && !meta_differs(le, ld, opts, true)
                });
                if ok && leader_unchanged {
                    // Unless the leader's copy is rewritten after all (`--checksum`
                    // finds new content, a rewrite for a snapshot): see `build`.
                    plan.unchanged += 1;
                    linked_ok.push((iu, l));
                    return false;
                }
                plan.links.push((iu, l));
                return true;
            }
            if opts.xattrs && src.xattr_digest(i) != dst.xattr_digest(j) {
                // New attributes reach a new inode: snapshots keep the old ones.
                plan.files.push(FileOp {
                    src: iu,
                    from: FileSource::Source { old: Some(ju) },
                });
                return true;
            }
            if opts.checksum {
                if s.size == d.size {
                    checksum_pairs.push((iu, ju));
                    return false;
                }
            } else if s.size == d.size && same_mtime(s, d) {
                if meta_differs(s, d, opts, false) {
                    meta_or_rewrite(plan, iu, ju, d);
                    return true;
                }
                plan.unchanged += 1;
                staying.push(ju);
                return false;
            }
            plan.files.push(FileOp {
                src: iu,
                from: FileSource::Source { old: Some(ju) },
            });
            true
        }
        Kind::Symlink => {
            if src.target(i) != dst.target(j) {
                plan.symlinks.push(iu);
                true
            } else if meta_differs(s, d, opts, true) {
                plan.meta.push((iu, ju));
                true
            } else {
                plan.unchanged += 1;
                false
            }
        }
        _ => {
            if !opts.specials {
                plan.skipped.push((iu, "special file skipped (needs root)"));
                false
            } else if src.rdev(i) != dst.rdev(j) {
                plan.specials.push(iu);
                true
            } else if meta_differs(s, d, opts, true) {
                plan.meta.push((iu, ju));
                true
            } else {
                plan.unchanged += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Extra, Meta};

    fn meta(kind: Kind, size: u64, mtime: i64, ino: u64) -> Meta {
        Meta {
            kind,
            perm: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 1,
            gid: 1,
            size,
            alloc: size,
            mtime,
            mtime_nsec: 0,
            nlink: 1,
            ino,
            dev: 1,
            extra: None,
        }
    }

    /// A listing from (path, kind, size, mtime) rows; inode = row number + 1.
    fn listing(rows: &[(&str, Kind, u64, i64)]) -> Listing {
        let mut l = Listing::new();
        for (n, &(p, k, size, mtime)) in rows.iter().enumerate() {
            let mut m = meta(k, size, mtime, n as u64 + 1);
            if k == Kind::Symlink {
                m.extra = Some(Extra::Target(b"t".to_vec()));
            }
            l.push(p.as_bytes(), m);
        }
        l.sort();
        l
    }

    /// Hashes by content name: every file's "content" is its size unless listed.
    struct Table(Vec<(Side, &'static str, u8)>, Listing, Listing);

    impl ContentHasher for Table {
        fn hash(&self, side: Side, idx: usize) -> Option<Hash> {
            let l = if side == Side::Src { &self.1 } else { &self.2 };
            let p = l.path(idx);
            let tag = self
                .0
                .iter()
                .find(|(s, n, _)| *s == side && n.as_bytes() == p)
                .map(|t| t.2)
                .unwrap_or(0);
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&l.get(idx).size.to_le_bytes());
            h[8] = tag;
            Some(h)
        }
    }

    fn plan_of(
        src: &Listing,
        dst: &Listing,
        opts: PlanOptions,
        tags: Vec<(Side, &'static str, u8)>,
    ) -> Plan {
        let t = Table(tags, src.clone(), dst.clone());
        build(src, dst, &Filter::default(), &opts, &t)
    }

    fn paths(l: &Listing, idx: impl IntoIterator<Item = u32>) -> Vec<String> {
        idx.into_iter()
            .map(|i| String::from_utf8_lossy(l.path(i as usize)).into_owned())
            .collect()
    }

    const F: Kind = Kind::File;
    const D: Kind = Kind::Dir;

    #[test]
    fn new_changed_unchanged_and_deleted() {
        let src = listing(&[
            ("a", F, 10, 5),
            ("b", F, 20, 5),
            ("d", D, 0, 5),
            ("d/c", F, 3, 5),
        ]);
        let dst = listing(&[("a", F, 10, 5), ("b", F, 20, 6), ("gone", F, 1, 1)]);
        let opts = PlanOptions {
            delete: true,
            ..Default::default()
        };
        let p = plan_of(&src, &dst, opts, vec![]);
        assert_eq!(p.unchanged, 1);
        assert_eq!(paths(&src, p.mkdirs.clone()), vec!["d"]);
        let files: Vec<_> = p
            .files
            .iter()
            .map(|f| (src.path(f.src as usize).to_vec(), f.from.clone()))
            .collect();
        assert_eq!(
            files,
            vec![
                (b"b".to_vec(), FileSource::Source { old: Some(1) }),
                (b"d/c".to_vec(), FileSource::Source { old: None }),
            ]
        );
        assert_eq!(paths(&dst, p.deletes.clone()), vec!["gone"]);
        // Without --delete nothing is deleted.
        let p = plan_of(&src, &dst, PlanOptions::default(), vec![]);
        assert!(p.deletes.is_empty());
    }

    #[test]
    fn second_plan_of_identical_trees_is_empty() {
        let rows = [("d", D, 0, 5), ("d/x", F, 7, 5), ("l", Kind::Symlink, 1, 5)];
        let (src, dst) = (listing(&rows), listing(&rows));
        let p = plan_of(
            &src,
            &dst,
            PlanOptions {
                delete: true,
                ..Default::default()
            },
            vec![],
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn checksum_finds_same_size_same_mtime_changes() {
        let src = listing(&[("a", F, 10, 5), ("b", F, 10, 5)]);
        let dst = listing(&[("a", F, 10, 5), ("b", F, 10, 5)]);
        let tags = vec![(Side::Src, "b", 1)];
        let opts = PlanOptions {
            checksum: true,
            ..Default::default()
        };
        let p = plan_of(&src, &dst, opts, tags.clone());
        assert_eq!(paths(&src, p.files.iter().map(|f| f.src)), vec!["b"]);
        // By size and mtime the change is invisible.
        assert!(plan_of(&src, &dst, PlanOptions::default(), tags)
            .files
            .is_empty());
    }

    #[test]
    fn renamed_file_becomes_a_move_and_a_staying_twin_a_local_copy() {
        // (Twins are looked for among files of at least TWIN_MIN_SIZE.)
        let big = TWIN_MIN_SIZE;
        let src = listing(&[
            ("keep", F, big, 5),
            ("new/moved", F, 40, 5),
            ("twin", F, big, 9),
        ]);
        let dst = listing(&[
            ("keep", F, big, 5),
            ("old", D, 0, 5),
            ("old/moved", F, 40, 5),
        ]);
        let opts = PlanOptions {
            delete: true,
            ..Default::default()
        };
        let p = plan_of(&src, &dst, opts, vec![]);
        assert_eq!(p.moves.len(), 1);
        assert_eq!(paths(&src, [p.moves[0].0]), vec!["new/moved"]);
        assert_eq!(paths(&dst, [p.moves[0].1]), vec!["old/moved"]);
        // The moved file is not also deleted; its old directory is.
        assert_eq!(paths(&dst, p.deletes.clone()), vec!["old"]);
        let twin = p
            .files
            .iter()
            .find(|f| src.path(f.src as usize) == b"twin")
            .unwrap();
        let FileSource::Local(o) = twin.from else {
            panic!("{twin:?}")
        };
        assert_eq!(o.path(&src, &dst), b"keep");
    }

    #[test]
    fn different_content_of_equal_size_is_not_moved() {
        let src = listing(&[("new", F, 40, 5)]);
        let dst = listing(&[("old", F, 40, 5)]);
        let p = plan_of(
            &src,
            &dst,
            PlanOptions {
                delete: true,
                ..Default::default()
            },
            vec![(Side::Src, "new", 3)],
        );
        assert!(p.moves.is_empty());
        assert_eq!(p.files[0].from, FileSource::Source { old: None });
    }

    #[test]
    fn type_conflicts_clear_the_destination_entry() {
        let src = listing(&[("x", D, 0, 5), ("x/f", F, 1, 5), ("y", F, 2, 5)]);
        let dst = listing(&[("x", F, 1, 5), ("y", D, 0, 5), ("y/inner", F, 3, 5)]);
        let p = plan_of(&src, &dst, PlanOptions::default(), vec![]);
        assert_eq!(paths(&dst, p.clear.clone()), vec!["x", "y"]);
        // The cleared directory's children are not planned separately.
        assert!(p.deletes.is_empty());
        assert_eq!(paths(&src, p.mkdirs.clone()), vec!["x"]);
    }

    #[test]
    fn hard_link_members_link_to_the_first_name() {
        let mut src = Listing::new();
        for p in ["b", "a", "c"] {
            let mut m = meta(F, 5, 5, 77);
            m.nlink = 3;
            src.push(p.as_bytes(), m);
        }
        src.sort();
        let p = plan_of(&src, &Listing::new(), PlanOptions::default(), vec![]);
        assert_eq!(paths(&src, p.files.iter().map(|f| f.src)), vec!["a"]);
        let links: Vec<_> = p
            .links
            .iter()
            .map(|&(m, l)| (paths(&src, [m]), paths(&src, [l])))
            .collect();
        assert_eq!(links.len(), 2);
        assert!(links.iter().all(|(_, l)| l == &vec!["a".to_string()]));
    }

    /// Counts hash requests; every file's content is its own name (so none match) unless
    /// `same` says all content is equal.
    struct Counting {
        calls: std::sync::atomic::AtomicU64,
        same: bool,
        src: Listing,
        dst: Listing,
    }

    impl ContentHasher for Counting {
        fn hash(&self, side: Side, idx: usize) -> Option<Hash> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.same {
                return Some([7; 32]);
            }
            let l = if side == Side::Src {
                &self.src
            } else {
                &self.dst
            };
            Some(*blake3::hash(tree::file_name(l.path(idx))).as_bytes())
        }
    }

    fn counted(src: &Listing, dst: &Listing, same: bool) -> (Plan, u64) {
        let h = Counting {
            calls: Default::default(),
            same,
            src: src.clone(),
            dst: dst.clone(),
        };
        let opts = PlanOptions {
            delete: true,
            ..Default::default()
        };
        let p = build(src, dst, &Filter::default(), &opts, &h);
        (p, h.calls.into_inner())
    }

    fn files_named(prefix: &str, n: usize, size: u64) -> Vec<(String, Kind, u64, i64)> {
        (0..n)
            .map(|i| (format!("{prefix}{i:06}"), F, size, 5))
            .collect()
    }

    fn listing_of(rows: &[(String, Kind, u64, i64)]) -> Listing {
        let rows: Vec<(&str, Kind, u64, i64)> = rows
            .iter()
            .map(|(p, k, s, m)| (p.as_str(), *k, *s, *m))
            .collect();
        listing(&rows)
    }

    #[test]
    fn many_same_size_candidates_are_not_hashed_for_a_few_new_files() {
        // 20,000 files of one size stay, 200 new ones of that size arrive: hashing the
        // stayers would read 100 times what the copies cost.
        let mut s = files_named("keep/f", 20_000, 100);
        s.extend(files_named("new/f", 200, 100));
        let d = files_named("keep/f", 20_000, 100);
        let (p, calls) = counted(&listing_of(&s), &listing_of(&d), false);
        assert_eq!(calls, 0);
        assert_eq!(p.files.len(), 200);
        assert!(p.moves.is_empty());
    }

    #[test]
    fn a_renamed_folder_of_equal_content_files_costs_linear_work_and_renames() {
        // 3,000 files, all one size and one content, moved from a/ to b/: each new
        // file is hashed once, each candidate once, and every one is a rename.
        let (s, d) = (files_named("b/f", 3000, 100), files_named("a/f", 3000, 100));
        let (p, calls) = counted(&listing_of(&s), &listing_of(&d), true);
        assert_eq!(calls, 6000);
        assert_eq!(p.moves.len(), 3000);
        assert!(
            p.files.is_empty() && p.deletes.is_empty(),
            "{:?}",
            p.deletes.len()
        );
        // Renamed in path order, pairwise.
        assert!(p.moves.iter().all(|&(i, j)| i == j));
    }

    #[test]
    fn hashing_stays_linear_when_candidates_outnumber_new_files_a_little() {
        // 4 doomed candidates per new file: still worth it, and each file hashed once.
        let s = files_named("new/n", 1000, 100);
        let d = files_named("old/f", 4000, 100);
        let (p, calls) = counted(&listing_of(&s), &listing_of(&d), false);
        assert_eq!(calls, 5000);
        // No content matched (names differ): all copied from SRC.
        assert_eq!(p.files.len(), 1000);
        // 5 per new file: not hashed at all.
        let d = files_named("old/f", 5000, 100);
        let (_, calls) = counted(&listing_of(&s), &listing_of(&d), false);
        assert_eq!(calls, 0);
    }

    #[test]
    fn staying_files_are_twins_only_when_large() {
        // Small stayers of the new files' size are not hashed; large ones are.
        let mut s = files_named("keep/f", 100, 100);
        s.extend(files_named("new/f", 100, 100));
        let d = files_named("keep/f", 100, 100);
        let (_, calls) = counted(&listing_of(&s), &listing_of(&d), true);
        assert_eq!(calls, 0);
        let big = TWIN_MIN_SIZE;
        let mut s = files_named("keep/f", 100, big);
        s.extend(files_named("new/f", 100, big));
        let d = files_named("keep/f", 100, big);
        let (p, calls) = counted(&listing_of(&s), &listing_of(&d), true);
        assert_eq!(calls, 200);
        // Equal content: every new file is copied inside DEST from its twin.
        assert!(p
            .files
            .iter()
            .all(|f| matches!(f.from, FileSource::Local(_))));
    }

    #[test]
    fn a_copy_never_reads_a_file_that_a_later_rename_takes_away() {
        // a (0600) and b (0644) are new with one content; DEST's doomed `old` (0644) has
        // it too. b takes `old` by rename; a must copy from b's new place, not `old`.
        let mut src = Listing::new();
        let mut m = meta(F, 9, 5, 1);
        m.perm = 0o600;
        src.push(b"a", m.clone());
        m.perm = 0o644;
        m.ino = 2;
        src.push(b"b", m);
        src.sort();
        let dst = listing(&[("old", F, 9, 5)]);
        let opts = PlanOptions {
            delete: true,
            ..Default::default()
        };
        let t = Table(vec![], src.clone(), dst.clone());
        let p = build(&src, &dst, &Filter::default(), &opts, &t);
        assert_eq!(p.moves.len(), 1);
        assert_eq!(paths(&src, [p.moves[0].0]), vec!["b"]);
        assert_eq!(p.files.len(), 1);
        let FileSource::Local(o) = p.files[0].from else {
            panic!("{:?}", p.files[0])
        };
        assert_eq!(o.path(&src, &dst), b"b");
    }

    #[test]
    fn a_rewritten_leader_takes_its_members_along() {
        // a and b share an inode on both sides; under --checksum a's content differs at
        // equal size and mtime, so a is rewritten: b must be linked to the new a.
        let group = |ino| {
            let mut l = Listing::new();
            for p in ["a", "b"] {
                let mut m = meta(F, 5, 5, ino);
                m.nlink = 2;
                l.push(p.as_bytes(), m);
            }
            l.sort();
            l
        };
        let (src, dst) = (group(7), group(9));
        let opts = PlanOptions {
            checksum: true,
            ..Default::default()
        };
        let p = plan_of(&src, &dst, opts, vec![(Side::Src, "a", 1)]);
        assert_eq!(paths(&src, p.files.iter().map(|f| f.src)), vec!["a"]);
        let links: Vec<_> = p.links.iter().map(|&(m, _)| m).collect();
        assert_eq!(paths(&src, links), vec!["b"]);
        assert_eq!(p.unchanged, 0);
        // Same content: nothing to do for either name.
        let p = plan_of(&src, &dst, opts, vec![]);
        assert!(p.files.is_empty() && p.links.is_empty(), "{p:?}");
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn mode_only_change_is_in_place_unless_the_file_has_other_links() {
        let mut src = listing(&[("a", F, 10, 5)]);
        let _ = &mut src;
        let mut dst = Listing::new();
        let mut m = meta(F, 10, 5, 1);
        m.perm = 0o600;
        dst.push(b"a", m.clone());
        dst.sort();
        let p = plan_of(&src, &dst, PlanOptions::default(), vec![]);
        assert_eq!(p.meta.len(), 1);
        assert!(p.files.is_empty());
        // Linked into a snapshot: rewrite, never chmod in place.
        let mut dst = Listing::new();
        m.nlink = 2;
        dst.push(b"a", m);
        dst.sort();
        let p = plan_of(&src, &dst, PlanOptions::default(), vec![]);
        assert!(p.meta.is_empty());
        assert_eq!(p.files.len(), 1);
    }

    #[test]
    fn excluded_destination_entries_are_kept_unless_delete_excluded() {
        let src = listing(&[("d", D, 0, 5)]);
        let dst = listing(&[("d", D, 0, 5), ("d/x.o", F, 1, 1), ("d/y", F, 1, 1)]);
        let filter = Filter::from_patterns(&["*.o".to_string()]).unwrap();
        let t = Table(vec![], src.clone(), dst.clone());
        let opts = PlanOptions {
            delete: true,
            ..Default::default()
        };
        let p = build(&src, &dst, &filter, &opts, &t);
        assert_eq!(paths(&dst, p.deletes.clone()), vec!["d/y"]);
        let opts = PlanOptions {
            delete: true,
            delete_excluded: true,
            ..Default::default()
        };
        let p = build(&src, &dst, &filter, &opts, &t);
        assert_eq!(paths(&dst, p.deletes.clone()), vec!["d/y", "d/x.o"]);
    }

    #[test]
    fn deletes_run_children_first_and_dirmeta_deepest_first() {
        let src = listing(&[("a", D, 0, 5), ("a/b", D, 0, 5), ("a/b/f", F, 1, 5)]);
        let dst = listing(&[("z", D, 0, 5), ("z/y", D, 0, 5), ("z/y/f", F, 2, 5)]);
        let p = plan_of(
            &src,
            &dst,
            PlanOptions {
                delete: true,
                ..Default::default()
            },
            vec![],
        );
        assert_eq!(paths(&dst, p.deletes.clone()), vec!["z/y/f", "z/y", "z"]);
        assert_eq!(paths(&src, p.dirmeta.clone()), vec!["a/b", "a"]);
    }
}

//! The tree comparer: every difference between a replica and its source (names, kinds,
//! modes, sizes, contents, symlink targets, file mtimes to the nanosecond, hard-link
//! groups). Used by the tests and, through `examples/corpus.rs compare`, by the
//! benchmark scripts, so a fast but wrong replica fails both.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, PartialEq, Eq, Clone)]
struct Node {
    kind: &'static str,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<[u8; 32]>,
    target: Option<Vec<u8>>,
    rdev: u64,
}

/// Relative path → node, and the hard-link groups (each a sorted list of paths).
type Snapshot = (BTreeMap<Vec<u8>, Node>, Vec<Vec<Vec<u8>>>);

fn snapshot(root: &Path, mtimes: bool) -> Snapshot {
    let mut map = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    // The replica's own records at its root (`.fsync-repl`) are not part of the tree.
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".fsync-repl"));
    for e in walk {
        let e = e.expect("walk");
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = e.path().symlink_metadata().expect("lstat");
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let content = ft.is_file().then(|| {
            let f = fs::File::open(e.path())
                .unwrap_or_else(|err| panic!("open {}: {err}", e.path().display()));
            *blake3::Hasher::new()
                .update_reader(f)
                .unwrap_or_else(|err| panic!("read {}: {err}", e.path().display()))
                .finalize()
                .as_bytes()
        });
        let target = ft.is_symlink().then(|| {
            fs::read_link(e.path())
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        map.insert(
            rel,
            Node {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                size: if ft.is_dir() { 0 } else { m.size() },
                mtime: if mtimes && !ft.is_dir() {
                    (m.mtime(), m.mtime_nsec())
                } else {
                    (0, 0)
                },
                content,
                target,
                rdev: m.rdev(),
            },
        );
    }
    let mut groups: Vec<Vec<Vec<u8>>> = inodes.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort();
    }
    groups.sort();
    (map, groups)
}

/// Differences between two trees (names, kinds, modes, sizes, contents, symlink
/// targets, file mtimes to the nanosecond, hard-link groups), one line each.
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    tree_diff_opts(a, b, true)
}

pub fn tree_diff_opts(a: &Path, b: &Path, mtimes: bool) -> Vec<String> {
    let (ma, ga) = snapshot(a, mtimes);
    let (mb, gb) = snapshot(b, mtimes);
    let mut out = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, na) in &ma {
        match mb.get(p) {
            None => out.push(format!("only in source: {}", show(p))),
            Some(nb) if nb != na => out.push(format!("differs: {}: {:?} vs {:?}", show(p), na, nb)),
            _ => {}
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            out.push(format!("only in destination: {}", show(p)));
        }
    }
    if ga != gb {
        out.push(format!("hard-link groups differ: {ga:?} vs {gb:?}"));
    }
    out
}

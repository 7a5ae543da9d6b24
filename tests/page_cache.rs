//! The users' page cache is left as it was found: what a run reads or writes does not
//! stay cached, and what was cached before stays cached. Checked with `mincore`, as
//! `fincore` does, on the root ext4 (a tmpfs cannot drop its pages).

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use common::*;

const LEN: usize = 4 << 20;

/// Cached pages of `p` and its total pages.
fn cached(p: &Path) -> (usize, usize) {
    let f = File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return (0, 0);
    }
    // SAFETY: a read-only mapping never dereferenced; only its range goes to mincore.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&f).unwrap() };
    let pages = len.div_ceil(4096);
    let mut v = vec![0u8; pages];
    // SAFETY: a live mapping of `len` bytes and one byte per page.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore");
    (v.iter().filter(|b| *b & 1 == 1).count(), pages)
}

/// Writes `p` and drops it from the cache (made durable first: dirty pages stay).
fn cold(p: &Path, byte: u8) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, vec![byte; LEN]).unwrap();
    evict(p);
}

fn evict(p: &Path) {
    let f = File::open(p).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert_eq!(cached(p).0, 0, "{p:?} could not be evicted");
}

/// File pages the kernel has reclaimed since boot (`pgsteal_file` in /proc/vmstat, which
/// counts a memory cgroup's own reclaim too).
fn reclaimed() -> u64 {
    let vmstat = fs::read_to_string("/proc/vmstat").unwrap();
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("pgsteal_file "))
        .expect("pgsteal_file in /proc/vmstat")
        .trim()
        .parse()
        .unwrap()
}

/// Asserts that every page of `p` is still cached, save as many as the kernel itself
/// reclaimed since `since` (a [`reclaimed`] count). Memory pressure may take a user's
/// page at any time; the run then reads it back and drops it again, as it must, since
/// it was not cached when the run looked. Without reclaim the check is exact, and a run
/// that drops the users' pages fails it.
#[track_caller]
fn assert_still_cached(p: &Path, since: u64, what: &str) {
    let (c, n) = cached(p);
    let allowed = reclaimed() - since;
    assert!(
        n - c <= allowed as usize,
        "{what}: {} of {n} pages of {p:?} were dropped, and the kernel reclaimed only {allowed}",
        n - c
    );
}

/// Reads `p` whole, as a user would: it is cached afterwards (read again, a few times
/// at most, should memory pressure take a page at once).
fn warm(p: &Path) {
    let mut seen = (0, 0);
    for _ in 0..5 {
        let mut buf = Vec::new();
        File::open(p).unwrap().read_to_end(&mut buf).unwrap();
        seen = cached(p);
        if seen.0 == seen.1 {
            return;
        }
    }
    panic!("{p:?} did not stay cached: {} of {} pages", seen.0, seen.1);
}

/// Two trees on /var/tmp, which must be a filesystem that can drop cached pages (the
/// root ext4 here; not a tmpfs).
#[track_caller]
fn trees() -> Option<(Tree, Tree)> {
    let base = Path::new("/var/tmp");
    let probe = Tree::new_in(base);
    let p = probe.join("probe");
    fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let f = File::open(&p).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let droppable = cached(&p).0 == 0;
    require(
        droppable,
        "/var/tmp on a filesystem that can drop cached pages",
    )
    .then(|| (Tree::new_in(base), Tree::new_in(base)))
}

#[test]
fn a_copy_drops_what_it_brought_in_and_keeps_what_was_cached() {
    for &t in TRANSPORTS {
        let Some((src, dst)) = trees() else { return };
        cold(&src.join("cold.bin"), 1);
        cold(&src.join("hot.bin"), 2);
        let since = reclaimed();
        warm(&src.join("hot.bin"));
        push_ok(t, src.path(), dst.path(), &[]);
        assert_eq!(
            cached(&src.join("cold.bin")).0,
            0,
            "{t:?}: SRC pages stayed"
        );
        assert_still_cached(
            &src.join("hot.bin"),
            since,
            &format!("{t:?}: the users' cached file was evicted"),
        );
        for f in ["cold.bin", "hot.bin"] {
            assert_eq!(
                cached(&dst.join(f)).0,
                0,
                "{t:?}: written {f} stayed cached"
            );
        }
        // (Comparing reads both trees, so it comes last.)
        assert_same_tree(src.path(), dst.path());
    }
}

#[test]
fn keep_cache_leaves_the_pages_in_place() {
    let Some((src, dst)) = trees() else { return };
    cold(&src.join("cold.bin"), 1);
    let since = reclaimed();
    push_ok(
        Transport::Local,
        src.path(),
        dst.path(),
        &["--keep-cache", "--fsync", "file"],
    );
    assert_still_cached(
        &src.join("cold.bin"),
        since,
        "--keep-cache dropped the pages read",
    );
}

#[test]
fn a_delta_drops_the_basis_and_the_source_pages_it_read() {
    for &t in TRANSPORTS {
        let Some((src, dst)) = trees() else { return };
        cold(&src.join("f.bin"), 1);
        push_ok(t, src.path(), dst.path(), &[]);
        // One changed page: a delta against DEST's copy.
        let mut data = fs::read(src.join("f.bin")).unwrap();
        data[LEN / 2] = 9;
        fs::write(src.join("f.bin"), &data).unwrap();
        evict(&src.join("f.bin"));
        evict(&dst.join("f.bin"));
        let out = push_ok(t, src.path(), dst.path(), &["--delta", "--json"]);
        assert!(
            json(&out)["bytes_matched"].as_u64().unwrap() > 0,
            "{t:?}: no delta"
        );
        assert_eq!(cached(&src.join("f.bin")).0, 0, "{t:?}: SRC pages stayed");
        assert_eq!(cached(&dst.join("f.bin")).0, 0, "{t:?}: DEST pages stayed");
        assert_eq!(fs::read(dst.join("f.bin")).unwrap(), data, "{t:?}");
    }
}

#[test]
fn move_detection_hashes_without_leaving_pages_behind() {
    for &t in TRANSPORTS {
        let Some((src, dst)) = trees() else { return };
        cold(&src.join("a/f.bin"), 3);
        push_ok(t, src.path(), dst.path(), &["--delete"]);
        fs::rename(src.join("a"), src.join("b")).unwrap();
        evict(&src.join("b/f.bin"));
        evict(&dst.join("a/f.bin"));
        let out = push_ok(t, src.path(), dst.path(), &["--delete", "--json"]);
        assert_eq!(json(&out)["moved"], 1, "{t:?}");
        assert_eq!(
            cached(&src.join("b/f.bin")).0,
            0,
            "{t:?}: SRC hash pages stayed"
        );
        assert_eq!(
            cached(&dst.join("b/f.bin")).0,
            0,
            "{t:?}: DEST hash pages stayed"
        );
    }
}

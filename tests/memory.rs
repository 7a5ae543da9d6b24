//! Memory at scale, as the kernel counts it: the peak resident size of a run
//! (`ru_maxrss` of exactly that child, from `wait4`), not the tool's own account.
//!
//! One test per file, so that no other test's children share the process.

mod common;

use common::*;
use std::path::Path;

/// Peak resident size (KiB) of one `push -q --delete SRC DST`, and whether it succeeded.
// The child is reaped by `wait4` below, which also gives its own resource usage.
#[allow(clippy::zombie_processes)]
fn peak_kib(src: &Path, dst: &Path) -> (i64, bool) {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fsync-repl"))
        .env_remove("FSYNC_REPL_CONFIG")
        .args(["push", "-q", "--delete"])
        .arg(src)
        .arg(dst)
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the Child is never waited
    // on: dropping it does not reap); status and usage are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    (
        usage.ru_maxrss,
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    )
}

/// A no-change run over a local replica holds what differs, not the tree: over a tree
/// of 72,000 entries its peak memory is within 2 MiB of the same run over 3,600
/// entries. (Holding the source listing, as it once did, costs about 5 MiB more at
/// this size: 48 bytes an entry plus its path.)
#[test]
fn a_no_change_run_holds_what_differs_not_the_tree() {
    let first_copy = |src: &Path| {
        let dst = Tree::new_in(Path::new("/dev/shm"));
        push_ok(Transport::Local, src, dst.path(), &[]);
        dst
    };
    let no_change = |src: &Path, dst: &Tree| {
        let (kib, ok) = peak_kib(src, dst.path());
        assert!(ok, "no-change push failed");
        assert_same_tree(src, dst.path());
        kib as u64
    };
    let Some([(n_small, small_kib), (n_big, big_kib)]) =
        peaks_on_memory_pair(first_copy, no_change)
    else {
        return;
    };
    assert!(n_big >= 20 * n_small, "{n_small} -> {n_big} entries");
    assert!(
        big_kib - small_kib < 2048,
        "peak RSS grew from {small_kib} KiB ({n_small} entries) to {big_kib} KiB \
         ({n_big} entries): a no-change run holds the tree"
    );
}

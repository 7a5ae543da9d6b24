//! Memory of a no-change run into a remote DEST, as the kernel counts it: the peak
//! resident size of the client and everything it started (`ru_maxrss` from `wait4`
//! covers the far side too, which runs beneath the stand-in remote shell).
//!
//! One test per file, so that no other test's children share the process.

mod common;

use common::*;
use std::path::Path;

/// Peak resident size (KiB) of one remote `push -q --delete SRC host:DST` and of what
/// it started, and whether it succeeded.
// The child is reaped by `wait4` below, which also gives its resource usage.
#[allow(clippy::zombie_processes)]
fn peak_kib(src: &Path, dst: &Path) -> (i64, bool) {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fsync-repl"))
        .env_remove("FSYNC_REPL_CONFIG")
        .args(["push", "-q", "--delete"])
        .args(rsh_args())
        .arg(src)
        .arg(remote(dst))
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

/// A no-change run into a remote DEST holds SRC's listing, and DEST's only packed: from
/// 3,600 to 72,000 entries the peak grows by about 70 bytes an entry (the client's
/// listing of SRC, or the far side's of DEST: each side holds one). Holding both
/// unpacked listings on the client, as it once did, cost 144 bytes an entry.
#[test]
fn a_remote_no_change_run_does_not_hold_both_listings() {
    let first_copy = |src: &Path| {
        let dst = Tree::new_in(Path::new("/dev/shm"));
        push_ok(Transport::Rsh, src, dst.path(), &[]);
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
    let per_entry = (big_kib.saturating_sub(small_kib)) * 1024 / (n_big - n_small);
    assert!(
        per_entry < 100,
        "peak RSS grew from {small_kib} KiB ({n_small} entries) to {big_kib} KiB \
         ({n_big} entries), {per_entry} bytes an entry: the client holds both listings"
    );
}

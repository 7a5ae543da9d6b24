//! Memory of a no-change run into a remote DEST, as the kernel counts it: the peak
//! resident size from `wait4`, which covers what the client started too (the far side
//! runs beneath the stand-in remote shell).
//!
//! One test per file, so that no other test's children share the process.

mod common;

use common::*;
use std::path::Path;

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
        let m = push_measured(Transport::Rsh, src, dst.path(), &["-q", "--delete"]);
        assert_same_tree(src, dst.path());
        m.max_rss
    };
    let Some([(n_small, small_rss), (n_big, big_rss)]) =
        peaks_on_memory_pair(first_copy, no_change)
    else {
        return;
    };
    assert!(n_big >= 20 * n_small, "{n_small} -> {n_big} entries");
    let per_entry = big_rss.saturating_sub(small_rss) / (n_big - n_small);
    assert!(
        per_entry < 100,
        "peak RSS grew from {small_rss} B ({n_small} entries) to {big_rss} B ({n_big} \
         entries), {per_entry} bytes an entry: the client holds both listings"
    );
}

//! Memory of an initial copy, as the kernel counts it (peak resident size from `wait4`
//! of exactly that child): it holds a piece of the tree at a time, not the tree.
//!
//! One test per file, so that no other test's children share the process.

mod common;

use common::*;
use std::path::Path;

/// Over a tree of 72,000 entries an initial copy's peak memory is within 2 MiB of the
/// same copy of 3,600 entries, in pieces of 2,000 entries. (Holding the whole listing
/// and its plan costs about 6 MiB more at this size.)
#[test]
fn an_initial_copy_holds_a_piece_not_the_tree() {
    let initial_copy = |src: &Path, _: &()| {
        let dst = Tree::new_in(Path::new("/dev/shm"));
        let replica = dst.join("replica");
        let args = ["-q", "--piece-entries", "2000"];
        let m = push_measured(Transport::Local, src, &replica, &args);
        assert_eq!(m.code(), Some(0), "{}", m.stderr());
        assert_same_tree(src, &replica);
        m.max_rss
    };
    if let Some(peaks) = peaks_on_memory_pair(|_| (), initial_copy) {
        assert_peak_flat(peaks, "an initial copy holds the tree");
    }
}

//! Memory of a no-change run into a remote DEST, as the kernel counts it: the peak
//! resident size from `wait4`, which covers what the client started too (the far side
//! runs beneath the stand-in remote shell).
//!
//! One test per file, so that no other test's children share the process.

mod common;

use common::*;
use std::path::Path;

/// A no-change run into a remote DEST lists the root's entries, then its directories a
/// group at a time (here of about 2,000 entries: one home of the grid), and holds only
/// what differs: over a tree of 72,000 entries the peak of the client and the far side
/// is within 2 MiB of the same run over 3,600 entries. (Holding SRC's listing on the
/// client and DEST's on the far side costs about 70 bytes an entry, 4.7 MiB more at
/// this size; holding both on the client, 144.) The same holds for a DEST that records
/// no source (another tool made it, or the record was lost): its first run compares it
/// in groups too.
#[test]
fn a_remote_no_change_run_holds_a_group_of_directories_not_the_tree() {
    for adopted in [false, true] {
        let first_copy = |src: &Path| {
            let dst = Tree::new_in(Path::new("/dev/shm"));
            push_ok(Transport::Rsh, src, dst.path(), &[]);
            dst
        };
        let no_change = |src: &Path, dst: &Tree| {
            let record = dst.join(".fsync-repl/source");
            if adopted {
                std::fs::remove_file(&record).unwrap();
            }
            let args = ["-q", "--delete", "--piece-entries", "2000"];
            let m = push_measured(Transport::Rsh, src, dst.path(), &args);
            assert_same_tree(src, dst.path());
            assert!(record.is_file(), "the run recorded its source");
            m.max_rss
        };
        if let Some(peaks) = peaks_on_memory_pair(first_copy, no_change) {
            let holds = match adopted {
                false => "a remote no-change run holds the tree",
                true => "a first run into a DEST with no source record holds the tree",
            };
            assert_peak_flat(peaks, holds);
        }
    }
}

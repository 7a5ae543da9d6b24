//! Large files with bounded memory: a 4 GiB sparse file, and a delta over a 1 GiB file.
//! Peak memory is the kernel's figure (wait4's ru_maxrss), and the `--json` report's
//! own figure must agree with it.

mod common;
use common::*;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

const MIB: u64 = 1 << 20;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn shm() -> &'static Path {
    Path::new("/dev/shm")
}

/// The report's `peak_rss_bytes` is the kernel's figure for the process, within 10%.
#[track_caller]
fn assert_report_matches_kernel(m: &Measured) {
    let j = json(&m.out);
    let own = j["peak_rss_bytes"].as_u64().unwrap_or(0);
    assert!(
        own.abs_diff(m.max_rss) <= m.max_rss / 10,
        "the report says a peak RSS of {own} bytes, the kernel {}",
        m.max_rss
    );
}

#[test]
fn sparse_4gib_file_keeps_holes_with_bounded_memory() {
    for &t in TRANSPORTS {
        let src = Tree::new_in(shm());
        let dst = Tree::new_in(shm());
        let f = File::create(src.join("disk.img")).unwrap();
        f.set_len(4 << 30).unwrap();
        for (i, off) in [0, 2 << 30, (4 << 30) - MIB].into_iter().enumerate() {
            f.write_all_at(&pattern(i as u64, MIB as usize), off)
                .unwrap();
        }
        drop(f);
        let m = push_measured(t, src.path(), &dst.join("r"), &["--json"]);
        // The kernel's peak RSS of the run (for the remote transport the larger of the
        // client and its far side); a run that did not read 3 MiB of data and map its
        // own code could not stay under 2 MiB.
        assert!(
            m.max_rss > 2 * MIB && m.max_rss < 256 * MIB,
            "peak RSS {} bytes",
            m.max_rss
        );
        // What was read from SRC: the three data extents, not the 4 GiB of holes.
        assert!(
            m.io.rchar >= 3 * MIB && m.io.rchar < 64 * MIB,
            "read {} bytes for 3 MiB of data",
            m.io.rchar
        );
        if t == Transport::Local {
            assert_report_matches_kernel(&m);
        }
        let m = std::fs::metadata(dst.join("r/disk.img")).unwrap();
        assert_eq!(m.len(), 4 << 30);
        assert!(
            m.blocks() * 512 < 64 * MIB,
            "holes were filled: {} bytes allocated",
            m.blocks() * 512
        );
        let (a, b) = (
            File::open(src.join("disk.img")).unwrap(),
            File::open(dst.join("r/disk.img")).unwrap(),
        );
        for off in [0, MIB, 2 << 30, (2 << 30) + MIB, (4 << 30) - MIB] {
            let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
            a.read_exact_at(&mut x, off).unwrap();
            b.read_exact_at(&mut y, off).unwrap();
            assert!(x == y, "content differs at offset {off}");
        }
    }
}

#[test]
fn delta_over_1gib_file_has_bounded_memory() {
    // Locally only: the remote transport's windows and parts are covered on a 70 MiB
    // file in tests/remote.rs, and 2 GiB through a debug build would dominate the suite.
    for &t in &[Transport::Local] {
        let src = Tree::new_in(shm());
        let dst = Tree::new_in(shm());
        let f = File::create(src.join("big.bin")).unwrap();
        for i in 0..(1024 / 16) {
            f.write_all_at(&pattern(i, 16 * MIB as usize), i * 16 * MIB)
                .unwrap();
        }
        drop(f);
        push_ok(t, src.path(), &dst.join("r"), &["-q"]);
        // Change 4 KiB in the middle and push with deltas.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("big.bin"))
            .unwrap();
        f.write_all_at(&[0xAB; 4096], 512 * MIB + 12345).unwrap();
        drop(f);
        let m = push_measured(t, src.path(), &dst.join("r"), &["--delta", "--json"]);
        let j = json(&m.out);
        assert!(
            m.max_rss > 2 * MIB && m.max_rss < 256 * MIB,
            "peak RSS {} bytes; {j}",
            m.max_rss
        );
        assert_report_matches_kernel(&m);
        assert!(j["bytes_matched"].as_u64().unwrap() > 1000 * MIB, "{j}");
        assert!(j["bytes_literal"].as_u64().unwrap() < 8 * MIB, "{j}");

        assert_same_tree(src.path(), &dst.join("r"));
    }
}

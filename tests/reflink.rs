//! Whole-file copies within one reflink-capable filesystem are clones (FICLONE): on an
//! XFS image made with `-m reflink=1` and mounted through a loop device, a push reports
//! the bytes as cloned, and the disk agrees: the copies' extents carry the kernel's
//! shared flag (FIEMAP, as `filefrag -v` shows it) and the filesystem's used blocks do
//! not grow by the data's size. Needs root, mkfs.xfs and filefrag; under CI=true their
//! absence fails the tests.

mod common;
use common::*;

use std::fs;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// An XFS filesystem with reflinks (XFS needs at least 300 MB).
fn xfs() -> Option<LoopFs> {
    require(have("filefrag"), "filefrag (e2fsprogs) is not installed");
    if !have("filefrag") {
        return None;
    }
    LoopFs::new(512 * MIB, &["mkfs.xfs", "-q", "-m", "reflink=1"])
}

/// A tree of three 4 MiB files of noise, one empty file and a small one.
fn source(root: &Path) -> u64 {
    let mut rng = corpus::Rng::new(42);
    let mut total = 0;
    for i in 0..3 {
        let data = rng.bytes(4 * MIB as usize);
        total += data.len() as u64;
        corpus::write(
            &root.join(format!("d/big{i}.bin")),
            &data,
            0o644,
            1_700_000_000 + i,
        );
    }
    corpus::write(&root.join("empty"), b"", 0o600, 1_700_000_100);
    corpus::write(&root.join("small.txt"), b"small\n", 0o644, 1_700_000_200);
    total + 6
}

/// Whether every extent of `p` is shared with another file, per `filefrag -v` (the
/// kernel's FIEMAP_EXTENT_SHARED).
fn all_extents_shared(p: &Path) -> bool {
    let out = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(p)
        .output()
        .expect("run filefrag");
    assert!(out.status.success(), "filefrag: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        })
        .collect();
    !extents.is_empty() && extents.iter().all(|l| l.contains("shared"))
}

#[test]
fn a_copy_on_a_reflink_filesystem_is_a_clone() {
    let Some(img) = xfs() else { return };
    let src = img.path().join("src");
    let total = source(&src);
    let used = img.used();
    // --no-adaptive: the run starts at full speed (see the next test for the default).
    let out = push_ok(
        Transport::Local,
        &src,
        &img.path().join("dst"),
        &["--json", "--no-adaptive"],
    );
    let v = json(&out);
    assert_same_tree(&src, &img.path().join("dst"));
    assert_eq!(v["bytes_cloned"].as_u64(), Some(total), "{v}");
    assert_eq!(v["bytes_literal"].as_u64(), Some(0), "{v}");
    // What the disk shows: shared extents, and no 12 MiB more in use.
    for i in 0..3 {
        let p = img.path().join(format!("dst/d/big{i}.bin"));
        assert!(all_extents_shared(&p), "{} is not a clone", p.display());
    }
    let grown = img.used().saturating_sub(used);
    assert!(
        grown < 2 * MIB,
        "{grown} bytes more in use after cloning {total}"
    );
    // Pushed again: nothing to do.
    let v = json(&push_ok(
        Transport::Local,
        &src,
        &img.path().join("dst"),
        &["--json"],
    ));
    assert_eq!(v["unchanged"].as_u64(), Some(5), "{v}");

    // The contrasts that make the checks meaningful: a file written on the same
    // filesystem holds extents of its own, and a DEST on another filesystem gets copies.
    let plain = img.path().join("plain.bin");
    fs::write(&plain, fs::read(src.join("d/big0.bin")).unwrap()).unwrap();
    assert!(
        !all_extents_shared(&plain),
        "filefrag calls a plain copy shared"
    );
    let other = Tree::new_in(Path::new("/dev/shm"));
    let v = json(&push_ok(
        Transport::Local,
        &src,
        &other.join("r"),
        &["--json"],
    ));
    assert_eq!(v["bytes_cloned"].as_u64(), Some(0), "{v}");
}

#[test]
fn a_default_push_on_a_reflink_filesystem_shares_extents() {
    let Some(img) = xfs() else { return };
    let src = img.path().join("src");
    let total = source(&src);
    let used = img.used();
    let out = push_ok(Transport::Local, &src, &img.path().join("dst"), &["--json"]);
    let v = json(&out);
    assert_same_tree(&src, &img.path().join("dst"));
    let (cloned, literal) = (
        v["bytes_cloned"].as_u64().unwrap_or(0),
        v["bytes_literal"].as_u64().unwrap_or(0),
    );
    assert_eq!(cloned + literal, total, "{v}");
    // A clone moves no bytes, so the adaptive back-off's low start does not stop it.
    assert_eq!(cloned, total, "{v}");
    // And the disk shows no second copy of the data.
    for i in 0..3 {
        let p = img.path().join(format!("dst/d/big{i}.bin"));
        assert!(
            all_extents_shared(&p),
            "{} is not a clone; {v}",
            p.display()
        );
    }
    let grown = img.used().saturating_sub(used);
    assert!(
        grown < 2 * MIB,
        "{grown} bytes more in use after copying {total}; {v}"
    );
}

//! An initial copy, and any new subtree of a replica that holds no file it could be a
//! copy of, goes piece by piece: a piece of whole directories is listed, planned,
//! checked for space and copied before the next is listed, so memory follows the piece,
//! not the tree. The hidden `--piece-entries` makes pieces small enough here for
//! ordinary trees to cross many piece boundaries.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const SMALL_PIECES: [&str; 2] = ["--piece-entries", "4"];

/// Every directory beneath `src` has the same mode and mtime in `dst`.
fn assert_same_dirs(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src).min_depth(1) {
        let e = e.unwrap();
        if !e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(src).unwrap();
        let (a, b) = (
            e.metadata().unwrap(),
            dst.join(rel).symlink_metadata().unwrap(),
        );
        assert_eq!(
            (a.mode(), a.mtime(), a.mtime_nsec()),
            (b.mode(), b.mtime(), b.mtime_nsec()),
            "directory {}",
            rel.display()
        );
    }
}

/// A tree of 6 homes whose hard-link groups, modes and directory times span pieces.
fn homes() -> Tree {
    let src = Tree::new();
    for h in 0..6 {
        for d in 0..4 {
            for f in 0..5 {
                src.file(format!("h{h}/d{d}/f{f}"), format!("{h}.{d}.{f}").as_bytes());
            }
        }
    }
    // One group across three homes (so across pieces), one within a directory, one
    // between SRC's root (the run's own listing) and a piece.
    src.hardlink("h3/d1/link", "h0/d0/f0")
        .hardlink("h5/d3/link", "h0/d0/f0")
        .hardlink("h2/d2/twin", "h2/d2/f1")
        .file("top", b"top")
        .hardlink("h4/d0/top-link", "top")
        .symlink("h1/up", "../h0");
    // A read-only directory with files in it, and directories with old times: their
    // metadata is set after everything inside them, whichever piece that was in.
    src.chmod("h4/d2", 0o555)
        .mtime("h2/d1", 1_000_000_000, 5)
        .mtime("h2", 1_100_000_000, 0)
        .mtime("h0/d0", 1_200_000_000, 0);
    src
}

#[test]
fn an_initial_copy_in_pieces_is_the_whole_replica() {
    let src = homes();
    let dst = Tree::new();
    // 6 homes, 24 directories, 121 files, 4 more links and a symlink.
    let entries = 6 + 24 + 121 + 4 + 1;
    // DEST empty (walked with SRC), then DEST missing (SRC's root only, then pieces);
    // a remote DEST's root is compared first, and every home is new.
    let mut dests = Vec::new();
    for (k, t) in TRANSPORTS.iter().enumerate() {
        dests.push((*t, dst.join(format!("{k}/empty"))));
        dests.push((*t, dst.join(format!("{k}/made/here"))));
        std::fs::create_dir_all(&dests[dests.len() - 2].1).unwrap();
    }
    for (t, dest) in dests {
        let (first, pieces) = push_json(t, src.path(), &dest);
        assert!(pieces >= 5, "{pieces} pieces");
        assert_eq!(first["files_scanned"], entries, "{first}");
        assert_eq!(first["linked"], 4, "{first}");
        assert_eq!(first["created"], entries - 4, "{first}");
        assert_same_tree(src.path(), &dest);
        assert_same_dirs(src.path(), &dest);
        let ino = |p: &str| dest.join(p).metadata().unwrap().ino();
        assert!(
            ino("h0/d0/f0") == ino("h3/d1/link") && ino("h0/d0/f0") == ino("h5/d3/link"),
            "the group across pieces is one inode"
        );
        assert_eq!(ino("top"), ino("h4/d0/top-link"));
        assert!(temp_files(&dest).is_empty(), "{:?}", temp_files(&dest));
        // The next run finds nothing to do, and counts every entry.
        let (again, _) = push_json(t, src.path(), &dest);
        assert_eq!(again["created"], 0, "{again}");
        assert_eq!(again["files_scanned"], entries, "{again}");
    }
}

#[test]
fn a_remote_dest_made_by_another_tool_goes_in_no_piece_and_its_files_are_moved() {
    // DEST holds a folder SRC has under another name, and no record of a source: its
    // files are ones new files could be moves of, so the new homes are compared in
    // groups, nothing goes in pieces, and the folder is moved, not sent again.
    let src = homes();
    let dst = Tree::new();
    for f in 0..5 {
        dst.file(format!("old/f{f}"), format!("5.3.{f}").as_bytes());
        let from = src.join(format!("h5/d3/f{f}"));
        let (m, s) = (from.metadata().unwrap(), dst.join(format!("old/f{f}")));
        set_mtime(&s, m.mtime(), m.mtime_nsec() as u32);
    }
    let mut args = SMALL_PIECES.to_vec();
    args.extend(["--json", "-v", "--delete"]);
    let out = push_ok(Transport::Rsh, src.path(), dst.path(), &args);
    assert_eq!(pieces(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let j = json(&out);
    assert_eq!(j["moved"], 5, "{j}");
    assert_same_tree(src.path(), dst.path());
    assert_same_dirs(src.path(), dst.path());
}

/// The JSON summary of a push in small pieces, and how many pieces it says it copied
/// (0: none).
fn push_json(t: Transport, src: &Path, dest: &Path) -> (serde_json::Value, u64) {
    let mut args = SMALL_PIECES.to_vec();
    args.extend(["--json", "-v"]);
    let out = push_ok(t, src, dest, &args);
    (json(&out), pieces(&out))
}

/// The number of pieces a `-v` run says it copied (0 when it copied none).
fn pieces(out: &std::process::Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    err.split("new subtrees copied in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn filters_hold_in_every_piece() {
    let src = homes();
    src.file("h3/.fsyncignore", b"skip-*\n")
        .file("h3/d0/skip-me", b"no")
        .file("h4/d1/keep", b"yes")
        .file("h5/d0/cache.tmp", b"no");
    let dst = Tree::new();
    let mut args = SMALL_PIECES.to_vec();
    args.extend(["--exclude", "*.tmp"]);
    push_ok(Transport::Local, src.path(), dst.path(), &args);
    assert!(!dst.join("h3/d0/skip-me").exists());
    assert!(!dst.join("h5/d0/cache.tmp").exists());
    assert_eq!(dst.read("h4/d1/keep"), b"yes");
    assert_eq!(dst.read("h3/.fsyncignore"), b"skip-*\n");
}

/// [`homes`] and its replica through `t`.
fn a_replica_of_homes(t: Transport) -> (Tree, Tree) {
    let src = homes();
    let dst = Tree::new();
    push_ok(t, src.path(), dst.path(), &SMALL_PIECES);
    (src, dst)
}

/// A new home in an up-to-date replica goes in pieces too.
#[test]
fn a_new_home_in_an_up_to_date_replica_goes_in_pieces() {
    for &t in TRANSPORTS {
        let (src, dst) = a_replica_of_homes(t);
        for d in 0..5 {
            for f in 0..3 {
                src.file(format!("h9/d{d}/f{f}"), b"new");
            }
        }
        let (j, pieces) = push_json(t, src.path(), dst.path());
        assert!(pieces >= 2, "{t:?}: {pieces} pieces: {j}");
        assert_eq!(j["created"], 1 + 5 + 15, "{t:?}: {j}");
        assert_same_tree(src.path(), dst.path());
        assert_same_dirs(src.path(), dst.path());
    }
}

/// A file at DEST's root that a new home's file could be a move of keeps the new homes
/// out of pieces, so the plan sees the move: one SRC moved into a new home, or one
/// where SRC now has a directory (cleared first, so it is copied, not moved).
#[test]
fn a_file_at_the_root_of_dest_keeps_new_homes_whole_for_moves() {
    for &t in TRANSPORTS {
        let (src, dst) = a_replica_of_homes(t);
        let body = vec![7u8; 5000];
        for case in ["moved", "replaced"] {
            let at = match case {
                "moved" => "old-notes",
                _ => "h9",
            };
            dst.file(at, &body);
            src.file(format!("h9/d0/{case}"), &body);
            for f in 0..3 {
                src.file(format!("h9/d1/f{f}"), b"new");
            }
            let m = std::fs::metadata(dst.join(at)).unwrap();
            set_mtime(
                &src.join(format!("h9/d0/{case}")),
                m.mtime(),
                m.mtime_nsec() as u32,
            );
            let mut args = SMALL_PIECES.to_vec();
            args.extend(["--json", "-v", "--delete"]);
            let out = push_ok(t, src.path(), dst.path(), &args);
            assert_eq!(
                pieces(&out),
                0,
                "{t:?} {case}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let moved = u64::from(case == "moved");
            assert_eq!(json(&out)["moved"], moved, "{t:?} {case}: {}", json(&out));
            assert_same_tree(src.path(), dst.path());
            std::fs::remove_dir_all(src.join("h9")).unwrap();
            push_ok(t, src.path(), dst.path(), &["--delete"]);
        }
    }
}

/// What a cut initial copy left to do goes in pieces: DEST holds the first home, as
/// another tool copied it, and no record of a source.
#[test]
fn what_a_cut_initial_copy_left_goes_in_pieces() {
    for &t in TRANSPORTS {
        let src = homes();
        let dst = Tree::new();
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(src.join("h0"))
            .arg(dst.path())
            .status()
            .unwrap();
        assert!(cp.success());
        let (j, pieces) = push_json(t, src.path(), dst.path());
        assert!(pieces >= 4, "{t:?}: {pieces} pieces: {j}");
        assert_eq!(j["moved"], 0, "{t:?}: {j}");
        assert_same_tree(src.path(), dst.path());
        assert_same_dirs(src.path(), dst.path());
    }
}

/// SIGINT while pieces are copied, locally or into a remote DEST: the run ends at once
/// with exit 20, every file in DEST is old or new, no temporary file stays, and no
/// piece starts after it; the next run (DEST records no source yet) completes it.
#[test]
fn a_signal_between_and_within_pieces_stops_the_run() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        for d in 0..40 {
            for f in 0..20 {
                src.file(
                    format!("h{}/d{d}/f{f}", d % 4),
                    format!("{d}.{f}").as_bytes(),
                );
            }
        }
        let dst = Tree::new();
        // 100 operations a second: about 20 s for the whole copy.
        let mut child = push_std(
            t,
            src.path(),
            dst.path(),
            &["--piece-entries", "25", "--iops-limit", "100"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let landed = || {
            walkdir::WalkDir::new(dst.path())
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_type().is_file() && e.file_name().to_string_lossy().starts_with('f')
                })
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while landed() < 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(landed() >= 20, "{t:?}: the copy never began");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::INT,
        )
        .unwrap();
        let stop = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if std::time::Instant::now() > stop {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(20),
            "{t:?}: did not stop within 10 s"
        );
        let copied = landed();
        assert!(copied < 800, "{t:?}: the run went on to the end");
        assert!(
            temp_files(dst.path()).is_empty(),
            "{:?}",
            temp_files(dst.path())
        );
        for e in walkdir::WalkDir::new(dst.path())
            .into_iter()
            .filter_map(|e| e.ok())
        {
            let rel = e.path().strip_prefix(dst.path()).unwrap();
            if e.file_type().is_file() && !rel.starts_with(".fsync-repl") {
                assert_eq!(
                    std::fs::read(e.path()).unwrap(),
                    src.read(rel),
                    "{}",
                    rel.display()
                );
            }
        }
        // The next run completes the replica.
        push_ok(t, src.path(), dst.path(), &[]);
        assert_same_tree(src.path(), dst.path());
        assert_same_dirs(src.path(), dst.path());
    }
}

/// A replica whose listing holds a file a new one may be a move of is not copied in
/// pieces: the renamed folder still costs a rename, not a copy.
#[test]
fn a_renamed_folder_beside_new_subtrees_is_still_a_rename() {
    let src = homes();
    let dst = Tree::new();
    push_ok(Transport::Local, src.path(), dst.path(), &SMALL_PIECES);
    let before = dst.join("h1/d2/f3").metadata().unwrap().ino();
    std::fs::rename(src.join("h1/d2"), src.join("h1/renamed")).unwrap();
    for f in 0..5 {
        src.file(format!("h9/new{f}/f"), b"n");
    }
    let mut args = SMALL_PIECES.to_vec();
    args.extend(["--delete", "--json"]);
    let j = json(&push_ok(Transport::Local, src.path(), dst.path(), &args));
    assert_same_tree(src.path(), dst.path());
    assert_eq!(
        dst.join("h1/renamed/f3").metadata().unwrap().ino(),
        before,
        "moved, not copied: {j}"
    );
}

/// Out of space in the middle of an initial copy: the run stops before the piece that
/// does not fit, keeps the reserve, leaves every file old or new, and says how much is
/// missing for all that is left, not for that piece alone. The next run, with room,
/// goes on from there.
#[test]
fn a_piece_that_does_not_fit_stops_the_run_and_says_what_the_rest_needs() {
    if !require(is_root(), "a small tmpfs needs root") {
        return;
    }
    // Into a remote DEST the far side answers each piece's space check.
    for &t in TRANSPORTS {
        piece_that_does_not_fit(t);
    }
}

fn piece_that_does_not_fit(t: Transport) {
    let (src, mnt) = (Tree::new(), Tree::new());
    let _m = mount_tmpfs(mnt.path(), "size=8m").expect("mount");
    // 24 MiB: 4 homes of 6 directories of 4 files of 256 KiB. In pieces of 4 entries,
    // after the homes' directories, each piece is 4 directories: 4 MiB.
    let data: Vec<u8> = (0..256 << 10).map(|i: u32| (i * 7 % 251) as u8).collect();
    for h in 0..4 {
        for d in 0..6 {
            for f in 0..4 {
                src.file(format!("h{h}/d{d}/f{f}"), &data);
            }
        }
    }
    let dest = mnt.join("replica");
    let out = push(
        t,
        src.path(),
        &dest,
        &["--piece-entries", "4", "--min-free", "1M"],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(11), "{err}");
    let copied: Vec<_> = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_file() && e.path().parent().unwrap() != dest.join(".fsync-repl")
        })
        .collect();
    assert!(
        !copied.is_empty(),
        "the first pieces fit and were copied: {err}"
    );
    for e in &copied {
        assert_eq!(
            std::fs::read(e.path()).unwrap(),
            data,
            "{}",
            e.path().display()
        );
    }
    assert!(temp_files(&dest).is_empty(), "{:?}", temp_files(&dest));
    // The reserve holds (what the kernel says is free).
    let st = rustix::fs::statvfs(mnt.path()).unwrap();
    assert!(st.f_bavail * st.f_frsize >= 1 << 20, "{err}");
    // The figure covers the rest: at least what is not copied, less what is free.
    let missing: u64 = err
        .split(" bytes) missing")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in: {err}"));
    let left = (96 - copied.len() as u64) * data.len() as u64;
    let free = st.f_bavail * st.f_frsize;
    assert!(
        missing + free >= left,
        "{missing} missing + {free} free < {left} left: {err}"
    );
    assert!(err.contains("the next run goes on from there"), "{err}");
    // The directories copied have their own mode and mtime.
    for d in 0..6 {
        let rel = format!("h0/d{d}");
        if dest.join(&rel).exists() {
            let (a, b) = (
                src.join(&rel).metadata().unwrap(),
                dest.join(&rel).metadata().unwrap(),
            );
            assert_eq!((a.mode(), a.mtime()), (b.mode(), b.mtime()), "{rel}");
        }
    }
    // With room, the next run completes the replica.
    let ok = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(ok.success());
    push_ok(t, src.path(), &dest, &["--piece-entries", "4"]);
    assert_same_tree(src.path(), &dest);
}

/// A run whose first piece already does not fit writes nothing at all, as a run of one
/// piece never did.
#[test]
fn a_first_piece_that_does_not_fit_writes_nothing() {
    if !require(is_root(), "a small tmpfs needs root") {
        return;
    }
    let (src, mnt) = (Tree::new(), Tree::new());
    let _m = mount_tmpfs(mnt.path(), "size=2m").expect("mount");
    for d in 0..6 {
        src.file(format!("d{d}/big"), &vec![3u8; 1 << 20]);
    }
    for &t in TRANSPORTS {
        let dest = mnt.join("replica");
        let out = push(t, src.path(), &dest, &["--piece-entries", "2"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(11), "{t:?}: {err}");
        // All six files are counted: 6 MiB needed.
        assert!(err.contains("needs 6.0 MiB"), "{t:?}: {err}");
        assert!(!dest.exists(), "{t:?}: a refused run created DEST: {err}");
    }
}

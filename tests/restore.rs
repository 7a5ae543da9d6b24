//! The way back: `versions`, `restore`, `verify`, the content catalogue, `pull` from a
//! local path and `completions`, with real files, run locally and through the remote
//! transport (the stand-in remote shell; tests/ssh.rs does the same through sshd).

mod common;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use common::*;

/// The names the snapshots of [`history`] are given (one a day).
const DAYS: [&str; 5] = [
    "2026-11-21T03:00:00Z",
    "2026-11-22T03:00:00Z",
    "2026-11-23T03:00:00Z",
    "2026-11-24T03:00:00Z",
    "2026-11-25T03:00:00Z",
];

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn code(out: &Output, want: i32) {
    assert_eq!(out.status.code(), Some(want), "{}", show(out));
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fsync-repl ARGS` (with the remote flags when `t` is remote).
fn run(t: Transport, args: &[&OsStr]) -> Output {
    let mut c = bin();
    c.arg(args[0]);
    if t == Transport::Rsh {
        c.args(rsh_args());
    }
    c.args(&args[1..]).output().expect("run fsync-repl")
}

use std::ffi::OsStr;

/// DEST as the command line gives it for transport `t`.
fn dest_arg(t: Transport, dst: &Path) -> OsString {
    match t {
        Transport::Local => dst.into(),
        Transport::Rsh => remote(dst),
    }
}

/// Renames the newest snapshot (and its manifest and catalogue) to `name`.
fn rename_newest(dst: &Path, name: &str) {
    let mut names: Vec<String> = fs::read_dir(dst.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !DAYS.contains(&n.as_str()))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let old = names.pop().unwrap();
    fs::rename(
        dst.join("snapshots").join(&old),
        dst.join("snapshots").join(name),
    )
    .unwrap();
    let side = dst.join(".fsync-repl/snapshots");
    for ext in ["json", "b3"] {
        fs::rename(
            side.join(format!("{old}.{ext}")),
            side.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
}

/// Takes a snapshot of DEST named `name`; returns its manifest.
fn snap(dst: &Path, name: &str) -> serde_json::Value {
    let out = bin()
        .args(["snapshot", "--json"])
        .arg(dst)
        .output()
        .unwrap();
    code(&out, 0);
    rename_newest(dst, name);
    json(&out)
}

/// A DEST with five days of history of `home/`:
/// a.txt: "one" (day 1, unchanged day 2), "two!" (day 3), deleted (day 4), "three" (day 5);
/// docs/: notes "n1" and a symlink (days 1-2), notes "n2" from day 3.
fn history() -> (Tree, Tree, Vec<serde_json::Value>) {
    let src = Tree::new();
    let dst = Tree::new();
    src.file("home/a.txt", b"one")
        .mtime("home/a.txt", 1_700_000_000, 0)
        .file("home/docs/notes", b"n1")
        .symlink("home/docs/link", "notes")
        .file("home/keep", b"kept all along");
    let push = |_| {
        let out = bin()
            .args(["push", "-q", "--delete"])
            .arg(src.path())
            .arg(dst.join("current"))
            .output()
            .unwrap();
        code(&out, 0);
    };
    let mut manifests = Vec::new();
    push(());
    manifests.push(snap(dst.path(), DAYS[0]));
    manifests.push(snap(dst.path(), DAYS[1]));
    src.file("home/a.txt", b"two!")
        .file("home/docs/notes", b"n2");
    push(());
    manifests.push(snap(dst.path(), DAYS[2]));
    fs::remove_file(src.join("home/a.txt")).unwrap();
    push(());
    manifests.push(snap(dst.path(), DAYS[3]));
    src.file("home/a.txt", b"three");
    push(());
    manifests.push(snap(dst.path(), DAYS[4]));
    (src, dst, manifests)
}

#[test]
fn a_snapshot_of_an_unchanged_tree_hashes_nothing() {
    let (_src, _dst, m) = history();
    let n = |i: usize, k: &str| {
        m[i][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {}", m[i]))
    };
    // Day 1 reads everything: a.txt, notes, keep (the symlink is no file).
    assert_eq!(
        (n(0, "hashed_files"), n(0, "hashed_bytes")),
        (3, 3 + 2 + 14)
    );
    // Day 2: nothing changed, nothing read.
    assert_eq!((n(1, "hashed_files"), n(1, "hashed_bytes")), (0, 0));
    // Day 3: the two new files only.
    assert_eq!((n(2, "hashed_files"), n(2, "hashed_bytes")), (2, 4 + 2));
    assert_eq!(n(3, "hashed_files"), 0);
    assert_eq!((n(4, "hashed_files"), n(4, "hashed_bytes")), (1, 5));
}

#[test]
fn versions_show_changed_unchanged_deleted_and_recreated() {
    let (_src, dst, _) = history();
    for &t in TRANSPORTS {
        let d = dest_arg(t, dst.path());
        let out = run(
            t,
            &[
                "versions".as_ref(),
                "--json".as_ref(),
                &d,
                "home/a.txt".as_ref(),
            ],
        );
        code(&out, 0);
        let v = json(&out);
        let versions = v["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 3, "{t:?}: {v}");
        let sizes: Vec<u64> = versions
            .iter()
            .map(|x| x["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [3, 4, 5]);
        assert_eq!(
            versions[0]["snapshots"],
            serde_json::json!([DAYS[0], DAYS[1]])
        );
        assert_eq!(versions[0]["mtime"], 1_700_000_000);
        assert_eq!(
            versions[2]["snapshots"],
            serde_json::json!([DAYS[4], "current"])
        );
        let holds: Vec<(Option<u64>, bool)> = v["holdings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["version"].as_u64(), h["unchanged"].as_bool().unwrap()))
            .collect();
        assert_eq!(
            holds,
            [
                (Some(1), false),
                (Some(1), true),
                (Some(2), false),
                (None, false),
                (Some(3), false),
                (Some(3), true)
            ],
            "{t:?}"
        );
        // A directory: two versions (notes changed on day 3); the table names them.
        let out = run(t, &["versions".as_ref(), &d, "home/docs".as_ref()]);
        code(&out, 0);
        let text = stdout(&out);
        assert!(text.contains("2 distinct version(s)"), "{t:?}: {text}");
        assert!(
            text.contains(&format!("{} .. {} (2)", DAYS[0], DAYS[1])),
            "{t:?}: {text}"
        );
        assert!(
            text.contains(&format!("{} .. current (4)", DAYS[2])),
            "{t:?}: {text}"
        );
        // A path in no snapshot: exit 3.
        let out = run(t, &["versions".as_ref(), &d, "home/never".as_ref()]);
        code(&out, 3);
    }
}

#[test]
fn restore_a_file_and_a_directory_by_name_and_by_time() {
    let (_src, dst, _) = history();
    for &t in TRANSPORTS {
        let d = dest_arg(t, dst.path());
        let to = Tree::new();
        let target: &OsStr = to.path().as_os_str();
        // A file from a named snapshot lands at TARGET/PATH, with its metadata.
        let out = run(
            t,
            &[
                "restore".as_ref(),
                &d,
                "home/a.txt".as_ref(),
                "--to".as_ref(),
                target,
                "--snapshot".as_ref(),
                DAYS[0].as_ref(),
            ],
        );
        code(&out, 0);
        assert_eq!(to.read("home/a.txt"), b"one", "{t:?}");
        assert_eq!(
            fs::metadata(to.join("home/a.txt")).unwrap().mtime(),
            1_700_000_000
        );
        // Only that file of its directory, and no record of a source left behind.
        assert!(!to.join("home/keep").exists(), "{t:?}");
        assert!(!to.join("home/.fsync-repl").exists(), "{t:?}");
        // A directory by time: the newest snapshot at or before the end of day 2.
        let out = run(
            t,
            &[
                "restore".as_ref(),
                &d,
                "home/docs".as_ref(),
                "--to".as_ref(),
                target,
                "--at".as_ref(),
                "2026-11-22".as_ref(),
            ],
        );
        code(&out, 0);
        assert_same_tree(
            &dst.join("snapshots").join(DAYS[1]).join("home/docs"),
            &to.join("home/docs"),
        );
        assert_eq!(
            fs::read_link(to.join("home/docs/link")).unwrap(),
            Path::new("notes")
        );
        // At day 4 a.txt was deleted: --at takes the newest before that holds it (day 3).
        let to2 = Tree::new();
        let out = run(
            t,
            &[
                "restore".as_ref(),
                &d,
                "home/a.txt".as_ref(),
                "--to".as_ref(),
                to2.path().as_ref(),
                "--at".as_ref(),
                "2026-11-24T03:00".as_ref(),
            ],
        );
        code(&out, 0);
        assert_eq!(to2.read("home/a.txt"), b"two!", "{t:?}");
        // Without a choice: the newest snapshot holding it (day 5).
        let to3 = Tree::new();
        let out = run(
            t,
            &[
                "restore".as_ref(),
                &d,
                "home/a.txt".as_ref(),
                "--to".as_ref(),
                to3.path().as_ref(),
            ],
        );
        code(&out, 0);
        assert_eq!(to3.read("home/a.txt"), b"three", "{t:?}");
        // Before the first snapshot nothing holds it: exit 3, nothing written.
        let to4 = Tree::new();
        let out = run(
            t,
            &[
                "restore".as_ref(),
                &d,
                "home/a.txt".as_ref(),
                "--to".as_ref(),
                to4.path().as_ref(),
                "--at".as_ref(),
                "2026-11-20".as_ref(),
            ],
        );
        code(&out, 3);
        assert!(fs::read_dir(to4.path()).unwrap().next().is_none());
    }
}

#[test]
fn restore_never_replaces_a_differing_file_without_overwrite() {
    let (_src, dst, _) = history();
    for &t in TRANSPORTS {
        let d = dest_arg(t, dst.path());
        let to = Tree::new();
        to.file("home/a.txt", b"mine, edited since")
            .file("home/docs/other", b"x");
        let target: &OsStr = to.path().as_os_str();
        let args = |extra: &'static str| -> Vec<OsString> {
            let mut v: Vec<OsString> = vec![
                "restore".into(),
                d.clone(),
                "home/a.txt".into(),
                "home/docs".into(),
                "--to".into(),
                target.into(),
                "--snapshot".into(),
                DAYS[0].into(),
            ];
            if !extra.is_empty() {
                v.push(extra.into());
            }
            v
        };
        let a = args("");
        let out = run(t, &a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
        code(&out, 3);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("a.txt") && err.contains("--overwrite"),
            "{t:?}: {err}"
        );
        // Nothing at all was restored: not even the directory that had no conflict.
        assert_eq!(to.read("home/a.txt"), b"mine, edited since");
        assert!(!to.join("home/docs/notes").exists(), "{t:?}");
        // A dry run says what it would do and writes nothing.
        let a = args("--overwrite");
        let mut dry = a.clone();
        dry.push("-n".into());
        let out = run(t, &dry.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
        code(&out, 0);
        assert!(stdout(&out).contains(">f a.txt"), "{t:?}: {}", show(&out));
        assert_eq!(to.read("home/a.txt"), b"mine, edited since");
        assert!(!to.join("home/docs/notes").exists());
        // --overwrite replaces it; files TARGET has beside them stay.
        let out = run(t, &a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
        code(&out, 0);
        assert_eq!(to.read("home/a.txt"), b"one");
        assert_eq!(to.read("home/docs/notes"), b"n1");
        assert_eq!(to.read("home/docs/other"), b"x");
        // Now identical: restoring again needs no --overwrite.
        let a = args("");
        let out = run(t, &a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
        code(&out, 0);
    }
}

#[test]
fn pull_from_a_local_snapshot_is_a_local_copy() {
    let (_src, dst, _) = history();
    let to = Tree::new();
    let out = bin()
        .arg("pull")
        .arg(dst.join("snapshots").join(DAYS[2]))
        .arg(to.join("restored"))
        .output()
        .unwrap();
    code(&out, 0);
    assert_same_tree(&dst.join("snapshots").join(DAYS[2]), &to.join("restored"));
    assert_eq!(to.read("restored/home/a.txt"), b"two!");
}

/// Flips the first byte of `p` in place, putting its mtime back.
fn flip_byte(p: &Path) {
    use std::os::unix::fs::FileExt;
    let m = fs::metadata(p).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_at(&mut b, 0).unwrap();
    f.write_at(&[b[0] ^ 0x20], 0).unwrap();
    drop(f);
    set_mtime(p, m.mtime(), m.mtime_nsec() as u32);
    let after = fs::metadata(p).unwrap();
    assert_eq!((after.len(), after.mtime()), (m.len(), m.mtime()));
}

#[test]
fn verify_passes_on_an_intact_dest_and_names_a_flipped_byte() {
    let (src, dst, _) = history();
    let metrics = Tree::new();
    let prom = metrics.join("verify.prom");
    for &t in TRANSPORTS {
        let d = dest_arg(t, dst.path());
        let out = run(
            t,
            &["verify".as_ref(), "--all".as_ref(), "--json".as_ref(), &d],
        );
        code(&out, 0);
        let v = json(&out);
        assert_eq!(v["differ"], serde_json::json!([]), "{t:?}");
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 5);
    }
    let out = bin()
        .args(["verify", "--against"])
        .arg(src.path())
        .arg("--metrics-file")
        .arg(&prom)
        .arg(dst.path())
        .output()
        .unwrap();
    code(&out, 0);
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("fsync_repl_verify_differing_files{dest="),
        "{text}"
    );
    assert!(text.contains("} 0\n"), "{text}");
    // One byte of day 1's notes (no longer in current) flipped, size and mtime as before.
    let bad = dst.join("snapshots").join(DAYS[0]).join("home/docs/notes");
    flip_byte(&bad);
    for &t in TRANSPORTS {
        let d = dest_arg(t, dst.path());
        let out = run(t, &["verify".as_ref(), "--all".as_ref(), &d]);
        code(&out, 26);
        let text = stdout(&out);
        let named: Vec<&str> = text.lines().filter(|l| l.starts_with("DIFFERS")).collect();
        // Days 1 and 2 hold that inode.
        assert_eq!(named.len(), 2, "{t:?}: {text}");
        assert!(
            named[0].contains(&format!("snapshots/{}/home/docs/notes", DAYS[0])),
            "{t:?}: {text}"
        );
        // The newest snapshot alone is sound.
        let out = run(t, &["verify".as_ref(), &d]);
        code(&out, 0);
    }
    // In current, a file changed behind the replica's back: --against names it.
    flip_byte(&dst.join("current/home/keep"));
    let out = bin()
        .args(["verify", "--against"])
        .arg(src.path())
        .arg("--metrics-file")
        .arg(&prom)
        .arg(dst.path())
        .output()
        .unwrap();
    code(&out, 26);
    assert!(
        stdout(&out).contains("DIFFERS current/home/keep: content differs from SRC"),
        "{}",
        show(&out)
    );
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("fsync_repl_verify_exit_code{dest=") && text.contains("} 26\n"),
        "{text}"
    );
}

/// Regular files of the snapshots: (names, distinct inodes).
fn names_and_inodes(dst: &Path) -> (u64, u64) {
    let mut inodes = HashSet::new();
    let mut names = 0;
    for e in walkdir::WalkDir::new(dst.join("snapshots")) {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_file() {
            names += 1;
            inodes.insert((m.dev(), m.ino()));
        }
    }
    (names, inodes.len() as u64)
}

#[test]
fn verify_reads_each_inode_once_however_many_snapshots_link_it() {
    let (_src, dst, _) = history();
    let (names, inodes) = names_and_inodes(dst.path());
    assert!(
        names > inodes * 2,
        "the snapshots share most files: {names} names, {inodes} inodes"
    );
    let out = bin()
        .args(["verify", "--all", "--json"])
        .arg(dst.path())
        .output()
        .unwrap();
    code(&out, 0);
    let v = json(&out);
    assert_eq!(v["files"].as_u64(), Some(names), "{v}");
    assert_eq!(v["inodes_read"].as_u64(), Some(inodes), "{v}");
}

#[test]
fn an_interrupted_verify_resumes_where_it_stopped() {
    let src = Tree::new();
    let dst = Tree::new();
    for i in 0..40 {
        src.file(format!("f{i:02}"), &vec![i as u8; 16 << 10]);
    }
    let out = bin()
        .args(["backup", "-q"])
        .arg(src.path())
        .arg(dst.path())
        .output()
        .unwrap();
    code(&out, 0);
    let progress = dst.join(".fsync-repl/verify-progress.json");
    // Slow enough (640 KiB at 64 KiB/s) to be stopped midway.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fsync-repl"))
        .args(["verify", "--json", "-j1", "--bwlimit=64K"])
        .arg(dst.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !progress.exists() {
        assert!(std::time::Instant::now() < deadline, "no progress record");
        assert!(
            child.try_wait().unwrap().is_none(),
            "verify ended before saving progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(20));
    assert!(progress.exists());
    let out = bin()
        .args(["verify", "--json"])
        .arg(dst.path())
        .output()
        .unwrap();
    code(&out, 0);
    let v = json(&out);
    let (resumed, read) = (
        v["resumed"].as_u64().unwrap(),
        v["inodes_read"].as_u64().unwrap(),
    );
    assert!(resumed > 0, "{v}");
    assert_eq!(resumed + read, 40, "{v}");
    assert!(!progress.exists());
}

#[test]
fn completions_for_three_shells() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef"),
        ("fish", "complete -c"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        code(&out, 0);
        let text = stdout(&out);
        assert!(text.contains(marker), "{shell}: {text:.200}");
        assert!(
            text.contains("restore") && text.contains("verify"),
            "{shell}"
        );
    }
}

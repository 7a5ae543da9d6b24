//! Resuming a cut transfer: a large new file whose first run was cut (a signal, a killed
//! client, the connection gone) is kept as a partial file in DEST's own directory
//! (`.fsync-repl/partial/`), and the next run sends only what it lacks: locally and
//! through a real sshd, a 1 GiB file cut at about half goes on with about half (literal
//! bytes locally, wire bytes remotely). A partial file whose source changed meanwhile
//! is discarded, and one whose record is corrupt or hostile is removed, never followed.
//! Every test checks what the disk shows: the final file byte for byte, no partial file
//! at a final name, and nothing left once a run completes.

mod common;
use common::sshd::{sshd, Sshd};
use common::*;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use fsync_repl::dest::local::partial::{key, RESUME_MIN};
use rustix::process::{kill_process, Pid, Signal};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const MTIME: i64 = 1_650_000_000;

fn shm() -> &'static Path {
    Path::new("/dev/shm")
}

/// Writes `len` bytes of xorshift noise: nothing a compressor shrinks, no holes.
fn write_noise(path: &Path, seed: u64, len: u64) {
    let mut f = File::create(path).expect("create");
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for w in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
        }
        f.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    drop(f);
    set_mtime(path, MTIME, 0);
}

/// Whether two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (
        File::open(a).expect("open a"),
        File::open(b).expect("open b"),
    );
    let len = fa.metadata().unwrap().len();
    if fb.metadata().unwrap().len() != len {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut off = 0;
    while off < len {
        let n = (len - off).min(x.len() as u64) as usize;
        fa.read_exact_at(&mut x[..n], off).unwrap();
        fb.read_exact_at(&mut y[..n], off).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
        off += n as u64;
    }
    true
}

fn partial_dir(dst: &Path) -> PathBuf {
    dst.join(".fsync-repl/partial")
}

/// The entries of DEST's partial directory (none when it is absent).
fn partials(dst: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(partial_dir(dst))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The length of the data file a cut transfer of `rel` keeps, if any.
fn kept_len(dst: &Path, rel: &str) -> Option<u64> {
    let k = key(rel.as_bytes());
    (0..2)
        .filter_map(|n| fs::symlink_metadata(partial_dir(dst).join(format!("{k}.{n}"))).ok())
        .map(|m| m.len())
        .max()
}

/// Asserts DEST holds exactly one partial file for `rel` (its data and its record),
/// of at least `at` bytes and at most `size` (a file completed in the grace a signal
/// gives but not committed is kept whole), and nothing at `rel` or beside it.
#[track_caller]
fn assert_kept(dst: &Path, rel: &str, at: u64, size: u64) -> u64 {
    let k = key(rel.as_bytes());
    let names = partials(dst);
    assert_eq!(names.len(), 2, "one data file and its record: {names:?}");
    assert!(names.contains(&format!("{k}.id")), "{names:?}");
    let kept = kept_len(dst, rel).expect("the partial file was kept");
    assert!(
        kept >= at && kept <= size,
        "kept {kept} bytes of {size} (cut after {at})"
    );
    assert!(
        !dst.join(rel).exists(),
        "a partial file stands at its final name"
    );
    assert!(temp_files(dst).is_empty(), "{:?}", temp_files(dst));
    kept
}

/// Asserts the run completed and left no partial file.
#[track_caller]
fn assert_none_left(dst: &Path) {
    assert!(
        !partial_dir(dst).exists(),
        "partial files left after a completed run: {:?}",
        partials(dst)
    );
    assert!(temp_files(dst).is_empty(), "{:?}", temp_files(dst));
}

/// Starts `cmd`, waits until DEST's partial file of `rel` holds at least `at` bytes and
/// cuts the run with `sig`; returns its output.
fn cut(mut cmd: StdCommand, dst: &Path, rel: &str, at: u64, sig: Signal) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the run");
    let deadline = Instant::now() + Duration::from_secs(300);
    while kept_len(dst, rel).is_none_or(|n| n < at) {
        if let Some(st) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            panic!(
                "the run ended ({st}) before its partial file reached {at} bytes:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the partial file never reached {at} bytes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_process(Pid::from_child(&child), sig).expect("signal the run");
    child.wait_with_output().expect("wait")
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("no {k} in the report: {v}"))
}

/// Asserts `part` is about half of `whole` (between 35% and 65%).
#[track_caller]
fn assert_about_half(what: &str, part: u64, whole: u64) {
    assert!(
        part * 100 >= whole * 35 && part * 100 <= whole * 65,
        "{what}: {part} bytes for a file of {whole} cut at about half"
    );
}

#[test]
fn a_cut_local_push_of_a_1gib_file_goes_on_with_about_half() {
    let src = Tree::new_in(shm());
    let dst = Tree::new_in(shm());
    let d = dst.join("r");
    write_noise(&src.join("big.bin"), 1, GIB);
    src.file("small", b"small\n");

    let cmd = push_std(Transport::Local, src.path(), &d, &["--bwlimit", "200M"]);
    let out = cut(cmd, &d, "big.bin", GIB / 2, Signal::TERM);
    assert_eq!(
        out.status.code(),
        Some(20),
        "SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = assert_kept(&d, "big.bin", GIB / 2, GIB);

    let out = push_ok(Transport::Local, src.path(), &d, &["--json"]);
    let j = json(&out);
    eprintln!("kept {kept} bytes; the next run: {j}");
    assert_about_half("literal bytes", n(&j, "bytes_literal"), GIB);
    assert_eq!(
        n(&j, "bytes_literal") + n(&j, "bytes_matched"),
        GIB + 6,
        "{j}"
    );
    assert!(same_bytes(&src.join("big.bin"), &d.join("big.bin")));
    assert_same_tree(src.path(), &d);
    assert_none_left(&d);
}

/// `root@127.0.0.1:PATH`.
fn at(path: &Path) -> OsString {
    let mut v = b"root@127.0.0.1:".to_vec();
    v.extend_from_slice(path.as_os_str().as_bytes());
    OsString::from_vec(v)
}

fn ssh_push(sshd: &Sshd, src: &Path, dst: &Path, args: &[&str]) -> StdCommand {
    let mut ssh = sshd.args(Path::new(env!("CARGO_BIN_EXE_fsync-repl")));
    // A debug build's delta of a 64 MiB window of new data can take longer than the
    // usual 30 s of silence on a loaded machine.
    if let Some(k) = ssh.iter().position(|a| a == "--timeout") {
        ssh[k + 1] = "300".into();
    }
    let mut c = StdCommand::new(env!("CARGO_BIN_EXE_fsync-repl"));
    c.env_remove("FSYNC_REPL_CONFIG")
        .arg("push")
        .args(ssh)
        .args(args)
        .arg(src)
        .arg(at(dst));
    c
}

#[test]
fn a_killed_ssh_push_of_a_1gib_file_sends_about_half_on_the_next_run() {
    let Some(sshd) = sshd() else { return };
    let src = Tree::new_in(shm());
    let dst = Tree::new_in(shm());
    let d = dst.join("r");
    write_noise(&src.join("big.bin"), 2, GIB);

    // The client is killed outright: its far side sees the connection go.
    let cmd = ssh_push(&sshd, src.path(), &d, &["--bwlimit", "200M"]);
    let out = cut(cmd, &d, "big.bin", GIB / 2, Signal::KILL);
    assert_eq!(out.status.code(), None, "the run was not killed");
    wait_for_far_side(&d);
    let kept = assert_kept(&d, "big.bin", GIB / 2, GIB);

    let out = ssh_push(&sshd, src.path(), &d, &["--json"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    eprintln!("kept {kept} bytes; the next run: {j}");
    assert_about_half("wire bytes sent", n(&j, "wire_bytes_sent"), GIB);
    assert_about_half("literal bytes", n(&j, "bytes_literal"), GIB);
    assert!(same_bytes(&src.join("big.bin"), &d.join("big.bin")));
    assert_same_tree(src.path(), &d);
    assert_none_left(&d);
}

#[test]
fn a_partial_file_whose_source_changed_is_discarded() {
    for &t in TRANSPORTS {
        // (the change, whether it keeps the size)
        for same_size in [true, false] {
            let src = Tree::new_in(shm());
            let dst = Tree::new_in(shm());
            let d = dst.join("r");
            let size = RESUME_MIN + 3 * MIB;
            write_noise(&src.join("f.bin"), 3, size);
            let cmd = push_std(t, src.path(), &d, &["--bwlimit", "32M"]);
            let out = cut(cmd, &d, "f.bin", size / 3, Signal::TERM);
            assert_eq!(out.status.code(), Some(20), "{t:?}: SIGTERM");
            wait_for_far_side(&d);
            eprintln!("{t:?}: {}", String::from_utf8_lossy(&out.stderr));
            assert_kept(&d, "f.bin", size / 3, size);

            let size = match same_size {
                // The same bytes even: only the mtime tells.
                true => {
                    set_mtime(&src.join("f.bin"), MTIME + 1, 0);
                    size
                }
                false => {
                    let f = fs::OpenOptions::new()
                        .append(true)
                        .open(src.join("f.bin"))
                        .unwrap();
                    f.write_all_at(b"more", size).unwrap();
                    drop(f);
                    set_mtime(&src.join("f.bin"), MTIME, 0);
                    size + 4
                }
            };
            let out = push_ok(t, src.path(), &d, &["--json"]);
            let j = json(&out);
            assert_eq!(n(&j, "bytes_literal"), size, "{t:?} {same_size}: {j}");
            assert_eq!(n(&j, "bytes_matched"), 0, "{t:?} {same_size}: {j}");
            if t == Transport::Rsh {
                assert!(n(&j, "wire_bytes_sent") >= size, "{j}");
            }
            assert!(same_bytes(&src.join("f.bin"), &d.join("f.bin")));
            assert_same_tree(src.path(), &d);
            assert_none_left(&d);
        }
    }
}

/// Plants something in DEST's partial directory (the directory, a directory outside
/// DEST, the source's first half).
type Plant<'a> = dyn Fn(&Path, &Path, &[u8]) + 'a;

/// A partial file's record as the tool writes it.
fn record(rel: &[u8], size: u64, mtime: i64) -> Vec<u8> {
    let hex: String = rel.iter().map(|b| format!("{b:02x}")).collect();
    format!("fsync-repl partial 1\n{size} {mtime} 0\n{hex}\n").into_bytes()
}

#[test]
fn a_corrupt_or_hostile_partial_record_is_removed_and_never_followed() {
    let size = RESUME_MIN;
    let half = size / 2;
    let k = key(b"f.bin");
    // Each case plants, beside or instead of a good record, what would be a perfect
    // basis (the source's first half) if it were taken.
    let cases: &[(&str, &Plant)] = &[
        ("a record naming a path outside", &|p, _, prefix| {
            fs::write(
                p.join(format!("{k}.id")),
                record(b"../outside/f.bin", size, MTIME),
            )
            .unwrap();
            fs::write(p.join(format!("{k}.0")), prefix).unwrap();
        }),
        ("a record with a huge size", &|p, _, prefix| {
            fs::write(p.join(format!("{k}.id")), record(b"f.bin", 1 << 62, MTIME)).unwrap();
            fs::write(p.join(format!("{k}.0")), prefix).unwrap();
        }),
        ("a record that is not one", &|p, _, prefix| {
            let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 131 % 251) as u8).collect();
            fs::write(p.join(format!("{k}.id")), junk).unwrap();
            fs::write(p.join(format!("{k}.1")), prefix).unwrap();
        }),
        (
            "a data file that is a symlink outside",
            &|p, outside, prefix| {
                fs::write(p.join(format!("{k}.id")), record(b"f.bin", size, MTIME)).unwrap();
                fs::write(outside.join("victim"), prefix).unwrap();
                std::os::unix::fs::symlink(outside.join("victim"), p.join(format!("{k}.0")))
                    .unwrap();
            },
        ),
        (
            "a data file larger than its record says",
            &|p, _, prefix| {
                fs::write(p.join(format!("{k}.id")), record(b"f.bin", size, MTIME)).unwrap();
                let mut big = prefix.to_vec();
                big.resize(size as usize + 1, 0);
                fs::write(p.join(format!("{k}.0")), big).unwrap();
            },
        ),
        (
            "the partial directory a symlink outside",
            &|p, outside, prefix| {
                fs::remove_dir(p).unwrap();
                fs::write(
                    outside.join(format!("{k}.id")),
                    record(b"f.bin", size, MTIME),
                )
                .unwrap();
                fs::write(outside.join(format!("{k}.0")), prefix).unwrap();
                std::os::unix::fs::symlink(outside, p).unwrap();
            },
        ),
    ];
    for &t in TRANSPORTS {
        for (what, plant) in cases {
            let src = Tree::new_in(shm());
            let dst = Tree::new_in(shm());
            let outside = Tree::new();
            let d = dst.join("r");
            write_noise(&src.join("f.bin"), 4, size);
            let prefix = fs::read(src.join("f.bin")).unwrap()[..half as usize].to_vec();
            fs::create_dir_all(partial_dir(&d)).unwrap();
            plant(&partial_dir(&d), outside.path(), &prefix);
            let before = snapshot(outside.path());

            let out = push_ok(t, src.path(), &d, &["--json"]);
            let j = json(&out);
            assert_eq!(
                n(&j, "bytes_matched"),
                0,
                "{t:?}, {what}: used as a basis: {j}"
            );
            assert_eq!(n(&j, "bytes_literal"), size, "{t:?}, {what}: {j}");
            assert!(same_bytes(&src.join("f.bin"), &d.join("f.bin")), "{what}");
            assert_same_tree(src.path(), &d);
            assert_none_left(&d);
            assert_eq!(
                snapshot(outside.path()),
                before,
                "{t:?}, {what}: outside changed"
            );
        }
    }
}

/// Every file beneath `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_cut_pull_goes_on_with_what_its_receiver_kept() {
    let src = Tree::new_in(shm());
    let dst = Tree::new_in(shm());
    let d = dst.join("r");
    let size = 2 * RESUME_MIN;
    write_noise(&src.join("f.bin"), 5, size);
    let mut cmd = StdCommand::new(env!("CARGO_BIN_EXE_fsync-repl"));
    cmd.env_remove("FSYNC_REPL_CONFIG")
        .arg("pull")
        .args(rsh_args())
        .args(["--bwlimit", "64M"])
        .arg(remote(src.path()))
        .arg(&d);
    let out = cut(cmd, &d, "f.bin", size / 2, Signal::TERM);
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_far_side(src.path());
    assert_kept(&d, "f.bin", size / 2, size);

    let out = bin()
        .arg("pull")
        .args(rsh_args())
        .arg("--json")
        .arg(remote(src.path()))
        .arg(&d)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = json(&out);
    assert_about_half("literal bytes", n(&j, "bytes_literal"), size);
    assert!(same_bytes(&src.join("f.bin"), &d.join("f.bin")));
    assert_same_tree(src.path(), &d);
    assert_none_left(&d);
}

#[test]
fn a_completed_run_removes_what_cut_runs_left_and_spares_what_is_being_written() {
    for &t in TRANSPORTS {
        let src = Tree::new();
        let dst = Tree::new();
        let d = dst.join("r");
        src.file("a", b"a\n");
        let p = partial_dir(&d);
        fs::create_dir_all(&p).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // One left by a run cut yesterday, for a file no longer in SRC; one being
        // written by another run (dated after this run began), left alone.
        let (old, busy) = (key(b"gone.bin"), key(b"busy.bin"));
        for (k, when) in [(&old, now - 86_400), (&busy, now + 3_600)] {
            let rel = if *k == old { "gone.bin" } else { "busy.bin" };
            fs::write(
                p.join(format!("{k}.id")),
                record(rel.as_bytes(), 1 << 27, MTIME),
            )
            .unwrap();
            fs::write(p.join(format!("{k}.0")), vec![7u8; 1 << 20]).unwrap();
            for n in ["id", "0"] {
                set_mtime(&p.join(format!("{k}.{n}")), when, 0);
            }
        }
        push_ok(t, src.path(), &d, &[]);
        assert_eq!(
            partials(&d),
            vec![format!("{busy}.0"), format!("{busy}.id")],
            "{t:?}"
        );
        assert_same_tree(src.path(), &d);
    }
}

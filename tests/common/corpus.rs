//! The project's corpus: a deterministic set of home directories, and a day of use on it.
//!
//! `make` writes `users` homes under a root. Each holds what a real home holds: nested
//! documents and notes, a Maildir (many small messages whose names carry `:` and `,`),
//! photos, a browser cache, application logs (one hard-linked), a database of 4 KiB
//! pages, dotfiles with private modes, an executable script, an empty file, empty
//! directories, a sparse disk image, symlinks (relative, absolute, dangling, to a
//! directory), a photo hard-linked into two albums, and names that break naive tools
//! (spaces, quotes, `$`, a leading `-`, a newline, UTF-8, a byte that is not UTF-8, a
//! 255-byte name). `mutate` applies a day of use: notes edited in the middle, logs
//! appended to, database pages rewritten in place, mail arriving, being read (a Maildir
//! rename) and deleted, files touched or chmodded, a project folder moved, a download
//! and a copy of it, a cache cleared, a symlink repointed.
//!
//! The same arguments always give the same tree (names, contents, modes, file mtimes,
//! links), so two tools can be measured on identical work. No randomness comes from
//! outside: a SplitMix64 generator seeded from the arguments drives every choice.
//!
//! Used by the tests at a small size (`Spec::tiny`) and by `examples/corpus.rs`, which
//! the benchmark scripts run, at full size (`Spec::default`: 8 users, ~16k files,
//! ~0.45 GB).

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Base of every generated mtime (2023-11-14T22:13:20Z).
pub const BASE_TIME: i64 = 1_700_000_000;
/// The "day" of `mutate`: its mtimes lie after every mtime `make` writes.
const DAY: i64 = 86_400;

/// How big a corpus to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Home directories.
    pub users: usize,
    /// Small files per home (notes, mail, cache entries), a few bytes to 64 KiB.
    pub small: usize,
    /// Medium files per home (documents and photos), 64 KiB to 2 MiB.
    pub medium: usize,
    /// Size of the database in every fourth home, MiB (0: none).
    pub large_mib: usize,
    pub seed: u64,
}

impl Default for Spec {
    /// The benchmark size: 8 users, ~16k files, ~0.45 GB.
    fn default() -> Spec {
        Spec {
            users: 8,
            small: 2000,
            medium: 30,
            large_mib: 64,
            seed: 1,
        }
    }
}

impl Spec {
    /// A size for tests: 3 users, ~1,100 files, ~14 MB.
    pub fn tiny() -> Spec {
        Spec {
            users: 3,
            small: 300,
            medium: 4,
            large_mib: 4,
            seed: 1,
        }
    }
}

/// SplitMix64: small, fast, and the same on every platform and toolchain.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_f5c0_4e91_0000)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    /// A size skewed towards small values, as file sizes are: `lo..=hi`, log-uniform.
    pub fn skewed(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi as f64).ln());
        let x = l + (h - l) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (x.exp() as u64).clamp(lo, hi)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `k` distinct indices below `n`, in increasing order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx.sort_unstable();
        idx
    }
}

const WORDS: &[&str] = &[
    "meeting", "budget", "quarter", "draft", "review", "invoice", "holiday", "garden", "recipe",
    "project", "deadline", "photo", "school", "doctor", "train", "ticket", "the", "a", "and", "of",
    "to", "in", "for", "with", "on", "at", "from", "by", "is", "was", "will", "please", "thanks",
    "regards", "attached", "notes", "agenda", "call", "friday", "monday", "report", "figures",
    "kernel", "backup", "server", "password", "léa", "Müller", "naïve", "café", "日本", "ok",
];

/// Prose of exactly `n` bytes (UTF-8 except where `n` cuts a character).
pub fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    while out.len() < n {
        let words = rng.range(4, 13);
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(rng.pick(WORDS).as_bytes());
        }
        out.extend_from_slice(if rng.chance(15) { b".\n\n" } else { b".\n" });
    }
    out.truncate(n);
    out
}

/// Half noise, half prose: like office documents and compressed attachments.
fn blob(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = rng.bytes(n / 2);
    v.extend(text(rng, n - n / 2));
    v
}

/// A mail message of about `n` bytes.
fn message(rng: &mut Rng, n: usize, date: i64) -> Vec<u8> {
    let mut m = format!(
        "From: {} <{}@example.org>\nTo: me@example.org\nSubject: {} {}\nDate: {}\n\
         Message-ID: <{:016x}@example.org>\n\n",
        rng.pick(WORDS),
        rng.pick(&["ana", "bo", "chen", "dmitri", "eve"]),
        rng.pick(WORDS),
        rng.pick(WORDS),
        date,
        rng.next()
    )
    .into_bytes();
    m.extend(text(rng, n.saturating_sub(m.len())));
    m
}

fn os(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Sets a path's atime and mtime without following a symlink.
pub fn set_time(p: &Path, t: i64) {
    let ts = rustix::fs::Timespec {
        tv_sec: t,
        tv_nsec: ((t * 7919) % 1_000_000_000) as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Writes a file (creating parents) with a mode and an mtime.
pub fn write(p: &Path, data: &[u8], mode: u32, t: i64) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    set_time(p, t);
}

fn symlink(target: &[u8], p: &Path, t: i64) {
    std::os::unix::fs::symlink(os(target), p)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
    set_time(p, t);
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// Names that break naive tools; each becomes a small file in `Documents/odd names`.
const ODD_NAMES: &[&[u8]] = &[
    b"with space.txt",
    b"  leading and trailing spaces  ",
    b"-rf",
    b"--help",
    b"quote'single\"double",
    b"$HOME and $(date) and `id`",
    b"semi;colon&amp|pipe",
    b"back\\slash",
    b"star*question?[brackets]",
    b"new\nline",
    b"tab\there",
    b"caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac.txt",
    b"latin1-\xe9t\xe9.txt",
    b"\xff\xfe not utf-8",
    b".hidden",
    b"..double-dot-start",
    b"ends-with-dot.",
    b"CON",
];

const FIRST: &[&str] = &[
    "ana", "bruno", "chen", "dmitri", "eve", "farah", "goran", "hana", "ivan", "julia",
];

/// The name of home `u`.
pub fn home_name(u: usize) -> String {
    format!("{}{:02}", FIRST[u % FIRST.len()], u)
}

/// Writes the corpus into `root` (created if missing; should be empty).
pub fn make(root: &Path, spec: &Spec) {
    mkdir(root);
    for u in 0..spec.users {
        let mut rng = Rng::new(spec.seed.wrapping_mul(1_000_003) ^ u as u64);
        make_home(&root.join(home_name(u)), u, spec, &mut rng);
    }
    // Directory mtimes last, once nothing more is written into them.
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.into_path())
        .collect();
    dirs.sort();
    for (i, d) in dirs.iter().enumerate().rev() {
        set_time(d, BASE_TIME + 9_000_000 + i as i64);
    }
}

fn make_home(home: &Path, u: usize, spec: &Spec, rng: &mut Rng) {
    let t = |rng: &mut Rng| BASE_TIME + rng.range(0, 8_000_000) as i64;
    mkdir(home);

    // Documents: a tree of project folders holding notes (text) and office files.
    let mut dirs = vec![PathBuf::from("Documents")];
    let ndirs = (spec.small / 30).max(3);
    for i in 0..ndirs {
        let parent = rng.pick(&dirs).clone();
        if parent.components().count() < 6 {
            let name = format!(
                "{} {}",
                rng.pick(&["project", "taxes", "school", "trip", "house", "work"]),
                i
            );
            dirs.push(parent.join(name));
        }
    }
    // The small files: 45% notes, 40% mail, 15% cache entries.
    let notes = spec.small * 45 / 100;
    let mails = spec.small * 40 / 100;
    let cache = spec.small - notes - mails;
    for i in 0..notes {
        let d = rng.pick(&dirs).clone();
        let ext = rng.pick(&["txt", "md", "csv", "tex"]);
        let size = rng.skewed(16, 64 << 10) as usize;
        let mode = if rng.chance(3) { 0o600 } else { 0o644 };
        let data = text(rng, size);
        write(
            &home.join(d).join(format!("note-{i:05}.{ext}")),
            &data,
            mode,
            t(rng),
        );
    }
    for i in 0..spec.medium {
        let d = rng.pick(&dirs).clone();
        let size = rng.skewed(64 << 10, 2 << 20) as usize;
        let (data, ext) = if i % 3 == 0 {
            (rng.bytes(size), "pdf")
        } else {
            (blob(rng, size), "odt")
        };
        write(
            &home.join(d).join(format!("doc-{i:03}.{ext}")),
            &data,
            0o644,
            t(rng),
        );
    }
    // Maildir: cur/ (read) and new/ (unread); names as Maildir writes them.
    for i in 0..mails {
        let when = t(rng);
        let box_ = rng.pick(&["INBOX", "INBOX/.Sent", "INBOX/.Archive"]);
        let (sub, flags) = if rng.chance(85) {
            ("cur", ":2,S")
        } else {
            ("new", "")
        };
        let name = format!("{when}.M{i}P{}.mailhost{flags}", 1000 + u);
        let size = rng.skewed(600, 48 << 10) as usize;
        let data = message(rng, size, when);
        write(
            &home.join("Maildir").join(box_).join(sub).join(name),
            &data,
            0o600,
            when,
        );
    }
    for sub in ["tmp", "INBOX/tmp", "INBOX/.Sent/tmp", "INBOX/.Archive/tmp"] {
        mkdir(&home.join("Maildir").join(sub));
    }
    // Browser cache: two levels of hex directories, small binary entries.
    for _ in 0..cache {
        let h = rng.next();
        let rel = format!(
            ".cache/browser/{:x}/{:x}/{:016x}",
            h & 0xf,
            (h >> 4) & 0x3,
            h
        );
        let size = rng.skewed(100, 32 << 10) as usize;
        let data = rng.bytes(size);
        let p = home.join(rel);
        if p.exists() {
            continue;
        }
        write(&p, &data, 0o600, t(rng));
    }
    // Photos, one hard-linked into a second album.
    let photos = (spec.medium / 3).max(2);
    for i in 0..photos {
        let size = rng.range(200 << 10, 1 << 20) as usize;
        let data = rng.bytes(size);
        write(
            &home.join(format!("Pictures/2023/IMG_{i:04}.jpg")),
            &data,
            0o644,
            t(rng),
        );
    }
    mkdir(&home.join("Pictures/favourites"));
    fs::hard_link(
        home.join("Pictures/2023/IMG_0000.jpg"),
        home.join("Pictures/favourites/IMG_0000.jpg"),
    )
    .expect("link");
    // A database of 4 KiB pages in every fourth home.
    if spec.large_mib > 0 && u % 4 == 0 {
        let data = rng.bytes(spec.large_mib << 20);
        write(
            &home.join(".local/share/mail/index.sqlite"),
            &data,
            0o600,
            t(rng),
        );
    }
    // Logs, the first hard-linked under a second name (as logrotate's copies leave).
    for i in 0..4 {
        let size = rng.range(8 << 10, 256 << 10) as usize;
        let data = text(rng, size);
        write(
            &home.join(format!(".local/state/app{i}.log")),
            &data,
            0o640,
            t(rng),
        );
    }
    fs::hard_link(
        home.join(".local/state/app0.log"),
        home.join(".local/state/app0.log.1"),
    )
    .expect("link");
    // Dotfiles and private directories.
    let data = text(rng, 3000);
    write(&home.join(".bashrc"), &data, 0o644, t(rng));
    let data = text(rng, 200);
    write(
        &home.join(".config/app/settings.toml"),
        &data,
        0o600,
        t(rng),
    );
    let data = rng.bytes(411);
    write(&home.join(".ssh/id_ed25519"), &data, 0o600, BASE_TIME);
    let data = text(rng, 98);
    write(&home.join(".ssh/id_ed25519.pub"), &data, 0o644, BASE_TIME);
    fs::set_permissions(home.join(".ssh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    let data = b"#!/bin/sh\nexec rsync -a \"$HOME/Documents\" /media/usb\n";
    write(&home.join("bin/sync-usb"), data, 0o755, t(rng));
    write(&home.join("Documents/empty file"), b"", 0o644, t(rng));
    mkdir(&home.join("Downloads"));
    mkdir(&home.join("Music/empty album/disc 1"));
    // A sparse disk image: 8 MiB with two data extents.
    let img = home.join("vm/disk.img");
    mkdir(img.parent().expect("parent"));
    {
        let mut f = fs::File::create(&img).expect("create");
        f.set_len(8 << 20).expect("truncate");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(&rng.bytes(64 << 10)).expect("write");
        f.seek(SeekFrom::Start(5 << 20)).expect("seek");
        f.write_all(&rng.bytes(64 << 10)).expect("write");
    }
    set_time(&img, t(rng));
    // Odd names.
    let odd = home.join("Documents/odd names");
    mkdir(&odd);
    for (i, n) in ODD_NAMES.iter().enumerate() {
        let data = text(rng, 10 + i * 7);
        write(&odd.join(os(n)), &data, 0o644, t(rng));
    }
    let long = "L".repeat(251) + ".txt";
    write(&odd.join(&long), b"255 bytes of name\n", 0o644, t(rng));
    // Symlinks: relative, to a directory, absolute, dangling, into the odd names.
    let when = t(rng);
    symlink(b"Documents/doc-000.odt", &home.join("latest"), when);
    symlink(b"Pictures/2023", &home.join("photos"), when);
    symlink(b"/etc/hostname", &home.join("hostname"), when);
    symlink(b"../../nowhere/at/all", &home.join("dangling"), when);
    symlink(b"\xff\xfe not utf-8", &odd.join("link to odd"), when);
}

/// Regular files under `dir` (not following symlinks), sorted by path.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e))
}

/// What a mutation did, for the tests that check a tool's work against it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DayOfUse {
    /// Notes edited in the middle (candidates for a delta).
    pub edited: usize,
    /// Logs appended to.
    pub appended: usize,
    /// Database pages rewritten in place.
    pub pages: usize,
    /// Messages that arrived / were read (renamed new→cur) / were deleted.
    pub mail_new: usize,
    pub mail_read: usize,
    pub mail_deleted: usize,
    /// Files whose mtime alone changed, and whose mode alone changed.
    pub touched: usize,
    pub chmodded: usize,
    /// Project folders moved (with their files), and the files inside them.
    pub moved_dirs: usize,
    pub moved_files: usize,
    /// Bytes of files that only moved (their content is already at DEST).
    pub moved_bytes: u64,
    /// New files (downloads, a copy of one), cache entries cleared.
    pub created: usize,
    pub cleared: usize,
}

/// Applies a day of use to every home under `root`. Deterministic for a given tree and
/// seed; mtimes lie one day (plus the seed, in seconds) after the generated ones.
pub fn mutate(root: &Path, seed: u64) -> DayOfUse {
    let mut day = DayOfUse::default();
    let now = BASE_TIME + 100 * DAY + seed as i64;
    let mut homes: Vec<PathBuf> = fs::read_dir(root)
        .expect("read corpus root")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    homes.sort();
    for (u, home) in homes.iter().enumerate() {
        let mut rng = Rng::new(seed.wrapping_mul(7_777_777) ^ u as u64);
        mutate_home(home, now, &mut rng, &mut day);
    }
    day
}

fn mutate_home(home: &Path, now: i64, rng: &mut Rng, day: &mut DayOfUse) {
    let all = files(home);
    let notes: Vec<&PathBuf> = all
        .iter()
        .filter(|p| {
            has_ext(p, &["txt", "md", "csv", "tex"])
                && !p.starts_with(home.join("Documents/odd names"))
        })
        .collect();
    // 1. A few notes edited in the middle.
    for i in rng.sample(notes.len(), (notes.len() / 40).max(1)) {
        let p = notes[i];
        let data = fs::read(p).expect("read note");
        let cut = data.len() / 2;
        let mut new = data[..cut].to_vec();
        new.extend(text(rng, 300));
        new.extend_from_slice(&data[cut..]);
        let mode = fs::metadata(p).expect("stat").mode() & 0o7777;
        write(p, &new, mode, now - rng.range(0, 3600) as i64);
        day.edited += 1;
    }
    // 2. Logs grow (appended in place: the hard-linked name sees it too).
    for p in all.iter().filter(|p| has_ext(p, &["log"])) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(p)
            .expect("open log");
        f.write_all(&text(rng, 6000)).expect("append");
        drop(f);
        set_time(p, now);
        day.appended += 1;
    }
    // 3. Database pages rewritten in place.
    let db = home.join(".local/share/mail/index.sqlite");
    if let Ok(m) = fs::metadata(&db) {
        let pages = m.len() / 4096;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open db");
        for _ in 0..24 {
            f.seek(SeekFrom::Start(rng.range(0, pages - 1) * 4096))
                .expect("seek");
            f.write_all(&rng.bytes(4096)).expect("write page");
            day.pages += 1;
        }
        drop(f);
        set_time(&db, now);
    }
    // 4. Mail: new messages arrive, unread ones are read (Maildir renames new/x to
    //    cur/x:2,S), a few old ones are deleted.
    let inbox = home.join("Maildir/INBOX");
    let arrived = rng.range(5, 20) as usize;
    for i in 0..arrived {
        let when = now - rng.range(0, 80_000) as i64;
        let size = rng.skewed(600, 48 << 10) as usize;
        let data = message(rng, size, when);
        write(
            &inbox.join(format!("new/{when}.M{i}P99.mailhost")),
            &data,
            0o600,
            when,
        );
        day.mail_new += 1;
    }
    let unread: Vec<PathBuf> = files(&home.join("Maildir"))
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("new")))
        .collect();
    for i in rng.sample(unread.len(), unread.len() / 2) {
        let p = &unread[i];
        let mut name = p.file_name().expect("name").to_os_string();
        name.push(":2,S");
        let to = p
            .parent()
            .and_then(|d| d.parent())
            .expect("maildir")
            .join("cur")
            .join(name);
        fs::rename(p, &to).expect("rename mail");
        day.mail_read += 1;
    }
    let read: Vec<PathBuf> = files(&home.join("Maildir/INBOX/cur"));
    for i in rng.sample(read.len(), read.len() / 30) {
        fs::remove_file(&read[i]).expect("delete mail");
        day.mail_deleted += 1;
    }
    // 5. Touched (mtime only) and chmodded (mode only).
    let docs: Vec<&PathBuf> = all
        .iter()
        .filter(|p| p.starts_with(home.join("Documents")) && !has_ext(p, &["log"]))
        .collect();
    for i in rng.sample(docs.len(), (docs.len() / 100).max(1)) {
        if docs[i].exists() {
            set_time(docs[i], now - 7);
            day.touched += 1;
        }
    }
    for i in rng.sample(docs.len(), 2) {
        if docs[i].exists() {
            fs::set_permissions(docs[i], fs::Permissions::from_mode(0o600)).expect("chmod");
            day.chmodded += 1;
        }
    }
    // 6. A project folder moved into an archive folder.
    let mut projects: Vec<PathBuf> = fs::read_dir(home.join("Documents"))
        .expect("read Documents")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p.file_name() != Some(OsStr::new("odd names")))
        .collect();
    projects.sort();
    if !projects.is_empty() {
        let p = projects[rng.below(projects.len())].clone();
        let moved = files(&p);
        let archive = home.join("Documents/archive 2023");
        mkdir(&archive);
        fs::rename(&p, archive.join(p.file_name().expect("name"))).expect("move project");
        day.moved_dirs += 1;
        day.moved_files += moved.len();
        day.moved_bytes += moved
            .iter()
            .map(|f| {
                fs::symlink_metadata(
                    archive
                        .join(p.file_name().unwrap())
                        .join(f.strip_prefix(&p).unwrap()),
                )
                .map_or(0, |m| m.len())
            })
            .sum::<u64>();
    }
    // 7. A download, and a copy of it kept elsewhere (a twin).
    let size = rng.range(256 << 10, 3 << 20) as usize;
    let data = rng.bytes(size);
    write(
        &home.join("Downloads/statement.pdf"),
        &data,
        0o644,
        now - 60,
    );
    write(
        &home.join("Documents/statement copy.pdf"),
        &data,
        0o644,
        now - 30,
    );
    day.created += 2;
    // 8. Part of the browser cache cleared.
    let cache = home.join(".cache/browser");
    if let Ok(rd) = fs::read_dir(&cache) {
        let mut subs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        subs.sort();
        for i in rng.sample(subs.len(), subs.len() / 4) {
            day.cleared += files(&subs[i]).len();
            fs::remove_dir_all(&subs[i]).expect("clear cache");
        }
    }
    // 9. A symlink repointed.
    let latest = home.join("latest");
    let _ = fs::remove_file(&latest);
    symlink(b"Downloads/statement.pdf", &latest, now);
}

/// (regular files, symlinks, directories, bytes of regular files counted once per inode).
pub fn describe(root: &Path) -> (u64, u64, u64, u64) {
    let (mut f, mut l, mut d, mut b) = (0, 0, 0, 0);
    let mut seen = std::collections::HashSet::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let t = e.file_type();
        if t.is_dir() {
            d += 1;
        } else if t.is_symlink() {
            l += 1;
        } else if t.is_file() {
            f += 1;
            let m = e.metadata().expect("stat");
            if seen.insert((m.dev(), m.ino())) {
                b += m.len();
            }
        }
    }
    (f, l, d, b)
}

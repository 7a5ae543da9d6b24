//! Partial files: resuming a large file whose transfer was cut.
//!
//! A file of at least [`RESUME_MIN`] bytes sent whole is written in the replica's own
//! directory, `.fsync-repl/partial/<key>.<slot>` (`<key>`: a hash of its relative path),
//! beside `<key>.id`, the record of the source file it comes from (relative path, size,
//! mtime), written before the first byte. Only once complete and verified does it get a
//! temporary name beside its final name (a hard link) and is committed like any other
//! temporary file; its partial name goes once it is in place (invariants 2 and 4: no
//! final name ever holds a partial file, and a file with a second name is never resumed
//! or written through). No listing, `--delete`, mass-delete guard or snapshot looks into
//! that directory.
//!
//! A run cut by a signal or a lost connection keeps what was written, even a complete
//! file that was not committed yet (a SIGKILL leaves it anyway); the bytes written are
//! the data file's length. The next run that sends the same source file (same size and
//! mtime) takes it as a basis: locally, the kept prefix is compared with the source and
//! the copy goes on after the part that matches; a far side answers with the signatures
//! of the kept file, so only what it lacks crosses the wire, and the rebuilt file is
//! checked against the sender's BLAKE3 as any delta is. A kept file that is not what its
//! record says thus costs bytes, never correctness. A record that names another path,
//! another size or mtime, or does not parse, is removed with its data, never followed; a
//! data file is used only if it is a regular file with one name, no larger than the
//! record's size. A run that completes removes what cut runs left (not what another run
//! is writing).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::{split, LocalDest, TempFile};
use crate::cache::Tracked;
use crate::dest::{DataStats, PutError, SetMeta, Staged};
use crate::fsutil;
use crate::identity::SIDECAR;
use crate::source::SourceFile;

mod record;
use record::{encode, parse, MAX_ID};
pub use record::{key, Ident};

/// Files from this size on are kept when their transfer is cut: one delta window, a
/// minute at 1 MiB/s. Below it a cut loses little, and a resume would cost more (its
/// record, a signature round trip, the kept prefix read again) than it saves.
pub const RESUME_MIN: u64 = crate::delta::DEFAULT_WINDOW as u64;

/// The directory in [`SIDECAR`] that holds partial files.
pub const PARTIAL_DIR: &[u8] = b"partial";

/// Whether a file sent whole is written as a partial file.
pub fn resumable(size: u64, sparse: bool) -> bool {
    size >= RESUME_MIN && !sparse
}

/// A temporary file being written as a partial file (see the module documentation).
#[derive(Debug)]
pub struct Slot {
    dir: OwnedFd,
    key: String,
    /// The data file written (0 or 1); the other one may hold a basis.
    n: u8,
}

impl Slot {
    fn data(&self, n: u8) -> String {
        format!("{}.{n}", self.key)
    }
    fn id(&self) -> String {
        format!("{}.id", self.key)
    }
}

/// What a destination knows of partial files.
#[derive(Debug)]
pub struct State {
    /// Staged files that are also a kept partial file (until committed or discarded).
    parked: std::sync::Mutex<std::collections::HashSet<Staged>>,
    /// When the destination was opened, less a second (file times are coarse): partial
    /// files written since may be another run's, in progress.
    since: std::time::SystemTime,
}

impl Default for State {
    fn default() -> State {
        let now = std::time::SystemTime::now();
        State {
            parked: Default::default(),
            since: now
                .checked_sub(std::time::Duration::from_secs(1))
                .unwrap_or(now),
        }
    }
}

/// What a partial file began with.
pub enum Resumed {
    /// Nothing kept: the whole file is written.
    Fresh,
    /// The kept data file is written on; it holds this many bytes.
    InPlace(u64),
    /// The kept data file, read-only, and its length: a basis for the new one.
    Basis(Tracked, u64),
}

/// The filesystem and mount a directory is on.
fn mount_of(fd: BorrowedFd<'_>) -> Option<(u32, u32, u64)> {
    let flags = rfs::StatxFlags::BASIC_STATS | rfs::StatxFlags::MNT_ID;
    let st = rfs::statx(fd, "", AtFlags::EMPTY_PATH, flags).ok()?;
    let mnt = match st.stx_mask & rfs::StatxFlags::MNT_ID.bits() {
        0 => 0,
        _ => st.stx_mnt_id,
    };
    Some((st.stx_dev_major, st.stx_dev_minor, mnt))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unlink(dir: BorrowedFd<'_>, name: &str) {
    let _ = rfs::unlinkat(dir, name, AtFlags::empty());
}

fn no_space_or(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> PutError {
    move |e| PutError::dest(op)(e.into())
}

impl LocalDest {
    /// The partial directory (created when `create`); `None` when it is absent.
    fn partial_dir(&self, create: bool) -> std::io::Result<Option<OwnedFd>> {
        if create {
            for rel in [SIDECAR.to_vec(), [SIDECAR, PARTIAL_DIR].join(&b'/')] {
                self.throttle.op();
                match rfs::mkdirat(&self.root, rel.as_slice(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match self.dir(&[SIDECAR, PARTIAL_DIR].join(&b'/')) {
            Ok(d) => Ok(Some(d)),
            Err(e) if fsutil::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The record of `key` if it names `rel` and `id`.
    fn record_matches(&self, dir: BorrowedFd<'_>, key: &str, rel: &[u8], id: Ident) -> bool {
        use std::io::Read;
        let Ok((fd, st)) = fsutil::open_regular(dir, format!("{key}.id").as_bytes()) else {
            return false;
        };
        if st.st_size as u64 > MAX_ID as u64 {
            return false;
        }
        self.throttle.op();
        let mut buf = Vec::new();
        if File::from(fd)
            .take(MAX_ID as u64)
            .read_to_end(&mut buf)
            .is_err()
        {
            return false;
        }
        parse(&buf).is_some_and(|(path, kept)| path == rel && kept == id)
    }

    /// The larger kept data file of `key` (slot, length) no larger than `size`; every
    /// other entry of the key is removed.
    fn kept_slot(&self, dir: BorrowedFd<'_>, key: &str, size: u64) -> Option<(u8, u64)> {
        let len = |n: u8| {
            let st = fsutil::stat_at(dir, format!("{key}.{n}").as_bytes()).ok()?;
            // A second name may be a final file's (a run killed between its commit
            // and the removal of its partial file): never written through, never used.
            let ok = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_nlink == 1
                && st.st_size as u64 <= size
                && st.st_size > 0;
            Some((n, st.st_size as u64)).filter(|_| ok)
        };
        let best = match (len(0), len(1)) {
            (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
            (a, b) => a.or(b),
        };
        for n in [0u8, 1] {
            if best.is_none_or(|(k, _)| k != n) {
                self.throttle.op();
                unlink(dir, &format!("{key}.{n}"));
            }
        }
        best
    }

    /// Begins `rel`'s temporary file as a partial file of the source `id`: with what a
    /// cut transfer of the same source left, written on (`in_place`) or as a basis.
    /// `None` when partial files cannot be kept for it (its directory is on another
    /// filesystem than the replica's root, or the replica's own directory cannot be
    /// made); the caller writes an ordinary temporary file.
    pub fn begin_partial(
        &self,
        rel: &[u8],
        id: Ident,
        in_place: bool,
    ) -> Result<Option<(TempFile, Resumed)>, PutError> {
        match self.try_partial(rel, id, in_place) {
            Err(PutError::NoSpace) => Err(PutError::NoSpace),
            Err(_) => Ok(None),
            r => r,
        }
    }

    fn try_partial(
        &self,
        rel: &[u8],
        id: Ident,
        in_place: bool,
    ) -> Result<Option<(TempFile, Resumed)>, PutError> {
        let (parent, name) = split(rel).map_err(PutError::dest("path"))?;
        let target = self.dir(parent).map_err(PutError::dest("open directory"))?;
        let Ok(Some(dir)) = self.partial_dir(true) else {
            return Ok(None);
        };
        // A complete partial file gets a name beside its target by link(2), which does
        // not cross filesystems or mounts (a bind mount of the same one included).
        let mount = mount_of(dir.as_fd());
        if mount.is_none() || mount != mount_of(target.as_fd()) {
            return Ok(None);
        }
        let key = key(rel);
        let id_name = format!("{key}.id");
        let kept = match self.record_matches(dir.as_fd(), &key, rel, id) {
            true => self.kept_slot(dir.as_fd(), &key, id.size),
            false => {
                // Stale, foreign or unreadable: its data goes with it.
                self.kept_slot(dir.as_fd(), &key, 0);
                self.throttle.op();
                unlink(dir.as_fd(), &id_name);
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                let fd = rfs::openat(
                    &dir,
                    id_name.as_str(),
                    flags | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(no_space_or("create partial record"))?;
                std::os::unix::fs::FileExt::write_all_at(&File::from(fd), &encode(rel, id), 0)
                    .map_err(PutError::dest("write partial record"))?;
                None
            }
        };
        let open = |n: u8, flags: OFlags| {
            self.throttle.op();
            let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
            rfs::openat(
                &dir,
                format!("{key}.{n}").as_str(),
                flags,
                Mode::from_raw_mode(0o600),
            )
            .map_err(no_space_or("open partial file"))
        };
        let (n, resumed, fd) = match kept {
            Some((n, len)) if in_place => {
                let fd = open(n, OFlags::RDWR)?;
                let st = rfs::fstat(&fd).map_err(no_space_or("stat partial file"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1
                {
                    return Ok(None);
                }
                (n, Resumed::InPlace(len.min(st.st_size as u64)), Some(fd))
            }
            Some((n, _)) => {
                let (fd, st) = fsutil::open_regular(dir.as_fd(), format!("{key}.{n}").as_bytes())
                    .map_err(PutError::dest("open partial file"))?;
                let len = st.st_size as u64;
                let basis = Tracked::new(File::from(fd), len, self.keep_cache);
                (1 - n, Resumed::Basis(basis, len), None)
            }
            None => (0, Resumed::Fresh, None),
        };
        let fd = match fd {
            Some(fd) => fd,
            None => open(n, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL)?,
        };
        let slot = Slot { dir, key, n };
        Ok(Some((
            TempFile {
                file: File::from(fd),
                dir: std::sync::Arc::new(target),
                staged: Staged {
                    dir: parent.to_vec(),
                    tmp: Vec::new(),
                    name: name.to_vec(),
                },
                partial: Some(slot),
            },
            resumed,
        )))
    }

    /// Gives a complete partial file a temporary name beside its final name (a hard
    /// link: until it is committed, a cut run still finds it complete); the other data
    /// file of its key goes.
    pub(super) fn unpark(&self, t: &mut TempFile) -> Result<(), PutError> {
        let Some(slot) = t.partial.take() else {
            return Ok(());
        };
        let tmp = self.temp_name(&t.staged.name);
        self.throttle.op();
        let linked = rfs::linkat(
            &slot.dir,
            slot.data(slot.n).as_str(),
            &t.dir,
            tmp.as_slice(),
            AtFlags::empty(),
        );
        let moved = linked.is_err();
        if moved {
            // No second name (EMLINK, a filesystem without hard links): moved instead,
            // never over whatever may stand at the temporary name.
            let from = slot.data(slot.n);
            let flags = rfs::RenameFlags::NOREPLACE;
            if let Err(e) =
                rfs::renameat_with(&slot.dir, from.as_str(), &t.dir, tmp.as_slice(), flags)
            {
                t.partial = Some(slot);
                return Err(PutError::dest("move partial file")(e.into()));
            }
        }
        t.staged.tmp = tmp;
        self.throttle.op();
        unlink(slot.dir.as_fd(), &slot.data(1 - slot.n));
        if moved {
            unlink(slot.dir.as_fd(), &slot.id());
        } else {
            lock(&self.partials.parked).insert(t.staged.clone());
        }
        Ok(())
    }

    /// A staged file was renamed into place: the partial file it was goes, with its
    /// record (the final file is never written through that name).
    pub(super) fn landed(&self, s: &Staged) {
        if !lock(&self.partials.parked).remove(s) {
            return;
        }
        let Ok(Some(dir)) = self.partial_dir(false) else {
            return;
        };
        let rel = match s.dir.is_empty() {
            true => s.name.clone(),
            false => [&s.dir[..], b"/", &s.name].concat(),
        };
        let k = key(&rel);
        self.throttle.op();
        for name in [format!("{k}.0"), format!("{k}.1"), format!("{k}.id")] {
            unlink(dir.as_fd(), &name);
        }
    }

    /// A staged file was discarded: the partial file it was stays for the next run.
    pub(super) fn unparked(&self, s: &Staged) {
        lock(&self.partials.parked).remove(s);
    }

    /// Removes a partial file with its record (its source changed, or it failed).
    pub(super) fn drop_partial(&self, slot: &Slot) {
        self.throttle.op();
        for name in [slot.data(0), slot.data(1), slot.id()] {
            unlink(slot.dir.as_fd(), &name);
        }
    }

    /// Keeps what a cut transfer wrote for the next run: a partial file stays (with
    /// its record) where an ordinary temporary file is removed. Of two data files (one
    /// a basis) the longer stays.
    pub fn keep_temp(&self, t: TempFile) {
        let Some(slot) = &t.partial else {
            return self.abort_temp(t);
        };
        let len = |n: u8| {
            fsutil::stat_at(slot.dir.as_fd(), slot.data(n).as_bytes()).map_or(0, |st| st.st_size)
        };
        let worse = match len(slot.n) >= len(1 - slot.n) {
            true => 1 - slot.n,
            false => slot.n,
        };
        self.throttle.op();
        unlink(slot.dir.as_fd(), &slot.data(worse));
    }

    /// Removes what a run killed while writing the source record left in the replica's
    /// own directory, where no listing looks (invariant 4). Done before each write of
    /// the record: a run killed mid-write left no record (or the old one), so the next
    /// run writes it again and cleans up first.
    pub(super) fn remove_sidecar_temps(&self, dir: BorrowedFd<'_>) -> std::io::Result<()> {
        for name in fsutil::read_dir_names(dir)? {
            if crate::temp::is_temp_name(&name) {
                self.throttle.op();
                let _ = rfs::unlinkat(dir, name.as_slice(), AtFlags::empty());
            }
        }
        Ok(())
    }

    /// Removes the temporary file of a transfer that failed, unless the run was
    /// interrupted: then, like a cut transfer's, its partial file stays.
    pub fn fail_temp(&self, t: TempFile) {
        match self.cancelled() {
            true => self.keep_temp(t),
            false => self.abort_temp(t),
        }
    }

    /// Removes every partial file a cut run left (the run completed): those of a key
    /// none of whose entries was written since this run began (the others may be a
    /// concurrent run's, in progress). Whatever stands at the partial directory's name
    /// that is not a directory (a symlink, say) is removed, not followed.
    pub fn clear_partials(&self) -> std::io::Result<()> {
        let Ok(sidecar) = self.dir(SIDECAR) else {
            return Ok(());
        };
        let dir = match fsutil::open_dir(sidecar.as_fd(), PARTIAL_DIR) {
            Ok(dir) => dir,
            Err(e) if fsutil::is_not_found(&e) => return Ok(()),
            Err(_) => {
                self.throttle.op();
                let _ = rfs::unlinkat(&sidecar, PARTIAL_DIR, AtFlags::empty());
                return Ok(());
            }
        };
        // The directory's read and each stat are disk work like any other (invariant 6).
        self.throttle.op();
        let names = fsutil::read_dir_names(dir.as_fd())?;
        let key_of = |n: &[u8]| n.split(|&b| b == b'.').next().unwrap_or_default().to_vec();
        let since = self.partials.since;
        let recent: std::collections::HashSet<Vec<u8>> = names
            .iter()
            .filter(|n| {
                self.throttle.op();
                fsutil::stat_at(dir.as_fd(), n).is_ok_and(|st| {
                    let t = std::time::UNIX_EPOCH
                        + std::time::Duration::new(
                            st.st_mtime.max(0) as u64,
                            st.st_mtime_nsec as u32,
                        );
                    t >= since
                })
            })
            .map(|n| key_of(n))
            .collect();
        for name in names.iter().filter(|n| !recent.contains(&key_of(n))) {
            let _ = self.remove_tree_at(dir.as_fd(), name);
        }
        drop(dir);
        self.throttle.op();
        let _ = rfs::unlinkat(&sidecar, PARTIAL_DIR, AtFlags::REMOVEDIR);
        Ok(())
    }

    /// Writes the whole of `src` into a partial file, going on after the part a cut
    /// run kept when it is the source's; `None` when no partial file can be kept (the
    /// caller copies as usual).
    pub(super) fn stage_resumable(
        &self,
        rel: &[u8],
        src: &SourceFile,
        meta: &SetMeta,
        xattrs: bool,
    ) -> Option<Result<(Staged, DataStats), PutError>> {
        let (t, resumed) = match self.begin_partial(rel, Ident::of(src), true) {
            Ok(Some(x)) => x,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let have = match resumed {
            Resumed::InPlace(n) => n,
            _ => 0,
        };
        let result = (|| {
            // A clone moves no data: nothing to resume (see `copy_whole`).
            if have == 0 && src.dev == self.dev && self.reflink_ok.load(Ordering::Relaxed) {
                match rfs::ioctl_ficlone(&t.file, &src.file) {
                    Ok(()) => {
                        self.throttle.op();
                        let stats = DataStats {
                            cloned: src.size,
                            ..DataStats::default()
                        };
                        return Ok((stats, self.source_xattrs(src, xattrs)?));
                    }
                    Err(_) => self.reflink_ok.store(false, Ordering::Relaxed),
                }
            }
            let same = self.same_prefix(src, &t.file, have)?;
            rfs::ftruncate(&t.file, same).map_err(no_space_or("truncate"))?;
            self.copy_range(src, &t.file, same, src.size)?;
            let stats = DataStats {
                literal: src.size - same,
                matched: same,
                cloned: 0,
            };
            Ok((stats, self.source_xattrs(src, xattrs)?))
        })();
        Some(match result {
            Ok((stats, x)) => self.finish_temp(t, meta, &x).map(|s| (s, stats)),
            Err(e) => {
                match e {
                    PutError::Interrupted => self.keep_temp(t),
                    _ => self.abort_temp(t),
                }
                Err(e)
            }
        })
    }

    /// The source's extended attributes (when asked for), once its data is read and
    /// found unchanged.
    fn source_xattrs(&self, src: &SourceFile, xattrs: bool) -> Result<fsutil::Xattrs, PutError> {
        if !src.unchanged().map_err(PutError::Source)? {
            return Err(PutError::SourceChanged);
        }
        match xattrs {
            true => fsutil::xattrs_of_fd(src.file.as_fd()).map_err(PutError::Source),
            false => Ok(Vec::new()),
        }
    }

    /// How much of the first `have` bytes of `out` are the source's, in whole chunks
    /// (up to the first that differs).
    fn same_prefix(&self, src: &SourceFile, out: &File, have: u64) -> Result<u64, PutError> {
        use std::os::unix::fs::FileExt;
        const CHUNK: usize = 1 << 20;
        let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut off = 0u64;
        while off < have {
            if self.cancelled() {
                return Err(PutError::Interrupted);
            }
            let want = ((have - off) as usize).min(CHUNK);
            self.throttle.bytes(2 * want as u64);
            let read = |f: &File, buf: &mut [u8]| self.throttle.io(|| f.read_exact_at(buf, off));
            read(&src.file, &mut a[..want]).map_err(PutError::Source)?;
            if read(out, &mut b[..want]).is_err() || a[..want] != b[..want] {
                break;
            }
            off += want as u64;
        }
        Ok(off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn names(dir: &std::path::Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap())
                    .map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        (n, e.metadata().unwrap().len())
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn a_cut_keeps_the_longer_data_file_and_another_source_takes_it_away() {
        let t = tempfile::tempdir().unwrap();
        let d = LocalDest::for_tests(t.path());
        let dir = t.path().join(".fsync-repl/partial");
        let k = key(b"f");
        let id = Ident {
            size: 100 << 20,
            mtime: 5,
            mtime_nsec: 0,
        };
        let begin = |id, in_place| d.begin_partial(b"f", id, in_place).unwrap().unwrap();

        let (f, r) = begin(id, false);
        assert!(matches!(r, Resumed::Fresh));
        f.file.write_all_at(&[1; 4096], 0).unwrap();
        d.keep_temp(f);
        let kept = |n: u64, slot: u8| vec![(format!("{k}.{slot}"), n), (format!("{k}.id"), 38)];
        assert_eq!(names(&dir), kept(4096, 0));

        // Cut again before the new file is longer than its basis: the basis stays.
        let (f, r) = begin(id, false);
        assert!(matches!(r, Resumed::Basis(_, 4096)));
        f.file.write_all_at(&[1; 100], 0).unwrap();
        d.keep_temp(f);
        assert_eq!(names(&dir), kept(4096, 0));

        // Past it: the new one stays.
        let (f, _) = begin(id, false);
        f.file.write_all_at(&[1; 8192], 0).unwrap();
        d.keep_temp(f);
        assert_eq!(names(&dir), kept(8192, 1));

        // Written on in place.
        let (f, r) = begin(id, true);
        assert!(matches!(r, Resumed::InPlace(8192)));
        d.keep_temp(f);
        assert_eq!(names(&dir), kept(8192, 1));

        // Another source: the kept file goes, the new one starts empty; aborted, nothing
        // of it is left.
        let (f, r) = begin(Ident { mtime: 6, ..id }, true);
        assert!(matches!(r, Resumed::Fresh));
        d.abort_temp(f);
        assert_eq!(names(&dir), vec![]);
        d.clear_partials().unwrap();
        assert!(!dir.exists());
    }
}

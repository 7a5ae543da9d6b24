//! Confined filesystem access through directory file descriptors.
//!
//! Every path the engine touches is relative to a root descriptor and is resolved
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so a
//! symlink planted anywhere on the way can never lead outside the root (invariants 1
//! and 3). Paths longer than the kernel's PATH_MAX are resolved in chunks, one
//! descriptor per chunk, which is how names nested deeper than 4096 bytes round-trip.
//! Operations on the last component always go through the parent's descriptor and a
//! validated single name.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};

use crate::tree::{self, Extra, Meta};

/// Longest path handed to one `openat2` call; longer paths are walked in chunks.
const CHUNK: usize = 3800;

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Checks a single path component: non-empty, no `/`, not `.` or `..`, no NUL.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Checks a relative path: every component valid, no leading or trailing slash.
pub fn valid_rel_path(path: &[u8]) -> bool {
    !path.is_empty() && path.split(|&b| b == b'/').all(valid_name)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc_einval())
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// Opens `rel` beneath `root` with `flags`, never following a symlink on the way.
/// `rel` may be empty (the root itself) and may exceed PATH_MAX.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &[u8],
    flags: OFlags,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    if rel.is_empty() {
        return Ok(rfs::openat2(
            root,
            c".",
            flags | OFlags::DIRECTORY,
            mode,
            RESOLVE,
        )?);
    }
    if rel.len() <= CHUNK {
        return Ok(rfs::openat2(root, rel, flags, mode, RESOLVE)?);
    }
    // Walk directory chunks, then open the remainder.
    let mut dir: Option<OwnedFd> = None;
    let mut rest = rel;
    while rest.len() > CHUNK {
        let cut = rest[..CHUNK]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(einval)?;
        let (head, tail) = (&rest[..cut], &rest[cut + 1..]);
        let base = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
        dir = Some(rfs::openat2(
            base,
            head,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            RESOLVE,
        )?);
        rest = tail;
    }
    let base = dir.as_ref().map(|d| d.as_fd()).unwrap_or(root);
    Ok(rfs::openat2(base, rest, flags, mode, RESOLVE)?)
}

/// The last directory a worker opened beneath one root, kept for the next entry in
/// the same directory: files in path order come in runs that share their directory,
/// and each open walks the path again and costs a descriptor to close. A cache lives
/// for one batch of files on one worker, a phase in which the run moves no directory.
#[derive(Debug, Default)]
pub struct DirCache {
    last: Option<(Vec<u8>, std::sync::Arc<OwnedFd>)>,
}

impl DirCache {
    /// The directory `rel` beneath `root` (see [`open_dir`]), opened again only when it
    /// is not the one opened last.
    pub fn open(
        &mut self,
        root: BorrowedFd<'_>,
        rel: &[u8],
    ) -> io::Result<std::sync::Arc<OwnedFd>> {
        if let Some((path, fd)) = &self.last {
            if path.as_slice() == rel {
                return Ok(fd.clone());
            }
        }
        let fd = std::sync::Arc::new(open_dir(root, rel)?);
        self.last = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }
}

/// Opens the directory `rel` beneath `root` for reading (usable for `*at` calls and fsync).
pub fn open_dir(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    open_beneath(root, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
}

/// The error for an entry that is not the regular file a request expects.
fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Opens `rel` beneath `root` with `O_PATH`, which opens no device and no FIFO (nothing
/// of the file itself is opened), and checks on that descriptor that it is a regular
/// file. Returns the descriptor and its `fstat`.
pub fn path_of_regular(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, rfs::Stat)> {
    let fd = open_beneath(root, rel, OFlags::PATH, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        return Err(not_regular());
    }
    Ok((fd, st))
}

/// The `/proc` name of a descriptor: opening it opens that very inode.
fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))
}

/// Opens the regular file at `rel` beneath `root` for reading, and never anything else:
/// a FIFO or a device named by a peer is not opened even for a moment (opening one can
/// block, or have side effects: a hardware watchdog arms on open). The entry is checked
/// through an `O_PATH` descriptor ([`path_of_regular`]) and then reopened through that
/// descriptor, so the inode read is the inode checked; without `/proc`, it is opened
/// by name and must be the same inode.
pub fn open_regular(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, rfs::Stat)> {
    let (path, checked) = path_of_regular(root, rel)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rfs::open(proc_fd(path.as_fd()), flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => open_beneath(root, rel, flags, Mode::empty())?,
        Err(e) => return Err(e.into()),
    };
    let st = rfs::fstat(&fd)?;
    if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino)
        || rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile
    {
        return Err(io::Error::other("replaced while it was opened"));
    }
    Ok((fd, st))
}

/// Sets the permission bits of the regular file at `rel` beneath `root` without opening
/// it (see [`open_regular`]), whatever its own permissions.
pub fn chmod_regular(root: BorrowedFd<'_>, rel: &[u8], mode: Mode) -> io::Result<()> {
    let (path, _) = path_of_regular(root, rel)?;
    match rfs::chmod(proc_fd(path.as_fd()), mode) {
        Err(rustix::io::Errno::NOENT) => {
            // No /proc: by name, through the parent, never following a symlink; the
            // entry was a regular file an instant ago and a symlink is refused here.
            let (dir, name) = (tree::parent(rel), tree::file_name(rel));
            let dir = open_dir(root, dir)?;
            let st = stat_at(dir.as_fd(), name)?;
            if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
                return Err(not_regular());
            }
            Ok(rfs::chmodat(&dir, name, mode, AtFlags::empty())?)
        }
        r => Ok(r?),
    }
}

/// Opens a regular file beneath `root` read-only, with `O_NOATIME` where permitted.
/// Refuses anything that is not a regular file; `O_NONBLOCK` keeps a FIFO swapped in
/// after the scan from blocking the open. Returns the descriptor and its `fstat`.
pub fn open_source_file(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, rfs::Stat)> {
    let base = OFlags::RDONLY | OFlags::NONBLOCK;
    let fd = match open_beneath(root, rel, base | OFlags::NOATIME, Mode::empty()) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            open_beneath(root, rel, base, Mode::empty())?
        }
        r => r?,
    };
    let st = rfs::fstat(&fd)?;
    if st.st_mode & 0o170000 != 0o100000 {
        return Err(io::Error::other("not a regular file any more"));
    }
    Ok((fd, st))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<rfs::Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Reads a symlink target verbatim.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Stats `name` in `dir` and builds its [`Meta`], reading a symlink's target.
/// Returns `None` for kinds that cannot be represented.
pub fn meta_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Meta>> {
    let st = stat_at(dir, name)?;
    let Some(mut m) = Meta::from_stat(&st) else {
        return Ok(None);
    };
    match m.kind {
        tree::Kind::Symlink => m.extra = Some(Extra::Target(readlink_at(dir, name)?)),
        tree::Kind::CharDev | tree::Kind::BlockDev => m.extra = Some(Extra::Rdev(st.st_rdev)),
        _ => {}
    }
    Ok(Some(m))
}

/// Extended attributes as sorted (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn xattr_unsupported(e: rustix::io::Errno) -> bool {
    matches!(e, rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::PERM)
}

/// Reads a set of extended attributes with `list` (names into a buffer) and `get` (one
/// value into a buffer); filesystems without xattrs give an empty set.
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match list(&mut names) {
        Ok(n) => n,
        Err(e) if xattr_unsupported(e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        match get(name, &mut val) {
            Ok(len) => {
                val.truncate(len);
                out.push((name.to_vec(), val));
            }
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// The extended attributes of an open file or directory.
pub fn xattrs_of_fd(fd: BorrowedFd<'_>) -> io::Result<Xattrs> {
    read_xattrs(
        |buf| rfs::flistxattr(fd, buf),
        |name, buf| rfs::fgetxattr(fd, name, buf),
    )
}

/// The extended attributes of `name` in `dir`, without following a symlink and without
/// opening the entry (reached through the directory's `/proc/self/fd` link).
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Xattrs> {
    use std::os::fd::AsRawFd;
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = path.as_slice();
    read_xattrs(
        |buf| rfs::llistxattr(path, buf),
        |n, buf| rfs::lgetxattr(path, n, buf),
    )
}

/// A short digest of a set of extended attributes (0: none).
pub fn xattrs_digest(x: &Xattrs) -> u64 {
    if x.is_empty() {
        return 0;
    }
    let mut h = blake3::Hasher::new();
    for (n, v) in x {
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8])) | 1
}

/// Lists the names in an open directory (without `.` and `..`).
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // A duplicate descriptor for the stream: cheaper than reopening ".", and the
    // original stays usable for `*at` calls, which do not depend on the offset.
    let dup = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
    let mut d = rfs::Dir::new(dup)?;
    // The offset is shared with `dir`: start from the beginning whatever was read before.
    d.rewind();
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Pipe buffer asked for on the protocol's pipes: with the default 64 KiB a side that is
/// busy writing a file stalls the ssh process feeding it after a few packets.
pub const PIPE_BUFFER: usize = 1 << 20;

/// Best effort: grows the kernel buffer of `fd` to [`PIPE_BUFFER`] if it is a pipe
/// (not a pipe, or above the system's limit: left as it is).
pub fn grow_pipe(fd: BorrowedFd<'_>) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BUFFER);
}

/// Starts writeback of a file's dirty pages now, without waiting for it. The writes are
/// issued by the calling thread and so carry its I/O priority (idle by default), and
/// they leave at the pace the file was written instead of in one burst at the next
/// `syncfs`, which would be issued at normal priority by the kernel's flusher.
pub fn start_writeback(fd: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor that stays open for its duration; no
    // memory is passed. Failure only means the writeback starts later.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Converts a rustix errno into io::Error (helper for `?` in io contexts).
pub fn io_err(e: rustix::io::Errno) -> io::Error {
    e.into()
}

/// True when an error means "no such file" (the entry vanished).
pub fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Free space of the filesystem that `path` is on, or would be made on: that of its
/// nearest existing ancestor.
pub fn space_near(path: &std::path::Path) -> io::Result<crate::space::Space> {
    let mut p = path;
    loop {
        match rfs::statvfs(p) {
            Ok(s) => return Ok(crate::space::Space::of(&s)),
            Err(rustix::io::Errno::NOENT) => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => {
                    return rfs::statvfs(".")
                        .map(|s| crate::space::Space::of(&s))
                        .map_err(Into::into)
                }
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// True when an error is a fault of the whole destination rather than of one file:
/// full (bytes or inodes), over quota, read-only, or failing hardware. Every other
/// error concerns the one entry it was met on.
pub fn is_dest_wide(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.raw_os_error(),
        Some(c) if [Errno::NOSPC, Errno::DQUOT, Errno::ROFS, Errno::IO]
            .iter()
            .any(|x| x.raw_os_error() == c)
    )
}

/// True when an error means the filesystem is full.
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == rustix::io::Errno::NOSPC.raw_os_error() || c == rustix::io::Errno::DQUOT.raw_os_error()
    )
}

/// Replaces the file at `path` with `text_of(what it held)`, atomically: a temporary
/// file beside it, made durable, then renamed, so a reader (a metrics collector) never
/// sees half a file. Writers sharing the file take turns (an flock on a lock file beside
/// it), so each merges into what the last one wrote.
pub fn replace_shared(
    path: &std::path::Path,
    text_of: impl FnOnce(&str) -> String,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".{name}.lock")))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let text = text_of(&previous);
    let temp = dir.join(format!(".{name}.fsync-tmp.{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&temp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_are_validated() {
        assert!(valid_name(b"a.txt"));
        assert!(!valid_name(b""));
        assert!(!valid_name(b"."));
        assert!(!valid_name(b".."));
        assert!(!valid_name(b"a/b"));
        assert!(!valid_name(b"a\0b"));
        assert!(valid_rel_path(b"a/b/c"));
        assert!(!valid_rel_path(b"/a"));
        assert!(!valid_rel_path(b"a/../b"));
        assert!(!valid_rel_path(b"a//b"));
    }

    #[test]
    fn symlinks_are_never_followed_beneath_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        symlink(outside.path(), t.path().join("sub")).unwrap();
        symlink("/etc/passwd", t.path().join("pw")).unwrap();
        let root = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(open_dir(root.as_fd(), b"sub").is_err());
        assert!(open_source_file(root.as_fd(), b"sub/secret").is_err());
        assert!(open_source_file(root.as_fd(), b"pw").is_err());
        assert!(open_dir(root.as_fd(), b"../").is_err());
    }

    #[test]
    fn paths_longer_than_path_max_resolve_in_chunks() {
        let t = tempfile::tempdir().unwrap();
        let root = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let name = vec![b'd'; 250];
        let mut rel = Vec::new();
        let mut dir = root.try_clone().unwrap();
        for _ in 0..20 {
            rfs::mkdirat(&dir, name.as_slice(), Mode::from_raw_mode(0o755)).unwrap();
            dir = rfs::openat(
                &dir,
                name.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
            rel = tree::join(&rel, &name);
        }
        assert!(rel.len() > 4096);
        let d = open_dir(root.as_fd(), &rel).unwrap();
        let a = rfs::fstat(&d).unwrap();
        let b = rfs::fstat(&dir).unwrap();
        assert_eq!(a.st_ino, b.st_ino);
    }

    #[test]
    fn a_dir_cache_opens_a_directory_again_only_when_it_changes() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::Arc;
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::create_dir(t.path().join("c")).unwrap();
        symlink("a", t.path().join("l")).unwrap();
        let root = std::fs::File::open(t.path()).unwrap();
        let mut dirs = DirCache::default();
        let ab = dirs.open(root.as_fd(), b"a/b").unwrap();
        let again = dirs.open(root.as_fd(), b"a/b").unwrap();
        assert!(
            Arc::ptr_eq(&ab, &again),
            "the same directory was opened twice"
        );
        let c = dirs.open(root.as_fd(), b"c").unwrap();
        let ino = std::fs::metadata(t.path().join("c")).unwrap().ino();
        assert_eq!(rfs::fstat(&*c).unwrap().st_ino, ino);
        assert!(
            dirs.open(root.as_fd(), b"l/b").is_err(),
            "a symlink was followed"
        );
        // The last directory is the one kept: `a/b` is opened anew.
        let ab2 = dirs.open(root.as_fd(), b"a/b").unwrap();
        assert!(!Arc::ptr_eq(&ab, &ab2));
        assert_eq!(
            rfs::fstat(&*ab2).unwrap().st_ino,
            rfs::fstat(&*ab).unwrap().st_ino
        );
    }
}

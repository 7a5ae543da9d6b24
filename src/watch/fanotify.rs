//! Whole-filesystem change notification with fanotify, converted into [`Event`]s.
//!
//! One `FAN_MARK_FILESYSTEM` mark per filesystem under SRC replaces inotify's watch per
//! directory: no watch limit, no start-up walk, and a directory is covered the moment it
//! exists. The group reports each event with the file handle of the directory it
//! happened in and the entry's name (`FAN_REPORT_DFID_NAME`). The thread resolves the
//! handle (`open_by_handle_at` against a descriptor of that filesystem's mount under
//! SRC, then the descriptor's path in `/proc/self/fd`), keeps a handle → path cache
//! (a directory moved out of a place in SRC drops the paths beneath it; one moved into
//! SRC drops every "outside" answer, since it may come from there),
//! and drops every event outside SRC or excluded by a command-line pattern (the
//! batch's scan applies `.fsyncignore` rules as always). What is left goes through the
//! same conversion ([`convert`]) and the same bounded channel as inotify's events: a
//! full channel adds the directories to the shared `lost` set, a kernel queue overflow
//! (`FAN_Q_OVERFLOW`) marks the whole tree. Nothing is dropped silently.
//!
//! It needs CAP_SYS_ADMIN and a filesystem that can encode file handles with a
//! filesystem id (ext4, xfs, btrfs, tmpfs since Linux 6.6); [`Watcher::start`] fails
//! otherwise and the caller falls back to inotify. Events caused by this process itself
//! (writing DEST, the state file) are skipped before any lookup: the source is never
//! written by it. A filesystem mounted under SRC after the start is only seen by the
//! periodic reconcile.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::event::{convert, Event};
use super::inotify::{Log, Shared, WatchConfig};
use crate::scan::Filter;

/// The events the mark asks for.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;

/// Handles resolved at most before the cache starts afresh.
const CACHE_MAX: usize = 65_536;

/// Size of `struct fanotify_event_metadata`.
const META_LEN: usize = 24;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A directory's identity as the kernel reports it: filesystem id, handle type and
/// handle bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fid {
    pub fsid: [u8; 8],
    pub handle_type: i32,
    pub handle: Vec<u8>,
}

/// One event as read from the group's descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub mask: u64,
    pub pid: i32,
    /// The directory the event happened in (or the object itself, for a self event).
    pub dir: Option<Fid>,
    /// The entry's name; `None` (or `.`) when the event concerns `dir` itself.
    pub name: Option<Vec<u8>>,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// Parses what one read(2) of a fanotify group returned (a pure function, so it is
/// tested on crafted buffers). A malformed record ends the parse.
pub fn parse(buf: &[u8]) -> Vec<RawEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while let (Some(len), Some(meta_len)) = (u32_at(buf, off), u16_at(buf, off + 6)) {
        let (len, meta_len) = (len as usize, usize::from(meta_len));
        if len < META_LEN || meta_len < META_LEN || meta_len > len || off + len > buf.len() {
            break;
        }
        let rec = &buf[off..off + len];
        let (Some(mask), Some(pid)) = (u64_at(rec, 8), u32_at(rec, 20)) else {
            break;
        };
        let mut ev = RawEvent {
            mask,
            pid: pid as i32,
            dir: None,
            name: None,
        };
        // Information records follow the metadata.
        let mut i = meta_len;
        while let (Some(&kind), Some(ilen)) = (rec.get(i), u16_at(rec, i + 2)) {
            let ilen = usize::from(ilen);
            if ilen < 4 || i + ilen > rec.len() {
                break;
            }
            let info = &rec[i..i + ilen];
            let with_name = kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME;
            if with_name
                || kind == libc::FAN_EVENT_INFO_TYPE_DFID
                || kind == libc::FAN_EVENT_INFO_TYPE_FID
            {
                if let (Some(fsid), Some(hbytes), Some(htype)) =
                    (info.get(4..12), u32_at(info, 12), u32_at(info, 16))
                {
                    let h_end = 20 + hbytes as usize;
                    if let Some(handle) = info.get(20..h_end) {
                        ev.dir = Some(Fid {
                            fsid: fsid.try_into().unwrap_or_default(),
                            handle_type: htype as i32,
                            handle: handle.to_vec(),
                        });
                        if with_name {
                            let rest = info.get(h_end..).unwrap_or_default();
                            let n = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                            ev.name = Some(rest[..n].to_vec());
                        }
                    }
                }
            }
            i += ilen;
        }
        out.push(ev);
        off += len;
    }
    out
}

/// The part of a fanotify mask [`convert`] understands: fanotify's event bits are
/// inotify's (FAN_ONDIR is IN_ISDIR), by design of the kernel's interface.
pub fn as_inotify_mask(mask: u64) -> u32 {
    (mask & (MASK | libc::FAN_Q_OVERFLOW)) as u32
}

/// The relative path of `abs` beneath `root`, `None` when outside it.
pub fn beneath<'a>(root: &[u8], abs: &'a [u8]) -> Option<&'a [u8]> {
    if root == b"/" {
        return abs.strip_prefix(b"/");
    }
    match abs.strip_prefix(root)? {
        [] => Some(&[]),
        [b'/', rest @ ..] => Some(rest),
        _ => None,
    }
}

/// A descriptor of one marked filesystem, to resolve its handles against.
struct Fs {
    mount: OwnedFd,
}

fn fsid_of(fd: &OwnedFd) -> std::io::Result<[u8; 8]> {
    let st = rustix::fs::fstatfs(fd)?;
    // SAFETY: fsid_t is two plain ints (8 bytes) with no padding; reading its bytes is
    // reading initialized memory.
    let bytes: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok(bytes)
}

/// Opens a directory for reading (open_by_handle_at refuses O_PATH descriptors as its
/// mount descriptor), not following a final symlink.
fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Mount points strictly beneath `root` (from /proc/self/mountinfo).
fn mounts_beneath(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let rootb = root.as_os_str().as_bytes();
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mount)
        .filter(|m| beneath(rootb, m).is_some_and(|r| !r.is_empty()))
        .map(|m| PathBuf::from(OsStr::from_bytes(&m)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 4 <= s.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The running fanotify watcher (the inotify backend's thread handle); dropping it
/// stops the thread.
pub type Watcher = super::inotify::Watcher;

impl Watcher {
    /// Creates the group and marks every filesystem under the root before returning (so
    /// a scan started afterwards misses nothing), then starts the thread that reports
    /// changes on `tx`. An error says why fanotify cannot serve this tree (no
    /// CAP_SYS_ADMIN, a filesystem without file handles); the caller may use inotify.
    pub fn start_fanotify(
        cfg: WatchConfig,
        tx: SyncSender<Event>,
        log: Log,
    ) -> std::io::Result<Watcher> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: fanotify_init takes two flag words and returns a new descriptor or -1.
        let raw =
            unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => "fanotify needs CAP_SYS_ADMIN (run as root)".to_string(),
                Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    "this kernel has no fanotify with FAN_REPORT_DFID_NAME (Linux 5.9 or later)"
                        .to_string()
                }
                _ => format!("fanotify_init: {e}"),
            };
            return Err(std::io::Error::new(e.kind(), why));
        }
        // SAFETY: `raw` is a descriptor fanotify_init just returned, owned by nothing else.
        let group = unsafe { OwnedFd::from_raw_fd(raw) };
        let root = cfg.root.clone();
        let mut points = vec![root.clone()];
        if !cfg.one_file_system {
            points.extend(mounts_beneath(&root));
        }
        let mut fs: HashMap<[u8; 8], Fs> = HashMap::new();
        for p in points {
            let mount = match open_dir(&p) {
                Ok(fd) => fd,
                // A mount point that vanished meanwhile, or that hides another.
                Err(_) if p != root => continue,
                Err(e) => return Err(e),
            };
            let fsid = fsid_of(&mount)?;
            if fs.contains_key(&fsid) {
                continue;
            }
            mark(&group, &p)?;
            fs.insert(fsid, Fs { mount });
        }
        let root_fid = fid_of(&root).ok();
        let filter = Filter::from_patterns(&cfg.excludes).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared::default());
        let me = Thread {
            group,
            fs,
            root: root.as_os_str().as_bytes().to_vec(),
            root_fid,
            cache: HashMap::new(),
            filter: (!filter.is_empty()).then_some(filter),
            pid: std::process::id() as i32,
            shared: shared.clone(),
            tx,
            log,
            warned: false,
        };
        Watcher::spawn("fsync-repl-fanotify", shared, move || me.run())
    }
}

/// Places the filesystem mark for the filesystem holding `p`.
fn mark(group: &OwnedFd, p: &Path) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
    // SAFETY: a valid descriptor and a NUL-terminated path that outlives the call.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            MASK,
            libc::AT_FDCWD,
            c.as_ptr(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::EPERM) => "a filesystem mark needs CAP_SYS_ADMIN (run as root)".into(),
            Some(libc::ENODEV) | Some(libc::EXDEV) | Some(libc::EOPNOTSUPP) => format!(
                "the filesystem of {} cannot report file handles to fanotify ({e})",
                p.display()
            ),
            _ => format!("fanotify_mark {}: {e}", p.display()),
        };
        return Err(std::io::Error::new(e.kind(), why));
    }
    Ok(())
}

/// The handle of the directory at `p`, as events report it.
fn fid_of(p: &Path) -> std::io::Result<Fid> {
    let fd = open_dir(p)?;
    let fsid = fsid_of(&fd)?;
    // 128 bytes is MAX_HANDLE_SZ; the u32 storage keeps file_handle's alignment.
    let mut buf = [0u32; 2 + 32];
    buf[0] = 128;
    let mut mount_id: libc::c_int = 0;
    let empty = c"";
    // SAFETY: `buf` is a file_handle with room for handle_bytes (128) bytes after its
    // 8-byte header; AT_EMPTY_PATH names `fd` itself.
    let r = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            empty.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = (buf[0] as usize).min(128);
    let bytes: Vec<u8> = buf[2..]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(n)
        .collect();
    Ok(Fid {
        fsid,
        handle_type: buf[1] as i32,
        handle: bytes,
    })
}

struct Thread {
    group: OwnedFd,
    fs: HashMap<[u8; 8], Fs>,
    root: Vec<u8>,
    root_fid: Option<Fid>,
    /// Handle → path relative to the root (`None`: outside it).
    cache: HashMap<Fid, Option<Vec<u8>>>,
    /// The command-line excludes (a `.fsyncignore` is applied by the batch's scan).
    filter: Option<Filter>,
    pid: i32,
    shared: Arc<Shared>,
    tx: SyncSender<Event>,
    log: Log,
    warned: bool,
}

impl Thread {
    fn run(mut self) {
        let mut buf = vec![0u8; 256 << 10];
        while !self.shared.stop.load(Ordering::Relaxed) {
            if !self.pump(&mut buf, 200) {
                return;
            }
        }
        // After a stop: what the queue held at that moment, so a clean stop hands the
        // next start every change up to it. Bounded: on a busy filesystem the queue
        // never runs dry.
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD stores one int through the valid pointer.
        if unsafe { libc::ioctl(self.group.as_raw_fd(), libc::FIONREAD, &mut queued) } < 0 {
            return;
        }
        // One read returns whole events up to the buffer's size (at least half of it
        // when more are queued).
        let reads = usize::try_from(queued).unwrap_or(0) / (buf.len() / 2) + 1;
        for _ in 0..reads {
            if !self.pump(&mut buf, 0) {
                return;
            }
        }
    }

    /// Waits up to `timeout_ms` and handles what one read returns; false once the
    /// consumer is gone.
    fn pump(&mut self, buf: &mut [u8], timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.group.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } <= 0 {
            return true;
        }
        let n = match rustix::io::read(&self.group, &mut *buf) {
            Ok(n) => n,
            Err(_) => return true,
        };
        for ev in parse(&buf[..n]) {
            if !self.handle(ev) {
                return false;
            }
        }
        true
    }

    /// The path relative to the root of the directory `fid` (`None`: outside SRC, or
    /// gone: its removal is reported by its parent's events).
    fn resolve(&mut self, fid: &Fid) -> Option<Vec<u8>> {
        if let Some(p) = self.cache.get(fid) {
            return p.clone();
        }
        let fs = self.fs.get(&fid.fsid)?;
        let words = 2 + fid.handle.len().div_ceil(4);
        let mut h = vec![0u32; words];
        h[0] = fid.handle.len() as u32;
        h[1] = fid.handle_type as u32;
        // The handle bytes follow the 8-byte header, in the words' memory order.
        for (w, c) in h[2..].iter_mut().zip(fid.handle.chunks(4)) {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            *w = u32::from_ne_bytes(b);
        }
        // SAFETY: `h` is a valid file_handle of handle_bytes bytes; the mount descriptor
        // is open; the result is a new descriptor or -1.
        let fd = unsafe {
            libc::open_by_handle_at(
                fs.mount.as_raw_fd(),
                h.as_mut_ptr().cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESTALE) && !self.warned {
                self.warned = true;
                (self.log)(format!(
                    "warning: cannot resolve a directory handle of an event ({e}); the periodic \
                     reconcile covers what it concerned"
                ));
            }
            return None;
        }
        // SAFETY: `fd` was just returned by open_by_handle_at and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let path = path.as_os_str().as_bytes();
        let rel = if path.ends_with(b" (deleted)") {
            None
        } else {
            beneath(&self.root, path).map(<[u8]>::to_vec)
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(fid.clone(), rel.clone());
        rel
    }

    /// Handles one event; false when the consumer is gone.
    fn handle(&mut self, ev: RawEvent) -> bool {
        if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
            lock(&self.shared.lost).add(b"", true);
            lock(&self.shared.overflowed).add(b"", true);
            return true;
        }
        if ev.pid == self.pid {
            // This process never writes the source: its own writes are DEST's.
            return true;
        }
        let Some(fid) = ev.dir else {
            return true;
        };
        let name = ev.name.filter(|n| !n.is_empty() && n.as_slice() != b".");
        if name.is_none()
            && ev.mask & (libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0
            && self.root_fid.as_ref() == Some(&fid)
        {
            self.shared.root_gone.store(true, Ordering::Relaxed);
            return true;
        }
        let Some(dir) = self.resolve(&fid) else {
            // Outside SRC (or gone): a directory moved there stays outside.
            return true;
        };
        let Some(change) = convert(&dir, name.as_deref(), as_inotify_mask(ev.mask)) else {
            return true;
        };
        if change.is_dir && ev.mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
            // The paths cached beneath a directory that moved away are no longer its,
            // and one that moved in may come from outside SRC (what was outside may be
            // inside now): the cache starts afresh. Sifting it instead would cost its
            // whole size at each directory moved; a clear costs what was added since.
            self.cache.clear();
        }
        if self
            .filter
            .as_ref()
            .is_some_and(|f| f.excluded_or_within_excluded(&change.path, change.is_dir))
        {
            return true;
        }
        self.send(Event::Change(change))
    }

    /// Hands an event over, or records its directories as lost when the channel is
    /// full. False when the consumer is gone.
    fn send(&self, ev: Event) -> bool {
        self.shared.send(&self.tx, ev)
    }
}

/// Whether fanotify can watch `root` here: Ok, or the reason it cannot (as
/// `--backend fanotify` would report it).
pub fn probe(root: &Path) -> std::io::Result<()> {
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let cfg = WatchConfig {
        root: root.to_path_buf(),
        one_file_system: true,
        poll: Duration::from_secs(60),
        excludes: Vec::new(),
    };
    Watcher::start_fanotify(cfg, tx, Arc::new(|_| {})).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64, pid: i32, fsid: [u8; 8], handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut info = vec![
            if name.is_some() {
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            } else {
                libc::FAN_EVENT_INFO_TYPE_DFID
            },
            0,
            0,
            0,
        ];
        info.extend_from_slice(&fsid);
        info.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        info.extend_from_slice(&1i32.to_ne_bytes());
        info.extend_from_slice(handle);
        if let Some(n) = name {
            info.extend_from_slice(n);
            info.push(0);
        }
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let ilen = info.len() as u16;
        info[2..4].copy_from_slice(&ilen.to_ne_bytes());
        let mut rec = Vec::new();
        rec.extend_from_slice(&((META_LEN + info.len()) as u32).to_ne_bytes());
        rec.extend_from_slice(&[3, 0]);
        rec.extend_from_slice(&(META_LEN as u16).to_ne_bytes());
        rec.extend_from_slice(&mask.to_ne_bytes());
        rec.extend_from_slice(&(-1i32).to_ne_bytes());
        rec.extend_from_slice(&pid.to_ne_bytes());
        rec.extend_from_slice(&info);
        rec
    }

    #[test]
    fn records_parse_into_handle_and_name() {
        let mut buf = record(
            libc::FAN_CREATE,
            7,
            [1; 8],
            &[9, 8, 7, 6, 5, 4, 3, 2],
            Some(b"f"),
        );
        buf.extend(record(
            libc::FAN_ATTRIB | libc::FAN_ONDIR,
            8,
            [2; 8],
            &[1, 2, 3, 4],
            None,
        ));
        // A cut-off record at the end is ignored, not misread.
        buf.extend_from_slice(&[40, 0, 0]);
        let evs = parse(&buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, libc::FAN_CREATE);
        assert_eq!(evs[0].pid, 7);
        assert_eq!(evs[0].name.as_deref(), Some(&b"f"[..]));
        let fid = evs[0].dir.as_ref().unwrap();
        assert_eq!((fid.fsid, fid.handle_type), ([1; 8], 1));
        assert_eq!(fid.handle, vec![9, 8, 7, 6, 5, 4, 3, 2]);
        assert_eq!(evs[1].name, None);
        assert_eq!(evs[1].dir.as_ref().unwrap().handle, vec![1, 2, 3, 4]);
        // An overflow carries no information record.
        let mut ov = vec![0u8; META_LEN];
        ov[0] = META_LEN as u8;
        ov[6] = META_LEN as u8;
        ov[8..16].copy_from_slice(&libc::FAN_Q_OVERFLOW.to_ne_bytes());
        let evs = parse(&ov);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].dir, None);
    }

    #[test]
    fn fanotify_bits_are_inotify_bits() {
        for (fan, ino) in [
            (libc::FAN_CREATE, libc::IN_CREATE),
            (libc::FAN_DELETE, libc::IN_DELETE),
            (libc::FAN_MOVED_FROM, libc::IN_MOVED_FROM),
            (libc::FAN_MOVED_TO, libc::IN_MOVED_TO),
            (libc::FAN_MODIFY, libc::IN_MODIFY),
            (libc::FAN_CLOSE_WRITE, libc::IN_CLOSE_WRITE),
            (libc::FAN_ATTRIB, libc::IN_ATTRIB),
            (libc::FAN_DELETE_SELF, libc::IN_DELETE_SELF),
            (libc::FAN_MOVE_SELF, libc::IN_MOVE_SELF),
            (libc::FAN_ONDIR, libc::IN_ISDIR),
            (libc::FAN_Q_OVERFLOW, libc::IN_Q_OVERFLOW),
        ] {
            assert_eq!(as_inotify_mask(fan), ino);
        }
        let c = convert(
            b"a",
            Some(b"d"),
            as_inotify_mask(libc::FAN_CREATE | libc::FAN_ONDIR),
        );
        assert_eq!(c.map(|c| (c.path, c.is_dir)), Some((b"a/d".to_vec(), true)));
    }

    #[test]
    fn only_paths_beneath_the_root_are_kept() {
        assert_eq!(beneath(b"/home", b"/home"), Some(&b""[..]));
        assert_eq!(beneath(b"/home", b"/home/a/b"), Some(&b"a/b"[..]));
        assert_eq!(beneath(b"/home", b"/homes/a"), None);
        assert_eq!(beneath(b"/home", b"/var"), None);
        assert_eq!(beneath(b"/", b"/var/x"), Some(&b"var/x"[..]));
        assert_eq!(unescape_mount(b"/mnt/a\\040b"), b"/mnt/a b".to_vec());
    }
}

//! Recursive inotify watches on the source tree, converted into [`Event`]s.
//!
//! One thread owns the inotify descriptor. It only converts kernel events into changes
//! of relative paths and hands them over a bounded channel; it never blocks on the
//! consumer: when the channel is full, the directories the event makes dirty go into
//! the shared `lost` set instead, and a kernel queue overflow (IN_Q_OVERFLOW) marks the
//! whole tree. Nothing is dropped silently. A directory that appears (created or moved
//! in) gets its watches first and is reported afterwards, so the batch that scans it
//! sees whatever was created in it before its watch existed. A directory moved away
//! loses its watches (a later move-in adds them back under the new name). When the
//! kernel refuses more watches (ENOSPC), the directories left unwatched are collected,
//! one warning names the sysctl to raise, and they are rescanned every `poll` interval
//! (retrying the watches each time). Symlinks are never followed.
//!
//! Each top-level directory of SRC (a home directory, typically) gets an inotify
//! instance of its own, up to [`MAX_INSTANCES`]; the root and any further top-level
//! directories share the first. The kernel's queue is per instance, so an overflow in
//! one of them names the subtree whose events were lost, and only that is rescanned;
//! an overflow of the shared instance rescans everything.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

use super::event::{convert, dirty_of, ChangeKind, Event};
use crate::scope::Scope;
use crate::tree::{join, keys_within};

const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::ATTRIB)
    .union(WatchFlags::CLOSE_WRITE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::DELETE_SELF)
    .union(WatchFlags::MOVE_SELF)
    .union(WatchFlags::DONT_FOLLOW)
    .union(WatchFlags::ONLYDIR)
    .union(WatchFlags::EXCL_UNLINK);

/// Inotify instances one watcher opens at most (the per-user limit,
/// fs.inotify.max_user_instances, is 128 by default and shared with other programs).
pub const MAX_INSTANCES: usize = 32;

/// A watch: (instance slot, watch descriptor).
type Wd = (usize, i32);

/// One inotify instance and the top-level directory it serves (`""`: the shared one).
struct Inst {
    fd: OwnedFd,
    top: Vec<u8>,
}

/// The first component of a relative path (`""` for the root).
fn top_of(rel: &[u8]) -> &[u8] {
    match rel.iter().position(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => rel,
    }
}

/// A log line sink (the binary prints them).
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared between the watcher thread and the consumer.
#[derive(Debug, Default)]
pub struct Shared {
    /// Directories whose events did not fit the channel, or were lost by the kernel.
    pub lost: Mutex<Scope>,
    /// Subtrees whose kernel queue overflowed since the consumer last looked.
    pub overflowed: Mutex<Scope>,
    /// The channel was full since the consumer last looked.
    pub channel_full: AtomicBool,
    /// The watched root was deleted, moved or unmounted.
    pub root_gone: AtomicBool,
    /// Asks the thread to end.
    pub stop: AtomicBool,
    /// Directories (with their subtrees) that have no watch: the watch limit.
    pub unwatched: Mutex<Scope>,
}

impl Shared {
    /// Hands a backend's event to the consumer over `tx`, or records its directories
    /// as lost when the channel is full (they are rescanned). False when the consumer
    /// is gone.
    pub fn send(&self, tx: &SyncSender<Event>, ev: Event) -> bool {
        match tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(ev)) => {
                let mut lost = lock(&self.lost);
                match &ev {
                    Event::Change(c) => {
                        for (d, r) in dirty_of(c) {
                            lost.add(d, r);
                        }
                    }
                    Event::Rescan(d) => lost.add(d, true),
                }
                self.channel_full.store(true, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub root: PathBuf,
    /// Do not watch directories on other filesystems (`--one-file-system`).
    pub one_file_system: bool,
    /// How often the unwatched part is retried and rescanned.
    pub poll: Duration,
    /// Command-line exclude patterns: changes they exclude start nothing (fanotify).
    pub excludes: Vec<String>,
}

/// The running watcher; dropping it stops the thread.
pub struct Watcher {
    thread: Option<JoinHandle<()>>,
    pub shared: Arc<Shared>,
}

impl Watcher {
    /// Watches the whole tree (before returning, so a scan started afterwards misses
    /// nothing) and starts the thread that reports changes on `tx`.
    pub fn start(cfg: WatchConfig, tx: SyncSender<Event>, log: Log) -> std::io::Result<Watcher> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let root_dev = std::fs::metadata(&cfg.root)?.dev_of();
        let shared = Arc::new(Shared::default());
        let mut tree = Tree {
            insts: vec![Some(Inst {
                fd,
                top: Vec::new(),
            })],
            by_top: HashMap::new(),
            cfg,
            root_dev,
            wd_path: HashMap::new(),
            path_wd: BTreeMap::new(),
            root_wd: (0, -1),
            warned: false,
            stopping: false,
            shared: shared.clone(),
            tx,
            log,
        };
        tree.add_new_tree(b"");
        tree.root_wd = tree.path_wd.get(&b""[..]).copied().unwrap_or((0, -1));
        // Without any watch left (the limit), the whole tree is polled instead.
        if tree.root_wd.1 < 0 && !lock(&shared.unwatched).lists(b"") {
            return Err(std::io::Error::other(
                "cannot watch the source root (inotify refused it)",
            ));
        }
        Watcher::spawn("fsync-repl-inotify", shared, move || tree.run())
    }

    /// Runs a backend's reading loop `f` on a thread named `name`; `shared.stop` ends it.
    pub(super) fn spawn(
        name: &str,
        shared: Arc<Shared>,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Watcher> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(f)?;
        Ok(Watcher {
            thread: Some(thread),
            shared,
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

trait DevOf {
    fn dev_of(&self) -> u64;
}
impl DevOf for std::fs::Metadata {
    fn dev_of(&self) -> u64 {
        std::os::unix::fs::MetadataExt::dev(self)
    }
}

struct Tree {
    /// Instance slots; 0 is the shared one, freed slots are `None`.
    insts: Vec<Option<Inst>>,
    /// The slot of each top-level directory's instance.
    by_top: HashMap<Vec<u8>, usize>,
    cfg: WatchConfig,
    root_dev: u64,
    wd_path: HashMap<Wd, Vec<u8>>,
    path_wd: BTreeMap<Vec<u8>, Wd>,
    root_wd: Wd,
    warned: bool,
    /// Draining the queues after a stop: new directories are reported, not watched.
    stopping: bool,
    shared: Arc<Shared>,
    tx: SyncSender<Event>,
    log: Log,
}

impl Tree {
    fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.cfg.root.clone()
        } else {
            self.cfg.root.join(OsStr::from_bytes(rel))
        }
    }

    /// The instance slot that watches `rel` (opening one for a new top-level directory
    /// while fewer than [`MAX_INSTANCES`] are open).
    fn slot_for(&mut self, rel: &[u8]) -> usize {
        let top = top_of(rel);
        if top.is_empty() {
            return 0;
        }
        if let Some(&i) = self.by_top.get(top) {
            return i;
        }
        let open = self.insts.iter().filter(|i| i.is_some()).count();
        let slot = match (open < MAX_INSTANCES)
            .then(|| inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok())
            .flatten()
        {
            Some(fd) => {
                let inst = Some(Inst {
                    fd,
                    top: top.to_vec(),
                });
                match self.insts.iter().position(|i| i.is_none()) {
                    Some(free) => {
                        self.insts[free] = inst;
                        free
                    }
                    None => {
                        self.insts.push(inst);
                        self.insts.len() - 1
                    }
                }
            }
            // No instance to spare: the shared one serves it.
            None => 0,
        };
        self.by_top.insert(top.to_vec(), slot);
        slot
    }

    /// Watches `top` and every directory beneath it; returns the directories the watch
    /// limit left without one (each with its subtree).
    fn add_tree(&mut self, top: &[u8]) -> Scope {
        let mut refused = Scope::new();
        let mut stack = vec![top.to_vec()];
        while let Some(rel) = stack.pop() {
            let full = self.abs(&rel);
            let slot = self.slot_for(&rel);
            let Some(inst) = &self.insts[slot] else {
                continue;
            };
            match inotify::add_watch(&inst.fd, &full, MASK).map(|wd| (slot, wd)) {
                Ok(wd) => {
                    if let Some(old) = self.wd_path.insert(wd, rel.clone()) {
                        self.path_wd.remove(&old);
                    }
                    self.path_wd.insert(rel.clone(), wd);
                }
                Err(rustix::io::Errno::NOSPC) => {
                    refused.add(&rel, true);
                    continue;
                }
                // Vanished, or not a directory any more: its parent's events cover it.
                Err(_) => continue,
            }
            let Ok(rd) = std::fs::read_dir(&full) else {
                continue;
            };
            for e in rd.flatten() {
                // DirEntry::file_type does not follow symlinks.
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if self.cfg.one_file_system
                    && e.metadata().is_ok_and(|m| m.dev_of() != self.root_dev)
                {
                    continue;
                }
                stack.push(join(&rel, e.file_name().as_bytes()));
            }
        }
        refused
    }

    /// Watches a new subtree, recording what the limit refused.
    fn add_new_tree(&mut self, top: &[u8]) {
        let refused = self.add_tree(top);
        if !refused.is_empty() {
            lock(&self.shared.unwatched).merge(&refused);
            self.warn_limit();
        }
    }

    /// Removes the watches of `top` and its subtree (it moved away or was deleted),
    /// and the instance of a top-level directory.
    fn drop_tree(&mut self, top: &[u8]) {
        for k in keys_within(&self.path_wd, top) {
            let Some(wd) = self.path_wd.remove(&k) else {
                continue;
            };
            self.wd_path.remove(&wd);
            if let Some(inst) = &self.insts[wd.0] {
                let _ = inotify::remove_watch(&inst.fd, wd.1);
            }
        }
        if top_of(top) == top && !top.is_empty() {
            if let Some(slot) = self.by_top.remove(top) {
                if slot != 0 {
                    // Closing the descriptor drops whatever it still had queued: the
                    // subtree is rescanned whole anyway.
                    self.insts[slot] = None;
                }
            }
        }
    }

    /// One loud warning when the watch limit left directories unwatched.
    fn warn_limit(&mut self) {
        if self.warned {
            return;
        }
        let unwatched = lock(&self.shared.unwatched).clone();
        if unwatched.is_empty() {
            return;
        }
        self.warned = true;
        let missing: usize = unwatched
            .pairs()
            .map(|(d, _)| count_dirs(&self.abs(d), self.cfg.one_file_system))
            .sum();
        let have = self.path_wd.len();
        let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        // The limit counts every watch of this user; leave room beside this tree.
        let suggest = (have + missing)
            .saturating_add(limit.parse::<usize>().unwrap_or(0))
            .max(8192);
        (self.log)(format!(
            "WARNING: the inotify watch limit is reached: fs.inotify.max_user_watches is {limit}, \
             watching {} needs at least {} watches ({missing} directories have none). Changes \
             there are found by a scan every {} s instead, so they reach the destination late. \
             Raise the limit, e.g. sysctl fs.inotify.max_user_watches={}",
            self.cfg.root.display(),
            have + missing,
            self.cfg.poll.as_secs(),
            suggest,
        ));
    }

    /// Hands an event over, or records its directories as lost when the channel is
    /// full. False when the consumer is gone.
    fn send(&self, ev: Event) -> bool {
        self.shared.send(&self.tx, ev)
    }

    fn run(mut self) {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
        let mut last_poll = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if self.pump(&mut buf, 200).is_none() {
                return;
            }
            if last_poll.elapsed() >= self.cfg.poll && !lock(&self.shared.unwatched).is_empty() {
                last_poll = Instant::now();
                // Retry the watches (the limit may have been raised), then rescan.
                let dirs = lock(&self.shared.unwatched).clone();
                let mut refused = Scope::new();
                for (d, _) in dirs.pairs() {
                    refused.merge(&self.add_tree(d));
                }
                *lock(&self.shared.unwatched) = refused;
                for (d, _) in dirs.pairs() {
                    if !self.send(Event::Rescan(d.to_vec())) {
                        return;
                    }
                }
            }
        }
        self.drain(&mut buf);
    }

    /// After a stop: handles what each kernel queue held at that moment, so that a
    /// clean stop hands the next start every change up to it (later ones are found by
    /// the restart's own walk). New directories are reported whole, not watched.
    fn drain(&mut self, buf: &mut [MaybeUninit<u8>]) {
        self.stopping = true;
        for slot in 0..self.insts.len() {
            let Some(fd) = self.insts[slot].as_ref().map(|i| i.fd.as_raw_fd()) else {
                continue;
            };
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD stores one int through the valid pointer.
            if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) } < 0 {
                continue;
            }
            // One read takes whole events up to the buffer's size (at least half of it
            // when more are queued): this many reads cover what was queued.
            let reads = usize::try_from(queued).unwrap_or(0) / (buf.len() / 2) + 1;
            for _ in 0..reads {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 || pfd.revents & libc::POLLIN == 0 {
                    break;
                }
                for (wd, mask, name) in self.read_events(slot, buf) {
                    if !self.handle((slot, wd), mask, name.as_deref()) {
                        return;
                    }
                }
            }
        }
    }

    /// Waits up to `timeout_ms` for events on every instance and handles what one read
    /// of each ready instance returns. Some(any were ready), or None once the consumer
    /// is gone.
    fn pump(&mut self, buf: &mut [MaybeUninit<u8>], timeout_ms: i32) -> Option<bool> {
        let (slots, mut pfds): (Vec<usize>, Vec<libc::pollfd>) = self
            .insts
            .iter()
            .enumerate()
            .filter_map(|(i, inst)| {
                inst.as_ref().map(|inst| {
                    (
                        i,
                        libc::pollfd {
                            fd: inst.fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    )
                })
            })
            .unzip();
        // SAFETY: `pfds` is a valid array of its length for the duration of the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return Some(false);
        }
        for (slot, pfd) in slots.into_iter().zip(&pfds) {
            if pfd.revents == 0 {
                continue;
            }
            let raw = self.read_events(slot, buf);
            for (wd, mask, name) in raw {
                if !self.handle((slot, wd), mask, name.as_deref()) {
                    return None;
                }
            }
        }
        Some(true)
    }

    fn read_events(
        &self,
        slot: usize,
        buf: &mut [MaybeUninit<u8>],
    ) -> Vec<(i32, u32, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let Some(inst) = &self.insts[slot] else {
            return out;
        };
        let mut reader = inotify::Reader::new(inst.fd.as_fd(), buf);
        // One read's worth: more waiting makes the next poll return at once.
        while let Ok(e) = reader.next() {
            out.push((
                e.wd(),
                e.events().bits(),
                e.file_name().map(|n| n.to_bytes().to_vec()),
            ));
            if reader.is_buffer_empty() {
                break;
            }
        }
        out
    }

    /// Handles one kernel event; false when the consumer is gone.
    fn handle(&mut self, wd: Wd, mask: u32, name: Option<&[u8]>) -> bool {
        let has = |f: ReadFlags| mask & f.bits() != 0;
        if has(ReadFlags::QUEUE_OVERFLOW) {
            // The shared instance watches the root: its loss could be anywhere.
            let top = self.insts[wd.0]
                .as_ref()
                .map_or(Vec::new(), |i| i.top.clone());
            lock(&self.shared.lost).add(&top, true);
            lock(&self.shared.overflowed).add(&top, true);
            return true;
        }
        if wd == self.root_wd
            && name.is_none()
            && (has(ReadFlags::DELETE_SELF) || has(ReadFlags::MOVE_SELF) || has(ReadFlags::UNMOUNT))
        {
            self.shared.root_gone.store(true, Ordering::Relaxed);
            return true;
        }
        if has(ReadFlags::IGNORED) {
            if let Some(p) = self.wd_path.remove(&wd) {
                if self.path_wd.get(&p) == Some(&wd) {
                    self.path_wd.remove(&p);
                }
            }
            return true;
        }
        let Some(dir) = self.wd_path.get(&wd).cloned() else {
            // A watch already dropped (its directory moved away).
            return true;
        };
        if has(ReadFlags::UNMOUNT) {
            return self.send(Event::Rescan(dir));
        }
        let Some(change) = convert(&dir, name, mask) else {
            return true;
        };
        if change.is_dir {
            match change.kind {
                ChangeKind::Created | ChangeKind::MovedTo if !self.stopping => {
                    // Watch first, report after: the batch then scans what the new
                    // directory already holds.
                    self.add_new_tree(&change.path);
                }
                ChangeKind::MovedFrom => self.drop_tree(&change.path),
                // Its watches go by themselves; a top-level one also had an instance.
                ChangeKind::Removed => self.drop_tree(&change.path),
                _ => {}
            }
        }
        self.send(Event::Change(change))
    }
}

/// Directories in the subtree at `path` (itself included), not following symlinks.
fn count_dirs(path: &std::path::Path, one_fs: bool) -> usize {
    walkdir::WalkDir::new(path)
        .same_file_system(one_fs)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_dir())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_records_directories_instead_of_dropping() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut w = Watcher::start(
            WatchConfig {
                root: dir.path().to_path_buf(),
                one_file_system: false,
                poll: Duration::from_secs(60),
                excludes: Vec::new(),
            },
            tx,
            Arc::new(|_| {}),
        )
        .unwrap();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("sub/f{i}")), b"x").unwrap();
        }
        std::fs::write(dir.path().join("top"), b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lost = lock(&w.shared.lost).clone();
            if lost.lists(b"sub") && lost.lists(b"") {
                break;
            }
            assert!(Instant::now() < deadline, "lost set: {lost:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(w.shared.channel_full.load(Ordering::Relaxed));
        assert!(rx.try_recv().is_ok(), "the first event went through");
        w.stop();
    }
}

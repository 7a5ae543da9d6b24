//! Point-in-time snapshots on the secondary: layout, manifests, creation and removal.
//!
//! ```text
//! DEST/current/                      the replica (what push, backup and watch write)
//! DEST/snapshots/2026-11-27T01:02:03Z/   hard-link copies of current
//! DEST/.fsync-repl/lock              held (flock) by the run that changes DEST
//! DEST/.fsync-repl/snapshots/NAME.json   one manifest per snapshot
//! DEST/.fsync-repl/snapshots/NAME.b3     its content catalogue (see [`catalogue`])
//! ```
//!
//! A snapshot hard-links the files of `current`; that is safe because the engine never
//! writes in place (invariant 2): an update replaces the name in `current` and the
//! snapshot keeps the old inode. A snapshot is built as `snapshots/.tmp-NAME`, made
//! durable, and renamed to its final name only when complete; a snapshot being removed
//! is first renamed to `.tmp-…` too. So a killed run never leaves a partial snapshot
//! under a final name, and the next run removes the leftovers. Every path is opened
//! beneath DEST's descriptor without following symlinks (invariant 3), and all disk
//! work passes the throttle (invariant 6).

pub mod catalogue;
pub mod copy;
pub mod lock;
mod manifest;
pub mod retention;

pub use manifest::Manifest;
use manifest::{read_manifest, write_manifest};

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags};

use crate::fsutil;
use crate::throttle::Throttle;

/// The replica's directory name inside DEST.
pub const CURRENT: &str = "current";
/// The snapshots' directory name inside DEST.
pub const SNAPSHOTS: &str = "snapshots";
/// The side-car directory name inside DEST.
pub const SIDECAR: &str = ".fsync-repl";
/// Prefix of snapshots being built or removed.
const TEMP_PREFIX: &str = ".tmp-";

/// An error of a snapshot operation, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0}: no replica in {0}/current; back up into DEST first (fsync-repl backup SRC DEST)"
    )]
    NoCurrent(PathBuf),
    #[error("{}: no such backup destination; give the directory that holds current/", .0.display())]
    NoDest(PathBuf),
    #[error("{path}: no snapshot named {name}; see fsync-repl snapshots {path}")]
    NotFound { path: PathBuf, name: String },
    #[error("{0}")]
    Locked(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    NoSpace(crate::error::Shortfall),
}

impl From<SnapshotError> for crate::Error {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Io { op, path, source } => crate::Error::Dest { op, path, source },
            SnapshotError::NoCurrent(p) => crate::Error::Selection {
                what: format!(
                    "no replica in {}/current; back up into it first (fsync-repl backup SRC DEST)",
                    p.display()
                ),
                path: p,
            },
            e @ SnapshotError::NotFound { .. } => crate::Error::Usage(e.to_string()),
            SnapshotError::NoDest(p) => crate::Error::Selection {
                path: p,
                what: "no such backup destination; give the directory that holds current/".into(),
            },
            SnapshotError::Locked(m) => crate::Error::Locked(m),
            SnapshotError::Interrupted => crate::Error::Interrupted,
            SnapshotError::NoSpace(m) => crate::Error::NoSpace(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

/// A snapshot found in DEST, with its manifest when that is readable.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub time: i64,
    pub manifest: Option<Manifest>,
}

/// Settings of a snapshot run.
pub struct TakeOptions<'a> {
    pub throttle: &'a Throttle,
    pub priority: crate::throttle::priority::Priority,
    pub jobs: usize,
    pub owners: bool,
    pub cancel: &'a AtomicBool,
    pub source: Option<String>,
    pub push_exit: Option<i32>,
    /// The snapshot's time (UTC seconds); the caller's clock.
    pub now: i64,
    /// The free-space reserve to keep (None: the default, as for a push).
    pub reserve: Option<crate::space::Reserve>,
}

/// What a directory or symlink of a snapshot is reckoned to take on disk.
const BLOCK: u64 = 4096;

/// An open backup directory: DEST/current (the replica), DEST/snapshots and
/// DEST/.fsync-repl (manifests, the lock).
#[derive(Debug)]
pub struct BackupDir {
    root: OwnedFd,
    path: PathBuf,
}

fn io_at<T>(op: &'static str, path: &Path, r: io::Result<T>) -> Result<T> {
    r.map_err(|source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

fn errno<T>(r: rustix::io::Result<T>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

/// Seconds since the epoch now (the binary's clock).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl BackupDir {
    /// Opens DEST, which must exist.
    pub fn open(path: &Path) -> Result<BackupDir> {
        let root = match rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
                return Err(SnapshotError::NoDest(path.to_path_buf()))
            }
            Err(e) => return io_at("open", path, Err(e.into())),
        };
        Ok(BackupDir {
            root,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sub(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Opens (creating when missing) a directory beneath DEST.
    fn dir(&self, rel: &str, create: bool) -> Result<Option<OwnedFd>> {
        if create {
            let mut done = String::new();
            for part in rel.split('/') {
                let parent = io_at(
                    "open",
                    &self.sub(&done),
                    fsutil::open_dir(self.root.as_fd(), done.as_bytes()),
                )?;
                match rfs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return io_at("create", &self.sub(rel), Err(e.into())),
                }
                if !done.is_empty() {
                    done.push('/');
                }
                done.push_str(part);
            }
        }
        match fsutil::open_dir(self.root.as_fd(), rel.as_bytes()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if fsutil::is_not_found(&e) && !create => Ok(None),
            Err(e) => io_at("open", &self.sub(rel), Err(e)),
        }
    }

    /// Workers at the run's CPU and I/O priority, with room for deep trees.
    fn pool(
        &self,
        jobs: usize,
        priority: crate::throttle::priority::Priority,
    ) -> Result<rayon::ThreadPool> {
        priority
            .pool_builder(jobs, "fsync-repl-snap")
            .stack_size(16 << 20)
            .build()
            .map_err(|e| SnapshotError::Io {
                op: "start workers for",
                path: self.path.clone(),
                source: io::Error::other(e),
            })
    }

    /// Creates `current` if missing and checks that it is a directory beneath DEST, not
    /// a symlink planted to send the push elsewhere.
    pub fn ensure_current(&self) -> Result<()> {
        self.dir(CURRENT, true).map(|_| ())
    }

    /// Takes the lock of DEST (see [`lock`]).
    pub fn lock(&self) -> Result<lock::Lock> {
        let dir = self.dir(SIDECAR, true)?.ok_or(SnapshotError::Interrupted)?;
        lock::Lock::take(dir.as_fd(), &self.path, now())
    }

    /// The snapshots, oldest first (ties: by sequence number), with their manifests.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let Some(dir) = self.dir(SNAPSHOTS, false)? else {
            return Ok(Vec::new());
        };
        let names = io_at(
            "read",
            &self.sub(SNAPSHOTS),
            fsutil::read_dir_names(dir.as_fd()),
        )?;
        let manifests = self.dir(&format!("{SIDECAR}/{SNAPSHOTS}"), false)?;
        let mut out = Vec::new();
        for name in names {
            let Ok(name) = String::from_utf8(name) else {
                continue;
            };
            let Some(time) = retention::parse_utc(&name) else {
                continue;
            };
            let manifest = manifests
                .as_ref()
                .and_then(|m| read_manifest(m.as_fd(), &name));
            out.push(Snapshot {
                name,
                time,
                manifest,
            });
        }
        out.sort_by(|a, b| {
            a.time
                .cmp(&b.time)
                .then_with(|| retention::name_seq(&a.name).cmp(&retention::name_seq(&b.name)))
        });
        Ok(out)
    }

    /// Removes what a killed run left: `snapshots/.tmp-*` trees and manifests without a
    /// snapshot. Call with the lock held. Returns how many leftovers went.
    pub fn clean_up(&self, throttle: &Throttle) -> Result<usize> {
        let mut n = 0;
        if let Some(dir) = self.dir(SNAPSHOTS, false)? {
            let names = io_at(
                "read",
                &self.sub(SNAPSHOTS),
                fsutil::read_dir_names(dir.as_fd()),
            )?;
            for name in names
                .iter()
                .filter(|n| n.starts_with(TEMP_PREFIX.as_bytes()))
            {
                let mut rel = format!("{SNAPSHOTS}/").into_bytes();
                rel.extend_from_slice(name);
                self.remove_rel(&rel, throttle)?;
                n += 1;
            }
        }
        let live: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|s| s.name).collect();
        if let Some(dir) = self.dir(&format!("{SIDECAR}/{SNAPSHOTS}"), false)? {
            let names = io_at(
                "read",
                &self.sub(SIDECAR),
                fsutil::read_dir_names(dir.as_fd()),
            )?;
            for name in names {
                let s = String::from_utf8_lossy(&name);
                let orphan = match s
                    .strip_suffix(".json")
                    .or_else(|| s.strip_suffix(catalogue::SUFFIX))
                {
                    Some(snap) => !live.contains(snap),
                    None => s.starts_with(TEMP_PREFIX),
                };
                if orphan {
                    throttle.op();
                    let _ = rfs::unlinkat(&dir, name.as_slice(), AtFlags::empty());
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn remove_rel(&self, rel: &[u8], throttle: &Throttle) -> Result<()> {
        copy::remove_tree(self.root.as_fd(), rel, throttle).map_err(|e| SnapshotError::Io {
            op: e.op,
            path: self.path.join(crate::tree::as_path(&e.rel)),
            source: e.source,
        })
    }

    /// Takes a snapshot of `current`. Call with the lock held.
    pub fn take(&self, o: &TakeOptions<'_>) -> Result<Manifest> {
        let started = std::time::Instant::now();
        let current = match self.dir(CURRENT, false)? {
            Some(c) => c,
            None => return Err(SnapshotError::NoCurrent(self.path.clone())),
        };
        self.check_space(o.reserve)?;
        let snaps = self
            .dir(SNAPSHOTS, true)?
            .ok_or(SnapshotError::Interrupted)?;
        let manifests = self
            .dir(&format!("{SIDECAR}/{SNAPSHOTS}"), true)?
            .ok_or(SnapshotError::Interrupted)?;
        // A unique final name: the time, with `.1`, `.2`… for several in one second.
        let base = retention::format_utc(o.now);
        let existing = io_at(
            "read",
            &self.sub(SNAPSHOTS),
            fsutil::read_dir_names(snaps.as_fd()),
        )?;
        // Past every name of this second, even removed ones' successors, so the newer
        // snapshot always has the greater sequence number.
        let same_second = existing
            .iter()
            .filter_map(|e| std::str::from_utf8(e).ok())
            .map(|e| e.strip_prefix(TEMP_PREFIX).unwrap_or(e))
            .filter(|e| e.starts_with(base.as_str()))
            .map(|e| retention::name_seq(e) + 1)
            .max();
        let name = match same_second {
            None => base.clone(),
            Some(k) => format!("{base}.{k}"),
        };
        let temp = format!("{TEMP_PREFIX}{name}");
        let temp_path = self.sub(SNAPSHOTS).join(&temp);
        o.throttle.op();
        io_at(
            "create",
            &temp_path,
            errno(rfs::mkdirat(
                &snaps,
                temp.as_str(),
                Mode::from_raw_mode(0o700),
            )),
        )?;
        let tmp_dir = io_at(
            "open",
            &temp_path,
            fsutil::open_dir(snaps.as_fd(), temp.as_bytes()),
        )?;
        let ctx = copy::Ctx {
            src: current.as_fd(),
            dst: tmp_dir.as_fd(),
            throttle: o.throttle,
            owners: o.owners,
            cancel: o.cancel,
            counts: Default::default(),
        };
        let pool = self.pool(o.jobs, o.priority)?;
        // The newest catalogue spares reading every inode its snapshot holds.
        let prev = self
            .list()?
            .iter()
            .rev()
            .find_map(|s| catalogue::read_inodes(manifests.as_fd(), &s.name))
            .unwrap_or_default();
        let copied = pool.install(|| {
            ctx.copy_dir(b"")?;
            let linked =
                std::mem::take(&mut *ctx.counts.linked.lock().unwrap_or_else(|p| p.into_inner()));
            catalogue::build(tmp_dir.as_fd(), linked, &prev, o.throttle, o.cancel).map_err(
                |(rel, source)| copy::TreeError {
                    op: "hash",
                    rel,
                    source,
                },
            )
        });
        drop(prev);
        let (catalogue, cost) = match copied {
            Ok(c) => c,
            Err(e) => {
                if o.cancel.load(Ordering::Relaxed) {
                    return Err(SnapshotError::Interrupted);
                }
                // Leave nothing behind (the next run would remove it anyway).
                let mut rel = format!("{SNAPSHOTS}/").into_bytes();
                rel.extend_from_slice(temp.as_bytes());
                let _ = pool.install(|| self.remove_rel(&rel, o.throttle));
                return Err(SnapshotError::Io {
                    op: e.op,
                    path: self.sub(CURRENT).join(crate::tree::as_path(&e.rel)),
                    source: e.source,
                });
            }
        };
        catalogue::write(manifests.as_fd(), &name, &catalogue, o.throttle).map_err(|e| {
            SnapshotError::Io {
                op: "write catalogue in",
                path: self.sub(SIDECAR),
                source: e,
            }
        })?;
        drop(catalogue);
        let manifest = Manifest {
            name: name.clone(),
            time: o.now,
            source: o.source.clone(),
            push_exit: o.push_exit,
            files: ctx.counts.files.load(Ordering::Relaxed),
            dirs: ctx.counts.dirs.load(Ordering::Relaxed),
            symlinks: ctx.counts.symlinks.load(Ordering::Relaxed),
            bytes: ctx.counts.bytes.load(Ordering::Relaxed),
            added_bytes: ctx.counts.added_bytes(),
            duration_secs: started.elapsed().as_secs_f64(),
            hashed_files: cost.hashed_files,
            hashed_bytes: cost.hashed_bytes,
        };
        write_manifest(manifests.as_fd(), &manifest, o.throttle).map_err(|e| {
            SnapshotError::Io {
                op: "write manifest in",
                path: self.sub(SIDECAR),
                source: e,
            }
        })?;
        // Durable before it gets its final name; the rename durable before we report.
        o.throttle.op();
        io_at(
            "sync",
            &temp_path,
            errno(o.throttle.io(|| rfs::syncfs(&tmp_dir))),
        )?;
        o.throttle.op();
        io_at(
            "rename",
            &temp_path,
            errno(rfs::renameat_with(
                &snaps,
                temp.as_str(),
                &snaps,
                name.as_str(),
                RenameFlags::NOREPLACE,
            )),
        )?;
        io_at("sync", &self.sub(SNAPSHOTS), errno(rfs::fsync(&snaps)))?;
        Ok(manifest)
    }

    /// Removes the snapshot `name` and its manifest. Call with the lock held.
    pub fn remove(
        &self,
        name: &str,
        throttle: &Throttle,
        jobs: usize,
        priority: crate::throttle::priority::Priority,
    ) -> Result<()> {
        if !fsutil::valid_name(name.as_bytes()) || name.starts_with('.') {
            return Err(SnapshotError::NotFound {
                path: self.path.clone(),
                name: name.into(),
            });
        }
        let snaps = self
            .dir(SNAPSHOTS, false)?
            .ok_or_else(|| SnapshotError::NotFound {
                path: self.path.clone(),
                name: name.into(),
            })?;
        // Out of sight first: a kill from here on leaves a recognisable leftover.
        let temp = format!("{TEMP_PREFIX}{name}");
        throttle.op();
        match rfs::renameat(&snaps, name, &snaps, temp.as_str()) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => {
                return Err(SnapshotError::NotFound {
                    path: self.path.clone(),
                    name: name.into(),
                })
            }
            Err(e) => return io_at("rename", &self.sub(SNAPSHOTS).join(name), Err(e.into())),
        }
        if let Some(m) = self.dir(&format!("{SIDECAR}/{SNAPSHOTS}"), false)? {
            throttle.op();
            let _ = rfs::unlinkat(&m, format!("{name}.json").as_str(), AtFlags::empty());
            throttle.op();
            let _ = rfs::unlinkat(
                &m,
                format!("{name}{}", catalogue::SUFFIX).as_str(),
                AtFlags::empty(),
            );
        }
        let mut rel = format!("{SNAPSHOTS}/").into_bytes();
        rel.extend_from_slice(temp.as_bytes());
        let pool = self.pool(jobs, priority)?;
        pool.install(|| self.remove_rel(&rel, throttle))
    }

    /// Bytes that removing `names` (in that order) would free, after each one: a file's
    /// space comes back when every one of its names is in a removed snapshot.
    pub fn freed_by(&self, names: &[String], throttle: &Throttle) -> Result<Vec<u64>> {
        let mut seen: std::collections::HashMap<u64, (u64, u64, u64)> = Default::default();
        let mut freed = 0u64;
        let mut out = Vec::new();
        for name in names {
            let mut rel = format!("{SNAPSHOTS}/").into_bytes();
            rel.extend_from_slice(name.as_bytes());
            let mut stack = vec![rel];
            while let Some(rel) = stack.pop() {
                throttle.op();
                let dir = io_at(
                    "open",
                    &self.path.join(crate::tree::as_path(&rel)),
                    fsutil::open_dir(self.root.as_fd(), &rel),
                )?;
                let names = io_at(
                    "read",
                    &self.path.join(crate::tree::as_path(&rel)),
                    fsutil::read_dir_names(dir.as_fd()),
                )?;
                for n in names {
                    let Ok(st) = fsutil::stat_at(dir.as_fd(), &n) else {
                        continue;
                    };
                    if st.st_mode & 0o170000 == 0o040000 {
                        stack.push(crate::tree::join(&rel, &n));
                        continue;
                    }
                    let e = seen.entry(st.st_ino).or_insert((
                        0,
                        st.st_nlink,
                        st.st_blocks as u64 * 512,
                    ));
                    e.0 += 1;
                    if e.0 == e.1 {
                        freed += e.2;
                    }
                }
            }
            out.push(freed);
        }
        Ok(out)
    }

    /// Free space of DEST's filesystem.
    /// The free-space preflight of a snapshot: its files are links, but each of its
    /// directories and symlinks takes a block. The newest snapshot's counts estimate
    /// them (the first snapshot has none to go by and is not checked).
    fn check_space(&self, reserve: Option<crate::space::Reserve>) -> Result<()> {
        let Some(m) = self.list()?.into_iter().rev().find_map(|s| s.manifest) else {
            return Ok(());
        };
        let space = self.space()?;
        let needed = (m.dirs + m.symlinks + 1).saturating_mul(BLOCK);
        let check = crate::space::check(space, reserve, needed);
        if check.fits() {
            Ok(())
        } else {
            Err(SnapshotError::NoSpace(
                check.shortfall(&self.path.display().to_string()),
            ))
        }
    }

    pub fn space(&self) -> Result<crate::dest::Space> {
        let s = io_at("statvfs", &self.path, errno(rfs::fstatvfs(&self.root)))?;
        Ok(crate::dest::Space::of(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(d: &BackupDir, now: i64, cancel: &AtomicBool) -> Result<Manifest> {
        let t = Throttle::new(None, None);
        d.take(&TakeOptions {
            throttle: &t,
            priority: Default::default(),
            jobs: 2,
            owners: false,
            cancel,
            source: Some("/src".into()),
            push_exit: Some(0),
            now,
            reserve: None,
        })
    }

    #[test]
    fn take_list_remove_and_clean_up() {
        let t = tempfile::tempdir().unwrap();
        let d = BackupDir::open(t.path()).unwrap();
        let no = AtomicBool::new(false);
        assert!(matches!(take(&d, 0, &no), Err(SnapshotError::NoCurrent(_))));
        std::fs::create_dir_all(t.path().join("current/a")).unwrap();
        std::fs::write(t.path().join("current/a/f"), b"hello").unwrap();
        let m1 = take(&d, 1_800_000_000, &no).unwrap();
        let m2 = take(&d, 1_800_000_000, &no).unwrap();
        assert_eq!(m1.name, "2027-01-15T08:00:00Z");
        assert_eq!(m2.name, "2027-01-15T08:00:00Z.1");
        assert_eq!((m1.files, m1.bytes, m1.added_bytes), (1, 5, 5));
        assert_eq!(m2.added_bytes, 0);
        let l = d.list().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].manifest.as_ref().unwrap(), &m2);
        assert_eq!(
            std::fs::read(t.path().join("snapshots").join(&m1.name).join("a/f")).unwrap(),
            b"hello"
        );
        // Leftovers of a killed run go; the snapshots stay.
        std::fs::create_dir_all(t.path().join("snapshots/.tmp-x/deep")).unwrap();
        std::fs::write(t.path().join(".fsync-repl/snapshots/gone.json"), b"{}").unwrap();
        let th = Throttle::new(None, None);
        assert_eq!(d.clean_up(&th).unwrap(), 2);
        assert_eq!(d.list().unwrap().len(), 2);
        assert_eq!(
            d.freed_by(std::slice::from_ref(&m1.name), &th).unwrap(),
            vec![0]
        );
        d.remove(&m1.name, &th, 2, Default::default()).unwrap();
        assert_eq!(d.list().unwrap().len(), 1);
        assert!(!t
            .path()
            .join(".fsync-repl/snapshots")
            .join(format!("{}.json", m1.name))
            .exists());
        assert!(matches!(
            d.remove("../x", &th, 1, Default::default()),
            Err(SnapshotError::NotFound { .. })
        ));
        // An interrupted snapshot leaves no final name.
        let stop = AtomicBool::new(true);
        assert!(matches!(
            take(&d, 1_800_000_100, &stop),
            Err(SnapshotError::Interrupted)
        ));
        assert_eq!(d.list().unwrap().len(), 1);
    }
}

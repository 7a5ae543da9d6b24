//! `versions`: the distinct versions of one path across DEST's snapshots and `current`.
//!
//! A snapshot hard-links what did not change, so a file that keeps its inode from one
//! snapshot to the next is the same version (the engine never writes in place). A
//! symlink is told by its target (snapshots recreate symlinks), a directory by the
//! names, kinds and identities of everything beneath it. Everything is read beneath
//! DEST's descriptor without following a symlink (invariant 3), and only read.

use std::os::fd::AsFd;

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::snapshot::{BackupDir, CURRENT, SNAPSHOTS};
use crate::throttle::Throttle;

/// What one snapshot (or `current`) holds at the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The snapshot's name, or `current`.
    pub snapshot: String,
    /// Its time (UTC seconds; `None` for `current`).
    pub time: Option<i64>,
    /// The version it holds (1-based), `None` when the path is absent.
    pub version: Option<usize>,
    /// Same inode (same content) as in the snapshot listed just before.
    pub unchanged: bool,
}

/// One distinct version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: usize,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Bytes (of every file beneath, for a directory).
    pub size: u64,
    /// Modification time, UTC seconds (the newest beneath, for a directory).
    pub mtime: i64,
    /// The file's inode (0 for other kinds).
    pub ino: u64,
    /// The snapshots holding it, oldest first (`current` last).
    pub snapshots: Vec<String>,
}

/// The answer of `versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The path inside the snapshots (`""`: the whole tree), escaped.
    pub path: String,
    pub versions: Vec<Version>,
    pub holdings: Vec<Holding>,
}

/// What identifies a version, and what is shown of it.
struct Seen {
    id: blake3::Hash,
    kind: &'static str,
    size: u64,
    mtime: i64,
    ino: u64,
}

/// Turns PATH as typed into a path inside the snapshots: relative as it is, or
/// absolute beneath one of the sources the snapshots were taken of.
pub fn relative(typed: &[u8], sources: &[String]) -> Result<Vec<u8>, String> {
    let mut p: &[u8] = typed;
    if p.first() == Some(&b'/') {
        let under = sources.iter().find_map(|s| {
            let s = s.trim_end_matches('/').as_bytes();
            match p.strip_prefix(s) {
                Some(rest) if rest.is_empty() || rest[0] == b'/' => Some(rest),
                _ => None,
            }
        });
        match under {
            Some(rest) => p = rest,
            None => {
                return Err(format!(
                    "{}: an absolute path must lie under the backed-up source ({}); or give \
                     it relative to the snapshots' root",
                    crate::text::escape(typed),
                    if sources.is_empty() {
                        "not recorded".to_string()
                    } else {
                        sources.join(", ")
                    }
                ))
            }
        }
    }
    let parts: Vec<&[u8]> = p
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let rel = parts.join(&b'/');
    if !rel.is_empty() && !fsutil::valid_rel_path(&rel) {
        return Err(format!(
            "{}: give a path inside the snapshots, without `..`",
            crate::text::escape(typed)
        ));
    }
    Ok(rel)
}

/// `rel` beneath DEST for the snapshot `name` (or `current`).
pub fn in_snapshot(name: &str, rel: &[u8]) -> Vec<u8> {
    let mut base = if name == CURRENT {
        CURRENT.as_bytes().to_vec()
    } else {
        format!("{SNAPSHOTS}/{name}").into_bytes()
    };
    if !rel.is_empty() {
        base.push(b'/');
        base.extend_from_slice(rel);
    }
    base
}

fn kind_of(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

/// The kind of what `rel` (beneath DEST) is, `None` when absent; no symlink on the way
/// is followed.
pub fn kind_at(dest: &BackupDir, rel: &[u8]) -> std::io::Result<Option<&'static str>> {
    let (parent, name) = (crate::tree::parent(rel), crate::tree::file_name(rel));
    let dir = match fsutil::open_dir(dest.root(), parent) {
        Ok(d) => d,
        Err(e) if fsutil::is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Ok(None)
        }
        // A symlink on the way: the path is not in the tree as a path.
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::EXDEV) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    match fsutil::stat_at(dir.as_fd(), name) {
        Ok(st) => Ok(Some(kind_of(st.st_mode))),
        Err(e) if fsutil::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Looks at `rel` beneath DEST (`shallow`: not inside a directory).
fn look(
    dest: &BackupDir,
    rel: &[u8],
    (whole, shallow): (bool, bool),
    throttle: &Throttle,
) -> std::io::Result<Option<Seen>> {
    let (parent, name) = (crate::tree::parent(rel), crate::tree::file_name(rel));
    if kind_at(dest, rel)?.is_none() {
        return Ok(None);
    }
    throttle.op();
    let dir = fsutil::open_dir(dest.root(), parent)?;
    let st = fsutil::stat_at(dir.as_fd(), name)?;
    let kind = kind_of(st.st_mode);
    let mut h = blake3::Hasher::new();
    h.update(kind.as_bytes());
    let (mut size, mut mtime, ino) = (st.st_size as u64, st.st_mtime as i64, st.st_ino);
    match kind {
        "file" | "other" => {
            h.update(&st.st_ino.to_le_bytes());
        }
        "symlink" => {
            h.update(&fsutil::readlink_at(dir.as_fd(), name)?);
        }
        _ if shallow => {}
        _ => {
            size = 0;
            let mut stack = vec![rel.to_vec()];
            let mut names = Vec::new();
            while let Some(d) = stack.pop() {
                throttle.op();
                let fd = fsutil::open_dir(dest.root(), &d)?;
                for n in fsutil::read_dir_names(fd.as_fd())? {
                    // The replica's own records are no part of the tree.
                    if whole && d.len() == rel.len() && n == crate::identity::SIDECAR {
                        continue;
                    }
                    let st = fsutil::stat_at(fd.as_fd(), &n)?;
                    let path = crate::tree::join(&d[rel.len()..], &n);
                    let k = kind_of(st.st_mode);
                    mtime = mtime.max(st.st_mtime as i64);
                    let id = match k {
                        "dir" => {
                            stack.push(crate::tree::join(&d, &n));
                            Vec::new()
                        }
                        "symlink" => fsutil::readlink_at(fd.as_fd(), &n)?,
                        _ => {
                            size += st.st_size as u64;
                            st.st_ino.to_le_bytes().to_vec()
                        }
                    };
                    names.push((path, k, id));
                }
            }
            names.sort();
            for (p, k, id) in names {
                for part in [&p[..], k.as_bytes(), &id] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part);
                }
            }
        }
    }
    Ok(Some(Seen {
        id: h.finalize(),
        kind,
        size,
        mtime,
        ino: if kind == "file" { ino } else { 0 },
    }))
}

/// The versions of `rel` across DEST's snapshots, oldest first, then `current`
/// (`shallow`: every directory counts as the same version).
pub fn versions(
    dest: &BackupDir,
    rel: &[u8],
    shallow: bool,
    throttle: &Throttle,
) -> crate::error::Result<Versions> {
    let mut names: Vec<(String, Option<i64>)> = dest
        .list()?
        .into_iter()
        .map(|s| (s.name, Some(s.time)))
        .collect();
    names.push((CURRENT.to_string(), None));
    let mut out = Versions {
        path: crate::text::escape(rel),
        versions: Vec::new(),
        holdings: Vec::new(),
    };
    // Each version's index in `out.versions`, by its id.
    let mut ids: std::collections::HashMap<blake3::Hash, usize> = Default::default();
    let mut previous: Option<blake3::Hash> = None;
    for (name, time) in names {
        let at = in_snapshot(&name, rel);
        let seen = look(dest, &at, (rel.is_empty(), shallow), throttle).map_err(|e| {
            crate::Error::dest("read", dest.path().join(crate::tree::as_path(&at)), e)
        })?;
        let version = seen.map(|s| {
            let k = match ids.get(&s.id) {
                Some(&k) => k,
                None => {
                    ids.insert(s.id, out.versions.len());
                    out.versions.push(Version {
                        version: out.versions.len() + 1,
                        kind: s.kind.into(),
                        size: s.size,
                        mtime: s.mtime,
                        ino: s.ino,
                        snapshots: Vec::new(),
                    });
                    out.versions.len() - 1
                }
            };
            out.versions[k].snapshots.push(name.clone());
            (k, s.id)
        });
        let unchanged = matches!((version, previous), (Some((_, a)), Some(b)) if a == b);
        previous = version.map(|v| v.1);
        out.holdings.push(Holding {
            snapshot: name,
            time,
            version: version.map(|v| v.0 + 1),
            unchanged,
        });
    }
    Ok(out)
}

impl Versions {
    /// The table for a terminal: one line per run of snapshots holding the same
    /// version (or none). Every string is escaped (it may come from a far side).
    pub fn human(&self) -> String {
        let e = crate::text::escape_str;
        let mut s = format!(
            "{}\n{:<8} {:<8} {:>11}  {:<21} SNAPSHOTS\n",
            if self.path.is_empty() {
                "(whole tree)".to_string()
            } else {
                e(&self.path)
            },
            "VERSION",
            "KIND",
            "SIZE",
            "MTIME (UTC)"
        );
        let runs = self
            .holdings
            .chunk_by(|a, b| a.version == b.version && b.unchanged == (a.version.is_some()));
        for run in runs {
            let (first, last) = (&run[0], &run[run.len() - 1]);
            let span = if run.len() == 1 {
                e(&first.snapshot)
            } else {
                format!(
                    "{} .. {} ({})",
                    e(&first.snapshot),
                    e(&last.snapshot),
                    run.len()
                )
            };
            match first.version.and_then(|v| self.versions.get(v - 1)) {
                Some(v) => s.push_str(&format!(
                    "{:<8} {:<8} {:>11}  {:<21} {span}\n",
                    v.version,
                    e(&v.kind),
                    crate::units::human_bytes(v.size),
                    crate::snapshot::retention::format_utc(v.mtime),
                )),
                None => s.push_str(&format!(
                    "{:<8} {:<8} {:>11}  {:<21} {span}\n",
                    "-", "absent", "", ""
                )),
            }
        }
        s.push_str(&format!("{} distinct version(s)", self.versions.len()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths_become_paths_inside_the_snapshots() {
        let src = vec!["/home".to_string()];
        assert_eq!(relative(b"alice/doc.txt", &src).unwrap(), b"alice/doc.txt");
        assert_eq!(
            relative(b"./alice//doc.txt/", &src).unwrap(),
            b"alice/doc.txt"
        );
        assert_eq!(
            relative(b"/home/alice/doc.txt", &src).unwrap(),
            b"alice/doc.txt"
        );
        assert_eq!(relative(b"/home", &src).unwrap(), b"");
        assert_eq!(relative(b".", &src).unwrap(), b"");
        assert!(relative(b"/homes/x", &src).unwrap_err().contains("/home"));
        assert!(relative(b"a/../../etc", &src).unwrap_err().contains(".."));
        assert_eq!(in_snapshot("S", b"a/b"), b"snapshots/S/a/b");
        assert_eq!(in_snapshot("current", b""), b"current");
    }
}

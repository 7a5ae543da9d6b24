//! The change model: what the kernel reports (inotify's event bits, which fanotify
//! shares), as changes of relative paths, and the directories each change makes dirty.
//!
//! [`convert`] turns one kernel event (directory, name, mask) into a [`Change`];
//! [`dirty_of`] says which directories a change makes dirty: the parent of the changed
//! entry (shallow: its names and metadata), and a directory that appeared, vanished or
//! moved as a whole (recursive), as does the directory of a changed `.fsyncignore`.
//! Both are pure and table-tested.

use rustix::fs::inotify::ReadFlags;

use crate::scan::IGNORE_FILE;
use crate::tree::{file_name, join, parent};

/// What happened to an entry, as inotify reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Removed,
    /// Content written (IN_MODIFY, IN_CLOSE_WRITE).
    Modified,
    /// Metadata only (IN_ATTRIB).
    Attrib,
    MovedFrom,
    MovedTo,
}

/// One change of an entry, its path relative to the watched root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: Vec<u8>,
    pub is_dir: bool,
    pub kind: ChangeKind,
}

/// What the watcher hands over the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Change(Change),
    /// Events beneath this directory may have been lost: scan it whole.
    Rescan(Vec<u8>),
}

/// The directories a change makes dirty, as (dir, recursive) pairs.
pub fn dirty_of(c: &Change) -> Vec<(&[u8], bool)> {
    let mut v = Vec::with_capacity(2);
    // The root's own metadata is compared by every batch; "" makes one run.
    v.push((parent(&c.path), false));
    let whole = matches!(
        c.kind,
        ChangeKind::Created | ChangeKind::Removed | ChangeKind::MovedFrom | ChangeKind::MovedTo
    );
    if c.is_dir && whole {
        v.push((c.path.as_slice(), true));
    } else if !c.is_dir && file_name(&c.path) == IGNORE_FILE {
        // Filters changed: what they select below this directory may differ.
        v[0].1 = true;
    }
    v
}

/// Converts one kernel event on directory `dir` into a change (`None`: not one that
/// matters). `name` is the entry's name; without one, the event concerns `dir` itself.
pub fn convert(dir: &[u8], name: Option<&[u8]>, mask: u32) -> Option<Change> {
    let has = |f: ReadFlags| mask & f.bits() != 0;
    let is_dir = has(ReadFlags::ISDIR);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        // The directory's own metadata changed: its entry in its parent.
        return has(ReadFlags::ATTRIB).then(|| Change {
            path: dir.to_vec(),
            is_dir: true,
            kind: ChangeKind::Attrib,
        });
    };
    let kind = if has(ReadFlags::MOVED_FROM) {
        ChangeKind::MovedFrom
    } else if has(ReadFlags::MOVED_TO) {
        ChangeKind::MovedTo
    } else if has(ReadFlags::CREATE) {
        ChangeKind::Created
    } else if has(ReadFlags::DELETE) {
        ChangeKind::Removed
    } else if has(ReadFlags::MODIFY) || has(ReadFlags::CLOSE_WRITE) {
        ChangeKind::Modified
    } else if has(ReadFlags::ATTRIB) {
        ChangeKind::Attrib
    } else {
        return None;
    };
    Some(Change {
        path: join(dir, name),
        is_dir,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISDIR: u32 = libc::IN_ISDIR;

    type Row = (
        &'static str,
        Option<&'static str>,
        u32,
        Option<(&'static str, bool, ChangeKind)>,
    );

    #[test]
    fn kernel_events_convert_to_changes() {
        use ChangeKind::*;
        // (dir, name, mask, expected (path, is_dir, kind))
        let table: &[Row] = &[
            ("", Some("f"), libc::IN_CREATE, Some(("f", false, Created))),
            (
                "a",
                Some("f"),
                libc::IN_CLOSE_WRITE,
                Some(("a/f", false, Modified)),
            ),
            (
                "a",
                Some("f"),
                libc::IN_MODIFY,
                Some(("a/f", false, Modified)),
            ),
            (
                "a",
                Some("d"),
                libc::IN_CREATE | ISDIR,
                Some(("a/d", true, Created)),
            ),
            (
                "a",
                Some("d"),
                libc::IN_MOVED_FROM | ISDIR,
                Some(("a/d", true, MovedFrom)),
            ),
            (
                "a",
                Some("f"),
                libc::IN_MOVED_TO,
                Some(("a/f", false, MovedTo)),
            ),
            (
                "a",
                Some("f"),
                libc::IN_DELETE,
                Some(("a/f", false, Removed)),
            ),
            (
                "a",
                Some("f"),
                libc::IN_ATTRIB,
                Some(("a/f", false, Attrib)),
            ),
            ("a/b", None, libc::IN_ATTRIB, Some(("a/b", true, Attrib))),
            ("a/b", None, libc::IN_DELETE_SELF, None),
            ("a", Some("f"), libc::IN_OPEN, None),
        ];
        for &(dir, name, mask, want) in table {
            let got = convert(dir.as_bytes(), name.map(str::as_bytes), mask);
            let want = want.map(|(p, d, k)| Change {
                path: p.as_bytes().to_vec(),
                is_dir: d,
                kind: k,
            });
            assert_eq!(got, want, "{dir} {name:?} {mask:#x}");
        }
    }

    #[test]
    fn dirty_directories_of_a_change() {
        let c = |p: &str, is_dir, kind| Change {
            path: p.as_bytes().to_vec(),
            is_dir,
            kind,
        };
        let moved = c("a/d", true, ChangeKind::MovedTo);
        assert_eq!(
            dirty_of(&moved),
            vec![(&b"a"[..], false), (&b"a/d"[..], true)]
        );
        let rules = c("a/.fsyncignore", false, ChangeKind::Modified);
        assert_eq!(dirty_of(&rules), vec![(&b"a"[..], true)]);
        let root = c("", true, ChangeKind::Attrib);
        assert_eq!(dirty_of(&root), vec![(&b""[..], false)]);
    }
}

//! A production-shaped tree: `homes` × `dirs` × `files`, the file sizes repeating.
//!
//! Real homes are full of files of equal size (configs, lock and marker files, mail,
//! thumbnails), which is what makes pairing by size quadratic. `make` writes
//! `home{h}/d{k}/f{f}`: file `f` of every directory has the same size and content, so
//! there are only `sizes` distinct sizes in the whole tree. With `empty`, every file is
//! empty instead, so millions of entries fit in a few hundred MiB of tmpfs (its inodes
//! are what counts then: one per entry). Every file gets the same fixed mtime, so two
//! runs of `make` give identical trees. Used by the tests at a small size and by
//! `examples/corpus.rs grid` (the scale benchmarks) at millions of entries.

use std::fs;
use std::path::Path;

/// The shape of a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub homes: usize,
    pub dirs: usize,
    pub files: usize,
    /// Distinct file sizes (the file number modulo this picks the size), at least 1.
    pub sizes: usize,
    /// All files empty (size 0).
    pub empty: bool,
}

impl Grid {
    /// Entries below the root: homes, their directories and files.
    pub fn entries(&self) -> u64 {
        let h = self.homes as u64;
        h + h * self.dirs as u64 * (1 + self.files as u64)
    }

    /// Size of file number `f`.
    pub fn size(&self, f: usize) -> usize {
        if self.empty {
            0
        } else {
            f % self.sizes.max(1) * 100 + 10
        }
    }

    /// The relative path of one file.
    pub fn path(h: usize, k: usize, f: usize) -> String {
        format!("home{h:04}/d{k:03}/f{f:03}")
    }

    /// Two trees of empty files for memory tests: 3,662 and 73,240 entries (20×), the
    /// same directories, so that what grows with the tree stands out.
    pub fn memory_pair() -> (Grid, Grid) {
        let small = Grid {
            homes: 2,
            dirs: 30,
            files: 60,
            sizes: 3,
            empty: true,
        };
        (small, Grid { homes: 40, ..small })
    }
}

/// Base of the grid's mtimes (2023-11-14T22:13:20Z).
const MTIME: i64 = 1_700_000_000;

/// Writes the grid into `root` (created if missing).
pub fn make(root: &Path, g: &Grid) {
    let data: Vec<Vec<u8>> = (0..g.files)
        .map(|f| vec![b'A' + (f % 26) as u8; g.size(f)])
        .collect();
    let ts = rustix::fs::Timespec {
        tv_sec: MTIME,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    for h in 0..g.homes {
        for k in 0..g.dirs {
            let dir = root.join(format!("home{h:04}/d{k:03}"));
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            for (f, bytes) in data.iter().enumerate() {
                let p = dir.join(format!("f{f:03}"));
                fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                rustix::fs::utimensat(rustix::fs::CWD, &p, &times, rustix::fs::AtFlags::empty())
                    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
            }
        }
    }
}

//! `verify --against SRC`: compares `DEST/current` with SRC by content.
//!
//! Both trees are listed with the engine's own scan (SRC with its `.fsyncignore` files,
//! as a push sees it); what SRC's filters exclude is not expected in `current`. Files
//! of equal size are read on both sides, through the throttle, and their BLAKE3
//! compared; symlinks by target. SRC is only read (invariant 1).

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::verify::{Difference, Outcome, Request};
use crate::error::{Error, Result};
use crate::scan::ScanOptions;
use crate::snapshot::{BackupDir, CURRENT};
use crate::tree::Kind;

/// Adds the differences between `current` and `src` to `out`.
pub fn compare(dest: &BackupDir, src: &Path, r: &Request<'_>, out: &mut Outcome) -> Result<()> {
    let source = crate::source::Source::open(src).map_err(|e| Error::Selection {
        path: src.to_path_buf(),
        what: format!("cannot open the source: {e}"),
    })?;
    let current =
        crate::fsutil::open_dir(dest.root(), CURRENT.as_bytes()).map_err(|e| Error::Selection {
            path: dest.path().join(CURRENT),
            what: format!("no replica to compare with SRC: {e}"),
        })?;
    // The throttle is shared by reference; the scan wants its own handle to count.
    let counter = Arc::new(crate::throttle::Throttle::new(r.throttle.rate(), None));
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = |ignore_files| ScanOptions {
        ignore_files,
        throttle: Some(counter.clone()),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let (s, d) = r.pool.install(|| {
        (
            crate::scan::scan(source.root(), &opts(true)),
            crate::scan::scan(current.as_fd(), &opts(false)),
        )
    });
    let s = s.map_err(|what| Error::Selection {
        path: src.to_path_buf(),
        what,
    })?;
    let d = d.map_err(|what| Error::Selection {
        path: dest.path().join(CURRENT),
        what,
    })?;
    let (sl, dl) = (&s.listing, &d.listing);
    let name = |p: &[u8]| crate::text::escape(&crate::tree::join(CURRENT.as_bytes(), p));
    let mut diffs = Vec::new();
    let mut both = Vec::new();
    for i in 0..sl.len() {
        let (p, se) = (sl.path(i), sl.get(i));
        match dl.find(p) {
            None => diffs.push(Difference {
                path: name(p),
                what: "missing (SRC has it)".into(),
            }),
            Some(j) => {
                let de = dl.get(j);
                if se.kind != de.kind {
                    diffs.push(Difference {
                        path: name(p),
                        what: format!("a {:?} in SRC, a {:?} here", se.kind, de.kind),
                    });
                } else if se.kind == Kind::Symlink && sl.target(i) != dl.target(j) {
                    diffs.push(Difference {
                        path: name(p),
                        what: "symlink target differs from SRC".into(),
                    });
                } else if se.kind == Kind::File && se.size != de.size {
                    diffs.push(Difference {
                        path: name(p),
                        what: format!("size {} but {} in SRC", de.size, se.size),
                    });
                } else if se.kind == Kind::File {
                    both.push(p.to_vec());
                }
            }
        }
    }
    for j in 0..dl.len() {
        let (p, de) = (dl.path(j), dl.get(j));
        let excluded = s
            .filter
            .excluded_or_within_excluded(p, de.kind == Kind::Dir);
        if sl.find(p).is_none() && !excluded {
            diffs.push(Difference {
                path: name(p),
                what: "not in SRC".into(),
            });
        }
    }
    out.compared = sl.len() as u64;
    let content: Vec<Difference> = r.pool.install(|| {
        both.par_iter()
            .filter_map(|p| {
                if r.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                let a = source.hash(p, r.throttle);
                let b = crate::snapshot::catalogue::hash_at(current.as_fd(), p, r.throttle).ok();
                match (a, b) {
                    (Some(a), Some((b, _))) if a == b => None,
                    (None, _) => Some(Difference {
                        path: name(p),
                        what: "its SRC file cannot be read".into(),
                    }),
                    _ => Some(Difference {
                        path: name(p),
                        what: "content differs from SRC".into(),
                    }),
                }
            })
            .collect()
    });
    if r.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    diffs.extend(content);
    diffs.sort_by(|a, b| a.path.cmp(&b.path));
    out.differ.extend(diffs);
    Ok(())
}

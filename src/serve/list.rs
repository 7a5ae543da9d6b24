//! Serving a listing request: the destination's listing in chunks, then its end.

use super::*;
use crate::protocol::listing;

impl Receiver<'_> {
    pub(super) fn list(
        &mut self,
        id: u64,
        xattrs: bool,
        scope: Option<Vec<(serde_bytes::ByteBuf, bool)>>,
    ) -> Result<(), ProtoError> {
        let scope = match scope {
            Some(pairs) => Some(std::sync::Arc::new(
                crate::scope::Scope::from_pairs(pairs.iter().map(|(p, r)| (p.as_slice(), *r)))
                    .map_err(|e| bad(format!("list request: {e}")))?,
            )),
            None => None,
        };
        let opts = ScanOptions {
            xattrs,
            scope,
            ..ScanOptions::default()
        };
        let scanned = match self.dest.list(&opts) {
            Ok(s) => s,
            Err(e) => {
                return self.reply(Reply::ListEnd {
                    id,
                    root: None,
                    owners: self.dest.sets_owners(),
                    problems: vec![(serde_bytes::ByteBuf::new(), e.to_string(), false)],
                })
            }
        };
        let l = &scanned.listing;
        let mut enc = listing::Encoder::default();
        for i in 0..l.len() {
            let e = l.get(i);
            enc.push(&WireEntry {
                path: l.path(i).to_vec(),
                kind: e.kind.into(),
                perm: e.perm,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                alloc: l.alloc(i),
                mtime: e.mtime,
                mtime_nsec: e.mtime_nsec,
                nlink: e.nlink.into(),
                ino: l.ino(i),
                dev: 0,
                target: l.target(i).to_vec(),
                rdev: l.rdev(i),
                xattr_digest: l.xattr_digest(i),
            });
            if enc.len() == LIST_CHUNK || enc.raw_len() >= LIST_CHUNK_BYTES {
                let chunk = enc.finish();
                // Compressed already: raw, beside the stream.
                frame::write_frame(self.out.raw()?, &Reply::Listing { id, chunk })?;
            }
        }
        if !enc.is_empty() {
            let chunk = enc.finish();
            frame::write_frame(self.out.raw()?, &Reply::Listing { id, chunk })?;
        }
        let problems = scanned
            .problems
            .into_iter()
            .map(|p| (serde_bytes::ByteBuf::from(p.path), p.what, p.vanished))
            .collect();
        let root = scanned.root.as_ref().map(|m| WireEntry {
            path: Vec::new(),
            kind: m.kind.into(),
            perm: m.perm,
            uid: m.uid,
            gid: m.gid,
            size: 0,
            alloc: 0,
            mtime: m.mtime,
            mtime_nsec: m.mtime_nsec,
            nlink: m.nlink,
            ino: m.ino,
            dev: 0,
            target: Vec::new(),
            rdev: 0,
            xattr_digest: match m.extra {
                Some(crate::tree::Extra::Xattrs(d)) => d,
                _ => 0,
            },
        });
        self.reply(Reply::ListEnd {
            id,
            root,
            owners: self.dest.sets_owners(),
            problems,
        })
    }
}

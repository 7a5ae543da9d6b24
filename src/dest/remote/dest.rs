//! [`RemoteDest`] as a [`Destination`]: each operation a request and its answer.

use super::*;

impl Destination for RemoteDest {
    fn broken(&self) -> Option<String> {
        self.conn.failure()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn sets_owners(&self) -> bool {
        self.far_owners.load(Ordering::Relaxed)
    }

    fn list(&self, opts: &ScanOptions) -> Result<Scanned, ListError> {
        self.fetch_listing(opts)
    }

    fn list_with_source(
        &self,
        src: std::os::fd::BorrowedFd<'_>,
        src_opts: &ScanOptions,
        opts: &ScanOptions,
        keep_from: u64,
    ) -> Option<Result<crate::scan::Paired, crate::dest::PairError>> {
        Some(self.list_against(src, src_opts, opts, keep_from))
    }

    fn space(&self) -> io::Result<Space> {
        let id = self.conn.id();
        match self.conn.call(id, Request::Space { id })? {
            Reply::Space {
                space: Some((avail, total, inodes_avail, inodes_total)),
                ..
            } => Ok(Space {
                avail,
                total,
                inodes_avail,
                inodes_total,
            }),
            Reply::Space { space: None, .. } => Err(io::Error::other(
                "the remote side cannot tell its free space",
            )),
            other => Err(self.conn.unexpected(&other)),
        }
    }

    fn hash(&self, rel: &[u8]) -> Option<Hash> {
        let id = self.conn.id();
        match self
            .conn
            .call(
                id,
                Request::Hash {
                    id,
                    path: rel.to_vec(),
                },
            )
            .ok()?
        {
            Reply::Hash { hash, .. } => hash,
            _ => None,
        }
    }

    fn remove(&self, rel: &[u8], kind: Kind) -> io::Result<()> {
        self.op(FsOp::Remove {
            path: rel.to_vec(),
            kind: kind.into(),
        })
    }

    fn remove_tree(&self, rel: &[u8]) -> io::Result<()> {
        self.op(FsOp::RemoveTree { path: rel.to_vec() })
    }

    fn mkdir(&self, rel: &[u8], perm: u32) -> io::Result<()> {
        self.op(FsOp::Mkdir {
            path: rel.to_vec(),
            perm,
        })
    }

    fn rename(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        self.op(FsOp::Rename {
            from: from.to_vec(),
            to: to.to_vec(),
        })
    }

    fn start_file(
        &self,
        _dirs: &mut crate::fsutil::DirCache,
        f: FileWrite<'_>,
    ) -> Result<Started<'_>, PutError> {
        let (src, mode) = (f.src, f.mode);
        if Self::small_delta(src, mode) {
            return self.start_small(f.rel, src, f.meta, f.xattrs);
        }
        if !Self::sends_whole(src, mode) || Self::resumes(src, mode) {
            // A delta waits for signatures and may be resent whole: keep it in step.
            return self.stage_file(f).map(|(s, stats)| Started::Done(s, stats));
        }
        // Whole data needs no answer before the next file: many files are in flight.
        let (id, rx, stats) = self.send_file(f)?;
        Ok(Started::Waiting(Box::new(move || {
            self.wait_staged(id, &rx).map(|s| (s, stats))
        })))
    }

    fn stage_local_copy(
        &self,
        rel: &[u8],
        from: &[u8],
        meta: &SetMeta,
    ) -> Result<Staged, PutError> {
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        self.conn
            .send_req(
                Request::LocalCopy {
                    id,
                    path: rel.to_vec(),
                    from: from.to_vec(),
                    meta: meta.into(),
                },
                false,
            )
            .map_err(|e| PutError::Dest { op: "send", err: e })?;
        self.wait_staged(id, &rx)
    }

    fn commit(&self, staged: &[Staged]) -> io::Result<Vec<(usize, io::Error)>> {
        let id = self.conn.id();
        let n = staged.len();
        let staged = staged.iter().map(WireStaged::from).collect();
        match self.conn.call(id, Request::Commit { id, staged })? {
            Reply::Committed { result, .. } => {
                let failed = result.map_err(from_wire)?;
                // Indices name files of this batch, each once.
                let mut seen = std::collections::HashSet::new();
                failed
                    .into_iter()
                    .map(|(k, e)| {
                        let k = k as usize;
                        if k < n && seen.insert(k) {
                            Ok((k, from_wire(e)))
                        } else {
                            Err(self.conn.fail(
                                "protocol error: a commit failure names no file of the batch"
                                    .into(),
                            ))
                        }
                    })
                    .collect()
            }
            other => Err(self.conn.unexpected(&other)),
        }
    }

    fn discard(&self, staged: &Staged) {
        let _ = self.conn.send_req(
            Request::Discard {
                staged: vec![staged.into()],
            },
            true,
        );
    }

    fn link(&self, rel: &[u8], leader: &[u8]) -> io::Result<()> {
        self.op(FsOp::Link {
            path: rel.to_vec(),
            leader: leader.to_vec(),
        })
    }

    fn symlink(&self, rel: &[u8], target: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::Symlink {
            path: rel.to_vec(),
            target: target.to_vec(),
            meta: meta.into(),
        })
    }

    fn mknod(&self, rel: &[u8], meta: &SetMeta, rdev: u64) -> io::Result<()> {
        self.op(FsOp::Mknod {
            path: rel.to_vec(),
            meta: meta.into(),
            rdev,
        })
    }

    fn set_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::SetMeta {
            path: rel.to_vec(),
            meta: meta.into(),
        })
    }

    fn set_dir_xattrs(&self, rel: &[u8], xattrs: &fsutil::Xattrs) -> io::Result<()> {
        let xattrs = xattrs
            .iter()
            .map(|(n, v)| WireXattr(n.clone(), v.clone()))
            .collect();
        self.op(FsOp::SetDirXattrs {
            path: rel.to_vec(),
            xattrs,
        })
    }

    fn set_dir_meta(&self, rel: &[u8], meta: &SetMeta) -> io::Result<()> {
        self.op(FsOp::SetDirMeta {
            path: rel.to_vec(),
            meta: meta.into(),
        })
    }

    fn completed(&self) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(id, Request::Completed { id })
    }

    fn finish(&self) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(id, Request::Finish { id })
    }

    fn source_record(&self) -> io::Result<Option<Vec<u8>>> {
        let id = self.conn.id();
        match self.conn.call(id, Request::SourceRecord { id })? {
            Reply::Record { result, .. } => match result.map_err(from_wire)? {
                Some(r) if r.len() > crate::identity::MAX_RECORD => Err(self
                    .conn
                    .fail("protocol error: the source record is too large".into())),
                r => Ok(r.map(serde_bytes::ByteBuf::into_vec)),
            },
            other => Err(self.conn.unexpected(&other)),
        }
    }

    fn set_source_record(&self, record: &[u8]) -> io::Result<()> {
        let id = self.conn.id();
        self.call_done(
            id,
            Request::SetSourceRecord {
                id,
                record: record.to_vec(),
            },
        )
    }
}

impl RemoteDest {
    /// Writes a file's data into a temporary file on the far side and waits for it.
    fn stage_file(&self, f: FileWrite<'_>) -> Result<(Staged, DataStats), PutError> {
        match self.stage_once(f) {
            // A delta that did not verify on the far side: send whole (a resumed file:
            // the far side dropped what it kept).
            Err(PutError::SourceChanged)
                if (f.mode == DataMode::Delta || Self::resumes(f.src, f.mode))
                    && f.src.unchanged().unwrap_or(false) =>
            {
                self.stage_once(f.with_mode(DataMode::Whole))
            }
            r => r,
        }
    }
}

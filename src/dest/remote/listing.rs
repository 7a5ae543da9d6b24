//! Receiving the far side's listing: bounded in entries and bytes, paths validated.

use super::*;
use crate::dest::PairError;
use crate::protocol::listing;
use crate::scan::Paired;
use crate::tree::{self, Meta};

/// Whether an entry of the far side's listing is kept (`Err`: the far side broke the
/// protocol).
type Keep<'a> = dyn FnMut(&[u8], &Meta) -> Result<bool, String> + 'a;

/// Bytes of names one listing chunk may unpack to, at most (4096 names of 4 KiB fill a
/// quarter of it).
const CHUNK_NAME_BYTES: u64 = 64 << 20;

impl RemoteDest {
    /// The far side's listing (see [`Destination::list`]).
    pub(super) fn fetch_listing(&self, opts: &ScanOptions) -> Result<Scanned, ListError> {
        let (id, rx) = self.ask_listing(opts)?;
        self.receive_listing(id, &rx, opts, &mut |_, _| Ok(true))
    }

    /// SRC walked while the far side lists DEST, then DEST's entries compared with SRC's
    /// as they are unpacked: those [`tree::unchanged`] on both sides are counted and held
    /// on neither (see [`Destination::list_with_source`]). What is held at most is SRC's
    /// listing and DEST's, still packed, not both listings unpacked.
    pub(super) fn list_against(
        &self,
        src: std::os::fd::BorrowedFd<'_>,
        src_opts: &ScanOptions,
        opts: &ScanOptions,
        keep_from: u64,
    ) -> Result<Paired, PairError> {
        let (id, rx) = self.ask_listing(opts).map_err(PairError::Dest)?;
        let mut src = crate::scan::scan(src, src_opts).map_err(PairError::Source)?;
        let sl = &src.listing;
        let mut equal = vec![false; sl.len()];
        let dst = self
            .receive_listing(id, &rx, opts, &mut |path, meta| {
                let Some(i) = sl.find(path) else {
                    return Ok(true);
                };
                if !tree::unchanged(&sl.meta(i), meta, keep_from) {
                    return Ok(true);
                }
                if std::mem::replace(&mut equal[i], true) {
                    return Err(format!(
                        "protocol error: the remote listing has duplicate entries for \"{}\"",
                        escape(path)
                    ));
                }
                Ok(false)
            })
            .map_err(PairError::Dest)?;
        src.listing = sl.retain(|i| !equal[i]);
        Ok(Paired {
            src,
            dst,
            equal: equal.iter().filter(|&&e| e).count() as u64,
        })
    }

    /// Sends the request for a listing of DEST; the answers come on the receiver.
    fn ask_listing(&self, opts: &ScanOptions) -> Result<(u64, Receiver<Reply>), ListError> {
        let id = self.conn.id();
        let rx = self.conn.expect(id);
        self.conn
            .send_req(
                Request::List {
                    id,
                    xattrs: opts.xattrs,
                    scope: opts.scope.as_ref().map(|s| {
                        s.pairs()
                            .map(|(p, r)| (serde_bytes::ByteBuf::from(p.to_vec()), r))
                            .collect()
                    }),
                },
                true,
            )
            .map_err(ListError::Session)?;
        Ok((id, rx))
    }

    /// Unpacks the answers to listing request `id`, checking each entry, and keeps
    /// those `keep` accepts (`Err`: the far side broke the protocol).
    fn receive_listing(
        &self,
        id: u64,
        rx: &Receiver<Reply>,
        opts: &ScanOptions,
        keep: &mut Keep<'_>,
    ) -> Result<Scanned, ListError> {
        let mut listing = Listing::new();
        // A far side that lists without end is refused before it exhausts this side.
        let (max, mut count, mut bytes) = (self.conn.max_listing, 0u64, 0u64);
        let max_bytes = max.saturating_mul(LISTING_ENTRY_BYTES);
        let (problems, root) = loop {
            match self.conn.wait(id, rx).map_err(ListError::Session)? {
                Reply::Listing { chunk, .. } => {
                    // Names take at most what the bound leaves (less than what it
                    // counts: the per-entry overhead comes on top below).
                    let left = max_bytes.saturating_sub(bytes);
                    let cap = left.min(CHUNK_NAME_BYTES);
                    let entries = match listing::decode_bounded(&chunk, listing::MAX_ENTRIES, cap)
                    {
                        Ok(entries) => entries,
                        Err(listing::DecodeError::Bound(_)) if cap == left => {
                            return Err(ListError::Session(self.conn.fail(format!(
                                "the remote listing has more than {max_bytes} bytes of entries; refusing it (raise --max-listing if DEST is that large)"
                            ))))
                        }
                        Err(e) => {
                            return Err(ListError::Session(self.conn.fail(format!("protocol error: {e}"))))
                        }
                    };
                    for e in entries {
                        count += 1;
                        bytes += ENTRY_OVERHEAD + (e.path.len() + e.target.len()) as u64;
                        if count > max || bytes > max_bytes {
                            let what = match count > max {
                                true => format!("more than {max} entries"),
                                false => format!("more than {max_bytes} bytes of entries"),
                            };
                            return Err(ListError::Session(self.conn.fail(format!(
                                    "the remote listing has {what}; refusing it (raise --max-listing if DEST is that large)"
                                ))
                                ));
                        }
                        if opts.scope.as_ref().is_some_and(|s| !s.admits(&e.path)) {
                            return Err(ListError::Session(self.conn.fail(format!(
                                    "protocol error: the remote listing has \"{}\", outside the requested part of the tree",
                                    escape(&e.path)
                                ))
                                ));
                        }
                        add_entry(&mut listing, e, keep)
                            .map_err(|m| ListError::Session(self.conn.fail(m)))?;
                    }
                }
                Reply::ListEnd {
                    problems: p,
                    root,
                    owners,
                    ..
                } => {
                    self.far_owners.store(owners, Ordering::Relaxed);
                    let p: Vec<Problem> = p
                        .into_iter()
                        .map(|(path, what, vanished)| Problem {
                            path: path.into_vec(),
                            // The peer's text: escaped before anything prints it.
                            what: escape_str(&what),
                            vanished,
                        })
                        .collect();
                    break (p, root.map(|r| r.meta()));
                }
                other => return Err(ListError::Session(self.conn.unexpected(&other))),
            }
        };
        lock(&self.conn.waiters).remove(&id);
        listing.sort();
        if let Some(i) = (1..listing.len()).find(|&i| listing.path(i) == listing.path(i - 1)) {
            return Err(ListError::Session(self.conn.fail(format!(
                "protocol error: the remote listing has duplicate entries for \"{}\"",
                escape(listing.path(i))
            ))));
        }
        Ok(Scanned {
            root,
            listing,
            problems,
            ..Scanned::default()
        })
    }
}

/// Adds a wire entry to a listing after validating its path, if `keep` accepts it.
fn add_entry(l: &mut Listing, e: WireEntry, keep: &mut Keep<'_>) -> Result<(), String> {
    if !fsutil::valid_rel_path(&e.path) {
        return Err(format!(
            "protocol error: the remote listing has an invalid path \"{}\"",
            escape(&e.path)
        ));
    }
    let meta = e.meta();
    if keep(&e.path, &meta)? {
        l.push(&e.path, meta);
    }
    Ok(())
}

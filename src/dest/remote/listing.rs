//! Receiving the far side's listing: bounded in entries and bytes, paths validated.

use super::*;
use crate::protocol::listing;

/// Bytes of names one listing chunk may unpack to, at most (4096 names of 4 KiB fill a
/// quarter of it).
const CHUNK_NAME_BYTES: u64 = 64 << 20;

impl RemoteDest {
    /// The far side's listing (see [`Destination::list`]).
    pub(super) fn fetch_listing(&self, opts: &ScanOptions) -> Result<Scanned, ListError> {
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
        let mut listing = Listing::new();
        // A far side that lists without end is refused before it exhausts this side.
        let (max, mut count, mut bytes) = (self.conn.max_listing, 0u64, 0u64);
        let max_bytes = max.saturating_mul(LISTING_ENTRY_BYTES);
        let (problems, root) = loop {
            match self.conn.wait(id, &rx).map_err(ListError::Session)? {
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
                        add_entry(&mut listing, e)
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

/// Adds a wire entry to a listing after validating its path.
fn add_entry(l: &mut Listing, e: WireEntry) -> Result<(), String> {
    if !fsutil::valid_rel_path(&e.path) {
        return Err(format!(
            "protocol error: the remote listing has an invalid path \"{}\"",
            escape(&e.path)
        ));
    }
    l.push(&e.path, e.meta());
    Ok(())
}

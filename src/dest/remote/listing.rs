//! Receiving the far side's listing: bounded in entries and bytes, paths validated.

use super::*;
use crate::dest::PairError;
use crate::protocol::listing;
use crate::scan::Paired;
use crate::scan::IGNORE_FILE;
use crate::scope::Scope;
use crate::tree::{self, Meta};
use std::collections::HashSet;

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
        let mut next = || self.conn.wait(id, &rx).map_err(ListError::Session);
        self.receive_listing(id, &mut next, opts, &mut |_, _| Ok(true))
    }

    /// SRC walked while the far side lists DEST, then DEST's entries compared with SRC's
    /// as they are unpacked: those [`tree::unchanged`] on both sides are counted and held
    /// on neither (see [`Destination::list_with_source`]). With `group_entries`, the
    /// root's own entries come first, then its directories a group of about that many
    /// entries at a time (each a scoped walk and a scoped listing, as a watch's batch),
    /// so that neither side holds more than a group and what differs.
    ///
    /// With [`ScanOptions::defer_new`], SRC's top-level directories that DEST lacks are
    /// compared last, and returned as pending instead (for the caller to copy in
    /// pieces) when no part found a DEST file a new file could be a move or a copy of
    /// ([`moves_from`]; a local paired walk also counts DEST-only directories and
    /// unreadable SRC ones, which hold no such file by themselves).
    pub(super) fn list_against(
        &self,
        src: std::os::fd::BorrowedFd<'_>,
        src_opts: &ScanOptions,
        opts: &ScanOptions,
        keep_from: u64,
    ) -> Result<Paired, PairError> {
        if opts.group_entries == 0 || opts.scope.is_some() || src_opts.scope.is_some() {
            let walk_opts = ScanOptions {
                defer_new: false,
                ..src_opts.clone()
            };
            return Ok(self.pair_part(src, &walk_opts, opts, keep_from)?.0);
        }
        // Only the root's part may leave SRC's directories unwalked: a walk that does
        // reads the root alone, each directory in it pending (which a scope would not
        // make them).
        let part = |scope: Scope, defer_new: bool| {
            let scope = Some(Arc::new(scope));
            let (s, d) = (
                ScanOptions {
                    scope: scope.clone().filter(|_| !defer_new),
                    defer_new,
                    ..src_opts.clone()
                },
                ScanOptions {
                    scope,
                    ..opts.clone()
                },
            );
            self.pair_part(src, &s, &d, keep_from)
        };
        // The root's rules are read by every part: the parts agree only if they stay.
        let rules = || {
            src_opts.ignore_files.then(|| {
                if let Some(t) = &src_opts.throttle {
                    t.op();
                }
                rustix::fs::statat(src, IGNORE_FILE, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|st| crate::source::fingerprint(&st))
            })
        };
        let rules_before = rules();
        let root = Scope::from_pairs([(&b""[..], false)]).expect("the root");
        let (mut whole, _) = part(root, src_opts.defer_new)?;
        let mut listed = whole.dst.listing.len() as u64 + whole.equal;
        // Any problem listing DEST's root turns pieces off: a root that cannot be read
        // lists as empty (then SRC is walked whole, as in a local paired walk), and a
        // home that could not be looked at must not be taken for a new one.
        let mut sources = moves_from(&whole, keep_from) || !whole.dst.problems.is_empty();
        let known = |ps: &[Problem]| -> HashSet<(Vec<u8>, String)> {
            ps.iter()
                .map(|p| (p.path.clone(), p.what.clone()))
                .collect()
        };
        let (mut known_src, mut known_dst) =
            (known(&whole.src.problems), known(&whole.dst.problems));
        let mut dirs: Vec<Vec<u8>> = [&whole.src.listing, &whole.dst.listing]
            .into_iter()
            .flat_map(|l| {
                (0..l.len())
                    .filter(|&i| l.get(i).kind == Kind::Dir)
                    .map(|i| l.path(i).to_vec())
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        // SRC's directories that DEST lacks wait until the rest of DEST has been seen.
        let mut pending = std::mem::take(&mut whole.src.pending);
        let dl = &whole.dst.listing;
        pending.retain(|p| {
            dl.find(p.path())
                .is_none_or(|i| dl.get(i).kind != Kind::Dir)
        });
        let new: HashSet<&[u8]> = pending.iter().map(|p| p.path()).collect();
        let (mut dirs, mut new_dirs): (Vec<_>, Vec<_>) =
            dirs.into_iter().partition(|d| !new.contains(&d[..]));
        // The first group is one directory; the next ones are sized on the entries seen
        // on the larger side.
        let budget = opts.group_entries as u64;
        let (mut done, mut seen, mut take) = (0u64, 0u64, 1u64);
        let stopped = || {
            src_opts
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
        };
        loop {
            if (done as usize) == dirs.len() {
                if new_dirs.is_empty() || stopped() {
                    break;
                }
                if !sources {
                    whole.src.pending = pending;
                    break;
                }
                dirs.append(&mut new_dirs);
            }
            if stopped() {
                break;
            }
            let group = &dirs[done as usize..dirs.len().min((done + take) as usize)];
            let scope = Scope::from_pairs(group.iter().map(|d| (d, true)))
                .map_err(|e| PairError::Source(e.to_string()))?;
            let (p, walked) = part(scope, false)?;
            sources |= moves_from(&p, keep_from);
            let far = p.dst.listing.len() as u64 + p.equal;
            listed += far;
            if listed > self.conn.max_listing {
                let what = format!("more than {} entries", self.conn.max_listing);
                return Err(PairError::Dest(self.too_large(&what)));
            }
            // Its top-level directories came with the root's entries, and so did any
            // problem of the root's (each part reads the root again).
            for (to, from) in [(&mut whole.src, &p.src), (&mut whole.dst, &p.dst)] {
                let l = &from.listing;
                to.listing.extend_where(l, |i| l.path(i).contains(&b'/'));
            }
            whole.src.filter.merge(p.src.filter);
            for (to, known, from) in [
                (&mut whole.src.problems, &mut known_src, p.src.problems),
                (&mut whole.dst.problems, &mut known_dst, p.dst.problems),
            ] {
                for problem in from {
                    if known.insert((problem.path.clone(), problem.what.clone())) {
                        to.push(problem);
                    }
                }
            }
            whole.equal += p.equal;
            (done, seen) = (done + group.len() as u64, seen + walked.max(far));
            take = (budget * done / seen.max(1)).max(1);
        }
        if rules() != rules_before {
            return Err(PairError::Source(format!(
                "{} at the root changed while the tree was compared; nothing was changed, run again",
                String::from_utf8_lossy(IGNORE_FILE)
            )));
        }
        whole.src.listing.sort();
        whole.dst.listing.sort();
        Ok(whole)
    }

    /// One part of [`RemoteDest::list_against`] (the whole tree, or its scope): what
    /// differs, and how many entries SRC's walk listed.
    fn pair_part(
        &self,
        src: std::os::fd::BorrowedFd<'_>,
        src_opts: &ScanOptions,
        opts: &ScanOptions,
        keep_from: u64,
    ) -> Result<(Paired, u64), PairError> {
        let (id, rx) = self.ask_listing(opts).map_err(PairError::Dest)?;
        // The far side's answers are gathered, packed and bounded, while SRC is walked
        // (and all of them, so that none is left behind when the walk fails).
        let (scanned, answers) = rayon::join(
            || crate::scan::scan(src, src_opts),
            || self.gather_listing(id, rx),
        );
        let mut answers = answers.map_err(PairError::Dest)?.into_iter();
        let mut src = scanned.map_err(PairError::Source)?;
        let sl = &src.listing;
        // Per SRC entry: not met in DEST's listing, met and equal, met and different.
        let (unmet, equal, differs) = (0u8, 1u8, 2u8);
        let mut met = vec![unmet; sl.len()];
        let mut next = || {
            answers.next().ok_or_else(|| {
                ListError::Session(self.conn.fail("the remote listing ended early".into()))
            })
        };
        let dst = self
            .receive_listing(id, &mut next, opts, &mut |path, meta| {
                let Some(i) = sl.find(path) else {
                    return Ok(true);
                };
                if met[i] != unmet {
                    return Err(format!(
                        "protocol error: the remote listing has duplicate entries for \"{}\"",
                        escape(path)
                    ));
                }
                let same = tree::unchanged(&sl.meta(i), meta, keep_from);
                met[i] = if same { equal } else { differs };
                Ok(!same)
            })
            .map_err(PairError::Dest)?;
        let walked = sl.len() as u64;
        let n_equal = met.iter().filter(|&&m| m == equal).count() as u64;
        if n_equal > 0 {
            src.listing = sl.retain(|i| met[i] != equal);
        }
        Ok((
            Paired {
                src,
                dst,
                equal: n_equal,
            },
            walked,
        ))
    }

    /// Fails the session on a listing larger than `--max-listing` allows (`what`: by
    /// how much).
    fn too_large(&self, what: &str) -> ListError {
        ListError::Session(self.conn.fail(format!(
            "the remote listing has {what}; refusing it (raise --max-listing if DEST is that large)"
        )))
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

    /// The answers to listing request `id`, packed, up to its end: refused once they
    /// take more than the listing's byte bound (`--max-listing`).
    fn gather_listing(&self, id: u64, rx: Receiver<Reply>) -> Result<Vec<Reply>, ListError> {
        let max_bytes = self.conn.max_listing.saturating_mul(LISTING_ENTRY_BYTES);
        let (mut answers, mut bytes) = (Vec::new(), 0u64);
        loop {
            let answer = self.conn.wait(id, &rx).map_err(ListError::Session)?;
            let Reply::Listing { chunk, .. } = &answer else {
                lock(&self.conn.waiters).remove(&id);
                answers.push(answer);
                return Ok(answers);
            };
            bytes += chunk.len() as u64;
            if bytes > max_bytes {
                return Err(self.too_large(&format!("more than {max_bytes} bytes of entries")));
            }
            answers.push(answer);
        }
    }

    /// Unpacks the answers to listing request `id` (from `next`), checking each entry,
    /// and keeps those `keep` accepts (`Err`: the far side broke the protocol).
    fn receive_listing(
        &self,
        id: u64,
        next: &mut dyn FnMut() -> Result<Reply, ListError>,
        opts: &ScanOptions,
        keep: &mut Keep<'_>,
    ) -> Result<Scanned, ListError> {
        let mut listing = Listing::new();
        // A far side that lists without end is refused before it exhausts this side.
        let (max, mut count, mut bytes) = (self.conn.max_listing, 0u64, 0u64);
        let max_bytes = max.saturating_mul(LISTING_ENTRY_BYTES);
        let (problems, root) = loop {
            match next()? {
                Reply::Listing { chunk, .. } => {
                    // Names take at most what the bound leaves (less than what it
                    // counts: the per-entry overhead comes on top below).
                    let left = max_bytes.saturating_sub(bytes);
                    let cap = left.min(CHUNK_NAME_BYTES);
                    let entries = match listing::decode_bounded(&chunk, listing::MAX_ENTRIES, cap) {
                        Ok(entries) => entries,
                        Err(listing::DecodeError::Bound(_)) if cap == left => {
                            return Err(
                                self.too_large(&format!("more than {max_bytes} bytes of entries"))
                            )
                        }
                        Err(e) => {
                            return Err(ListError::Session(
                                self.conn.fail(format!("protocol error: {e}")),
                            ))
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
                            return Err(self.too_large(&what));
                        }
                        if !fsutil::valid_rel_path(&e.path) {
                            return Err(ListError::Session(self.conn.fail(format!(
                                "protocol error: the remote listing has an invalid path \"{}\"",
                                escape(&e.path)
                            ))));
                        }
                        if opts.scope.as_ref().is_some_and(|s| !s.admits(&e.path)) {
                            return Err(ListError::Session(self.conn.fail(format!(
                                    "protocol error: the remote listing has \"{}\", outside the requested part of the tree",
                                    escape(&e.path)
                                ))
                                ));
                        }
                        let meta = e.meta();
                        if keep(&e.path, &meta)
                            .map_err(|m| ListError::Session(self.conn.fail(m)))?
                        {
                            listing.push(&e.path, meta);
                        }
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

/// Whether a part's DEST side lists a file that a new file could be a move or a copy
/// of: one without a file at its path on SRC's side, or one of `keep_from` bytes or
/// more (as [`crate::scan::scan_pair`] decides for files).
fn moves_from(p: &Paired, keep_from: u64) -> bool {
    let (s, d) = (&p.src.listing, &p.dst.listing);
    (0..d.len()).any(|i| {
        let e = d.get(i);
        e.kind == Kind::File
            && (e.size >= keep_from
                || s.find(d.path(i))
                    .is_none_or(|j| s.get(j).kind != Kind::File))
    })
}

//! The replica a watch keeps current: a local directory, or one long-lived remote session.
//!
//! Every batch runs the ordinary push against it ([`crate::transfer::push_over`] for a
//! remote one, the path of every remote push). A
//! remote destination keeps one `serve` session (one ssh start) across batches and
//! only reconnects when the session broke: a lost connection fails the batch, the
//! watcher backs off and the next attempt connects again. An idle session is kept
//! alive with a free-space query, so the far side's idle timeout never ends it. Throttle state is shared by
//! all batches, so the rate limits hold across them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dest::remote::{Conn, RemoteDest};
use crate::dest::Destination;
use crate::error::Result;
use crate::options::Options;
use crate::report::Report;
use crate::throttle::Throttle;
use crate::transfer::{push_local_with, push_over, Output};

/// Starts a remote session (spawns ssh, handshakes).
pub type Connect = Box<dyn FnMut() -> Result<Arc<Conn>> + Send>;

/// Where batches go.
pub enum Replica {
    /// A local directory, and the throttle all its batches share (made by the first).
    Local(PathBuf, Option<Arc<Throttle>>),
    Remote {
        /// DEST as given, for messages.
        name: PathBuf,
        connect: Connect,
        conn: Option<Arc<Conn>>,
        throttle: Option<Arc<Throttle>>,
        /// Sessions started (1 unless the connection was lost).
        sessions: u64,
        /// An idle session gets a request this often, so the far side's --timeout
        /// does not end it.
        keepalive: Duration,
        last_used: Instant,
    },
}

impl Replica {
    /// A remote destination reached through `connect`; an idle session is kept alive
    /// with a request every `keepalive`.
    pub fn remote(name: PathBuf, connect: Connect, keepalive: Duration) -> Replica {
        Replica::Remote {
            name,
            connect,
            conn: None,
            throttle: None,
            sessions: 0,
            keepalive,
            last_used: Instant::now(),
        }
    }

    /// Sends a cheap request on an idle remote session when it is due; a session that
    /// fails it is dropped (the next batch reconnects).
    pub fn keepalive(&mut self) {
        let Replica::Remote {
            conn,
            throttle,
            keepalive,
            last_used,
            ..
        } = self
        else {
            return;
        };
        let Some(c) = conn.clone() else {
            return;
        };
        if last_used.elapsed() < *keepalive {
            return;
        }
        *last_used = Instant::now();
        let throttle = throttle
            .get_or_insert_with(|| Arc::new(Throttle::new(None, None)))
            .clone();
        // Compression does not matter for a free-space query.
        let rd = RemoteDest::new(c.clone(), throttle, false);
        if rd.space().is_err() || c.failure().is_some() {
            if let Some(c) = conn.take() {
                c.close();
            }
        }
    }

    /// Device and inode of a local DEST's root (`None`: remote or missing).
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        match self {
            Replica::Local(d, _) => std::fs::metadata(d).ok().map(|m| (m.dev(), m.ino())),
            Replica::Remote { .. } => None,
        }
    }

    /// Remote sessions started so far (0 for a local destination).
    pub fn sessions(&self) -> u64 {
        match self {
            Replica::Local(..) => 0,
            Replica::Remote { sessions, .. } => *sessions,
        }
    }

    /// Runs one push of `src` (limited to `opts.scope`) into the destination.
    pub fn push(
        &mut self,
        opts: &Options,
        src: &Path,
        out: &dyn Output,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Report> {
        match self {
            Replica::Local(dest, throttle) => {
                let throttle = throttle
                    .get_or_insert_with(|| Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit)))
                    .clone();
                push_local_with(opts, src, dest, out, interrupted, throttle)
            }
            Replica::Remote {
                name,
                connect,
                conn,
                throttle,
                sessions,
                last_used,
                ..
            } => {
                *last_used = Instant::now();
                if conn.as_ref().is_some_and(|c| c.failure().is_some()) {
                    if let Some(c) = conn.take() {
                        c.close();
                    }
                }
                let c = match conn {
                    Some(c) => c.clone(),
                    None => {
                        let c = connect()?;
                        *sessions += 1;
                        *conn = Some(c.clone());
                        c
                    }
                };
                let throttle = throttle
                    .get_or_insert_with(|| Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit)))
                    .clone();
                let result = push_over(&c, opts, src, name, throttle, out, interrupted);
                if c.failure().is_some() {
                    // The session is gone: the next attempt starts a new one.
                    if let Some(c) = conn.take() {
                        c.close();
                    }
                }
                result
            }
        }
    }

    /// Ends a remote session.
    pub fn close(&mut self) {
        if let Replica::Remote { conn, .. } = self {
            if let Some(c) = conn.take() {
                c.close();
            }
        }
    }
}

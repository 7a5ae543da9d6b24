//! A push over an open remote session: the one path of every remote push (a one-off
//! push, each batch of a watch, the sending end of a pull).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{push_to, Output, Target};
use crate::dest::remote::{Conn, RemoteDest};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::report::Report;
use crate::throttle::Throttle;

/// Replicates the local directory `src` into the far side of `conn` (called `name` in
/// messages). A session that failed under the run says why, not what the run made of
/// it; the report counts the bytes this push moved on the session, both ways.
pub fn push_over(
    conn: &Arc<Conn>,
    opts: &Options,
    src: &Path,
    name: &Path,
    throttle: Arc<Throttle>,
    out: &dyn Output,
    interrupted: Arc<AtomicBool>,
) -> Result<Report> {
    let (sent, received) = conn.wire_bytes();
    let rd = RemoteDest::new(conn.clone(), throttle.clone(), opts.compress);
    let target = Target {
        dest: Some(&rd),
        name,
        throttle,
    };
    let result = push_to(opts, src, target, out, interrupted);
    match (result, conn.failure()) {
        (Err(_), Some(f)) => Err(Error::Protocol(f)),
        (r, _) => r.map(|mut report| {
            let (s, r) = conn.wire_bytes();
            report.wire_bytes_sent = s - sent;
            report.wire_bytes_received = r - received;
            report
        }),
    }
}

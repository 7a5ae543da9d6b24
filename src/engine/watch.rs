//! `watch` (continuous replication) and `status` (the state a watch left).

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::push::remote_name;
use super::remote::connect;
use super::{Location, StateRef, Status, Term, Watch};
use crate::error::{Error, Result};
use crate::report::Report;
use crate::watch::session::Replica;

pub(super) fn watch(w: Watch, interrupted: Arc<AtomicBool>) -> Result<()> {
    let Location::Local(src) = &w.src else {
        return Err(Error::Usage("watch needs a local SRC".into()));
    };
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, w.watch.reopen.clone());
    let mut replica = match w.dest {
        Location::Local(d) => Replica::Local(d, None),
        Location::Remote { host, path } => {
            let (remote, opts) = (w.remote.clone(), w.opts.clone());
            let stop = interrupted.clone();
            Replica::remote(
                remote_name(&host, &path),
                Box::new(move || {
                    // A stopping watch finishes its files in flight for up to 30 s.
                    let stop = (&stop, Duration::from_secs(30));
                    connect(&remote, &opts, &host, &path, stop)
                }),
                // Well within the far side's --timeout (which it applies to requests).
                w.remote.idle() / 3,
            )
        }
    };
    let term = Term::for_options(&w.opts);
    let json = w.opts.json;
    let mut on_batch = |r: &Report| {
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            let _ = out.flush();
        }
    };
    crate::watch::run(
        src,
        &mut replica,
        &w.opts,
        &w.watch,
        &term,
        interrupted,
        &mut on_batch,
    )
}

pub(super) fn status(s: &Status) -> Result<()> {
    let path = match &s.state {
        StateRef::File(f) => f.clone(),
        StateRef::Dest(dest) => {
            crate::watch::state::find_by_dest(dest).map_err(|e| Error::Selection {
                path: dest.into(),
                what: format!("{e}; give the watch's --state-file"),
            })?
        }
        StateRef::Pair(src, dest) => crate::watch::state::default_path(src, dest),
    };
    let mut st = crate::watch::state::State::load(&path).map_err(|e| Error::Selection {
        path: path.clone(),
        what: format!("{e}; give the --state-file of a watch"),
    })?;
    // A pid that no longer exists (or is reused by another program) did not stop cleanly.
    let alive = std::fs::read(format!("/proc/{}/cmdline", st.pid))
        .is_ok_and(|c| c.windows(5).any(|w| w == b"watch"));
    if !alive {
        st.writer_gone();
    }
    if s.json {
        println!("{}", serde_json::to_string(&st).unwrap_or_default());
    } else {
        println!("{}", st.human(crate::watch::state::unix_now()));
    }
    Ok(())
}

//! The change watcher of either backend, started on its own thread.

use std::path::Path;
use std::sync::Arc;

use super::event::Event;
use super::inotify::{Log, Shared, WatchConfig};
use super::{fanotify, inotify, Backend, WatchOptions};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::transfer::Output;

/// The running change watcher, of either backend.
pub(super) enum Kernel {
    Fanotify(fanotify::Watcher),
    Inotify(inotify::Watcher),
}

impl Kernel {
    fn name(&self) -> &'static str {
        match self {
            Kernel::Fanotify(_) => "fanotify",
            Kernel::Inotify(_) => "inotify",
        }
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        match self {
            Kernel::Fanotify(k) => k.shared.clone(),
            Kernel::Inotify(k) => k.shared.clone(),
        }
    }

    pub(super) fn stop(&mut self) {
        match self {
            Kernel::Fanotify(k) => k.stop(),
            Kernel::Inotify(k) => k.stop(),
        }
    }
}

/// Starts the watcher `--backend` asks for (auto: fanotify, else inotify) and says in
/// one line which one runs.
pub(super) fn start_watcher(
    src: &Path,
    opts: &Options,
    w: &WatchOptions,
    tx: std::sync::mpsc::SyncSender<Event>,
    log: Log,
    out: &dyn Output,
) -> Result<(Kernel, &'static str)> {
    let cfg = WatchConfig {
        // Watches are added by path without following symlinks: resolve SRC itself.
        root: std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf()),
        one_file_system: opts.one_file_system,
        poll: w.poll_interval,
        excludes: opts.excludes.clone(),
    };
    let fail = |e: std::io::Error| Error::Selection {
        path: src.to_path_buf(),
        what: format!("cannot watch the source: {e}"),
    };
    let mut why_not = None;
    if w.backend != Backend::Inotify {
        match fanotify::Watcher::start_fanotify(cfg.clone(), tx.clone(), log.clone()) {
            Ok(k) => {
                let k = Kernel::Fanotify(k);
                if !opts.quiet {
                    out.warn(&format!(
                        "watching {} with fanotify (one mark per filesystem)",
                        src.display()
                    ));
                }
                let name = k.name();
                return Ok((k, name));
            }
            Err(e) if w.backend == Backend::Fanotify => {
                return Err(Error::Selection {
                    path: src.to_path_buf(),
                    what: format!(
                        "--backend fanotify: {e}; use --backend auto or inotify for this source"
                    ),
                })
            }
            Err(e) => why_not = Some(e.to_string()),
        }
    }
    let k = Kernel::Inotify(inotify::Watcher::start(cfg, tx, log).map_err(fail)?);
    if !opts.quiet {
        out.warn(&format!(
            "watching {} with inotify (a watch per directory){}",
            src.display(),
            why_not.map_or(String::new(), |w| format!("; not fanotify: {w}"))
        ));
    }
    let name = k.name();
    Ok((k, name))
}

//! The watch loop: one full push, then batches of what changed, for as long as it runs.
//!
//! Events from the watcher thread ([`super::fanotify`], or [`super::inotify`] where
//! fanotify cannot serve) feed the [`Debouncer`]; each due batch runs
//! the ordinary push limited to the dirty [`Scope`]. A batch that fails on the
//! destination's side (unreachable, full, refusing writes, a lost session) puts its
//! scope back into the dirty set and waits per the [`Backoff`]; the watcher keeps
//! watching meanwhile and converges by itself when the destination recovers. Before
//! every batch the source root is checked: if it vanished or was replaced (unmounted),
//! the loop stops with a selection error (exit 3) without touching the destination —
//! an empty mount point must never turn into a delete-everything. SIGINT/SIGTERM let
//! the files in flight finish (for up to `grace`; nothing new starts), save the state,
//! and end with Ok.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::{jittered, Backoff};
use super::debounce::{Debounce, Debouncer};
use super::event::Event;
use super::inotify::Log;
use super::kernel::start_watcher;
use super::metrics::{self, Metrics};
use super::resume;
use super::session::Replica;
use super::start::{first_scope, identity, now_ns, open_log, own_files, root_gone, top_dirs};
use super::state::{homes_state, unix_now, State};
use super::WatchOptions;
use crate::error::{Error, ExitCode, Result};
use crate::options::Options;
use crate::report::Report;
use crate::scope::Scope;
use crate::text::escape;
use crate::transfer::Output;

/// Bytes of directory names past which a batch lists the whole tree instead (well
/// under the protocol's 16 MiB frame).
const MAX_SCOPE_BYTES: usize = 1 << 20;

fn scope_bytes(s: &Scope) -> usize {
    s.pairs().map(|(p, _)| p.len() + 8).sum()
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Replicated (source-side problems, if any, were reported).
    Done,
    /// The destination failed: retry later.
    Retry(String),
    /// Cut short by a signal.
    Interrupted,
}

fn classify(result: &Result<Report>) -> Outcome {
    match result {
        Ok(r) => match r.exit_code {
            c if [ExitCode::Ok, ExitCode::Partial, ExitCode::Vanished]
                .iter()
                .any(|k| k.code() == c) =>
            {
                Outcome::Done
            }
            c if c == ExitCode::Interrupted.code() => Outcome::Interrupted,
            _ => Outcome::Retry(
                r.errors
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("the batch failed with exit code {}", r.exit_code)),
            ),
        },
        Err(Error::Interrupted) => Outcome::Interrupted,
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

fn scope_list(s: &Scope) -> Vec<String> {
    s.pairs()
        .map(|(p, r)| {
            let mut e = escape(p);
            if r {
                e.push('/');
            }
            e
        })
        .collect()
}

/// Runs the watch until interrupted (Ok) or the source is lost (exit 3) or unusable.
/// `on_batch` receives each batch's report.
pub fn run(
    src: &Path,
    dest: &mut Replica,
    opts: &Options,
    w: &WatchOptions,
    out: &dyn Output,
    interrupted: Arc<AtomicBool>,
    on_batch: &mut dyn FnMut(&Report),
) -> Result<()> {
    match dest {
        // A wrong pair fails at once rather than being retried forever.
        Replica::Local(d, _) => crate::transfer::check_selection(src, d)?,
        Replica::Remote { .. } => crate::transfer::check_source(src)?,
    }
    if let Some(f) = &w.log_file {
        open_log(f)?;
    }
    // Before any thread starts: the inotify thread reads every directory, and threads
    // inherit the priority they are started with.
    let _ = opts.priority.apply_to_current_thread();
    let root_id = identity(src);
    // Read before this run's first save replaces it.
    let prev = State::load(&w.state_file).ok();
    let mut state = State {
        src: src.display().to_string(),
        dest: w.dest_name.clone(),
        pid: std::process::id(),
        running: true,
        started: unix_now(),
        src_id: root_id,
        dest_id: dest.identity(),
        selection: resume::selection_key(opts),
        // Kept from the last run until this one's full push counts again.
        tree_entries: prev.as_ref().and_then(|p| p.tree_entries),
        ..State::default()
    };
    let save = |st: &State| {
        if let Err(e) = st.save(&w.state_file) {
            out.warn(&format!(
                "warning: cannot write the state file {}: {e}",
                w.state_file.display()
            ));
        }
    };

    let (tx, rx) = sync_channel(w.queue.max(1));
    let log: Log = {
        // The inotify thread's lines go to stderr directly (Output is not 'static).
        Arc::new(|line: String| eprintln!("fsync-repl: {line}"))
    };
    let (mut watcher, backend) = start_watcher(src, opts, w, tx, log, out)?;
    state.backend = backend.into();
    let shared = watcher.shared();
    // With the watch in place, whatever changes from here on is seen: now the saved
    // dirty set and the changes made while stopped can be collected.
    let dest_empty = match dest {
        Replica::Local(d, _) => std::fs::read_dir(d).map_or(true, |mut r| r.next().is_none()),
        Replica::Remote { .. } => false,
    };
    let initial = first_scope(prev.as_ref(), &state, dest_empty, src, opts, w, out);
    state.start = if initial.is_everything() {
        "full push"
    } else {
        "resumed"
    }
    .into();
    save(&state);
    let own = own_files(src, w);

    let mut deb = Debouncer::new(Debounce::new(w.delay, w.max_batch));
    let mut backoff = Backoff::new(w.retry_min, w.retry_max);
    let start = Instant::now();
    // The initial full push, or what a clean stop left to do.
    if !initial.is_empty() {
        deb.mark(&initial, start.checked_sub(w.delay).unwrap_or(start));
    }
    let seed = u64::from(std::process::id()) ^ unix_now();
    let mut next_rescan = start + jittered(w.rescan_interval, seed);
    let mut failed_since: Option<Instant> = None;
    let mut rescans = 0u64;
    let mut sessions_seen = 0u64;
    let mut dest_id: Option<(u64, u64)> = None;
    let mut last_save = Instant::now();
    let mut metrics = Metrics {
        backend: backend.into(),
        ..Metrics::default()
    };
    // Written when something changed, at most once a second (and at the end).
    let mut metrics_stale = true;
    let mut metrics_at: Option<Instant> = None;
    let mut metrics_warned = false;

    let result = loop {
        if interrupted.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let (true, Some(f)) = (w.reopen.swap(false, Ordering::Relaxed), &w.log_file) {
            if let Err(e) = open_log(f) {
                out.warn(&format!("warning: {e}; logging on to the old file"));
            }
        }
        if shared.root_gone.load(Ordering::Relaxed) || identity(src) != root_id {
            break Err(root_gone(src));
        }
        // Wait for an event, the batch's due time or the back-off, at most 200 ms.
        let now = Instant::now();
        let mut until = now + Duration::from_millis(200);
        if let Some(d) = deb.due() {
            until = until.min(d.max(backoff.next_attempt().unwrap_or(d)));
        }
        match rx.recv_timeout(until.saturating_duration_since(now)) {
            Ok(ev) => {
                let now = Instant::now();
                // Bounded, so a steady stream cannot hold off the batches.
                for ev in std::iter::once(ev).chain(rx.try_iter().take(w.queue.max(1024))) {
                    match &ev {
                        // The watch's own state and log files, when they lie in SRC:
                        // writing them must not start another batch.
                        Event::Change(c) if own.contains(&c.path) => {}
                        _ => deb.add(&ev, now),
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                break Err(Error::Selection {
                    path: src.to_path_buf(),
                    what: format!("the {backend} watcher stopped"),
                })
            }
        }
        let now = Instant::now();
        let lost = std::mem::take(&mut *shared.lost.lock().unwrap_or_else(|p| p.into_inner()));
        if !lost.is_empty() {
            let overflowed =
                std::mem::take(&mut *shared.overflowed.lock().unwrap_or_else(|p| p.into_inner()));
            if !overflowed.is_empty() {
                let what = if overflowed.is_everything() {
                    "the whole source".to_string()
                } else {
                    scope_list(&overflowed).join(", ")
                };
                out.warn(&format!(
                    "warning: the kernel's {} queue overflowed (fs.{}.max_queued_events); rescanning {what}",
                    backend, backend
                ));
            }
            if shared.channel_full.swap(false, Ordering::Relaxed) && opts.verbose > 0 {
                out.warn(&format!(
                    "events arrived faster than batches ran; rescanning {} directories",
                    lost.len()
                ));
            }
            deb.add_scope(&lost, now);
        }
        if now >= next_rescan {
            rescans += 1;
            next_rescan = now + jittered(w.rescan_interval, seed.wrapping_add(rescans));
            deb.mark(&Scope::everything(), now);
        }
        if let Some(f) = &w.metrics_file {
            metrics_stale |= deb.pending() > 0;
            if metrics_stale && metrics_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                write_metrics(f, &mut metrics, &state, &deb, src, out, &mut metrics_warned);
                metrics_stale = false;
                metrics_at = Some(Instant::now());
            }
        }
        if !deb.ready(now) || !backoff.ready(now) {
            dest.keepalive();
            // While changes wait (a back-off, say), the state file keeps up every 5 s.
            if deb.pending() > 0 && last_save.elapsed() >= Duration::from_secs(5) {
                fill_lag(&mut state, &deb, failed_since, src);
                save(&state);
                last_save = Instant::now();
            }
            continue;
        }
        // A batch.
        if identity(src) != root_id {
            break Err(root_gone(src));
        }
        let batch = deb.take();
        let batch_since = batch.since.values().min().copied().unwrap_or(now);
        let scope = &batch.scope;
        let mut bopts = opts.clone();
        // A scope too large to be worth listing apart (or to fit a request) is the
        // whole tree.
        let whole = scope.is_everything() || scope_bytes(scope) > MAX_SCOPE_BYTES;
        bopts.scope = (!whole).then(|| Arc::new(scope.clone()));
        // A batch weighs its deletes against the whole replica, not its part.
        bopts.dest_entries = state.tree_entries;
        // `--accept-new-source` speaks for the source this watch started on, once: a
        // unit left with the flag still refuses a disk that goes missing later.
        bopts.accept_new_source = opts.accept_new_source && state.last_success.is_none();
        // A signal first drains the batch: the files in flight are finished.
        bopts.drain = Some(interrupted.clone());
        let cut = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let (cut2, done2, intr) = (cut.clone(), &done, &interrupted);
            // A signal lets the files in flight finish for `grace`, then cuts them short.
            s.spawn(move || {
                while !done2.load(Ordering::Relaxed) {
                    if intr.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        while !done2.load(Ordering::Relaxed) && t.elapsed() < w.grace {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        cut2.store(true, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let r = dest.push(&bopts, src, out, cut.clone());
            done.store(true, Ordering::Relaxed);
            r
        });
        if let Err(Error::Selection { .. }) = &result {
            if identity(src) != root_id {
                break Err(root_gone(src));
            }
        }
        // A refusal to touch the replica (another source, a mass delete) stands until
        // someone looks: retrying cannot change it, and a restart meets it again.
        if let Err(e @ (Error::Usage(_) | Error::NewSource(_) | Error::TooManyDeletes(_))) = result
        {
            break Err(e);
        }
        let outcome = classify(&result);
        if let (Ok(r), true) = (&result, whole) {
            state.tree_entries = Some(r.files_scanned);
        }
        if let Ok(r) = &result {
            for e in &r.errors {
                out.warn(e);
            }
            on_batch(r);
            metrics.failed_entries += r.failed;
            metrics.bytes_sent += r.bytes_literal;
            metrics.bytes_matched += r.bytes_matched;
            if !r.relist_dirs.is_empty() {
                // Directories gone from SRC whose contents this batch did not list
                // (a resumed start saw only their parent change): list them whole.
                let mut whole = Scope::new();
                for d in &r.relist_dirs {
                    whole.add(d, true);
                }
                deb.mark(&whole, Instant::now());
            }
            if r.links_outside_scope > 0 {
                // Other names of a changed hard-linked file lie outside this batch.
                deb.mark(&Scope::everything(), Instant::now());
            }
        }
        if dest.sessions() > sessions_seen && sessions_seen > 0 {
            // A new session after a lost one: DEST may have changed meanwhile.
            deb.mark(&Scope::everything(), Instant::now());
        }
        sessions_seen = dest.sessions();
        match dest.identity() {
            id if id != dest_id && dest_id.is_some() && outcome == Outcome::Done => {
                // DEST was replaced (remounted, restored): reconcile all of it.
                deb.mark(&Scope::everything(), Instant::now());
                dest_id = id;
            }
            id if outcome == Outcome::Done => dest_id = id,
            _ => {}
        }
        state.batches += 1;
        metrics.batches += 1;
        metrics_stale = true;
        match outcome {
            Outcome::Done => {
                backoff.succeed();
                failed_since = None;
                state.last_success = Some(unix_now());
                state.failures = 0;
                if opts.verbose > 0 {
                    out.warn(&format!(
                        "batch of {} directories done in {:.3} s",
                        scope.len(),
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            Outcome::Interrupted => {
                deb.put_back(&batch, now);
            }
            Outcome::Retry(why) => {
                deb.put_back(&batch, now);
                metrics.failed_batches += 1;
                failed_since.get_or_insert(batch_since);
                let wait = backoff.fail(Instant::now());
                state.failures = backoff.failures();
                state.last_error = Some(why.clone());
                state.last_error_at = Some(unix_now());
                if let Err(e) = &result {
                    out.warn(&e.to_string());
                }
                out.warn(&format!(
                    "the batch failed; the changes are kept and retried in {:.1} s",
                    wait.as_secs_f64()
                ));
            }
        }
        fill_lag(&mut state, &deb, failed_since, src);
        state.sessions = dest.sessions();
        state.unwatched_dirs = shared.unwatched.lock().map(|u| u.len()).unwrap_or_default();
        save(&state);
        last_save = Instant::now();
    };
    if result.is_ok() {
        // A clean stop: keep every change seen so far, and the time from which a restart
        // must look for changes itself.
        state.stopped_ns = Some(now_ns());
        watcher.stop();
        let now = Instant::now();
        for ev in rx.try_iter() {
            match &ev {
                Event::Change(c) if own.contains(&c.path) => {}
                _ => deb.add(&ev, now),
            }
        }
        let lost = std::mem::take(&mut *shared.lost.lock().unwrap_or_else(|p| p.into_inner()));
        deb.add_scope(&lost, now);
        // Directories without a watch are only polled: whatever they hold is pending.
        let unwatched = shared
            .unwatched
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        for (d, _) in unwatched.pairs() {
            deb.mark(&Scope::from_pairs([(d, true)]).unwrap_or_default(), now);
        }
    } else {
        watcher.stop();
    }
    state.dest_id = dest.identity();
    dest.close();
    state.running = false;
    state.pending = scope_list(&deb.dirty());
    fill_lag(&mut state, &deb, failed_since, src);
    if let Err(e) = &result {
        state.last_error = Some(e.to_string());
        state.last_error_at = Some(unix_now());
    }
    save(&state);
    if let Some(f) = &w.metrics_file {
        write_metrics(f, &mut metrics, &state, &deb, src, out, &mut metrics_warned);
    }
    result
}

/// The lag figures of the state at this moment: overall and per home.
fn fill_lag(state: &mut State, deb: &Debouncer, failed_since: Option<Instant>, src: &Path) {
    let now = Instant::now();
    let oldest = [failed_since, deb.oldest()].into_iter().flatten().min();
    state.lag_secs = oldest.map_or(0.0, |o| now.saturating_duration_since(o).as_secs_f64());
    state.pending_dirs = deb.pending();
    state.homes = homes_state(&top_dirs(src), &deb.homes(), now);
}

/// Brings the metrics up to date and writes them; a failure is one warning line.
fn write_metrics(
    path: &Path,
    m: &mut Metrics,
    state: &State,
    deb: &Debouncer,
    src: &Path,
    out: &dyn Output,
    warned: &mut bool,
) {
    m.last_success = state.last_success;
    m.homes = homes_state(&top_dirs(src), &deb.homes(), Instant::now());
    match metrics::write(path, m) {
        Ok(()) => *warned = false,
        Err(_) if *warned => {}
        Err(e) => {
            *warned = true;
            out.warn(&format!(
                "warning: cannot write the metrics file {}: {e}; check its directory",
                path.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(code: i32, errors: &[&str]) -> Result<Report> {
        Ok(Report {
            exit_code: code,
            errors: errors.iter().map(|s| s.to_string()).collect(),
            ..Report::default()
        })
    }

    #[test]
    fn outcomes_by_exit_code() {
        assert_eq!(classify(&report(0, &[])), Outcome::Done);
        assert_eq!(classify(&report(23, &["f: changed"])), Outcome::Done);
        assert_eq!(classify(&report(24, &[])), Outcome::Done);
        assert_eq!(classify(&report(20, &[])), Outcome::Interrupted);
        assert_eq!(
            classify(&report(11, &["destination full"])),
            Outcome::Retry("destination full".into())
        );
        assert!(matches!(classify(&report(2, &[])), Outcome::Retry(_)));
        assert_eq!(
            classify(&Err(Error::NoSpace("needs 5 MiB more".to_string().into()))),
            Outcome::Retry("needs 5 MiB more".into())
        );
    }

    #[test]
    fn scope_size_counts_names() {
        let s = Scope::from_pairs([(&b"ab"[..], false), (&b"cde"[..], true)]).unwrap();
        assert_eq!(scope_bytes(&s), 2 + 8 + 3 + 8);
    }

    #[test]
    fn pending_scopes_are_listed_escaped() {
        let s = Scope::from_pairs([(&b"a"[..], false), (&b"b\n"[..], true)]).unwrap();
        assert_eq!(scope_list(&s), vec!["a".to_string(), "b\\x0a/".to_string()]);
    }
}

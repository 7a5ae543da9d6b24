//! Runs a parsed command line: options → engine → printed report → exit code.
//!
//! This is the binary's edge: the only place that prints summaries and maps errors to
//! exit codes, and where local and remote transports are put together. The engine
//! below returns values and typed errors.

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{
    Cli, Command, EngineArgs, PushArgs, RemoteArgs, ServeArgs, StatusArgs, WatchArgs,
};
use crate::config::{FsyncMode, Options};
use crate::dest::local::LocalDest;
use crate::dest::remote::{Conn, RemoteDest};
use crate::error::{Error, ExitCode, Result};
use crate::protocol::frame::ProtoError;
use crate::protocol::Notice;
use crate::report::Report;
use crate::serve::Policy;
use crate::serve::Receiver;
use crate::ssh::{parse_location, Location};
use crate::text::escape_str;
use crate::throttle::Throttle;
use crate::transfer::{push_local, push_to, Output, ProgressMode, Target};
use crate::wire::{Abort, WireIn, WireOut};

/// How long the remote side has to answer the handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Terminal output: items on stdout (stderr when stdout carries JSON), warnings on stderr.
struct Term {
    progress: ProgressMode,
    items_to_stderr: bool,
}

impl Term {
    fn for_options(opts: &Options) -> Term {
        Term {
            progress: match (opts.quiet, std::io::stderr().is_terminal(), opts.progress) {
                (true, _, _) => ProgressMode::Off,
                (false, true, _) => ProgressMode::Terminal,
                (false, false, true) => ProgressMode::Lines,
                (false, false, false) => ProgressMode::Off,
            },
            items_to_stderr: opts.json,
        }
    }
}

impl Output for Term {
    fn item(&self, line: &str) {
        if self.items_to_stderr {
            eprintln!("{line}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
    fn warn(&self, line: &str) {
        eprintln!("fsync-repl: {line}");
    }
    fn progress(&self) -> ProgressMode {
        self.progress
    }
}

/// Runs `cli`; returns the process exit code. `interrupted` is set by SIGINT/SIGTERM.
pub fn run(cli: Cli, interrupted: Arc<AtomicBool>) -> i32 {
    let result = match cli.command {
        Command::Push(a) => push(a, interrupted),
        Command::Pull(a) => pull(a, interrupted),
        Command::Serve(a) => return serve(a, interrupted),
        Command::Watch(a) => return finish(watch(a, interrupted)),
        Command::Status(a) => return finish(status(a)),
        Command::Backup(a) => return crate::backup::backup(a, interrupted),
        Command::Snapshot(a) => return crate::backup::snapshot(a, interrupted),
        Command::Snapshots(a) => return crate::backup::snapshots(a),
        Command::Prune(a) => return crate::backup::prune(a, interrupted),
        Command::Versions(a) => return crate::restore::versions_cmd(a),
        Command::Restore(a) => return crate::restore::restore_cmd(a, interrupted),
        Command::Verify(a) => return crate::restore::verify_cmd(a, interrupted),
        Command::Completions(a) => return crate::restore::completions(a),
    };
    match result {
        Ok((opts, report)) => print_report(&opts, &report),
        Err(e) => {
            let msg = e.to_string();
            if !msg.is_empty() {
                eprintln!("fsync-repl: {msg}");
            }
            e.exit_code().code()
        }
    }
}

/// The exit code of a command without a closing report, printing its error.
pub(crate) fn finish(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            let msg = e.to_string();
            if !msg.is_empty() {
                eprintln!("fsync-repl: {msg}");
            }
            e.exit_code().code()
        }
    }
}

fn watch(a: WatchArgs, interrupted: Arc<AtomicBool>) -> Result<()> {
    let mut opts = a.engine.to_options()?;
    // A watch mirrors: what SRC no longer has goes (renames need it too).
    opts.delete = true;
    let Location::Local(src) = parse_location(&a.src)? else {
        return Err(Error::Usage("watch needs a local SRC".into()));
    };
    let w = a.to_watch_options(&src)?;
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, w.reopen.clone());
    let mut dest = match parse_location(&a.dest)? {
        Location::Local(d) => crate::watch::session::Dest::Local(d, None),
        Location::Remote { host, path } => {
            opts.delta = !a.engine.whole_file;
            if a.engine.jobs.is_none() {
                opts.jobs = opts.jobs.max(1) * 4;
            }
            let (engine, remote, copts) = (a.engine.clone(), a.remote.clone(), opts.clone());
            let stop = interrupted.clone();
            crate::watch::session::Dest::remote(
                PathBuf::from(&a.dest),
                Box::new(move || {
                    // A stopping watch finishes its files in flight for up to 30 s.
                    let stop = (&stop, Duration::from_secs(30));
                    connect(&engine, &remote, &copts, &host, path.clone(), stop)
                }),
                a.engine.compress,
                // Well within the far side's --timeout (which it applies to requests).
                idle_timeout(a.remote.timeout) / 3,
            )
        }
    };
    let term = Term::for_options(&opts);
    let json = opts.json;
    let mut on_batch = |r: &Report| {
        if json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            let _ = out.flush();
        }
    };
    crate::watch::run(
        &src,
        &mut dest,
        &opts,
        &w,
        &term,
        interrupted,
        &mut on_batch,
    )
}

fn status(a: StatusArgs) -> Result<()> {
    let path = match (&a.state_file, a.pair.as_slice()) {
        (Some(f), []) => f.clone(),
        (None, [dest]) => {
            crate::watch::state::find_by_dest(dest).map_err(|e| Error::Selection {
                path: PathBuf::from(dest),
                what: format!("{e}; give the watch's --state-file"),
            })?
        }
        (None, [src, dest]) => crate::watch::state::default_path(std::path::Path::new(src), dest),
        _ => {
            return Err(Error::Usage(
                "status needs DEST, the watch's SRC and DEST, or --state-file FILE".into(),
            ))
        }
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
    if a.json {
        println!("{}", serde_json::to_string(&st).unwrap_or_default());
    } else {
        println!("{}", st.human(crate::watch::state::unix_now()));
    }
    Ok(())
}

fn print_report(opts: &Options, report: &Report) -> i32 {
    for e in &report.errors {
        eprintln!("fsync-repl: {e}");
    }
    if opts.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else if !opts.quiet {
        println!("{}", report.human());
    }
    report.exit_code
}

fn idle_timeout(secs: u64) -> Duration {
    if secs == 0 {
        Duration::from_secs(u64::MAX / 4)
    } else {
        Duration::from_secs(secs)
    }
}

/// The handshake deadline: 30 s, or the idle timeout when that is shorter.
fn handshake(timeout: u64) -> Duration {
    HANDSHAKE.min(idle_timeout(timeout))
}

fn proto(e: ProtoError) -> Error {
    match e {
        ProtoError::RemoteExit(1) => Error::Reported(ExitCode::Usage),
        ProtoError::RemoteExit(3) => Error::Reported(ExitCode::Selection),
        ProtoError::RemoteExit(11) => Error::Reported(ExitCode::DestIo),
        ProtoError::RemoteExit(25) => Error::Reported(ExitCode::MaxDelete),
        e => Error::Protocol(e.to_string()),
    }
}

/// Runs `push` (local or remote); `backup` pushes through it too.
pub(crate) fn push(a: PushArgs, interrupted: Arc<AtomicBool>) -> Result<(Options, Report)> {
    let mut opts = a.engine.to_options()?;
    let Location::Local(src) = parse_location(&a.src)? else {
        return Err(Error::Usage(
            "push needs a local SRC; use pull to copy from a remote host".into(),
        ));
    };
    let term = Term::for_options(&opts);
    match parse_location(&a.dest)? {
        Location::Local(dest) => {
            let report = push_local(&opts, &src, &dest, &term, interrupted)?;
            Ok((opts, report))
        }
        Location::Remote { host, path } => {
            opts.delta = !a.engine.whole_file;
            // Many files in flight hide the link's latency (unless --jobs says otherwise).
            if a.engine.jobs.is_none() {
                opts.jobs = opts.jobs.max(1) * 4;
            }
            // Check SRC before anything starts on the far side.
            crate::transfer::check_source(&src)?;
            // Ctrl-C lets the engine wind down for a moment, then ends the session.
            let grace = Duration::from_secs(5);
            let conn = connect(
                &a.engine,
                &a.remote,
                &opts,
                &host,
                path,
                (&interrupted, grace),
            )?;
            let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
            let rd = RemoteDest::new(conn.clone(), throttle.clone(), a.engine.compress);
            let name = PathBuf::from(&a.dest);
            let target = Target {
                dest: Some(&rd),
                name: &name,
                throttle,
            };
            let result = push_to(&opts, &src, target, &term, interrupted.clone());
            let failure = conn.failure();
            conn.close();
            match (result, failure) {
                (Err(_), Some(_)) if interrupted.load(Ordering::Relaxed) => Err(Error::Interrupted),
                (Err(_), Some(f)) => Err(Error::Protocol(f)),
                (r, _) => {
                    let mut report = r?;
                    (report.wire_bytes_sent, report.wire_bytes_received) = conn.wire_bytes();
                    Ok((opts, report))
                }
            }
        }
    }
}

/// Starts `fsync-repl serve` on `host` for a push into `path` and handshakes.
fn connect(
    engine: &EngineArgs,
    remote: &RemoteArgs,
    opts: &Options,
    host: &OsStr,
    path: Vec<u8>,
    (interrupted, grace): (&Arc<AtomicBool>, Duration),
) -> Result<Arc<Conn>> {
    let mut args: Vec<OsString> = vec![
        "serve".into(),
        "--timeout".into(),
        remote.timeout.to_string().into(),
    ];
    args.push("--fsync".into());
    args.push(
        match opts.fsync {
            FsyncMode::Batch => "batch",
            FsyncMode::File => "file",
            FsyncMode::None => "none",
        }
        .into(),
    );
    args.extend(engine.forward_disk());
    if opts.no_follow_dest {
        args.push("--no-follow-dest".into());
    }
    if opts.dry_run {
        args.push("--dry-run".into());
    }
    // After `--`: a path that starts with `-` is a path, not an option.
    args.push("--".into());
    args.push(std::os::unix::ffi::OsStringExt::from_vec(path));
    let mut child = remote.shell().spawn(host, &args)?;
    let (stdin, stdout) = child.pipes()?;
    let timeout = idle_timeout(remote.timeout);
    let abort = Abort::default();
    // Replies are awaited with the timeout per request; writes carry it themselves.
    let input = WireIn::new(stdout.into(), None, abort.clone(), String::new());
    let output = WireOut::new(
        stdin.into(),
        Some(timeout),
        abort.clone(),
        stalled(remote.timeout),
    );
    Ok(Arc::new(
        Conn::start(
            input,
            output,
            abort,
            Some(child),
            timeout,
            handshake(remote.timeout),
        )
        .map_err(proto)?
        .with_max_listing(remote.max_listing)
        .with_interrupt(interrupted.clone(), grace),
    ))
}

/// The error of a peer that stopped reading what this side writes.
fn stalled(secs: u64) -> String {
    format!("the remote side has not read anything for {secs} s (--timeout); giving up")
}

fn pull(a: PushArgs, interrupted: Arc<AtomicBool>) -> Result<(Options, Report)> {
    let Location::Remote { host, path } = parse_location(&a.src)? else {
        // A local SRC (a snapshot directory, say) is a local copy: push does it.
        return push(a, interrupted);
    };
    let opts = a.engine.to_options()?;
    let Location::Local(dest) = parse_location(&a.dest)? else {
        return Err(Error::Usage("pull needs a local DEST".into()));
    };
    let created = !dest.exists();
    let made = missing_dirs(&dest);
    // This thread does all of pull's writing.
    let _ = opts.priority.apply_to_current_thread();
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let local = LocalDest::open(&dest, &opts, throttle, interrupted.clone()).map_err(|e| {
        Error::Selection {
            path: dest.clone(),
            what: format!("cannot open or create the destination: {e}"),
        }
    })?;
    let mut args: Vec<OsString> = vec![
        "serve".into(),
        "--send".into(),
        "--timeout".into(),
        a.remote.timeout.to_string().into(),
    ];
    args.extend(a.engine.forward(&opts));
    // After `--`: a path that starts with `-` is a path, not an option.
    args.push("--".into());
    args.push(std::os::unix::ffi::OsStringExt::from_vec(path));
    let mut child = a.remote.shell().spawn(&host, &args)?;
    let (stdin, stdout) = child.pipes()?;
    let timeout = idle_timeout(a.remote.timeout);
    // SIGINT/SIGTERM end the session at once: the far side runs in a process group of
    // its own and does not see the terminal's signals.
    let abort: Abort = interrupted.clone();
    let silent = format!(
        "the remote side stayed silent for {} s (--timeout); giving up",
        a.remote.timeout
    );
    let mut input = WireIn::new(stdout.into(), Some(timeout), abort.clone(), silent);
    let output = WireOut::new(
        stdin.into(),
        Some(timeout),
        abort.clone(),
        stalled(a.remote.timeout),
    );
    let term = Term::for_options(&opts);
    let mut outcome: Option<std::result::Result<Report, (i32, String)>> = None;
    let policy = Policy {
        delete: opts.delete,
        xattrs: opts.xattrs,
    };
    let (sent, received) = (output.counter(), input.counter());
    let mut receiver = Receiver::new(&local, opts.min_free, Box::new(output)).policy(policy);
    if opts.dry_run {
        receiver = receiver.read_only();
    }
    let hello = (handshake(a.remote.timeout), no_handshake(a.remote.timeout));
    let result = receiver.run(&mut input, hello, &mut |n| match n {
        // Lines from the other machine never reach the terminal with control characters.
        Notice::Item(l) => term.item(&escape_str(&l)),
        Notice::Warn(l) => term.warn(&escape_str(&l)),
        Notice::Report(json) => {
            outcome = Some(
                serde_json::from_str(&json)
                    .map_err(|e| (2, format!("bad report from the remote side: {e}"))),
            )
        }
        Notice::Failed { exit_code, message } => {
            outcome = Some(Err((exit_code, escape_str(&message))))
        }
    });
    // Our end of both pipes closes here; the far side has a moment to exit by itself
    // after a normal end, none after a failure.
    drop(receiver);
    drop(input);
    let ended_well = result.is_ok() && matches!(outcome, Some(Ok(_)));
    child.end(if ended_well {
        crate::ssh::EXIT_GRACE
    } else {
        Duration::ZERO
    });
    if opts.dry_run && created {
        let _ = std::fs::remove_dir(&dest);
    }
    // A run refused on the far side (guards, preflight) leaves nothing it made.
    remove_if_empty(&made);
    if interrupted.load(Ordering::Relaxed) && !matches!(outcome, Some(Ok(_))) {
        return Err(Error::Interrupted);
    }
    match (outcome, result) {
        (Some(Ok(mut report)), _) => {
            report.errors = report.errors.iter().map(|e| escape_str(e)).collect();
            // The exit code is one of ours, whatever the far side wrote.
            if !matches!(
                report.exit_code,
                0 | 1 | 2 | 3 | 11 | 12 | 20 | 23 | 24 | 25
            ) {
                report.exit_code = ExitCode::Protocol.code();
            }
            // Counted here, on this side's pipes: the far side's own figure is not taken.
            (report.wire_bytes_sent, report.wire_bytes_received) = (sent.get(), received.get());
            Ok((opts, report))
        }
        (Some(Err((code, msg))), _) => Err(remote_failure(code, msg)),
        (None, Err(e)) => Err(proto(e)),
        (None, Ok(())) => Err(Error::Protocol(
            "the remote side ended without a report".into(),
        )),
    }
}

/// The handshake's error on a client: how long it waited, and what to check.
fn no_handshake(timeout: u64) -> String {
    crate::protocol::frame::no_handshake(handshake(timeout))
}

fn remote_failure(code: i32, msg: String) -> Error {
    match code {
        1 => Error::Usage(msg),
        3 => Error::Selection {
            path: PathBuf::from("remote"),
            what: msg,
        },
        11 => Error::NoSpace(msg.into()),
        25 => Error::TooManyDeletes(msg),
        _ => Error::Protocol(msg),
    }
}

/// Output of the far side of `pull`: lines travel to the client as notices.
struct Notices<'a>(&'a Conn);

impl Output for Notices<'_> {
    fn item(&self, line: &str) {
        let _ = self.0.notice(Notice::Item(line.to_string()));
    }
    fn warn(&self, line: &str) {
        let _ = self.0.notice(Notice::Warn(line.to_string()));
    }
    fn progress(&self) -> ProgressMode {
        ProgressMode::Off
    }
}

fn serve(a: ServeArgs, interrupted: Arc<AtomicBool>) -> i32 {
    crate::fsutil::grow_pipe(std::io::stdin().as_fd());
    crate::fsutil::grow_pipe(std::io::stdout().as_fd());
    let result = if a.send {
        serve_send(&a, interrupted)
    } else {
        serve_receive(&a, interrupted)
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // A far side is ended by SIGTERM when its client ends the session (the
            // client's process group): the client says why, not this side.
            let msg = e.to_string();
            if !msg.is_empty() && !matches!(e, Error::Interrupted) {
                eprintln!("fsync-repl serve: {msg}");
            }
            e.exit_code().code()
        }
    }
}

/// `serve`'s standard output to its client: a client that stops reading for
/// `timeout_secs` ends the session.
fn to_client(timeout_secs: u64, abort: Abort) -> Result<WireOut> {
    let stdout = crate::wire::stdout()
        .map_err(|e| Error::Protocol(format!("standard input or output: {e}")))?;
    Ok(WireOut::new(
        stdout,
        Some(idle_timeout(timeout_secs)),
        abort,
        format!("the client has not read anything for {timeout_secs} s (--timeout)"),
    ))
}

fn serve_receive(a: &ServeArgs, interrupted: Arc<AtomicBool>) -> Result<()> {
    let opts = a.engine.to_options()?;
    let mut root = PathBuf::from(&a.root);
    // A dry run must not create a missing root: list an empty stand-in instead.
    let stand_in = (opts.dry_run && !root.exists())
        .then(|| std::env::temp_dir().join(format!("fsync-repl-dry-run.{}", std::process::id())));
    if let Some(s) = &stand_in {
        root = s.clone();
    }
    let root = root.as_path();
    // The directories this session makes to reach a missing DEST: removed again at the
    // end if they are still empty, so a run the client refused creates nothing.
    let made = missing_dirs(root);
    let _ = opts.priority.apply_to_current_thread();
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let dest =
        LocalDest::open(root, &opts, throttle.clone(), interrupted.clone()).map_err(|e| {
            Error::Selection {
                path: root.to_path_buf(),
                what: format!("cannot open or create the destination: {e}"),
            }
        })?;
    // A client silent for --timeout, or one that stops reading, ends the session: its
    // unfinished temporary files are removed and the exit code is 2.
    let timeout = idle_timeout(a.timeout);
    // SIGINT/SIGTERM end the session at once, its temporary files removed.
    let abort: Abort = interrupted.clone();
    let stdio = |e: std::io::Error| Error::Protocol(format!("standard input or output: {e}"));
    let silent = format!("no request from the client for {} s (--timeout)", a.timeout);
    let mut input = WireIn::new(
        crate::wire::stdin().map_err(stdio)?,
        Some(timeout),
        abort.clone(),
        silent,
    );
    let output = to_client(a.timeout, abort)?;
    // The far side's disk gets the same adaptive back-off as a local destination.
    let stop = Arc::new(AtomicBool::new(false));
    let devices = crate::throttle::adaptive::devices_of(&[root]);
    let controller = opts
        .adaptive
        .filter(|_| !opts.dry_run && !devices.is_empty())
        .map(|cfg| {
            let (throttle, stop, priority) = (throttle.clone(), stop.clone(), opts.priority);
            let verbose = opts.verbose > 0;
            std::thread::spawn(move || {
                let _ = priority.apply_to_current_thread();
                let log = |m: String| {
                    if verbose {
                        eprintln!("fsync-repl serve: {m}");
                    }
                };
                crate::throttle::adaptive::run(&throttle, cfg, &devices, &stop, &log)
            })
        });
    let mut receiver = Receiver::new(&dest, opts.min_free, Box::new(output));
    let hello = (
        handshake(a.timeout),
        format!(
            "no handshake from the client within {} s",
            handshake(a.timeout).as_secs()
        ),
    );
    let result = receiver.run(&mut input, hello, &mut |_| {});
    let result = match result {
        Err(_) if interrupted.load(Ordering::Relaxed) => Err(Error::Interrupted),
        r => r.map_err(proto),
    };
    drop(receiver);
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = controller {
        let _ = c.join();
    }
    if let Some(s) = stand_in {
        let _ = std::fs::remove_dir(s);
    }
    drop(dest);
    remove_if_empty(&made);
    result
}

/// `path` and its ancestors that do not exist yet, deepest first.
fn missing_dirs(path: &std::path::Path) -> Vec<PathBuf> {
    path.ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        .map(PathBuf::from)
        .collect()
}

/// Removes the directories of [`missing_dirs`] that are still empty, deepest first.
fn remove_if_empty(made: &[PathBuf]) {
    for dir in made {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

fn serve_send(a: &ServeArgs, interrupted: Arc<AtomicBool>) -> Result<()> {
    let mut opts = a.engine.to_options()?;
    // The far side of pull sends over the wire: deltas by default, many files in flight.
    opts.delta = !a.engine.whole_file;
    if a.engine.jobs.is_none() {
        opts.jobs = opts.jobs.max(1) * 4;
    }
    let timeout = idle_timeout(a.timeout);
    let abort = Abort::default();
    let stdio = |e: std::io::Error| Error::Protocol(format!("standard input or output: {e}"));
    let input = WireIn::new(
        crate::wire::stdin().map_err(stdio)?,
        None,
        abort.clone(),
        String::new(),
    );
    let output = to_client(a.timeout, abort.clone())?;
    let conn = Arc::new(
        Conn::start(input, output, abort, None, timeout, handshake(a.timeout)).map_err(proto)?,
    );
    let throttle = Arc::new(Throttle::new(opts.bwlimit, opts.iops_limit));
    let rd = RemoteDest::new(conn.clone(), throttle.clone(), a.engine.compress);
    let root = PathBuf::from(&a.root);
    let target = Target {
        dest: Some(&rd),
        name: &root,
        throttle,
    };
    let out = Notices(&conn);
    let result = push_to(&opts, &root, target, &out, interrupted);
    // A session that failed under the run says why, not what the run made of it.
    let result = match (result, conn.failure()) {
        (Err(_), Some(f)) => Err(Error::Protocol(f)),
        (r, _) => r,
    };
    let notice = match &result {
        Ok(report) => Notice::Report(serde_json::to_string(report).unwrap_or_default()),
        Err(e) => Notice::Failed {
            exit_code: e.exit_code().code(),
            message: e.to_string(),
        },
    };
    // The client prints the failure it receives; when it cannot receive it, this
    // side's stderr (which the remote shell forwards) says it. Either way the exit
    // code is the failure's.
    let told = conn.last_notice(notice).is_ok();
    conn.close();
    match result {
        Ok(_) if told => Ok(()),
        Ok(_) => Err(Error::Protocol(format!(
            "could not send the report: {}",
            conn.failure()
                .unwrap_or_else(|| "the client stopped reading".into())
        ))),
        Err(e) if told => Err(Error::Reported(e.exit_code())),
        Err(e) => Err(e),
    }
}

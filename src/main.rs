//! The `fsync-repl` binary: parse, run, exit with the documented code.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match fsync_repl::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other error: clap's first line, then where to look.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let what = what.join(" ");
            // A closed stderr is no reason to panic.
            let _ = writeln!(
                std::io::stderr(),
                "fsync-repl: {}; see fsync-repl --help",
                what.trim_start_matches("error: ")
            );
            return ExitCode::from(1);
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for an orderly stop (exit 20); a second one ends the
        // process at once, which is still safe: every file is old or new.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 20, interrupted.clone());
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let code = fsync_repl::app::run(cli, interrupted);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

//! The `fsync-repl` binary: parse, run, exit with the documented code.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> ExitCode {
    let request = match fsync_repl::cli::parse() {
        Ok(r) => r,
        Err(code) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for an orderly stop (exit 20); a second one ends the
        // process at once, which is still safe: every file is old or new.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 20, interrupted.clone());
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let code = fsync_repl::engine::run(request, interrupted);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

//! The `fsync-repl` binary: parse, run, print, map the result to an exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode as ProcessExit;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use fsync_repl::cli::{Cli, Command};
use fsync_repl::transfer::{push_local, Output};

struct Term {
    progress: bool,
    items_to_stderr: bool,
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
    fn progress(&self) -> bool {
        self.progress
    }
}

fn main() -> ProcessExit {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ProcessExit::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let Command::Push(args) = cli.command;
    let result = args.to_options().and_then(|opts| {
        let term = Term {
            progress: !opts.quiet && (opts.progress || std::io::stderr().is_terminal()),
            items_to_stderr: opts.json,
        };
        let report = push_local(&opts, &args.src, &args.dest, &term, &interrupted)?;
        Ok((opts, report))
    });
    match result {
        Ok((opts, report)) => {
            for e in &report.errors {
                eprintln!("fsync-repl: {e}");
            }
            if opts.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else if !opts.quiet {
                println!("{}", report.human());
            }
            ProcessExit::from(report.exit_code as u8)
        }
        Err(e) => {
            eprintln!("fsync-repl: {e}");
            ProcessExit::from(e.exit_code().code() as u8)
        }
    }
}

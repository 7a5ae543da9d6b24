//! Runs a parsed command line: options → engine → printed report → exit code.
//!
//! This is the binary's edge: the only place that prints summaries and maps errors to
//! exit codes. The engine below returns values and typed errors.

use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{Cli, Command};
use crate::transfer::{push_local, Output, ProgressMode};

/// Terminal output: items on stdout (stderr when stdout carries JSON), warnings on stderr.
struct Term {
    progress: ProgressMode,
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
    fn progress(&self) -> ProgressMode {
        self.progress
    }
}

/// Runs `cli`; returns the process exit code. `interrupted` is set by SIGINT/SIGTERM.
pub fn run(cli: Cli, interrupted: Arc<AtomicBool>) -> i32 {
    let Command::Push(args) = cli.command;
    let result = args.to_options().and_then(|opts| {
        let term = Term {
            progress: match (opts.quiet, std::io::stderr().is_terminal(), opts.progress) {
                (true, _, _) => ProgressMode::Off,
                (false, true, _) => ProgressMode::Terminal,
                (false, false, true) => ProgressMode::Lines,
                (false, false, false) => ProgressMode::Off,
            },
            items_to_stderr: opts.json,
        };
        let report = push_local(&opts, &args.src, &args.dest, &term, interrupted)?;
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
            report.exit_code
        }
        Err(e) => {
            eprintln!("fsync-repl: {e}");
            e.exit_code().code()
        }
    }
}

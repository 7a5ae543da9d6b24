//! The corpus tool the benchmark scripts run: the same generator and tree comparer the
//! tests use (`tests/common/corpus.rs`, `tests/common/compare.rs`), at any size.
//!
//! ```text
//! cargo run --release --example corpus -- make DIR [--users N] [--small N] [--medium N]
//!                                             [--large-mib N] [--seed S]
//! cargo run --release --example corpus -- mutate DIR [--seed S]   # a day of use
//! cargo run --release --example corpus -- describe DIR
//! cargo run --release --example corpus -- compare SRC DEST [--no-mtimes]
//! cargo run --release --example corpus -- grid DIR --homes H --dirs D --files F
//!                                             [--sizes N] [--empty]
//! ```
//!
//! `make` without options writes the benchmark corpus (8 homes, ~16k files, ~0.5 GB).
//! `compare` prints every difference (names, kinds, modes, sizes, contents, symlink
//! targets, file mtimes, hard-link groups) and exits 1 if there is any, 0 otherwise.

#[path = "../tests/common/compare.rs"]
#[allow(dead_code)]
mod compare;
#[path = "../tests/common/corpus.rs"]
#[allow(dead_code)]
mod corpus;
#[path = "../tests/common/grid.rs"]
#[allow(dead_code)]
mod grid;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: corpus make DIR [--users N] [--small N] [--medium N] [--large-mib N] [--seed S]
       corpus mutate DIR [--seed S]
       corpus describe DIR
       corpus compare SRC DEST [--no-mtimes]
       corpus grid DIR --homes H --dirs D --files F [--sizes N] [--empty]";

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("corpus: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<std::ffi::OsString>) -> Result<ExitCode, String> {
    let cmd = args.first().and_then(|a| a.to_str()).ok_or("no command")?;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut spec = corpus::Spec::default();
    let mut seed: Option<u64> = None;
    let mut mtimes = true;
    let mut g = grid::Grid {
        homes: 1,
        dirs: 1,
        files: 1,
        sizes: 7,
        empty: false,
    };
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} takes a number"))
        };
        match a.to_str() {
            Some("--users") => spec.users = num("--users")? as usize,
            Some("--small") => spec.small = num("--small")? as usize,
            Some("--medium") => spec.medium = num("--medium")? as usize,
            Some("--large-mib") => spec.large_mib = num("--large-mib")? as usize,
            Some("--seed") => seed = Some(num("--seed")?),
            Some("--no-mtimes") => mtimes = false,
            Some("--homes") => g.homes = num("--homes")? as usize,
            Some("--dirs") => g.dirs = num("--dirs")? as usize,
            Some("--files") => g.files = num("--files")? as usize,
            Some("--sizes") => g.sizes = num("--sizes")?.max(1) as usize,
            Some("--empty") => g.empty = true,
            Some(s) if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    let want = |n: usize| {
        if paths.len() == n {
            Ok(())
        } else {
            Err(format!("{cmd} takes {n} path(s)"))
        }
    };
    match cmd {
        "make" => {
            want(1)?;
            if let Some(s) = seed {
                spec.seed = s;
            }
            corpus::make(&paths[0], &spec);
            describe(&paths[0]);
        }
        "grid" => {
            want(1)?;
            grid::make(&paths[0], &g);
            eprintln!("{} entries", g.entries());
        }
        "mutate" => {
            want(1)?;
            let day = corpus::mutate(&paths[0], seed.unwrap_or(2));
            eprintln!("{day:?}");
            describe(&paths[0]);
        }
        "describe" => {
            want(1)?;
            describe(&paths[0]);
        }
        "compare" => {
            want(2)?;
            let diff = compare::tree_diff_opts(&paths[0], &paths[1], mtimes);
            for d in diff.iter().take(50) {
                println!("{d}");
            }
            let (f, l, d, b) = corpus::describe(&paths[0]);
            println!(
                "{} difference(s) in {f} files, {l} symlinks, {d} directories, {b} bytes",
                diff.len()
            );
            return Ok(if diff.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        other => return Err(format!("unknown command {other}")),
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(root: &std::path::Path) {
    let (f, l, d, b) = corpus::describe(root);
    eprintln!("{f} files, {l} symlinks, {d} directories, {b} bytes");
}

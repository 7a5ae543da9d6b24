//! Typed errors and the documented exit codes.
//!
//! Every error variant carries the path and the operation it concerns, so that the
//! binary can print one line that names what failed and what to do about it.

use std::io;
use std::path::PathBuf;

/// The process exit codes, documented in README.md and the man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[repr(i32)]
pub enum ExitCode {
    /// Everything replicated.
    Ok = 0,
    /// Bad command line.
    Usage = 1,
    /// Protocol error with a remote peer.
    Protocol = 2,
    /// SRC or DEST unusable (missing, not a directory, nested in each other).
    Selection = 3,
    /// Destination I/O error or not enough space on the destination.
    DestIo = 11,
    /// Another run holds the destination's lock.
    Busy = 12,
    /// Interrupted by SIGINT or SIGTERM.
    Interrupted = 20,
    /// Some files could not be replicated (the others were).
    Partial = 23,
    /// Some source files vanished between the scan and their copy.
    Vanished = 24,
    /// Refused before deleting anything: the run would delete more than
    /// `--max-delete` allows (rsync's code for the same).
    MaxDelete = 25,
    /// `verify` found files that differ from their catalogue or from SRC.
    Differs = 26,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The code a far side or a job ended with; a number outside the table counts as a
    /// destination failure.
    pub fn from_code(c: i32) -> ExitCode {
        match c {
            0 => ExitCode::Ok,
            1 => ExitCode::Usage,
            2 => ExitCode::Protocol,
            3 => ExitCode::Selection,
            12 => ExitCode::Busy,
            20 => ExitCode::Interrupted,
            23 => ExitCode::Partial,
            24 => ExitCode::Vanished,
            25 => ExitCode::MaxDelete,
            26 => ExitCode::Differs,
            _ => ExitCode::DestIo,
        }
    }
}

/// An error of the library, with the path and the operation it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {what}")]
    Selection { path: PathBuf, what: String },
    #[error("{op} {path}: {source}")]
    Source {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} {path}: {source}")]
    Dest {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    NoSpace(Shortfall),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Protocol(String),
    /// The remote side failed with this exit code and printed its own message.
    #[error("")]
    Reported(ExitCode),
    #[error("{0}")]
    Usage(String),
    /// Another run holds the destination's lock (the message names it).
    #[error("{0}")]
    Locked(String),
    /// The run would delete more of DEST than `--max-delete` allows (the message gives
    /// the counts and the flag); nothing was changed.
    #[error("{0}")]
    TooManyDeletes(String),
    /// SRC is not the source the replica was made from (another filesystem or root);
    /// nothing was changed.
    #[error("{0}")]
    NewSource(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Selection { .. } => ExitCode::Selection,
            Error::Source { .. } => ExitCode::Partial,
            Error::Dest { .. } | Error::NoSpace(_) => ExitCode::DestIo,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Protocol(_) => ExitCode::Protocol,
            Error::Reported(c) => *c,
            Error::Usage(_) => ExitCode::Usage,
            Error::Locked(_) => ExitCode::Busy,
            Error::TooManyDeletes(_) => ExitCode::MaxDelete,
            Error::NewSource(_) => ExitCode::Selection,
        }
    }

    pub fn source(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Source {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn dest(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Dest {
            op,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A destination that cannot take a run: the one-line message, and how many bytes
/// are missing when bytes are what is missing (what `backup --prune-when-full` must
/// free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub message: String,
    pub bytes: Option<u64>,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Shortfall {
    /// A shortfall described in words only (a far side's message, a fault mid-run).
    fn from(message: String) -> Shortfall {
        Shortfall {
            message,
            bytes: None,
        }
    }
}

//! Remote locations (`[user@]host:path`) and the remote-shell command that reaches them.
//!
//! Arguments are passed to the local remote shell without a local shell, and each word
//! of the remote command is single-quoted for the remote shell, so names with spaces,
//! quotes, `$()`, `;`, newlines or bytes that are not UTF-8 arrive intact and are never
//! interpreted. A host that starts with `-` is refused: ssh would take it as an option.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::Error;

/// Where a tree lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { host: OsString, path: Vec<u8> },
}

/// Parses a command-line location: `host:path` and `user@host:path` are remote when no
/// `/` comes before the first `:` (so `./a:b` and `/x:y` are local, as in rsync).
pub fn parse_location(arg: &OsStr) -> Result<Location, Error> {
    let b = arg.as_bytes();
    let colon = b.iter().position(|&c| c == b':');
    let slash = b.iter().position(|&c| c == b'/');
    match colon {
        Some(c) if c > 0 && slash.is_none_or(|s| s > c) => {
            let host = &b[..c];
            if host.first() == Some(&b'-') {
                return Err(Error::Usage(format!(
                    "host '{}' starts with '-'; refusing it (ssh would read it as an option)",
                    crate::report::escape(host)
                )));
            }
            let path = if c + 1 == b.len() {
                b".".to_vec()
            } else {
                b[c + 1..].to_vec()
            };
            Ok(Location::Remote {
                host: OsString::from_vec(host.to_vec()),
                path,
            })
        }
        _ => Ok(Location::Local(PathBuf::from(arg))),
    }
}

/// Quotes one word for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn quote(word: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(word.len() + 2);
    q.push(b'\'');
    for &c in word {
        if c == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(c);
        }
    }
    q.push(b'\'');
    q
}

/// How to reach the remote side.
#[derive(Debug, Clone)]
pub struct RemoteShell {
    /// The remote-shell command (`--rsh`), split into words; `None`: ssh.
    pub rsh: Option<String>,
    pub port: Option<u16>,
    pub remote_bin: OsString,
}

impl RemoteShell {
    /// The command line: remote shell, host, `--`, then the quoted remote command.
    pub fn command(&self, host: &OsStr, remote_args: &[OsString]) -> Result<Command, Error> {
        let words: Vec<String> = match &self.rsh {
            Some(cmd) => {
                shell_words::split(cmd).map_err(|e| Error::Usage(format!("--rsh '{cmd}': {e}")))?
            }
            None => ["ssh", "-T", "-o", "BatchMode=yes"]
                .map(String::from)
                .to_vec(),
        };
        let Some((prog, rest)) = words.split_first() else {
            return Err(Error::Usage(
                "--rsh is empty; give a command such as 'ssh -p 2222'".into(),
            ));
        };
        let mut c = Command::new(prog);
        c.args(rest);
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        c.arg(host).arg("--");
        let mut remote = vec![quote(self.remote_bin.as_bytes())];
        remote.extend(remote_args.iter().map(|a| quote(a.as_bytes())));
        for w in remote {
            c.arg(OsString::from_vec(w));
        }
        Ok(c)
    }

    /// Starts the remote side with piped stdin/stdout; its stderr is ours.
    pub fn spawn(&self, host: &OsStr, remote_args: &[OsString]) -> Result<Child, Error> {
        let mut c = self.command(host, remote_args)?;
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let child = c.spawn().map_err(|e| Error::Selection {
            path: PathBuf::from(host),
            what: format!(
                "cannot start the remote shell {:?}: {e}; install ssh or pass --rsh",
                c.get_program()
            ),
        })?;
        if let Some(i) = &child.stdin {
            crate::fsutil::grow_pipe(i.as_fd());
        }
        if let Some(o) = &child.stdout {
            crate::fsutil::grow_pipe(o.as_fd());
        }
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let r = |s: &str| parse_location(OsStr::new(s)).unwrap();
        assert_eq!(r("/a/b"), Location::Local("/a/b".into()));
        assert_eq!(r("./x:y"), Location::Local("./x:y".into()));
        assert_eq!(
            r("bob@host:/srv/x"),
            Location::Remote {
                host: "bob@host".into(),
                path: b"/srv/x".to_vec()
            }
        );
        assert_eq!(
            r("host:"),
            Location::Remote {
                host: "host".into(),
                path: b".".to_vec()
            }
        );
        assert!(parse_location(OsStr::new("-oProxyCommand=x:y")).is_err());
    }

    #[test]
    fn quoting_keeps_every_byte_literal() {
        assert_eq!(quote(b"a b"), b"'a b'");
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
        assert_eq!(quote(b"$(rm -rf /);\n\xff"), b"'$(rm -rf /);\n\xff'");
    }

    #[test]
    fn command_line_has_host_then_separator_then_quoted_words() {
        let sh = RemoteShell {
            rsh: Some("ssh -o 'Foo bar'".into()),
            port: Some(2222),
            remote_bin: "/opt/fsync-repl".into(),
        };
        let c = sh
            .command(OsStr::new("h"), &["serve".into(), "a b".into()])
            .unwrap();
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(
            args,
            vec![
                "-o",
                "Foo bar",
                "-p",
                "2222",
                "h",
                "--",
                "'/opt/fsync-repl'",
                "'serve'",
                "'a b'"
            ]
        );
    }
}

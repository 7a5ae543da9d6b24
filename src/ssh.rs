//! Remote locations (`[user@]host:path`) and the remote-shell command that reaches them.
//!
//! Arguments are passed to the local remote shell without a local shell, and each word
//! of the remote command is single-quoted for the remote shell, so names with spaces,
//! quotes, `$()`, `;`, newlines or bytes that are not UTF-8 arrive intact and are never
//! interpreted. A host that starts with `-` is refused: ssh would take it as an option;
//! the remote command puts its path after `--`, so a path that starts with `-` stays a path.
//!
//! The remote shell runs in a process group of its own ([`RemoteChild`]): ending a
//! session ends everything it started (a wrapper script that forks, sudo, sshpass), in
//! bounded time, whether or not the far side exits when its input closes.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Where a tree lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { host: OsString, path: Vec<u8> },
}

impl Location {
    pub fn is_remote(&self) -> bool {
        matches!(self, Location::Remote { .. })
    }
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
                    crate::text::escape(host)
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
    /// Share one ssh connection between consecutive runs to the same host (OpenSSH
    /// connection multiplexing) when the remote shell is ssh; `--no-reuse` turns it off.
    pub reuse: bool,
}

/// How long an idle shared ssh connection stays open after its last session.
pub const CONTROL_PERSIST: &str = "60";

/// The directory of shared ssh connections' sockets, private to this user: in
/// `$XDG_RUNTIME_DIR` or else `/tmp/fsync-repl-UID`, created with mode 0700. `None`
/// when it cannot be made, or is not a directory of ours that only we can enter.
pub fn control_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() && std::path::Path::new(&d).is_absolute() => {
            PathBuf::from(d).join("fsync-repl")
        }
        _ => PathBuf::from(format!("/tmp/fsync-repl-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let m = std::fs::symlink_metadata(&dir).ok()?;
    // Room for the socket's name (%C: 40 characters) within sun_path.
    let fits = dir.as_os_str().len() + 1 + 40 < 100;
    (m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 && fits).then_some(dir)
}

/// Whether `prog` is OpenSSH's client (by name).
fn is_ssh(prog: &str) -> bool {
    std::path::Path::new(prog).file_name() == Some(OsStr::new("ssh"))
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
        // After the user's own words: ssh takes the first value of an option, so a
        // ControlPath or ControlMaster in --rsh wins.
        if let Some(dir) = self
            .reuse
            .then(control_dir)
            .flatten()
            .filter(|_| is_ssh(prog))
        {
            let mut path = OsString::from("ControlPath=");
            path.push(dir.join("%C"));
            c.args(["-o", "ControlMaster=auto", "-o"])
                .arg(format!("ControlPersist={CONTROL_PERSIST}"))
                .arg("-o")
                .arg(path);
        }
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

    /// Starts the remote side with piped stdin/stdout, in a process group of its own;
    /// its stderr is ours.
    pub fn spawn(&self, host: &OsStr, remote_args: &[OsString]) -> Result<RemoteChild, Error> {
        let mut c = self.command(host, remote_args)?;
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
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
        Ok(RemoteChild { child: Some(child) })
    }
}

/// How long a remote shell has to exit after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);

/// How long a remote shell has to exit by itself after a session's normal end (its
/// input closed) before it is terminated.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A remote shell, leader of its own process group.
#[derive(Debug)]
pub struct RemoteChild {
    child: Option<Child>,
}

impl RemoteChild {
    /// Its stdin and stdout pipes (once).
    pub fn pipes(&mut self) -> Result<(ChildStdin, ChildStdout), Error> {
        let c = self.child.as_mut();
        match c.map(|c| (c.stdin.take(), c.stdout.take())) {
            Some((Some(i), Some(o))) => Ok((i, o)),
            _ => Err(Error::Protocol("the remote shell has no pipes".into())),
        }
    }

    /// Whether the leader has exited; it is not reaped, so its process group id stays
    /// reserved and signalling the group can reach no one else.
    fn exited(pid: i32) -> bool {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` outlives the call.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        // SAFETY: waitid filled `info` (or left it zeroed: no child has changed state).
        r != 0 || unsafe { info.si_pid() } != 0
    }

    /// Waits up to `limit` for the leader to exit (without reaping it). A pidfd wakes
    /// the wait the moment it exits; where there is none (before Linux 5.3), short
    /// sleeps that grow to 20 ms stand in.
    fn wait_exit(pid: i32, limit: Duration) -> bool {
        let start = Instant::now();
        if Self::exited(pid) {
            return true;
        }
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let mut nap = Duration::from_millis(1);
        loop {
            if Self::exited(pid) {
                return true;
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            match &pidfd {
                Some(fd) => {
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    let _ = crate::wire::poll_one(fd.as_fd(), libc::POLLIN, ms);
                }
                None => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Ends the remote shell and everything in its process group; call it once its
    /// pipes are closed. Waits up to `grace` for the shell to exit by itself, then sends
    /// SIGTERM to the group, waits [`GRACE`], and sends SIGKILL. Never waits longer than
    /// `grace` + 2 × [`GRACE`]: a process that even SIGKILL does not end (stuck in the
    /// kernel) is reaped by a thread of its own. A shell that exits by itself only has
    /// what it left in its group sent SIGTERM. Returns the exit status when known.
    pub fn end(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        let group = |sig| {
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-pid, sig) };
        };
        if Self::wait_exit(pid, grace) {
            // Whatever it left running in its group gets the polite signal.
            group(libc::SIGTERM);
        } else {
            group(libc::SIGTERM);
            Self::wait_exit(pid, GRACE);
            group(libc::SIGKILL);
            if !Self::wait_exit(pid, GRACE) {
                let _ = std::thread::Builder::new()
                    .name("fsync-repl-reaper".into())
                    .spawn(move || child.wait());
                return None;
            }
        }
        child.wait().ok()
    }
}

impl Drop for RemoteChild {
    fn drop(&mut self) {
        self.end(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_an_exit_sees_it_and_leaves_the_status_to_reap() {
        let mut quick = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        assert!(RemoteChild::wait_exit(
            quick.id() as i32,
            Duration::from_secs(30)
        ));
        // Not reaped by the wait: the status is still there to collect.
        assert_eq!(quick.wait().unwrap().code(), Some(3));

        let mut slow = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(!RemoteChild::wait_exit(
            slow.id() as i32,
            Duration::from_millis(50)
        ));
        slow.kill().unwrap();
        assert!(RemoteChild::wait_exit(
            slow.id() as i32,
            Duration::from_secs(30)
        ));
        slow.wait().unwrap();
    }

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
            reuse: false,
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

    #[test]
    fn ssh_shares_its_connection_in_a_private_directory_unless_told_not_to() {
        let runtime = tempfile::tempdir().unwrap();
        // The variable is read when the command is built; no other test reads it.
        std::env::set_var("XDG_RUNTIME_DIR", runtime.path());
        let args = |rsh: &str, reuse: bool| -> Vec<String> {
            let sh = RemoteShell {
                rsh: Some(rsh.into()),
                port: None,
                remote_bin: "fsync-repl".into(),
                reuse,
            };
            let c = sh.command(OsStr::new("h"), &[]).unwrap();
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let dir = runtime.path().join("fsync-repl");
        let on = args("/usr/bin/ssh -T", true);
        let path = format!("ControlPath={}/%C", dir.display());
        assert_eq!(
            on[..7],
            [
                "-T",
                "-o",
                "ControlMaster=auto",
                "-o",
                "ControlPersist=60",
                "-o",
                &path
            ]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Off when asked, and for a remote shell that is not ssh.
        assert_eq!(args("ssh -T", false), ["-T", "h", "--", "'fsync-repl'"]);
        assert_eq!(args("rsh-wrapper", true), ["h", "--", "'fsync-repl'"]);
        // A directory others can enter is not used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(args("ssh", true), ["h", "--", "'fsync-repl'"]);
    }
}

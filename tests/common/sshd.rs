//! A throw-away `sshd` on 127.0.0.1 for tests of the remote transport through a real
//! OpenSSH: a free port, a fresh host key and user key in a temp dir, a config written
//! here. Without `/usr/sbin/sshd`, `ssh`, `ssh-keygen`, or root, [`sshd`] prints a
//! `SKIPPED` line and returns `None`, except under `CI=true`, where it fails.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use super::{is_root, require};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A running throw-away sshd; killed (and reaped) on drop.
pub struct Sshd {
    pub child: Child,
    pub port: u16,
    /// Holds the keys, config, pid file and log; removed after the child is gone.
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("user_key")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `--rsh`, `--port`, `--remote-bin` for this server.
    pub fn args(&self, remote_bin: &Path) -> Vec<OsString> {
        let rsh = format!(
            "ssh -i '{}' -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o BatchMode=yes -o LogLevel=ERROR",
            self.key().display()
        );
        vec![
            "--rsh".into(),
            rsh.into(),
            "--port".into(),
            self.port.to_string().into(),
            "--remote-bin".into(),
            remote_bin.into(),
            "--timeout".into(),
            "30".into(),
        ]
    }
}

/// Why sshd cannot be started here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !Path::new(SSHD).exists() {
        return Some(format!("{SSHD} not found (apt-get install openssh-server)"));
    }
    if !is_root() {
        return Some("not root: sshd needs root to log a user in".into());
    }
    for tool in ["ssh", "ssh-keygen"] {
        if which(tool).is_none() {
            return Some(format!("{tool} not found (apt-get install openssh-client)"));
        }
    }
    None
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

/// Starts sshd, or returns `None` after printing why it cannot run here.
pub fn sshd() -> Option<Sshd> {
    if let Some(why) = missing_prerequisite() {
        require(false, &format!("real-ssh test: {why}"));
        return None;
    }
    // The port is found by binding port 0 and releasing it; another process may take it
    // in between, so a server that dies at start-up is retried on a new port.
    let mut last = String::new();
    for _ in 0..3 {
        match try_start() {
            Ok(s) => return Some(s),
            Err(e) => last = e,
        }
    }
    panic!("sshd did not start (prerequisites are present, so this is a failure):\n{last}");
}

fn keygen(path: &Path) {
    let st = StdCommand::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "fsync-repl-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(st.success(), "ssh-keygen -f {} failed", path.display());
}

fn try_start() -> Result<Sshd, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("user_key"));
    fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
    // sshd refuses to start without its privilege separation directory.
    fs::create_dir_all("/run/sshd").map_err(|e| format!("mkdir /run/sshd: {e}"))?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {d}/host_key\n\
         PidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         AllowTcpForwarding no\n",
        d = d.display()
    );
    fs::write(d.join("sshd_config"), config).expect("write sshd_config");
    let log = fs::File::create(d.join("sshd.log")).expect("sshd.log");
    let child = StdCommand::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {SSHD}: {e}"))?;
    let mut s = Sshd { child, port, dir };
    // Bounded poll: the port answers with an SSH banner, or sshd exits, or 10 s pass.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            return Err(format!(
                "sshd exited at start-up ({st}); its log:\n{}",
                s.log()
            ));
        }
        if banner(&addr) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "sshd did not answer on {addr} within 10 s; its log:\n{}",
                s.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether an SSH server greets on `addr`.
fn banner(addr: &SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    let ok = c.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-");
    // Say goodbye politely so sshd does not log a half-open connection as an attack.
    let _ = c.write_all(b"SSH-2.0-probe\r\n");
    ok
}

//! A throwaway moto server (PyPI `moto[server]`): a real implementation of the EC2 and KMS APIs
//! on a free loopback port, killed on drop. Found through `MOLECULE_MOTO_SERVER`, else
//! `.venv/bin/moto_server` at the workspace root (what `.ci/run` installs), else `PATH`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MotoServer {
    child: Child,
    port: u16,
    _log: tempfile::NamedTempFile,
}

fn workspace_root() -> PathBuf {
    // crates/molecule-testkit → the workspace root two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn find_moto() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOLECULE_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

/// One plain HTTP/1.0 request to the server; the status code, if it answered.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1)?.parse().ok()
}

impl MotoServer {
    /// Starts a server, or reports why it cannot (see [`crate::unavailable`]) and returns None.
    pub fn start() -> Option<MotoServer> {
        let Some(bin) = find_moto() else {
            crate::unavailable(
                "moto",
                "moto_server not found (MOLECULE_MOTO_SERVER, .venv/bin/moto_server, PATH); install with: python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.1'",
            );
            return None;
        };
        let log = tempfile::NamedTempFile::new().expect("temp file");
        let port = crate::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("log file")))
            .stderr(Stdio::from(log.reopen().expect("log file")))
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                crate::unavailable("moto", &format!("cannot run {}: {e}", bin.display()));
                return None;
            }
        };
        let mut server = MotoServer {
            child,
            port,
            _log: log,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(server._log.path()).unwrap_or_default();
                crate::unavailable("moto", &format!("moto_server exited ({status}): {log}"));
                return None;
            }
            if http(port, "GET", "/moto-api/").is_some() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        crate::unavailable("moto", "moto_server did not answer within 60 s");
        None
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL to give the AWS SDK (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Clears every resource the server holds (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let status = http(self.port, "POST", "/moto-api/reset");
        assert_eq!(status, Some(200), "moto reset failed");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

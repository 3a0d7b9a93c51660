//! Pidfiles held under an exclusive `flock` for the life of the process. The lock, not the PID,
//! proves the process is alive and ours: a stale file left by a dead process is unlocked, so a
//! recycled PID is never mistaken for one of our instances and never signalled.
//!
//! Content: the PID on the first line, then the address the process listens on once it is bound.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("another process (pid {pid}) already holds {path}")]
    Held { pid: String, path: String },
    #[error("pidfile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The claim on a pidfile; dropping it (or the process exiting) releases the lock.
#[derive(Debug)]
pub struct Pidfile {
    file: File,
    path: String,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

impl Pidfile {
    /// Claims `path` for this process, or fails if a live process holds it.
    pub fn claim(path: &Path) -> Result<Pidfile, PidfileError> {
        let io = |source| PidfileError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if !flock(&file, libc::LOCK_EX).map_err(io)? {
            let mut content = String::new();
            let _ = file.read_to_string(&mut content);
            return Err(PidfileError::Held {
                pid: content.lines().next().unwrap_or("?").to_owned(),
                path: path.display().to_string(),
            });
        }
        let mut pidfile = Pidfile {
            file,
            path: path.display().to_string(),
        };
        pidfile.write(None).map_err(io)?;
        Ok(pidfile)
    }

    /// Records the address the process now listens on.
    pub fn publish_addr(&mut self, addr: &str) -> Result<(), PidfileError> {
        self.write(Some(addr)).map_err(|source| PidfileError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn write(&mut self, addr: Option<&str>) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        let mut content = format!("{}\n", std::process::id());
        if let Some(addr) = addr {
            content.push_str(addr);
            content.push('\n');
        }
        self.file.write_all(content.as_bytes())?;
        self.file.sync_data()
    }
}

/// What a pidfile says about its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No pidfile, or nobody holds its lock: no live process.
    Dead,
    /// A live process holds the lock.
    Live { pid: i32, addr: Option<String> },
}

/// Looks at a pidfile without disturbing its holder.
pub fn probe(path: &Path) -> std::io::Result<Probe> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::Dead),
        Err(e) => return Err(e),
    };
    if flock(&file, libc::LOCK_SH)? {
        // We got the lock, so nobody holds it; closing the file releases ours.
        return Ok(Probe::Dead);
    }
    let mut content = String::new();
    file.read_to_string(&mut content)?;
    let mut lines = content.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    let addr = lines
        .next()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    match pid {
        Some(pid) => Ok(Probe::Live { pid, addr }),
        // Locked but not yet written: the holder is starting up.
        None => Ok(Probe::Live { pid: 0, addr: None }),
    }
}

/// Sends `signal` to the process holding the pidfile, if one does. Returns whether one did.
pub fn signal_holder(path: &Path, signal: libc::c_int) -> std::io::Result<bool> {
    match probe(path)? {
        Probe::Live { pid, .. } if pid > 0 => {
            // SAFETY: kill has no memory-safety preconditions; the lock proves the PID is ours.
            let rc = unsafe { libc::kill(pid, signal) };
            Ok(rc == 0)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_probe_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert_eq!(probe(&path).unwrap(), Probe::Dead);
        let mut held = Pidfile::claim(&path).unwrap();
        held.publish_addr("127.0.0.1:1234").unwrap();
        // flock locks belong to the open file description, so a second claim from this process
        // through a new description is refused like one from another process.
        assert!(matches!(
            Pidfile::claim(&path),
            Err(PidfileError::Held { .. })
        ));
        assert_eq!(
            probe(&path).unwrap(),
            Probe::Live {
                pid: std::process::id() as i32,
                addr: Some("127.0.0.1:1234".into())
            }
        );
        drop(held);
        assert_eq!(
            probe(&path).unwrap(),
            Probe::Dead,
            "a stale file is not a live process"
        );
        assert!(!signal_holder(&path, 0).unwrap());
    }
}

//! Secret values: wrapped so that `Debug` and `Display` never print them, loaded from env or from
//! a `<NAME>_FILE` (garage style), with empty and whitespace values treated as unset.

use std::fmt;
use std::path::Path;

/// A secret string. The only way to read it is [`Secret::expose`], which makes every use visible.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; empty or whitespace-only values are not secrets, they are "unset".
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == value.len() {
            Some(Self(value))
        } else {
            Some(Self(trimmed.to_owned()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Removes every occurrence of any of `secrets` from `text`: for upstream texts (error fields
/// of other services) that might echo a credential we sent.
pub fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.expose().is_empty() {
            out = out.replace(s.expose(), "[redacted]");
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    #[error("{name} and {name}_FILE are both set; set only one")]
    Both { name: String },
    #[error("{name}_FILE points at {path}, which cannot be read: {source}")]
    Unreadable {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{name}_FILE points at {path}, which is readable by group or others (mode {mode:o}); refusing to start until it is 0600")]
    Permissions {
        name: String,
        path: String,
        mode: u32,
    },
}

/// Reads a secret from `name` or from the file named by `name_FILE`. Returns `Ok(None)` when
/// neither is set (or the value is empty). The error names the variable, never the value.
pub fn from_env(name: &str) -> Result<Option<Secret>, SecretSourceError> {
    let direct = std::env::var(name).ok().and_then(Secret::new);
    let file_var = format!("{name}_FILE");
    let file = std::env::var(&file_var)
        .ok()
        .filter(|p| !p.trim().is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(SecretSourceError::Both { name: name.into() }),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => read_file(name, Path::new(&path)),
        (None, None) => Ok(None),
    }
}

/// Reads a secret file, refusing one that group or others can read.
pub fn read_file(name: &str, path: &Path) -> Result<Option<Secret>, SecretSourceError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |source| SecretSourceError::Unreadable {
        name: name.into(),
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretSourceError::Permissions {
            name: name.into(),
            path: path.display().to_string(),
            mode,
        });
    }
    let value = std::fs::read_to_string(path).map_err(unreadable)?;
    Ok(Secret::new(value))
}

/// Writes a secret to `path` with mode 0600, creating parent folders. Used for secrets that the
/// local (non-strict) mode generates on first start.
pub fn write_file(path: &Path, secret: &Secret) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(secret.expose().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Loads the secret at `path`, or generates one with `generate` and stores it 0600.
pub fn load_or_generate(
    name: &str,
    path: &Path,
    generate: impl FnOnce() -> Secret,
) -> anyhow::Result<Secret> {
    if path.exists() {
        if let Some(secret) = read_file(name, path)? {
            return Ok(secret);
        }
    }
    let secret = generate();
    write_file(path, &secret)
        .map_err(|e| anyhow::anyhow!("cannot store generated {name} at {}: {e}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_whitespace_are_unset() {
        assert!(Secret::new("").is_none());
        assert!(Secret::new("  \t\n").is_none());
        assert_eq!(Secret::new(" abc\n").unwrap().expose(), "abc");
    }

    #[test]
    fn debug_never_prints_the_value() {
        let s = Secret::new("hunter2-very-secret").unwrap();
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn secret_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_file(&path, &Secret::new("value-1").unwrap()).unwrap();
        assert_eq!(read_file("X", &path).unwrap().unwrap().expose(), "value-1");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_file("X", &path).unwrap_err().to_string();
        assert!(err.contains("X_FILE") && err.contains("644"), "{err}");
        assert!(!err.contains("value-1"));
    }
}

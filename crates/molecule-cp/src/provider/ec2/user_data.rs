//! EC2 user-data (C2): a cloud-init shell script that installs and starts an instance with its
//! boot environment, where every value enters as data, never as code.
//!
//! - The environment goes into a 0600 file as `export NAME='value'` lines; that file travels
//!   base64-encoded inside a quoted here-document, so nothing in it is ever parsed by the
//!   user-data shell. Values are single-quoted by [`quote`], which rejects NUL.
//! - Names must match `^[A-Za-z_][A-Za-z0-9_]*$`, and names that change how the launcher shell
//!   itself behaves (`PATH`, `IFS`, `LD_*` ...) are refused.
//! - The launcher and the systemd unit are base64-encoded too; the image reference or binary URL
//!   is quoted.
//! - The script calls only [`COMMANDS`]; the rendered script must stay under 16 KB (the EC2
//!   limit), else [`UserDataError::TooLarge`] says by how much.
//!
//! This module depends on `std`, `base64` and `thiserror` only, so the fuzz target can build it
//! without the AWS SDK.

use std::collections::BTreeMap;

use base64::Engine;

/// The EC2 user-data limit (raw, before the base64 encoding the API wants).
pub const MAX_USER_DATA: usize = 16 * 1024;

/// Every command the rendered script (and its launcher) runs; nothing else is called.
pub const COMMANDS: &[&str] = &["mkdir", "chmod", "base64", "curl", "docker", "systemctl"];

/// Names the launcher shell interprets itself; a boot env may not set them.
const SHELL_NAMES: &[&str] = &[
    "PATH",
    "IFS",
    "ENV",
    "BASH_ENV",
    "CDPATH",
    "SHELLOPTS",
    "BASHOPTS",
    "PS1",
    "PS2",
    "PS4",
    "OPTIND",
    "OPTARG",
    "HOME",
];

/// What to run on the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// A container image, run with docker on the host network.
    Image(String),
    /// A URL of the `molecule` binary, downloaded with curl.
    BinaryUrl(String),
}

/// Everything the script is rendered from.
#[derive(Debug, Clone)]
pub struct UserDataSpec<'a> {
    /// `tenant` or `workspace`: names the unit and the files.
    pub role: &'a str,
    pub artifact: &'a Artifact,
    /// The arguments of the `molecule` command (e.g. `tenant serve`).
    pub args: &'a [&'a str],
    pub env: &'a BTreeMap<String, String>,
    /// Where the env file, launcher and binary go (absolute; `/var/lib/molecule` in production).
    pub state_dir: &'a str,
    /// Where the systemd unit goes (`/etc/systemd/system` in production).
    pub unit_dir: &'a str,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    #[error("env name {0:?} is invalid: it must match ^[A-Za-z_][A-Za-z0-9_]*$")]
    InvalidName(String),
    #[error("env name {0} is reserved: it changes how the launcher shell behaves")]
    ReservedName(String),
    #[error("the value of {0} contains a NUL byte, which no shell or environment can carry")]
    Nul(String),
    #[error("{0} must be an absolute path of letters, digits, '/', '_', '.' and '-'")]
    BadPath(&'static str),
    #[error("{0} must be ASCII without spaces or control characters")]
    BadArtifact(&'static str),
    #[error("role must be 1 to 32 characters of a-z")]
    BadRole,
    #[error("rendered user-data is {size} bytes, over the EC2 limit of {limit} bytes by {over}: shrink the boot environment")]
    TooLarge {
        size: usize,
        limit: usize,
        over: usize,
    },
}

/// Whether `name` matches `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_name(name: &str) -> Result<(), UserDataError> {
    if !valid_env_name(name) {
        return Err(UserDataError::InvalidName(name.to_owned()));
    }
    if SHELL_NAMES.contains(&name) || name.starts_with("LD_") {
        return Err(UserDataError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// Quotes `value` as one POSIX shell word: the whole value inside single quotes, each `'`
/// written as `'\''`. Inside single quotes nothing is special, so any value but NUL (which no C
/// string can hold) comes back byte for byte. `what` names the value for the error.
pub fn quote(what: &str, value: &str) -> Result<String, UserDataError> {
    if value.contains('\0') {
        return Err(UserDataError::Nul(what.to_owned()));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

fn check_path(what: &'static str, path: &str) -> Result<(), UserDataError> {
    let ok = path.starts_with('/')
        && path.len() <= 256
        && !path.split('/').any(|part| part == "..")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
    ok.then_some(()).ok_or(UserDataError::BadPath(what))
}

fn check_artifact(what: &'static str, value: &str) -> Result<(), UserDataError> {
    let ok =
        !value.is_empty() && value.len() <= 1024 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(()).ok_or(UserDataError::BadArtifact(what))
}

/// The env file: one `export NAME='value'` line per entry, in name order.
pub fn env_file(env: &BTreeMap<String, String>) -> Result<String, UserDataError> {
    let mut out = String::new();
    for (name, value) in env {
        check_name(name)?;
        out.push_str("export ");
        out.push_str(name);
        out.push('=');
        out.push_str(&quote(name, value)?);
        out.push('\n');
    }
    Ok(out)
}

/// A here-document that writes `content` to `path` through `base64 -d`: the delimiter can never
/// occur in base64 text, and the quoted delimiter turns off every expansion.
fn write_file(script: &mut String, path: &str, content: &str, mode: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(content.as_bytes());
    script.push_str(&format!("base64 -d > '{path}' <<'MOLECULE_DATA'\n"));
    for chunk in encoded.as_bytes().chunks(76) {
        script.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        script.push('\n');
    }
    script.push_str("MOLECULE_DATA\n");
    script.push_str(&format!("chmod {mode} '{path}'\n"));
}

/// Renders the user-data script. Errors name the offending variable, never its value.
pub fn render(spec: &UserDataSpec<'_>) -> Result<String, UserDataError> {
    let role_ok =
        (1..=32).contains(&spec.role.len()) && spec.role.bytes().all(|b| b.is_ascii_lowercase());
    if !role_ok {
        return Err(UserDataError::BadRole);
    }
    check_path("state dir", spec.state_dir)?;
    check_path("unit dir", spec.unit_dir)?;
    let role = spec.role;
    let state = spec.state_dir.trim_end_matches('/');
    let unit_dir = spec.unit_dir.trim_end_matches('/');
    let env_path = format!("{state}/{role}.env");
    let run_path = format!("{state}/{role}-run");
    let unit = format!("molecule-{role}.service");

    let env = env_file(spec.env)?;
    let mut args = String::new();
    for a in spec.args {
        args.push(' ');
        args.push_str(&quote("args", a)?);
    }
    let mut launcher = String::from("#!/bin/sh\nset -eu\nset -a\n");
    launcher.push_str(&format!(". '{env_path}'\nset +a\n"));
    match spec.artifact {
        Artifact::Image(image) => {
            check_artifact("the tenant image", image)?;
            launcher.push_str(&format!(
                "exec docker run --rm --name molecule-{role} --network host --volume '{state}:{state}'"
            ));
            for name in spec.env.keys() {
                launcher.push_str(" --env ");
                launcher.push_str(name);
            }
            launcher.push(' ');
            launcher.push_str(&quote("image", image)?);
        }
        Artifact::BinaryUrl(url) => {
            check_artifact("the tenant binary URL", url)?;
            launcher.push_str(&format!("exec '{state}/molecule'"));
        }
    }
    launcher.push_str(&args);
    launcher.push('\n');

    let unit_text = format!(
        "[Unit]\nDescription=Molecule {role}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nExecStart={run_path}\nRestart=always\nRestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n"
    );

    let mut script = String::new();
    script.push_str("#!/bin/sh\n");
    script.push_str(&format!(
        "# Molecule {role} instance, generated by the control plane. Every value is data:\n# base64 in quoted here-documents, or single-quoted. Nothing is interpolated.\n"
    ));
    script.push_str("set -eu\numask 077\n");
    script.push_str(&format!(
        "mkdir -p '{state}' '{unit_dir}'\nchmod 0700 '{state}'\n"
    ));
    write_file(&mut script, &env_path, &env, "0600");
    match spec.artifact {
        Artifact::Image(image) => {
            script.push_str(&format!("docker pull {}\n", quote("image", image)?));
        }
        Artifact::BinaryUrl(url) => {
            script.push_str(&format!(
                "curl -fsSL --retry 5 -o '{state}/molecule' {}\nchmod 0700 '{state}/molecule'\n",
                quote("binary URL", url)?
            ));
        }
    }
    write_file(&mut script, &run_path, &launcher, "0700");
    write_file(
        &mut script,
        &format!("{unit_dir}/{unit}"),
        &unit_text,
        "0644",
    );
    script.push_str(&format!(
        "systemctl daemon-reload\nsystemctl enable --now {unit}\n"
    ));
    if script.len() > MAX_USER_DATA {
        return Err(UserDataError::TooLarge {
            size: script.len(),
            limit: MAX_USER_DATA,
            over: script.len() - MAX_USER_DATA,
        });
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(env: &'a BTreeMap<String, String>, artifact: &'a Artifact) -> UserDataSpec<'a> {
        UserDataSpec {
            role: "tenant",
            artifact,
            args: &["tenant", "serve"],
            env,
            state_dir: "/var/lib/molecule",
            unit_dir: "/etc/systemd/system",
        }
    }

    #[test]
    fn quote_rejects_nul_and_wraps_single_quotes() {
        assert_eq!(quote("X", "a'b").unwrap(), r"'a'\''b'");
        assert_eq!(quote("X", "").unwrap(), "''");
        assert_eq!(
            quote("X", "a\0b").unwrap_err(),
            UserDataError::Nul("X".into())
        );
    }

    #[test]
    fn invalid_reserved_and_nul_are_rejected_without_echoing_values() {
        let image = Artifact::Image("ghcr.io/molecule/tenant:1".into());
        for (name, err) in [
            ("1ABC", UserDataError::InvalidName("1ABC".into())),
            ("A-B", UserDataError::InvalidName("A-B".into())),
            ("A B", UserDataError::InvalidName("A B".into())),
            ("", UserDataError::InvalidName("".into())),
            ("PATH", UserDataError::ReservedName("PATH".into())),
            (
                "LD_PRELOAD",
                UserDataError::ReservedName("LD_PRELOAD".into()),
            ),
        ] {
            let env = BTreeMap::from([(name.to_owned(), "v".to_owned())]);
            assert_eq!(render(&spec(&env, &image)).unwrap_err(), err);
        }
        let env = BTreeMap::from([("SECRETISH".to_owned(), "top\0secret".to_owned())]);
        let err = render(&spec(&env, &image)).unwrap_err();
        assert_eq!(err, UserDataError::Nul("SECRETISH".into()));
        assert!(!err.to_string().contains("top"));
        let bad = Artifact::Image("evil image\n".into());
        let env = BTreeMap::new();
        assert!(matches!(
            render(&spec(&env, &bad)),
            Err(UserDataError::BadArtifact(_))
        ));
    }

    #[test]
    fn oversized_scripts_are_rejected_with_a_clear_error() {
        let image = Artifact::Image("img:1".into());
        let env = BTreeMap::from([("BIG".to_owned(), "x".repeat(MAX_USER_DATA))]);
        let err = render(&spec(&env, &image)).unwrap_err();
        let UserDataError::TooLarge { size, limit, over } = err.clone() else {
            panic!("expected TooLarge, got {err:?}");
        };
        assert_eq!(limit, 16 * 1024);
        assert_eq!(over, size - limit);
        assert!(err.to_string().contains("16384"), "{err}");
        // Just under the limit renders.
        let small = BTreeMap::from([("SMALL".to_owned(), "x".repeat(8 * 1024))]);
        assert!(render(&spec(&small, &image)).unwrap().len() <= MAX_USER_DATA);
    }

    #[test]
    fn the_script_calls_only_known_commands() {
        let env = BTreeMap::from([("A".to_owned(), "$(reboot)`halt`".to_owned())]);
        for artifact in [
            Artifact::Image("img:1".into()),
            Artifact::BinaryUrl("https://example.com/molecule".into()),
        ] {
            let script = render(&spec(&env, &artifact)).unwrap();
            let mut in_heredoc = false;
            for line in script.lines().skip(1) {
                if in_heredoc {
                    in_heredoc = line != "MOLECULE_DATA";
                    continue;
                }
                if line.starts_with('#') || line.starts_with("set ") || line.starts_with("umask ") {
                    continue;
                }
                let cmd = line.split_whitespace().next().unwrap();
                assert!(COMMANDS.contains(&cmd), "unexpected command {cmd:?}");
                in_heredoc = line.ends_with("<<'MOLECULE_DATA'");
            }
            assert!(!script.contains("reboot"), "values travel base64-encoded");
        }
    }
}

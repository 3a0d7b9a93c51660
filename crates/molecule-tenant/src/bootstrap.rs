//! Bootstrap on EC2: the user-data gives a tenant only the CP URL, its org id and a single-use
//! bootstrap token (`MOLECULE_BOOTSTRAP_TOKEN`), since anything in user-data is readable through
//! the metadata service. Before its configuration is built, the tenant trades the token at
//! `POST /cp/tenants/bootstrap` for its admin token, encryption key and the rest, and keeps the
//! answer in a 0600 file (`MOLECULE_BOOTSTRAP_STATE`) so that a restart of the service, which
//! cannot use the token again, boots from that file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use molecule_shared::http::{read_capped, upstream_error_text};

/// The values a bootstrap answer may set; anything else in it is ignored.
pub const KEYS: &[&str] = &[
    "ADMIN_TOKEN",
    "SECRETS_ENCRYPTION_KEY",
    "MOLECULE_CP_SHARED_SECRET",
    "MOLECULE_CP_URL",
    "MOLECULE_ORG_ID",
    "MOLECULE_ORG_SLUG",
    "MOLECULE_ENV",
    "PLATFORM_URL",
];
const CAP: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("MOLECULE_BOOTSTRAP_TOKEN is set, but {0} is not")]
    Missing(&'static str),
    #[error("bootstrap exchange failed: {0}")]
    Transport(String),
    #[error("the control plane refused the bootstrap token (401): it is unknown, used or expired; re-provision the instance")]
    Refused,
    #[error("the control plane answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("bootstrap answer is invalid: {0}")]
    Invalid(String),
    #[error("bootstrap state file {path}: {reason}")]
    State { path: String, reason: String },
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Trades `token` at `cp_url` for the tenant's boot values.
pub async fn exchange(
    cp_url: &str,
    org_id: &str,
    token: &str,
) -> Result<BTreeMap<String, String>, BootstrapError> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| BootstrapError::Transport("cannot build an HTTP client".into()))?;
    let url = format!("{}/cp/tenants/bootstrap", cp_url.trim_end_matches('/'));
    let resp = http
        .post(url)
        .json(&serde_json::json!({ "org_id": org_id, "bootstrap_token": token }))
        .send()
        .await
        .map_err(|e| BootstrapError::Transport(molecule_shared::http::without_url(&e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(BootstrapError::Refused);
    }
    let body = read_capped(resp, CAP)
        .await
        .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    if !status.is_success() {
        return Err(BootstrapError::Status {
            status: status.as_u16(),
            message: upstream_error_text(&body),
        });
    }
    let map: BTreeMap<String, String> = serde_json::from_slice(&body)
        .map_err(|_| BootstrapError::Invalid("not a flat string map".into()))?;
    Ok(map
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .collect())
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::State {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn write_state(path: &Path, map: &BTreeMap<String, String>) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| state_err(&tmp, e))?;
    let json = serde_json::to_vec(map).map_err(|e| state_err(path, e))?;
    f.write_all(&json).map_err(|e| state_err(&tmp, e))?;
    f.sync_all().map_err(|e| state_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| state_err(path, e))
}

/// When `MOLECULE_BOOTSTRAP_TOKEN` is set and `ADMIN_TOKEN` is not: the values from the state
/// file if a previous boot exchanged the token, else from the exchange (then saved). `None`
/// when there is nothing to bootstrap.
pub async fn resolve_from_env() -> Result<Option<BTreeMap<String, String>>, BootstrapError> {
    let Some(token) = var("MOLECULE_BOOTSTRAP_TOKEN") else {
        return Ok(None);
    };
    if var("ADMIN_TOKEN").is_some() {
        return Ok(None);
    }
    let state = var("MOLECULE_BOOTSTRAP_STATE").map(std::path::PathBuf::from);
    if let Some(path) = &state {
        if path.exists() {
            let bytes = std::fs::read(path).map_err(|e| state_err(path, e))?;
            let map = serde_json::from_slice(&bytes)
                .map_err(|_| state_err(path, "not a flat string map"))?;
            return Ok(Some(map));
        }
    }
    let cp_url = var("MOLECULE_CP_URL").ok_or(BootstrapError::Missing("MOLECULE_CP_URL"))?;
    let org_id = var("MOLECULE_ORG_ID").ok_or(BootstrapError::Missing("MOLECULE_ORG_ID"))?;
    let map = exchange(&cp_url, &org_id, &token).await?;
    if let Some(path) = &state {
        write_state(path, &map)?;
    }
    tracing::info!(
        values = map.len(),
        "bootstrap token exchanged for the tenant's configuration"
    );
    Ok(Some(map))
}

/// Puts the bootstrap values into this process's environment, where the configuration reads
/// them. Call before anything else reads or writes the environment (it runs first thing in
/// `tenant serve`, before any other task is started).
pub fn apply(map: &BTreeMap<String, String>) {
    for (k, v) in map {
        if KEYS.contains(&k.as_str()) {
            std::env::set_var(k, v);
        }
    }
    std::env::remove_var("MOLECULE_BOOTSTRAP_TOKEN");
}

//! The tenant's client of the control plane. Every call has a timeout and a capped read; errors
//! carry the control plane's structured `error` field (scrubbed of our credentials) or a size,
//! never a raw body. Configuration is refreshed at boot, periodically with `If-None-Match`, and
//! at once after a 401, and the next call uses the new values without a restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use molecule_shared::http::{read_capped, upstream_error_text, without_url};
use molecule_shared::secret::{scrub, Secret};
use tokio_util::sync::CancellationToken;

use crate::config::CpLink;

const CONFIG_CAP: usize = 64 * 1024;
const MAX_VALUE: usize = 4 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The keys a tenant takes from `/cp/tenants/config`; anything else is ignored.
pub const KNOWN_KEYS: &[&str] = &[
    "MOLECULE_CP_URL",
    "MOLECULE_CP_SHARED_SECRET",
    "MOLECULE_ORG_ID",
    "MOLECULE_ORG_SLUG",
];

#[derive(Debug, Clone)]
pub struct CpSettings {
    pub cp_url: String,
    pub shared_secret: Option<Secret>,
    pub org_slug: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("control plane call failed: {0}")]
    Transport(String),
    #[error("control plane refused our credentials (401)")]
    Unauthorized,
    #[error("control plane answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("control plane response is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    /// The names of the keys whose values changed.
    Updated(Vec<String>),
}

pub struct CpClient {
    link: CpLink,
    http: reqwest::Client,
    settings: RwLock<CpSettings>,
    etag: RwLock<Option<String>>,
}

impl CpClient {
    pub fn new(link: CpLink, org_slug: Option<String>) -> Self {
        let settings = CpSettings {
            cp_url: link.url.clone(),
            shared_secret: link.shared_secret.clone(),
            org_slug,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building an HTTP client without TLS settings cannot fail");
        Self {
            link,
            http,
            settings: RwLock::new(settings),
            etag: RwLock::new(None),
        }
    }

    pub fn settings(&self) -> CpSettings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings().cp_url.trim_end_matches('/'))
    }

    /// Our credentials, for scrubbing upstream texts.
    fn scrub(&self, text: &str) -> String {
        let settings = self.settings();
        let mut secrets = vec![&self.link.admin_token];
        if let Some(s) = &settings.shared_secret {
            secrets.push(s);
        }
        scrub(text, &secrets)
    }

    async fn error_for(&self, resp: reqwest::Response) -> CpError {
        let status = resp.status().as_u16();
        if status == 401 {
            return CpError::Unauthorized;
        }
        let message = match read_capped(resp, CONFIG_CAP).await {
            Ok(body) => self.scrub(&upstream_error_text(&body)),
            Err(e) => e.to_string(),
        };
        CpError::Status { status, message }
    }

    /// Pulls `/cp/tenants/config` and applies the known keys that changed.
    pub async fn refresh(&self) -> Result<Refresh, CpError> {
        let mut req = self
            .http
            .get(self.url("/cp/tenants/config"))
            .bearer_auth(self.link.admin_token.expose())
            .header("X-Molecule-Org-Id", &self.link.org_id);
        if let Some(tag) = self.etag.read().unwrap_or_else(|p| p.into_inner()).clone() {
            req = req.header("If-None-Match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CpError::Transport(without_url(&e)))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Refresh::Unchanged);
        }
        if !resp.status().is_success() {
            return Err(self.error_for(resp).await);
        }
        let tag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(resp, CONFIG_CAP)
            .await
            .map_err(|e| CpError::Invalid(e.to_string()))?;
        let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&body)
            .map_err(|_| CpError::Invalid("not a flat JSON map of strings".into()))?;
        let changed = self.apply(&map);
        *self.etag.write().unwrap_or_else(|p| p.into_inner()) = tag;
        Ok(if changed.is_empty() {
            Refresh::Unchanged
        } else {
            Refresh::Updated(changed)
        })
    }

    fn apply(&self, map: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        let mut settings = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for (key, value) in map {
            if value.len() > MAX_VALUE {
                tracing::warn!(key, "ignoring config value over 4 KiB");
                continue;
            }
            let applied = match key.as_str() {
                "MOLECULE_CP_URL"
                    if molecule_shared::ssrf::check_syntax(value).is_ok()
                        && settings.cp_url != *value =>
                {
                    settings.cp_url = value.clone();
                    true
                }
                "MOLECULE_CP_SHARED_SECRET" => {
                    let new = Secret::new(value.clone());
                    let differs = new != settings.shared_secret;
                    settings.shared_secret = new;
                    differs
                }
                "MOLECULE_ORG_SLUG" if settings.org_slug.as_deref() != Some(value) => {
                    settings.org_slug = Some(value.clone());
                    true
                }
                k if KNOWN_KEYS.contains(&k) => false,
                _ => {
                    tracing::info!(key, "ignoring unknown config key");
                    false
                }
            };
            if applied {
                changed.push(key.clone());
            }
        }
        changed
    }

    /// Reports a boot step to the control plane. Best effort: a failure is logged, not fatal.
    pub async fn boot_event(&self, stage: &str, status: &str, detail: &str) {
        let body = serde_json::json!({ "stage": stage, "status": status, "detail": detail });
        let sent = self
            .http
            .post(self.url("/cp/tenants/boot-event"))
            .bearer_auth(self.link.admin_token.expose())
            .header("X-Molecule-Org-Id", &self.link.org_id)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => {
                let err = self.error_for(resp).await;
                tracing::warn!(stage, error = %err, "boot event not recorded");
            }
            Err(e) => tracing::warn!(stage, error = %without_url(&e), "boot event not sent"),
        }
    }
}

/// What the CP answers to a provision request.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Provisioned {
    pub instance_id: String,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

const PROVISION_TIMEOUT: Duration = Duration::from_secs(120);
const CONSOLE_CAP: usize = 256 * 1024;

impl CpClient {
    /// A `/cp/workspaces/*` call with the platform bearer and our admin token. After a 401 the
    /// configuration is refreshed at once (the shared secret may have rotated) and the call is
    /// made once more with the new values.
    async fn workspace_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
        cap: usize,
    ) -> Result<Vec<u8>, CpError> {
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .timeout(timeout);
            if let Some(secret) = &self.settings().shared_secret {
                req = req.bearer_auth(secret.expose());
            }
            req = req.header("X-Molecule-Admin-Token", self.link.admin_token.expose());
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| CpError::Transport(without_url(&e)))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::warn!(
                    path,
                    "control plane answered 401; refreshing configuration and retrying once"
                );
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "configuration refresh after 401 failed");
                }
                continue;
            }
            if !resp.status().is_success() {
                return Err(self.error_for(resp).await);
            }
            return read_capped(resp, cap)
                .await
                .map_err(|e| CpError::Invalid(e.to_string()));
        }
        Err(CpError::Unauthorized)
    }

    pub async fn provision(&self, body: &serde_json::Value) -> Result<Provisioned, CpError> {
        let bytes = self
            .workspace_call(
                reqwest::Method::POST,
                "/cp/workspaces/provision",
                Some(body),
                PROVISION_TIMEOUT,
                CONFIG_CAP,
            )
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| CpError::Invalid("provision response lacks instance_id".into()))
    }

    /// Releases a workspace's instance; a failure is an error, never a silent success.
    pub async fn release(&self, workspace_id: &str, instance_id: &str) -> Result<(), CpError> {
        let path = format!("/cp/workspaces/{workspace_id}?instance_id={instance_id}");
        match self
            .workspace_call(reqwest::Method::DELETE, &path, None, TIMEOUT, CONFIG_CAP)
            .await
        {
            Ok(_) => Ok(()),
            // Already gone at the CP: the release has happened.
            Err(CpError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn console(&self, workspace_id: &str) -> Result<String, CpError> {
        let bytes = self
            .workspace_call(
                reqwest::Method::GET,
                &format!("/cp/workspaces/{workspace_id}/console"),
                None,
                TIMEOUT,
                CONSOLE_CAP,
            )
            .await?;
        #[derive(serde::Deserialize)]
        struct Console {
            output: String,
        }
        serde_json::from_slice::<Console>(&bytes)
            .map(|c| c.output)
            .map_err(|_| CpError::Invalid("console response lacks output".into()))
    }

    pub fn org_id(&self) -> &str {
        &self.link.org_id
    }
}

/// Refreshes the configuration every `every` until shutdown.
pub async fn refresh_loop(client: Arc<CpClient>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match client.refresh().await {
            Ok(Refresh::Updated(keys)) => {
                tracing::info!(?keys, "configuration updated from the control plane")
            }
            Ok(Refresh::Unchanged) => {}
            Err(e) => {
                tracing::warn!(error = %e, "configuration refresh failed; keeping current values")
            }
        }
    }
}

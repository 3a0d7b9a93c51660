//! Workspace and global secrets at rest: sealed with the tenant's own key (version 1), bound to
//! their owner and key name so a ciphertext cannot be moved to another workspace or key.
//! Plaintext (version 0) is only possible without a key, which production refuses.

use std::collections::BTreeMap;

use crate::state::TenantState;
use crate::store::StoredSecret;

pub const VERSION_PLAIN: i64 = 0;
pub const VERSION_SEALED: i64 = 1;

pub fn owner(workspace: Option<&str>) -> String {
    match workspace {
        Some(id) => format!("workspace:{id}"),
        None => "global".into(),
    }
}

pub fn seal(state: &TenantState, workspace: Option<&str>, key: &str, value: &str) -> (String, i64) {
    match &state.config.encryption_key {
        Some(k) => (k.seal(&owner(workspace), key, value), VERSION_SEALED),
        None => (value.to_owned(), VERSION_PLAIN),
    }
}

pub fn open(state: &TenantState, workspace: Option<&str>, s: &StoredSecret) -> Option<String> {
    match (s.encryption_version, &state.config.encryption_key) {
        (VERSION_PLAIN, _) => Some(s.value.clone()),
        (VERSION_SEALED, Some(k)) => k
            .open(&owner(workspace), &s.key, &s.value)
            .ok()
            .map(|v| v.expose().to_owned()),
        _ => None,
    }
}

/// Global secrets overlaid with the workspace's own. `Err` lists the keys that did not decrypt.
pub async fn merged(
    state: &TenantState,
    workspace: &str,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut failed = Vec::new();
    let globals = state
        .store
        .secrets(None)
        .await
        .map_err(|_| vec!["global:*".to_owned()])?;
    let own = state
        .store
        .secrets(Some(workspace))
        .await
        .map_err(|_| vec!["workspace:*".to_owned()])?;
    for (scope, ws, rows) in [
        ("global", None, globals),
        ("workspace", Some(workspace), own),
    ] {
        for s in rows {
            match open(state, ws, &s) {
                Some(v) => {
                    out.insert(s.key.clone(), v);
                }
                None => failed.push(format!("{scope}:{}", s.key)),
            }
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(failed)
    }
}

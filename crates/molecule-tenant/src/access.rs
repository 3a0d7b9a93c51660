//! Who may talk to whom in a workspace hierarchy (the original's `CanCommunicate`): oneself,
//! siblings, all roots among themselves, and any ancestor or descendant. Cousins may not.

use crate::store::{TenantStore, Workspace};

const MAX_DEPTH: usize = 32;

async fn ancestors(
    store: &TenantStore,
    w: &Workspace,
) -> Result<Vec<String>, molecule_shared::db::DbError> {
    let mut out = Vec::new();
    let mut cursor = w.parent_id.clone();
    while let Some(id) = cursor {
        if out.len() >= MAX_DEPTH || out.contains(&id) {
            break;
        }
        out.push(id.clone());
        cursor = store.workspace(&id).await?.and_then(|p| p.parent_id);
    }
    Ok(out)
}

pub async fn can_communicate(
    store: &TenantStore,
    caller: &str,
    target: &str,
) -> Result<bool, molecule_shared::db::DbError> {
    if caller == target {
        return Ok(true);
    }
    let (Some(a), Some(b)) = (
        store.workspace(caller).await?,
        store.workspace(target).await?,
    ) else {
        return Ok(false);
    };
    if a.parent_id.is_some() && a.parent_id == b.parent_id {
        return Ok(true);
    }
    if a.parent_id.is_none() && b.parent_id.is_none() {
        return Ok(true);
    }
    if ancestors(store, &b).await?.contains(&a.id) || ancestors(store, &a).await?.contains(&b.id) {
        return Ok(true);
    }
    Ok(false)
}

//! Credentials and who may do what (ARCHITECTURE 3.2).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::TestCp;

fn provision_body(org_id: &str, workspace_id: &str) -> Value {
    json!({
        "org_id": org_id,
        "workspace_id": workspace_id,
        "runtime": "reference",
        "tier": 1,
        "platform_url": "http://127.0.0.1:9",
        "env": {}
    })
}

async fn audit_entries(cp: &TestCp) -> Vec<Value> {
    let (status, body) = cp
        .admin(Method::GET, "/cp/admin/audit?limit=1000", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    body["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn unconfigured_route_groups_are_not_mounted() {
    let cp = TestCp::builder()
        .without_shared_secret()
        .without_admin_token()
        .start()
        .await;
    let (status, body) = cp
        .call(
            Method::POST,
            "/cp/workspaces/provision",
            None,
            Some(provision_body("x", "w")),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no shared secret: routes must not exist"
    );
    assert!(body["error"].is_string());
    let (status, _) = cp
        .call(Method::GET, "/cp/admin/orgs", Some("anything"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    cp.stop().await;
}

#[tokio::test]
async fn mounted_routes_refuse_missing_and_wrong_credentials() {
    let cp = TestCp::start().await;
    let path = "/cp/workspaces/provision";
    let (status, body) = cp
        .call(Method::POST, path, None, Some(provision_body("x", "w")))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "secret live, bearer missing: 401, not 404"
    );
    assert!(body["error"].is_string());
    for bearer in [
        "",
        " ",
        "wrong",
        &cp.shared_secret()[..cp.shared_secret().len() - 1],
    ] {
        let (status, _) = cp
            .call(
                Method::POST,
                path,
                Some(bearer),
                Some(provision_body("x", "w")),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "bearer {bearer:?}");
    }
    // The shared secret alone identifies no org.
    let (status, body) = cp
        .call(
            Method::POST,
            path,
            Some(cp.shared_secret()),
            Some(provision_body("x", "w")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    for p in ["/cp/admin/orgs", "/cp/admin/audit"] {
        assert_eq!(
            cp.call(Method::GET, p, None, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            cp.call(Method::GET, p, Some(cp.shared_secret()), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let denied: Vec<Value> = audit_entries(&cp)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert!(denied.len() >= 8, "every refusal is audited: {denied:?}");
    let all = serde_json::to_string(&denied).unwrap();
    assert!(!all.contains(cp.shared_secret()) && !all.contains(cp.admin_token()));
    assert!(
        all.contains("credential kind mol_pss_"),
        "the kind prefix is recorded: {all}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_tenant_token_cannot_act_for_another_org() {
    let cp = TestCp::start().await;
    let (acme, _) = cp.create_running_org("acme").await;
    let (bravo, _) = cp.create_running_org("bravo").await;
    let acme_token = cp.tenant_token("acme").await;
    let bravo_token = cp.tenant_token("bravo").await;
    let bravo_id = bravo["id"].as_str().unwrap();
    let before = cp.state_counts().await;

    let send = |token: String, body: Value| {
        let cp = &cp;
        async move {
            let resp = cp
                .http
                .post(format!("{}/cp/workspaces/provision", cp.url()))
                .bearer_auth(cp.shared_secret())
                .header("X-Molecule-Admin-Token", token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                resp.status(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = send(acme_token.clone(), provision_body(bravo_id, "ws-steal")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        cp.state_counts().await,
        before,
        "a refused request changes nothing"
    );
    let denied = audit_entries(&cp).await;
    assert!(
        denied.iter().any(|e| e["outcome"] == "denied"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("org_id does not match")),
        "{denied:?}"
    );

    // Config of another org: refused.
    let resp = cp
        .http
        .get(format!("{}/cp/tenants/config", cp.url()))
        .bearer_auth(&acme_token)
        .header("X-Molecule-Org-Id", bravo_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Bravo's own workspace is invisible to acme.
    let (status, created) = send(bravo_token.clone(), provision_body(bravo_id, "ws-bravo")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for (method, path) in [
        (Method::GET, "/cp/workspaces/ws-bravo/status"),
        (Method::GET, "/cp/workspaces/ws-bravo/console"),
        (Method::DELETE, "/cp/workspaces/ws-bravo"),
    ] {
        let resp = cp
            .http
            .request(method.clone(), format!("{}{path}", cp.url()))
            .bearer_auth(cp.shared_secret())
            .header("X-Molecule-Admin-Token", &acme_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }
    // Deleting another org needs that org's own token.
    let (status, _) = cp
        .call(Method::DELETE, "/cp/orgs/bravo", Some(&acme_token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        cp.wait_status("bravo", "running").await["org_id"],
        bravo["id"]
    );
    let _ = acme;
    cp.stop().await;
}

/// Every secret the system holds for `slug`, read from the places they really live.
pub fn tenant_secrets(pid: i32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let mut out = Vec::new();
    for var in environ.split(|b| *b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some((name, value)) = var.split_once('=') {
            if [
                "ADMIN_TOKEN",
                "SECRETS_ENCRYPTION_KEY",
                "MOLECULE_CP_SHARED_SECRET",
            ]
            .contains(&name)
            {
                out.push(value.to_owned());
            }
        }
    }
    assert_eq!(out.len(), 3, "the tenant booted with its three secrets");
    out
}

#[tokio::test]
async fn public_instance_lookup_never_reveals_a_secret() {
    let cp = TestCp::start().await;
    let (org, backend) = cp.create_running_org("acme").await;
    let (status, body) = cp
        .call(Method::GET, "/cp/orgs/acme/instance", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["org_id"], org["id"]);
    assert_eq!(body["status"], "running");
    assert_eq!(body["backend"], backend.as_str());
    let health: Value = reqwest::get(format!("{backend}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));

    let mut secrets = tenant_secrets(cp.tenant_pid("acme").unwrap());
    secrets.push(cp.tenant_token("acme").await);
    secrets.push(cp.admin_token().to_owned());
    secrets.push(cp.shared_secret().to_owned());
    secrets.push(cp.config.encryption_key.to_base64().expose().to_owned());
    let raw = cp
        .http
        .get(format!("{}/cp/orgs/acme/instance", cp.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, list) = cp.admin(Method::GET, "/cp/admin/orgs", None).await;
    let (_, detail) = cp.admin(Method::GET, "/cp/admin/orgs/acme", None).await;
    for secret in &secrets {
        assert!(
            !raw.contains(secret.as_str()),
            "instance lookup leaks a secret"
        );
        assert!(
            !list.to_string().contains(secret.as_str()),
            "org list leaks a secret"
        );
        assert!(
            !detail.to_string().contains(secret.as_str()),
            "org detail leaks a secret"
        );
    }
    assert_eq!(
        cp.call(Method::GET, "/cp/orgs/nosuch/instance", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    cp.stop().await;
}

#[tokio::test]
async fn tenant_config_is_a_flat_map_with_an_etag() {
    let cp = TestCp::start().await;
    let (org, _) = cp.create_running_org("acme").await;
    let org_id = org["id"].as_str().unwrap();
    let token = cp.tenant_token("acme").await;
    let get = |token: Option<&str>, org: Option<&str>, etag: Option<&str>| {
        let mut req = cp.http.get(format!("{}/cp/tenants/config", cp.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(o) = org {
            req = req.header("X-Molecule-Org-Id", o);
        }
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send()
    };
    let resp = get(Some(&token), Some(org_id), None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let map: serde_json::Map<String, Value> = resp.json().await.unwrap();
    assert!(map.values().all(Value::is_string), "flat string map");
    assert_eq!(map["MOLECULE_CP_SHARED_SECRET"], cp.shared_secret());
    assert_eq!(map["MOLECULE_CP_URL"], cp.url().as_str());
    assert_eq!(map["MOLECULE_ORG_ID"], org_id);
    assert_eq!(
        get(Some(&token), Some(org_id), Some(&etag))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get(Some(&token), Some(org_id), Some("\"stale\""))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(Some(&token), None, None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(None, Some(org_id), None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some("mol_tat_forged"), Some(org_id), None)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some(cp.admin_token()), Some(org_id), None)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // The boot events the tenant reported are visible, in order, next to the CP's own.
    let (_, detail) = cp.admin(Method::GET, "/cp/admin/orgs/acme", None).await;
    let stages: Vec<String> = detail["boot_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["stage"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "launch:started",
        "database:ok",
        "config:ok",
        "listening:ok",
        "health:ok",
    ] {
        assert!(
            stages.contains(&expected.to_owned()),
            "{expected} missing from {stages:?}"
        );
    }
    // Reading the admin token is audited, without the token.
    let entries = audit_entries(&cp).await;
    let reads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "read tenant admin token")
        .collect();
    assert!(!reads.is_empty());
    assert!(!serde_json::to_string(&entries).unwrap().contains(&token));
    cp.stop().await;
}

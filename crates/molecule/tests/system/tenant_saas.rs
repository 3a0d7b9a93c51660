//! The tenant as a SaaS tenant: workspaces run through the control plane, configuration pulled
//! and refreshed without restarts, and a hostile control plane that echoes credentials.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{pid_in, wait_until, TestCp, TestTenant};
use molecule_cp::provider::Role;
use molecule_shared::token::{self, TokenKind};

struct Tenant {
    url: String,
    token: String,
    org_id: String,
    http: reqwest::Client,
}

impl Tenant {
    async fn of(cp: &TestCp, slug: &str) -> Tenant {
        let (org, backend) = cp.create_running_org(slug).await;
        Tenant {
            url: backend,
            token: cp.tenant_token(slug).await,
            org_id: org["id"].as_str().unwrap().to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("X-Molecule-Org-Id", &self.org_id);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, w) = self
                .call(Method::GET, &format!("/workspaces/{id}"), None)
                .await;
            if w["status"] == status {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "workspace never became {status}: {w}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| !c.is_empty())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_runs_through_the_control_plane_and_is_released() {
    let cp = TestCp::builder()
        .instance_env("HEARTBEAT_INTERVAL_SECONDS", "1")
        .start()
        .await;
    let t = Tenant::of(&cp, "acme").await;
    let (status, created) = t
        .call(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "Agent One", "tier": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let online = t.wait_status(&id, "online").await;
    assert!(online["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(online["agent_card"]["skills"][0]["id"], "echo");
    // The CP runs its instance, and the heartbeat figures show in the authenticated view.
    let instance = cp
        .cp()
        .store
        .workspace(&id)
        .await
        .unwrap()
        .expect("the CP holds the instance");
    assert_eq!(instance.org_id, t.org_id);
    let agent_pid = pid_in(&cp.local.dir(Role::Workspace, &id).join("instance.pid")).unwrap();
    wait_until("heartbeat figures", Duration::from_secs(15), || async {
        t.call(Method::GET, &format!("/workspaces/{id}"), None)
            .await
            .1["uptime_seconds"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    })
    .await;
    let (_, full) = t
        .call(Method::GET, &format!("/workspaces/{id}"), None)
        .await;
    assert!(
        full.get("current_task").is_some(),
        "authenticated GET is the full record"
    );

    let (status, body) = t
        .call(Method::DELETE, &format!("/workspaces/{id}"), None)
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("removed"))
    );
    assert!(!alive(agent_pid), "deleting the workspace stops its agent");
    assert!(
        cp.cp().store.workspace(&id).await.unwrap().is_none(),
        "and releases the CP instance"
    );
    cp.stop().await;
}

/// Provision requests the CP refused since `since` (audit rows).
async fn provision_denials(cp: &TestCp) -> usize {
    let (_, body) = cp
        .admin(Method::GET, "/cp/admin/audit?limit=1000", None)
        .await;
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "denied" && e["action"] == "POST /cp/workspaces/provision")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_reaches_the_tenant_within_one_refresh_period() {
    let mut cp = TestCp::builder()
        .instance_env("MOLECULE_CONFIG_REFRESH_SECS", "1")
        .start()
        .await;
    let t = Tenant::of(&cp, "acme").await;
    let old = cp.config.shared_secret.clone();
    // Rotation with overlap: new secret, old one still accepted while tenants refresh.
    cp.config.shared_secret = Some(token::generate(TokenKind::ProvisionShared));
    cp.config.shared_secret_previous = old;
    cp.restart().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The overlap ends; the tenant must already use the new secret.
    cp.config.shared_secret_previous = None;
    cp.restart().await;
    let (status, created) = t
        .call(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "After rotation"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    t.wait_status(created["id"].as_str().unwrap(), "online")
        .await;
    assert_eq!(
        provision_denials(&cp).await,
        0,
        "no call was made with the retired secret"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_makes_the_tenant_refresh_at_once() {
    // Refresh only at boot, so the only way to learn the new secret is the 401 path.
    let mut cp = TestCp::builder()
        .instance_env("MOLECULE_CONFIG_REFRESH_SECS", "3600")
        .start()
        .await;
    let t = Tenant::of(&cp, "acme").await;
    cp.config.shared_secret = Some(token::generate(TokenKind::ProvisionShared));
    cp.restart().await;
    let (status, created) = t
        .call(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "Needs refresh"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    t.wait_status(created["id"].as_str().unwrap(), "online")
        .await;
    assert_eq!(
        provision_denials(&cp).await,
        1,
        "one refused call, then a refresh and a successful retry"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_that_echoes_credentials_leaves_no_trace_of_them() {
    const SHARED: &str = "mol_pss_echo-test-shared-secret-4f1c9a";
    const ADMIN: &str = "mol_tat_echo-test-admin-token-77b2e0";
    let echo = |headers: axum::http::HeaderMap| {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let admin = headers
            .get("x-molecule-admin-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        format!("rejected credentials: {auth} / {admin}")
    };
    let fake = axum::Router::new()
        .route(
            "/cp/tenants/config",
            axum::routing::get(move |h: axum::http::HeaderMap| async move {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({ "error": echo(h) })),
                )
            }),
        )
        .route(
            "/cp/tenants/boot-event",
            axum::routing::post(move |h: axum::http::HeaderMap| async move {
                (StatusCode::BAD_REQUEST, echo(h))
            }),
        )
        .route(
            "/cp/workspaces/provision",
            axum::routing::post(move |h: axum::http::HeaderMap| async move {
                (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({ "error": echo(h) })),
                )
            }),
        )
        .route(
            "/cp/workspaces/{id}/console",
            axum::routing::get(move |h: axum::http::HeaderMap| async move {
                (StatusCode::BAD_GATEWAY, echo(h))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

    let org = "4d5e6f70-8192-4a3b-9c4d-5e6f708192a3";
    let t = TestTenant::start(&[
        ("ADMIN_TOKEN", ADMIN),
        ("MOLECULE_ORG_ID", org),
        ("MOLECULE_CP_URL", &fake_url),
        ("MOLECULE_CP_SHARED_SECRET", SHARED),
        ("MOLECULE_CONFIG_REFRESH_SECS", "1"),
    ])
    .await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let mut req = t
            .http
            .request(method, format!("{}{path}", t.url))
            .bearer_auth(ADMIN)
            .header("X-Molecule-Org-Id", org);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let mut responses = String::new();
    let resp = call(
        Method::POST,
        "/workspaces".into(),
        Some(json!({"name": "Victim"})),
    )
    .await
    .unwrap();
    let text = resp.text().await.unwrap();
    let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    responses.push_str(&text);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = call(Method::GET, format!("/workspaces/{id}"), None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        responses.push_str(&text);
        if text.contains(r#""status":"failed""#) {
            assert!(text.contains("provisioning failed"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "provisioning never failed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resp = call(Method::GET, format!("/workspaces/{id}/console"), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    responses.push_str(&resp.text().await.unwrap());
    let (_, events) = t.admin(Method::GET, "/events", None).await;
    responses.push_str(&events.to_string());
    tokio::time::sleep(Duration::from_millis(1500)).await; // a refresh cycle or two, logged
    let log = t.log();
    assert!(
        log.contains("refresh") || log.contains("configuration"),
        "the failures were logged: {log}"
    );
    for secret in [
        SHARED,
        ADMIN,
        "echo-test-shared-secret",
        "echo-test-admin-token",
    ] {
        assert!(
            !log.contains(secret),
            "the tenant log carries a credential: {log}"
        );
        assert!(
            !responses.contains(secret),
            "an API response carries a credential: {responses}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_restart_and_a_tenant_restart_keep_instances_in_step() {
    let mut cp = TestCp::builder()
        .instance_env("HEARTBEAT_INTERVAL_SECONDS", "1")
        .start()
        .await;
    let t = Tenant::of(&cp, "acme").await;
    let (_, created) = t
        .call(Method::POST, "/workspaces", Some(json!({"name": "Cycler"})))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    t.wait_status(&id, "online").await;
    let pidfile = cp.local.dir(Role::Workspace, &id).join("instance.pid");
    let first = pid_in(&pidfile).unwrap();

    let (status, _) = t
        .call(Method::POST, &format!("/workspaces/{id}/pause"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t.wait_status(&id, "paused").await["status"], "paused");
    assert!(!alive(first), "pausing stops the agent");
    assert!(
        cp.cp().store.workspace(&id).await.unwrap().is_none(),
        "and releases its instance"
    );
    assert_eq!(
        t.call(Method::POST, &format!("/workspaces/{id}/restart"), None)
            .await
            .0,
        StatusCode::CONFLICT
    );

    assert_eq!(
        t.call(Method::POST, &format!("/workspaces/{id}/resume"), None)
            .await
            .0,
        StatusCode::OK
    );
    t.wait_status(&id, "online").await;
    let second = pid_in(&pidfile).unwrap();
    assert_ne!(second, first);

    assert_eq!(
        t.call(Method::POST, &format!("/workspaces/{id}/restart"), None)
            .await
            .0,
        StatusCode::OK
    );
    wait_until("a third agent", Duration::from_secs(20), || async {
        pid_in(&pidfile).is_some_and(|p| p != second)
    })
    .await;
    t.wait_status(&id, "online").await;
    let third = pid_in(&pidfile).unwrap();
    assert!(!alive(second), "restart replaced the agent");
    assert_eq!(
        cp.cp().store.all_workspaces().await.unwrap().len(),
        1,
        "one instance, not one per restart"
    );

    // The tenant dies while the CP is down, so it stays down for a while: the agent's heartbeats
    // fail. When the CP returns and restarts the tenant, the agent registers again.
    let log_path = cp.local.log_path(Role::Workspace, &id);
    let registrations = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("registered with the platform")
            .count()
    };
    let before = registrations();
    let tenant_pid = cp.tenant_pid("acme").unwrap();
    cp.stop_cp().await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(tenant_pid, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cp.restart().await;
    wait_until("the tenant back", Duration::from_secs(20), || async {
        cp.tenant_pid("acme").is_some_and(|p| p != tenant_pid)
    })
    .await;
    cp.wait_status("acme", "running").await;
    wait_until(
        "the agent registered again",
        Duration::from_secs(20),
        || async { registrations() > before },
    )
    .await;
    assert_eq!(
        pid_in(&pidfile),
        Some(third),
        "the same agent process re-registered"
    );
    t.wait_status(&id, "online").await;
    cp.stop().await;
}

//! The tenant lifecycle with real processes: repair, adoption, deletion, resumable purges,
//! workspace instances.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{pid_in, processes_with_arg, wait_until, TestCp};
use molecule_cp::provider::Role;

fn kill9(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

fn alive(pid: i32) -> bool {
    // A reaped or zombie process has no cmdline.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| !c.is_empty())
        .unwrap_or(false)
}

async fn boot_stages(cp: &TestCp, slug: &str) -> Vec<String> {
    let (_, detail) = cp
        .admin(Method::GET, &format!("/cp/admin/orgs/{slug}"), None)
        .await;
    detail["boot_events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["stage"].as_str().unwrap(),
                        e["status"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_killed_tenant_is_restarted_by_the_reconciler() {
    let cp = TestCp::start().await;
    let (_, backend) = cp.create_running_org("acme").await;
    let old = cp.tenant_pid("acme").unwrap();
    kill9(old);
    wait_until("a new tenant process", Duration::from_secs(20), || async {
        cp.tenant_pid("acme").is_some_and(|p| p != old)
    })
    .await;
    let lookup = cp.wait_status("acme", "running").await;
    let backend_now = lookup["backend"].as_str().unwrap();
    assert_eq!(
        backend_now, backend,
        "the restarted tenant keeps its address"
    );
    let health = reqwest::get(format!("{backend_now}/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    wait_until("restart recorded", Duration::from_secs(10), || async {
        boot_stages(&cp, "acme")
            .await
            .contains(&"restart:ok".to_owned())
    })
    .await;
    let (_, detail) = cp.admin(Method::GET, "/cp/admin/orgs/acme", None).await;
    // At least the one restart; a loaded machine can fail health checks and add another.
    assert!(
        detail["restarts"].as_i64().unwrap() >= 1,
        "{}",
        detail["boot_events"]
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_restarted_control_plane_adopts_its_tenants() {
    let mut cp = TestCp::start().await;
    cp.create_running_org("acme").await;
    cp.create_running_org("bravo").await;
    let pids = [
        cp.tenant_pid("acme").unwrap(),
        cp.tenant_pid("bravo").unwrap(),
    ];
    cp.restart().await;
    // Several reconcile passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        [
            cp.tenant_pid("acme").unwrap(),
            cp.tenant_pid("bravo").unwrap()
        ],
        pids,
        "adopted, not replaced"
    );
    for slug in ["acme", "bravo"] {
        let pidfile = cp.local.dir(Role::Tenant, slug).join("instance.pid");
        assert_eq!(
            processes_with_arg(&pidfile.display().to_string()),
            1,
            "exactly one process for {slug}"
        );
        cp.wait_status(slug, "running").await;
    }
    // A tenant that died while the control plane was down is brought back after it returns.
    cp.stop_cp().await;
    kill9(pids[0]);
    cp.restart().await;
    wait_until("acme back", Duration::from_secs(20), || async {
        cp.tenant_pid("acme").is_some_and(|p| p != pids[0])
    })
    .await;
    let pidfile = cp.local.dir(Role::Tenant, "acme").join("instance.pid");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(processes_with_arg(&pidfile.display().to_string()), 1);
    assert_eq!(cp.tenant_pid("bravo"), Some(pids[1]));
    cp.stop().await;
}

#[tokio::test]
async fn a_failed_provision_is_visible_retryable_and_deletable() {
    let (cp, faulty) = TestCp::builder()
        .start_faulty(|f| {
            f.fail_launches("broken", usize::MAX);
            f.fail_launches("flaky", 1);
        })
        .await;
    cp.create_org("broken").await;
    cp.create_org("flaky").await;
    cp.wait_status("broken", "failed").await;
    cp.wait_status("flaky", "failed").await;
    let (_, detail) = cp.admin(Method::GET, "/cp/admin/orgs/broken", None).await;
    assert_eq!(detail["instance_status"], "failed");
    assert!(
        detail["last_error"]
            .as_str()
            .unwrap()
            .contains("injected launch failure"),
        "{detail}"
    );
    assert!(boot_stages(&cp, "broken")
        .await
        .contains(&"launch:failed".to_owned()));

    // Retry: the flaky one comes up.
    let (status, _) = cp
        .admin(Method::POST, "/cp/admin/orgs/flaky/retry", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    cp.wait_status("flaky", "running").await;

    // Deleting an org that never provisioned works, and repeating it is harmless.
    for _ in 0..2 {
        let (status, body) = cp
            .admin(
                Method::DELETE,
                "/cp/admin/tenants/broken",
                Some(json!({"confirm": "broken"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "done");
    }
    assert_eq!(
        cp.call(Method::GET, "/cp/orgs/broken/instance", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // The slug can be signed up again.
    faulty.fail_launches("broken", 0);
    cp.create_org("broken").await;
    cp.wait_status("broken", "running").await;
    cp.stop().await;
}

#[tokio::test]
async fn deleting_an_org_whose_process_is_gone_succeeds() {
    let cp = TestCp::start().await;
    cp.create_running_org("acme").await;
    let token = cp.tenant_token("acme").await;
    let pid = cp.tenant_pid("acme").unwrap();
    let dir = cp.local.dir(Role::Tenant, "acme");
    kill9(pid);
    // The owner deletes with its own token.
    let (status, body) = cp
        .call(Method::DELETE, "/cp/orgs/acme", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(cp.tenant_pid("acme").is_none());
    assert!(!dir.exists(), "the tenant's data is gone");
    assert_eq!(
        cp.call(Method::GET, "/cp/orgs/acme/instance", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Its token no longer opens anything; a repeat by the operator is harmless.
    let (status, _) = cp
        .call(Method::DELETE, "/cp/orgs/acme", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = cp
        .admin(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The reconciler does not resurrect it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(cp.tenant_pid("acme").is_none());
    assert!(cp
        .state_counts()
        .await
        .iter()
        .all(|(t, n)| *t == "purges" || *n == 0));
    cp.stop().await;
}

async fn provision_workspace(
    cp: &TestCp,
    org_id: &str,
    token: &str,
    id: &str,
) -> (StatusCode, Value) {
    let resp = cp
        .http
        .post(format!("{}/cp/workspaces/provision", cp.url()))
        .bearer_auth(cp.shared_secret())
        .header("X-Molecule-Admin-Token", token)
        .json(&json!({
            "org_id": org_id, "workspace_id": id, "runtime": "reference", "tier": 2,
            "platform_url": "http://127.0.0.1:9", "env": {"OPENAI_API_KEY": "sk-test-not-real", "MODEL": "m1"}
        }))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

async fn platform(cp: &TestCp, method: Method, path: &str, token: &str) -> (StatusCode, Value) {
    let resp = cp
        .http
        .request(method, format!("{}{path}", cp.url()))
        .bearer_auth(cp.shared_secret())
        .header("X-Molecule-Admin-Token", token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn workspace_instances_run_restart_and_release() {
    let cp = TestCp::start().await;
    let (org, _) = cp.create_running_org("acme").await;
    let org_id = org["id"].as_str().unwrap();
    let token = cp.tenant_token("acme").await;
    let (status, body) = provision_workspace(&cp, org_id, &token, "ws-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "running");
    assert_eq!(body["private_ip"], "127.0.0.1");
    let instance_id = body["instance_id"].as_str().unwrap().to_owned();
    // A retried provision returns the same instance.
    let (status, again) = provision_workspace(&cp, org_id, &token, "ws-1").await;
    assert_eq!(
        (status, again["instance_id"].as_str()),
        (StatusCode::CREATED, Some(instance_id.as_str()))
    );

    let pidfile = cp.local.dir(Role::Workspace, "ws-1").join("instance.pid");
    let pid = pid_in(&pidfile).expect("agent running");
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .replace('\0', "\n");
    assert!(
        environ.contains("OPENAI_API_KEY=sk-test-not-real")
            && environ.contains("WORKSPACE_ID=ws-1")
    );
    assert!(
        !environ.contains("ADMIN_TOKEN") && !environ.contains(cp.shared_secret()),
        "agents get only their own env"
    );

    let (status, st) = platform(
        &cp,
        Method::GET,
        &format!("/cp/workspaces/ws-1/status?instance_id={instance_id}"),
        &token,
    )
    .await;
    assert_eq!(
        (status, st["state"].as_str()),
        (StatusCode::OK, Some("running"))
    );
    let (status, _) = platform(
        &cp,
        Method::GET,
        "/cp/workspaces/ws-1/status?instance_id=i-wrong",
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, console) = platform(&cp, Method::GET, "/cp/workspaces/ws-1/console", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        console["output"]
            .as_str()
            .unwrap()
            .contains("agent listening"),
        "{console}"
    );

    kill9(pid);
    wait_until("agent restarted", Duration::from_secs(20), || async {
        pid_in(&pidfile).is_some_and(|p| p != pid)
    })
    .await;

    let new_pid = pid_in(&pidfile).unwrap();
    let (status, body) = platform(
        &cp,
        Method::DELETE,
        &format!("/cp/workspaces/ws-1?instance_id={instance_id}"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(new_pid), "release stops the agent");
    let (status, _) = platform(&cp, Method::GET, "/cp/workspaces/ws-1/status", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = platform(&cp, Method::DELETE, "/cp/workspaces/ws-1", &token).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a second release finds nothing"
    );
    cp.stop().await;
}

#[tokio::test]
async fn an_interrupted_purge_resumes_where_it_stopped() {
    let (cp, _) = TestCp::builder()
        .start_faulty(|f| f.fail_tenant_terminates(1))
        .await;
    let (org, _) = cp.create_running_org("acme").await;
    let token = cp.tenant_token("acme").await;
    let (status, _) = provision_workspace(&cp, org["id"].as_str().unwrap(), &token, "ws-9").await;
    assert_eq!(status, StatusCode::CREATED);
    let agent = pid_in(&cp.local.dir(Role::Workspace, "ws-9").join("instance.pid")).unwrap();

    let (status, body) = cp
        .admin(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body["purge_id"].is_string());
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("retry the request to resume"),
        "{body}"
    );
    // The steps before the failure are done and stay done.
    assert!(!alive(agent), "the workspaces step ran");
    let tenant = cp
        .tenant_pid("acme")
        .expect("the tenant step failed, so the tenant still runs");
    let (_, lookup) = cp
        .call(Method::GET, "/cp/orgs/acme/instance", None, None)
        .await;
    assert_eq!(lookup["status"], "deleting");

    let (status, body) = cp
        .admin(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!alive(tenant));
    assert_eq!(
        cp.call(Method::GET, "/cp/orgs/acme/instance", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let purge = cp
        .cp()
        .store
        .latest_purge_by_slug("acme")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((purge.attempts, purge.last_step.as_str()), (2, "rows"));
    cp.stop().await;
}

#[tokio::test]
async fn the_reconciler_finishes_a_failed_purge_on_its_own() {
    let (cp, _) = TestCp::builder()
        .start_faulty(|f| f.fail_tenant_terminates(1))
        .await;
    cp.create_running_org("acme").await;
    let (status, _) = cp
        .admin(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Some(json!({"confirm": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    wait_until(
        "purge finished by the reconciler",
        Duration::from_secs(20),
        || async {
            cp.call(Method::GET, "/cp/orgs/acme/instance", None, None)
                .await
                .0
                == StatusCode::NOT_FOUND
        },
    )
    .await;
    assert!(cp.tenant_pid("acme").is_none());
    cp.stop().await;
}

//! Black-box suite: a standalone tenant (the real binary) driven over HTTP, route by route.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::TestTenant;

#[tokio::test]
async fn workspaces_crud_views_and_hierarchy() {
    let t = TestTenant::start(&[]).await;
    let (s, text, _) = t.call(Method::GET, "/health", None, None).await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));

    let (status, created) = t.admin(Method::POST, "/workspaces", Some(json!({"name": "Lead", "role": "coordinator", "tier": 2, "canvas": {"x": 100, "y": 50.5}}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["status"], "provisioning");
    let lead = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["awareness_namespace"], format!("workspace:{lead}"));
    let child = t
        .create_workspace(json!({"name": "Helper", "parent_id": lead}))
        .await;

    // The list carries full records, in the original's encoding.
    let (_, raw, list) = t
        .call(
            Method::GET,
            "/workspaces",
            Some(&t.admin_token.clone()),
            None,
        )
        .await;
    assert!(
        raw.contains(r#""x":100"#) && raw.contains(r#""y":50.5"#),
        "integral floats print as integers: {raw}"
    );
    let first = &list[0];
    for key in [
        "current_task",
        "last_sample_error",
        "workspace_dir",
        "monthly_spend",
        "budget_limit",
        "max_concurrent_tasks",
        "runtime",
    ] {
        assert!(first.get(key).is_some(), "list record lacks {key}: {first}");
    }
    assert_eq!(first["runtime"], "langgraph");
    assert_eq!(first["tier"], 2);
    assert_eq!(list[1]["tier"], 3, "tier defaults to 3");
    assert_eq!(list[1]["parent_id"], lead.as_str());

    // Public GET: reduced field set; authenticated GET: everything.
    let (status, _, public) = t
        .call(Method::GET, &format!("/workspaces/{lead}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for hidden in [
        "current_task",
        "last_sample_error",
        "workspace_dir",
        "budget_limit",
        "monthly_spend",
    ] {
        assert!(public.get(hidden).is_none(), "public view exposes {hidden}");
    }
    assert!(public.get("last_outbound_at").is_some() && public.get("active_tasks").is_some());
    let (_, full) = t
        .admin(Method::GET, &format!("/workspaces/{lead}"), None)
        .await;
    assert!(
        full.get("current_task").is_some()
            && full.get("budget_limit").is_some()
            && full.get("last_outbound_at").is_some()
    );

    // Bad ids and unknown ids.
    assert_eq!(
        t.call(Method::GET, "/workspaces/not-a-uuid", None, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        t.call(
            Method::GET,
            "/workspaces/00000000-0000-4000-8000-000000000000",
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    // PATCH: fields, specific validation errors, cycles refused.
    let (status, body) = t
        .admin(
            Method::PATCH,
            &format!("/workspaces/{lead}"),
            Some(json!({"name": "Lead 2", "x": 7, "y": 8, "collapsed": true})),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "updated"}))
    );
    let (status, body) = t
        .admin(
            Method::PATCH,
            &format!("/workspaces/{lead}"),
            Some(json!({"name": "a\nb"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("name must not contain newline characters")
        )
    );
    let (status, _) = t
        .admin(
            Method::PATCH,
            &format!("/workspaces/{lead}"),
            Some(json!({"parent_id": child})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a cycle is refused");
    let (status, _) = t
        .admin(
            Method::PATCH,
            &format!("/workspaces/{lead}"),
            Some(json!([1])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, after) = t
        .admin(Method::GET, &format!("/workspaces/{lead}"), None)
        .await;
    assert_eq!(
        (
            after["name"].as_str(),
            after["x"].as_i64(),
            after["collapsed"].as_bool()
        ),
        (Some("Lead 2"), Some(7), Some(true))
    );

    // Create validation.
    for bad in [
        json!({"name": ""}),
        json!({"name": "a{b"}),
        json!({"name": "x", "workspace_dir": "/etc/x"}),
        json!({"name": "x", "parent_id": "00000000-0000-4000-8000-000000000000"}),
    ] {
        let (status, body) = t
            .admin(Method::POST, "/workspaces", Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
    let (status, body) = t
        .admin(
            Method::POST,
            "/workspaces",
            Some(json!({"name": "x", "budget_limit": 1.5})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid workspace payload"))
    );

    // Delete: a parent needs confirm; then the subtree is removed and stays readable as removed.
    let (status, body) = t
        .admin(Method::DELETE, &format!("/workspaces/{lead}"), None)
        .await;
    assert_eq!(
        (
            status,
            body["status"].as_str(),
            body["children_count"].as_i64()
        ),
        (StatusCode::CONFLICT, Some("confirmation_required"), Some(1))
    );
    let (status, body) = t
        .admin(
            Method::DELETE,
            &format!("/workspaces/{lead}?confirm=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"cascade_deleted": 1, "status": "removed"})
        )
    );
    let (_, _, gone) = t
        .call(Method::GET, &format!("/workspaces/{child}"), None, None)
        .await;
    assert_eq!(gone["status"], "removed");
    let (_, list) = t.admin(Method::GET, "/workspaces", None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn config_secrets_and_model() {
    let t = TestTenant::start(&[]).await;
    let id = t
        .create_workspace(
            json!({"name": "Cfg", "secrets": {"OPENAI_API_KEY": "sk-create-time-secret-42"}}),
        )
        .await;
    let path = |p: &str| format!("/workspaces/{id}{p}");
    let (_, cfg) = t.admin(Method::GET, &path("/config"), None).await;
    assert_eq!(cfg, json!({"data": {}}));
    t.admin(
        Method::PATCH,
        &path("/config"),
        Some(json!({"a": 1, "nested": {"x": 1}})),
    )
    .await;
    let (status, _) = t
        .admin(
            Method::PATCH,
            &path("/config"),
            Some(json!({"b": 2, "nested": {"y": 2}, "a": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, cfg) = t.admin(Method::GET, &path("/config"), None).await;
    assert_eq!(
        cfg,
        json!({"data": {"a": null, "b": 2, "nested": {"y": 2}}}),
        "shallow merge"
    );
    let (status, _) = t
        .admin(Method::PATCH, &path("/config"), Some(json!([1, 2])))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only objects");
    let huge = json!({ "blob": "x".repeat(300 * 1024) });
    let (status, body) = t.admin(Method::PATCH, &path("/config"), Some(huge)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("body too large or unreadable")
        )
    );

    // Secrets: listed without values, global ones merged, values only for the workspace itself.
    let (status, body) = t
        .admin(
            Method::PUT,
            &path("/secrets"),
            Some(json!({"key": "GITHUB_TOKEN", "value": "ghp-workspace-secret-77"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"key": "GITHUB_TOKEN", "status": "saved"})
        )
    );
    t.admin(
        Method::PUT,
        "/settings/secrets",
        Some(json!({"key": "SHARED_KEY", "value": "global-secret-value-99"})),
    )
    .await;
    t.admin(
        Method::PUT,
        "/settings/secrets",
        Some(json!({"key": "GITHUB_TOKEN", "value": "global-overridden"})),
    )
    .await;
    let (_, raw, list) = t
        .call(
            Method::GET,
            &path("/secrets"),
            Some(&t.admin_token.clone()),
            None,
        )
        .await;
    assert!(!raw.contains("ghp-workspace-secret-77") && !raw.contains("global-secret-value-99"));
    let scopes: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().into(),
                s["scope"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("GITHUB_TOKEN".into(), "workspace".into()),
            ("OPENAI_API_KEY".into(), "workspace".into()),
            ("SHARED_KEY".into(), "global".into())
        ]
    );
    let (status, _) = t.admin(Method::GET, &path("/secrets/values"), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the admin token does not read values"
    );
    let token = t.workspace_token(&id).await;
    let (status, _, values) = t
        .call(Method::GET, &path("/secrets/values"), Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        values,
        json!({"GITHUB_TOKEN": "ghp-workspace-secret-77", "OPENAI_API_KEY": "sk-create-time-secret-42", "SHARED_KEY": "global-secret-value-99"})
    );
    let (status, _) = t.admin(Method::DELETE, &path("/secrets/NOPE"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Encrypted at rest: no plaintext value in the database file.
    let db = std::fs::read(t.dir.path().join("tenant.db")).unwrap();
    let wal = std::fs::read(t.dir.path().join("tenant.db-wal")).unwrap_or_default();
    for v in [
        "ghp-workspace-secret-77",
        "global-secret-value-99",
        "sk-create-time-secret-42",
    ] {
        assert!(
            !contains(&db, v.as_bytes()) && !contains(&wal, v.as_bytes()),
            "{v} stored in plaintext"
        );
    }
    // Model.
    let (_, m) = t.admin(Method::GET, &path("/model"), None).await;
    assert_eq!(m, json!({"model": "", "source": "default"}));
    t.admin(
        Method::PUT,
        &path("/model"),
        Some(json!({"model": "anthropic:claude"})),
    )
    .await;
    let (_, m) = t.admin(Method::GET, &path("/model"), None).await;
    assert_eq!(
        m,
        json!({"model": "anthropic:claude", "source": "workspace_secrets"})
    );
    assert!(!t.log().contains("ghp-workspace-secret-77"));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn tokens_registry_and_discovery() {
    let t = TestTenant::start(&[]).await;
    let root = t.create_workspace(json!({"name": "Root"})).await;
    let a = t
        .create_workspace(json!({"name": "A", "parent_id": root}))
        .await;
    let b = t
        .create_workspace(json!({"name": "B", "parent_id": root}))
        .await;
    let other_root = t.create_workspace(json!({"name": "Other"})).await;
    let cousin = t
        .create_workspace(json!({"name": "Cousin", "parent_id": other_root}))
        .await;
    let ta = t.workspace_token(&a).await;
    let tb = t.workspace_token(&b).await;

    // Registration needs the workspace's own token, and a known id.
    let reg = |id: &str| json!({"id": id, "url": "http://127.0.0.1:9999", "agent_card": {"name": "agent", "skills": []}});
    assert_eq!(
        t.call(Method::POST, "/registry/register", None, Some(reg(&a)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.call(Method::POST, "/registry/register", Some(&tb), Some(reg(&a)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.call(
            Method::POST,
            "/registry/register",
            Some(&t.admin_token.clone()),
            Some(reg(&a))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let unknown = "11111111-1111-4111-8111-111111111111";
    assert_eq!(
        t.call(
            Method::POST,
            "/registry/register",
            Some(&ta),
            Some(reg(unknown))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = t
        .call(Method::POST, "/registry/register", Some(&ta), Some(reg(&a)))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "registered"}))
    );
    let (status, _, body) = t
        .call(
            Method::POST,
            "/registry/register",
            Some(&ta),
            Some(json!({"id": a, "url": "http://169.254.169.254/", "agent_card": null})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    t.call(Method::POST, "/registry/register", Some(&tb), Some(reg(&b)))
        .await;

    // Heartbeats drive degraded ⇄ online and show their figures.
    let hb = |rate: f64| json!({"workspace_id": a, "error_rate": rate, "sample_error": "boom", "active_tasks": 2, "uptime_seconds": 42, "current_task": "thinking"});
    t.call(
        Method::POST,
        "/registry/heartbeat",
        Some(&ta),
        Some(hb(0.8)),
    )
    .await;
    let (_, raw, _) = t
        .call(
            Method::GET,
            "/workspaces",
            Some(&t.admin_token.clone()),
            None,
        )
        .await;
    assert!(raw.contains(r#""last_error_rate":0.8"#), "{raw}");
    let (_, w) = t
        .admin(Method::GET, &format!("/workspaces/{a}"), None)
        .await;
    assert_eq!(
        (
            w["status"].as_str(),
            w["uptime_seconds"].as_i64(),
            w["active_tasks"].as_i64(),
            w["current_task"].as_str()
        ),
        (Some("degraded"), Some(42), Some(2), Some("thinking"))
    );
    t.call(
        Method::POST,
        "/registry/heartbeat",
        Some(&ta),
        Some(hb(0.0)),
    )
    .await;
    let (_, w) = t
        .admin(Method::GET, &format!("/workspaces/{a}"), None)
        .await;
    assert_eq!(w["status"], "online");
    assert_eq!(
        t.call(Method::POST, "/registry/heartbeat", None, Some(hb(0.0)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, _) = t
        .call(
            Method::POST,
            "/registry/update-card",
            Some(&ta),
            Some(json!({"workspace_id": a, "agent_card": {"name": "v2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Discovery follows the hierarchy.
    let discover = |target: &str, me: &str, token: &str| {
        t.http
            .get(format!("{}/registry/discover/{target}", t.url))
            .bearer_auth(token)
            .header("X-Workspace-ID", me)
            .send()
    };
    let resp = discover(&b, &a, &ta).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["url"],
        "http://127.0.0.1:9999"
    );
    assert_eq!(
        discover(&cousin, &a, &ta).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        discover(&b, &a, &tb).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "b's token cannot speak for a"
    );
    let (status, _, peers) = t
        .call(
            Method::GET,
            &format!("/registry/{a}/peers"),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["B", "Root"], "siblings then parent");
    let (_, _, filtered) = t
        .call(
            Method::GET,
            &format!("/registry/{a}/peers?q=ro"),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(
        filtered.as_array().unwrap().len(),
        1,
        "q filters without failing on null roles"
    );
    for (caller, target, allowed) in [
        (&a, &b, true),
        (&root, &a, true),
        (&a, &cousin, false),
        (&root, &other_root, true),
    ] {
        let (_, text, _) = t
            .call(
                Method::POST,
                "/registry/check-access",
                None,
                Some(json!({"caller_id": caller, "target_id": target})),
            )
            .await;
        assert_eq!(text, format!(r#"{{"allowed":{allowed}}}"#));
    }

    // Tokens: listed by prefix, revocable; a workspace token is never an admin credential.
    let (_, list) = t
        .admin(Method::GET, &format!("/workspaces/{a}/tokens"), None)
        .await;
    assert_eq!(list["count"], 1);
    assert!(ta.starts_with(list["tokens"][0]["prefix"].as_str().unwrap()));
    assert_eq!(
        t.call(Method::GET, "/workspaces", Some(&ta), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let token_id = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = t
        .admin(
            Method::DELETE,
            &format!("/workspaces/{a}/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.call(
            Method::POST,
            "/registry/heartbeat",
            Some(&ta),
            Some(hb(0.0))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // Org tokens are admin credentials until revoked.
    let (status, minted) = t
        .admin(Method::POST, "/org/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let org = minted["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.call(Method::GET, "/workspaces", Some(&org), None).await.0,
        StatusCode::OK
    );
    let (_, listed) = t.admin(Method::GET, "/org/tokens", None).await;
    assert_eq!(
        (
            listed["count"].as_i64(),
            listed["tokens"][0]["name"].as_str()
        ),
        (Some(1), Some("ci"))
    );
    assert!(!listed.to_string().contains(&org));
    t.admin(
        Method::DELETE,
        &format!("/org/tokens/{}", minted["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        t.call(Method::GET, "/workspaces", Some(&org), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, long) = t
        .admin(
            Method::POST,
            "/org/tokens",
            Some(json!({"name": "n".repeat(101)})),
        )
        .await;
    assert_eq!(
        (status, long["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("name too long (max 100 chars)")
        )
    );
}

#[tokio::test]
async fn events_activity_and_the_event_stream() {
    use futures_util::StreamExt;
    let t = TestTenant::start(&[]).await;
    // The stream needs a credential.
    let ws_url = t.url.replace("http://", "ws://") + "/ws";
    assert!(
        tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .is_err(),
        "anonymous stream refused"
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", t.admin_token).parse().unwrap(),
    );
    let (mut stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    let id = t.create_workspace(json!({"name": "Ev"})).await;
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let envelope: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
    assert_eq!(
        (
            envelope["event"].as_str(),
            envelope["workspace_id"].as_str()
        ),
        (Some("WORKSPACE_PROVISIONING"), Some(id.as_str()))
    );
    assert_eq!(
        msg.to_text().unwrap().find("\"event\""),
        Some(1),
        "envelope fields in order"
    );

    let (_, events) = t.admin(Method::GET, "/events", None).await;
    assert_eq!(events[0]["event_type"], "WORKSPACE_PROVISIONING");
    let (_, mine) = t.admin(Method::GET, &format!("/events/{id}"), None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);

    let token = t.workspace_token(&id).await;
    let path = format!("/workspaces/{id}/activity");
    let (status, _, body) = t
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"activity_type": "bogus"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid activity_type, must be one of: a2a_send"));
    let (status, _, _) = t.call(Method::POST, &path, Some(&token), Some(json!({"activity_type": "a2a_send", "source_id": "00000000-0000-4000-8000-000000000000"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for i in 0..3 {
        let (status, _, body) = t
            .call(Method::POST, &path, Some(&token), Some(json!({"activity_type": "agent_log", "summary": format!("s{i}"), "request_body": {"task": i}})))
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"status": "logged"}))
        );
    }
    let (_, _, list) = t
        .call(Method::GET, &format!("{path}?limit=2"), Some(&token), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["summary"], "s2", "newest first");
    assert_eq!(list[0]["request_body"], json!({"task": 2}));
    let (status, _, _) = t
        .call(
            Method::GET,
            &format!("{path}?source=nobody"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bundles_round_trip_a_subtree() {
    let t = TestTenant::start(&[]).await;
    let root = t
        .create_workspace(json!({"name": "Team", "role": "lead", "tier": 2}))
        .await;
    t.create_workspace(json!({"name": "Member", "parent_id": root, "tier": 1}))
        .await;
    let (status, bundle) = t
        .admin(Method::GET, &format!("/bundles/export/{root}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            bundle["schema"].as_str(),
            bundle["name"].as_str(),
            bundle["description"].as_str()
        ),
        (Some("1.0"), Some("Team"), Some("lead"))
    );
    assert_eq!(bundle["sub_workspaces"][0]["name"], "Member");
    let (status, imported) = t
        .admin(Method::POST, "/bundles/import", Some(bundle.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(
        (imported["name"].as_str(), imported["status"].as_str()),
        (Some("Team"), Some("provisioning"))
    );
    let new_root = imported["workspace_id"].as_str().unwrap();
    assert_ne!(new_root, root);
    let (_, copy) = t
        .admin(Method::GET, &format!("/workspaces/{new_root}"), None)
        .await;
    assert_eq!(
        (copy["tier"].as_i64(), copy["role"].as_str()),
        (Some(2), Some("lead"))
    );
    let new_child = imported["children"][0]["workspace_id"].as_str().unwrap();
    let (_, child) = t
        .admin(Method::GET, &format!("/workspaces/{new_child}"), None)
        .await;
    assert_eq!(
        (child["parent_id"].as_str(), child["tier"].as_i64()),
        (Some(new_root), Some(1))
    );
    let (status, _) = t
        .admin(Method::POST, "/bundles/import", Some(json!({"name": 5})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = t
        .admin(
            Method::GET,
            "/bundles/export/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_token_bootstrap_failure_and_production() {
    let t = TestTenant::start(&[]).await;
    let id = t.create_workspace(json!({"name": "Boot"})).await;
    let (status, body) = t
        .admin(
            Method::GET,
            &format!("/admin/workspaces/{id}/test-token"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["auth_token"].as_str().unwrap().starts_with("mol_wst_"));
    assert_eq!(
        t.call(
            Method::GET,
            &format!("/admin/workspaces/{id}/test-token"),
            None,
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    let tail = "line\n".repeat(3000);
    let (status, body) = t
        .admin(
            Method::POST,
            &format!("/admin/workspaces/{id}/bootstrap-failed"),
            Some(json!({"error": "RUNTIME CRASHED", "log_tail": tail})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true})));
    let (_, w) = t
        .admin(Method::GET, &format!("/workspaces/{id}"), None)
        .await;
    assert_eq!(w["status"], "failed");
    assert!(w["last_sample_error"].as_str().unwrap().len() <= 8192);
    let (_, again) = t
        .admin(
            Method::POST,
            &format!("/admin/workspaces/{id}/bootstrap-failed"),
            Some(json!({})),
        )
        .await;
    assert_eq!(again, json!({"no_change": true, "ok": true}));
    let (_, console) = t
        .admin(Method::GET, &format!("/workspaces/{id}/console"), None)
        .await;
    assert!(console["error"]
        .as_str()
        .unwrap()
        .contains("no control plane"));

    let prod = TestTenant::start(&[("MOLECULE_ENV", "production")]).await;
    let id = prod.create_workspace(json!({"name": "P"})).await;
    let (status, _) = prod
        .admin(
            Method::GET,
            &format!("/admin/workspaces/{id}/test-token"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "never in production");
}

#[tokio::test]
async fn tenant_guard_and_rate_limit() {
    let org = "9b2e7f40-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
    let t = TestTenant::start(&[("MOLECULE_ORG_ID", org), ("RATE_LIMIT", "40")]).await;
    let guarded = |org_header: Option<&str>| {
        let mut req = t
            .http
            .get(format!("{}/workspaces", t.url))
            .bearer_auth(&t.admin_token);
        if let Some(o) = org_header {
            req = req.header("X-Molecule-Org-Id", o);
        }
        req.send()
    };
    for header in [None, Some("another-org")] {
        let resp = guarded(header).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(
            resp.text().await.unwrap().is_empty(),
            "the guard answers with an empty body"
        );
    }
    assert_eq!(guarded(Some(org)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        t.call(Method::GET, "/health", None, None).await.0,
        StatusCode::OK
    );
    let resp = t
        .http
        .post(format!("{}/registry/heartbeat", t.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_ne!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "agents reach the registry without the org header"
    );

    // The limiter: headers on every answer, 429 with retry_after past the limit.
    let mut last = None;
    for _ in 0..60 {
        let resp = t
            .http
            .get(format!("{}/health", t.url))
            .send()
            .await
            .unwrap();
        assert!(resp.headers().contains_key("x-ratelimit-remaining"));
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            last = Some((
                resp.headers()["retry-after"].to_str().unwrap().to_owned(),
                resp.json::<Value>().await.unwrap(),
            ));
            break;
        }
    }
    let (retry, body) = last.expect("the limit is enforced");
    assert!(retry.parse::<u64>().unwrap() >= 1);
    assert_eq!(body["error"], "rate limit exceeded");
}

#[tokio::test]
async fn open_dev_mode_behaves_like_the_original() {
    let t = TestTenant::start_exact(&[("MOLECULE_ENV", "development")]).await;
    let (status, text, _) = t
        .call(
            Method::POST,
            "/workspaces",
            None,
            Some(json!({"name": "Dev"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "admin routes are open in dev mode: {text}"
    );
    let (_, _, list) = t.call(Method::GET, "/workspaces", None, None).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    // The original's dev flow: a workspace without a token registers and receives one.
    let (status, _, body) = t
        .call(
            Method::POST,
            "/registry/register",
            None,
            Some(json!({"id": id, "url": "http://localhost:8000", "agent_card": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["auth_token"].as_str().is_some());
    let (status, _, _) = t
        .call(
            Method::POST,
            "/registry/register",
            None,
            Some(json!({"id": id, "url": "http://localhost:8000", "agent_card": null})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "once it has a token, the token is needed"
    );
    let (status, _, _) = t.call(Method::POST, "/registry/register", None, Some(json!({"id": "22222222-2222-4222-8222-222222222222", "url": "http://localhost:8000", "agent_card": null}))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "unknown ids are never registered"
    );
    let resp = t
        .http
        .get(format!("{}/health", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-ratelimit-limit"], "unlimited");
}

#[tokio::test]
async fn sweeps_fail_stuck_provisions_and_mark_silent_workspaces_offline() {
    let t = TestTenant::start(&[
        ("PROVISION_TIMEOUT_SECONDS", "1"),
        ("LIVENESS_TIMEOUT_SECONDS", "2"),
        ("SWEEP_INTERVAL_SECONDS", "1"),
    ])
    .await;
    let stuck = t.create_workspace(json!({"name": "Stuck"})).await;
    let live = t.create_workspace(json!({"name": "Live"})).await;
    let token = t.workspace_token(&live).await;
    let (status, _, _) = t
        .call(
            Method::POST,
            "/registry/register",
            Some(&token),
            Some(json!({"id": live, "url": "http://127.0.0.1:9", "agent_card": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let status_of = |id: String| {
        let t = &t;
        async move {
            t.admin(Method::GET, &format!("/workspaces/{id}"), None)
                .await
                .1
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (s, l) = (
            status_of(stuck.clone()).await,
            status_of(live.clone()).await,
        );
        if s["status"] == "failed" && l["status"] == "offline" {
            assert!(
                s["last_sample_error"]
                    .as_str()
                    .unwrap()
                    .contains("timed out"),
                "{s}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sweeps did not act: {s} {l}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, events) = t.admin(Method::GET, "/events", None).await;
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"WORKSPACE_OFFLINE") && kinds.contains(&"WORKSPACE_PROVISION_FAILED"),
        "{kinds:?}"
    );
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "WORKSPACE_PROVISION_FAILED")
        .unwrap();
    assert_eq!(failed["payload"]["source"], "provision_timeout_sweep");
    // A heartbeat brings the silent one back.
    t.call(
        Method::POST,
        "/registry/heartbeat",
        Some(&token),
        Some(json!({"workspace_id": live})),
    )
    .await;
    assert_eq!(status_of(live.clone()).await["status"], "online");
}

#[tokio::test]
async fn org_token_minting_is_rate_limited() {
    let t = TestTenant::start(&[]).await;
    for i in 0..10 {
        let (status, body) = t
            .admin(
                Method::POST,
                "/org/tokens",
                Some(json!({"name": format!("t{i}")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = t.admin(Method::POST, "/org/tokens", Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate limit exceeded"))
    );
    let (_, listed) = t.admin(Method::GET, "/org/tokens", None).await;
    assert_eq!(listed["count"], 10, "the refused mint made no token");
}

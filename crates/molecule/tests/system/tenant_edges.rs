//! The tenant's edges: the auth matrix built from its own route table, the Discord webhook with
//! real Ed25519 keys, and the `/cp/*` proxy's allowlist.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::TestTenant;

/// The documented public routes (README, "Tenant API"): exactly these need no credential.
const DOCUMENTED_PUBLIC: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/workspaces/{id}"),
    ("POST", "/registry/check-access"),
    ("POST", "/webhooks/{kind}"),
    ("ANY", "/cp/{*path}"),
];

#[tokio::test]
async fn every_route_outside_the_public_list_needs_a_credential() {
    let t = TestTenant::start(&[("CP_UPSTREAM_URL", "http://127.0.0.1:9")]).await;
    let id = t.create_workspace(json!({"name": "Matrix"})).await;
    let ws_token = t.workspace_token(&id).await;
    let (status, table) = t.admin(Method::GET, "/admin/routes", None).await;
    assert_eq!(status, StatusCode::OK);
    let routes = table["routes"].as_array().unwrap();
    assert!(routes.len() > 40, "the whole table: {}", routes.len());

    let public: Vec<(String, String)> = routes
        .iter()
        .filter(|r| r["gate"] == "public")
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let documented: Vec<(String, String)> = DOCUMENTED_PUBLIC
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        public, documented,
        "the public list is exactly the documented one"
    );
    let served: Vec<(String, String)> = table["public"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(served, documented);

    let mut checked = 0;
    for r in routes.iter().filter(|r| r["gate"] != "public") {
        let path = r["path"]
            .as_str()
            .unwrap()
            .replace("{id}", &id)
            .replace("{workspace_id}", &id)
            .replace("{key}", "SOME_KEY")
            .replace("{token_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{channel_id}", "00000000-0000-4000-8000-000000000000");
        let method = Method::from_bytes(r["method"].as_str().unwrap().as_bytes()).unwrap();
        for bearer in [None, Some("mol_wst_forged-token-value")] {
            let mut req = t
                .http
                .request(method.clone(), format!("{}{path}", t.url))
                .json(&json!({"workspace_id": id, "id": id, "url": "http://127.0.0.1:1"}));
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let status = req.send().await.unwrap().status();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {bearer:?}"
            );
        }
        // A workspace token is never an admin credential.
        if r["gate"] == "admin" {
            let status = t
                .http
                .request(method.clone(), format!("{}{path}", t.url))
                .bearer_auth(&ws_token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with a workspace token"
            );
        }
        checked += 1;
    }
    assert!(checked > 35);
}

fn signed(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut msg = timestamp.as_bytes().to_vec();
    msg.extend_from_slice(body);
    hex::encode(key.sign(&msg).to_bytes())
}

#[tokio::test]
async fn discord_interactions_are_verified_before_anything_else() {
    let t = TestTenant::start(&[]).await;
    let id = t.create_workspace(json!({"name": "Chat"})).await;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let other = SigningKey::generate(&mut rand::rngs::OsRng);
    let (status, channel) = t
        .admin(
            Method::POST,
            &format!("/workspaces/{id}/channels"),
            Some(json!({"channel_type": "discord", "config": {"app_public_key": hex::encode(key.verifying_key().to_bytes()), "chat_id": "chan-1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{channel}");
    let now = (molecule_shared::now_ms() / 1000).to_string();
    let send = |body: Vec<u8>, ts: String, sig: String| {
        t.http
            .post(format!("{}/webhooks/discord", t.url))
            .header("content-type", "application/json")
            .header("X-Signature-Ed25519", sig)
            .header("X-Signature-Timestamp", ts)
            .body(body)
            .send()
    };
    let ping = br#"{"type":1}"#.to_vec();
    let resp = send(ping.clone(), now.clone(), signed(&key, &now, &ping))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), r#"{"type":1}"#);

    let resp = send(ping.clone(), now.clone(), signed(&other, &now, &ping))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a signature by another key"
    );
    let resp = send(ping.clone(), now.clone(), "00".repeat(64))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a bad signature");
    let tampered = br#"{"type":2}"#.to_vec();
    let resp = send(tampered, now.clone(), signed(&key, &now, &ping))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a body that is not the signed one"
    );
    let stale = (molecule_shared::now_ms() / 1000 - 3600).to_string();
    let resp = send(ping.clone(), stale.clone(), signed(&key, &stale, &ping))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a stale timestamp, validly signed"
    );

    // Over 1 MiB: 413 before any signature work.
    let big = vec![b' '; 1024 * 1024 + 10];
    let resp = send(big.clone(), now.clone(), signed(&key, &now, &big))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let command = json!({"type": 2, "channel_id": "chan-1", "data": {"name": "ask", "options": [{"name": "q", "value": "hello"}]}, "member": {"user": {"username": "ann"}}});
    let body = command.to_string().into_bytes();
    let resp = send(body.clone(), now.clone(), signed(&key, &now, &body))
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": "accepted"})
    );
    let token = t.workspace_token(&id).await;
    let (_, _, activity) = t
        .call(
            Method::GET,
            &format!("/workspaces/{id}/activity"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(activity[0]["summary"], "/ask hello");
    let elsewhere = json!({"type": 2, "channel_id": "chan-9", "data": {"name": "ask"}})
        .to_string()
        .into_bytes();
    let resp = send(
        elsewhere.clone(),
        now.clone(),
        signed(&key, &now, &elsewhere),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": "no_channel"})
    );
    assert_eq!(
        t.call(
            Method::POST,
            "/webhooks/carrier-pigeon",
            None,
            Some(json!({}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

/// Sends a request line as given (no client-side path normalisation) and returns the status.
fn raw_status(url: &str, path: &str) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cp_proxy_forwards_only_its_allowlist_on_normalised_paths() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let upstream = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let cookie = req
                .headers()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            axum::Json(json!({"path": req.uri().path(), "cookie": cookie}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });
    let t = TestTenant::start(&[("CP_UPSTREAM_URL", &upstream_url)]).await;

    let resp = t
        .http
        .get(format!("{}/cp/auth/me", t.url))
        .header("cookie", "s=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"path": "/cp/auth/me", "cookie": "s=1"})
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    for path in [
        "/cp/admin/orgs",
        "/cp/auth/../admin/orgs",
        "/cp/auth/%2e%2e/admin/orgs",
        "/cp/auth/%2fadmin",
        "/cp/orgsabc",
        "/cp/tenants/config",
        "/cp/workspaces/provision",
    ] {
        let url = t.url.clone();
        let status = tokio::task::spawn_blocking(move || raw_status(&url, path))
            .await
            .unwrap();
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "nothing outside the allowlist reached the upstream"
    );
    let url = t.url.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || raw_status(&url, "/cp/orgs/acme"))
            .await
            .unwrap(),
        200
    );
}

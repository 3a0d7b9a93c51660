//! Bad input to every control-plane route gets a 4xx with `{"error": ...}` and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::TestCp;

enum Auth {
    None,
    Admin,
    Tenant,
    Platform,
}

struct Case {
    method: Method,
    path: &'static str,
    auth: Auth,
    content_type: &'static str,
    body: Vec<u8>,
    expect: u16,
}

fn case(method: Method, path: &'static str, auth: Auth, body: Value, expect: u16) -> Case {
    Case {
        method,
        path,
        auth,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        expect,
    }
}

fn raw(
    method: Method,
    path: &'static str,
    auth: Auth,
    content_type: &'static str,
    body: &[u8],
    expect: u16,
) -> Case {
    Case {
        method,
        path,
        auth,
        content_type,
        body: body.to_vec(),
        expect,
    }
}

fn ws(org_id: &str, overrides: Value) -> Value {
    let mut body = json!({
        "org_id": org_id, "workspace_id": "ws-1", "runtime": "reference", "tier": 1,
        "platform_url": "http://127.0.0.1:9", "env": {}
    });
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let cp = TestCp::start().await;
    let (org, _) = cp.create_running_org("acme").await;
    let org_id = org["id"].as_str().unwrap().to_owned();
    let tenant_token = cp.tenant_token("acme").await;
    let big = vec![b'x'; 300 * 1024];
    let big_json = format!(
        "{{\"slug\":\"acme2\",\"name\":\"{}\"}}",
        "n".repeat(100 * 1024)
    );
    let huge_env: Value = json!({ "BIG": "v".repeat(300 * 1024) });

    use Auth::*;
    let cases = vec![
        raw(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            "application/json",
            b"{",
            400,
        ),
        raw(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            "application/json",
            b"",
            400,
        ),
        raw(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            "text/plain",
            br#"{"slug":"okay","name":"x"}"#,
            415,
        ),
        raw(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            "application/json",
            big_json.as_bytes(),
            413,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "okay"}),
            422,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": 5, "name": "x"}),
            422,
        ),
        case(Method::POST, "/cp/admin/orgs", Admin, json!([1, 2]), 422),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "Bad_Slug", "name": "x"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "ab", "name": "x"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "admin", "name": "x"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "acme-", "name": "x"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "evil.example", "name": "x"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "okay", "name": ""}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "okay", "name": "a\u{7}b"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "okay", "name": "x", "plan": "gold"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs",
            Admin,
            json!({"slug": "acme", "name": "Again"}),
            409,
        ),
        case(Method::PUT, "/cp/admin/orgs", Admin, json!({}), 405),
        case(
            Method::GET,
            "/cp/admin/orgs/nosuch",
            Admin,
            Value::Null,
            404,
        ),
        case(
            Method::POST,
            "/cp/admin/orgs/acme/retry",
            Admin,
            Value::Null,
            409,
        ),
        case(
            Method::GET,
            "/cp/admin/orgs/nosuch/admin-token",
            Admin,
            Value::Null,
            404,
        ),
        case(
            Method::GET,
            "/cp/admin/audit?limit=abc",
            Admin,
            Value::Null,
            400,
        ),
        case(
            Method::GET,
            "/cp/admin/audit?limit=0",
            Admin,
            Value::Null,
            400,
        ),
        case(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Admin,
            json!({"confirm": "other"}),
            400,
        ),
        case(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Admin,
            json!({"confirm_token": "acme"}),
            422,
        ),
        raw(
            Method::DELETE,
            "/cp/admin/tenants/acme",
            Admin,
            "application/json",
            b"not json",
            400,
        ),
        case(
            Method::DELETE,
            "/cp/admin/tenants/nosuch",
            Admin,
            json!({"confirm": "nosuch"}),
            404,
        ),
        case(
            Method::GET,
            "/cp/admin/workspaces/nosuch/console",
            Admin,
            Value::Null,
            404,
        ),
        case(
            Method::GET,
            "/cp/orgs/NOT_A_SLUG/instance",
            None,
            Value::Null,
            404,
        ),
        case(
            Method::GET,
            "/cp/orgs/nosuch/instance",
            None,
            Value::Null,
            404,
        ),
        case(
            Method::POST,
            "/cp/orgs/acme/instance",
            None,
            Value::Null,
            405,
        ),
        case(Method::GET, "/no/such/route", None, Value::Null, 404),
        case(Method::POST, "/health", None, Value::Null, 405),
        case(Method::DELETE, "/cp/orgs/acme", None, Value::Null, 401),
        case(Method::DELETE, "/cp/orgs/acme", Admin, Value::Null, 401),
        case(
            Method::POST,
            "/cp/tenants/boot-event",
            Tenant,
            json!({"stage": "Bad Stage", "status": "ok"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/tenants/boot-event",
            Tenant,
            json!({"stage": "boot", "status": "great"}),
            400,
        ),
        case(
            Method::POST,
            "/cp/tenants/boot-event",
            Tenant,
            json!({"stage": "boot", "status": "ok", "detail": "d".repeat(3000)}),
            400,
        ),
        case(
            Method::POST,
            "/cp/tenants/boot-event",
            Tenant,
            json!({"status": "ok"}),
            422,
        ),
        case(
            Method::POST,
            "/cp/tenants/boot-event",
            None,
            json!({"stage": "boot", "status": "ok"}),
            401,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"workspace_id": "../etc"})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"workspace_id": ""})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"tier": 9})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"tier": "1"})),
            422,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"runtime": "Bad Runtime"})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"env": {"1BAD": "x"}})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"env": {"PORT": "1"}})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"env": {"X": "a\u{0}b"}})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"env": huge_env})),
            413,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(
                &org_id,
                json!({"platform_url": "http://169.254.169.254/latest"}),
            ),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"platform_url": "file:///etc/passwd"})),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(
                &org_id,
                json!({"platform_url": "http://user:pw@127.0.0.1/"}),
            ),
            400,
        ),
        case(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            ws(&org_id, json!({"platform_url": "http://[fd00:ec2::254]/"})),
            400,
        ),
        raw(
            Method::POST,
            "/cp/workspaces/provision",
            Platform,
            "application/json",
            &big,
            413,
        ),
        case(
            Method::DELETE,
            "/cp/workspaces/nosuch",
            Platform,
            Value::Null,
            404,
        ),
        case(
            Method::GET,
            "/cp/workspaces/nosuch/status",
            Platform,
            Value::Null,
            404,
        ),
        case(
            Method::GET,
            "/cp/workspaces/..%2F..%2Fx/status",
            Platform,
            Value::Null,
            404,
        ),
    ];

    let before = cp.state_counts().await;
    for c in cases {
        let mut req = cp
            .http
            .request(c.method.clone(), format!("{}{}", cp.url(), c.path))
            .header("content-type", c.content_type);
        if !c.body.is_empty() && c.body != b"null" {
            req = req.body(c.body.clone());
        }
        req = match c.auth {
            None => req,
            Admin => req.bearer_auth(cp.admin_token()),
            Tenant => req
                .bearer_auth(&tenant_token)
                .header("X-Molecule-Org-Id", &org_id),
            Platform => req
                .bearer_auth(cp.shared_secret())
                .header("X-Molecule-Admin-Token", &tenant_token),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(
            status.as_u16(),
            c.expect,
            "{} {} {}: {text}",
            c.method,
            c.path,
            String::from_utf8_lossy(&c.body)
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{} {}: not JSON: {text:?}", c.method, c.path));
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{} {}: {text}",
            c.method,
            c.path
        );
        assert!(
            !text.contains(&tenant_token) && !text.contains(cp.shared_secret()),
            "error echoes a credential"
        );
        assert_eq!(
            cp.state_counts().await,
            before,
            "{} {} changed the store",
            c.method,
            c.path
        );
    }
    // The org is untouched and still serving.
    assert_eq!(cp.wait_status("acme", "running").await["org_id"], org["id"]);
    let _ = StatusCode::OK;
    cp.stop().await;
}

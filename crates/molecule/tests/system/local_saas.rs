//! `molecule up` as a user runs it: a whole flow through the CLI and the APIs, with every log
//! line of every process captured and searched for every secret the flow handled.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cp_auth::tenant_secrets;
use crate::support::{pid_in, processes_with_arg, BIN};

struct Up {
    child: Child,
    data: PathBuf,
    cp_url: String,
    router_url: String,
}

fn start_up(root: &Path, data: &Path, cp_port: u16, run: usize) -> Up {
    let out = std::fs::File::create(root.join(format!("up-{run}.out"))).unwrap();
    let err = std::fs::File::create(root.join(format!("up-{run}.err"))).unwrap();
    let child = Command::new(BIN)
        .args(["up", "--data-dir"])
        .arg(data)
        .args(["--cp-addr", &format!("127.0.0.1:{cp_port}")])
        .args([
            "--router-addr",
            &format!("127.0.0.1:{}", molecule_testkit::free_port()),
        ])
        .env("RUST_LOG", "debug")
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let up_json = data.join("up.json");
    while !up_json.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "molecule up did not write up.json"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    let info: Value = serde_json::from_slice(&std::fs::read(&up_json).unwrap()).unwrap();
    assert!(Path::new(info["admin_token_file"].as_str().unwrap()).exists());
    Up {
        child,
        data: data.to_path_buf(),
        cp_url: info["cp_url"].as_str().unwrap().to_owned(),
        router_url: info["router_url"].as_str().unwrap().to_owned(),
    }
}

impl Up {
    fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(BIN)
            .args(args)
            .args(["--cp", &self.cp_url, "--json", "--token-file"])
            .arg(self.data.join("secrets/cp_admin_api_token"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "molecule {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn wait_running(&self, slugs: &[&str]) -> Value {
        let started = Instant::now();
        loop {
            let list = self.cli(&["org", "list"]);
            let running = list["orgs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| {
                    slugs.contains(&o["slug"].as_str().unwrap())
                        && o["status"] == "running"
                        && o["backend"].is_string()
                })
                .count();
            if running == slugs.len() {
                return list;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "orgs not running: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C, as a person at the terminal would press it.
    fn interrupt(mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "molecule up exits cleanly on Ctrl-C");
    }
}

fn secret_file(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join("secrets").join(name))
        .unwrap()
        .trim()
        .to_owned()
}

fn all_logs(root: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "log" || e == "out" || e == "err")
            {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_local_saas_flow_leaks_no_secret_into_any_log() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("molecule-data");
    let port = molecule_testkit::free_port();
    let up = start_up(root.path(), &data, port, 1);
    for (slug, name) in [("acme", "Acme"), ("bravo", "Bravo"), ("charlie", "Charlie")] {
        let org = up.cli(&["org", "create", slug, "--name", name]);
        assert_eq!(org["status"], "provisioning");
    }
    let list = up.wait_running(&["acme", "bravo", "charlie"]);
    let acme_id = list["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["slug"] == "acme")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The edge router serves each org at <slug>.localhost, and nothing else.
    let router_port = up.router_url.rsplit(':').next().unwrap();
    let router = format!("http://127.0.0.1:{router_port}");
    let http = reqwest::Client::new();
    let via_router = |host: &str, path: &str| {
        http.get(format!("{router}{path}"))
            .header("host", format!("{host}:{router_port}"))
            .send()
    };
    let resp = via_router("acme.localhost", "/health").await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
    for host in [
        "nosuchorg.localhost",
        "a.acme.localhost",
        "example.com",
        "acme.example.com",
    ] {
        let resp = via_router(host, "/health").await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND, "{host}");
    }
    let metrics = via_router("localhost", "/metrics").await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("router_requests_total{outcome=\"routed\"} 1\n"),
        "{metrics}"
    );

    let mut secrets = vec![
        secret_file(&data, "cp_admin_api_token"),
        secret_file(&data, "provision_shared_secret"),
        secret_file(&data, "secrets_encryption_key"),
        "sk-workspace-secret-value-7f3a".to_owned(),
    ];
    for slug in ["acme", "bravo", "charlie"] {
        let pid = pid_in(&data.join("tenants").join(slug).join("instance.pid")).unwrap();
        secrets.extend(tenant_secrets(pid));
        secrets.push(
            up.cli(&["org", "admin-token", slug])["admin_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // A workspace for acme, provisioned the way its tenant would.
    let acme_token = up.cli(&["org", "admin-token", "acme"])["admin_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = http
        .post(format!("{}/cp/workspaces/provision", up.cp_url))
        .bearer_auth(secret_file(&data, "provision_shared_secret"))
        .header("X-Molecule-Admin-Token", &acme_token)
        .json(&json!({
            "org_id": acme_id, "workspace_id": "ws-acme-1", "runtime": "reference", "tier": 1,
            "platform_url": "http://127.0.0.1:9", "env": {"ANTHROPIC_API_KEY": "sk-workspace-secret-value-7f3a"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let agent_pidfile = data.join("workspaces/ws-acme-1/instance.pid");
    assert!(pid_in(&agent_pidfile).is_some());

    // A workspace created through acme's tenant API, with a secret, run by the CP as an agent.
    let backend = list["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["slug"] == "acme")
        .unwrap()["backend"]
        .as_str()
        .unwrap()
        .to_owned();
    let created: Value = http
        .post(format!("{backend}/workspaces"))
        .bearer_auth(&acme_token)
        .header("X-Molecule-Org-Id", &acme_id)
        .json(&json!({"name": "Writer", "secrets": {"OPENAI_API_KEY": "sk-tenant-workspace-secret-91d2"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws_id = created["id"].as_str().unwrap().to_owned();
    let ws_pidfile = data.join("workspaces").join(&ws_id).join("instance.pid");
    let started = Instant::now();
    let agent_env = loop {
        if let Some(pid) = pid_in(&ws_pidfile) {
            break String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
                .into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the tenant's workspace got an agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    secrets.push("sk-tenant-workspace-secret-91d2".into());
    let ws_token = agent_env
        .split('\0')
        .find_map(|v| v.strip_prefix("MOLECULE_WORKSPACE_TOKEN="))
        .expect("the agent got its token")
        .to_owned();
    secrets.push(ws_token);

    // Refused requests are logged too: try a few with wrong credentials.
    let _ = http
        .get(format!("{}/cp/admin/orgs", up.cp_url))
        .bearer_auth(&acme_token)
        .send()
        .await
        .unwrap();
    let _ = http
        .post(format!("{}/cp/workspaces/provision", up.cp_url))
        .bearer_auth(&acme_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    // Delete one org through the CLI.
    up.cli(&["org", "delete", "charlie", "--yes"]);
    let list = up.cli(&["org", "list"]);
    assert!(list["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["slug"] != "charlie"));

    up.interrupt();
    assert_eq!(
        processes_with_arg(&data.display().to_string()),
        0,
        "Ctrl-C stops every process it started"
    );

    // A second run on the same data dir picks the orgs (and the workspace) back up.
    let up = start_up(root.path(), &data, port, 2);
    let list = up.wait_running(&["acme", "bravo"]);
    assert_eq!(list["orgs"].as_array().unwrap().len(), 2);
    for org in list["orgs"].as_array().unwrap() {
        let health: Value = http
            .get(format!("{}/health", org["backend"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok");
    }
    let started = Instant::now();
    while pid_in(&agent_pidfile).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the workspace agent comes back too"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The bench command works against it (figures themselves are reported, not asserted).
    let out = Command::new(BIN)
        .args([
            "bench",
            "signup",
            "--count",
            "2",
            "--json",
            "--cp",
            &up.cp_url,
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signup_to_running_ms"]["n"], 2);
    assert!(report["tenant_idle_rss_mib"]["median"].as_f64().unwrap() > 0.0);
    up.interrupt();
    assert_eq!(processes_with_arg(&data.display().to_string()), 0);

    let logs = all_logs(root.path());
    assert!(
        logs.contains("tenant running") && logs.contains("agent listening"),
        "logs were captured"
    );
    for secret in &secrets {
        assert!(secret.len() >= 16, "a real secret value");
        assert!(
            !logs.contains(secret.as_str()),
            "a secret value appears in the logs"
        );
        // Not even a prefix of its random part.
        let tail = &secret[secret.len() - 12..];
        assert!(
            !logs.contains(tail),
            "part of a secret value appears in the logs"
        );
    }
}

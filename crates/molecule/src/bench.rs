//! `molecule bench`: measurements against a running system, reported as min/median/max.
//! Figures come from here, not from timed assertions in tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use molecule_shared::pidfile::{self, Probe};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Sign up COUNT orgs one after another; time each from the API call to a running tenant
    /// whose /health answers, then measure idle memory.
    Signup {
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, env = "MOLECULE_CP_URL", default_value = "http://127.0.0.1:8090")]
        cp: String,
        /// The data dir of `molecule up` (for the admin token, pidfiles and up.json).
        #[arg(long, default_value = "molecule-data")]
        data_dir: PathBuf,
        /// Keep the orgs instead of deleting them afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Create COUNT workspaces in one new org; time each from the tenant API call to `online`
    /// (the CP started its agent, which registered).
    Workspaces {
        #[arg(long, default_value_t = 10)]
        count: usize,
        #[arg(long, env = "MOLECULE_CP_URL", default_value = "http://127.0.0.1:8090")]
        cp: String,
        #[arg(long, default_value = "molecule-data")]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Load a standalone tenant (started here, as a child process): heartbeats per second,
    /// public `GET /workspaces/:id` per second, then its idle RSS.
    Tenant {
        /// `sqlite://...` (default: a temp file) or `postgres://...`.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 100)]
        workspaces: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn summary(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    let median = if values.is_empty() {
        0.0
    } else if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    json!({
        "n": values.len(),
        "min": values.first().copied().unwrap_or(0.0),
        "median": median,
        "max": values.last().copied().unwrap_or(0.0),
    })
}

/// Resident set size of a process in MiB.
pub fn rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Signup {
            count,
            cp,
            data_dir,
            keep,
            json,
        } => signup(count, cp, data_dir, keep, json).await,
        BenchCommand::Workspaces {
            count,
            cp,
            data_dir,
            json,
        } => workspaces(count, cp, data_dir, json).await,
        BenchCommand::Tenant {
            database_url,
            workspaces,
            seconds,
            concurrency,
            json,
        } => tenant_load(database_url, workspaces, seconds, concurrency, json).await,
    }
}

async fn signup(
    count: usize,
    cp: String,
    data_dir: PathBuf,
    keep: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let token = local_admin_token(&data_dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let run_id = hex_id();
    let mut times_ms = Vec::new();
    let mut slugs = Vec::new();
    for i in 0..count {
        let slug = format!("bench-{run_id}-{i}");
        let started = Instant::now();
        let resp = http
            .post(format!("{cp}/cp/admin/orgs"))
            .bearer_auth(token.expose())
            .json(&json!({ "slug": slug, "name": format!("Bench {i}") }))
            .send()
            .await?;
        if resp.status() != reqwest::StatusCode::CREATED {
            bail!("creating {slug} answered {}", resp.status());
        }
        let deadline = started + Duration::from_secs(60);
        loop {
            let lookup: Value = http
                .get(format!("{cp}/cp/orgs/{slug}/instance"))
                .send()
                .await?
                .json()
                .await?;
            if let Some(backend) = lookup["backend"].as_str() {
                if http
                    .get(format!("{backend}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
            }
            if lookup["status"] == "failed" || Instant::now() > deadline {
                bail!("{slug} did not come up: {lookup}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        slugs.push(slug);
    }
    // Let the tenants go idle before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tenant_rss: Vec<f64> = slugs
        .iter()
        .filter_map(|slug| {
            match pidfile::probe(&data_dir.join("tenants").join(slug).join("instance.pid")) {
                Ok(Probe::Live { pid, .. }) => rss_mib(pid),
                _ => None,
            }
        })
        .collect();
    let total_tenants = std::fs::read_dir(data_dir.join("tenants"))
        .map(|d| d.count())
        .unwrap_or(0);
    let cp_rss = std::fs::read(data_dir.join("up.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["pid"].as_i64())
        .and_then(|pid| rss_mib(pid as i32));
    let report = json!({
        "signup_to_running_ms": summary(times_ms),
        "tenant_idle_rss_mib": summary(tenant_rss),
        "cp_rss_mib": cp_rss,
        "tenants_running": total_tenants,
    });
    if !keep {
        for slug in &slugs {
            http.delete(format!("{cp}/cp/admin/tenants/{slug}"))
                .bearer_auth(token.expose())
                .json(&json!({ "confirm": slug }))
                .send()
                .await?;
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let t = &report["signup_to_running_ms"];
        let r = &report["tenant_idle_rss_mib"];
        println!(
            "signup to running over {count} orgs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
            t["min"].as_f64().unwrap_or(0.0),
            t["median"].as_f64().unwrap_or(0.0),
            t["max"].as_f64().unwrap_or(0.0)
        );
        println!(
            "tenant idle RSS: min {:.1} MiB, median {:.1} MiB, max {:.1} MiB",
            r["min"].as_f64().unwrap_or(0.0),
            r["median"].as_f64().unwrap_or(0.0),
            r["max"].as_f64().unwrap_or(0.0)
        );
        if let Some(rss) = cp_rss {
            println!("control plane RSS with {total_tenants} tenants: {rss:.1} MiB");
        }
    }
    Ok(())
}

/// The CP admin API token `molecule up` keeps in `data_dir`.
pub fn local_admin_token(
    data_dir: &std::path::Path,
) -> anyhow::Result<molecule_shared::secret::Secret> {
    let path = molecule_cp::config::local_secret_path(data_dir, "CP_ADMIN_API_TOKEN");
    molecule_shared::secret::read_file("CP_ADMIN_API_TOKEN", &path)?
        .with_context(|| format!("no admin token at {}", path.display()))
}

fn hex_id() -> String {
    hex::encode(molecule_shared::token::random_bytes::<3>())
}

fn print_report(report: &Value, as_json: bool, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        human(report);
    }
    Ok(())
}

fn fmt_summary(v: &Value, unit: &str) -> String {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    format!(
        "min {:.1} {unit}, median {:.1} {unit}, max {:.1} {unit}",
        f("min"),
        f("median"),
        f("max")
    )
}

async fn workspaces(
    count: usize,
    cp: String,
    data_dir: PathBuf,
    as_json: bool,
) -> anyhow::Result<()> {
    let admin = local_admin_token(&data_dir)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let slug = format!("bench-ws-{}", hex_id());
    let org: Value = http
        .post(format!("{cp}/cp/admin/orgs"))
        .bearer_auth(admin.expose())
        .json(&json!({ "slug": slug, "name": "Workspace bench" }))
        .send()
        .await?
        .json()
        .await?;
    let org_id = org["id"]
        .as_str()
        .context("org creation failed")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let backend = loop {
        let lookup: Value = http
            .get(format!("{cp}/cp/orgs/{slug}/instance"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(b) = lookup["backend"].as_str() {
            break b.to_owned();
        }
        if Instant::now() > deadline {
            bail!("tenant {slug} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let tenant_token: Value = http
        .get(format!("{cp}/cp/admin/orgs/{slug}/admin-token"))
        .bearer_auth(admin.expose())
        .send()
        .await?
        .json()
        .await?;
    let tenant_token = tenant_token["admin_token"]
        .as_str()
        .context("no tenant token")?
        .to_owned();
    let mut times = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        let created: Value = http
            .post(format!("{backend}/workspaces"))
            .bearer_auth(&tenant_token)
            .header("X-Molecule-Org-Id", &org_id)
            .json(&json!({ "name": format!("bench {i}") }))
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"]
            .as_str()
            .context("workspace creation failed")?
            .to_owned();
        let deadline = started + Duration::from_secs(60);
        loop {
            let w: Value = http
                .get(format!("{backend}/workspaces/{id}"))
                .header("X-Molecule-Org-Id", &org_id)
                .send()
                .await?
                .json()
                .await?;
            if w["status"] == "online" {
                break;
            }
            if w["status"] == "failed" || Instant::now() > deadline {
                bail!("workspace {id} did not come online: {w}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    http.delete(format!("{cp}/cp/admin/tenants/{slug}"))
        .bearer_auth(admin.expose())
        .json(&json!({ "confirm": slug }))
        .send()
        .await?;
    let report = json!({ "create_to_online_ms": summary(times) });
    print_report(&report, as_json, |r| {
        println!(
            "workspace create to online over {count} workspaces: {}",
            fmt_summary(&r["create_to_online_ms"], "ms")
        );
    })
}

/// Runs `worker` on `concurrency` tasks for `seconds`; returns successful calls per second.
async fn sustained<F, Fut>(seconds: u64, concurrency: usize, worker: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let worker = worker.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut i = 0;
            while Instant::now() < until {
                if worker(w, i).await {
                    ok += 1;
                }
                i += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn tenant_load(
    database_url: Option<String>,
    count: usize,
    seconds: u64,
    concurrency: usize,
    as_json: bool,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("molecule-bench-{}", hex_id()));
    std::fs::create_dir_all(&dir)?;
    let db = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("tenant.db").display()));
    let admin = molecule_shared::token::generate(molecule_shared::token::TokenKind::TenantAdmin);
    let pidfile = dir.join("tenant.pid");
    let log = std::fs::File::create(dir.join("tenant.log"))?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["tenant", "serve", "--listen", "127.0.0.1:0", "--pidfile"])
        .arg(&pidfile)
        .env_clear()
        .env("DATABASE_URL", &db)
        .env("ADMIN_TOKEN", admin.expose())
        .env("MOLECULE_ENV", "staging")
        .env("MOLECULE_SSRF_ALLOW", "loopback")
        .env("RATE_LIMIT", "100000000")
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let (pid, addr) = loop {
        if let Ok(Probe::Live {
            pid,
            addr: Some(addr),
        }) = pidfile::probe(&pidfile)
        {
            break (pid, addr);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "the tenant did not start; see {}",
                dir.join("tenant.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency * 2)
        .build()?;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..count {
        let created: Value = http
            .post(format!("{base}/workspaces"))
            .bearer_auth(admin.expose())
            .json(&json!({ "name": format!("w{i}") }))
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"]
            .as_str()
            .context("workspace creation failed")?
            .to_owned();
        let minted: Value = http
            .post(format!("{base}/workspaces/{id}/tokens"))
            .bearer_auth(admin.expose())
            .send()
            .await?
            .json()
            .await?;
        tokens.push(
            minted["auth_token"]
                .as_str()
                .context("token mint failed")?
                .to_owned(),
        );
        ids.push(id);
    }
    let ids = std::sync::Arc::new(ids);
    let tokens = std::sync::Arc::new(tokens);
    let (h, i2, t2, b2) = (http.clone(), ids.clone(), tokens.clone(), base.clone());
    let heartbeats = sustained(seconds, concurrency, move |w, i| {
        let (h, ids, tokens, base) = (h.clone(), i2.clone(), t2.clone(), b2.clone());
        async move {
            let n = (w * 7919 + i) % ids.len();
            let body = json!({ "workspace_id": ids[n], "error_rate": 0.0, "active_tasks": i % 3, "uptime_seconds": i, "current_task": "" });
            h.post(format!("{base}/registry/heartbeat")).bearer_auth(&tokens[n]).json(&body).send().await.is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let (h, i2, b2) = (http.clone(), ids.clone(), base.clone());
    let public_gets = sustained(seconds, concurrency, move |w, i| {
        let (h, ids, base) = (h.clone(), i2.clone(), b2.clone());
        async move {
            let n = (w * 7919 + i) % ids.len();
            h.get(format!("{base}/workspaces/{}", ids[n]))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_mib(pid);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    let backend = if db.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let report = json!({
        "backend": backend, "workspaces": count, "concurrency": concurrency, "seconds": seconds,
        "heartbeats_per_second": heartbeats, "public_get_per_second": public_gets, "idle_rss_mib": rss,
    });
    print_report(&report, as_json, |r| {
        println!(
            "{backend}, {count} workspaces, {concurrency} concurrent, {seconds} s each: {:.0} heartbeats/s, {:.0} public GET /workspaces/:id per s, idle RSS {:.1} MiB",
            r["heartbeats_per_second"].as_f64().unwrap_or(0.0),
            r["public_get_per_second"].as_f64().unwrap_or(0.0),
            r["idle_rss_mib"].as_f64().unwrap_or(0.0)
        );
    })
}

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
    let BenchCommand::Signup {
        count,
        cp,
        data_dir,
        keep,
        json: as_json,
    } = args.command;
    let token_path = molecule_cp::config::local_secret_path(&data_dir, "CP_ADMIN_API_TOKEN");
    let token = molecule_shared::secret::read_file("CP_ADMIN_API_TOKEN", &token_path)?
        .with_context(|| format!("no admin token at {}", token_path.display()))?;
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

fn hex_id() -> String {
    hex::encode(molecule_shared::token::random_bytes::<3>())
}

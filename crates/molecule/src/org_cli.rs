//! `molecule org ...`: a client of the control plane's admin API, for people (tables) and
//! scripts (`--json`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use molecule_shared::http::{read_capped, upstream_error_text};
use molecule_shared::secret::{self, Secret};
use serde_json::Value;

#[derive(clap::Args)]
pub struct OrgArgs {
    #[command(subcommand)]
    command: OrgCommand,
    /// Control-plane URL.
    #[arg(
        long,
        global = true,
        env = "MOLECULE_CP_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    cp: String,
    /// File holding the CP admin API token (default: $CP_ADMIN_API_TOKEN, then the token
    /// `molecule up` keeps in ./molecule-data).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum OrgCommand {
    /// Sign up an org; its tenant starts provisioning at once.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// List orgs and their tenants' state.
    List,
    /// Show one org with its boot events.
    Show { slug: String },
    /// Purge an org: its instances, its data, its credentials. Irreversible.
    Delete {
        slug: String,
        /// Required: the purge destroys the org's data.
        #[arg(long)]
        yes: bool,
    },
    /// Print the org's tenant admin token (audited).
    AdminToken { slug: String },
}

fn admin_token(args: &OrgArgs) -> anyhow::Result<Secret> {
    if let Some(path) = &args.token_file {
        return secret::read_file("CP_ADMIN_API_TOKEN", path)?.context("the token file is empty");
    }
    if let Some(token) = secret::from_env("CP_ADMIN_API_TOKEN")? {
        return Ok(token);
    }
    let local = molecule_cp::config::local_secret_path(
        std::path::Path::new("molecule-data"),
        "CP_ADMIN_API_TOKEN",
    );
    if local.exists() {
        return secret::read_file("CP_ADMIN_API_TOKEN", &local)?.context("the token file is empty");
    }
    bail!("no admin token: pass --token-file or set CP_ADMIN_API_TOKEN")
}

async fn call(
    args: &OrgArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = admin_token(args)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = format!("{}{path}", args.cp.trim_end_matches('/'));
    let mut req = client.request(method, &url).bearer_auth(token.expose());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the control plane at {}: {}",
            args.cp,
            molecule_shared::http::without_url(&e)
        )
    })?;
    let status = resp.status();
    let bytes = read_capped(resp, 4 << 20).await?;
    if !status.is_success() {
        bail!(
            "control plane answered {}: {}",
            status.as_u16(),
            upstream_error_text(&bytes)
        );
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&bytes)?)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

pub async fn run(args: OrgArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let out = match &args.command {
        OrgCommand::Create {
            slug,
            name,
            plan,
            owner,
        } => {
            let body = serde_json::json!({ "slug": slug, "name": name, "plan": plan, "owner_user_id": owner });
            let org = call(&args, Method::POST, "/cp/admin/orgs", Some(body)).await?;
            if !args.json {
                println!(
                    "created org {} ({}), status {}",
                    s(&org, "slug"),
                    s(&org, "id"),
                    s(&org, "status")
                );
            }
            org
        }
        OrgCommand::List => {
            let list = call(&args, Method::GET, "/cp/admin/orgs", None).await?;
            if !args.json {
                println!(
                    "{:<24} {:<14} {:<10} {:<30} ID",
                    "SLUG", "STATUS", "INSTANCE", "BACKEND"
                );
                for org in list["orgs"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<14} {:<10} {:<30} {}",
                        s(org, "slug"),
                        s(org, "status"),
                        s(org, "instance_status"),
                        s(org, "backend"),
                        s(org, "id")
                    );
                }
            }
            list
        }
        OrgCommand::Show { slug } => {
            let org = call(&args, Method::GET, &format!("/cp/admin/orgs/{slug}"), None).await?;
            if !args.json {
                println!(
                    "{} ({}): {}, instance {}",
                    s(&org, "slug"),
                    s(&org, "id"),
                    s(&org, "status"),
                    s(&org, "instance_status")
                );
                for e in org["boot_events"].as_array().into_iter().flatten() {
                    println!(
                        "  {} {:<10} {:<8} {}",
                        s(e, "at"),
                        s(e, "stage"),
                        s(e, "status"),
                        s(e, "detail")
                    );
                }
            }
            org
        }
        OrgCommand::Delete { slug, yes } => {
            if !yes {
                bail!("deleting {slug} destroys its instances and data; pass --yes to confirm");
            }
            let body = serde_json::json!({ "confirm": slug });
            let result = call(
                &args,
                Method::DELETE,
                &format!("/cp/admin/tenants/{slug}"),
                Some(body),
            )
            .await?;
            if !args.json {
                println!("org {slug} purged");
            }
            result
        }
        OrgCommand::AdminToken { slug } => {
            let result = call(
                &args,
                Method::GET,
                &format!("/cp/admin/orgs/{slug}/admin-token"),
                None,
            )
            .await?;
            if !args.json {
                println!("{}", s(&result, "admin_token"));
            }
            result
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

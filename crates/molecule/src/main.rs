//! `molecule`: one binary for every part of the system.

mod bench;
mod org_cli;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "molecule",
    version,
    about = "Molecule: control plane and tenant platform for AI agent teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    Cp {
        #[command(subcommand)]
        command: ServeOnly,
    },
    /// Run a tenant platform server (one per org).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Run the edge router: `<slug>.<base-domain>` to each org's tenant.
    Router {
        #[command(subcommand)]
        command: RouterCommand,
    },
    /// Run the reference workspace agent.
    Agent(InstanceArgs),
    /// Run a whole local SaaS: control plane and local tenants, on loopback.
    Up(up::UpArgs),
    /// Manage orgs through the control plane's admin API.
    Org(org_cli::OrgArgs),
    /// Measure a running system (signup latency, memory).
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum ServeOnly {
    /// Serve the control-plane API and run its reconciler.
    Serve {
        #[arg(long, env = "MOLECULE_CP_LISTEN", default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Where the SQLite database (by default) and local instances live.
        #[arg(long, env = "MOLECULE_DATA_DIR", default_value = "molecule-data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RouterCommand {
    /// Route `<slug>.<base-domain>` requests to the org's tenant, looked up through the CP.
    Serve(molecule_router::RouterArgs),
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Serve the tenant platform.
    Serve(TenantServeArgs),
}

#[derive(clap::Args)]
struct TenantServeArgs {
    /// Listen address; default 0.0.0.0:$PORT, or 127.0.0.1:8080 without PORT.
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    instance: InstanceFlags,
}

#[derive(clap::Args)]
struct InstanceArgs {
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    #[command(flatten)]
    instance: InstanceFlags,
}

/// Flags the local provider passes to the instances it runs.
#[derive(clap::Args)]
struct InstanceFlags {
    /// With a listen port of 0: try this port first (the one the instance had before).
    #[arg(long)]
    prefer_port: Option<u16>,
    /// Hold this pidfile locked while running, and publish the bound address in it.
    #[arg(long)]
    pidfile: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    molecule_shared::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain names what failed; none of our errors carries a secret value.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        molecule_shared::server::shutdown_signal().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Cp {
            command: ServeOnly::Serve { listen, data_dir },
        } => {
            let config = molecule_cp::config::CpConfig::from_env(listen, data_dir)?;
            let binary = std::env::current_exe().context("cannot locate the molecule binary")?;
            let provider = molecule_cp::startup::provider_for(&config, binary).await?;
            let app =
                molecule_cp::startup::Application::build(config, provider, shutdown_on_signal())
                    .await?;
            app.run_until_stopped().await;
            Ok(())
        }
        Command::Tenant {
            command: TenantCommand::Serve(args),
        } => {
            // EC2: trade the single-use bootstrap token for the tenant's credentials first.
            if let Some(values) = molecule_tenant::bootstrap::resolve_from_env().await? {
                molecule_tenant::bootstrap::apply(&values);
            }
            let config = molecule_tenant::config::TenantConfig::from_env(
                args.listen,
                args.instance.prefer_port,
                args.instance.pidfile,
            )?;
            molecule_tenant::startup::run(config, shutdown_on_signal()).await
        }
        Command::Router {
            command: RouterCommand::Serve(args),
        } => {
            let router =
                molecule_router::Router::build(args.into_config()?, shutdown_on_signal()).await?;
            router.run_until_stopped().await;
            Ok(())
        }
        Command::Agent(args) => {
            let config = molecule_agent::AgentConfig::from_env(
                args.listen,
                args.instance.prefer_port,
                args.instance.pidfile,
            )?;
            molecule_agent::run(config, shutdown_on_signal()).await
        }
        Command::Up(args) => up::run(args, shutdown_on_signal()).await,
        Command::Org(args) => org_cli::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

//! The `entra-sync-simulator` binary: serves the Microsoft + CIPP simulator until killed (for the demo and benchmarks).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use entra_sync_simulator::{Simulator, SimulatorConfig};

/// Simulates the Microsoft identity platform, Microsoft Graph and CIPP for entra-sync.
#[derive(Debug, Parser)]
#[command(name = "entra-sync-simulator", version)]
struct Args {
    /// Seed for the generated data.
    #[arg(long, env = "SIMULATOR_SEED", default_value_t = 42)]
    seed: u64,
    /// Number of managed customer tenants.
    #[arg(long, env = "SIMULATOR_TENANTS", default_value_t = 20)]
    tenants: usize,
    /// Total users across tenants.
    #[arg(long, env = "SIMULATOR_USERS", default_value_t = 5_000)]
    users: usize,
    /// Address to listen on.
    #[arg(long, env = "SIMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, env = "SIMULATOR_APP_CLIENT_ID")]
    app_client_id: Option<String>,
    #[arg(long, env = "SIMULATOR_APP_CLIENT_SECRET")]
    app_client_secret: Option<String>,
    #[arg(long, env = "SIMULATOR_CIPP_CLIENT_ID")]
    cipp_client_id: Option<String>,
    #[arg(long, env = "SIMULATOR_CIPP_CLIENT_SECRET")]
    cipp_client_secret: Option<String>,
    #[arg(long, env = "SIMULATOR_CIPP_API_TOKEN")]
    cipp_api_token: Option<String>,
    #[arg(long, env = "SIMULATOR_PARTNER_TENANT_ID")]
    partner_tenant_id: Option<String>,
    /// Draw tenant sizes log-normally with this median (benchmarks); default: the uneven spread
    /// described in the crate documentation.
    #[arg(long, env = "SIMULATOR_SIZE_MEDIAN")]
    size_median: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let defaults = SimulatorConfig::default();
    let config = SimulatorConfig {
        seed: args.seed,
        tenants: args.tenants,
        users: args.users,
        listen: Some(args.listen),
        app_client_id: args.app_client_id.unwrap_or(defaults.app_client_id),
        app_client_secret: args.app_client_secret.unwrap_or(defaults.app_client_secret),
        cipp_client_id: args.cipp_client_id.unwrap_or(defaults.cipp_client_id),
        cipp_client_secret: args
            .cipp_client_secret
            .unwrap_or(defaults.cipp_client_secret),
        cipp_api_token: args.cipp_api_token.unwrap_or(defaults.cipp_api_token),
        partner_tenant_id: args.partner_tenant_id.unwrap_or(defaults.partner_tenant_id),
        size_median: args.size_median,
    };
    let simulator = Simulator::start(config).await.context("start simulator")?;
    println!("simulator listening on {}", simulator.base_url());
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    drop(simulator);
    Ok(())
}

//! Operator subcommands over the HTTP API: start a sync and follow it to the end, list and
//! show runs, cancel, work the review queue, and create PSA tenants, users and keys. They go
//! through the API rather than the database so access control and audit apply to them too.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api_client::ApiClient;

/// Where the API is and whose key to use.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the API.
    #[arg(
        long,
        global = true,
        env = "ENTRA_SYNC_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api_url: String,
    /// An API key (for `create-tenant` and `create-user`, the platform master key).
    #[arg(
        long,
        global = true,
        env = "ENTRA_SYNC_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum OpsCommand {
    /// Sync all mapped tenants, or one client's, and follow the run until it ends.
    Sync {
        #[arg(long, conflicts_with = "client")]
        all: bool,
        /// Sync only the tenants mapped to this client.
        #[arg(long)]
        client: Option<String>,
        /// Return as soon as the run is started.
        #[arg(long)]
        no_follow: bool,
    },
    /// List recent runs, newest first.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one run with its tenant results.
    Run { run_id: String },
    /// Cancel a running run.
    Cancel { run_id: String },
    /// The review queue.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// Create a PSA tenant (master key).
    CreateTenant { name: String },
    /// Create a PSA user and print its API key once (master key).
    CreateUser {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// `internal` or `client`.
        #[arg(long, default_value = "internal")]
        user_type: String,
        /// Repeat for each permission, e.g. `--permission system_settings.read`.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReviewCommand {
    /// List review items.
    List {
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Resolve one item: link to an existing contact, create a new one, or dismiss.
    Resolve {
        item_id: String,
        #[arg(long, conflicts_with_all = ["create_new", "dismiss"])]
        link: Option<String>,
        /// Allow linking a contact of another client than the mapped one.
        #[arg(long, requires = "link")]
        allow_other_client: bool,
        #[arg(long, conflicts_with = "dismiss")]
        create_new: bool,
        /// Dismiss with this note.
        #[arg(long)]
        dismiss: Option<String>,
    },
}

pub async fn run(api: &ApiArgs, command: &OpsCommand) -> Result<()> {
    let key = api
        .api_key
        .as_deref()
        .context("--api-key (or ENTRA_SYNC_API_KEY) is needed for this command")?;
    let client = ApiClient::new(&api.api_url, key)?;
    match command {
        OpsCommand::Sync {
            all,
            client: client_id,
            no_follow,
        } => {
            let body = match (all, client_id) {
                (_, Some(client_id)) => json!({"scope": "client", "client_id": client_id}),
                (true, None) => json!({"scope": "all"}),
                (false, None) => bail!("say --all or --client <client_id>"),
            };
            let started = client.post("/api/v1/integrations/entra/sync", body).await?;
            let run_id = started["run_id"]
                .as_str()
                .context("the API returned no run_id")?
                .to_owned();
            if started["deduplicated"] == true {
                println!("a run of that scope is already running: {run_id}");
            } else {
                println!("started run {run_id}");
            }
            if !no_follow {
                let run = follow(&client, &run_id).await?;
                print_run(&run);
            }
        }
        OpsCommand::Runs { limit } => {
            let runs = client
                .get(&format!(
                    "/api/v1/integrations/entra/sync/runs?limit={limit}"
                ))
                .await?;
            println!(
                "{:<38} {:<9} {:<9} {:<10} {:<26} totals",
                "run", "kind", "trigger", "status", "started"
            );
            for run in items(&runs) {
                println!(
                    "{:<38} {:<9} {:<9} {:<10} {:<26} created={} linked={} queued={}",
                    text(&run["run_id"]),
                    text(&run["kind"]),
                    text(&run["trigger"]),
                    text(&run["status"]),
                    text(&run["started_at"]),
                    run["totals"]["created"].as_u64().unwrap_or(0),
                    run["totals"]["linked"].as_u64().unwrap_or(0),
                    run["totals"]["queued"].as_u64().unwrap_or(0),
                );
            }
        }
        OpsCommand::Run { run_id } => {
            let run = client
                .get(&format!("/api/v1/integrations/entra/sync/runs/{run_id}"))
                .await?;
            print_run(&run);
        }
        OpsCommand::Cancel { run_id } => {
            client
                .post(
                    &format!("/api/v1/integrations/entra/sync/runs/{run_id}/cancel"),
                    json!({}),
                )
                .await?;
            println!("cancellation requested for {run_id}");
        }
        OpsCommand::Review(ReviewCommand::List { status, limit }) => {
            let queue = client
                .get(&format!(
                    "/api/v1/integrations/entra/reconciliation-queue?status={status}&limit={limit}"
                ))
                .await?;
            println!("{:<38} {:<30} {:<36} name", "item", "reason", "email");
            for item in items(&queue) {
                println!(
                    "{:<38} {:<30} {:<36} {}",
                    text(&item["item_id"]),
                    text(&item["reason"]),
                    text(&item["email"]),
                    text(&item["display_name"])
                );
            }
        }
        OpsCommand::Review(ReviewCommand::Resolve {
            item_id,
            link,
            allow_other_client,
            create_new,
            dismiss,
        }) => {
            let body = match (link, create_new, dismiss) {
                (Some(contact_id), false, None) => {
                    json!({"action": "link_existing", "contact_id": contact_id, "allow_other_client": allow_other_client})
                }
                (None, true, None) => json!({"action": "create_new"}),
                (None, false, Some(note)) => json!({"action": "dismiss", "note": note}),
                _ => bail!("say one of --link <contact_id>, --create-new or --dismiss <note>"),
            };
            let resolved = client
                .post(
                    &format!("/api/v1/integrations/entra/reconciliation-queue/{item_id}/resolve"),
                    body,
                )
                .await?;
            println!("item {item_id} is now {}", text(&resolved["status"]));
        }
        OpsCommand::CreateTenant { name } => {
            let tenant = client
                .post("/api/v1/platform/tenants", json!({"name": name}))
                .await?;
            println!(
                "tenant {} ({})",
                text(&tenant["tenant_id"]),
                text(&tenant["name"])
            );
        }
        OpsCommand::CreateUser {
            tenant,
            email,
            user_type,
            permissions,
        } => {
            let user = client
                .post(
                    &format!("/api/v1/platform/tenants/{tenant}/users"),
                    json!({"email": email, "user_type": user_type, "permissions": permissions}),
                )
                .await?;
            println!(
                "user {} created; its API key (shown once): {}",
                text(&user["user_id"]),
                text(&user["api_key"])
            );
        }
    }
    Ok(())
}

/// Follows a run, printing a progress line whenever it changes, until it ends.
async fn follow(client: &ApiClient, run_id: &str) -> Result<Value> {
    let mut last = String::new();
    client
        .wait_for_run(run_id, Duration::from_secs(24 * 60 * 60), |run| {
            let line = progress_line(run);
            if line != last {
                println!("{line}");
                last = line;
            }
        })
        .await
}

pub fn progress_line(run: &Value) -> String {
    let tenants = run["tenants"].as_array().map_or(&[][..], Vec::as_slice);
    let finished = tenants
        .iter()
        .filter(|tenant| tenant["status"] != "running")
        .count();
    let seen: u64 = tenants
        .iter()
        .map(|tenant| tenant["counts"]["seen"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "{}: {finished}/{} tenants finished, {seen} users seen",
        text(&run["status"]),
        tenants.len()
    )
}

fn print_run(run: &Value) {
    println!(
        "run {} ({} {}, {}) {} — started {}, finished {}",
        text(&run["run_id"]),
        text(&run["kind"]),
        text(&run["trigger"]),
        text(&run["scope"]),
        text(&run["status"]),
        text(&run["started_at"]),
        text(&run["finished_at"])
    );
    for tenant in items_of(&run["tenants"]) {
        let counts = &tenant["counts"];
        println!(
            "  {:<38} {:<18} {:<5} seen={} created={} linked={} updated={} inactivated={} queued={} skipped={}",
            text(&tenant["managed_tenant_id"]),
            text(&tenant["status"]),
            text(&tenant["mode"]),
            counts["seen"].as_u64().unwrap_or(0),
            counts["created"].as_u64().unwrap_or(0),
            counts["linked"].as_u64().unwrap_or(0),
            counts["updated"].as_u64().unwrap_or(0),
            counts["inactivated"].as_u64().unwrap_or(0),
            counts["queued"].as_u64().unwrap_or(0),
            counts["skipped"]
        );
        if let Some(message) = tenant["error"]["message"].as_str() {
            println!("      error: {message}");
            if let Some(remediation) = tenant["error"]["remediation"].as_str() {
                println!("      fix: {remediation}");
            }
        }
    }
}

fn items(list: &Value) -> &[Value] {
    items_of(&list["items"])
}

fn items_of(value: &Value) -> &[Value] {
    value.as_array().map_or(&[][..], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_finished_tenants_and_seen_users() {
        let run = json!({"status": "running", "tenants": [
            {"status": "completed", "counts": {"seen": 10}},
            {"status": "running", "counts": {"seen": 5}},
        ]});
        assert_eq!(
            progress_line(&run),
            "running: 1/2 tenants finished, 15 users seen"
        );
    }
}

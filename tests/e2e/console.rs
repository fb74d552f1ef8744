//! The web console in a real headless Chromium against the whole stack: the setup wizard for
//! CIPP and for a direct connection (through the simulator's Microsoft sign-in), "Sync All
//! Tenants Now" watched live until the run ends, a review item resolved through the contact
//! picker, a settings validation error, sign-out, what a read-only and a client-portal user
//! see, and an OAuth callback opened in a second browser. Every page visited is checked for
//! JavaScript errors, failed requests and unlabelled controls, and screenshotted under
//! `target/test-artifacts/console/`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use entra_sync::demo::{seed_psa_tenant, ApiClient};
use entra_sync_simulator::{ConsentFault, FaultKind, FaultSpec, SimulatorConfig};
use fantoccini::Locator;
use serde_json::{json, Value};

use crate::browser::{Browser, Driver};
use crate::harness::Stack;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn simulator_config() -> SimulatorConfig {
    SimulatorConfig {
        tenants: 5,
        users: 80,
        ..SimulatorConfig::default()
    }
}

/// Creates a user of the PSA tenant and returns its API key.
async fn create_user(
    master: &ApiClient,
    tenant_id: &str,
    email: &str,
    user_type: &str,
    permissions: &[&str],
) -> Result<String> {
    let user = master
        .post(
            &format!("/api/v1/platform/tenants/{tenant_id}/users"),
            json!({"email": email, "user_type": user_type, "permissions": permissions}),
        )
        .await?;
    Ok(user["api_key"].as_str().context("api_key")?.to_owned())
}

/// Waits on a run's page until the live fragment reports an ended run; returns its status.
async fn wait_for_run_end(browser: &Browser) -> Result<String> {
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    loop {
        if let Ok(element) = browser.client.find(Locator::Css("[data-run-status]")).await {
            if let Ok(Some(status)) = element.attr("data-run-status").await {
                if status != "running" {
                    return Ok(status);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the run did not end within {RUN_TIMEOUT:?}: {}",
                browser.text().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// No action but signing out: what a user without `system_settings.update` sees (buttons of
/// read-only GET forms, such as a filter, change nothing and stay).
async fn assert_only_sign_out(browser: &Browser, page: &str) -> Result<()> {
    let mut labels = Vec::new();
    for button in browser
        .client
        .find_all(Locator::Css(
            "form:not([method=get]) button, button:not(form button)",
        ))
        .await?
    {
        labels.push(button.text().await?);
    }
    assert_eq!(labels, vec!["Sign out".to_owned()], "buttons on {page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cipp_wizard_sync_review_settings_and_permissions() -> Result<()> {
    let config = simulator_config();
    let stack = Stack::start(config.clone()).await?;
    let api = stack.api_url.clone();
    let master = ApiClient::new(&api, &stack.master_key)?;
    let (tenant_id, admin_key, _) = seed_psa_tenant(&master, &config, |_| {}).await?;
    let reader_key = create_user(
        &master,
        &tenant_id,
        "reader@demo-msp.example",
        "internal",
        &["system_settings.read", "client.read", "contact.read"],
    )
    .await?;
    let portal_key = create_user(
        &master,
        &tenant_id,
        "portal@customer.example",
        "client",
        &["system_settings.read", "client.read", "contact.read"],
    )
    .await?;
    let cipp_url = stack.simulator.cipp_base_url();
    let admin_api = master.with_key(&admin_key);
    // An ambiguous match for the review queue: two contacts share one user's address in the
    // client the first tenant auto-maps to, so the sync queues that user.
    let msp = entra_sync_simulator::generate(&config);
    let (tenant, ambiguous) = msp
        .tenants
        .iter()
        .enumerate()
        .filter(|(index, _)| {
            entra_sync::demo::tenant_role(*index) == entra_sync::demo::TenantRole::AutoMatched
        })
        .flat_map(|(_, tenant)| tenant.users.iter().map(move |user| (tenant, user)))
        .find(|(_, user)| {
            user.account_enabled
                && !user.deleted
                && !user.user_type.eq_ignore_ascii_case("guest")
                && !user.user_principal_name.contains("#EXT#")
                && user.mail.is_some()
        })
        .context("an enabled member user with a mail address in an auto-matched tenant")?;
    let clients = admin_api.get("/api/v1/clients?limit=500").await?;
    let client_id = clients["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|client| client["name"] == tenant.display_name.as_str())
        .and_then(|client| client["client_id"].as_str())
        .context("the first tenant's client")?
        .to_owned();
    let address = ambiguous
        .mail
        .clone()
        .unwrap_or_else(|| ambiguous.user_principal_name.clone());
    for suffix in ["", " (old)"] {
        admin_api
            .post(
                "/api/v1/contacts",
                json!({"client_id": client_id, "full_name": format!("{}{suffix}", ambiguous.display_name), "email": address}),
            )
            .await?;
    }

    stack
        .run(async {
            let mut driver = Driver::start().await?;
            let browser = driver.browser().await?;

            // Sign-in, then the empty overview.
            browser.goto(&format!("{api}/console")).await?;
            browser
                .wait_for_text("Sign in to the entra-sync console", Duration::from_secs(10))
                .await?;
            browser.check_page("01-sign-in", false).await?;
            browser.sign_in(&api, &admin_key).await?;
            browser
                .wait_for_text("Nothing is connected yet", Duration::from_secs(10))
                .await?;
            // Nothing to sync yet: no sync button, but what to do instead.
            assert!(!browser.has_button("Sync All Tenants Now").await?);
            browser
                .wait_for_text(
                    "Connect Microsoft or CIPP in Setup",
                    Duration::from_secs(10),
                )
                .await?;
            browser.check_page("02-overview-empty", false).await?;

            // Connect: Test connection (nothing saved), then Save.
            browser.goto(&format!("{api}/console/setup")).await?;
            assert_sentences(&browser, "setup, nothing connected").await?;
            browser.check_page("03-setup", false).await?;
            browser.fill_labelled("CIPP base URL", &cipp_url).await?;
            browser.fill_labelled("API token", "wrong-token").await?;
            browser.press("Test connection").await?;
            browser
                .wait_for("#cipp-error", Duration::from_secs(30))
                .await?;
            browser
                .fill_labelled("API token", &config.cipp_api_token)
                .await?;
            browser.press("Test connection").await?;
            browser
                .wait_for_text("Connection works", Duration::from_secs(30))
                .await?;
            assert_eq!(
                stack
                    .count(
                        "SELECT count(*) FROM connections WHERE credentials_ciphertext IS NOT NULL"
                    )
                    .await?,
                0,
                "Test connection saved nothing"
            );
            browser.check_page("04-setup-tested", false).await?;
            browser.press("Save").await?;
            browser
                .wait_for_text("Connected to CIPP", Duration::from_secs(30))
                .await?;

            // Discover, with progress, then the tenants found.
            browser.press("Discover tenants").await?;
            browser
                .wait_for_text("Discovery finished", RUN_TIMEOUT)
                .await?;
            browser.check_page("05-setup-discovered", false).await?;
            browser.click("#continue-to-map").await?;
            browser
                .wait_for("tr[data-state]", Duration::from_secs(10))
                .await?;
            let states: Vec<String> = {
                let mut states = Vec::new();
                for row in browser
                    .client
                    .find_all(Locator::Css("tr[data-state]"))
                    .await?
                {
                    states.push(row.attr("data-state").await?.unwrap_or_default());
                }
                states
            };
            assert!(
                states.iter().any(|state| state == "auto_matched"),
                "{states:?}"
            );
            assert!(
                states.iter().any(|state| state == "needs_review"),
                "{states:?}"
            );
            browser.check_page("06-setup-map", false).await?;

            // One Confirm maps the auto-matched tenants and starts the initial sync, shown live.
            browser.press("Confirm").await?;
            browser
                .wait_for("[data-run-status]", Duration::from_secs(20))
                .await?;
            let status = wait_for_run_end(&browser).await?;
            assert!(
                status == "completed" || status == "partial",
                "initial sync {status}"
            );
            browser.check_page("07-run-initial", false).await?;

            // Sync All Tenants Now, watched until the run ends.
            browser.goto(&format!("{api}/console")).await?;
            browser
                .wait_for_text("Sync All Tenants Now", Duration::from_secs(10))
                .await?;
            browser.check_page("08-overview", false).await?;
            // The same page in a narrow window (a phone or a side-by-side window).
            browser.client.set_window_size(420, 900).await?;
            browser.check_page("08b-overview-narrow", false).await?;
            let overflow = browser
                .client
                .execute(
                    "return document.documentElement.scrollWidth > window.innerWidth + 1;",
                    vec![],
                )
                .await?;
            assert_eq!(
                overflow,
                serde_json::Value::Bool(false),
                "the overview scrolls sideways"
            );
            browser.client.set_window_size(1280, 1000).await?;
            browser.press("Sync All Tenants Now").await?;
            browser
                .wait_for("[data-run-status]", Duration::from_secs(20))
                .await?;
            let status = wait_for_run_end(&browser).await?;
            assert!(
                status == "completed" || status == "partial",
                "manual sync {status}"
            );
            browser.check_page("09-run-manual", false).await?;
            browser.goto(&format!("{api}/console/runs")).await?;
            browser
                .wait_for_text("manual", Duration::from_secs(10))
                .await?;
            browser.check_page("10-runs", false).await?;

            // Resolve a review item through the server-side contact picker.
            browser.goto(&format!("{api}/console/review")).await?;
            let item_email = browser
                .wait_for("article.item h2 small", Duration::from_secs(10))
                .await?
                .text()
                .await?;
            assert!(
                item_email.contains('@'),
                "review item without an email: {item_email:?}"
            );
            browser.check_page("11-review", false).await?;
            let search = browser
                .client
                .find(Locator::Css("article.item input[type=search]"))
                .await?;
            search.send_keys(&item_email).await?;
            browser
                .wait_for(".picker-results button", Duration::from_secs(10))
                .await?;
            browser.check_page("12-review-picker", false).await?;
            browser.click(".picker-results button").await?;
            browser
                .wait_for_text("Saved. The next sync applies it.", Duration::from_secs(10))
                .await?;
            let resolved = admin_api
                .get("/api/v1/integrations/entra/reconciliation-queue?status=resolved")
                .await?;
            let resolution = &resolved["items"][0]["resolution"];
            assert_eq!(resolution["action"], "link_existing", "{resolved}");

            // A setting out of range is refused beside its field.
            browser.goto(&format!("{api}/console/settings")).await?;
            browser.check_page("13-settings", false).await?;
            browser
                .fill_labelled("Every (minutes, 15 to 43200)", "5")
                .await?;
            browser.press("Save settings").await?;
            browser
                .wait_for("#interval_minutes-error", Duration::from_secs(10))
                .await?;
            browser.check_page("14-settings-error", true).await?;
            browser
                .fill_labelled("Every (minutes, 15 to 43200)", "60")
                .await?;
            browser.click("#schedule_enabled").await?;
            browser.press("Save settings").await?;
            browser
                .wait_for_text(
                    "Saved. The recurring sync follows the new schedule.",
                    Duration::from_secs(10),
                )
                .await?;
            let settings = admin_api.get("/api/v1/integrations/entra/settings").await?;
            assert_eq!(settings["schedule"]["interval_seconds"], 3600);
            assert_eq!(settings["schedule"]["enabled"], true);

            // A per-tenant filter override.
            browser.click("#overrides-heading + p + ul a").await?;
            browser
                .wait_for_text("Filters for", Duration::from_secs(10))
                .await?;
            browser.check_page("14b-tenant-filters", false).await?;
            browser
                .client
                .find(Locator::Css("#licensed_only"))
                .await?
                .select_by_value("on")
                .await?;
            browser.press("Save tenant filters").await?;
            browser
                .wait_for_text(
                    "Saved. The next sync of this tenant",
                    Duration::from_secs(10),
                )
                .await?;
            let page_url = browser.client.current_url().await?;
            let managed_tenant_id = page_url
                .path_segments()
                .and_then(|mut segments| segments.nth(3))
                .context("managed tenant id in the URL")?
                .to_owned();
            let saved = admin_api
                .get(&format!(
                    "/api/v1/integrations/entra/managed-tenants/{managed_tenant_id}/filters"
                ))
                .await?;
            assert_eq!(saved["licensed_only"], true, "{saved}");
            assert!(saved["exclude_guests"].is_null(), "{saved}");

            // Clients, contacts and one contact's history.
            browser.goto(&format!("{api}/console/clients")).await?;
            browser
                .wait_for_text("Sync now", Duration::from_secs(10))
                .await?;
            browser.check_page("15-clients", false).await?;
            browser.goto(&format!("{api}/console/contacts")).await?;
            browser.check_page("16-contacts", false).await?;
            browser.click("table tbody th a").await?;
            browser
                .wait_for_text("What the sync changed", Duration::from_secs(10))
                .await?;
            browser.check_page("17-contact-history", false).await?;
            browser.goto(&format!("{api}/console/disconnect")).await?;
            browser
                .wait_for_text("Kept:", Duration::from_secs(10))
                .await?;
            browser.check_page("18-disconnect", false).await?;

            // Sign out: the session is gone.
            browser.goto(&format!("{api}/console")).await?;
            browser.press("Sign out").await?;
            browser
                .wait_for_text("You are signed out", Duration::from_secs(10))
                .await?;
            browser.goto(&format!("{api}/console/runs")).await?;
            browser
                .wait_for_text("Sign in to the entra-sync console", Duration::from_secs(10))
                .await?;
            assert_eq!(
                stack.count("SELECT count(*) FROM console_sessions").await?,
                0
            );
            browser.close().await?;

            // A read-only user sees no action buttons.
            let reader = driver.browser().await?;
            reader.sign_in(&api, &reader_key).await?;
            reader
                .wait_for_text("Overview", Duration::from_secs(10))
                .await?;
            assert!(!reader.has_button("Sync All Tenants Now").await?);
            assert_only_sign_out(&reader, "overview").await?;
            // The schedule saved above shows on the overview with its next firing.
            reader
                .wait_for_text("every 1 hour; next around", Duration::from_secs(10))
                .await?;
            reader.check_page("19-overview-read-only", false).await?;
            for page in ["setup", "review", "runs", "clients"] {
                reader.goto(&format!("{api}/console/{page}")).await?;
                reader.wait_for("h1", Duration::from_secs(10)).await?;
                assert_only_sign_out(&reader, page).await?;
            }
            reader.close().await?;

            // A client-portal user is refused.
            let portal = driver.browser().await?;
            portal.sign_in(&api, &portal_key).await?;
            portal
                .wait_for_text(
                    "Client-portal users cannot use this console",
                    Duration::from_secs(10),
                )
                .await?;
            portal.check_page("20-client-portal-refused", true).await?;
            portal.close().await?;

            // A failed Microsoft sign-in lands on the overview with the error in words and
            // what to do about it.
            let admin = driver.browser().await?;
            admin.sign_in(&api, &admin_key).await?;
            admin
                .wait_for_text("Sync All Tenants Now", Duration::from_secs(10))
                .await?;
            admin
                .goto(&format!(
                    "{api}/console?entra_status=failure&error=access_denied"
                ))
                .await?;
            let text = admin
                .wait_for_text(
                    "Microsoft sign-in was cancelled or consent was not given.",
                    Duration::from_secs(10),
                )
                .await?;
            assert!(
                text.contains("The Microsoft connection did not complete")
                    && text.contains("What to do:")
                    && text.contains("Start again with Connect to Microsoft"),
                "{text}"
            );
            admin.check_page("21-callback-failure", false).await?;

            // With the `entra-integration-ui` flag off the Entra pages are not shown: no
            // navigation to them, no sync button, and each answers that the integration is
            // not switched on.
            master
                .post(
                    "/api/v1/platform-feature-flags/entra-integration-ui/tenants",
                    json!({"__action": "remove", "tenantId": tenant_id}),
                )
                .await?;
            admin.goto(&format!("{api}/console")).await?;
            admin
                .wait_for_text(
                    "The Entra integration is not switched on",
                    Duration::from_secs(10),
                )
                .await?;
            assert!(!admin.has_button("Sync All Tenants Now").await?);
            let entra_links = admin
                .client
                .find_all(Locator::Css(
                    "a[href='/console/runs'], a[href='/console/review'], a[href='/console/setup']",
                ))
                .await?;
            assert!(
                entra_links.is_empty(),
                "links to Entra pages with the flag off"
            );
            admin.check_page("22-overview-flag-off", true).await?;
            for page in ["setup", "runs", "review", "settings"] {
                admin.goto(&format!("{api}/console/{page}")).await?;
                admin
                    .wait_for_text(
                        "The Entra integration is not switched on",
                        Duration::from_secs(10),
                    )
                    .await?;
            }
            admin.close().await?;
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_direct_connection_belongs_to_the_browser_that_started_it() -> Result<()> {
    let config = SimulatorConfig {
        tenants: 3,
        users: 30,
        ..SimulatorConfig::default()
    };
    let stack = Stack::start_with_api(config.clone(), |simulator, api_url| {
        let simulator_config = simulator.config();
        vec![
            (
                "MICROSOFT_CLIENT_ID".to_owned(),
                simulator_config.app_client_id.clone(),
            ),
            (
                "MICROSOFT_CLIENT_SECRET".to_owned(),
                simulator_config.app_client_secret.clone(),
            ),
            (
                "MICROSOFT_TENANT_ID".to_owned(),
                simulator_config.partner_tenant_id.clone(),
            ),
            (
                "MICROSOFT_OAUTH_CALLBACK_URL".to_owned(),
                format!("{api_url}/auth/oauth2/microsoft/callback"),
            ),
        ]
    })
    .await?;
    let api = stack.api_url.clone();
    let master = ApiClient::new(&api, &stack.master_key)?;
    let (_, admin_key, _) = seed_psa_tenant(&master, &config, |_| {}).await?;
    let partner_id = config.partner_tenant_id.clone();

    stack
        .run(async {
            let mut driver = Driver::start().await?;
            let first = driver.browser().await?;
            first.sign_in(&api, &admin_key).await?;
            first
                .wait_for_text("Overview", Duration::from_secs(10))
                .await?;

            // A flow started in the first browser, whose callback is opened in a second one.
            first.goto(&format!("{api}/console/setup")).await?;
            let csrf = first
                .client
                .find(Locator::Css(
                    "form[action='/console/setup/direct'] input[name=csrf]",
                ))
                .await?
                .attr("value")
                .await?
                .context("csrf")?;
            let cookie = first
                .client
                .get_named_cookie("entra_sync_console")
                .await?
                .value()
                .to_owned();
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let started = http
                .post(format!("{api}/console/setup/direct"))
                .header("cookie", format!("entra_sync_console={cookie}"))
                .form(&[("csrf", csrf.as_str())])
                .send()
                .await?;
            assert_eq!(started.status().as_u16(), 303);

            // A state-changing request without the session's CSRF token changes nothing.
            let forged = http
                .post(format!("{api}/console/sync"))
                .header("cookie", format!("entra_sync_console={cookie}"))
                .form(&[("csrf", "not-the-token")])
                .send()
                .await?;
            assert_eq!(forged.status().as_u16(), 403);
            assert_eq!(stack.count("SELECT count(*) FROM runs").await?, 0);
            // The session cookie's attributes and the page's security policy.
            let signed_in = http
                .post(format!("{api}/console/sign-in"))
                .form(&[("api_key", admin_key.as_str())])
                .send()
                .await?;
            let set_cookie = signed_in.headers()["set-cookie"].to_str()?.to_owned();
            assert!(
                set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
                "{set_cookie}"
            );
            let page = http
                .get(format!("{api}/console"))
                .header("cookie", format!("entra_sync_console={cookie}"))
                .send()
                .await?;
            let policy = page.headers()["content-security-policy"]
                .to_str()?
                .to_owned();
            assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"));
            let authorize = started.headers()["location"].to_str()?.to_owned();
            let consented = http.get(&authorize).send().await?;
            let callback = consented.headers()["location"].to_str()?.to_owned();
            assert!(
                callback.contains("/auth/oauth2/microsoft/callback?"),
                "{callback}"
            );
            let second = driver.browser().await?;
            second.goto(&callback).await?;
            second
                .wait_for_text(
                    "This sign-in belongs to another browser",
                    Duration::from_secs(10),
                )
                .await?;
            second.check_page("21-callback-other-browser", true).await?;
            assert_eq!(
                stack
                    .count("SELECT count(*) FROM oauth_states WHERE used_at IS NOT NULL")
                    .await?,
                0,
                "the refused callback used the state up"
            );
            second.close().await?;
            // The state is still good for the browser that started the flow.
            first.goto(&callback).await?;
            first
                .wait_for_text("Connected", Duration::from_secs(30))
                .await?;
            first.check_page("22-overview-connected", false).await?;

            // The whole wizard for a direct connection: Connect to Microsoft (the simulator's
            // sign-in consents and redirects back), Discover, Map, Initial sync.
            first.goto(&format!("{api}/console/setup")).await?;
            first.press("Connect to Microsoft").await?;
            let text = first
                .wait_for_text("Connected", Duration::from_secs(30))
                .await?;
            assert!(
                text.contains(&partner_id),
                "the partner tenant id is shown: {text}"
            );
            assert!(first
                .client
                .current_url()
                .await?
                .as_str()
                .contains("entra_status=success"));
            first.goto(&format!("{api}/console/setup")).await?;
            first.press("Discover tenants").await?;
            first
                .wait_for_text("Discovery finished", RUN_TIMEOUT)
                .await?;
            first.click("#continue-to-map").await?;
            first
                .wait_for("tr[data-state]", Duration::from_secs(10))
                .await?;
            first.press("Confirm").await?;
            first
                .wait_for("[data-run-status]", Duration::from_secs(20))
                .await?;
            let status = wait_for_run_end(&first).await?;
            assert!(
                status == "completed" || status == "partial",
                "direct initial sync {status}"
            );
            first.check_page("23-run-direct-initial", false).await?;
            first.close().await?;
            Ok(())
        })
        .await
}

/// The run id of the run page the browser shows (`/console/runs/{run_id}`).
async fn run_id_in_url(browser: &Browser) -> Result<String> {
    let url = browser.client.current_url().await?;
    let segments: Vec<String> = url
        .path_segments()
        .map(|segments| segments.map(str::to_owned).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        [console, runs, run_id] if console == "console" && runs == "runs" => Ok(run_id.clone()),
        _ => bail!("not a run page: {url}"),
    }
}

/// Waits until the browser's URL contains `needle` (a navigation a click started has landed).
async fn wait_for_url(browser: &Browser, needle: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.client.current_url().await?;
        if url.as_str().contains(needle) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the browser did not reach a URL with {needle:?}; it shows {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a review item's status, read through the API, is `status`; returns the item.
async fn wait_for_review_status(admin: &ApiClient, item_id: &str, status: &str) -> Result<Value> {
    crate::workflow_support::eventually(
        &format!("review item {item_id} {status}"),
        Duration::from_secs(10),
        || async move {
            let items = admin
                .get(&format!(
                    "/api/v1/integrations/entra/reconciliation-queue?status={status}&limit=100"
                ))
                .await?;
            Ok(items["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|item| item["item_id"] == item_id && item["status"] == status)
                .cloned())
        },
    )
    .await
}

/// Clicks the button labelled exactly `label` inside the review item `item_id`.
async fn press_in_item(browser: &Browser, item_id: &str, label: &str) -> Result<()> {
    let xpath = format!(
        "//article[@aria-labelledby='item-{item_id}']//button[normalize-space(.)='{label}']"
    );
    browser
        .client
        .find(Locator::XPath(&xpath))
        .await
        .with_context(|| format!("no button {label:?} in review item {item_id}"))?
        .click()
        .await?;
    Ok(())
}

/// The ids of the review items the page lists, in order.
async fn listed_review_items(browser: &Browser) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for article in browser
        .client
        .find_all(Locator::Css("article.item"))
        .await?
    {
        let labelled_by = article.attr("aria-labelledby").await?.unwrap_or_default();
        ids.push(
            labelled_by
                .strip_prefix("item-")
                .unwrap_or(&labelled_by)
                .to_owned(),
        );
    }
    Ok(ids)
}

/// Chooses `value` in the select `css`, then submits the review filters.
async fn filter_review(browser: &Browser, css: &str, value: &str) -> Result<()> {
    browser
        .client
        .find(Locator::Css(css))
        .await?
        .select_by_value(value)
        .await?;
    let before = browser.client.current_url().await?;
    browser.press("Filter").await?;
    let name = if css == "#filter-reason" {
        "reason"
    } else {
        "client_id"
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let url = browser.client.current_url().await?;
        let chosen = url
            .query_pairs()
            .any(|(key, chosen)| key == name && chosen == value);
        if url != before && chosen {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("filtering by {name}={value:?} did not load; the browser shows {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_for("h1", Duration::from_secs(10)).await?;
    Ok(())
}

/// The page does not scroll sideways in the current window.
async fn assert_no_sideways_scroll(browser: &Browser, page: &str) -> Result<()> {
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await?;
    assert_eq!(
        overflow,
        serde_json::Value::Bool(false),
        "{page} scrolls sideways in a narrow window"
    );
    Ok(())
}

/// Every paragraph of running text on the page (not a form row, not a lone link) ends like a
/// sentence and has no stray space before punctuation.
const UNPUNCTUATED: &str = r#"
const bad = [];
for (const p of document.querySelectorAll('main p')) {
  if (p.querySelector('input, select, textarea, button')) continue;
  const text = p.innerText.replace(/\s+/g, ' ').trim();
  if (text === '') continue;
  const links = p.querySelectorAll('a');
  if (links.length === 1 && links[0].innerText.trim() === text) continue;
  if (!/[.!?:…”]$/.test(text) || / [.,;:]/.test(text) || /\.\.(?!\.)/.test(text)) bad.push(text);
}
return bad;
"#;

async fn assert_sentences(browser: &Browser, page: &str) -> Result<()> {
    let bad = browser.client.execute(UNPUNCTUATED, vec![]).await?;
    assert_eq!(
        bad,
        serde_json::Value::Array(Vec::new()),
        "{page}: paragraphs that are not punctuated as sentences"
    );
    Ok(())
}

/// An enabled member user with a mail address, which the default filters sync.
fn syncable(user: &entra_sync_simulator::SimUser) -> bool {
    user.account_enabled
        && !user.deleted
        && !user.user_type.eq_ignore_ascii_case("guest")
        && !user.user_principal_name.contains("#EXT#")
        && user.mail.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_review_actions_client_sync_held_inactivations_and_cancel() -> Result<()> {
    let config = SimulatorConfig {
        tenants: 3,
        users: 150,
        ..SimulatorConfig::default()
    };
    let stack = Stack::start(config).await?;
    let api = stack.api_url.clone();

    stack
        .run(async {
            // A connected, discovered and mapped PSA tenant (CIPP), one client per tenant.
            let prepared = crate::workflow_support::prepare(&stack).await?;
            let admin_api = &prepared.admin;
            let msp = stack.simulator.msp();
            let [first, second, third] = &msp.tenants[..] else {
                bail!("three simulated tenants expected");
            };
            let clients = admin_api.get("/api/v1/clients?limit=500").await?;
            let client_of = |name: &str| -> Result<String> {
                clients["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|client| client["name"] == name)
                    .and_then(|client| client["client_id"].as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("the client of {name}"))
            };
            let first_client = client_of(&first.display_name)?;
            let second_client = client_of(&second.display_name)?;
            let third_managed = prepared.managed[&third.tenant_id].clone();

            // Review items of two reasons in two clients: two contacts of the first client
            // share one of its users' address (`multiple_candidates`), and the only contact
            // with one of the second tenant's addresses belongs to the first client
            // (`candidate_in_other_client`). `prepare` already gave users 7 and 11 contacts.
            let fresh = |tenant: &entra_sync_simulator::CustomerTenant, skip: usize| {
                tenant
                    .users
                    .iter()
                    .enumerate()
                    .filter(|(index, user)| index % 150 != 7 && index % 150 != 11 && syncable(user))
                    .map(|(_, user)| user.clone())
                    .nth(skip)
            };
            let doubled = fresh(first, 0).context("a syncable user in the first tenant")?;
            let elsewhere = fresh(second, 0).context("a syncable user in the second tenant")?;
            for (name, user) in [
                (doubled.display_name.clone(), &doubled),
                (format!("{} (duplicate)", doubled.display_name), &doubled),
                (elsewhere.display_name.clone(), &elsewhere),
            ] {
                admin_api
                    .post(
                        "/api/v1/contacts",
                        json!({"client_id": first_client, "full_name": name, "email": user.mail}),
                    )
                    .await?;
            }
            let (initial, _) = crate::workflow_support::start_sync(admin_api).await?;
            let initial = crate::workflow_support::wait_finished(admin_api, &initial, RUN_TIMEOUT)
                .await?;
            assert_eq!(initial["status"], "completed", "{initial}");
            let open = admin_api
                .get("/api/v1/integrations/entra/reconciliation-queue?status=open&limit=100")
                .await?;
            let open_items = open["items"].as_array().cloned().unwrap_or_default();
            let item_of = |user: &entra_sync_simulator::SimUser| {
                open_items
                    .iter()
                    .find(|item| item["object_id"] == user.id.as_str())
                    .cloned()
            };
            let doubled_item = item_of(&doubled).context("the doubled user's review item")?;
            let elsewhere_item = item_of(&elsewhere).context("the other client's review item")?;
            assert_eq!(doubled_item["reason"], "multiple_candidates");
            assert_eq!(elsewhere_item["reason"], "candidate_in_other_client");
            let doubled_item_id = doubled_item["item_id"].as_str().context("item_id")?.to_owned();
            let elsewhere_item_id = elsewhere_item["item_id"].as_str().context("item_id")?.to_owned();

            let mut driver = Driver::start().await?;
            let browser = driver.browser().await?;
            browser.sign_in(&api, &prepared.admin_key).await?;
            browser
                .wait_for_text("Sync All Tenants Now", Duration::from_secs(10))
                .await?;

            // The wizard numbers its steps with a CSS counter, not in the heading text, and
            // its sentences are punctuated alike.
            browser.goto(&format!("{api}/console/setup")).await?;
            browser.wait_for("#connect-heading", Duration::from_secs(10)).await?;
            let headings = browser
                .client
                .execute(
                    "return [...document.querySelectorAll('.wizard section.step > h2')].map(h => \
                     [h.textContent.trim(), getComputedStyle(h, '::before').content]);",
                    vec![],
                )
                .await?;
            assert_eq!(
                headings,
                json!([
                    ["Connect", "counter(step) \". \""],
                    ["Discover", "counter(step) \". \""],
                    ["Map", "counter(step) \". \""],
                    ["Initial sync", "counter(step) \". \""]
                ]),
                "wizard step headings"
            );
            assert_sentences(&browser, "setup").await?;
            browser.check_page("30-setup-connected", false).await?;

            // The review queue, filtered by reason and by client.
            browser.goto(&format!("{api}/console/review")).await?;
            browser.wait_for("article.item", Duration::from_secs(10)).await?;
            let all_open = listed_review_items(&browser).await?;
            assert!(
                all_open.contains(&doubled_item_id) && all_open.contains(&elsewhere_item_id),
                "{all_open:?}"
            );
            assert_sentences(&browser, "review").await?;
            browser.check_page("31-review-open", false).await?;
            filter_review(&browser, "#filter-reason", "candidate_in_other_client").await?;
            let by_reason = listed_review_items(&browser).await?;
            assert!(by_reason.contains(&elsewhere_item_id), "{by_reason:?}");
            assert!(!by_reason.contains(&doubled_item_id), "{by_reason:?}");
            for reason in browser
                .client
                .find_all(Locator::Css("article.item dd.reason"))
                .await?
            {
                assert_eq!(
                    reason.attr("data-reason").await?.as_deref(),
                    Some("candidate_in_other_client")
                );
            }
            browser.check_page("32-review-by-reason", false).await?;
            filter_review(&browser, "#filter-reason", "").await?;
            filter_review(&browser, "#filter-client", &second_client).await?;
            let by_client = listed_review_items(&browser).await?;
            assert!(by_client.contains(&elsewhere_item_id), "{by_client:?}");
            assert!(!by_client.contains(&doubled_item_id), "{by_client:?}");
            for client in browser
                .client
                .find_all(Locator::Css("article.item dd.client"))
                .await?
            {
                assert_eq!(client.text().await?, second.display_name);
            }
            browser.check_page("33-review-by-client", false).await?;

            // Resolve one with create_new; dismiss the other with a note, then re-open it.
            browser.goto(&format!("{api}/console/review")).await?;
            browser.wait_for("article.item", Duration::from_secs(10)).await?;
            press_in_item(&browser, &doubled_item_id, "Create a new contact").await?;
            let created = wait_for_review_status(admin_api, &doubled_item_id, "resolved").await?;
            assert_eq!(created["resolution"]["action"], "create_new", "{created}");
            wait_for_url(&browser, "resolved=1").await?;
            browser
                .wait_for_text("Saved. The next sync applies it.", Duration::from_secs(10))
                .await?;
            assert!(!listed_review_items(&browser).await?.contains(&doubled_item_id));
            let note = "Shared mailbox, not a person";
            browser
                .fill(&format!("[id='note-{elsewhere_item_id}']"), note)
                .await?;
            press_in_item(&browser, &elsewhere_item_id, "Dismiss").await?;
            let dismissed = wait_for_review_status(admin_api, &elsewhere_item_id, "dismissed").await?;
            assert!(dismissed.to_string().contains(note), "the note is kept: {dismissed}");
            browser
                .goto(&format!("{api}/console/review?status=dismissed"))
                .await?;
            browser
                .wait_for_text(&format!("Note: “{note}”."), Duration::from_secs(10))
                .await?;
            assert_sentences(&browser, "dismissed review items").await?;
            browser.check_page("34-review-dismissed", false).await?;
            press_in_item(&browser, &elsewhere_item_id, "Re-open").await?;
            wait_for_review_status(admin_api, &elsewhere_item_id, "open").await?;
            wait_for_url(&browser, "status=open").await?;
            browser.wait_for("article.item", Duration::from_secs(10)).await?;
            assert!(listed_review_items(&browser).await?.contains(&elsewhere_item_id));
            browser.check_page("34b-review-reopened", false).await?;

            // One client's "Sync now" starts a run of that client, which finishes; the run
            // names who asked for it.
            browser.goto(&format!("{api}/console/clients")).await?;
            browser.wait_for_text("Sync now", Duration::from_secs(10)).await?;
            browser.check_page("35-clients", false).await?;
            browser
                .click(&format!(
                    "button[aria-label='Sync now: {}']",
                    first.display_name
                ))
                .await?;
            browser.wait_for("[data-run-status]", Duration::from_secs(20)).await?;
            let client_run = run_id_in_url(&browser).await?;
            let status = wait_for_run_end(&browser).await?;
            assert_eq!(status, "completed", "client sync");
            let text = browser.text().await?;
            assert!(
                text.contains(&format!("client {}", first.display_name)),
                "the run's scope names the client: {text}"
            );
            assert!(
                text.contains("Requested by\nadmin@workflow-msp.example")
                    || text.contains("Requested by admin@workflow-msp.example"),
                "the run names its requester by email: {text}"
            );
            assert!(!text.contains("user:"), "a raw user id on the run page: {text}");
            let run = admin_api
                .get(&format!("/api/v1/integrations/entra/sync/runs/{client_run}"))
                .await?;
            assert_eq!(run["scope"], "client", "{run}");
            assert_eq!(run["client_id"], first_client.as_str(), "{run}");
            browser.check_page("36-run-client", false).await?;
            // Long ids and emails wrap inside table cells; a narrow window does not scroll
            // sideways.
            let wrap = browser
                .client
                .execute(
                    "return getComputedStyle(document.querySelector('td')).overflowWrap;",
                    vec![],
                )
                .await?;
            assert_eq!(wrap, json!("break-word"));
            browser.client.set_window_size(420, 900).await?;
            assert_no_sideways_scroll(&browser, "the run page").await?;
            browser.check_page("36b-run-client-narrow", false).await?;
            browser.client.set_window_size(1280, 1000).await?;

            // One tenant without consent fails; the overview groups it by cause with what to do.
            stack
                .simulator
                .set_consent_fault(&second.tenant_id, Some(ConsentFault::Aadsts65001))?;
            browser.goto(&format!("{api}/console")).await?;
            browser.press("Sync All Tenants Now").await?;
            browser.wait_for("[data-run-status]", Duration::from_secs(20)).await?;
            let status = wait_for_run_end(&browser).await?;
            assert_eq!(status, "partial", "a sync with one tenant lacking consent");
            browser.check_page("37-run-partial", false).await?;
            stack
                .simulator
                .set_consent_fault(&second.tenant_id, None)?;
            browser.goto(&format!("{api}/console")).await?;
            let failing = browser
                .wait_for(".problem h3", Duration::from_secs(10))
                .await?;
            let failing_text = failing
                .find(Locator::XPath(".."))
                .await?
                .text()
                .await?;
            assert!(
                failing_text.contains(&format!("Tenants: {}", second.display_name)),
                "{failing_text}"
            );
            assert!(
                !failing_text.contains(&first.display_name)
                    && !failing_text.contains(&third.display_name),
                "only the failing tenant is listed: {failing_text}"
            );
            assert!(
                failing_text.contains("What to do:") && failing_text.to_lowercase().contains("consent"),
                "remediation text: {failing_text}"
            );
            browser.check_page("38-overview-failing-tenant", false).await?;

            // The mass-inactivation guard: more than 10 and more than 20% of the third
            // tenant's linked contacts disappear upstream; the run holds them. Discard once,
            // then (the next run holds them again) apply.
            let contacts = admin_api
                .get("/api/v1/contacts?include_inactive=true&limit=500")
                .await?;
            let linked: Vec<Value> = contacts["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|contact| contact["link"]["managed_tenant_id"] == third_managed.as_str())
                .cloned()
                .collect();
            let active: Vec<&Value> = linked
                .iter()
                .filter(|contact| contact["is_active"] == true)
                .collect();
            let removed = (linked.len() / 5 + 1).max(11);
            assert!(
                active.len() >= removed,
                "{} active linked contacts in the third tenant, {removed} needed",
                active.len()
            );
            let removed_contacts: Vec<(String, String)> = active[..removed]
                .iter()
                .map(|contact| {
                    (
                        contact["contact_id"].as_str().unwrap_or_default().to_owned(),
                        contact["link"]["object_id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            for (_, object_id) in &removed_contacts {
                stack
                    .simulator
                    .hard_delete_user(&third.tenant_id, object_id)?;
            }
            let still_active = |contacts: &Value| -> usize {
                removed_contacts
                    .iter()
                    .filter(|(contact_id, _)| {
                        contacts["items"].as_array().into_iter().flatten().any(|contact| {
                            contact["contact_id"] == contact_id.as_str()
                                && contact["is_active"] == true
                        })
                    })
                    .count()
            };
            for (action, label, screenshot) in [
                ("discarded", "Discard inactivations", "39-run-held-discarded"),
                ("applied", "Apply inactivations", "40-run-held-applied"),
            ] {
                browser.goto(&format!("{api}/console")).await?;
                browser.press("Sync All Tenants Now").await?;
                browser.wait_for("[data-run-status]", Duration::from_secs(20)).await?;
                let held_run = run_id_in_url(&browser).await?;
                wait_for_run_end(&browser).await?;
                browser
                    .wait_for_text(
                        "More contacts would be made inactive than the safety limit allows",
                        Duration::from_secs(10),
                    )
                    .await?;
                browser.press(label).await?;
                let held_path = format!(
                    "/api/v1/integrations/entra/sync/runs/{held_run}/tenants/{third_managed}/held-inactivations"
                );
                let held_path = &held_path;
                crate::workflow_support::eventually(
                    &format!("held inactivations {action}"),
                    Duration::from_secs(10),
                    || async move {
                        let held = admin_api.get(held_path).await?;
                        let states: Vec<&str> = held["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|item| item["state"].as_str())
                            .collect();
                        Ok((states.len() == removed
                            && states.iter().all(|state| *state == action))
                        .then_some(()))
                    },
                )
                .await?;
                // Back on the run page, the answered hold offers no button any more.
                browser
                    .wait_for("[data-run-status]", Duration::from_secs(10))
                    .await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while browser.has_button(label).await? {
                    if tokio::time::Instant::now() > deadline {
                        bail!("{label} still offered after it was pressed");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                browser.check_page(screenshot, false).await?;
                // The tenant table shows what each tenant inactivated, not only the totals.
                let page = browser.text().await?;
                assert!(
                    page.contains("Inactivated") && page.contains("Errors"),
                    "the run's tenant table has no Inactivated or Errors column"
                );
                let contacts = admin_api
                    .get("/api/v1/contacts?include_inactive=true&limit=500")
                    .await?;
                let expected_active = if action == "discarded" { removed } else { 0 };
                assert_eq!(still_active(&contacts), expected_active, "after {action}");
            }

            // A contact the sync made inactive: its history shows "—" for what was empty.
            let (inactivated, _) = &removed_contacts[0];
            browser
                .goto(&format!("{api}/console/contacts/{inactivated}"))
                .await?;
            browser
                .wait_for_text("What the sync changed", Duration::from_secs(10))
                .await?;
            let cells = browser
                .client
                .execute(
                    "return [...document.querySelectorAll('table.diff td')].map(td => td.innerText.trim());",
                    vec![],
                )
                .await?;
            let cells: Vec<String> = serde_json::from_value(cells)?;
            assert!(!cells.is_empty(), "the history shows field changes");
            assert!(
                cells.iter().all(|cell| !cell.is_empty()),
                "an empty history cell: {cells:?}"
            );
            assert!(
                cells.iter().any(|cell| cell == "—"),
                "no dash for an empty value: {cells:?}"
            );
            browser.client.set_window_size(420, 900).await?;
            assert_no_sideways_scroll(&browser, "the contact history").await?;
            browser.client.set_window_size(1280, 1000).await?;
            browser.check_page("41-contact-history", false).await?;

            // A slow directory (every CIPP listing answers 8 s late): cancel the running run.
            stack.simulator.add_fault(FaultSpec::everywhere(FaultKind::Delay { ms: 8_000 }, "/cipp/api/List"))?;
            browser.goto(&format!("{api}/console")).await?;
            browser.press("Sync All Tenants Now").await?;
            browser.wait_for("[data-run-status]", Duration::from_secs(20)).await?;
            let cancelled_run = run_id_in_url(&browser).await?;
            browser.press("Cancel run").await?;
            let status = wait_for_run_end(&browser).await?;
            assert_eq!(status, "cancelled");
            stack.simulator.clear_faults();
            let run = admin_api
                .get(&format!("/api/v1/integrations/entra/sync/runs/{cancelled_run}"))
                .await?;
            assert_eq!(run["status"], "cancelled", "{run}");
            browser.check_page("42-run-cancelled", false).await?;

            // More runs than a page of the history holds: "Older runs" shows the rest.
            for _ in 0..15 {
                let started = admin_api
                    .post("/api/v1/integrations/entra/discovery", json!({}))
                    .await?;
                let run_id = started["run_id"].as_str().context("discovery run_id")?;
                let ended = admin_api.wait_for_run(run_id, RUN_TIMEOUT, |_| {}).await?;
                assert_eq!(ended["status"], "completed", "{ended}");
            }
            let all_runs = stack.count("SELECT count(*) FROM runs").await?;
            assert!(all_runs > 20, "{all_runs} runs");
            let listed_runs = |browser: &Browser| {
                let client = browser.client.clone();
                async move {
                    let mut ids = Vec::new();
                    for link in client
                        .find_all(Locator::Css("table tbody td a[href^='/console/runs/']"))
                        .await?
                    {
                        ids.push(link.attr("href").await?.unwrap_or_default());
                    }
                    anyhow::Ok(ids)
                }
            };
            browser.goto(&format!("{api}/console/runs")).await?;
            browser.wait_for("table tbody tr", Duration::from_secs(10)).await?;
            let first_page = listed_runs(&browser).await?;
            assert_eq!(first_page.len(), 20, "a full first page");
            assert!(
                first_page.iter().any(|href| href.ends_with(&cancelled_run)),
                "the newest runs come first"
            );
            browser.check_page("43-runs-first-page", false).await?;
            browser
                .client
                .find(Locator::LinkText("Older runs"))
                .await?
                .click()
                .await?;
            wait_for_url(&browser, "cursor=").await?;
            browser.wait_for("table tbody tr", Duration::from_secs(10)).await?;
            let second_page = listed_runs(&browser).await?;
            assert_eq!(
                usize::try_from(all_runs)? - 20,
                second_page.len(),
                "the second page holds the rest: {second_page:?}"
            );
            assert!(
                second_page.iter().all(|href| !first_page.contains(href)),
                "pages overlap"
            );
            browser.check_page("44-runs-older", false).await?;

            // Microsoft (here CIPP) refuses the saved credentials: the connection needs a
            // reconnect, and no sync button is offered, only what to do.
            stack.simulator.add_fault(FaultSpec::everywhere(FaultKind::Unauthorized, "/cipp/api/List"))?;
            browser.goto(&format!("{api}/console")).await?;
            browser.press("Sync All Tenants Now").await?;
            browser.wait_for("[data-run-status]", Duration::from_secs(20)).await?;
            let status = wait_for_run_end(&browser).await?;
            assert_eq!(status, "failed", "a sync whose credentials are refused");
            stack.simulator.clear_faults();
            let integration = admin_api.get("/api/v1/integrations/entra").await?;
            assert_eq!(
                integration["connection"]["status"], "needs_reconnect",
                "{integration}"
            );
            for (page, screenshot) in [("", "45-overview-needs-reconnect"), ("/clients", "46-clients-needs-reconnect")] {
                browser.goto(&format!("{api}/console{page}")).await?;
                browser
                    .wait_for_text("Reconnect in Setup", Duration::from_secs(10))
                    .await?;
                assert!(!browser.has_button("Sync All Tenants Now").await?);
                assert!(!browser.has_button("Sync now").await?);
                browser.check_page(screenshot, false).await?;
            }

            // Disconnected: still no sync button, and the page says to connect first.
            admin_api
                .post("/api/v1/integrations/entra/disconnect", json!({}))
                .await?;
            for (page, screenshot) in [("", "47-overview-disconnected"), ("/clients", "48-clients-disconnected")] {
                browser.goto(&format!("{api}/console{page}")).await?;
                browser
                    .wait_for_text("Connect Microsoft or CIPP in Setup", Duration::from_secs(10))
                    .await?;
                assert!(!browser.has_button("Sync All Tenants Now").await?);
                assert!(!browser.has_button("Sync now").await?);
                browser.check_page(screenshot, false).await?;
            }
            browser.close().await?;
            Ok(())
        })
        .await
}

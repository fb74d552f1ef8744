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
use entra_sync_simulator::SimulatorConfig;
use fantoccini::Locator;
use serde_json::json;

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
            browser.check_page("02-overview-empty", false).await?;

            // Connect: Test connection (nothing saved), then Save.
            browser.goto(&format!("{api}/console/setup")).await?;
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

//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! TOOLCHAIN.md), with the checks every console page gets: no JavaScript errors in the
//! browser's console (including Content-Security-Policy violations), no failed request, every
//! form control labelled, and a screenshot under `target/test-artifacts/console/`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// A chromedriver process on a free port; killed on drop.
pub struct Driver {
    child: tokio::process::Child,
    url: String,
    profiles: Vec<std::path::PathBuf>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Driver {
    pub async fn start() -> Result<Driver> {
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .context("chromedriver is not installed; `make test` installs chromium-driver")?;
        let port = free_port()?;
        let child = tokio::process::Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(format!("{url}/status")).await {
                if response.status().is_success() {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not start within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Driver {
            child,
            url,
            profiles: Vec::new(),
        })
    }

    /// A new browser with a fresh profile: no cookies, its own session (a "second browser").
    pub async fn browser(&mut self) -> Result<Browser> {
        let profile = std::env::temp_dir().join(format!(
            "entra-sync-chromium-{:016x}",
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&profile)?;
        self.profiles.push(profile.clone());
        let mut args = vec![
            "--headless".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        // Chromium refuses to run as root without it (CI runs as root).
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            args.push("--no-sandbox".to_owned());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({"args": args, "binary": "/usr/bin/chromium"}),
        );
        capabilities.insert("goog:loggingPrefs".to_owned(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .context("starting a Chromium session")?;
        Ok(Browser { client })
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| {
            status
                .lines()
                .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// chromedriver's browser log (`goog:loggingPrefs`), read and cleared by each call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

pub struct Browser {
    pub client: Client,
}

/// Where screenshots go: `target/test-artifacts/console/` of the workspace.
fn artifacts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console")
}

const LABEL_CHECK: &str = r#"
const unlabelled = [];
for (const control of document.querySelectorAll('input, select, textarea')) {
  if (control.type === 'hidden') continue;
  const named = (control.labels && control.labels.length > 0)
    || control.getAttribute('aria-label') || control.getAttribute('aria-labelledby');
  if (!named) unlabelled.push(control.outerHTML.slice(0, 120));
}
return unlabelled;
"#;

const FAILED_REQUESTS: &str = r#"
const failed = [];
for (const entry of performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))) {
  if (entry.responseStatus && entry.responseStatus >= 400) failed.push(entry.name + ' -> ' + entry.responseStatus);
}
return failed;
"#;

impl Browser {
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// The page's checks, then a screenshot named `name`. `expect_status` is the document's
    /// own HTTP status when it is meant to be an error page (4xx); resources must all succeed.
    pub async fn check_page(&self, name: &str, allow_document_error: bool) -> Result<()> {
        let log = self.client.issue_cmd(BrowserLog).await?;
        let errors: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            // The document of an intended error page is logged as a failed load.
            .filter(|message| {
                !(allow_document_error
                    && message.contains("the server responded with a status of 4"))
            })
            .collect();
        if !errors.is_empty() {
            bail!("{name}: JavaScript console errors: {errors:?}");
        }
        let unlabelled = self.client.execute(LABEL_CHECK, vec![]).await?;
        if unlabelled.as_array().is_some_and(|list| !list.is_empty()) {
            bail!("{name}: form controls without a label: {unlabelled}");
        }
        let failed = self.client.execute(FAILED_REQUESTS, vec![]).await?;
        let failed: Vec<String> = failed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let current = self.client.current_url().await?.to_string();
        let failed: Vec<&String> = failed
            .iter()
            .filter(|entry| !(allow_document_error && entry.starts_with(&current)))
            .collect();
        if !failed.is_empty() {
            bail!("{name}: failed requests: {failed:?}");
        }
        let headings = self.client.find_all(Locator::Css("h1")).await?;
        if headings.len() != 1 {
            bail!("{name}: {} h1 headings (one expected)", headings.len());
        }
        let directory = artifacts();
        std::fs::create_dir_all(&directory)?;
        let png = self.client.screenshot().await?;
        std::fs::write(directory.join(format!("{name}.png")), png)?;
        Ok(())
    }

    pub async fn text(&self) -> Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// Waits (polling, with a deadline) until the body's text contains `needle`.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.text().await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("waited {timeout:?} for {needle:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until an element matching `css` exists.
    pub async fn wait_for(
        &self,
        css: &str,
        timeout: Duration,
    ) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css}"))
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.client.find(Locator::Css(css)).await?.click().await?;
        Ok(())
    }

    /// Clicks the button whose visible text is exactly `label`.
    pub async fn press(&self, label: &str) -> Result<()> {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .with_context(|| format!("no button labelled {label:?}"))?
            .click()
            .await?;
        Ok(())
    }

    pub async fn has_button(&self, label: &str) -> Result<bool> {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        Ok(!self
            .client
            .find_all(Locator::XPath(&xpath))
            .await?
            .is_empty())
    }

    pub async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let element = self.client.find(Locator::Css(css)).await?;
        element.clear().await?;
        element.send_keys(value).await?;
        Ok(())
    }

    /// Fills the field whose label text is exactly `label`.
    pub async fn fill_labelled(&self, label: &str, value: &str) -> Result<()> {
        let xpath = format!("//label[normalize-space(.)='{label}']");
        let label_element = self.client.find(Locator::XPath(&xpath)).await?;
        let id = label_element
            .attr("for")
            .await?
            .with_context(|| format!("label {label:?} names no control"))?;
        self.fill(&format!("[id='{id}']"), value).await
    }

    pub async fn sign_in(&self, api_url: &str, key: &str) -> Result<()> {
        self.goto(&format!("{api_url}/console/sign-in")).await?;
        self.fill_labelled("API key", key).await?;
        self.press("Sign in").await?;
        Ok(())
    }

    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

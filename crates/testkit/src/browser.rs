//! Headless Chromium through chromedriver (WebDriver, fantoccini) for the console's browser
//! tests (feature `browser`): Debian's chromium and chromium-driver, which
//! `scripts/deps-console.sh` installs. Screenshots go to docs/console/.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::{free_port, repo};

/// How long chromedriver may take to answer.
const DRIVER_WAIT: Duration = Duration::from_secs(60);

/// A chromedriver on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/deps-console.sh installs it)");
        let driver = Driver { child, port };
        let deadline = Instant::now() + DRIVER_WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    /// A headless Chromium session, 1280×1000; `javascript: false` turns scripts off for
    /// every page.
    pub async fn browser(&self, javascript: bool) -> Client {
        let mut prefs = serde_json::Map::new();
        if !javascript {
            prefs.insert(
                "profile.managed_default_content_settings.javascript".into(),
                serde_json::json!(2),
            );
        }
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run", "--disable-extensions"],
                "prefs": prefs,
            }
        });
        let caps = caps.as_object().unwrap().clone();
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves the page as `docs/console/<name>.png` (the console's documentation shows them).
pub async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir: PathBuf = repo().join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Clicks the first element matching `css`.
pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Waits for an element matching `css` on the current page.
pub async fn wait_for(c: &Client, css: &str) {
    if let Err(e) = c.wait().for_element(Locator::Css(css)).await {
        panic!("no {css} on {}: {e}", c.current_url().await.unwrap());
    }
}

/// The step every browser test repeats: clicks the first element `link` finds and waits for
/// an element matching `css` on the page that follows.
pub async fn follow(c: &Client, link: Locator<'_>, css: &str) {
    c.find(link)
        .await
        .unwrap_or_else(|e| panic!("{link:?}: {e}"))
        .click()
        .await
        .unwrap();
    wait_for(c, css).await;
}

/// Opens `url` and waits for an element matching `css` on it.
pub async fn open(c: &Client, url: &str, css: &str) {
    c.goto(url).await.unwrap();
    wait_for(c, css).await;
}

/// Logs in through the console's login form at `base` and waits for the logged-in page.
pub async fn login(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    for (field, value) in [("name", name), ("password", password)] {
        c.find(Locator::Css(&format!("input[name={field}]")))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    click(c, "form.login button").await;
    if c.wait()
        .for_element(Locator::Css("form.logout"))
        .await
        .is_err()
    {
        panic!(
            "not logged in as {name}: {} {}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        );
    }
}

//! The web console (`/admin/ui`) in a real browser against a real cluster:
//! headless Chromium (Debian's `chromium`), driven through ChromeDriver's
//! WebDriver protocol over plain HTTP, shows every member alive, turns a
//! SIGKILLed node to suspect or dead on screen while the page stays open,
//! and says so when the node serving it stops answering.
//!
//! Screenshots go to `target/tmp/console/` and their paths are printed.
//! When Chromium or ChromeDriver is not installed or cannot run on this
//! machine (`./scripts/test` installs both as root), the test prints SKIP
//! and passes. Every wait polls a condition against a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::{agent, cluster, free_port, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Flags this machine's headless Chromium needs: no sandbox (tests run as
/// root), no GPU, and none of the background connections a closed network
/// refuses.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Why the browser cannot be used here, or `None` when it can.
fn browser_missing(profile: &Path) -> Option<String> {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(binary).exists() {
            return Some(format!(
                "{binary} is not installed (apt-get install chromium chromium-driver)"
            ));
        }
    }
    // Chromium must start and render a page; a machine where it cannot
    // (missing libraries, no /dev/shm) is a machine without a browser.
    let child = Command::new(CHROMIUM)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", "data:text/html,<p>starling</p>"])
        .stdin(Stdio::null())
        // Only the small DOM comes back on stdout; Chromium's chatter on
        // stderr could fill a pipe while we wait.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => return Some(format!("chromium does not start here: {err}")),
    };
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Some("chromium did not render a page within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match child.wait_with_output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("<p>starling</p>") => None,
        Ok(out) => Some(format!(
            "chromium does not render a page here ({})",
            out.status
        )),
        Err(err) => Some(format!("chromium does not run here: {err}")),
    }
}

/// A ChromeDriver process and one browser session in it. Dropping it ends
/// the session (which closes Chromium) and stops the driver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start(profile: &Path, log: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            agent,
        };
        wait_until("chromedriver to answer", Duration::from_secs(20), || {
            browser
                .agent
                .get(&format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
        });
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push("--window-size=1400,1150".to_owned());
        let answer = browser.post(
            "/session",
            &json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            }}}),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver could not start a session: {answer}\nlog:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_owned();
        browser
    }

    /// POSTs a WebDriver command; returns its `value`.
    fn post(&self, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.base);
        let mut answer = self.agent.post(&url).send_json(body).unwrap();
        answer.body_mut().read_json::<Value>().unwrap()["value"].take()
    }

    fn session_path(&self, command: &str) -> String {
        format!("/session/{}{command}", self.session)
    }

    fn open(&self, url: &str) {
        let answer = self.post(&self.session_path("/url"), &json!({ "url": url }));
        assert!(answer.is_null(), "navigating to {url}: {answer}");
    }

    /// Runs `script` (a function body) in the page; returns what it returns.
    fn eval(&self, script: &str) -> Value {
        self.post(
            &self.session_path("/execute/sync"),
            &json!({ "script": script, "args": [] }),
        )
    }

    /// Saves a PNG of the window to `path` and prints where it went.
    fn screenshot(&self, path: &Path) {
        let url = format!("{}{}", self.base, self.session_path("/screenshot"));
        let mut answer = self.agent.get(&url).call().unwrap();
        let value: Value = answer.body_mut().read_json().unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(value["value"].as_str().expect("a base64 screenshot"))
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}{}", self.base, self.session_path(""));
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows in its members table: (HTTP address, liveness,
/// ring state) per row.
fn members_on_screen(browser: &Browser) -> Vec<(String, String, String)> {
    let rows = browser.eval(
        "return Array.from(document.querySelectorAll('#members tbody tr[data-member-addr]'))
           .map(r => [r.dataset.memberAddr, r.dataset.memberState, r.dataset.ringState]);",
    );
    rows.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let field = |i: usize| r[i].as_str().unwrap_or("").to_owned();
            (field(0), field(1), field(2))
        })
        .collect()
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn console_shows_members_and_a_killed_node_turning_suspect_or_dead() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(why) = browser_missing(&dir.path().join("probe-profile")) {
        println!("SKIP console_shows_members_and_a_killed_node_turning_suspect_or_dead: {why}");
        return;
    }
    let mut nodes = cluster(dir.path(), 3, &[]);
    // Some traffic, so the request table and the trees have something to show.
    for i in 0..30 {
        let (status, body) = nodes[i % 3].put("console", &format!("k{i}"), "", "v");
        assert!(matches!(status, 200 | 204), "{status} {body}");
    }

    // A steady trickle of writes through the node whose console we watch,
    // so its request rates move (and, once a node is down, hints appear).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = nodes[0].url("/buckets/console/keys/w");
        std::thread::spawn(move || {
            let agent = agent();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = agent
                    .put(&format!("{url}{i}"))
                    .header("Content-Type", "text/plain")
                    .send("v");
                i += 1;
                // Pacing, not waiting for anything: about 20 writes a second.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let browser = Browser::start(
        &dir.path().join("profile"),
        &dir.path().join("chromedriver.log"),
    );
    browser.open(&nodes[0].url("/admin/ui"));
    let addrs: Vec<String> = nodes.iter().map(|n| n.http.to_string()).collect();

    // All three members alive and owning partitions, on screen.
    wait_until(
        "the console to show three alive members",
        Duration::from_secs(30),
        || {
            let shown = members_on_screen(&browser);
            shown.len() == 3
                && addrs.iter().all(|a| {
                    shown
                        .iter()
                        .any(|(addr, s, r)| addr == a && s == "alive" && r == "member")
                })
        },
    );
    let ring = browser.eval(
        "return { partitions: document.querySelectorAll('#ring path[data-partition]').length,
                  owners: Array.from(document.querySelectorAll('#ring-legend li[data-owner]'))
                    .map(li => [li.dataset.owner, Number(li.dataset.partitions)]),
                  conn: document.getElementById('conn').dataset.conn };",
    );
    assert_eq!(ring["conn"], json!("ok"), "{ring}");
    let partitions = ring["partitions"].as_u64().unwrap();
    assert!(partitions >= 16, "the donut has {partitions} partitions");
    let owners = ring["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 3, "{ring}");
    let owned: u64 = owners.iter().map(|o| o[1].as_u64().unwrap()).sum();
    assert_eq!(
        owned, partitions,
        "the legend must account for every partition"
    );
    // The request table computes rates from /metrics between polls.
    wait_until(
        "the console to show a put rate above zero",
        Duration::from_secs(30),
        || {
            browser.eval(
                "const row = document.querySelector('#requests tr[data-op=put]');
                 return row !== null && Number(row.dataset.rate) > 0;",
            ) == json!(true)
        },
    );
    let shots = screenshot_dir();
    browser.screenshot(&shots.join("console-alive.png"));

    // SIGKILL the third node; the open page must turn it suspect or dead
    // (and its partitions unhealthy) while the other two stay alive.
    let killed = addrs[2].clone();
    nodes[2].kill();
    let killed_at = Instant::now();
    wait_until(
        "the console to show the killed node as suspect or dead",
        Duration::from_secs(30),
        || {
            let shown = members_on_screen(&browser);
            shown
                .iter()
                .any(|(a, s, _)| *a == killed && (s == "suspect" || s == "dead"))
                && shown
                    .iter()
                    .filter(|(a, s, _)| *a != killed && s == "alive")
                    .count()
                    == 2
        },
    );
    println!(
        "the console showed {killed} as suspect/dead {:.1} s after SIGKILL",
        killed_at.elapsed().as_secs_f64()
    );
    let unhealthy = format!(
        "return Array.from(document.querySelectorAll('#ring-legend li[data-owner]'))
           .filter(li => li.dataset.owner === {killed:?} && li.dataset.healthy === 'false').length;"
    );
    wait_until(
        "the ring legend to mark the killed node's partitions unhealthy",
        Duration::from_secs(10),
        || browser.eval(&unhealthy) == json!(1),
    );
    // Wait for the verdict SWIM settles on, so the picture shows it.
    wait_until(
        "the console to show the killed node as dead",
        Duration::from_secs(60),
        || {
            members_on_screen(&browser)
                .iter()
                .any(|(a, s, _)| *a == killed && s == "dead")
        },
    );
    browser.screenshot(&shots.join("console-dead.png"));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // The node serving the page stops answering: the page says so and
    // keeps its last answers on screen.
    nodes[0].kill();
    wait_until(
        "the console to say its node does not answer",
        Duration::from_secs(30),
        || {
            let view = browser.eval(
                "return [document.getElementById('conn').dataset.conn,
                         !document.getElementById('down-banner').hidden,
                         document.querySelectorAll('#members tbody tr[data-member-addr]').length];",
            );
            view == json!(["down", true, 3])
        },
    );
    browser.screenshot(&shots.join("console-node-down.png"));
}

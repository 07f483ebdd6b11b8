//! The catalog web UI in a real browser: a `berth serve` with json-transform and http-probe
//! published, and Debian's headless Chromium driven over the Chrome DevTools Protocol
//! (`--remote-debugging-pipe`: NUL-separated JSON on the browser's fds 3 and 4, so no port
//! and no WebSocket client). A person's path: type a query and submit it, narrow by a facet,
//! open the plugin, read the digest its install snippet pins.
//!
//! Chromium is kept off every network but loopback (`--host-resolver-rules`, background
//! networking off). Set `BERTH_UI_SCREENSHOTS=<dir>` to keep a PNG of each page.

use crate::common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one protocol call, or one wait for a page, may take.
const STEP: Duration = Duration::from_secs(30);

/// A headless Chromium with one page attached; killed (its whole process group) on drop.
struct Chromium {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    /// The page's flat-mode session.
    session: Option<String>,
    /// The browser's standard error, for failure messages.
    log: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        let installed =
            Command::new("sh").args(["-c", "command -v chromium"]).output().is_ok_and(|o| o.status.success());
        assert!(installed, "Debian's `chromium` is not installed: scripts/test installs it (apt-get install chromium)");
        let profile = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("sh")
            // The protocol pipe is the browser's fds 3 (commands in) and 4 (answers out):
            // hand it our stdin and stdout pipes there.
            .args(["-c", "exec chromium \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null", "chromium"])
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--no-pings",
                "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let to = child.stdin.take().expect("stdin");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let message: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&message[..end])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                if l.len() < 64 * 1024 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut browser = Chromium { child, to, from, next_id: 0, session: None, log, _profile: profile };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        browser.session = Some(attached["sessionId"].as_str().expect("sessionId").to_string());
        browser.call("Page.enable", json!({}));
        browser
    }

    /// One protocol call (on the page once attached); its `result`. Events are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self.to.write_all(&bytes).and_then(|()| self.to.flush()) {
            panic!("{method}: writing to chromium: {e}\n{}", self.log());
        }
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(err) = v.get("error") {
                        panic!("{method}: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer within {STEP:?}\n{}", self.log()),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: chromium went away\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        format!("chromium stderr:\n{}", self.log.lock().unwrap())
    }

    /// Evaluates `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}));
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expression}: {ex:#}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (bounded); its value.
    fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let v = self.eval(expression);
            if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.eval("location.href + '\\n' + (document.body ? document.body.innerText : '')");
                panic!("{what}: gave up after {STEP:?}; the page:\n{}", page.as_str().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Marks the current document; `navigated` then waits for a new one, fully loaded.
    fn mark(&mut self) {
        self.eval("window.__berthOld = true");
    }

    fn navigated(&mut self, what: &str) {
        self.wait_for("!window.__berthOld && document.readyState === 'complete'", what);
    }

    fn goto(&mut self, url: &str) {
        self.mark();
        self.call("Page.navigate", json!({"url": url}));
        self.navigated(&format!("load {url}"));
    }

    /// A real mouse click in the middle of the element `selector` matches.
    fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self.wait_for(
            &format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); \
                 const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ),
            &format!("an element {selector}"),
        );
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        self.call("Input.dispatchMouseEvent", json!({"type": "mouseMoved", "x": x, "y": y}));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// The repositories of the result cards, in order.
    fn results(&mut self) -> Vec<String> {
        let v = self.eval("[...document.querySelectorAll('li.result')].map(e => e.dataset.repository)");
        serde_json::from_value(v).unwrap()
    }

    /// Saves a PNG of the page when `BERTH_UI_SCREENSHOTS` names a directory.
    fn screenshot(&mut self, name: &str) {
        let Ok(dir) = std::env::var("BERTH_UI_SCREENSHOTS") else { return };
        let shot = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
        let png =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, shot["data"].as_str().unwrap()).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Ask politely, then end the whole process group (renderers, zygote, GPU process).
        let mut close = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"})).unwrap();
        close.push(0);
        let _ = self.to.write_all(&close).and_then(|()| self.to.flush());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_searches_filters_opens_a_plugin_and_reads_its_pinned_digest() {
    let dir = tempfile::tempdir().unwrap();
    let config = first_party_config(dir.path());
    let server = BerthProcess::spawn(&dir.path().join("data"), &["--config", &config]);
    let host = server.url.trim_start_matches("http://").to_string();
    let transform = publish_first_party(dir.path(), &host, "json-transform");
    let probe = publish_first_party(dir.path(), &host, "http-probe");
    let probe_digest = probe.rsplit_once('@').unwrap().1.to_string();
    wait_for(&format!("{}/api/v1/search?q=", server.url), "both plugins indexed and verified", |b| {
        b["total"] == 2 && b["hits"].as_array().unwrap().iter().all(|h| h["version"]["verified"] == true)
    })
    .await;

    let url = server.url.clone();
    let page = tokio::task::spawn_blocking(move || {
        let mut browser = Chromium::launch();

        // The search page; type a query matching both plugins (their publisher) and submit.
        browser.goto(&format!("{url}/"));
        browser.wait_for("document.getElementById('q') !== null", "the search field");
        browser.eval("document.getElementById('q').focus()");
        browser.call("Input.insertText", json!({"text": "aisopsflow"}));
        browser.mark();
        browser.click("#search-button");
        browser.navigated("the results of the search");
        browser.screenshot("1-search");
        let search = browser.eval("location.search");
        assert_eq!(search, json!("?q=aisopsflow"), "the form submits the query");
        let mut found = browser.results();
        found.sort();
        assert_eq!(found, ["aisopsflow/http-probe", "aisopsflow/json-transform"], "both plugins are found");
        let card = browser
            .eval("document.querySelector('li.result[data-repository=\"aisopsflow/json-transform\"]').dataset.digest");
        assert_eq!(card, json!(transform.rsplit_once('@').unwrap().1), "a card carries its version's digest");
        let facet = "a[data-facet=\"category\"][data-value=\"network\"]";
        let count = browser.eval(&format!("document.querySelector('{facet} .count').textContent"));
        assert_eq!(count, json!("1"), "the network category counts one plugin");

        // Narrow by the `network` category: only http-probe is left.
        browser.mark();
        browser.click(facet);
        browser.navigated("the filtered results");
        browser.screenshot("2-filtered");
        assert_eq!(browser.results(), ["aisopsflow/http-probe"], "the facet filter leaves http-probe alone");
        assert_eq!(browser.eval(&format!("document.querySelector('{facet}').dataset.selected")), json!("true"));
        assert_eq!(browser.eval("document.getElementById('q').value"), json!("aisopsflow"), "the query is kept");

        // Open it: the plugin page pins the install to the digest the registry has.
        browser.mark();
        browser.click("li.result[data-repository=\"aisopsflow/http-probe\"] a.result-link");
        browser.navigated("the plugin page");
        browser.screenshot("3-plugin");
        let page = browser.eval(
            "({path: location.pathname, digest: document.getElementById('install-digest').textContent, \
              snippet: document.getElementById('install-snippet').textContent, \
              name: document.getElementById('plugin-name').textContent, \
              versions: [...document.querySelectorAll('#version-table tr.version-row')].map(r => r.dataset.digest), \
              badges: [...document.querySelectorAll('#plugin .plugin-head [data-badge]')].map(b => b.dataset.badge)})",
        );
        drop(browser);
        page
    })
    .await
    .unwrap();

    assert_eq!(page["path"], "/plugins/aisopsflow/http-probe", "{page:#}");
    assert_eq!(page["name"], "HTTP Probe", "{page:#}");
    assert_eq!(page["digest"], json!(probe_digest), "the install digest is the registry's: {page:#}");
    assert!(page["snippet"].as_str().unwrap().contains(&probe), "the snippet pins {probe}: {page:#}");
    assert_eq!(page["versions"], json!([probe_digest]), "{page:#}");
    assert!(page["badges"].as_array().unwrap().contains(&json!("verified")), "{page:#}");
}

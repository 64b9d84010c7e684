//! A minimal Chrome DevTools Protocol client for the dashboard tests: headless
//! Chromium (Debian's `chromium`) with `--remote-debugging-pipe`, so commands and
//! answers are NUL-separated JSON on two file descriptors (3: to Chromium, 4: from
//! it) and no WebSocket crate is needed. `sh` maps the child's stdin and stdout onto
//! those descriptors (fixed arguments only). Every wait is bounded; a JavaScript
//! dialog (`confirm`) is answered as [`Browser::accept_dialogs`] says and recorded.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Debian's Chromium; the test fails, not skips, without it.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
        .expect(
            "the dashboard test needs headless Chromium: `apt-get install chromium` \
             (scripts/test installs it when run as root)",
        )
}

pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    /// Events seen so far (`method`, `params`, `sessionId`).
    pub events: Vec<Value>,
    /// The messages of the dialogs answered so far.
    pub dialogs: Vec<String>,
    pub accept_dialogs: bool,
    _profile: tempfile::TempDir,
}

/// One page (tab) of the browser.
#[derive(Clone)]
pub struct Tab {
    pub session: String,
    pub target: String,
}

impl Browser {
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 0</dev/null 1>/dev/null")
            .arg(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-pipe",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let to = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut buf = Vec::new();
            while let Ok(n) = reader.read_until(0, &mut buf) {
                if n == 0 {
                    break;
                }
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    break;
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to,
            from,
            next_id: 0,
            events: Vec::new(),
            dialogs: Vec::new(),
            accept_dialogs: true,
            _profile: profile,
        }
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium takes commands");
        self.next_id
    }

    /// Sends a command and waits (30 s at most) for its answer, answering dialogs meanwhile.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.send(session, method, params);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.from.recv_timeout(left) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer {method} within 30 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium went away during {method}"),
            };
            if msg["id"].as_u64() == Some(id) {
                if let Some(e) = msg.get("error") {
                    panic!("{method} failed: {e}");
                }
                return msg["result"].clone();
            }
            if msg["method"] == "Page.javascriptDialogOpening" {
                self.dialogs
                    .push(msg["params"]["message"].as_str().unwrap_or_default().to_owned());
                let s = msg["sessionId"].as_str().map(str::to_owned);
                let accept = self.accept_dialogs;
                self.send(
                    s.as_deref(),
                    "Page.handleJavaScriptDialog",
                    json!({"accept": accept}),
                );
            }
            if msg.get("method").is_some() {
                self.events.push(msg);
            }
        }
    }

    /// Attaches to a page target, with the page, runtime and network domains on and a
    /// 1280×1000 viewport.
    pub fn attach(&mut self, target: &str) -> Tab {
        let r = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        let session = r["sessionId"].as_str().unwrap().to_owned();
        for m in ["Page.enable", "Runtime.enable", "Network.enable"] {
            self.call(Some(&session), m, json!({}));
        }
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        Tab {
            session,
            target: target.to_owned(),
        }
    }

    /// A new tab (its own sessionStorage, as a tab the user opens by hand) at `url`.
    pub fn open(&mut self, url: &str) -> Tab {
        let r = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let tab = self.attach(r["targetId"].as_str().unwrap());
        self.call(Some(&tab.session), "Page.navigate", json!({"url": url}));
        tab
    }

    /// Brings the tab to the front (the others become hidden).
    pub fn front(&mut self, tab: &Tab) {
        self.call(Some(&tab.session), "Page.bringToFront", json!({}));
    }

    /// The page target whose URL contains `part`, other than `except`.
    pub fn find_tab(&mut self, part: &str, except: &Tab) -> Tab {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.call(None, "Target.getTargets", json!({}));
            let found = r["targetInfos"].as_array().unwrap().iter().find(|t| {
                t["type"] == "page"
                    && t["targetId"] != except.target.as_str()
                    && t["url"].as_str().unwrap_or_default().contains(part)
            });
            if let Some(t) = found {
                let id = t["targetId"].as_str().unwrap().to_owned();
                return self.attach(&id);
            }
            assert!(Instant::now() < deadline, "no tab at {part}: {r}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, tab: &Tab, js: &str) -> Value {
        let r = self.call(
            Some(&tab.session),
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true, "userGesture": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits (60 s at most) until `js` is truthy in the page; returns its value.
    pub fn wait_for(&mut self, tab: &Tab, js: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.eval(
                tab,
                &format!("(() => {{ try {{ return {js}; }} catch (_) {{ return null; }} }})()"),
            );
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.eval(tab, "document.body ? document.body.innerText : ''");
                let errors: Vec<String> = self
                    .events
                    .iter()
                    .filter(|e| e["method"] == "Runtime.exceptionThrown")
                    .map(|e| e["params"]["exceptionDetails"].to_string())
                    .collect();
                panic!("never true in the page: {js}\npage text: {body}\nerrors: {errors:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the tab's viewport.
    pub fn screenshot(&mut self, tab: &Tab, path: &Path) {
        use base64::Engine as _;
        let r = self.call(
            Some(&tab.session),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// The URLs the tab requested so far (reads pending events first).
    pub fn requests(&mut self, tab: &Tab) -> Vec<String> {
        self.call(None, "Target.getTargets", json!({}));
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent" && e["sessionId"] == tab.session.as_str())
            .map(|e| {
                e["params"]["request"]["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

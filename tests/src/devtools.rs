//! Headless Chromium driven through the DevTools protocol, to click through the `--html` page
//! as a person would: real mouse events at the element's place on screen, then the DOM read
//! back. The protocol runs on a pipe (`--remote-debugging-pipe`: Chromium reads commands from
//! its fd 3 and writes on its fd 4, each message JSON ended by a NUL byte), so no port is
//! opened.

use std::{
    io::{BufRead, BufReader, Write},
    os::fd::OwnedFd,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use command_fds::{CommandFdExt, FdMapping};
use serde_json::{json, Value};

/// A headless Chromium and the page it shows.
pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    replies: BufReader<std::io::PipeReader>,
    next_id: u64,
    /// The page's session, once a page is open.
    session: Option<String>,
}

impl Browser {
    /// Starts Chromium with a fresh profile in `user_data` (a directory the caller removes).
    #[track_caller]
    pub fn launch(user_data: &Path) -> Self {
        let (chromium_reads, commands) = std::io::pipe().expect("a pipe");
        let (replies, chromium_writes) = std::io::pipe().expect("a pipe");
        let mut command = Command::new("chromium");
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1600",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", user_data.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
            .fd_mappings(vec![
                FdMapping {
                    parent_fd: OwnedFd::from(chromium_reads),
                    child_fd: 3,
                },
                FdMapping {
                    parent_fd: OwnedFd::from(chromium_writes),
                    child_fd: 4,
                },
            ])
            .expect("fds 3 and 4 for chromium");
        let child = command
            .spawn()
            .expect("running chromium (installed by `cargo xtask setup`)");
        // The command holds the child's ends; dropped here, so a Chromium that dies closes
        // the pipe and a read ends instead of waiting.
        drop(command);
        Self {
            child,
            commands,
            replies: BufReader::new(replies),
            next_id: 0,
            session: None,
        }
    }

    /// The browser process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command (to the page, once open) and returns its result; events met on the
    /// way are skipped.
    #[track_caller]
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium is gone ({e}) before {method}"));
        loop {
            let mut reply = Vec::new();
            let read = self.replies.read_until(0, &mut reply).unwrap();
            assert!(
                read > 0,
                "chromium closed the pipe before answering {method}"
            );
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).unwrap();
            if reply["id"] != id {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("{method} failed: {error}");
            }
            return reply["result"].clone();
        }
    }

    /// Opens `url` in a new page and waits until it has loaded.
    #[track_caller]
    pub fn open(&mut self, url: &str) {
        self.session = None;
        let target = self.call("Target.createTarget", json!({ "url": url }));
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        // A new page is about:blank, complete, until the navigation replaces its document.
        self.wait_for(
            &format!("location.href === {url:?} && document.readyState === 'complete'"),
            Duration::from_secs(20),
        );
    }

    /// The value of a JavaScript expression in the page.
    #[track_caller]
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) holds in the page; one that throws (the document
    /// is being replaced) does not hold yet.
    #[track_caller]
    pub fn wait_for(&mut self, condition: &str, timeout: Duration) {
        let give_up = Instant::now() + timeout;
        let expression = format!(
            "(function () {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&expression) != json!(true) {
            assert!(
                Instant::now() < give_up,
                "{condition}: still false after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the middle of the first element matching `selector`, as a mouse would: scrolled
    /// into view, then pressed and released there.
    #[track_caller]
    pub fn click(&mut self, selector: &str) {
        let place = self.eval(&format!(
            "(function () {{ var e = document.querySelector({selector:?}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); var r = e.getBoundingClientRect(); \
             return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ));
        assert!(place.is_array(), "nothing matches {selector}");
        let (x, y) = (place[0].as_f64().unwrap(), place[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session = None;
        // Chromium ends itself and its helpers; killing it (by its own pid) is the fallback.
        let mut close = serde_json::to_vec(&json!({ "id": 0, "method": "Browser.close" })).unwrap();
        close.push(0);
        let _ = self.commands.write_all(&close);
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `maskrelay` binary as an operator runs it: a child process with its own environment
//! and working directory, its stderr kept in a file, stopped with real signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_maskrelay");

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `maskrelay ARGS` run to completion in `dir` with `env` (and no MASKRELAY_* variable of
/// the test's own environment): exit status, stdout, stderr.
pub fn run(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let out = command(dir, env).args(args).output().expect("run maskrelay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn command(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MASKRELAY_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running `maskrelay serve`.
pub struct Served {
    pub child: Child,
    pub stderr: PathBuf,
    pub stdout: PathBuf,
}

impl Served {
    /// Starts `maskrelay serve EXTRA…` in `dir`; stdout and stderr go to files there.
    pub fn start(dir: &Path, env: &[(&str, String)], extra: &[&str]) -> Self {
        let name = crate::support::random_name();
        let stderr = dir.join(format!("serve-{name}.err"));
        let stdout = dir.join(format!("serve-{name}.out"));
        let child = command(dir, env)
            .arg("serve")
            .args(extra)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("spawn maskrelay serve");
        Self { child, stderr, stdout }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `http://127.0.0.1:PORT/healthz` answers 200, or panics with the log if
    /// the process exits or time runs out.
    pub async fn wait_healthy(&mut self, port: u16) {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("maskrelay serve exited ({status}):\n{}", self.log());
            }
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "not healthy within 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log holds `needle` (polling, with a deadline).
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} not logged within 20 s:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit on its own; its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (libc::SIGHUP, SIGTERM…).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit().await;
        assert!(status.success(), "exit after SIGTERM: {status}\n{}", self.log());
        self.log()
    }
}

impl Served {
    /// SIGTERM if it still runs, and waits for it to end.
    pub async fn stop_if_running(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            self.signal(libc::SIGTERM);
            self.wait_exit().await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request to a relay process's HTTP API with `token`: the status and the JSON answer
/// (Null when there is none).
pub async fn api(
    token: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let req =
        reqwest::Client::new().request(method, format!("http://127.0.0.1:{port}{path}")).bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.send().await.expect("the relay's API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Through a relay process's API: store `acme` (contact support@acme.example, sender
/// orders@acme.example) and one thread of order `order` for jane@shopper.example; the thread.
pub async fn acme_thread(token: &str, port: u16, order: &str) -> serde_json::Value {
    let store = serde_json::json!({"id": "acme", "name": "Acme", "contact": "support@acme.example", "senders": ["orders@acme.example"]});
    let (s, v) = api(token, port, "POST", "/v1/stores", Some(store)).await;
    assert_eq!(s, 201, "{v}");
    let thread = serde_json::json!({"order": order, "store": "acme", "shopper": {"email": "jane@shopper.example", "name": "Jane"}});
    let (s, t) = api(token, port, "POST", "/v1/threads", Some(thread)).await;
    assert_eq!(s, 201, "{t}");
    t
}

//! Test helpers: start the real relay on loopback ports with a real database, a real SMTP
//! sink as its next hop, and talk HTTP and SMTP to it.
#![allow(dead_code, unused_imports)]

pub mod cert;
pub mod cut;
pub mod dns;
pub mod process;
pub mod session;
pub mod sink;
pub mod smtp_client;

use std::time::Duration;

use maskrelay::config::{AuthMode, Config, EgressMode};
use maskrelay::server::Relay;
use serde_json::{Value, json};

pub use sink::Sink;
pub use smtp_client::Client;

pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const DOMAIN: &str = "relay.test";

/// The PostgreSQL server CI provides; tests that need it skip (saying so) without it.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database for one test: a fresh SQLite file, kept alive with the guard.
pub fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("relay.db").display());
    (url, dir)
}

/// A fresh PostgreSQL database on the local server, or None (with a note on stderr)
/// when no server answers.
pub async fn postgres_url() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("MRTEST_POSTGRES").unwrap_or_else(|_| POSTGRES_URL.to_owned());
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "SKIPPED: PostgreSQL not reachable at {base} ({e}); set MRTEST_POSTGRES to run the PostgreSQL tests"
            );
            if std::env::var("MRTEST_REQUIRE_POSTGRES").is_ok() {
                panic!("MRTEST_REQUIRE_POSTGRES is set but PostgreSQL is not reachable");
            }
            return None;
        }
    };
    drop_old_databases(&mut conn).await;
    let name = format!("maskrelay_t_{}_{}", maskrelay::store::now(), maskrelay::address::random_token(10));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("postgres url with a database");
    Some(format!("{prefix}/{name}"))
}

/// Drops the databases earlier test runs left on the shared server (a test keeps its own
/// until the process ends, and none runs for an hour): without this every run left ~20.
/// Names carry their creation time; a name without one is from before that.
async fn drop_old_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'maskrelay\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let hour_ago = maskrelay::store::now() - 3600;
    for name in names {
        let created =
            name.trim_start_matches("maskrelay_t_").split_once('_').and_then(|(t, _)| t.parse::<i64>().ok());
        let safe = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if safe && created.is_none_or(|t| t < hour_ago) {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut *conn).await;
        }
    }
}

/// A config for tests: loopback port 0 everywhere, envelope auth, smarthost = the sink,
/// fast retries.
pub fn test_config(db_url: &str, sink: std::net::SocketAddr) -> Config {
    let mut c = Config::default();
    c.relay.domain = DOMAIN.into();
    c.relay.marketplace = "Test Market".into();
    c.smtp.listen = "127.0.0.1:0".into();
    c.api.listen = "127.0.0.1:0".into();
    c.api.token = Some(TOKEN.into());
    c.auth.mode = AuthMode::Envelope;
    c.egress.mode = EgressMode::Smarthost;
    c.egress.smarthost = sink.to_string();
    c.egress.retry_base_secs = 1;
    c.egress.retry_max_secs = 2;
    c.egress.workers = 2;
    c.database.url = db_url.into();
    // Relays of one test process share a working directory and port 0: each gets its own
    // node id, as relays sharing a database must (a test of a restart sets it itself).
    c.queue.node_id = Some(format!("test-{}", random_name()));
    // Each relay signs with its own key, generated on first start beside its SQLite file
    // (so the test's temporary directory takes it away).
    let key_dir = db_url
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(std::env::temp_dir);
    let dkim = key_dir.join(format!("dkim-{}.pem", maskrelay::address::random_token(12)));
    // The process's one RSA key (generating RSA-2048 per relay would cost each test a
    // second); a test that wants `serve` to generate one removes the file.
    std::fs::write(&dkim, DKIM_PEM.as_slice()).expect("write DKIM key");
    c.dkim.private_key_path = dkim.display().to_string();
    // One privacy key per test process, so relays that share a database (or restart on
    // one) open each other's sealed values.
    c.privacy.keys = vec![PRIVACY_KEY.clone()];
    c
}

/// The RSA-2048 DKIM key of this test process (PEM), generated once.
pub static DKIM_PEM: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dkim.pem");
    maskrelay::delivery::dkim::generate(&path, maskrelay::delivery::dkim::Algorithm::Rsa).expect("RSA key");
    std::fs::read(&path).expect("read DKIM key")
});

/// A random lowercase name for files and databases of one test.
pub fn random_name() -> String {
    maskrelay::address::random_token(10)
}

/// The privacy key of this test process: random, never a constant in the source.
pub static PRIVACY_KEY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(maskrelay::store::Vault::generate_key);

/// The relay, its HTTP client and base URL.
pub struct TestRelay {
    pub relay: Relay,
    pub http: reqwest::Client,
    pub base: String,
}

impl TestRelay {
    pub async fn start(config: Config) -> Self {
        let relay = Relay::start(config).await.expect("relay starts");
        let base = format!("http://{}", relay.api_addr);
        Self { relay, http: reqwest::Client::new(), base }
    }

    pub fn smtp(&self) -> std::net::SocketAddr {
        self.relay.smtp_addr
    }

    /// An authorized API call; returns status and JSON body.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PATCH" => self.http.patch(&url),
            "DELETE" => self.http.delete(&url),
            m => panic!("method {m}"),
        }
        .bearer_auth(TOKEN);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.expect("http");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates store "acme" with sender orders@acme.example, contact support@acme.example.
    pub async fn acme(&self) -> Value {
        let (s, v) = self
            .api(
                "POST",
                "/v1/stores",
                Some(json!({"id": "acme", "name": "Acme Shop", "contact": "support@acme.example",
                            "senders": ["orders@acme.example"]})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// A thread of store acme for jane@shopper.example.
    pub async fn thread(&self, order: &str) -> Value {
        let (s, v) = self
            .api(
                "POST",
                "/v1/threads",
                Some(json!({"order": order, "store": "acme",
                            "shopper": {"email": "jane.doe@shopper.example", "name": "Jane Doe"}})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Polls `GET /v1/events?kind=KIND` until it lists `n` events; returns them.
    pub async fn wait_for_events(&self, kind: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (_, e) = self.api("GET", &format!("/v1/events?kind={kind}"), None).await;
            let list = e["data"].as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                return list;
            }
            assert!(std::time::Instant::now() < deadline, "expected {n} {kind} events, have {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.relay.shutdown().await;
    }

    /// The barrier after "nothing more should happen": waits until the queue is empty, so
    /// no message is queued or in flight and every delivery has been written back.
    pub async fn wait_queue_empty(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while !maskrelay::queue::idle(&self.relay.db).await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "queue not emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub const WAIT: Duration = Duration::from_secs(20);

/// A plain message from `from` to `to`.
pub fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{}@mailer.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        maskrelay::address::random_token(12)
    )
    .into_bytes()
}

/// The sum of the samples of `name` in a Prometheus text scrape whose labels contain every
/// one of `labels` (each written `key="value"`); 0 when there is none.
pub fn metric(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, label_set) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|want| label_set.contains(want))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

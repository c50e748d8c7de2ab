//! `serve`: the SMTP listener, the delivery workers and the HTTP API in one process,
//! started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::auth::Authorizer;
use crate::auth::dmarc::DmarcVerifier;
use crate::config::{AuthMode, Config, EgressMode};
use crate::delivery::dkim::Signer;
use crate::delivery::{Dispatcher, Workers, mx::MxDelivery, smarthost::Smarthost};
use crate::shutdown::{self, Trigger};
use crate::smtp::tls::Certificate;
use crate::smtp::{self, Context, Listener};
use crate::store::{Db, StoreError, Vault};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Names the database by host (or SQLite file), never with its password.
    #[error("database.url ({target}): {cause}{hint}")]
    Database { target: String, cause: StoreError, hint: &'static str },
    // The io error is part of the message, not a `source`: error chains would print it twice.
    #[error("cannot listen on {key} = {addr}: {cause}")]
    Bind { key: &'static str, addr: String, cause: std::io::Error },
    #[error("egress: {0}")]
    Egress(String),
    #[error(transparent)]
    Dkim(#[from] crate::delivery::dkim::DkimError),
    #[error(transparent)]
    Tls(#[from] crate::smtp::tls::TlsError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Keys(#[from] crate::store::VaultError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::ClientError),
}

impl ServeError {
    /// A database error, naming where the database is.
    pub fn database(url: &str, cause: StoreError) -> Self {
        let hint = match &cause {
            StoreError::Sealed(crate::store::VaultError::UnknownKey(_)) => {
                ": every relay of one database needs the same privacy keys (privacy.key_file or privacy.keys)"
            }
            StoreError::Unavailable(sqlx::Error::PoolTimedOut) => {
                ": nothing answered within 5 s; is the server up and reachable from here?"
            }
            _ => "",
        };
        Self::Database { target: crate::config::url_host(url), cause, hint }
    }
}

/// A running relay.
pub struct Relay {
    pub smtp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The shopper-pages listener's address, when `api.public_listen` is set.
    pub public_addr: Option<SocketAddr>,
    /// The submission listener's address, when `submission.listen` is set.
    pub submission_addr: Option<SocketAddr>,
    /// The operator token in force.
    pub api_token: String,
    /// True when the token was generated at start (and must be shown once).
    pub token_generated: bool,
    pub db: Db,
    /// Paths of DKIM keys generated at this start (their records must be published).
    pub dkim_generated: Vec<String>,
    /// `smtp.data_memory_bytes`, as the sessions share it (what is reserved now).
    pub data_memory: smtp::backend::DataBudget,
    /// The configuration as given (before start filled in defaults), for reloads to compare.
    given: Config,
    certificate: Option<Arc<Certificate>>,
    trigger: Trigger,
    tasks: JoinSet<()>,
}

/// What a reload (SIGHUP) did.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub tls: bool,
    pub privacy_keys: bool,
    /// Keys whose new values apply only after a restart.
    pub need_restart: Vec<String>,
    /// What could not be reloaded, and why (the old value stays in force).
    pub failed: Vec<String>,
}

async fn bind(key: &'static str, addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|cause| ServeError::Bind { key, addr: addr.to_owned(), cause })
}

fn local_addr(key: &'static str, addr: &str, listener: &TcpListener) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|cause| ServeError::Bind { key, addr: addr.to_owned(), cause })
}

fn dispatcher(config: &Config) -> Result<Arc<dyn Dispatcher>, ServeError> {
    let hello = config.smtp_hostname();
    Ok(match config.egress.mode {
        EgressMode::Smarthost => {
            Arc::new(Smarthost::new(&config.egress, hello).map_err(|e| ServeError::Egress(e.to_string()))?)
        }
        EgressMode::Mx => {
            let resolver = crate::dns::resolver(&config.dns.nameservers)
                .map_err(|e| ServeError::Egress(e.to_string()))?;
            Arc::new(
                MxDelivery::new(resolver, &config.egress, hello)
                    .map_err(|e| ServeError::Egress(e.to_string()))?,
            )
        }
    })
}

/// The relay domain's DKIM keys; on first start without one, an RSA-2048 key is generated
/// (what every receiver verifies), and the record to publish is logged.
fn dkim_signer(config: &Config) -> Result<(Signer, Vec<String>), ServeError> {
    let (signer, generated) = Signer::from_config(&config.dkim, &config.relay.domain, true)?;
    for path in &generated {
        warn!(path = %path, "generated a DKIM key: publish its record (maskrelay check dns shows what is missing)");
    }
    for record in signer.records() {
        info!(record = %format!("{}._domainkey.{} TXT \"{}\"", record.selector, config.relay.domain, record.text), "DKIM key loaded");
    }
    Ok((signer, generated))
}

/// Keys a reload applies; every other changed key waits for a restart.
const RELOADABLE: &[&str] = &["smtp.tls_cert_path", "smtp.tls_key_path", "privacy.keys", "privacy.key_file"];

/// `section.key` of every value that differs between two configurations.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    for (section, values) in &new {
        let Some(values) = values.as_object() else { continue };
        for (key, value) in values {
            if old.get(section).and_then(|s| s.get(key)) != Some(value) {
                changed.push(format!("{section}.{key}"));
            }
        }
    }
    changed
}

impl Relay {
    /// Connects the database (running migrations), binds the listeners and starts all
    /// tasks. Port 0 in a listen address picks a free port (see `smtp_addr`, `api_addr`).
    pub async fn start(mut config: Config) -> Result<Self, ServeError> {
        crate::metrics::install();
        crate::smtp::heap::tune();
        let given = config.clone();
        let (vault, created) = Vault::from_config(&config.privacy, true)?;
        if created {
            warn!(path = %config.privacy.key_file, key_id = %vault.current_key_id(),
                  "generated a privacy key file: back it up apart from the database; without it stored shopper addresses are unreadable");
        }
        let db = Db::connect(&config.database.url, config.database.max_connections, vault)
            .await
            .map_err(|e| ServeError::database(&config.database.url, e))?;
        if config.auth.mode == AuthMode::Envelope {
            warn!(
                "auth.mode = \"envelope\": senders are NOT authenticated; anyone can forge a store's From. For local development only."
            );
        }
        let smtp_listener = bind("smtp.listen", &config.smtp.listen).await?;
        let api_listener = bind("api.listen", &config.api.listen).await?;
        let public_listener = match config.api.public_listen.as_str() {
            "" => None,
            addr => Some(bind("api.public_listen", addr).await?),
        };
        let submission_listener = match config.submission.listen.as_str() {
            "" => None,
            addr => Some(bind("submission.listen", addr).await?),
        };
        let submission_addr = submission_listener.as_ref().and_then(|l| l.local_addr().ok());
        let smtp_addr = local_addr("smtp.listen", &config.smtp.listen, &smtp_listener)?;
        let api_addr = local_addr("api.listen", &config.api.listen, &api_listener)?;
        let public_addr = match &public_listener {
            Some(l) => Some(local_addr("api.public_listen", &config.api.public_listen, l)?),
            None => None,
        };
        // Revoke links point at the address actually bound (port 0 picks one); config
        // validation refused 0.0.0.0 without api.public_url.
        config.api.public_url.get_or_insert_with(|| format!("http://{}", public_addr.unwrap_or(api_addr)));
        let config = Arc::new(config);
        let (api_token, token_generated) = match &config.api.token {
            Some(t) => (t.clone(), false),
            None => (crate::address::random_token(32), true),
        };
        let (trigger, shutdown) = shutdown::channel();
        let wake = Arc::new(Notify::new());
        let writer = crate::queue::writer::Writer::start(db.clone(), config.relay.domain.clone());
        let mut tasks = JoinSet::new();

        let (tls, certificate) = match (&config.smtp.tls_cert_path, &config.smtp.tls_key_path) {
            (Some(cert), Some(key)) => {
                let (acceptor, certificate) = crate::smtp::tls::acceptor(cert, key)?;
                (Some(acceptor), Some(certificate))
            }
            _ => (None, None),
        };
        let data_memory = smtp::backend::DataBudget::new(config.smtp.data_memory_bytes);
        let ctx = Arc::new(Context {
            config: config.clone(),
            db: db.clone(),
            auth: Authorizer { mode: config.auth.mode },
            dmarc: match config.auth.mode {
                AuthMode::Dmarc => Some(DmarcVerifier::new(
                    crate::dns::resolver(&config.dns.nameservers)?,
                    config.smtp_hostname(),
                )),
                AuthMode::Envelope => None,
            },
            wake: wake.clone(),
            backpressure: crate::queue::Backpressure::new(config.queue.max_messages),
            writer: writer.clone(),
            rewrite_memory: smtp::backend::MemoryBudget::new(config.smtp.rewrite_memory_bytes),
            data_memory: data_memory.clone(),
            tls,
        });
        if let Some(listener) = submission_listener {
            tasks.spawn(smtp::listener::serve(listener, Listener::Submission, ctx.clone(), shutdown.clone()));
        }
        tasks.spawn(smtp::listener::serve(smtp_listener, Listener::Mx, ctx, shutdown.clone()));

        let (signer, dkim_generated) = dkim_signer(&config)?;
        let node = config.node_id();
        info!(node = %node, "node id (queue.node_id)");
        let workers = Arc::new(Workers {
            db: db.clone(),
            dispatcher: dispatcher(&config)?,
            signer: Arc::new(signer),
            config: config.egress.clone(),
            wake,
            node: node.clone(),
            relay_domain: config.relay.domain.clone(),
            writer,
        });
        tasks.spawn(workers.run(shutdown.clone()));
        // The shopper's side: webhook POSTs from the outbox, and the retention sweep.
        let webhooks =
            crate::webhook::Sender::new(db.clone(), config.webhooks.clone(), &node, Arc::default())?;
        tasks.spawn(Arc::new(webhooks).run(shutdown.clone()));
        tasks.spawn(crate::retention::run(db.clone(), config.clone(), node.clone(), shutdown.clone()));

        let state = Arc::new(ApiState::new(config.clone(), db.clone(), api_token.clone()));
        tasks.spawn(serve_http("api.listen", api_listener, api::router(state.clone()), shutdown.clone()));
        if let Some(listener) = public_listener {
            tasks.spawn(serve_http(
                "api.public_listen",
                listener,
                api::public_router(state),
                shutdown.clone(),
            ));
        }
        info!(smtp = %smtp_addr, api = %api_addr, public = ?public_addr, domain = %config.relay.domain, "maskrelay running");
        Ok(Self {
            smtp_addr,
            api_addr,
            public_addr,
            submission_addr,
            api_token,
            token_generated,
            db,
            dkim_generated,
            data_memory,
            given,
            certificate,
            trigger,
            tasks,
        })
    }

    /// Applies what can be swapped while mail flows: the TLS certificate (new handshakes
    /// get it) and the privacy keys (after they are checked against the database, as at
    /// start). Anything else that changed is named in the log for a restart. A part that
    /// fails keeps its old value.
    pub async fn reload(&mut self, fresh: Config) -> Reloaded {
        let mut done = Reloaded::default();
        let changed = changed_keys(&self.given, &fresh);
        match (&self.certificate, &fresh.smtp.tls_cert_path, &fresh.smtp.tls_key_path) {
            (Some(certificate), Some(cert), Some(key)) => match certificate.reload(cert, key) {
                Ok(()) => done.tls = true,
                Err(e) => done.failed.push(format!("TLS certificate: {e}")),
            },
            // STARTTLS cannot be switched on or off in listeners already running.
            (Some(_), _, _) | (None, Some(_), _) => done.need_restart.push("smtp.tls_cert_path".into()),
            (None, None, _) => {}
        }
        match Vault::from_config(&fresh.privacy, false) {
            Ok((vault, _)) => {
                let candidate =
                    Db { pool: self.db.pool.clone(), backend: self.db.backend, vault: Arc::new(vault) };
                match crate::store::rekey::check(&candidate).await {
                    Ok(()) => {
                        self.db.vault.replace(&candidate.vault);
                        done.privacy_keys = true;
                    }
                    Err(e) => done.failed.push(format!("privacy keys: {e}")),
                }
            }
            Err(e) => done.failed.push(format!("privacy keys: {e}")),
        }
        done.need_restart.extend(changed.into_iter().filter(|k| !RELOADABLE.contains(&k.as_str())));
        done.need_restart.sort();
        done.need_restart.dedup();
        if done.failed.is_empty() {
            // The new file's paths are what the next reload compares against.
            self.given.smtp.tls_cert_path = fresh.smtp.tls_cert_path.clone();
            self.given.smtp.tls_key_path = fresh.smtp.tls_key_path.clone();
            self.given.privacy = fresh.privacy.clone();
        }
        done
    }

    /// Stops accepting, lets sessions and deliveries in progress finish (up to 30 s),
    /// then returns. Anything not delivered stays in the queue for the next start.
    pub async fn shutdown(mut self) {
        self.trigger.trigger();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
            warn!("shutdown timed out; queued mail stays queued");
            self.tasks.abort_all();
        }
        self.db.pool.close().await;
    }
}

/// Serves one HTTP listener until shutdown.
async fn serve_http(
    key: &'static str,
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: shutdown::Shutdown,
) {
    let served =
        axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.wait().await }).await;
    if let Err(e) = served {
        warn!(listener = key, error = %e, "HTTP server stopped");
    }
}

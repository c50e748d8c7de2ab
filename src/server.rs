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
use crate::delivery::dkim::{self, Signer};
use crate::delivery::{Dispatcher, Workers, mx::MxDelivery, smarthost::Smarthost};
use crate::shutdown::{self, Trigger};
use crate::smtp::{self, Context, Listener};
use crate::store::{Db, StoreError, Vault};

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {key} = {addr}: {source}")]
    Bind { key: &'static str, addr: String, source: std::io::Error },
    #[error("egress: {0}")]
    Egress(String),
    #[error("{0}")]
    Dkim(#[from] crate::delivery::dkim::DkimError),
    #[error("{0}")]
    Tls(#[from] crate::smtp::tls::TlsError),
    #[error("dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("{0}")]
    Keys(#[from] crate::store::VaultError),
    #[error("{0}")]
    Webhook(#[from] crate::webhook::ClientError),
}

/// A running relay.
pub struct Relay {
    pub smtp_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The submission listener's address, when `submission.listen` is set.
    pub submission_addr: Option<SocketAddr>,
    /// The operator token in force.
    pub api_token: String,
    /// True when the token was generated at start (and must be shown once).
    pub token_generated: bool,
    pub db: Db,
    trigger: Trigger,
    tasks: JoinSet<()>,
}

async fn bind(key: &'static str, addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { key, addr: addr.to_owned(), source })
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

/// The relay domain's DKIM key; on first start without one, an Ed25519 key is generated
/// (instant, unlike RSA) and the record to publish is logged.
fn dkim_signer(config: &Config) -> Result<Signer, ServeError> {
    let path = std::path::Path::new(&config.dkim.private_key_path);
    if !path.exists() {
        dkim::generate(path, dkim::Algorithm::Ed25519)?;
        info!(path = %path.display(), "generated a DKIM key");
    }
    let signer = Signer::load(path, &config.relay.domain, &config.dkim.selector)?;
    info!(record = %format!("{}._domainkey.{} TXT \"{}\"", config.dkim.selector, config.relay.domain, signer.dns_record()), "DKIM key loaded");
    Ok(signer)
}

impl Relay {
    /// Connects the database (running migrations), binds the listeners and starts all
    /// tasks. Port 0 in a listen address picks a free port (see `smtp_addr`, `api_addr`).
    pub async fn start(mut config: Config) -> Result<Self, ServeError> {
        crate::metrics::install();
        let (vault, created) = Vault::from_config(&config.privacy, true)?;
        if created {
            warn!(path = %config.privacy.key_file, key_id = %vault.current_key_id(),
                  "generated a privacy key file: back it up apart from the database; without it stored shopper addresses are unreadable");
        }
        let db = Db::connect(&config.database.url, config.database.max_connections, vault).await?;
        if config.auth.mode == AuthMode::Envelope {
            warn!(
                "auth.mode = \"envelope\": senders are NOT authenticated; anyone can forge a store's From. For local development only."
            );
        }
        let smtp_listener = bind("smtp.listen", &config.smtp.listen).await?;
        let api_listener = bind("api.listen", &config.api.listen).await?;
        let submission_listener = match config.submission.listen.as_str() {
            "" => None,
            addr => Some(bind("submission.listen", addr).await?),
        };
        let submission_addr = submission_listener.as_ref().and_then(|l| l.local_addr().ok());
        let smtp_addr = smtp_listener.local_addr().map_err(|source| ServeError::Bind {
            key: "smtp.listen",
            addr: config.smtp.listen.clone(),
            source,
        })?;
        let api_addr = api_listener.local_addr().map_err(|source| ServeError::Bind {
            key: "api.listen",
            addr: config.api.listen.clone(),
            source,
        })?;
        // Revoke links point at the address actually bound (port 0 picks one).
        config.api.public_url.get_or_insert_with(|| format!("http://{api_addr}"));
        let config = Arc::new(config);
        let (api_token, token_generated) = match &config.api.token {
            Some(t) => (t.clone(), false),
            None => (crate::address::random_token(32), true),
        };
        let (trigger, shutdown) = shutdown::channel();
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();

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
            rewrite_memory: smtp::backend::MemoryBudget::new(config.smtp.rewrite_memory_bytes),
            tls: match (&config.smtp.tls_cert_path, &config.smtp.tls_key_path) {
                (Some(cert), Some(key)) => Some(crate::smtp::tls::acceptor(cert, key)?),
                _ => None,
            },
        });
        if let Some(listener) = submission_listener {
            tasks.spawn(smtp::listener::serve(listener, Listener::Submission, ctx.clone(), shutdown.clone()));
        }
        tasks.spawn(smtp::listener::serve(smtp_listener, Listener::Mx, ctx, shutdown.clone()));

        let node = format!("{}-{}", std::process::id(), crate::address::random_token(6));
        let workers = Arc::new(Workers {
            db: db.clone(),
            dispatcher: dispatcher(&config)?,
            signer: Arc::new(dkim_signer(&config)?),
            config: config.egress.clone(),
            wake,
            node: node.clone(),
            relay_domain: config.relay.domain.clone(),
        });
        tasks.spawn(workers.run(shutdown.clone()));
        // The shopper's side: webhook POSTs from the outbox, and the retention sweep.
        let webhooks =
            crate::webhook::Sender::new(db.clone(), config.webhooks.clone(), &node, Arc::default())?;
        tasks.spawn(Arc::new(webhooks).run(shutdown.clone()));
        tasks.spawn(crate::retention::run(db.clone(), config.clone(), node.clone(), shutdown.clone()));

        let state = Arc::new(ApiState::new(config.clone(), db.clone(), api_token.clone()));
        let mut api_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(api_listener, api::router(state))
                .with_graceful_shutdown(async move { api_shutdown.wait().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "API server stopped");
            }
        });
        info!(smtp = %smtp_addr, api = %api_addr, domain = %config.relay.domain, "maskrelay running");
        Ok(Self { smtp_addr, api_addr, submission_addr, api_token, token_generated, db, trigger, tasks })
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

//! The `maskrelay` command: parse arguments, load config, call into the library.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use maskrelay::address::{Mailbox, StoreId};
use maskrelay::api::stores::NewStore;
use maskrelay::api::threads::{NewThreadRequest, ShopperInput, ThreadView};
use maskrelay::config::Config;
use maskrelay::server::Relay;
use maskrelay::store::audit::Actor;
use maskrelay::store::{Db, events, stores, threads};

#[derive(Parser)]
#[command(name = "maskrelay", version, about = "Email-forwarding privacy relay: masked aliases per order")]
struct Cli {
    /// TOML config file; without it, embedded defaults (plus MASKRELAY_* variables).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run SMTP, delivery workers and the HTTP API.
    Serve,
    /// Write a commented maskrelay.toml and print the DNS records to publish.
    Init {
        #[arg(long, default_value = "relay.localhost")]
        domain: String,
        /// Where to write the config.
        #[arg(long, default_value = "maskrelay.toml")]
        out: PathBuf,
        /// Overwrite an existing config file (an existing DKIM key is kept).
        #[arg(long)]
        force: bool,
        /// Where to write the DKIM private key.
        #[arg(long, default_value = "maskrelay-dkim.pem")]
        dkim_key: PathBuf,
        /// DKIM key type: rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463).
        #[arg(long, value_enum, default_value = "rsa")]
        dkim_algorithm: maskrelay::delivery::dkim::Algorithm,
        /// Where to write the privacy key file (an existing one is kept).
        #[arg(long, default_value = "maskrelay.key")]
        privacy_key: PathBuf,
    },
    /// Stores: add, list, show, delete, leaks.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Threads: create, show, list, revoke; revoke or erase a shopper.
    #[command(subcommand)]
    Thread(ThreadCmd),
    /// The outbound queue: list, stats, flush.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Privacy keys: generate a new one, rotate stored data to the current one.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Leak incidents: show one, notify its shoppers.
    #[command(subcommand)]
    Incident(IncidentCmd),
    /// Webhooks: add, list, delete.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Retention: run one sweep now (erase what is due, delete old events).
    #[command(subcommand)]
    Retention(RetentionCmd),
}

#[derive(Subcommand)]
enum IncidentCmd {
    Show {
        id: String,
    },
    /// Mail every shopper the incident hit and who was not told yet. SUBJECT and TEXT are
    /// one text, or JSON per language ('{"en":"…","ja":"…"}'); they may use {store},
    /// {order}, {marketplace} and {revoke_url}.
    Notify {
        #[arg(long)]
        store: String,
        id: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        text: String,
    },
}

#[derive(Subcommand)]
enum WebhookCmd {
    /// Register a URL for event types (repeat --event); prints the signing secret once.
    Add {
        #[arg(long)]
        url: String,
        #[arg(long = "event", required = true)]
        events: Vec<String>,
    },
    List,
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum RetentionCmd {
    /// One sweep, as the relay runs it every threads.retention_interval_secs.
    Run,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print a new random key (base64), to put first in privacy.key_file or privacy.keys.
    Generate,
    /// Re-seal every stored value under the current (first) key, with progress; after it,
    /// older keys can be removed. Safe while the relay runs; run it again if interrupted.
    Rotate,
}

#[derive(Subcommand)]
enum StoreCmd {
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        contact: String,
        /// An approved sender: an address or @domain (repeat for more).
        #[arg(long = "sender")]
        senders: Vec<String>,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    Leaks {
        id: String,
    },
    /// The store's leak incidents, newest first.
    Incidents {
        id: String,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Issue a submission login (SMTP AUTH) for the store; prints the password once.
    Credentials {
        id: String,
    },
}

#[derive(Subcommand)]
enum ThreadCmd {
    Create {
        #[arg(long)]
        store: String,
        #[arg(long)]
        order: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        ttl_days: Option<u32>,
        /// The shopper's language (en, ja); default relay.locale.
        #[arg(long)]
        locale: Option<String>,
    },
    Show {
        id: String,
    },
    List {
        #[arg(long)]
        store: String,
    },
    Revoke {
        id: String,
    },
    /// Revoke every thread of a shopper.
    RevokeShopper {
        email: String,
    },
    /// Forget a shopper's address and name for good.
    EraseShopper {
        email: String,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    Stats,
    /// Make every queued message due now.
    Flush,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MASKRELAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maskrelay: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maskrelay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Init { domain, out, force, dkim_key, dkim_algorithm, privacy_key } = &cli.command {
        return init(domain, out, *force, dkim_key, *dkim_algorithm, privacy_key);
    }
    if let Command::Keys(KeysCmd::Generate) = &cli.command {
        println!("{}", maskrelay::store::Vault::generate_key());
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref()).context("configuration")?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Init { .. } => unreachable!("handled above"),
        Command::Store(cmd) => store_cmd(&config, cmd).await,
        Command::Thread(cmd) => thread_cmd(&config, cmd).await,
        Command::Queue(cmd) => queue_cmd(&config, cmd).await,
        Command::Keys(KeysCmd::Generate) => unreachable!("handled above"),
        Command::Keys(KeysCmd::Rotate) => rotate_keys(&config).await,
        Command::Incident(cmd) => incident_cmd(&config, cmd).await,
        Command::Webhook(cmd) => webhook_cmd(&config, cmd).await,
        Command::Retention(RetentionCmd::Run) => {
            print_json(&maskrelay::retention::sweep(&db(&config).await?, &config).await?)
        }
    }
}

/// A text as given on the command line: a JSON object per language when it is one
/// (`{"en":"…","ja":"…"}`), else one text for every language (which may start with a
/// `{store}` hole).
fn localized(text: &str) -> maskrelay::leak::notify::Localized {
    use maskrelay::leak::notify::Localized;
    match serde_json::from_str::<std::collections::HashMap<String, String>>(text) {
        Ok(per_locale) => Localized::PerLocale(per_locale),
        Err(_) => Localized::One(text.to_owned()),
    }
}

async fn incident_cmd(config: &Config, cmd: IncidentCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        IncidentCmd::Show { id } => print_json(&maskrelay::store::incidents::get(&db, &id).await?),
        IncidentCmd::Notify { store, id, subject, text } => {
            let req = maskrelay::api::incidents::NotifyRequest {
                subject: localized(&subject),
                text: localized(&text),
            };
            req.validate().map_err(api_err)?;
            let store = store_id(&store)?;
            let outcome = maskrelay::leak::notify::notify(
                &db,
                config,
                store.as_str(),
                &id,
                &req.subject,
                &req.text,
                Actor::Cli,
            )
            .await?;
            print_json(&outcome)
        }
    }
}

async fn webhook_cmd(config: &Config, cmd: WebhookCmd) -> Result<()> {
    use maskrelay::store::webhooks;
    let db = db(config).await?;
    match cmd {
        WebhookCmd::Add { url, events } => {
            let (url, events) =
                maskrelay::api::webhooks::NewWebhook { url, events }.validate().map_err(api_err)?;
            print_json(&webhooks::create(&db, &url, &events, Actor::Cli).await?)
        }
        WebhookCmd::List => print_json(&webhooks::list(&db).await?),
        WebhookCmd::Delete { id } => {
            webhooks::delete(&db, &id, Actor::Cli).await?;
            print_json(&serde_json::json!({"deleted": id}))
        }
    }
}

async fn serve(config: Config) -> Result<()> {
    let relay = Relay::start(config).await?;
    if relay.token_generated {
        // Shown once on the terminal, never logged: set api.token to keep one.
        println!(
            "API token (generated for this run; set api.token or MASKRELAY_API_TOKEN to keep one): {}",
            relay.api_token
        );
    }
    println!("SMTP on {}, HTTP API on {}", relay.smtp_addr, relay.api_addr);
    wait_for_signal().await;
    tracing::info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The database for a one-off command. The key file must exist already: only `serve` and
/// `init` create one, so a command run from the wrong directory fails instead of starting
/// a second keyring.
async fn db(config: &Config) -> Result<Db> {
    let (vault, _) = maskrelay::store::Vault::from_config(&config.privacy, false)?;
    Ok(Db::connect(&config.database.url, 2, vault).await?)
}

async fn rotate_keys(config: &Config) -> Result<()> {
    let db = db(config).await?;
    eprintln!("re-sealing stored values under key {}", db.vault.current_key_id());
    let report = maskrelay::store::rekey::rotate(&db, |p| {
        eprintln!("  {}: {}/{} rows scanned, {} re-sealed", p.table, p.scanned, p.total, p.resealed);
    })
    .await?;
    for (table, scanned, resealed) in report {
        println!("{table}: {scanned} rows, {resealed} re-sealed");
    }
    println!("done: older keys can now be removed from the keyring");
    Ok(())
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn api_err(e: maskrelay::api::errors::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

async fn store_cmd(config: &Config, cmd: StoreCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        StoreCmd::Add { id, name, contact, senders } => {
            let (id, fields) = NewStore { id, name, contact, senders }.validate().map_err(api_err)?;
            print_json(&stores::create(&db, &id, &fields, Actor::Cli).await?)
        }
        StoreCmd::List => print_json(&stores::list(&db).await?),
        StoreCmd::Show { id } => print_json(&stores::get(&db, &store_id(&id)?).await?),
        StoreCmd::Delete { id } => {
            let n = stores::delete(&db, &store_id(&id)?, Actor::Cli).await?;
            print_json(&serde_json::json!({"deleted": id, "threads_revoked": n}))
        }
        StoreCmd::Leaks { id } => print_json(&events::leaks(&db, store_id(&id)?.as_str()).await?),
        StoreCmd::Incidents { id, limit } => {
            print_json(&maskrelay::store::incidents::list(&db, store_id(&id)?.as_str(), None, limit).await?)
        }
        StoreCmd::Credentials { id } => {
            print_json(&maskrelay::store::credentials::create(&db, &store_id(&id)?, Actor::Cli).await?)
        }
    }
}

fn store_id(id: &str) -> Result<StoreId> {
    StoreId::parse(id).map_err(|e| anyhow::anyhow!("store id: {e}"))
}

fn mailbox(email: &str) -> Result<Mailbox> {
    Mailbox::parse(email).map_err(|_| anyhow::anyhow!("not an email address"))
}

async fn thread_cmd(config: &Config, cmd: ThreadCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        ThreadCmd::Create { store, order, email, name, ttl_days, locale } => {
            let req =
                NewThreadRequest { order, store, shopper: ShopperInput { email, name }, ttl_days, locale };
            let new = req.validate(config).map_err(api_err)?;
            if stores::get(&db, &new.store).await.is_err() {
                bail!("store: no such store");
            }
            let (thread, _) = threads::create(&db, &new, Actor::Cli).await?;
            print_json(&ThreadView::new(&thread, config))
        }
        ThreadCmd::Show { id } => print_json(&ThreadView::new(&threads::get(&db, &id).await?, config)),
        ThreadCmd::List { store } => {
            let list = threads::list_for_store(&db, &store_id(&store)?).await?;
            print_json(&list.iter().map(|t| ThreadView::new(t, config)).collect::<Vec<_>>())
        }
        ThreadCmd::Revoke { id } => {
            let t = threads::revoke(&db, &id, Actor::Cli).await?;
            print_json(&ThreadView::new(&t, config))
        }
        ThreadCmd::RevokeShopper { email } => {
            let n = threads::revoke_shopper(&db, &mailbox(&email)?, Actor::Cli).await?;
            print_json(&serde_json::json!({"revoked": n}))
        }
        ThreadCmd::EraseShopper { email } => {
            let n = threads::erase_shopper(&db, &mailbox(&email)?, Actor::Cli).await?;
            print_json(&serde_json::json!({"erased": n}))
        }
    }
}

async fn queue_cmd(config: &Config, cmd: QueueCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        QueueCmd::List { limit } => print_json(&maskrelay::queue::list(&db, limit).await?),
        QueueCmd::Stats => {
            let (depth, oldest) = maskrelay::queue::depth(&db).await?;
            print_json(&serde_json::json!({"queued": depth, "oldest_seconds": oldest}))
        }
        QueueCmd::Flush => {
            let n = maskrelay::queue::retry_all_now(&db).await?;
            print_json(&serde_json::json!({"due_now": n}))
        }
    }
}

fn init(
    domain: &str,
    out: &PathBuf,
    force: bool,
    dkim_key: &PathBuf,
    algorithm: maskrelay::delivery::dkim::Algorithm,
    privacy_key: &PathBuf,
) -> Result<()> {
    use maskrelay::delivery::dkim;
    maskrelay::address::Mailbox::parse(&format!("postmaster@{domain}"))
        .map_err(|_| anyhow::anyhow!("--domain: {domain:?} is not a domain name"))?;
    if out.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    if dkim_key.exists() {
        println!("Keeping the DKIM key at {}.", dkim_key.display());
    } else {
        dkim::generate(dkim_key, algorithm)?;
        println!("Wrote the DKIM private key to {} (mode 0600).", dkim_key.display());
    }
    if privacy_key.exists() {
        println!("Keeping the privacy key file at {}.", privacy_key.display());
    } else {
        maskrelay::store::Vault::create_key_file(privacy_key)?;
        println!(
            "Wrote the privacy key file to {} (mode 0600). Back it up apart from the database.",
            privacy_key.display()
        );
    }
    maskrelay::store::Vault::read_key_file(privacy_key)?;
    let selector = maskrelay::config::Dkim::default().selector;
    let signer = dkim::Signer::load(dkim_key, domain, &selector)?;
    let token = maskrelay::address::random_token(32);
    let key_path = std::fs::canonicalize(dkim_key).unwrap_or_else(|_| dkim_key.clone());
    std::fs::write(
        out,
        maskrelay::config::commented_template(
            domain,
            &token,
            &selector,
            &key_path.display().to_string(),
            &std::fs::canonicalize(privacy_key).unwrap_or_else(|_| privacy_key.clone()).display().to_string(),
        ),
    )
    .with_context(|| format!("writing {}", out.display()))?;
    println!("Wrote {} (it holds the API token: keep it private).\n", out.display());
    println!(
        "Publish these DNS records for {domain} (replace 192.0.2.10 with this host's public address):\n"
    );
    println!("{domain}.  IN MX  10 {domain}.");
    println!("{domain}.  IN A   192.0.2.10");
    println!("{domain}.  IN TXT \"v=spf1 a:{domain} -all\"");
    println!("_dmarc.{domain}.  IN TXT \"v=DMARC1; p=reject; adkim=s; aspf=s\"");
    println!("{selector}._domainkey.{domain}.  IN TXT \"{}\"", signer.dns_record());
    Ok(())
}

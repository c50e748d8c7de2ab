//! The `maskrelay` command: parse arguments, load config, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use maskrelay::address::{Mailbox, StoreId};
use maskrelay::api::paging::{PageQuery, Paged};
use maskrelay::api::stores::NewStore;
use maskrelay::api::threads::{NewThreadRequest, ShopperInput, ThreadQuery, ThreadView};
use maskrelay::config::{Config, EgressMode, LogFormat};
use maskrelay::server::Relay;
use maskrelay::store::audit::Actor;
use maskrelay::store::{Db, events, stores, threads};

/// `println!` for a command's output (`out`).
macro_rules! outln {
    ($($t:tt)*) => { out(format_args!($($t)*), true) };
}

/// `print!` for a command's output (`out`).
macro_rules! outp {
    ($($t:tt)*) => { out(format_args!($($t)*), false) };
}

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
    /// Run SMTP, delivery workers and the HTTP API. SIGHUP reloads the TLS certificate and
    /// the privacy keys; SIGTERM or Ctrl-C stops it.
    Serve,
    /// Write a commented maskrelay.toml (mode 0600: it holds the API token), the keys, and
    /// print the DNS records to publish, in zone-file syntax, on stdout.
    Init {
        #[arg(long, default_value = "relay.localhost")]
        domain: String,
        /// This host's public address, for the A, SPF and PTR records (else a placeholder).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Deliver through this smarthost (host:port) instead of by MX: written to the
        /// config, and the SPF record names the provider's include.
        #[arg(long)]
        smarthost: Option<String>,
        /// Where DMARC aggregate reports go (default dmarc-reports@ the parent domain); not
        /// an address in the relay domain, which takes mail for aliases only.
        #[arg(long)]
        dmarc_rua: Option<String>,
        /// Give the written files to this user (and its group), e.g. the service user when
        /// init runs as root in /etc/maskrelay.
        #[arg(long)]
        owner: Option<String>,
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
    /// Threads: create, show, list, disable, enable, revoke; revoke or erase a shopper.
    #[command(subcommand)]
    Thread(ThreadCmd),
    /// The outbound queue: list, stats, flush; show, delete, hold, release one message.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Privacy keys: generate a new one, rotate stored data to the current one.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Ask the running relay's /healthz (for container health checks): exit 0 when healthy.
    Health {
        /// The health URL; default http://<api.listen>/healthz (0.0.0.0 asked on 127.0.0.1).
        #[arg(long)]
        url: Option<String>,
    },
    /// Checks against the world: `check dns` looks the relay domain's records up.
    #[command(subcommand)]
    Check(CheckCmd),
    /// The configuration: `config check` validates it and prints it, secrets masked.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Copy the SQLite database to FILE while the relay runs (VACUUM INTO). The privacy keys
    /// are not in it: back them up apart.
    Backup {
        /// The copy to write; must not exist.
        file: PathBuf,
    },
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
enum CheckCmd {
    /// Look up MX, A, SPF, DKIM, DMARC and PTR through dns.nameservers (or the system
    /// resolver) and say what is missing or wrong; exit 1 if anything is.
    Dns {
        /// The relay's public address, for the SPF and PTR checks (default: its A record).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
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
enum ConfigCmd {
    /// Validate the configuration (file and MASKRELAY_* variables) and the files it names;
    /// print the effective configuration with secrets masked.
    Check,
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
    /// Live stores by id, one page (the JSON the API answers, with `next`).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
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
    /// Threads, newest first, one page (the JSON the API answers, with `next`).
    List {
        /// Only threads of this store id.
        #[arg(long)]
        store: Option<String>,
        /// Only threads of this order reference.
        #[arg(long)]
        order: Option<String>,
        /// Only threads in this state: active, disabled, revoked, expired, erased.
        #[arg(long)]
        status: Option<String>,
        /// Only threads of this shopper address (matched through the blind index).
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Pause a thread: its aliases refuse mail (550 5.1.1) until it is enabled again.
    Disable {
        id: String,
    },
    /// Lift a pause.
    Enable {
        id: String,
    },
    /// End a thread for good.
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

/// The paging of a listing command, as the API's `?limit=` and `?after=`.
#[derive(clap::Args)]
struct PageArgs {
    /// Rows per page, 1 to 1000.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// The `next` cursor of the page before.
    #[arg(long)]
    after: Option<String>,
}

impl PageArgs {
    fn page(&self) -> Result<maskrelay::api::paging::Page> {
        PageQuery { limit: Some(self.limit), after: self.after.clone() }.page().map_err(api_err)
    }
}

#[derive(Subcommand)]
enum QueueCmd {
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    Stats,
    /// Make every queued message (not held) due now.
    Flush,
    /// One queued message: attempts, last error, held, in flight (no address, no body).
    Show {
        id: String,
    },
    /// Delete a queued message without delivering it (no notice is sent).
    Delete {
        id: String,
    },
    /// Hold a queued message: not delivered until released.
    Hold {
        id: String,
    },
    /// Release a held message: due at once.
    Release {
        id: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("maskrelay: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("maskrelay: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: an error whose message already quotes its
/// cause (as many library errors do) is not followed by that cause again.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs to stderr as `[log]` says: text (colour only on a terminal, so journald and files
/// get plain lines) or one JSON object per line.
fn init_logging(log: &maskrelay::config::Log) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
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

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Init {
        domain,
        ip,
        smarthost,
        dmarc_rua,
        owner,
        out,
        force,
        dkim_key,
        dkim_algorithm,
        privacy_key,
    } = &cli.command
    {
        init_logging(&maskrelay::config::Log::default());
        let files = InitFiles { out, dkim_key, privacy_key, force: *force };
        let dns =
            InitDns { domain, ip: *ip, smarthost: smarthost.as_deref(), dmarc_rua: dmarc_rua.as_deref() };
        init(&dns, &files, *dkim_algorithm, owner.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Keys(KeysCmd::Generate) = &cli.command {
        outln!("{}", maskrelay::store::Vault::generate_key());
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(cli.config.as_deref()).context("configuration")?;
    init_logging(&config.log);
    let done = match cli.command {
        Command::Serve => serve(config, cli.config).await,
        Command::Init { .. } | Command::Keys(KeysCmd::Generate) => unreachable!("handled above"),
        Command::Store(cmd) => store_cmd(&config, cmd).await,
        Command::Thread(cmd) => thread_cmd(&config, cmd).await,
        Command::Queue(cmd) => queue_cmd(&config, cmd).await,
        Command::Keys(KeysCmd::Rotate) => rotate_keys(&config).await,
        Command::Health { url } => return health(&config, url).await,
        Command::Check(CheckCmd::Dns { ip }) => return check_dns(&config, ip).await,
        Command::Config(ConfigCmd::Check) => return config_check(&config),
        Command::Backup { file } => backup(&config, &file).await,
        Command::Incident(cmd) => incident_cmd(&config, cmd).await,
        Command::Webhook(cmd) => webhook_cmd(&config, cmd).await,
        Command::Retention(RetentionCmd::Run) => {
            print_json(&maskrelay::retention::sweep(&db(&config).await?, &config).await?)
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

async fn serve(config: Config, path: Option<PathBuf>) -> Result<()> {
    let mut relay = Relay::start(config).await?;
    if relay.token_generated {
        // Shown once on the terminal, never logged: set api.token to keep one.
        startup_line(format_args!(
            "API token (generated for this run; set api.token or MASKRELAY_API_TOKEN to keep one): {}",
            relay.api_token
        ));
    }
    startup_line(format_args!("SMTP on {}, HTTP API on {}", relay.smtp_addr, relay.api_addr));
    if let Some(public) = relay.public_addr {
        startup_line(format_args!("Shopper pages on {public}"));
    }
    loop {
        match next_signal().await {
            Signal::Stop => break,
            Signal::Reload => reload(&mut relay, path.as_deref()).await,
        }
    }
    tracing::info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// SIGHUP: read the configuration again and apply what can change while mail flows.
async fn reload(relay: &mut Relay, path: Option<&std::path::Path>) {
    let fresh = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; nothing changed");
            return;
        }
    };
    let done = relay.reload(fresh).await;
    for failure in &done.failed {
        tracing::error!(error = %failure, "reload: kept the old value");
    }
    if !done.need_restart.is_empty() {
        tracing::warn!(keys = %done.need_restart.join(", "), "reload: these keys changed and apply only after a restart");
    }
    tracing::info!(tls = done.tls, privacy_keys = done.privacy_keys, key_ids = %relay.db.vault.key_ids().join(","), "reloaded");
}

enum Signal {
    Stop,
    Reload,
}

async fn next_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Signal::Stop
}

/// The database for a one-off command. The key file must exist already: only `serve` and
/// `init` create one, so a command run from the wrong directory fails instead of starting
/// a second keyring.
async fn db(config: &Config) -> Result<Db> {
    let (vault, _) = maskrelay::store::Vault::from_config(&config.privacy, false)?;
    Db::connect(&config.database.url, 2, vault)
        .await
        .map_err(|e| maskrelay::server::ServeError::database(&config.database.url, e).into())
}

async fn rotate_keys(config: &Config) -> Result<()> {
    let db = db(config).await?;
    eprintln!("re-sealing stored values under key {}", db.vault.current_key_id());
    let report = maskrelay::store::rekey::rotate(&db, |p| {
        eprintln!("  {}: {}/{} rows scanned, {} re-sealed", p.table, p.scanned, p.total, p.resealed);
    })
    .await?;
    for (table, scanned, resealed) in report {
        outln!("{table}: {scanned} rows, {resealed} re-sealed");
    }
    outln!("done: older keys can now be removed from the keyring");
    Ok(())
}

/// A command's output, written in one piece. A reader that has gone (`| head`,
/// `| grep -q`) ends the command quietly, as it ends `cat`; `println!` panicked there
/// ("failed printing to stdout: Broken pipe") and failed the pipeline.
fn out(text: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut text = text.to_string();
    if newline {
        text.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("maskrelay: cannot write the output: {e}");
            std::process::exit(1);
        }
    }
}

/// `serve`'s lines on the terminal: a closed stdout must not stop the relay.
fn startup_line(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn api_err(e: maskrelay::api::errors::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message)
}

async fn store_cmd(config: &Config, cmd: StoreCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        StoreCmd::Add { id, name, contact, senders } => {
            let (id, fields) =
                NewStore { id, name, contact, senders }.validate(&config.relay.domain).map_err(api_err)?;
            print_json(&stores::create(&db, &id, &fields, Actor::Cli).await?)
        }
        StoreCmd::List { page } => {
            let page = page.page()?;
            let rows = stores::list(&db, page.after.as_deref(), page.fetch()).await?;
            print_json(&Paged::new(rows, &page, |s| s.id.to_string()))
        }
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
        ThreadCmd::Show { id } => print_thread(threads::get(&db, &id).await, config),
        ThreadCmd::List { store, order, status, email, page } => {
            let filter = ThreadQuery { store, order, status, email }.filter().map_err(api_err)?;
            let page = page.page()?;
            let after = page.after_key::<threads::ThreadKey>().map_err(api_err)?;
            let rows = threads::list(&db, &filter, after.as_ref(), page.fetch()).await?;
            let list = Paged::new(rows, &page, |t| threads::ThreadKey::of(t).to_string());
            print_json(&list.map(|t| ThreadView::new(&t, config)))
        }
        ThreadCmd::Disable { id } => print_thread(threads::disable(&db, &id, Actor::Cli).await, config),
        ThreadCmd::Enable { id } => print_thread(threads::enable(&db, &id, Actor::Cli).await, config),
        ThreadCmd::Revoke { id } => print_thread(threads::revoke(&db, &id, Actor::Cli).await, config),
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

/// A thread as the API shows it, or the error an operator can act on.
fn print_thread(found: Result<threads::Thread, maskrelay::store::StoreError>, config: &Config) -> Result<()> {
    match found {
        Ok(t) => print_json(&ThreadView::new(&t, config)),
        Err(maskrelay::store::StoreError::NotFound) => bail!("thread not found"),
        Err(e) => Err(e.into()),
    }
}

async fn queue_cmd(config: &Config, cmd: QueueCmd) -> Result<()> {
    let db = db(config).await?;
    match cmd {
        QueueCmd::List { limit } => print_json(&maskrelay::queue::list(&db, limit, None).await?),
        QueueCmd::Stats => {
            let (depth, oldest) = maskrelay::queue::depth(&db).await?;
            print_json(&serde_json::json!({"queued": depth, "oldest_seconds": oldest}))
        }
        QueueCmd::Flush => {
            let n = maskrelay::queue::retry_all_now(&db).await?;
            print_json(&serde_json::json!({"due_now": n}))
        }
        QueueCmd::Show { id } => print_json(&queued(maskrelay::queue::show(&db, &id).await)?),
        QueueCmd::Delete { id } => {
            queued(maskrelay::queue::delete(&db, &id, Actor::Cli).await)?;
            print_json(&serde_json::json!({"deleted": id}))
        }
        QueueCmd::Hold { id } => print_json(&queued(maskrelay::queue::hold(&db, &id, Actor::Cli).await)?),
        QueueCmd::Release { id } => {
            print_json(&queued(maskrelay::queue::release(&db, &id, Actor::Cli).await)?)
        }
    }
}

/// A queue tool's result, with "not queued" said as such.
fn queued<T>(found: Result<T, maskrelay::store::StoreError>) -> Result<T> {
    match found {
        Err(maskrelay::store::StoreError::NotFound) => {
            bail!("no such queued message (delivered, given up, deleted, or a wrong id)")
        }
        other => Ok(other?),
    }
}

/// Where `init` writes.
struct InitFiles<'a> {
    out: &'a PathBuf,
    dkim_key: &'a PathBuf,
    privacy_key: &'a PathBuf,
    force: bool,
}

/// What `init`'s records say.
struct InitDns<'a> {
    domain: &'a str,
    ip: Option<std::net::IpAddr>,
    smarthost: Option<&'a str>,
    dmarc_rua: Option<&'a str>,
}

/// Writes the config (0600: it holds the API token), the DKIM and privacy keys (0600), hands
/// them to `owner` if given, and prints the DNS records as a zone-file fragment on stdout
/// (everything else goes to stderr, so `init > relay.zone` keeps only the records).
fn init(
    dns: &InitDns<'_>,
    files: &InitFiles<'_>,
    algorithm: maskrelay::delivery::dkim::Algorithm,
    owner: Option<&str>,
) -> Result<()> {
    use maskrelay::delivery::dkim;
    let domain = dns.domain;
    maskrelay::address::Mailbox::parse(&format!("postmaster@{domain}"))
        .map_err(|_| anyhow::anyhow!("--domain: {domain:?} is not a domain name"))?;
    if let Some(s) = dns.smarthost
        && !s.contains(':')
    {
        bail!("--smarthost: {s:?} is not host:port");
    }
    let rua =
        dns.dmarc_rua.map(str::to_owned).unwrap_or_else(|| maskrelay::records::default_dmarc_rua(domain));
    let rua = rua.trim_start_matches("mailto:").to_owned();
    let rua_mailbox =
        Mailbox::parse(&rua).map_err(|_| anyhow::anyhow!("--dmarc-rua: {rua:?} is not an email address"))?;
    if rua_mailbox.domain().eq_ignore_ascii_case(domain) {
        bail!(
            "--dmarc-rua: {rua} is in the relay domain, which takes mail for aliases only: give an address you read"
        );
    }
    #[cfg(unix)]
    let owner = owner.map(maskrelay::admin::lookup_user).transpose()?;
    #[cfg(not(unix))]
    if owner.is_some() {
        bail!("--owner works on Unix only");
    }
    let (out, dkim_key, privacy_key) = (files.out, files.dkim_key, files.privacy_key);
    if out.exists() && !files.force {
        bail!("{} exists; pass --force to overwrite it", out.display());
    }
    if dkim_key.exists() {
        eprintln!("Keeping the DKIM key at {}.", dkim_key.display());
    } else {
        dkim::generate(dkim_key, algorithm)?;
        eprintln!("Wrote the DKIM private key to {} (mode 0600).", dkim_key.display());
    }
    if privacy_key.exists() {
        eprintln!("Keeping the privacy key file at {}.", privacy_key.display());
    } else {
        maskrelay::store::Vault::create_key_file(privacy_key)?;
        eprintln!(
            "Wrote the privacy key file to {} (mode 0600). Back it up apart from the database.",
            privacy_key.display()
        );
    }
    maskrelay::store::Vault::read_key_file(privacy_key)?;
    let selector = maskrelay::config::Dkim::default().selector;
    let signer = dkim::Signer::load(dkim_key, domain, &selector)?;
    let token = maskrelay::address::random_token(32);
    let absolute = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string();
    let text = maskrelay::config::commented_template(&maskrelay::config::Template {
        domain,
        token: &token,
        selector: &selector,
        dkim_key: &absolute(dkim_key),
        key_file: &absolute(privacy_key),
        smarthost: dns.smarthost,
    });
    maskrelay::admin::write_private(out, text.as_bytes(), files.force)?;
    eprintln!("Wrote {} (mode 0600: it holds the API token).", out.display());
    #[cfg(unix)]
    if let Some(owner) = owner {
        for path in [out, dkim_key, privacy_key] {
            maskrelay::admin::give_to(path, owner)?;
        }
        eprintln!(
            "Gave {}, {} and {} to uid {} gid {}.",
            out.display(),
            dkim_key.display(),
            privacy_key.display(),
            owner.0,
            owner.1
        );
    }
    let plan = maskrelay::records::Plan {
        domain: domain.to_owned(),
        host: domain.to_owned(),
        ip: dns.ip,
        egress: if dns.smarthost.is_some() { EgressMode::Smarthost } else { EgressMode::Mx },
        dkim: signer.records(),
        dmarc_rua: Some(rua),
    };
    eprintln!("Publish these DNS records (stdout; `maskrelay check dns` verifies them once published):\n");
    outp!("{}", plan.zone());
    Ok(())
}

/// `maskrelay health`: 0 when /healthz answers 200.
async fn health(config: &Config, url: Option<String>) -> Result<ExitCode> {
    let url = url.unwrap_or_else(|| maskrelay::admin::health_url(&config.api.listen));
    match maskrelay::admin::probe_health(&url).await {
        Ok(body) => {
            outln!("healthy: {body}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("maskrelay: unhealthy: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `maskrelay check dns`: every record, and exit 1 if any is missing or wrong.
async fn check_dns(config: &Config, ip: Option<std::net::IpAddr>) -> Result<ExitCode> {
    use maskrelay::records::{Plan, Status};
    let (signer, _) =
        maskrelay::delivery::dkim::Signer::from_config(&config.dkim, &config.relay.domain, false)
            .context("the DKIM key (serve generates one on first start; init writes one)")?;
    let plan = Plan {
        domain: config.relay.domain.clone(),
        host: config.smtp_hostname().to_owned(),
        ip,
        egress: config.egress.mode,
        dkim: signer.records(),
        // Only for the record it suggests: any rua outside the relay domain passes.
        dmarc_rua: Some(maskrelay::records::default_dmarc_rua(&config.relay.domain)),
    };
    let resolver = maskrelay::dns::resolver(&config.dns.nameservers)?;
    let servers = if config.dns.nameservers.is_empty() {
        "the system resolver".to_owned()
    } else {
        config.dns.nameservers.join(", ")
    };
    outln!("Checking the records of {} through {servers}:", config.relay.domain);
    let findings = plan.check(&resolver).await;
    for f in &findings {
        outln!("{f}");
    }
    let bad = findings.iter().filter(|f| matches!(f.status, Status::Missing | Status::Wrong)).count();
    if bad == 0 {
        outln!("All records are in place.");
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("{bad} record(s) missing or wrong: `maskrelay init` prints them in zone-file syntax.");
        Ok(ExitCode::FAILURE)
    }
}

/// `maskrelay config check`: the configuration loaded (else the caller already failed),
/// the files it names readable, then the effective values with secrets masked.
fn config_check(config: &Config) -> Result<ExitCode> {
    let mut problems = Vec::new();
    if let Err(e) = maskrelay::store::Vault::from_config(&config.privacy, false) {
        if config.privacy.keys.is_empty() && !std::path::Path::new(&config.privacy.key_file).exists() {
            eprintln!(
                "note: privacy.key_file {} does not exist yet; serve creates it on first start",
                config.privacy.key_file
            );
        } else {
            problems.push(e.to_string());
        }
    }
    if std::path::Path::new(&config.dkim.private_key_path).exists() {
        if let Err(e) =
            maskrelay::delivery::dkim::Signer::from_config(&config.dkim, &config.relay.domain, false)
        {
            problems.push(e.to_string());
        }
    } else {
        eprintln!(
            "note: dkim.private_key_path {} does not exist yet; serve generates an RSA-2048 key",
            config.dkim.private_key_path
        );
    }
    if let (Some(cert), Some(key)) = (&config.smtp.tls_cert_path, &config.smtp.tls_key_path)
        && let Err(e) = maskrelay::smtp::tls::acceptor(cert, key)
    {
        problems.push(e.to_string());
    }
    outp!("{}", config.to_masked_toml());
    if problems.is_empty() {
        eprintln!("configuration OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("maskrelay: configuration: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `maskrelay backup FILE`: an online copy of the SQLite database.
async fn backup(config: &Config, file: &std::path::Path) -> Result<()> {
    let done = maskrelay::admin::backup_sqlite(&config.database.url, file).await?;
    outln!("Wrote {} ({} bytes, mode 0600, integrity checked).", file.display(), done.bytes);
    let keys = if config.privacy.keys.is_empty() {
        format!("privacy.key_file ({})", config.privacy.key_file)
    } else {
        "privacy.keys".to_owned()
    };
    outln!(
        "The privacy keys are not in the backup: without {keys} the shopper data in it cannot be read. \
         Back the key up apart from the database backups."
    );
    Ok(())
}

//! `maskrelay-threads`: fills a relay's database with many threads, fast, and measures how
//! long RCPT takes against that relay.
//!
//! `load` writes the rows the product writes (`store::threads::create`): the same id,
//! alias and token generators from the library, the shopper address and name sealed by
//! the relay's own `Vault` under the thread id, the blind index of the normalized address.
//! It skips what `create` does around the row (the identity lookup before the insert and
//! the audit entry after it), and it writes in multi-row INSERTs, thousands of rows per
//! transaction, with the secondary indexes of `threads` dropped during the load and created
//! again from their own stored definitions at the end (the schema after a load is the
//! migrations' schema). On SQLite the loading connection turns `synchronous` off and takes a
//! large page cache; the relay that serves the file afterwards uses its own settings.
//!
//! `rcpt` talks SMTP to a running relay: per session, `MAIL FROM` an approved sender, then
//! RCPT TO aliases picked at random from the sample file `load` wrote, 40 per transaction,
//! RSET, again; it reports p50/p90/p99/max of the RCPT round trip.
//!
//! ```text
//! maskrelay-threads --config bench.toml load --count 10000000 --samples /tmp/aliases.txt
//! maskrelay serve --config bench.toml &
//! maskrelay-threads --config bench.toml rcpt --samples /tmp/aliases.txt --count 100000
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use maskrelay::address::{self, Mailbox, SenderPattern, StoreId};
use maskrelay::config::Config;
use maskrelay::store::stores::{self, StoreFields};
use maskrelay::store::{Backend, Db, Field, Vault};
use rand::seq::IndexedRandom as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The sender every bench store approves (a whole domain).
const SENDER: &str = "orders@shop.bench";
const COLUMNS: usize = 14;

#[derive(Parser)]
#[command(name = "maskrelay-threads", about = "Bulk thread loader and RCPT latency probe")]
struct Cli {
    /// The relay's config: database.url, privacy keys, smtp.listen, relay.domain.
    #[arg(long, short)]
    config: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write threads straight into the database.
    Load {
        /// Threads to write.
        #[arg(long, default_value_t = 10_000_000)]
        count: u64,
        /// Rows per INSERT statement. Small on purpose: sqlx-sqlite looks every parameter up by
        /// name (`sqlite3_bind_parameter_name`), so the cost per row grows with the statement.
        #[arg(long, default_value_t = 16)]
        rows: usize,
        /// Statements per transaction.
        #[arg(long, default_value_t = 1250)]
        statements: usize,
        /// Stores the threads are spread over (`bench-0` …).
        #[arg(long, default_value_t = 100)]
        stores: usize,
        /// Where to write a random sample of the shopper aliases (one local part a line).
        #[arg(long)]
        samples: PathBuf,
        /// How many aliases the sample holds.
        #[arg(long, default_value_t = 200_000)]
        sample_size: u64,
        /// Keep the secondary indexes while loading (slower; for comparison).
        #[arg(long)]
        keep_indexes: bool,
    },
    /// The lookup RCPT runs (`threads::find_by_alias`), in-process, without SMTP: one at a
    /// time, random sampled aliases.
    Lookup {
        #[arg(long)]
        samples: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
    /// RCPT latency against a running relay.
    Rcpt {
        #[arg(long)]
        samples: PathBuf,
        /// RCPT commands in all.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Concurrent SMTP sessions.
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        /// SMTP address; default: the config's smtp.listen.
        #[arg(long)]
        smtp: Option<SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = Config::load(Some(cli.config.as_path())).context("load the config")?;
    match cli.command {
        Cmd::Load { count, rows, statements, stores, samples, sample_size, keep_indexes } => {
            load(&config, count, rows, statements, stores, samples, sample_size, keep_indexes).await
        }
        Cmd::Lookup { samples, count } => lookup(&config, samples, count).await,
        Cmd::Rcpt { samples, count, sessions, smtp } => {
            let addr = match smtp {
                Some(a) => a,
                None => config.smtp.listen.parse().context("smtp.listen")?,
            };
            rcpt(&config, addr, samples, count, sessions).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// load

/// One thread row, in the column order of `INSERT_COLUMNS`.
struct Row {
    id: String,
    store: String,
    order: String,
    key: String,
    email: String,
    name: String,
    shopper_alias: String,
    store_alias: String,
    token: String,
    created: i64,
    expires: i64,
}

const INSERT_COLUMNS: &str = "id, store_id, order_ref, shopper_key, shopper_email, shopper_name, shopper_alias, \
                              store_alias, status, revoke_token, created_at, updated_at, expires_at, locale";

/// What `threads::create` writes for one new thread, with the library's generators and the
/// relay's vault.
fn make_row(vault: &Vault, store: &StoreId, run: &str, n: u64, now: i64, rng: &mut impl rand::Rng) -> Row {
    let id = format!("thr_{}", address::random_token(20));
    // A distinct shopper per thread: the worst case for the blind index and the aliases.
    let shopper = Mailbox::parse(&format!("shopper{n}@inbox{}.bench", n % 1000)).expect("valid address");
    let created = now - rng.random_range(0..30 * 86_400);
    Row {
        store: store.as_str().to_owned(),
        // The run's tag keeps (store, order, shopper) unique when a database is loaded twice.
        order: format!("order-{run}-{n}"),
        key: vault.blind_index(&shopper.normalized()),
        email: vault.seal_text(Field::ShopperEmail, &id, &shopper.expose()),
        name: vault.seal_text(Field::ShopperName, &id, &format!("Shopper {n}")),
        shopper_alias: address::new_shopper_alias_local(),
        store_alias: address::new_store_alias_local(store),
        token: address::random_token(32),
        created,
        // Active for a year: every alias in the sample accepts mail.
        expires: now + 365 * 86_400,
        id,
    }
}

fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO threads ({INSERT_COLUMNS}) VALUES ");
    for r in 0..rows {
        let b = r * COLUMNS;
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 1..=COLUMNS {
            if c > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", b + c));
        }
        sql.push(')');
    }
    sql
}

/// The secondary indexes of `threads` (not those behind PRIMARY KEY / UNIQUE columns): name
/// and the statement that created it.
async fn secondary_indexes(db: &Db) -> Result<Vec<(String, String)>> {
    use sqlx::Row as _;
    let sql = match db.backend {
        Backend::Sqlite => {
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'threads' AND sql IS NOT NULL"
        }
        Backend::Postgres => {
            "SELECT indexname::text AS name, indexdef::text AS sql FROM pg_indexes WHERE tablename = 'threads' \
             AND indexname NOT IN (SELECT conname::text FROM pg_constraint)"
        }
    };
    let rows = sqlx::query(sql).fetch_all(&db.pool).await?;
    rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("sql")?))).collect()
}

#[allow(clippy::too_many_arguments)]
async fn load(
    config: &Config,
    count: u64,
    rows_per_stmt: usize,
    statements: usize,
    store_count: usize,
    samples: PathBuf,
    sample_size: u64,
    keep_indexes: bool,
) -> Result<()> {
    let (vault, _) = Vault::from_config(&config.privacy, true).context("privacy keys")?;
    let db = Db::connect(&config.database.url, 2, vault).await.context("connect")?;
    let started = Instant::now();
    let mut store_ids = Vec::new();
    for s in 0..store_count {
        let id = StoreId::parse(&format!("bench-{s}"))?;
        let fields = StoreFields {
            name: format!("Bench Shop {s}"),
            contact: Mailbox::parse(&format!("support{s}@shop.bench"))?,
            senders: vec![SenderPattern::parse(SENDER)?],
        };
        match stores::create(&db, &id, &fields, maskrelay::store::audit::Actor::Cli).await {
            Ok(_) => {}
            Err(maskrelay::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store_ids.push(id);
    }
    let indexes = if keep_indexes { Vec::new() } else { secondary_indexes(&db).await? };
    for (name, _) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}"))).execute(&db.pool).await?;
    }
    eprintln!(
        "loading {count} threads into {:?} over {store_count} stores; {} secondary indexes dropped for the load",
        db.backend,
        indexes.len()
    );
    let mut conn = db.pool.acquire().await?;
    if db.backend == Backend::Sqlite {
        sqlx::raw_sql("PRAGMA synchronous=OFF; PRAGMA cache_size=-1000000;").execute(&mut *conn).await?;
    }

    // Rows are made on a blocking thread (sealing, HMAC, random tokens) while this task
    // writes the previous batch.
    let batch = rows_per_stmt * statements;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Row>>(4);
    let vault = db.vault.clone();
    let stores_for_maker = store_ids.clone();
    let maker = tokio::task::spawn_blocking(move || {
        let mut rng = rand::rng();
        let now = maskrelay::store::now();
        let run = address::random_token(6);
        let mut n = 0u64;
        while n < count {
            let len = batch.min((count - n) as usize);
            let rows: Vec<Row> = (0..len as u64)
                .map(|i| {
                    let k = n + i;
                    make_row(
                        &vault,
                        &stores_for_maker[(k % stores_for_maker.len() as u64) as usize],
                        &run,
                        k,
                        now,
                        &mut rng,
                    )
                })
                .collect();
            n += len as u64;
            if tx.blocking_send(rows).is_err() {
                break;
            }
        }
    });

    let mut sample = std::io::BufWriter::new(std::fs::File::create(&samples).context("samples file")?);
    let every = (count / sample_size.max(1)).max(1);
    let full_sql = insert_sql(rows_per_stmt);
    let mut written = 0u64;
    let mut last_report = Instant::now();
    while let Some(rows) = rx.recv().await {
        let mut txn = sqlx::Connection::begin(&mut *conn).await?;
        for chunk in rows.chunks(rows_per_stmt) {
            let sql = if chunk.len() == rows_per_stmt { full_sql.clone() } else { insert_sql(chunk.len()) };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.id.as_str())
                    .bind(r.store.as_str())
                    .bind(r.order.as_str())
                    .bind(r.key.as_str())
                    .bind(r.email.as_str())
                    .bind(r.name.as_str())
                    .bind(r.shopper_alias.as_str())
                    .bind(r.store_alias.as_str())
                    .bind("active")
                    .bind(r.token.as_str())
                    .bind(r.created)
                    .bind(r.created)
                    .bind(r.expires)
                    .bind("en");
            }
            q.execute(&mut *txn).await?;
        }
        txn.commit().await?;
        for (i, r) in rows.iter().enumerate() {
            if (written + i as u64) % every == 0 {
                writeln!(sample, "{}", r.shopper_alias)?;
            }
        }
        written += rows.len() as u64;
        if last_report.elapsed() >= Duration::from_secs(10) || written == count {
            let secs = started.elapsed().as_secs_f64();
            eprintln!("  {written}/{count} threads, {:.0} s, {:.0} rows/s", secs, written as f64 / secs);
            last_report = Instant::now();
        }
    }
    maker.await?;
    sample.flush()?;
    drop(conn);
    let load_secs = started.elapsed().as_secs_f64();
    for (name, sql) in &indexes {
        let t = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&db.pool).await?;
        eprintln!("  index {name} created again in {:.0} s", t.elapsed().as_secs_f64());
    }
    if db.backend == Backend::Sqlite {
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;").execute(&db.pool).await?;
    } else {
        sqlx::raw_sql("ANALYZE threads").execute(&db.pool).await?;
    }
    let total = started.elapsed().as_secs_f64();
    eprintln!(
        "done: {written} threads in {total:.0} s ({load_secs:.0} s rows at {:.0} rows/s, {:.0} s indexes)",
        written as f64 / load_secs,
        total - load_secs
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// lookup and rcpt

fn read_samples(samples: &std::path::Path) -> Result<Vec<String>> {
    let aliases: Vec<String> = std::fs::read_to_string(samples)?.lines().map(str::to_owned).collect();
    if aliases.is_empty() {
        bail!("no aliases in {}", samples.display());
    }
    Ok(aliases)
}

fn report(what: &str, lat: &mut [Duration], secs: f64) {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: {} in {secs:.1} s ({:.0}/s): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        lat.len(),
        lat.len() as f64 / secs,
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(*lat.last().expect("measured"))
    );
}

async fn lookup(config: &Config, samples: PathBuf, count: usize) -> Result<()> {
    let aliases = read_samples(&samples)?;
    let (vault, _) = Vault::from_config(&config.privacy, false).context("privacy keys")?;
    let db = Db::connect(&config.database.url, config.database.max_connections, vault).await?;
    let started = Instant::now();
    let mut lat = Vec::with_capacity(count);
    for _ in 0..count {
        let alias = aliases.choose(&mut rand::rng()).expect("not empty").clone();
        let t = Instant::now();
        let found = maskrelay::store::threads::find_by_alias(&db, &alias).await?;
        lat.push(t.elapsed());
        if found.is_none() {
            bail!("sampled alias {alias} not found");
        }
    }
    report(
        &format!("find_by_alias over {} sampled aliases", aliases.len()),
        &mut lat,
        started.elapsed().as_secs_f64(),
    );
    overhead(&db, count).await
}

/// What a lookup through the pool costs beside the query: `SELECT 1` through the pool
/// (acquire, the statement, and the checks of the connection's return) against the same
/// statement on a connection held outside the pool.
async fn overhead(db: &Db, count: usize) -> Result<()> {
    let mut through_pool = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&db.pool).await?;
        through_pool.push(t.elapsed());
    }
    report("SELECT 1 through the pool", &mut through_pool, started.elapsed().as_secs_f64());
    let mut conn = db.pool.acquire().await?.detach();
    let mut held = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        held.push(t.elapsed());
    }
    report("SELECT 1 on a held connection", &mut held, started.elapsed().as_secs_f64());
    let mut one_row = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        sqlx::query(
            "SELECT t.id, t.shopper_email FROM threads t JOIN stores s ON s.id = t.store_id \
             WHERE t.shopper_alias = $1 OR t.store_alias = $1",
        )
        .bind("nosuchalias")
        .fetch_optional(&mut conn)
        .await?;
        one_row.push(t.elapsed());
    }
    report(
        "the RCPT lookup's WHERE on a held connection (no row)",
        &mut one_row,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

struct Smtp {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Self { r: BufReader::new(r), w };
        c.expect(220).await?;
        c.cmd("EHLO probe.bench", 250).await?;
        Ok(c)
    }
    async fn reply(&mut self) -> Result<(u16, String)> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await? == 0 {
                bail!("connection closed after {all:?}");
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, all));
            }
        }
    }
    async fn expect(&mut self, code: u16) -> Result<()> {
        let (got, text) = self.reply().await?;
        if got != code {
            bail!("expected {code}, got {}", text.trim_end());
        }
        Ok(())
    }
    async fn cmd(&mut self, line: &str, code: u16) -> Result<()> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).await?;
        self.expect(code).await
    }
}

async fn rcpt(
    config: &Config,
    addr: SocketAddr,
    samples: PathBuf,
    count: usize,
    sessions: usize,
) -> Result<()> {
    let aliases: Vec<String> = std::fs::read_to_string(&samples)?.lines().map(str::to_owned).collect();
    if aliases.is_empty() {
        bail!("no aliases in {}", samples.display());
    }
    let aliases = std::sync::Arc::new(aliases);
    let domain = config.relay.domain.clone();
    // The relay closes a connection after `smtp.max_commands` commands (421): each session
    // opens a new one before it gets there, outside the timed RCPTs.
    let max_commands = config.smtp.max_commands;
    let per = count.div_ceil(sessions);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let aliases = aliases.clone();
        let domain = domain.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Smtp::open(addr).await?;
            let mut commands = 1; // EHLO
            let mut lat = Vec::with_capacity(per);
            while lat.len() < per {
                // MAIL, up to 40 RCPTs, RSET, and QUIT at the end.
                if commands + 43 > max_commands {
                    let _ = c.cmd("QUIT", 221).await;
                    c = Smtp::open(addr).await?;
                    commands = 1;
                }
                commands += 2 + 40.min(per - lat.len());
                c.cmd(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
                for _ in 0..40.min(per - lat.len()) {
                    let alias = aliases.choose(&mut rand::rng()).expect("not empty").clone();
                    let t = Instant::now();
                    c.cmd(&format!("RCPT TO:<{alias}@{domain}>"), 250).await?;
                    lat.push(t.elapsed());
                }
                c.cmd("RSET", 250).await?;
            }
            let _ = c.cmd("QUIT", 221).await;
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} RCPTs to {} distinct sampled aliases over {sessions} session(s) in {secs:.1} s ({:.0}/s): \
         p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        lat.len(),
        aliases.len(),
        lat.len() as f64 / secs,
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(pct(0.999)),
        ms(*lat.last().expect("measured"))
    );
    Ok(())
}

//! The operator's one-off commands beside the API: files `init` writes (owner-only, handed
//! to the service user), the health probe containers run, and the online SQLite backup.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    // The io error is part of the message, not a `source`: error chains would print it twice.
    #[error("{path}: {cause}")]
    File { path: String, cause: std::io::Error },
    #[error("--owner {0:?}: no such user (create it first: see deploy/maskrelay.sysusers)")]
    NoSuchUser(String),
    #[error("health check of {url}: {problem}")]
    Health { url: String, problem: String },
    #[error("backup: {0}")]
    Backup(String),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |cause| AdminError::File { path: path.display().to_string(), cause }
}

/// Writes `bytes` to `path` readable and writable by the owner only (0600), replacing the
/// file when `replace` is set, else refusing an existing one.
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), AdminError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(file_error(path))?;
    // An existing file keeps its mode through truncation: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(file_error(path))?;
    }
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(file_error(path))
}

/// The uid and gid of a user name (through the system's user database, so LDAP users
/// resolve too), or of `UID:GID` given as numbers.
#[cfg(unix)]
pub fn lookup_user(name: &str) -> Result<(u32, u32), AdminError> {
    if let Some((uid, gid)) = name.split_once(':')
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        return Ok((uid, gid));
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| AdminError::NoSuchUser(name.to_owned()))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r writes only into `pwd` and
    // `buf` (of the length given) and sets `result` to `&pwd` or null.
    let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(AdminError::NoSuchUser(name.to_owned()));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

/// Gives `path` to the user (and group) `owner`.
#[cfg(unix)]
pub fn give_to(path: &Path, owner: (u32, u32)) -> Result<(), AdminError> {
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).map_err(file_error(path))
}

/// The health URL of a relay listening on `api_listen`: an unspecified address (0.0.0.0,
/// [::]) is asked on loopback.
pub fn health_url(api_listen: &str) -> String {
    match api_listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let ip = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            format!("http://{ip}:{}/healthz", addr.port())
        }
        _ => format!("http://{api_listen}/healthz"),
    }
}

/// GETs an `http://host:port/path` URL (HTTP/1.1, no TLS: the health endpoint is local) and
/// returns the body if the status is 200.
pub async fn probe_health(url: &str) -> Result<String, AdminError> {
    let err = |problem: String| AdminError::Health { url: url.to_owned(), problem };
    let rest = url.strip_prefix("http://").ok_or_else(|| err("only http:// URLs".into()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| err(e.to_string()))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| err(e.to_string()))?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response).await.map_err(|e| err(e.to_string()))?;
        Ok::<_, AdminError>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| err("no answer within 5 s".into()))??;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_owned()).unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(err(format!("{status} {body}").trim().to_owned()));
    }
    Ok(body)
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Backup {
    pub bytes: u64,
}

/// Copies the SQLite database of `url` to `target` with `VACUUM INTO` (a consistent
/// snapshot taken inside one read transaction, so writers go on meanwhile; WAL content is
/// included), readable by the owner only, and checks the copy's integrity. Needs no
/// privacy key: sealed values are copied sealed.
pub async fn backup_sqlite(url: &str, target: &Path) -> Result<Backup, AdminError> {
    use sqlx::Connection as _;
    let source = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).ok_or_else(|| {
        AdminError::Backup(
            "database.url is not SQLite: back PostgreSQL up with pg_dump (README, \"Backups\")".into(),
        )
    })?;
    let source = source.split('?').next().unwrap_or(source);
    if !Path::new(source).exists() {
        return Err(AdminError::Backup(format!("database.url: {source} does not exist")));
    }
    // VACUUM INTO takes an empty file, so the copy is created owner-only before SQLite
    // writes into it.
    write_private(target, b"", false)?;
    let run = async {
        let mut conn = sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{source}?mode=ro"))
            .await
            .map_err(|e| AdminError::Backup(format!("opening {source}: {e}")))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target.display().to_string())
            .execute(&mut conn)
            .await
            .map_err(|e| AdminError::Backup(format!("VACUUM INTO {}: {e}", target.display())))?;
        conn.close().await.ok();
        let mut copy =
            sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", target.display()))
                .await
                .map_err(|e| AdminError::Backup(format!("opening the copy: {e}")))?;
        let (verdict,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await
            .map_err(|e| AdminError::Backup(format!("checking the copy: {e}")))?;
        copy.close().await.ok();
        if verdict != "ok" {
            return Err(AdminError::Backup(format!("the copy fails its integrity check: {verdict}")));
        }
        Ok(())
    };
    if let Err(e) = run.await {
        let _ = std::fs::remove_file(target);
        return Err(e);
    }
    let bytes = std::fs::metadata(target).map_err(file_error(target))?.len();
    Ok(Backup { bytes })
}

/// Reads a whole small file (a PEM key), naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, AdminError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(file_error(path))?;
    Ok(bytes)
}

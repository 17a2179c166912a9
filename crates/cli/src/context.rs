//! What every command that touches the store shares: where the store is,
//! the policy from `toolgate.toml`, and who the person at this terminal is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use toolgate::store::Store;
use toolgate::{PgStore, Policy, Principal, Role, SqliteStore};

/// The options every store command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The store: a SQLite file (created on first use), or a PostgreSQL
    /// database as postgres://USER@HOST:PORT/DATABASE (toolgate makes its
    /// tables on first use). Default: toolgate.db in your data directory
    /// (e.g. ~/.local/share/toolgate/toolgate.db). Also:
    /// TOOLGATE_DATABASE_URL.
    #[arg(
        long,
        visible_alias = "database-url",
        value_name = "PATH",
        env = "TOOLGATE_DATABASE_URL",
        global = true
    )]
    db: Option<String>,
    /// The configuration file with the policy rules. Default: toolgate.toml
    /// in the current directory, when there is one.
    #[arg(long, value_name = "PATH", env = "TOOLGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
}

impl StoreArgs {
    /// Where the store is.
    fn location(&self) -> anyhow::Result<Location> {
        match self.db.as_deref().filter(|db| !db.trim().is_empty()) {
            Some(url) => location_of(url),
            None => {
                let data = dirs::data_dir().context(
                    "cannot tell where your data directory is (HOME is not set?): pass --db PATH",
                )?;
                Ok(Location::Sqlite(data.join("toolgate").join("toolgate.db")))
            }
        }
    }

    /// Opens the store, which must exist: a mistyped `--db` is an error,
    /// not a new empty store.
    pub(crate) async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Location::Sqlite(path) = self.location()? {
            anyhow::ensure!(
                path.exists(),
                "there is no store at {}: nothing has run with it yet (check --db or TOOLGATE_DATABASE_URL; `toolgate run` creates it)",
                path.display()
            );
        }
        self.open_or_create_store().await
    }

    /// Opens the store, creating it on first use (a SQLite file, or
    /// toolgate's tables in an existing PostgreSQL database).
    pub(crate) async fn open_or_create_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        match self.location()? {
            Location::Sqlite(path) => {
                let store = SqliteStore::open(&path)
                    .with_context(|| format!("cannot open the store {}", path.display()))?;
                Ok(Arc::new(store))
            }
            Location::Postgres(url) => Ok(Arc::new(
                PgStore::connect(&url)
                    .await
                    .context("cannot open the PostgreSQL store")?,
            )),
        }
    }

    /// The policy: from `--config`, or `./toolgate.toml` when it exists, or
    /// none (each tool's hints decide).
    pub(crate) fn policy(&self) -> anyhow::Result<Policy> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("toolgate.toml"), false),
        };
        if !required && !path.exists() {
            return Ok(Policy::default());
        }
        load_policy(&path)
    }

    /// The text of the configuration file and its name for messages:
    /// `--config`, or `./toolgate.toml` when it exists, or none.
    pub(crate) fn config_text(&self) -> anyhow::Result<Option<(String, String)>> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from("toolgate.toml"), false),
        };
        if !required && !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Ok(Some((text, path.display().to_string())))
    }
}

/// Where a store is.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL.
    Postgres(String),
}

/// `postgres://…` or `postgresql://…`, `sqlite://PATH`, `sqlite:PATH`, or a
/// plain path.
fn location_of(url: &str) -> anyhow::Result<Location> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Location::Postgres(url.to_owned()));
    }
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(Location::Sqlite(PathBuf::from(rest)));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        anyhow::bail!(
            "the store `{url}` uses `{scheme}://`, which toolgate does not know; give a SQLite file (a path or sqlite://PATH) or a PostgreSQL database (postgres://USER@HOST:PORT/DATABASE)"
        );
    }
    Ok(Location::Sqlite(PathBuf::from(url)))
}

fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    Ok(Policy::from_toml_str(&text, &path.display().to_string())?)
}

/// The person at this terminal: named after the login (`$USER`), with the
/// admin role, since they hold the store file itself.
pub(crate) fn local_principal() -> Principal {
    let name = std::env::var("TOOLGATE_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "local".to_owned());
    Principal::new(name, Role::Admin)
}

/// The current time, as the store records it.
pub(crate) fn now() -> i64 {
    toolgate::time::to_millis(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_sqlite_files_or_postgresql_databases() {
        let sqlite = |path: &str| Location::Sqlite(PathBuf::from(path));
        assert_eq!(
            location_of("sqlite:///tmp/a.db").unwrap(),
            sqlite("/tmp/a.db")
        );
        assert_eq!(location_of("sqlite:a.db").unwrap(), sqlite("a.db"));
        assert_eq!(location_of("./a.db").unwrap(), sqlite("./a.db"));
        for url in ["postgres://postgres@127.0.0.1/x", "postgresql://h/db"] {
            assert_eq!(
                location_of(url).unwrap(),
                Location::Postgres(url.to_owned())
            );
        }
        assert_eq!(
            location_of("mysql://localhost/x").unwrap_err().to_string(),
            "the store `mysql://localhost/x` uses `mysql://`, which toolgate does not know; give a SQLite file (a path or sqlite://PATH) or a PostgreSQL database (postgres://USER@HOST:PORT/DATABASE)"
        );
    }
}

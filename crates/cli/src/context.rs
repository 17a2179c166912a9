//! What every command that touches the store shares: where the store is,
//! the policy from `toolgate.toml`, and who the person at this terminal is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use toolgate::store::Store;
use toolgate::{Policy, Principal, Role, SqliteStore};

/// The options every store command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The store: a SQLite file (created on first use). Default: toolgate.db
    /// in your data directory (e.g. ~/.local/share/toolgate/toolgate.db).
    /// Also: TOOLGATE_DATABASE_URL, as a path or sqlite://PATH.
    #[arg(
        long,
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
    /// The store's file.
    pub(crate) fn db_path(&self) -> anyhow::Result<PathBuf> {
        match self.db.as_deref().filter(|db| !db.trim().is_empty()) {
            Some(url) => db_path_from(url),
            None => {
                let data = dirs::data_dir().context(
                    "cannot tell where your data directory is (HOME is not set?): pass --db PATH",
                )?;
                Ok(data.join("toolgate").join("toolgate.db"))
            }
        }
    }

    /// Opens the store, which must exist: a mistyped `--db` is an error,
    /// not a new empty store.
    pub(crate) fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let path = self.db_path()?;
        anyhow::ensure!(
            path.exists(),
            "there is no store at {}: nothing has run with it yet (check --db or TOOLGATE_DATABASE_URL; `toolgate run` creates it)",
            path.display()
        );
        self.open_or_create_store()
    }

    /// Opens the store, creating it on first use.
    pub(crate) fn open_or_create_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let path = self.db_path()?;
        let store = SqliteStore::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        Ok(Arc::new(store))
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
}

/// `sqlite://PATH`, `sqlite:PATH` or a plain path.
fn db_path_from(url: &str) -> anyhow::Result<PathBuf> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(PathBuf::from(rest));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        anyhow::bail!(
            "the store `{url}` uses `{scheme}://`, which toolgate cannot open here; give a SQLite file as a path or sqlite://PATH"
        );
    }
    Ok(PathBuf::from(url))
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
    fn database_urls_name_sqlite_files() {
        assert_eq!(
            db_path_from("sqlite:///tmp/a.db").unwrap(),
            PathBuf::from("/tmp/a.db")
        );
        assert_eq!(db_path_from("sqlite:a.db").unwrap(), PathBuf::from("a.db"));
        assert_eq!(db_path_from("./a.db").unwrap(), PathBuf::from("./a.db"));
        assert_eq!(
            db_path_from("postgres://localhost/x")
                .unwrap_err()
                .to_string(),
            "the store `postgres://localhost/x` uses `postgres://`, which toolgate cannot open here; give a SQLite file as a path or sqlite://PATH"
        );
    }
}

//! Connecting to PostgreSQL, the schema and its migrations, and the
//! signing key.
//!
//! Migrations are an ordered list of SQL scripts; the one row of
//! `toolgate_schema` records how many have run. A database whose version is
//! newer than this list was written by a newer toolgate and is refused
//! rather than guessed at. Migrations run under a transaction-scoped
//! advisory lock, so that processes starting at the same moment take turns.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;
use toolgate_core::audit::Signer32;
use toolgate_core::store::StoreError;

use super::error::{corrupt, pg_error};

/// How many connections one store keeps at most.
const POOL_SIZE: usize = 8;

/// How long connecting may take, unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the advisory lock that migrations hold ("tgat").
const MIGRATION_LOCK: i64 = 0x7467_6174;

/// The tables toolgate makes, to tell another program's database apart.
const TABLES: [&str; 10] = [
    "meta",
    "runs",
    "events",
    "audit_head",
    "approvals",
    "grants",
    "tokens",
    "webhook_cursors",
    "webhook_deliveries",
    "webhook_attempts",
];

/// The migrations, oldest first: the database is at version `n` once the
/// first `n` have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Ids are compared byte by byte (`COLLATE "C"`),
    // as SQLite does, so that listings order ties the same way whatever
    // the database's locale.
    r#"
    -- Key/value settings of the store, such as its signing key.
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );

    -- One row per run, as listings show it.
    CREATE TABLE runs (
        id         TEXT COLLATE "C" PRIMARY KEY,
        status     TEXT NOT NULL,
        thread     TEXT,
        prompt     TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        version    BIGINT NOT NULL
    );
    CREATE INDEX runs_newest ON runs (created_at, id);
    CREATE INDEX runs_by_status ON runs (status, created_at, id);

    -- The audit log, and with it every run's log: one row per entry. `seq`
    -- is the global sequence number; run events also have their run and
    -- their place in its log, grant entries have neither. An entry's
    -- previous hash is the hash of the row before it.
    CREATE TABLE events (
        seq       BIGINT PRIMARY KEY,
        run_id    TEXT COLLATE "C" REFERENCES runs (id),
        run_seq   BIGINT,
        at        BIGINT NOT NULL,
        kind      TEXT NOT NULL,
        body      TEXT NOT NULL,
        hash      BYTEA NOT NULL,
        signature BYTEA,
        CHECK ((run_id IS NULL) = (run_seq IS NULL)),
        UNIQUE (run_id, run_seq)
    );

    -- The audit log's last entry, in one row: every write that adds
    -- entries locks it (`SELECT … FOR UPDATE`) first, so that writers of
    -- all processes take turns and the chain has no fork and no gap.
    CREATE TABLE audit_head (
        one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        seq  BIGINT NOT NULL,
        hash BYTEA NOT NULL
    );
    INSERT INTO audit_head (one, seq, hash)
    VALUES (true, 0, decode(repeat('00', 32), 'hex'));

    -- One row per approval, as listings show it. `args` and `approvers`
    -- (NULL for anyone) are JSON text.
    CREATE TABLE approvals (
        id          TEXT COLLATE "C" PRIMARY KEY,
        run_id      TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        call_id     TEXT NOT NULL,
        tool        TEXT NOT NULL,
        args        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status      TEXT NOT NULL,
        rule        TEXT NOT NULL,
        quorum      BIGINT NOT NULL,
        approvers   TEXT,
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT,
        decided_by  TEXT,
        decided_at  BIGINT
    );
    CREATE INDEX approvals_newest ON approvals (created_at, id);
    CREATE INDEX approvals_by_status ON approvals (status, created_at, id);
    CREATE INDEX approvals_by_run ON approvals (run_id, created_at, id);

    -- Standing approvals. `scope` is JSON text.
    CREATE TABLE grants (
        id          TEXT COLLATE "C" PRIMARY KEY,
        tool        TEXT NOT NULL,
        condition   TEXT,
        scope       TEXT NOT NULL,
        uses_left   BIGINT,
        created_by  TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        approval_id TEXT,
        revoked_by  TEXT,
        revoked_at  BIGINT
    );
    CREATE INDEX grants_newest ON grants (created_at, id);
    "#,
    // 2: API tokens, kept as the SHA-256 of their secret (`groups` is a
    // JSON array of names), the index of approvals that expire, and run
    // leases.
    r#"
    CREATE TABLE tokens (
        id         TEXT COLLATE "C" PRIMARY KEY,
        hash       BYTEA NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL,
        groups     TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX tokens_newest ON tokens (created_at, id);

    -- Pending approvals with a timeout, by when they expire: expiring
    -- what is due reads only those.
    CREATE INDEX approvals_due ON approvals (expires_at)
        WHERE status = 'pending' AND expires_at IS NOT NULL;

    -- Who drives a run now, and until when (Unix milliseconds).
    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_until BIGINT;
    "#,
    // 3: the webhook outbox (see the SQLite schema). Claims take rows with
    // `FOR UPDATE SKIP LOCKED`, so that servers claiming at once never
    // wait for, nor take, each other's rows.
    r#"
    CREATE TABLE webhook_cursors (
        webhook TEXT COLLATE "C" PRIMARY KEY,
        seq     BIGINT NOT NULL
    );

    CREATE TABLE webhook_deliveries (
        id              TEXT COLLATE "C" PRIMARY KEY,
        webhook         TEXT COLLATE "C" NOT NULL,
        event_key       TEXT COLLATE "C" NOT NULL,
        event_type      TEXT NOT NULL,
        audit_seq       BIGINT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        attempts        BIGINT NOT NULL DEFAULT 0,
        claimed_by      TEXT,
        lease_until     BIGINT,
        UNIQUE (webhook, event_key)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
    CREATE INDEX webhook_deliveries_newest ON webhook_deliveries (created_at, id);

    CREATE TABLE webhook_attempts (
        delivery_id TEXT COLLATE "C" NOT NULL REFERENCES webhook_deliveries (id),
        attempt     BIGINT NOT NULL,
        at          BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        status_code BIGINT,
        error       TEXT,
        PRIMARY KEY (delivery_id, attempt)
    );
    "#,
    // 4: when a grant for a time ends, and the index of the grants that
    // may still cover calls (see the SQLite schema).
    r#"
    ALTER TABLE grants ADD COLUMN ends_at BIGINT;
    UPDATE grants SET ends_at = (scope::jsonb ->> 'until')::bigint
        WHERE scope::jsonb ->> 'scope' = 'until';
    CREATE INDEX grants_live ON grants (ends_at)
        WHERE revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0);
    "#,
    // 5: which runs a grant reaches, first in the index of live grants
    // (see `crate::reach` and the SQLite schema's migration 6).
    r#"
    ALTER TABLE grants ADD COLUMN reach TEXT COLLATE "C" NOT NULL DEFAULT '';
    UPDATE grants SET reach = CASE scope::jsonb ->> 'scope'
        WHEN 'run' THEN 'run:' || (scope::jsonb ->> 'run_id')
        WHEN 'thread' THEN 'thread:' || (scope::jsonb ->> 'thread')
        ELSE '' END;
    DROP INDEX grants_live;
    CREATE INDEX grants_live ON grants (reach, ends_at)
        WHERE revoked_at IS NULL AND (uses_left IS NULL OR uses_left > 0);
    "#,
];

/// Where a URL points, for messages: host(s), port(s), database and user,
/// never the password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let mut hosts = String::new();
    for (index, host) in config.get_hosts().iter().enumerate() {
        if index > 0 {
            hosts.push_str(", ");
        }
        match host {
            Host::Tcp(name) => hosts.push_str(name),
            #[cfg(unix)]
            Host::Unix(path) => {
                let _ = write!(hosts, "the socket in {}", path.display());
            }
        }
        let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
        let _ = write!(hosts, ":{port}");
    }
    if hosts.is_empty() {
        hosts.push_str("the default host");
    }
    let user = config.get_user().unwrap_or("(the default user)");
    let database = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("the PostgreSQL database `{database}` on {hosts} as user `{user}`")
}

/// Connects a pool to `url`, with one connection made now to show that
/// the database can be reached. Returns the pool and where it points.
pub(crate) async fn connect(
    url: &str,
) -> Result<(Pool, tokio_postgres::Config, String), StoreError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|error| {
        StoreError::Backend(
            format!(
                "the PostgreSQL URL is not valid ({error}); write it as \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )
            .into(),
        )
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("toolgate");
    }
    let target = describe(&config);
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|error| {
            StoreError::Backend(format!("cannot connect to {target}: {error}").into())
        })?;
    if let Err(error) = pool.get().await {
        let (why, code) = match &error {
            deadpool_postgres::PoolError::Backend(error) => (
                pg_error(error),
                error.code().map(|code| code.code().to_owned()),
            ),
            other => (other.to_string(), None),
        };
        let check = match code.as_deref() {
            // invalid_catalog_name
            Some("3D000") => "check the database's name, or create it (`createdb NAME`)",
            // invalid_authorization_specification, invalid_password
            Some("28000" | "28P01") => "check the user and its password, and pg_hba.conf",
            Some(_) => "check the user, its password and the database",
            None => {
                "check that the server is running and accepts connections there, and that \
                 the host and port are right"
            }
        };
        return Err(StoreError::Backend(
            format!("cannot connect to {target}: {why}; {check}").into(),
        ));
    }
    Ok((pool, config, target))
}

/// Brings the schema to this version, in one transaction, or refuses a
/// database this code cannot use.
pub(crate) async fn migrate(pool: &Pool, target: &str) -> Result<(), StoreError> {
    let fail = |error: tokio_postgres::Error| {
        StoreError::Backend(
            format!("cannot open the store in {target}: {}", pg_error(&error)).into(),
        )
    };
    let mut client = pool.get().await.map_err(|error| {
        StoreError::Backend(format!("cannot connect to {target}: {error}").into())
    })?;
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail)?;
    let exists = |table: &str| format!("SELECT to_regclass('{table}') IS NOT NULL");
    let has_version: bool = tx
        .query_one(&exists("toolgate_schema"), &[])
        .await
        .map_err(fail)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    let version: i64 = if has_version {
        tx.query_opt("SELECT version FROM toolgate_schema", &[])
            .await
            .map_err(fail)?
            .map_or(0, |row| row.get(0))
    } else {
        // A database with toolgate's tables but no version is another
        // program's: toolgate does not move in beside its data.
        for table in TABLES {
            let taken: bool = tx
                .query_one(&exists(table), &[])
                .await
                .map_err(fail)?
                .get(0);
            if taken {
                return Err(corrupt(format!(
                    "{target} already has a table `{table}` of another program, and no \
                     toolgate schema version; give toolgate a database (or a schema, with \
                     `options=-c search_path=…` in the URL) of its own"
                )));
            }
        }
        tx.batch_execute(
            "CREATE TABLE toolgate_schema (
                 one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
                 version BIGINT NOT NULL
             );
             INSERT INTO toolgate_schema (one, version) VALUES (true, 0);",
        )
        .await
        .map_err(fail)?;
        0
    };
    if version > known {
        return Err(corrupt(format!(
            "{target} has toolgate schema version {version}, but this toolgate knows versions \
             up to {known}: a newer toolgate wrote it. Upgrade toolgate to use this store"
        )));
    }
    if version < 0 {
        return Err(corrupt(format!(
            "{target} has toolgate schema version {version}, which no toolgate writes"
        )));
    }
    if version == known {
        return tx.commit().await.map_err(fail);
    }
    for (index, script) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(script).await.map_err(|error| {
            StoreError::Backend(
                format!(
                    "cannot upgrade the store in {target} to schema version {}: {}",
                    index + 1,
                    pg_error(&error)
                )
                .into(),
            )
        })?;
    }
    tx.execute("UPDATE toolgate_schema SET version = $1", &[&known])
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)
}

/// The store's signing key: 32 random bytes made on first use and kept in
/// `meta`. Two processes starting at once both offer a key; the first
/// insert wins, and both read back the one that was kept.
pub(crate) async fn signing_key(pool: &Pool, target: &str) -> Result<Signer32, StoreError> {
    let fail = |error: tokio_postgres::Error| {
        StoreError::Backend(
            format!(
                "cannot read the signing key in {target}: {}",
                pg_error(&error)
            )
            .into(),
        )
    };
    let client = pool.get().await.map_err(|error| {
        StoreError::Backend(format!("cannot connect to {target}: {error}").into())
    })?;
    // `rand::random` draws from the thread's CSPRNG, seeded by the
    // operating system.
    let offered: [u8; 32] = rand::random();
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ('signing_key', $1) ON CONFLICT DO NOTHING",
            &[&&offered[..]],
        )
        .await
        .map_err(fail)?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM meta WHERE key = 'signing_key'", &[])
        .await
        .map_err(fail)?
        .get(0);
    let secret: [u8; 32] = stored.try_into().map_err(|bytes: Vec<u8>| {
        corrupt(format!(
            "the signing key in {target} has {} bytes instead of 32",
            bytes.len()
        ))
    })?;
    Ok(Signer32::from_secret(&secret))
}

//! What every request handler shares: the store, the policy, the signal
//! that something changed, the metrics, and the server's settings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use toolgate_core::Policy;
use toolgate_core::store::{Store, TokenRecord};
use toolgate_engine::{ApprovalDetail, Clock};

use crate::metrics::Metrics;
use crate::webhooks::Webhook;

/// How the server behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The policy that gates calls agents ask about over the API.
    pub policy: Policy,
    /// How often a waiting request looks at the store for changes made by
    /// other processes (changes made through this server wake it at once).
    pub poll: Duration,
    /// The longest `?wait=` a request may ask for.
    pub max_wait: Duration,
    /// How long a token, once checked, is trusted without asking the store
    /// again: a token revoked by another process stops working within
    /// this time (one revoked through this server, `DELETE /v1/tokens/{id}`,
    /// at once).
    pub token_cache: Duration,
    /// How often approvals past their time are expired.
    pub expiry_sweep: Duration,
    /// Where events are sent (`[[webhooks]]` in `toolgate.toml`); none by
    /// default.
    pub webhooks: Vec<Webhook>,
    /// How often the webhook dispatcher looks at the store for other
    /// processes' events and for retries that come due (this server's own
    /// writes wake it at once).
    pub webhook_poll: Duration,
    /// How long a claimed delivery is this server's: after it, another
    /// server takes it over (this one crashed mid-send, say). At least
    /// twice the longest webhook timeout, whatever this says.
    pub webhook_lease: Duration,
    /// Mark the web inbox's session cookie `Secure`, so browsers send it
    /// only over HTTPS: set it when the server is reached through HTTPS
    /// (a TLS-terminating proxy in front of it).
    pub secure_cookies: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            policy: Policy::default(),
            poll: Duration::from_millis(250),
            max_wait: Duration::from_secs(300),
            token_cache: Duration::from_secs(2),
            expiry_sweep: Duration::from_secs(1),
            webhooks: Vec::new(),
            webhook_poll: crate::webhooks::DEFAULT_POLL,
            webhook_lease: crate::webhooks::DEFAULT_LEASE,
            secure_cookies: false,
        }
    }
}

impl ServerConfig {
    /// The default settings with this policy.
    pub fn with_policy(policy: Policy) -> Self {
        ServerConfig {
            policy,
            ..ServerConfig::default()
        }
    }

    /// These settings, sending events to `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Vec<Webhook>) -> Self {
        self.webhooks = webhooks;
        self
    }
}

/// The state of a running server.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServerConfig,
    pub(crate) clock: Clock,
    /// Bumped whenever this server writes to the store, so that waiting
    /// requests and event streams look again at once.
    pub(crate) changes: watch::Sender<u64>,
    /// Set when the server is shutting down: waits and streams end.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) metrics: Metrics,
    /// True once the store has shown that it tells of other processes'
    /// writes (PostgreSQL's `LISTEN`): waits then need to look at the
    /// store themselves only rarely.
    pub(crate) store_notifies: AtomicBool,
    /// Bumped when the store changed by writes this server did not make:
    /// another process's (as the store tells of them), and the expiry
    /// sweep's. Waits on one approval look at it again then.
    pub(crate) outside: watch::Sender<u64>,
    /// The approvals that requests wait on (`?wait=`), each with a signal
    /// sent when this server decides or expires it, and how many wait:
    /// a write wakes only the waits on what it changed.
    waits: Mutex<HashMap<String, (watch::Sender<Changed>, usize)>>,
    tokens: Mutex<HashMap<[u8; 32], (TokenRecord, Instant)>>,
}

/// A request's wait on one approval ([`AppState::wait_on`]), until it is
/// dropped.
pub(crate) struct Waiting<'a> {
    state: &'a AppState,
    id: String,
    /// Changes when this server changes the approval.
    pub(crate) signal: watch::Receiver<Changed>,
    /// Changes when the store changed by writes this server did not make
    /// ([`AppState::outside`]) since the wait started.
    pub(crate) outside: watch::Receiver<u64>,
}

/// What a wait's signal carries: the approval as this server's write left
/// it, when the write had it at hand (a decision does), so that the wait
/// need not read it again.
pub(crate) type Changed = Option<Arc<ApprovalDetail>>;

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waits = self.state.waits();
        if let Some((_, count)) = waits.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                waits.remove(&self.id);
            }
        }
    }
}

impl AppState {
    pub(crate) fn new(store: Arc<dyn Store>, config: ServerConfig, clock: Clock) -> AppState {
        AppState {
            store,
            config,
            clock,
            changes: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            metrics: Metrics::default(),
            store_notifies: AtomicBool::new(false),
            outside: watch::Sender::new(0),
            waits: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    /// How long a wait sleeps before it looks at the store again by
    /// itself: every change made through this server, and with a store
    /// that notifies every change made anywhere, wakes it sooner.
    pub(crate) fn recheck(&self) -> Duration {
        if self.store_notifies.load(Ordering::Relaxed) {
            Duration::from_secs(5).max(self.config.poll)
        } else {
            self.config.poll
        }
    }

    /// How long `follow_store` waits between its looks at a store that
    /// cannot tell of other processes' writes. Each look that finds the
    /// store changed makes every wait read its approval again, and a wait
    /// sees another process's decision only then: so it looks every 20 ms
    /// while few wait, less often as more do (about 2,000 such reads a
    /// second at most), and at the configured `poll` when none wait.
    pub(crate) fn follow_interval(&self) -> Duration {
        let waiting = u32::try_from(self.waits().len()).unwrap_or(u32::MAX);
        if waiting == 0 {
            return self.config.poll;
        }
        (Duration::from_micros(500).saturating_mul(waiting))
            .max(Duration::from_millis(20))
            .min(self.config.poll)
    }

    /// Says that this server wrote to the store.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Says that this server changed approval `id` (decided or expired
    /// it), to `now` if known: wakes the waits on it.
    pub(crate) fn approval_changed(&self, id: &str, now: Option<&ApprovalDetail>) {
        self.changed();
        if let Some((signal, _)) = self.waits().get(id) {
            signal.send_replace(now.cloned().map(Arc::new));
        }
    }

    /// Says that the store changed by writes this server did not make.
    pub(crate) fn changed_outside(&self) {
        self.changed();
        self.outside.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Starts a wait on approval `id`: from now on, this server's changes
    /// to it show in the wait's signal.
    pub(crate) fn wait_on(&self, id: &str) -> Waiting<'_> {
        let mut waits = self.waits();
        let (signal, count) = waits
            .entry(id.to_owned())
            .or_insert_with(|| (watch::Sender::new(None), 0));
        *count += 1;
        let signal = signal.subscribe();
        Waiting {
            state: self,
            id: id.to_owned(),
            signal,
            outside: self.outside.subscribe(),
        }
    }

    fn waits(&self) -> std::sync::MutexGuard<'_, HashMap<String, (watch::Sender<Changed>, usize)>> {
        // Each change of the map is one step: a panic cannot leave it
        // half-changed.
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token with this hash, from the cache while it is fresh.
    pub(crate) fn cached_token(&self, hash: &[u8; 32]) -> Option<TokenRecord> {
        let cache = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.config.token_cache)
            .map(|(token, _)| token.clone())
    }

    /// Drops the token with this id from the cache: it was revoked here,
    /// and must be refused at once.
    pub(crate) fn forget_token(&self, id: &str) {
        let mut cache = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, (token, _)| token.id != id);
    }

    pub(crate) fn cache_token(&self, token: &TokenRecord) {
        let mut cache = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() > 10_000 {
            let limit = self.config.token_cache;
            cache.retain(|_, (_, at)| at.elapsed() < limit);
        }
        cache.insert(token.hash, (token.clone(), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_followed_more_often_while_few_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = toolgate_store::SqliteStore::open(dir.path().join("toolgate.db")).unwrap();
        let mut config = ServerConfig::with_policy(Policy::default());
        config.poll = Duration::from_millis(250);
        let state = AppState::new(Arc::new(store), config, Arc::new(|| 0));
        assert_eq!(state.follow_interval(), Duration::from_millis(250));
        let one = state.wait_on("a1");
        let again = state.wait_on("a1");
        assert_eq!(state.follow_interval(), Duration::from_millis(20));
        let many: Vec<_> = (0..200).map(|i| state.wait_on(&format!("b{i}"))).collect();
        // 201 approvals waited on: 100.5 ms.
        assert_eq!(state.follow_interval(), Duration::from_micros(100_500));
        let more: Vec<_> = (0..1000).map(|i| state.wait_on(&format!("c{i}"))).collect();
        assert_eq!(state.follow_interval(), Duration::from_millis(250));
        drop((many, more, one));
        assert_eq!(
            state.follow_interval(),
            Duration::from_millis(20),
            "a1 is still waited on"
        );
        drop(again);
        assert_eq!(state.follow_interval(), Duration::from_millis(250));
        assert!(state.waits().is_empty(), "no wait is left behind");
    }
}

//! toolgate's approval server: an HTTP API any agent can call, in any
//! language, to ask before a tool call runs; a web inbox where people
//! decide; metrics and health checks for whoever runs it.
//!
//! The server is a thin layer over the engine: a call an agent asks about
//! is gated by [`toolgate_engine::request_call`] and recorded as an
//! external run in the store; a decision is [`toolgate_engine::decide`],
//! whichever way it comes (API, inbox, command line, another server on the
//! same PostgreSQL database). So approvals of engine runs and of outside
//! agents are one list, and a decision resumes whichever waits.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn toolgate_core::store::Store>) -> std::io::Result<()> {
//! use toolgate_server::{Server, ServerConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = Server::new(store, ServerConfig::default());
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod api;
mod auth;
mod events;
mod inbox;
mod metrics;
mod openapi;
mod problem;
mod state;
mod tokens;
mod webhooks;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use serde_json::json;
use toolgate_core::store::Store;
use toolgate_engine::{Clock, expire_due, system_clock};
use utoipa::OpenApi;

pub use auth::bearer_token;
pub use problem::Problem;
pub use state::ServerConfig;
pub use tokens::{IssuedToken, TOKEN_PREFIX, issue_token, secret_hash};
pub use webhooks::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_ID_HEADER, Webhook, WebhookError, WebhookEvent,
    load_webhooks, signature,
};
pub use wire::{CreatedToken, TokenState, TokenView};

use crate::state::AppState;

/// An approval server over a store.
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// A server over `store`.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Server {
        Server::with_clock(store, config, system_clock())
    }

    /// A server over `store` that reads the time from `clock` (tests).
    pub fn with_clock(store: Arc<dyn Store>, config: ServerConfig, clock: Clock) -> Server {
        Server {
            state: Arc::new(AppState::new(store, config, clock)),
        }
    }

    /// Every route: the API, the web inbox, health checks, metrics.
    pub fn router(&self) -> Router {
        let state = Arc::clone(&self.state);
        Router::new()
            .route(
                "/v1/approvals",
                post(api::create_approval).get(api::list_approvals),
            )
            .route("/v1/approvals/{id}", get(api::get_approval))
            .route("/v1/approvals/{id}/decision", post(api::decide_approval))
            .route("/v1/grants", get(api::list_grants))
            .route("/v1/grants/{id}", delete(api::revoke_grant))
            .route("/v1/events", get(events::events))
            .route("/v1/me", get(api::me))
            .route(
                "/v1/tokens",
                get(tokens::list_tokens).post(tokens::create_token),
            )
            .route(
                "/v1/tokens/{id}",
                get(tokens::get_token).delete(tokens::revoke_token),
            )
            .route("/v1/webhooks/deliveries", get(api::list_deliveries))
            .route(
                "/v1/webhooks/deliveries/{id}/redeliver",
                post(api::redeliver),
            )
            .route("/v1/openapi.json", get(openapi_document))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics::metrics))
            .merge(inbox::router())
            .fallback(no_route)
            .method_not_allowed_fallback(wrong_method)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                metrics::count_requests,
            ))
            .with_state(state)
    }

    /// Serves on `listener` until `shutdown` completes, then stops taking
    /// connections, ends waits and event streams, and returns once the
    /// requests in flight are answered.
    ///
    /// # Errors
    ///
    /// The listener fails.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sweeper = tokio::spawn(sweep_expired(Arc::clone(&self.state)));
        let follower = tokio::spawn(follow_store(Arc::clone(&self.state)));
        let dispatcher = if self.state.config.webhooks.is_empty() {
            None
        } else {
            // Cursors are made before the first request is taken, so that
            // events of the first requests are sent.
            let mut dispatcher = webhooks::Dispatcher::new(Arc::clone(&self.state));
            dispatcher.start().await;
            Some(tokio::spawn(dispatcher.run()))
        };
        let state = Arc::clone(&self.state);
        let router = self.router();
        // Without TCP_NODELAY, a small write (an event of a stream, say)
        // that follows one not yet acknowledged waits for the client's
        // delayed ACK, up to 40 ms on Linux. Setting it fails only for a
        // connection already gone, whose first read then fails anyway.
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                state.shutdown.send_replace(true);
            })
            .await;
        // The server may have stopped for an error: stop the background
        // tasks either way.
        self.state.shutdown.send_replace(true);
        sweeper.abort();
        follower.abort();
        if let Some(mut dispatcher) = dispatcher {
            // Let sends in flight finish and be recorded (each is bounded
            // by its webhook's timeout); a delivery cut off here is sent
            // again once its lease runs out.
            let limit = self
                .state
                .config
                .webhooks
                .iter()
                .map(|hook| hook.timeout)
                .max()
                .unwrap_or_default()
                + std::time::Duration::from_secs(2);
            if tokio::time::timeout(limit, &mut dispatcher).await.is_err() {
                dispatcher.abort();
            }
        }
        result
    }
}

/// Expires approvals past their time, so that what listings and waits
/// show is true without anyone looking at each one.
async fn sweep_expired(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.subscribe();
    loop {
        match expire_due(state.store.as_ref(), state.now()).await {
            Ok(0) => {}
            Ok(_) => state.changed_outside(),
            // The store is down: readyz says so; try again next time.
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(state.config.expiry_sweep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Wakes waits and event streams when another process writes to the
/// store: at once with a store that notifies (PostgreSQL), else within the
/// poll interval (sooner while requests wait: see
/// [`AppState::follow_interval`]).
async fn follow_store(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.subscribe();
    let mut head = state.store.audit_head().await.unwrap_or(0);
    loop {
        let heard = tokio::select! {
            heard = state.store.wait_for_change(head, Duration::from_secs(30)) => heard,
            _ = shutdown.changed() => return,
        };
        let seen = match heard {
            Ok(Some(seq)) => {
                state.store_notifies.store(true, Ordering::Relaxed);
                Some(seq)
            }
            Ok(None) => {
                tokio::select! {
                    () = tokio::time::sleep(state.follow_interval()) => {}
                    _ = shutdown.changed() => return,
                }
                state.store.audit_head().await.ok()
            }
            Err(_) => {
                // The store is down (readyz says so): try again shortly.
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        };
        if let Some(seq) = seen.filter(|seq| *seq > head) {
            head = seq;
            state.changed_outside();
        }
    }
}

async fn openapi_document() -> impl IntoResponse {
    axum::Json(openapi::ApiDoc::openapi())
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the store answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    state.store.audit_head().await.map_err(|error| {
        Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("the store does not answer: {error}"),
        )
    })?;
    Ok(axum::Json(json!({"status": "ready"})).into_response())
}

async fn no_route(method: Method, uri: Uri) -> Problem {
    Problem::not_found(format!(
        "there is no endpoint {method} {}; the API is described at /v1/openapi.json",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{} does not take {method}; the API is described at /v1/openapi.json",
            uri.path()
        ),
    )
}

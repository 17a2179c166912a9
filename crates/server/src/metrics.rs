//! Prometheus metrics at `/metrics`: requests by route and status, how
//! long approvals waited for their decision, how many are pending, and
//! webhook attempts by outcome.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use toolgate_core::run::ApprovalStatus;

use crate::problem::Problem;
use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    /// `delivered`, `retry` or `failed`.
    outcome: &'static str,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decision_wait: Histogram,
    pending: Gauge<i64, AtomicI64>,
    webhook_attempts: Family<AttemptLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "toolgate_http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        // From 100 ms to about 9 hours.
        let decision_wait = Histogram::new(exponential_buckets(0.1, 2.0, 19));
        registry.register(
            "toolgate_decision_wait_seconds",
            "How long approvals decided through this server waited for the decision",
            decision_wait.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "toolgate_approvals_pending",
            "Approvals waiting for people, in the whole store",
            pending.clone(),
        );
        let webhook_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "toolgate_webhook_attempts",
            "Webhook attempts this server made, by what came of them: delivered, retry or failed",
            webhook_attempts.clone(),
        );
        Metrics {
            registry,
            requests,
            decision_wait,
            pending,
            webhook_attempts,
        }
    }
}

impl Metrics {
    /// Notes a decision on an approval requested at `requested_at` (Unix
    /// milliseconds), made at `now`.
    pub(crate) fn decided(&self, requested_at: i64, now: i64) {
        self.decision_wait
            .observe((now.saturating_sub(requested_at)).max(0) as f64 / 1000.0);
    }
}

impl Metrics {
    /// Notes a webhook attempt and what comes of it.
    pub(crate) fn webhook_attempt(&self, next: toolgate_core::store::DeliveryNext) {
        use toolgate_core::store::DeliveryNext;
        let outcome = match next {
            DeliveryNext::Delivered => "delivered",
            DeliveryNext::RetryAt(_) => "retry",
            DeliveryNext::Failed => "failed",
        };
        self.webhook_attempts
            .get_or_create(&AttemptLabels { outcome })
            .inc();
    }
}

/// Counts every request by the route it matched.
pub(crate) async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let pending = state.store.approval_count(ApprovalStatus::Pending).await?;
    state
        .metrics
        .pending
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).map_err(
        |error| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics-failed",
                format!("cannot encode the metrics: {error}"),
            )
        },
    )?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

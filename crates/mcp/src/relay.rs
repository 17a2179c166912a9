//! The gateway's client side: what the server behind it asks of the client
//! (sampling, elicitation, roots) and tells it (progress, logging, list
//! changes) passes through to the client unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientConfig, ClientResult, ErrorData,
    ProgressToken, RequestId, RequestMetaObject, ServerNotification, ServerRequest,
};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer, Service,
    ServiceError, ServiceRole,
};
use tokio_util::sync::CancellationToken;

/// Where the progress of a forwarded request goes: the client's token, and
/// what to add to the server's numbers so that they go on rising after the
/// gateway's own reports of waiting for approval.
#[derive(Debug, Clone)]
pub(crate) struct ProgressRoute {
    pub(crate) token: ProgressToken,
    pub(crate) offset: f64,
}

/// The progress tokens of requests in flight to the server, by the token
/// the gateway gave the server.
#[derive(Debug, Default)]
pub(crate) struct ProgressRoutes(Mutex<HashMap<ProgressToken, ProgressRoute>>);

impl ProgressRoutes {
    fn route(&self, token: &ProgressToken) -> Option<ProgressRoute> {
        self.0.lock().expect("not poisoned").get(token).cloned()
    }

    pub(crate) fn add(&self, token: ProgressToken, route: ProgressRoute) {
        self.0.lock().expect("not poisoned").insert(token, route);
    }

    pub(crate) fn remove(&self, token: &ProgressToken) {
        self.0.lock().expect("not poisoned").remove(token);
    }
}

/// The gateway as the server's client.
pub(crate) struct Relay {
    pub(crate) client: Peer<RoleServer>,
    pub(crate) client_info: ClientConfig,
    pub(crate) progress: Arc<ProgressRoutes>,
    /// Set when the server says its tools changed: the gateway lists them
    /// again before it gates the next call.
    pub(crate) tools_changed: Arc<AtomicBool>,
}

impl Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let client = self.client.clone();
        // In a task of its own: the request belongs to none of the client's
        // requests, whatever the server's request is called here.
        let forwarded =
            tokio::spawn(async move { forward(&client, request, context.meta, &context.ct).await });
        match forwarded.await {
            Ok(result) => result.map_err(|error| service_error(error, "the MCP client")),
            Err(error) => Err(ErrorData::internal_error(
                format!("toolgate failed to pass the server's request on to the client: {error}"),
                None,
            )),
        }
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        let notification = match notification {
            ServerNotification::ProgressNotification(mut progress) => {
                // Only the progress of a request the client asked progress
                // for goes on, under the client's token.
                let Some(route) = self.progress.route(&progress.params.progress_token) else {
                    return Ok(());
                };
                progress.params.progress_token = route.token;
                progress.params.progress += route.offset;
                if let Some(total) = progress.params.total.as_mut() {
                    *total += route.offset;
                }
                ServerNotification::ProgressNotification(progress)
            }
            // The gateway cancels its own requests; the server's
            // cancellations of its requests to the client are handled by
            // the SDK, which stops the forwarding above.
            ServerNotification::CancelledNotification(_) => return Ok(()),
            ServerNotification::ToolListChangedNotification(changed) => {
                self.tools_changed.store(true, Ordering::SeqCst);
                ServerNotification::ToolListChangedNotification(changed)
            }
            other => other,
        };
        let client = self.client.clone();
        tokio::spawn(async move { client.send_notification(notification).await })
            .await
            .map_err(|error| {
                ErrorData::internal_error(
                    format!("toolgate failed to pass a notification on to the client: {error}"),
                    None,
                )
            })?
            .map_err(|error| service_error(error, "the MCP client"))
    }

    fn get_info(&self) -> ClientConfig {
        self.client_info.clone()
    }
}

/// Sends `request` to `peer` with the caller's `_meta`, cancelling it there
/// if `ct` is cancelled first. The SDK gives every request a progress token
/// of its own; `on_sent` is told it, so that progress can be routed back.
pub(crate) async fn forward_with<R: ServiceRole>(
    peer: &Peer<R>,
    request: R::Req,
    meta: RequestMetaObject,
    ct: &CancellationToken,
    on_sent: impl FnOnce(&ProgressToken),
) -> Result<R::PeerResp, ServiceError>
where
    R::Not: From<CancelledNotification>,
{
    let handle = peer
        .send_cancellable_request(request, PeerRequestOptions::no_options().with_meta(meta))
        .await?;
    on_sent(&handle.progress_token);
    let id: RequestId = handle.id.clone();
    let peer = handle.peer.clone();
    tokio::select! {
        result = handle.await_response() => result,
        () = ct.cancelled() => {
            let reason = "the request was cancelled by its sender".to_owned();
            let _ = peer
                .send_notification(
                    CancelledNotification::new(
                        serde_json::from_value::<CancelledNotificationParam>(
                            serde_json::json!({"requestId": id, "reason": reason}),
                        )
                        .expect("a cancellation is a request id and a reason"),
                    )
                    .into(),
                )
                .await;
            Err(ServiceError::Cancelled { reason: Some(reason) })
        }
    }
}

/// [`forward_with`], routing no progress.
pub(crate) async fn forward<R: ServiceRole>(
    peer: &Peer<R>,
    request: R::Req,
    meta: RequestMetaObject,
    ct: &CancellationToken,
) -> Result<R::PeerResp, ServiceError>
where
    R::Not: From<CancelledNotification>,
{
    forward_with(peer, request, meta, ct, |_| {}).await
}

/// The error to give for a request `whom` did not answer: its own error
/// as it is, or what went wrong on the way.
pub(crate) fn service_error(error: ServiceError, whom: &str) -> ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        ServiceError::Cancelled { reason } => ErrorData::internal_error(
            format!(
                "the request was cancelled{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
            None,
        ),
        other => ErrorData::internal_error(format!("{whom} did not answer: {other}"), None),
    }
}

/// Whether `error` means that the peer is gone.
pub(crate) fn is_gone(error: &ServiceError) -> bool {
    matches!(
        error,
        ServiceError::TransportClosed | ServiceError::TransportSend(_)
    )
}

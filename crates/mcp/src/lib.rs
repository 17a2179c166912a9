//! toolgate's MCP gateway: the same policy, approvals and audit log in
//! front of any MCP server, without changing the server or its client.
//!
//! The gateway is an MCP server to its client and an MCP client to the
//! server behind it (started as a child process on stdio, or reached over
//! streamable HTTP), built on the official Rust SDK, `rmcp`. Every request,
//! result, notification, error, progress report and cancellation passes
//! through as it is; only `tools/call` is gated:
//!
//! 1. **Pinning.** The tool's definition (name, description, input schema,
//!    annotations) must be the one trusted on first sight; a changed one
//!    holds the call until a person accepts it ([`pins`](crate) in the
//!    store, shown as a diff).
//! 2. **Policy.** toolgate's policy decides with the tool named
//!    `SERVER:TOOL` (a rule for `write_*` matches every server's tool of
//!    that name, one for `files:*` only that server's). With no rule, the
//!    tool's annotations decide: `readOnlyHint: true` is allowed, anything
//!    else is asked about. Then grants.
//! 3. **People.** A held call is a pending approval in toolgate's store, so
//!    the inbox, the HTTP API and `toolgate approvals` see and decide it; the
//!    gateway also asks the first it can reach of `approve_via`: the client
//!    through MCP elicitation, or the terminal. It waits at most the rule's
//!    timeout (else [`GatewayConfig::timeout`]), reporting progress to the
//!    client, then fails closed.
//! 4. **Audit.** Each call is an external run of its own, in the session's
//!    thread (`mcp-…`): the call, its verdict, who decided and how it
//!    ended, signed and chained like every other run's.
//!
//! A call that does not run (denied, rejected, expired, held) gets a tool
//! result with `isError: true` and a message the model can act on.

mod ask;
mod config;
mod downstream;
mod gate;
mod pins;
mod relay;
mod session;
mod stdio;

use std::sync::Arc;

use rmcp::ServiceExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use toolgate_core::policy::Policy;
use toolgate_core::store::Store;
use toolgate_core::{Principal, Role};
use toolgate_engine::{Clock, system_clock};

pub use config::{
    ApproveVia, ConfigError, GatewayConfig, check_name, parse_approve_via, parse_timeout,
};
pub use downstream::Downstream;
pub use session::Session;

/// What every session of a gateway shares.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) policy: Policy,
    pub(crate) config: GatewayConfig,
    /// The server's name, before `:` in its tools' names.
    pub(crate) name: String,
    pub(crate) downstream: Downstream,
    /// Who the gateway's calls are recorded under: `mcp:NAME`.
    pub(crate) principal: Principal,
    pub(crate) pins: pins::Pins,
    pub(crate) clock: Clock,
    /// One question at a time on the terminal.
    pub(crate) terminal: Arc<tokio::sync::Mutex<()>>,
    /// The outcomes being recorded after their replies: waited for before
    /// the gateway exits, so that none is lost.
    pub(crate) reports: tokio_util::task::TaskTracker,
}

/// Who made an HTTP request to the gateway, as the layer in front of
/// [`Gateway::streamable_http`] that checked the request's token found.
/// Put into the request's extensions, it is recorded in the context of
/// every call the request makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCaller {
    /// The token's principal.
    pub name: String,
}

/// A gateway in front of one MCP server.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// Why a gateway stopped serving a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The client and the gateway never got past `initialize`.
    #[error("the MCP session did not start: {0}")]
    Start(String),
    /// The session ended abnormally.
    #[error("the MCP session ended abnormally: {0}")]
    Session(String),
}

impl Gateway {
    /// A gateway in front of `downstream`, recording in `store` and gating
    /// with `policy`. The server's name is `config.name`, else derived from
    /// the command or URL.
    ///
    /// # Errors
    ///
    /// The name is not one toolgate accepts.
    pub fn new(
        store: Arc<dyn Store>,
        policy: Policy,
        config: GatewayConfig,
        downstream: Downstream,
    ) -> Result<Gateway, ConfigError> {
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| downstream.default_name());
        check_name(&name).map_err(|why| ConfigError(format!("the server name {why}")))?;
        let pins = pins::Pins::new(&name, config.timeout);
        Ok(Gateway {
            shared: Arc::new(Shared {
                store,
                policy,
                principal: Principal::new(format!("mcp:{name}"), Role::Agent),
                name,
                config,
                downstream,
                pins,
                clock: system_clock(),
                terminal: Arc::new(tokio::sync::Mutex::new(())),
                reports: tokio_util::task::TaskTracker::new(),
            }),
        })
    }

    /// The server's name, as policy rules see it (`NAME:TOOL`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A new session for one client: it starts its own connection to the
    /// server when the client initializes.
    pub fn session(&self) -> Session {
        Session::new(Arc::clone(&self.shared))
    }

    /// Serves one client on this process's stdin and stdout until it goes;
    /// then the server is stopped.
    ///
    /// # Errors
    ///
    /// The client never initialized, or the server could not be started
    /// (the client was told why).
    pub async fn serve_stdio(&self) -> Result<(), GatewayError> {
        let session = self.session();
        let running = session
            .clone()
            .serve((stdio::input(), stdio::output()))
            .await
            .map_err(|error| GatewayError::Start(error.to_string()));
        let result = match running {
            Ok(running) => running
                .waiting()
                .await
                .map(|_| ())
                .map_err(|error| GatewayError::Session(error.to_string())),
            Err(error) => Err(error),
        };
        session.stop();
        self.finish().await;
        result
    }

    /// Waits (a while at most) for the outcomes still being recorded; for
    /// a process that is about to exit.
    pub async fn finish(&self) {
        self.shared.reports.close();
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.shared.reports.wait(),
        )
        .await;
        if waited.is_err() {
            eprintln!(
                "toolgate mcp: {} call outcome(s) could not be recorded before exiting",
                self.shared.reports.len()
            );
        }
    }

    /// A streamable HTTP service (for `axum::Router::nest_service`) that
    /// serves clients, each session with its own connection to the server.
    /// Only requests for `allowed_hosts` are served (DNS rebinding).
    pub fn streamable_http(
        &self,
        allowed_hosts: Vec<String>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> StreamableHttpService<Session, LocalSessionManager> {
        let gateway = self.clone();
        StreamableHttpService::new(
            move || Ok(gateway.session()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default()
                .with_allowed_hosts(allowed_hosts)
                .with_cancellation_token(cancel),
        )
    }
}

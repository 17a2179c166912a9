//! The gateway's server side: one [`Session`] per client. Every request
//! but `tools/call` is forwarded to the server behind the gateway as it
//! is, and its answer comes back as it is; `tools/call` is gated first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::ServerHandler;
#[expect(
    deprecated,
    reason = "logging/setLevel passes through for the servers that have it"
)]
use rmcp::model::SetLevelRequestParams;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, ClientNotification, ClientRequest,
    CompleteRequestParams, CompleteResult, CustomNotification, CustomRequest, CustomResult,
    DiscoverRequestMethod, DiscoverResult, ErrorData, GetPromptRequestParams, GetPromptResponse,
    GetTaskParams, GetTaskResult, Implementation, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotification, ProgressNotificationParam, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, RequestMetaObject,
    RootsListChangedNotification, ServerResult, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{
    NotificationContext, Peer, RequestContext, RoleClient, RoleServer, ServiceError,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::downstream::{Connection, ExitWatch, connect};
use crate::pins::Listed;
use crate::relay::{ProgressRoute, ProgressRoutes, Relay, forward_with, is_gone, service_error};

/// One client's session with the gateway, and the gateway's with the
/// server behind it (started for this session).
#[derive(Clone)]
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<SessionState>,
}

pub(crate) struct SessionState {
    /// The thread of this session's calls (each is an external run).
    pub(crate) thread: String,
    pub(crate) server: OnceLock<Server>,
    pub(crate) progress: Arc<ProgressRoutes>,
    /// The server's tools as last listed.
    pub(crate) tools: Mutex<HashMap<String, Arc<Listed>>>,
    pub(crate) tools_changed: Arc<AtomicBool>,
}

/// The server behind the gateway, once initialised.
pub(crate) struct Server {
    pub(crate) peer: Peer<RoleClient>,
    pub(crate) exit: Arc<ExitWatch>,
    running: Mutex<Option<rmcp::service::RunningService<RoleClient, Relay>>>,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        if let Some(server) = self.server.get() {
            server.stop();
        }
    }
}

impl Server {
    /// Closes the connection; a server the gateway started is killed if it
    /// does not exit by itself soon after.
    pub(crate) fn stop(&self) {
        if let Some(running) = self.running.lock().expect("not poisoned").take() {
            running.cancellation_token().cancel();
        }
        self.exit.stop();
    }
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>) -> Session {
        Session {
            shared,
            state: Arc::new(SessionState {
                thread: format!("mcp-{}", uuid::Uuid::now_v7()),
                server: OnceLock::new(),
                progress: Arc::new(ProgressRoutes::default()),
                tools: Mutex::new(HashMap::new()),
                tools_changed: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The thread of this session's calls in toolgate's store: each call
    /// is a run of its own in it.
    pub fn thread(&self) -> &str {
        &self.state.thread
    }

    /// Closes the session's connection to the server.
    pub fn stop(&self) {
        if let Some(server) = self.state.server.get() {
            server.stop();
        }
    }

    pub(crate) fn server(&self) -> Result<&Server, ErrorData> {
        self.state.server.get().ok_or_else(|| {
            ErrorData::invalid_request(
                "the session is not initialized: send `initialize` first",
                None,
            )
        })
    }

    async fn connect_server(
        &self,
        params: InitializeRequestParams,
        client: Peer<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if self.state.server.get().is_some() {
            return Err(ErrorData::invalid_request(
                "the session is initialized already",
                None,
            ));
        }
        let mut params = params;
        // The server is initialized too: with the client's version when that
        // has the handshake, else the newest that has.
        if !params.protocol_version.has_initialize() {
            params.protocol_version = ProtocolVersion::LATEST_WITH_INITIALIZE;
        }
        let relay = Relay {
            client,
            client_info: params,
            progress: Arc::clone(&self.state.progress),
            tools_changed: Arc::clone(&self.state.tools_changed),
        };
        let Connection { service, exit } = connect(&self.shared.downstream, relay).await?;
        let peer = service.peer().clone();
        let Some(info) = peer.peer_info() else {
            return Err(ErrorData::internal_error(
                format!(
                    "the MCP server `{}` did not say who it is",
                    self.shared.downstream.describe()
                ),
                None,
            ));
        };
        let result = self.server_info(&info);
        let server = Server {
            peer,
            exit,
            running: Mutex::new(Some(service)),
        };
        if self.state.server.set(server).is_err() {
            return Err(ErrorData::invalid_request(
                "the session is initialized already",
                None,
            ));
        }
        Ok(result)
    }

    /// What the client is told of the server: the server's own answer.
    fn server_info(&self, info: &rmcp::model::ServerPeerInfo) -> InitializeResult {
        let mut result = InitializeResult::new(info.capabilities.clone());
        result.protocol_version = info.protocol_version.clone();
        result.server_info = info.server_info.clone().unwrap_or_else(|| {
            serde_json::from_value::<Implementation>(json!({
                "name": self.shared.name,
                "version": "unknown",
            }))
            .expect("an implementation is a name and a version")
        });
        result.instructions = info.instructions.clone();
        result.meta = info.meta.clone();
        result
    }

    /// Forwards a request to the server, routing its progress to the
    /// client's token (shifted by `offset`) when the client asked for
    /// progress.
    pub(crate) async fn forward(
        &self,
        request: ClientRequest,
        meta: RequestMetaObject,
        ct: &CancellationToken,
        offset: f64,
    ) -> Result<ServerResult, ErrorData> {
        let server = self.server()?;
        let client_token = meta.get_progress_token();
        let mut routed = None;
        let result = forward_with(&server.peer, request, meta, ct, |token| {
            if let Some(client_token) = client_token {
                self.state.progress.add(
                    token.clone(),
                    ProgressRoute {
                        token: client_token,
                        offset,
                    },
                );
                routed = Some(token.clone());
            }
        })
        .await;
        if let Some(token) = routed {
            // The server's last progress may still be on its way: the SDK
            // hands notifications over in tasks of their own, which the
            // answer can overtake.
            let progress = Arc::clone(&self.state.progress);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                progress.remove(&token);
            });
        }
        match result {
            Ok(result) => Ok(result),
            Err(error) => Err(self.server_error(error).await),
        }
    }

    /// What to tell the client of a request the server did not answer.
    pub(crate) async fn server_error(&self, error: ServiceError) -> ErrorData {
        if is_gone(&error)
            && let Some(server) = self.state.server.get()
        {
            server.exit.settle().await;
            return ErrorData::internal_error(server.exit.gone(), None);
        }
        service_error(error, "the MCP server behind toolgate")
    }

    /// Keeps the tools of a listing, for gating calls to them.
    pub(crate) fn remember_tools(&self, tools: &[Tool]) {
        let mut known = self.state.tools.lock().expect("not poisoned");
        for tool in tools {
            known.insert(tool.name.to_string(), Arc::new(Listed::of(tool.clone())));
        }
    }

    /// The tool's definition as the server last listed it; listed again
    /// first when the server said its tools changed, or when the tool is
    /// not known yet.
    pub(crate) async fn tool(
        &self,
        name: &str,
        ct: &CancellationToken,
    ) -> Result<Option<Arc<Listed>>, ErrorData> {
        let changed = self.state.tools_changed.swap(false, Ordering::SeqCst);
        if !changed && let Some(tool) = self.state.tools.lock().expect("not poisoned").get(name) {
            return Ok(Some(Arc::clone(tool)));
        }
        let mut cursor: Option<String> = None;
        let mut listed = HashMap::new();
        // A server that pages forever is cut off.
        for _ in 0..1000 {
            let request: ClientRequest = serde_json::from_value(json!({
                "method": "tools/list",
                "params": cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c})),
            }))
            .expect("a tools/list request");
            let result = self
                .forward(request, RequestMetaObject::new(), ct, 0.0)
                .await?;
            let ServerResult::ListToolsResult(page) = result else {
                return Err(ErrorData::internal_error(
                    "the MCP server behind toolgate answered tools/list with something else",
                    None,
                ));
            };
            for tool in page.tools {
                listed.insert(tool.name.to_string(), Arc::new(Listed::of(tool)));
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let found = listed.get(name).map(Arc::clone);
        *self.state.tools.lock().expect("not poisoned") = listed;
        Ok(found)
    }

    fn client_protocol(&self, context: &RequestContext<RoleServer>) -> Option<ProtocolVersion> {
        context
            .peer
            .peer_info()
            .map(|info| info.protocol_version.clone())
    }

    /// Whether the client can be asked through elicitation.
    pub(crate) fn client_can_elicit(&self, context: &RequestContext<RoleServer>) -> bool {
        let declared = context
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.elicitation.is_some());
        declared
            && self
                .client_protocol(context)
                .is_some_and(|version| version >= ProtocolVersion::V_2025_06_18)
    }
}

/// Forwards the request `$method` with `$params` and expects the result
/// `$variant` back.
macro_rules! pass {
    ($self:ident, $context:ident, $method:literal, $params:expr, $variant:ident) => {{
        let result = $self
            .forward(request($method, &$params), $context.meta, &$context.ct, 0.0)
            .await?;
        match result {
            ServerResult::$variant(result) => Ok(result.into()),
            other => Err(unexpected($method, &other)),
        }
    }};
}

/// A request of the client's, to forward as it came.
fn request(method: &str, params: &impl serde::Serialize) -> ClientRequest {
    let params = serde_json::to_value(params).expect("MCP parameters serialize");
    let mut request = serde_json::Map::new();
    request.insert("method".to_owned(), json!(method));
    if !params.is_null() {
        request.insert("params".to_owned(), params);
    }
    serde_json::from_value(serde_json::Value::Object(request))
        .expect("parameters that came as this request make it again")
}

fn unexpected(method: &str, result: &ServerResult) -> ErrorData {
    ErrorData::internal_error(
        format!(
            "the MCP server behind toolgate answered {method} with a result of another kind: {}",
            serde_json::to_string(result).unwrap_or_default()
        ),
        None,
    )
}

impl Session {
    async fn pass_empty(
        &self,
        method: &str,
        params: &impl serde::Serialize,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.forward(request(method, params), context.meta, &context.ct, 0.0)
            .await
            .map(|_| ())
    }

    async fn notify(&self, notification: ClientNotification) {
        let Ok(server) = self.server() else {
            return;
        };
        let peer = server.peer.clone();
        // In a task of its own: a notification belongs to no request.
        let _ = tokio::spawn(async move { peer.send_notification(notification).await }).await;
    }
}

#[allow(
    deprecated,
    reason = "resources/subscribe passes through for the servers that have it"
)]
impl ServerHandler for Session {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        self.connect_server(request, context.peer.clone()).await
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        self.pass_empty("ping", &serde_json::Value::Null, context)
            .await
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, ErrorData> {
        Err(ErrorData::method_not_found::<DiscoverRequestMethod>())
    }

    async fn complete(
        &self,
        params: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        pass!(self, context, "completion/complete", params, CompleteResult)
    }

    async fn set_level(
        &self,
        params: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.pass_empty("logging/setLevel", &params, context).await
    }

    async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        pass!(self, context, "prompts/get", params, GetPromptResult)
    }

    async fn list_prompts(
        &self,
        params: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        pass!(self, context, "prompts/list", params, ListPromptsResult)
    }

    async fn list_resources(
        &self,
        params: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        pass!(self, context, "resources/list", params, ListResourcesResult)
    }

    async fn list_resource_templates(
        &self,
        params: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        pass!(
            self,
            context,
            "resources/templates/list",
            params,
            ListResourceTemplatesResult
        )
    }

    async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        pass!(self, context, "resources/read", params, ReadResourceResult)
    }

    async fn subscribe(
        &self,
        params: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.pass_empty("resources/subscribe", &params, context)
            .await
    }

    async fn unsubscribe(
        &self,
        params: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.pass_empty("resources/unsubscribe", &params, context)
            .await
    }

    async fn call_tool(
        &self,
        params: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match self
            .gate_call(CallToolRequest::new(params), context)
            .await?
        {
            ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
            ServerResult::CreateTaskResult(task) => Ok(CallToolResponse::Task(task)),
            other => Err(unexpected("tools/call", &other)),
        }
    }

    async fn list_tools(
        &self,
        params: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let page: ListToolsResult = pass!(self, context, "tools/list", params, ListToolsResult)?;
        self.remember_tools(&page.tools);
        Ok(page)
    }

    async fn on_custom_request(
        &self,
        custom: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let result = self
            .forward(
                ClientRequest::CustomRequest(custom),
                context.meta,
                &context.ct,
                0.0,
            )
            .await?;
        match result {
            ServerResult::CustomResult(result) => Ok(result),
            other => Ok(CustomResult(
                serde_json::to_value(&other).unwrap_or(serde_json::Value::Null),
            )),
        }
    }

    async fn get_task(
        &self,
        params: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        pass!(self, context, "tasks/get", params, GetTaskResult)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        self.notify(ClientNotification::ProgressNotification(
            ProgressNotification::new(params),
        ))
        .await;
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        self.notify(ClientNotification::RootsListChangedNotification(
            RootsListChangedNotification::default(),
        ))
        .await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.notify(ClientNotification::CustomNotification(notification))
            .await;
    }

    fn get_info(&self) -> InitializeResult {
        match self
            .state
            .server
            .get()
            .and_then(|server| server.peer.peer_info())
        {
            Some(peer) => self.server_info(&peer),
            None => InitializeResult::new(Default::default()),
        }
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        // Once the server is initialized, the client gets the version the
        // server agreed to, so that both sides speak the same.
        if let Some(server) = self.state.server.get()
            && let Some(peer) = server.peer.peer_info()
        {
            return std::borrow::Cow::Owned(vec![peer.protocol_version.clone()]);
        }
        // The sessions of the initialize handshake only: each client gets a
        // server of its own, started when it initializes.
        std::borrow::Cow::Owned(
            ProtocolVersion::KNOWN_VERSIONS
                .iter()
                .filter(|version| version.has_initialize())
                .cloned()
                .collect(),
        )
    }
}

//! `toolgate mcp`: the MCP gateway, on the same store and policy as the
//! rest of the command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use toolgate::Role;
use toolgate::store::Store;
use toolgate_mcp::{
    Downstream, Gateway, GatewayConfig, HttpCaller, parse_approve_via, parse_timeout,
};
use toolgate_server::Problem;

use crate::context::StoreArgs;
use crate::exit;

/// Put toolgate's approvals in front of an MCP server.
///
/// Starts the MCP server COMMAND (one per client) and serves the client on
/// this process's stdin and stdout; or reaches a server over streamable
/// HTTP (--upstream-url), or serves clients over streamable HTTP
/// (--listen). Everything passes through unchanged except tool calls:
/// policy decides each (tools are SERVER:TOOL to rules; with no rule, a
/// tool annotated readOnlyHint is allowed and any other is asked about). A
/// call that waits is a pending approval in toolgate's store: the inbox,
/// the API or `toolgate approvals` decide it, and the client (through
/// elicitation) or the terminal is asked, per `approve_via`. A tool whose
/// definition changed since it was first seen is held until its new
/// definition is approved. Settings: [mcp] in toolgate.toml.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example, as an MCP client's server entry:\n  \
    toolgate mcp --name files -- npx -y @modelcontextprotocol/server-filesystem ~/notes")]
pub(crate) struct McpArgs {
    /// The server's name: its tools are NAME:TOOL to policy rules, grants
    /// and the inbox. Default: [mcp] name, else the package or program the
    /// command runs.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Whom to ask about a held call, in order of preference, comma
    /// separated: client (MCP elicitation, when the client can), terminal
    /// (/dev/tty, when there is one), inbox (nobody is prompted; the call
    /// waits for the inbox, the API or `toolgate approvals`). Default: [mcp]
    /// approve_via, else client,terminal,inbox.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    approve_via: Option<Vec<String>>,

    /// How long a held call waits when its policy rule sets no timeout; it
    /// is then rejected. Default: [mcp] timeout, else 10m.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,

    /// Reach the MCP server over streamable HTTP at this URL instead of
    /// starting a command.
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream_url: Option<String>,

    /// Serve MCP clients over streamable HTTP at http://ADDR/mcp instead of
    /// on stdio (each session gets its own connection to the server). Each
    /// request needs `Authorization: Bearer TOKEN`, a toolgate token of an
    /// agent or an admin (`toolgate tokens create --role agent --name
    /// NAME`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// With --listen on a loopback address: serve clients without a token
    /// (anyone on this machine can then call the server's tools through
    /// the gateway, under its policy).
    #[arg(long, requires = "listen")]
    no_auth: bool,

    /// The MCP server to start, after `--`: COMMAND ARGS…
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

pub(crate) async fn run(args: McpArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let downstream = match (args.upstream_url, args.command.split_first()) {
        (Some(url), _) => {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--upstream-url {url:?} is not an http:// or https:// URL; give the MCP \
                 server's streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp"
            );
            Downstream::Url(url)
        }
        (None, Some((program, rest))) => Downstream::Command {
            program: program.clone(),
            args: rest.to_vec(),
        },
        (None, None) => anyhow::bail!(
            "name the MCP server to put toolgate in front of: `toolgate mcp -- COMMAND ARGS…` \
             (e.g. `toolgate mcp -- npx -y @modelcontextprotocol/server-filesystem ~/notes`), \
             or --upstream-url URL"
        ),
    };
    if args.no_auth
        && let Some(listen) = args.listen
        && !listen.ip().is_loopback()
    {
        anyhow::bail!(
            "--no-auth would let anyone who can reach {listen} call the server's tools; it is \
             only allowed on a loopback address (127.0.0.1, ::1). Give clients tokens instead: \
             `toolgate tokens create --role agent --name NAME`"
        );
    }
    let policy = store_args.policy()?;
    let mut config = match store_args.config_text()? {
        Some((text, file)) => GatewayConfig::from_toml_str(&text, &file)?,
        None => GatewayConfig::default(),
    };
    if let Some(name) = args.name {
        toolgate_mcp::check_name(&name).map_err(|why| anyhow::anyhow!("--name {why}"))?;
        config.name = Some(name);
    }
    if let Some(words) = args.approve_via {
        config.approve_via = parse_approve_via(words.iter().map(String::as_str))
            .map_err(|error| anyhow::anyhow!("--approve-via: {error}"))?;
    }
    if let Some(timeout) = args.timeout {
        config.timeout =
            parse_timeout(&timeout).map_err(|error| anyhow::anyhow!("--timeout: {error}"))?;
    }
    let store = store_args.open_or_create_store().await?;
    let tokens = (!args.no_auth).then(|| Arc::clone(&store));
    let gateway = Gateway::new(store, policy, config, downstream)?;
    match args.listen {
        None => {
            gateway.serve_stdio().await?;
        }
        Some(listen) => serve_http(&gateway, listen, tokens).await?,
    }
    Ok(exit::code(exit::SUCCESS))
}

/// Serves clients over streamable HTTP; with `tokens`, only those whose
/// bearer token is a live agent's or admin's in that store.
async fn serve_http(
    gateway: &Gateway,
    listen: SocketAddr,
    tokens: Option<Arc<dyn Store>>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen}: is another server there? Choose another with --listen"
            )
        })?;
    let address = listener.local_addr().unwrap_or(listen);
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        address.ip().to_string(),
    ];
    hosts.dedup();
    let cancel = tokio_util::sync::CancellationToken::new();
    let service = gateway.streamable_http(hosts, cancel.clone());
    let mut router = axum::Router::new().nest_service("/mcp", service);
    let who = if let Some(store) = tokens {
        router = router.layer(axum::middleware::from_fn_with_state(store, require_token));
        "clients with an agent's or admin's token"
    } else {
        "any client on this machine (--no-auth)"
    };
    eprintln!(
        "toolgate mcp: serving MCP clients at http://{address}/mcp for the server `{}`, to \
         {who}; Ctrl-C stops",
        gateway.name()
    );
    // Responses stream as server-sent events: each small write goes out at
    // once instead of after the client's delayed ACK (up to 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            crate::serve::shutdown_signal().await;
            cancel.cancel();
        })
        .await
        .context("the gateway's HTTP server failed")?;
    gateway.finish().await;
    eprintln!("toolgate mcp: stopped");
    Ok(())
}

/// Lets through requests whose bearer token is a live agent's or admin's,
/// marked with who made them; answers others with 401 or 403.
async fn require_token(
    State(store): State<Arc<dyn Store>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = toolgate::time::to_millis(std::time::SystemTime::now());
    let token = match toolgate_server::bearer_token(&*store, request.headers(), now).await {
        Ok(token) => token,
        Err(problem) => return problem.into_response(),
    };
    let principal = token.principal;
    if principal.role == Role::Approver {
        return Problem::forbidden(format!(
            "{} is an approver; the MCP gateway serves agents: use an agent's or an admin's \
             token (`toolgate tokens create --role agent --name NAME`)",
            principal.name
        ))
        .into_response();
    }
    request.extensions_mut().insert(HttpCaller {
        name: principal.name,
    });
    next.run(request).await
}

//! `toolgate serve`: the approval server, on the same store as the rest of
//! the command line.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use toolgate_server::{Server, ServerConfig, load_webhooks};

use crate::context::StoreArgs;
use crate::exit;

/// Serve the HTTP API and the web inbox.
///
/// Agents ask over HTTP before their tool calls run (POST /v1/approvals)
/// and wait for the decision; people decide in the web inbox at / or over
/// the API. The API is described at /v1/openapi.json. Requests need a
/// token: `toolgate tokens create` makes them. Events are POSTed, signed,
/// to the [[webhooks]] of toolgate.toml. Stops cleanly on Ctrl-C or
/// SIGTERM, answering the requests in flight first.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen. Also: TOOLGATE_LISTEN.
    #[arg(
        long,
        value_name = "ADDR",
        env = "TOOLGATE_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,

    /// Mark the web inbox's session cookie Secure (sent only over HTTPS):
    /// use it when people reach the server through HTTPS, e.g. behind a
    /// TLS-terminating proxy. Also: TOOLGATE_SECURE_COOKIES=true.
    #[arg(long, env = "TOOLGATE_SECURE_COOKIES")]
    secure_cookies: bool,
}

pub(crate) async fn run(args: ServeArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let policy = store_args.policy()?;
    let webhooks = match store_args.config_text()? {
        Some((text, file)) => load_webhooks(&text, &file, |name| std::env::var(name).ok())?,
        None => Vec::new(),
    };
    let store = store_args.open_or_create_store().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server there? Choose another with --listen",
                args.listen
            )
        })?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let rules = policy.rules().len();
    let hooks = webhooks.len();
    let mut config = ServerConfig::with_policy(policy).with_webhooks(webhooks);
    config.secure_cookies = args.secure_cookies;
    let server = Server::new(store, config);
    eprintln!(
        "toolgate serve: listening on http://{address} ({rules} policy rule(s), {hooks} \
         webhook(s)); Ctrl-C stops"
    );
    server
        .serve(listener, shutdown_signal())
        .await
        .context("the server failed")?;
    eprintln!("toolgate serve: stopped");
    Ok(exit::code(exit::SUCCESS))
}

/// Ctrl-C, or SIGTERM (what service managers send).
pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

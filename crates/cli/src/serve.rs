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
    /// Where to listen. Also: TOOLGATE_LISTEN, or `listen` in [serve] of
    /// toolgate.toml. Default: 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", env = "TOOLGATE_LISTEN")]
    listen: Option<SocketAddr>,

    /// Mark the web inbox's session cookie Secure (sent only over HTTPS):
    /// use it when people reach the server through HTTPS, e.g. behind a
    /// TLS-terminating proxy. Also: TOOLGATE_SECURE_COOKIES=true, or
    /// `secure_cookies = true` in [serve] of toolgate.toml.
    #[arg(long, env = "TOOLGATE_SECURE_COOKIES")]
    secure_cookies: bool,
}

/// Where the server listens when nothing says otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `[serve]` in toolgate.toml; flags and the environment come first.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSection {
    listen: Option<String>,
    secure_cookies: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    serve: Option<toml::Value>,
}

/// The settings of `[serve]` in toolgate.toml.
#[derive(Debug, Default)]
struct Settings {
    listen: Option<SocketAddr>,
    secure_cookies: bool,
}

/// The `[serve]` section of toolgate.toml `text` (named `file`), if any.
fn serve_section(text: &str, file: &str) -> anyhow::Result<Settings> {
    let parsed: ConfigFile = toml::from_str(text)
        .map_err(|error| anyhow::anyhow!("{file}: invalid TOML: {}", error.message().trim_end()))?;
    let Some(section) = parsed.serve else {
        return Ok(Settings::default());
    };
    let section: ServeSection = section.try_into().map_err(|error: toml::de::Error| {
        anyhow::anyhow!(
            "{file}: [serve]: {}; the section has `listen = \"HOST:PORT\"` and \
             `secure_cookies = true|false`",
            error.message().trim_end()
        )
    })?;
    let listen = match section.listen {
        Some(text) => Some(text.parse().map_err(|_| {
            anyhow::anyhow!(
                "{file}: [serve]: listen = {text:?} is not an address to listen on; write \
                 HOST:PORT with an IP address, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\""
            )
        })?),
        None => None,
    };
    Ok(Settings {
        listen,
        secure_cookies: section.secure_cookies.unwrap_or(false),
    })
}

pub(crate) async fn run(args: ServeArgs, store_args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let policy = store_args.policy()?;
    let (webhooks, section) = match store_args.config_text()? {
        Some((text, file)) => (
            load_webhooks(&text, &file, |name| std::env::var(name).ok())?,
            serve_section(&text, &file)?,
        ),
        None => (Vec::new(), Settings::default()),
    };
    let listen = match args.listen.or(section.listen) {
        Some(listen) => listen,
        None => DEFAULT_LISTEN.parse().expect("the default address parses"),
    };
    let store = store_args.open_or_create_store().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen}: is another server there? Choose another with \
                 --listen, or `listen` in [serve] of toolgate.toml"
            )
        })?;
    let address = listener.local_addr().unwrap_or(listen);
    let rules = policy.rules().len();
    let hooks = webhooks.len();
    let mut config = ServerConfig::with_policy(policy).with_webhooks(webhooks);
    config.secure_cookies = args.secure_cookies || section.secure_cookies;
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

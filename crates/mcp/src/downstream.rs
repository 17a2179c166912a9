//! The MCP server behind the gateway: a command it starts and speaks to on
//! stdio, or a server it reaches over streamable HTTP; and what it says
//! when that server is gone.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::ErrorData;
use rmcp::service::{RoleClient, RunningService, serve_client};
use rmcp::transport::StreamableHttpClientTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;

use crate::relay::Relay;

/// How many of the server's last lines on stderr a crash report quotes.
const STDERR_TAIL: usize = 12;

/// How long a server is given to exit once its client has gone, before it
/// is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Where the MCP server the gateway fronts is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Downstream {
    /// A command the gateway starts, one per client session, speaking MCP
    /// on its stdin and stdout; its stderr passes through to the gateway's.
    Command {
        /// The program.
        program: OsString,
        /// Its arguments.
        args: Vec<OsString>,
    },
    /// A server reached over streamable HTTP at this URL.
    Url(String),
}

impl Downstream {
    /// The server, as people know it: the command line, or the URL.
    pub fn describe(&self) -> String {
        match self {
            Downstream::Command { program, args } => std::iter::once(program)
                .chain(args)
                .map(|word| {
                    let word = word.to_string_lossy();
                    if word.is_empty() || word.contains(char::is_whitespace) {
                        format!("{word:?}")
                    } else {
                        word.into_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            Downstream::Url(url) => url.clone(),
        }
    }

    /// A name for the server when none is configured: the package or
    /// program a command runs (`npx -y @scope/server-files@1` gives
    /// `server-files`), or a URL's host.
    pub fn default_name(&self) -> String {
        const LAUNCHERS: &[&str] = &[
            "npx", "node", "bunx", "bun", "deno", "uvx", "uv", "pipx", "python", "python3", "pnpm",
            "yarn", "docker", "podman", "env",
        ];
        let word = match self {
            Downstream::Command { program, args } => {
                let program = base_name(&program.to_string_lossy());
                if LAUNCHERS.contains(&program.as_str()) {
                    args.iter()
                        .map(|arg| arg.to_string_lossy().into_owned())
                        .filter(|arg| !arg.starts_with('-') && !LAUNCHERS.contains(&arg.as_str()))
                        .find(|arg| !matches!(arg.as_str(), "run" | "exec" | "dlx" | "tool"))
                        .map(|arg| package_name(&arg))
                        .unwrap_or(program)
                } else {
                    program
                }
            }
            Downstream::Url(url) => url
                .split_once("://")
                .map_or(url.as_str(), |(_, rest)| rest)
                .split(['/', ':', '?', '#'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let name: String = word
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        let name = name.trim_matches(['-', '.']).to_owned();
        if name.is_empty() {
            "mcp".to_owned()
        } else {
            name
        }
    }
}

fn base_name(path: &str) -> String {
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    file.strip_suffix(".exe").unwrap_or(file).to_owned()
}

/// `@scope/name@1.2` and `name==1.2` give `name`; a path gives its file
/// name without extension.
fn package_name(arg: &str) -> String {
    let arg = arg.strip_prefix('@').unwrap_or(arg);
    let last = arg.rsplit(['/', '\\']).next().unwrap_or(arg);
    let last = last.split(['@', '=']).next().unwrap_or(last);
    let last = last
        .rsplit_once('.')
        .filter(|(_, ext)| matches!(*ext, "js" | "mjs" | "cjs" | "ts" | "py"))
        .map_or(last, |(stem, _)| stem);
    last.to_owned()
}

/// What the gateway knows of a server that may have gone: its exit status
/// and its last words on stderr.
#[derive(Debug)]
pub(crate) struct ExitWatch {
    describe: String,
    status: Mutex<Option<String>>,
    tail: Mutex<VecDeque<String>>,
    exited: Notify,
    kill: Notify,
}

impl ExitWatch {
    fn new(describe: String) -> Arc<ExitWatch> {
        Arc::new(ExitWatch {
            describe,
            status: Mutex::new(None),
            tail: Mutex::new(VecDeque::new()),
            exited: Notify::new(),
            kill: Notify::new(),
        })
    }

    /// The message for a request the server can no longer answer.
    pub(crate) fn gone(&self) -> String {
        let status = self.status.lock().expect("not poisoned").clone();
        let mut message = match status {
            Some(status) => format!(
                "the MCP server behind toolgate (`{}`) {status}",
                self.describe
            ),
            None => format!(
                "the connection to the MCP server behind toolgate (`{}`) is closed",
                self.describe
            ),
        };
        let tail = self.tail.lock().expect("not poisoned");
        if !tail.is_empty() {
            message.push_str("; its last words on stderr: ");
            message.push_str(&tail.iter().cloned().collect::<Vec<_>>().join(" | "));
        }
        message
    }

    /// Waits a little for the exit status, so that a report can give it.
    pub(crate) async fn settle(&self) {
        if self.status.lock().expect("not poisoned").is_some() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.exited.notified()).await;
    }

    /// Asks the server to go: its stdin is closed already; it is killed if
    /// it has not exited after a grace period.
    pub(crate) fn stop(&self) {
        self.kill.notify_one();
    }

    fn set_status(&self, status: String) {
        *self.status.lock().expect("not poisoned") = Some(status);
        self.exited.notify_waiters();
    }
}

/// A server the gateway is connected to.
pub(crate) struct Connection {
    pub(crate) service: RunningService<RoleClient, Relay>,
    pub(crate) exit: Arc<ExitWatch>,
}

/// Starts (or reaches) the server and initialises it on the client's
/// behalf.
pub(crate) async fn connect(
    downstream: &Downstream,
    relay: Relay,
) -> Result<Connection, ErrorData> {
    let describe = downstream.describe();
    let exit = ExitWatch::new(describe.clone());
    let started = match downstream {
        Downstream::Command { program, args } => {
            let mut command = tokio::process::Command::new(program);
            command
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = command.spawn().map_err(|error| {
                ErrorData::internal_error(
                    format!("toolgate cannot start the MCP server `{describe}`: {error}"),
                    None,
                )
            })?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                unreachable!("all three were asked to be piped");
            };
            tokio::spawn(pass_stderr(stderr, Arc::clone(&exit)));
            tokio::spawn(watch_child(child, Arc::clone(&exit)));
            serve_client(relay, (stdout, stdin)).await
        }
        Downstream::Url(url) => {
            exit.set_status("is not reachable".to_owned());
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            let started = serve_client(relay, transport).await;
            *exit.status.lock().expect("not poisoned") = None;
            started
        }
    };
    match started {
        Ok(service) => Ok(Connection { service, exit }),
        Err(error) => {
            exit.settle().await;
            Err(ErrorData::internal_error(
                format!("{} (while initializing it: {error})", exit.gone()),
                None,
            ))
        }
    }
}

async fn pass_stderr(stderr: tokio::process::ChildStderr, exit: Arc<ExitWatch>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut out = tokio::io::stderr();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
        let mut tail = exit.tail.lock().expect("not poisoned");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        let mut line = line;
        if line.len() > 500 {
            let mut cut = 500;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        tail.push_back(line);
    }
}

async fn watch_child(mut child: tokio::process::Child, exit: Arc<ExitWatch>) {
    let status = tokio::select! {
        status = child.wait() => status,
        () = exit.kill.notified() => {
            match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    };
    let status = match status {
        Ok(status) => match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was stopped ({status})"),
        },
        Err(error) => format!("could not be watched: {error}"),
    };
    exit.set_status(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(words: &[&str]) -> Downstream {
        Downstream::Command {
            program: words[0].into(),
            args: words[1..].iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn default_names_come_from_the_package_or_program() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "npx",
                    "-y",
                    "@modelcontextprotocol/server-filesystem",
                    "/tmp",
                ],
                "server-filesystem",
            ),
            (&["npx", "-y", "@acme/notes@1.2.3"], "notes"),
            (
                &["uvx", "mcp-server-git==0.6", "--repo", "."],
                "mcp-server-git",
            ),
            (&["node", "./dist/index.js"], "index"),
            (&["/usr/local/bin/my-server", "--port", "1"], "my-server"),
            (&["docker", "run", "-i", "--rm", "mcp/fetch"], "fetch"),
            (&["npx"], "npx"),
        ];
        for (words, expected) in cases {
            assert_eq!(command(words).default_name(), *expected, "for {words:?}");
        }
        assert_eq!(
            Downstream::Url("http://127.0.0.1:3001/mcp".into()).default_name(),
            "127.0.0.1"
        );
    }

    #[test]
    fn a_command_is_described_as_typed() {
        assert_eq!(
            command(&["npx", "-y", "server", "/my files"]).describe(),
            "npx -y server \"/my files\""
        );
    }
}

//! `toolgate mcp`, end to end: the built binary between a real MCP client
//! (rmcp's, in this process) and real MCP servers from npm
//! (`@modelcontextprotocol/server-filesystem`, `server-everything`) and a
//! test server of ours (`crates/mcp/tests/servers/changing-server.mjs`),
//! with decisions made through `toolgate serve`'s HTTP API, the command
//! line and MCP elicitation. `scripts/test` installs the npm packages.

// Sampling, deprecated in the newest MCP revision, is still in the ones the
// gateway speaks; a server's sampling request must pass through.
#![allow(deprecated, reason = "the sampling types, for the pass-through test")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, CreateMessageRequestParams,
    CreateMessageResult, ElicitRequestParams, ElicitResult, ErrorData, ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt as _};
use serde_json::{Value, json};

mod common;

use common::{Server, http};

/// The npm packages the tests use, installed by `scripts/test`.
fn servers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mcp/tests/servers");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/server-filesystem")
            .exists(),
        "the MCP test servers are not installed: run scripts/test, or `npm ci --prefix {}`",
        dir.display()
    );
    dir
}

fn filesystem_server(root: &Path) -> Vec<String> {
    let entry =
        servers_dir().join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    vec![
        "node".into(),
        entry.display().to_string(),
        root.display().to_string(),
    ]
}

fn changing_server() -> Vec<String> {
    vec![
        "node".into(),
        servers_dir()
            .join("changing-server.mjs")
            .display()
            .to_string(),
    ]
}

/// A store, a `toolgate.toml`, and a folder for the filesystem server.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(config: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("toolgate.toml"), config).unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/hello.txt"), "hello from the files\n").unwrap();
        Env { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self) -> PathBuf {
        // The filesystem server resolves symlinks (/tmp may be one).
        self.path("files").canonicalize().unwrap()
    }

    fn toolgate(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOOLGATE_USER", "admin")
            .env("NOTES_FILE", self.path("notes.txt"))
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(self.path("toolgate.db"))
            .args(args);
        command
    }

    /// `toolgate mcp ARGS -- SERVER…`, ready to serve a client on stdio.
    fn gateway(&self, args: &[&str], server: &[String]) -> tokio::process::Command {
        let mut command = self.toolgate(&["mcp"]);
        command.args(args).arg("--").args(server);
        command.into()
    }

    /// A client (who cannot be asked) of the gateway in front of the
    /// filesystem server, named `files`, with `args` besides.
    async fn files_client(&self, args: &[&str]) -> RunningService<RoleClient, Person> {
        let mut all = vec!["--name", "files"];
        all.extend_from_slice(args);
        connect(
            Person::default(),
            self.gateway(&all, &filesystem_server(&self.files())),
        )
        .await
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run_piped(self.toolgate(args), "")
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Waits until an approval for `tool` is pending; returns it.
    async fn pending(&self, tool: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.json(&["approvals", "list", "--json"]);
            if let Some(found) = list
                .as_array()
                .unwrap()
                .iter()
                .find(|approval| approval["tool"] == tool)
            {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "no approval for {tool}: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn token(&self, name: &str, role: &str) -> String {
        let output = self.run(&["tokens", "create", "--name", name, "--role", role]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    }

    fn serve(&self) -> Server {
        let listen = format!("127.0.0.1:{}", free_port());
        Server::start(self.toolgate(&["serve", "--listen", &listen]), &listen)
    }
}

/// [`http`], off the async runtime.
async fn api(method: &'static str, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let token = token.to_owned();
    tokio::task::spawn_blocking(move || http(method, &url, &token, body))
        .await
        .unwrap()
}

/// Checks that process `pid` made its stdin and stdout non-blocking: the
/// gateway's reactor, not the blocking pool, serves them.
fn assert_non_blocking(pid: u32) {
    const O_NONBLOCK: u32 = 0o4000;
    for fd in [0, 1] {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .map(|flags| u32::from_str_radix(flags.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & O_NONBLOCK, 0, "fd {fd} of the gateway: {info}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A client that can be asked through elicitation, and answers with
/// `answer`; it keeps what it was asked, and the progress it was told.
#[derive(Clone, Default)]
struct Person {
    answer: Option<ElicitResult>,
    asked: Arc<Mutex<Vec<String>>>,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Person {
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let asked = serde_json::to_value(&params).unwrap();
        self.asked.lock().unwrap().push(
            asked["messages"][0]["content"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        Ok(serde_json::from_value(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "a sampled answer"},
            "model": "e2e-model",
            "stopReason": "endTurn",
        }))
        .unwrap())
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = serde_json::to_value(&request).unwrap();
        self.asked
            .lock()
            .unwrap()
            .push(request["message"].as_str().unwrap_or_default().to_owned());
        Ok(self
            .answer
            .clone()
            .expect("this client was not to be asked"))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    fn get_info(&self) -> ClientConfig {
        let elicitation = if self.answer.is_some() {
            json!({"form": {}})
        } else {
            Value::Null
        };
        let mut capabilities = json!({"sampling": {}});
        if !elicitation.is_null() {
            capabilities["elicitation"] = elicitation;
        }
        serde_json::from_value(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": capabilities,
            "clientInfo": {"name": "e2e-client", "version": "1.0.0"},
        }))
        .unwrap()
    }
}

fn answer(action: &str, content: Value) -> ElicitResult {
    serde_json::from_value(json!({"action": action, "content": content})).unwrap()
}

async fn connect<H: ClientHandler>(
    handler: H,
    command: tokio::process::Command,
) -> RunningService<RoleClient, H> {
    handler
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("the gateway initializes")
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    serde_json::from_value(json!({"name": tool, "arguments": args})).unwrap()
}

fn content_text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| block.as_text().map(|text| text.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

const ASK_WRITES: &str = r#"
[[policy.rules]]
tool = "files:write_file"
action = "ask"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_passes_through_and_a_read_only_call_runs_at_once() {
    let env = Env::new("");
    let server = filesystem_server(&env.files());
    let direct = connect(Person::default(), {
        let mut command = tokio::process::Command::new(&server[0]);
        command.args(&server[1..]);
        command
    })
    .await;
    let gated = connect(
        Person::default(),
        env.gateway(&["--name", "files", "--approve-via", "inbox"], &server),
    )
    .await;

    // What the client sees of the server is the server's own.
    let direct_info = serde_json::to_value(direct.peer_info().unwrap()).unwrap();
    let gated_info = serde_json::to_value(gated.peer_info().unwrap()).unwrap();
    assert_eq!(gated_info, direct_info);
    let direct_tools = direct.list_all_tools().await.unwrap();
    let gated_tools = gated.list_all_tools().await.unwrap();
    assert!(direct_tools.iter().any(|tool| tool.name == "write_file"));
    assert_eq!(
        serde_json::to_value(&gated_tools).unwrap(),
        serde_json::to_value(&direct_tools).unwrap()
    );

    // `readOnlyHint: true` and no rule: allowed at once.
    let hello = env.files().join("hello.txt");
    let result = gated
        .call_tool(call("read_text_file", json!({"path": hello})))
        .await
        .unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    assert_eq!(content_text(&result), "hello from the files\n");

    // The server's own errors pass through as they are.
    let direct_error = direct
        .call_tool(call("read_text_file", json!({"path": "/etc/passwd"})))
        .await
        .unwrap();
    let gated_error = gated
        .call_tool(call("read_text_file", json!({"path": "/etc/passwd"})))
        .await
        .unwrap();
    assert_eq!(gated_error.is_error, Some(true));
    assert_eq!(content_text(&gated_error), content_text(&direct_error));

    // Both calls are in the audit log, approved by the tool's hints.
    let approved = env.json(&["approvals", "list", "--status", "approved", "--json"]);
    let approved: Vec<&Value> = approved
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tool"] != "toolgate.pin")
        .collect();
    assert_eq!(approved.len(), 2, "{approved:?}");
    assert!(approved.iter().all(|a| a["tool"] == "files:read_text_file"));
    assert!(
        approved
            .iter()
            .all(|a| a["decided_by"] == "policy (default)")
    );
    // Each call is a run of its own; its end follows it into the log,
    // after the reply.
    let runs: Vec<String> = approved
        .iter()
        .map(|a| a["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_ne!(runs[0], runs[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let export = env.run(&["audit", "export", "--json"]);
        let kinds: Vec<String> = text(&export.stdout)
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|entry| runs.iter().any(|run| entry["run_id"] == run.as_str()))
            .map(|entry| entry["kind"].as_str().unwrap().to_owned())
            .collect();
        let finished = kinds.iter().filter(|kind| *kind == "tool_finished").count();
        if finished == 2 {
            assert_eq!(
                kinds.iter().filter(|kind| *kind == "tool_started").count(),
                2,
                "{kinds:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gated.cancel().await.unwrap();
    direct.cancel().await.unwrap();
    let verify = env.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_the_http_api_and_happens_once_approved() {
    let env = Env::new(ASK_WRITES);
    let server = env.serve();
    let approver = env.token("alice", "approver");
    let person = Person::default();
    let client = connect(
        person.clone(),
        env.gateway(
            &["--name", "files", "--approve-via", "inbox"],
            &filesystem_server(&env.files()),
        ),
    )
    .await;
    let target = env.files().join("new.txt");
    let peer = client.peer().clone();
    let args = json!({"path": target, "content": "approved content"});
    let writing = tokio::spawn(async move {
        let mut params = call("write_file", args);
        params.meta = Some(serde_json::from_value(json!({"progressToken": "write-1"})).unwrap());
        peer.call_tool(params).await
    });

    let approval = env.pending("files:write_file").await;
    assert!(
        !target.exists(),
        "the write happened before it was approved"
    );
    let id = approval["id"].as_str().unwrap();
    let (status, shown) = api(
        "GET",
        format!("{}/v1/approvals/{id}", server.base),
        &approver,
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["args"]["content"], "approved content");
    // The client is told that the call waits, while it waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while person.progress.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no progress while waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let progress = person.progress.lock().unwrap()[0].clone();
    assert!(
        progress.message.as_deref().unwrap_or_default().contains(id),
        "{progress:?}"
    );

    let (status, decided) = api(
        "POST",
        format!("{}/v1/approvals/{id}/decision", server.base),
        &approver,
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    let result = writing.await.unwrap().unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "approved content"
    );

    let shown = env.json(&["approvals", "show", id, "--json"]);
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["decided_by"], "alice");
    client.cancel().await.unwrap();
    let verify = env.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_does_not_happen_and_the_model_is_told_why() {
    let env = Env::new(ASK_WRITES);
    let client = env.files_client(&["--approve-via", "inbox"]).await;
    let target = env.files().join("rejected.txt");
    let peer = client.peer().clone();
    let args = json!({"path": target, "content": "never"});
    let writing = tokio::spawn(async move { peer.call_tool(call("write_file", args)).await });
    let approval = env.pending("files:write_file").await;
    let id = approval["id"].as_str().unwrap();
    let output = env.run(&["approvals", "reject", id, "-m", "not in that folder"]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let result = writing.await.unwrap().unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        content_text(&result),
        "admin rejected this call: not in that folder"
    );
    assert!(!target.exists());
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_cancels_while_it_waits_is_never_made() {
    let env = Env::new(ASK_WRITES);
    let client = env.files_client(&["--approve-via", "inbox"]).await;
    let target = env.files().join("cancelled.txt");
    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(
        call("write_file", json!({"path": target, "content": "x"})),
    ));
    let handle = client
        .peer()
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .unwrap();
    let approval = env.pending("files:write_file").await;
    handle
        .cancel(Some("the user changed their mind".into()))
        .await
        .unwrap();
    // The approval is withdrawn: approving it now is refused, and the call
    // is not made.
    let id = approval["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = env.json(&["approvals", "show", id, "--json"]);
        if shown["status"] == "cancelled" {
            assert_eq!(
                shown["result"]["content"],
                "The agent withdrew this call: the MCP client cancelled the call, or went away"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = env.run(&["approvals", "approve", id]);
    assert!(!output.status.success());
    assert!(!target.exists());
    // The session goes on.
    let tools = client.list_all_tools().await.unwrap();
    assert!(!tools.is_empty());
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_decides_fails_closed_at_its_timeout() {
    let env = Env::new(ASK_WRITES);
    let client = connect(
        Person::default(),
        env.gateway(
            &[
                "--name",
                "files",
                "--approve-via",
                "inbox",
                "--timeout",
                "1s",
            ],
            &filesystem_server(&env.files()),
        ),
    )
    .await;
    let target = env.files().join("late.txt");
    let started = Instant::now();
    let result = client
        .call_tool(call(
            "write_file",
            json!({"path": target, "content": "late"}),
        ))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        content_text(&result),
        "Nobody approved this call within 1s, so it was rejected."
    );
    assert!(!target.exists());
    let expired = env.json(&["approvals", "list", "--status", "expired", "--json"]);
    assert_eq!(expired.as_array().unwrap().len(), 1, "{expired}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_deny_returns_its_reason_without_asking() {
    let env = Env::new(
        r#"
[[policy.rules]]
tool = "files:write_*"
action = "deny"
reason = "this folder is read-only for agents"
"#,
    );
    let client = env.files_client(&[]).await;
    let target = env.files().join("denied.txt");
    let result = client
        .call_tool(call("write_file", json!({"path": target, "content": "x"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        content_text(&result),
        "toolgate's policy (rule 1) refused this call: this folder is read-only for agents"
    );
    assert!(!target.exists());
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_whose_schema_toolgate_cannot_read_is_gated_without_it() {
    // `odd_schema` declares a type no validator knows: toolgate leaves its
    // arguments to the server, and gates and records the call as any other.
    let env = Env::new("");
    let client = connect(
        Person::default(),
        env.gateway(
            &["--name", "notes", "--approve-via", "inbox"],
            &changing_server(),
        ),
    )
    .await;
    let result = client
        .call_tool(call("odd_schema", json!({"n": 7})))
        .await
        .unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    assert_eq!(content_text(&result), "n is 7");
    client.cancel().await.unwrap();
    let listed = env.json(&["approvals", "list", "--status", "approved", "--json"]);
    let tools: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|approval| &approval["tool"])
        .collect();
    assert!(tools.contains(&&json!("notes:odd_schema")), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_decides_through_elicitation_when_it_can() {
    let env = Env::new(ASK_WRITES);
    let yes = Person {
        answer: Some(answer("accept", json!({"decision": "approve"}))),
        ..Person::default()
    };
    let client = connect(
        yes.clone(),
        env.gateway(&["--name", "files"], &filesystem_server(&env.files())),
    )
    .await;
    let target = env.files().join("asked.txt");
    let result = client
        .call_tool(call(
            "write_file",
            json!({"path": target, "content": "yes"}),
        ))
        .await
        .unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "yes");
    let asked = yes.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].contains("`write_file`"), "{}", asked[0]);
    assert!(asked[0].contains("\"content\": \"yes\""), "{}", asked[0]);
    let approved = env.json(&["approvals", "list", "--status", "approved", "--json"]);
    assert_eq!(approved[0]["decided_by"], "client:e2e-client");
    client.cancel().await.unwrap();

    let no = Person {
        answer: Some(answer(
            "accept",
            json!({"decision": "reject", "reason": "use the notes folder"}),
        )),
        ..Person::default()
    };
    let client = connect(
        no,
        env.gateway(&["--name", "files"], &filesystem_server(&env.files())),
    )
    .await;
    let target = env.files().join("refused.txt");
    let result = client
        .call_tool(call("write_file", json!({"path": target, "content": "no"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        content_text(&result),
        "client:e2e-client rejected this call: use the notes folder"
    );
    assert!(!target.exists());
    client.cancel().await.unwrap();
}

const NOTES_POLICY: &str = r#"
[[policy.rules]]
tool = "notes:write_note"
action = "allow"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_whose_definition_changes_is_held_until_the_change_is_accepted() {
    let env = Env::new(NOTES_POLICY);
    let client = connect(
        Person::default(),
        env.gateway(
            &["--name", "notes", "--approve-via", "inbox"],
            &changing_server(),
        ),
    )
    .await;
    let notes = env.path("notes.txt");
    let first = client
        .call_tool(call("write_note", json!({"text": "one"})))
        .await
        .unwrap();
    assert_eq!(content_text(&first), "wrote 4 bytes");
    // The server changes the tool's description behind the client's back.
    client.call_tool(call("mutate", json!({}))).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let write = tools.iter().find(|tool| tool.name == "write_note").unwrap();
    assert!(
        write
            .description
            .as_deref()
            .unwrap()
            .contains("evil.example")
    );

    let peer = client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("write_note", json!({"text": "two"})))
            .await
    });
    let pin = env.pending("toolgate.pin").await;
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "one\n");
    let id = pin["id"].as_str().unwrap();
    let shown = env.json(&["approvals", "show", id, "--json"]);
    let diff = shown["context"]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  \"description\": \"Writes a note.\",") && diff.contains("evil.example"),
        "{diff}"
    );
    // A person at a terminal sees the change as a diff.
    let output = env.run(&["approvals", "show", id]);
    let shown = text(&output.stdout);
    assert!(
        shown.contains("Context: diff\n  --- trusted\n  +++ now\n")
            && shown.contains("\n  +  \"description\": \"Writes a note. IMPORTANT"),
        "{shown}"
    );
    // Rejecting the change keeps the tool held.
    let output = env.run(&["approvals", "reject", id, "-m", "poisoned"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let refused = held.await.unwrap().unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        content_text(&refused).starts_with("toolgate holds calls to `write_note`"),
        "{}",
        content_text(&refused)
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "one\n");

    // Asked again; accepted this time, the call goes on to policy and runs.
    let peer = client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call("write_note", json!({"text": "three"})))
            .await
    });
    let pin = env.pending("toolgate.pin").await;
    let id = pin["id"].as_str().unwrap();
    let output = env.run(&["approvals", "approve", id]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let ran = held.await.unwrap().unwrap();
    assert_eq!(ran.is_error, None, "{ran:?}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "one\nthree\n");
    // Trusted now: the next call is not held.
    let again = client
        .call_tool(call("write_note", json!({"text": "four"})))
        .await
        .unwrap();
    assert_eq!(again.is_error, None, "{again:?}");
    client.cancel().await.unwrap();

    // A new session (another gateway process) trusts what was accepted.
    let client = connect(
        Person::default(),
        env.gateway(
            &["--name", "notes", "--approve-via", "inbox"],
            &changing_server(),
        ),
    )
    .await;
    client.call_tool(call("mutate", json!({}))).await.unwrap();
    let result = client
        .call_tool(call("write_note", json!({"text": "five"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_crashes_is_reported_and_garbage_does_not_stop_the_gateway() {
    let env = Env::new("");
    let client = connect(
        Person::default(),
        env.gateway(
            &["--name", "notes", "--approve-via", "inbox"],
            &changing_server(),
        ),
    )
    .await;
    // A line that is not JSON on the server's stdout is skipped.
    let after = client.call_tool(call("garbage", json!({}))).await.unwrap();
    assert_eq!(content_text(&after), "after garbage");

    // A result that is not a tool result is an error, not a hang.
    let bad = tokio::time::timeout(
        Duration::from_secs(20),
        client.call_tool(call("bad_result", json!({}))),
    )
    .await
    .expect("the gateway answers a bad result");
    let bad = bad.expect_err("a bad result is an error").to_string();
    assert!(bad.contains("tools/call"), "{bad}");

    let error = client
        .call_tool(call("crash", json!({})))
        .await
        .expect_err("a crashed server answers nothing");
    let message = error.to_string();
    assert!(
        message.contains("exited with status 3")
            && message.contains("changing-server: crashing on purpose"),
        "{message}"
    );
    // The gateway is still there and says the same of later requests.
    let later = client
        .list_all_tools()
        .await
        .expect_err("the server is gone");
    assert!(
        later.to_string().contains("exited with status 3"),
        "{later}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_from_the_client_get_errors_not_a_crash() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let env = Env::new("");
    let mut gateway = env.gateway(
        &["--name", "notes", "--approve-via", "inbox"],
        &changing_server(),
    );
    let mut child = gateway
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = async |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    };
    send(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#).await;
    let init: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "changing-server");
    assert_non_blocking(child.id().unwrap());
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    // Not JSON: skipped, as every MCP SDK does.
    send("this is not json").await;
    // JSON, but not a request: an error naming the problem.
    send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":"not an object"}"#).await;
    let error: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], -32600, "{error}");
    // A call of a tool the server does not have.
    send(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#,
    )
    .await;
    let unknown: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(unknown["id"], 3);
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown tool: nope"),
        "{unknown}"
    );
    // Still serving.
    send(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#).await;
    let pong: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
    drop(stdin);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_a_socket_pair_is_served_as_on_pipes() {
    // Some clients give the server one end of a socket pair as its stdin
    // and stdout, instead of two pipes.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let env = Env::new("");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut gateway = env.gateway(&["--name", "notes"], &changing_server());
    let mut child = gateway
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs.try_clone().unwrap(),
        )))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .spawn()
        .unwrap();
    ours.set_nonblocking(true).unwrap();
    let (reading, mut writing) = tokio::net::UnixStream::from_std(ours).unwrap().into_split();
    let mut lines = BufReader::new(reading).lines();
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_notes","arguments":{}}}"#,
    ] {
        writing
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    let init: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "changing-server");
    assert_non_blocking(child.id().unwrap());
    let read: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(read["id"], 2, "{read}");
    assert_eq!(read["result"]["isError"], Value::Null, "{read}");
    writing.shutdown().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the gateway exits when its client goes")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_file_on_stdin_are_served_then_the_gateway_exits() {
    // A regular file cannot be waited on: the gateway reads it the
    // blocking way, answers, and stops at its end.
    use tokio::io::{AsyncBufReadExt, BufReader};
    let env = Env::new("");
    let input = env.path("input.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"file","version":"1"}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            "\n",
        ),
    )
    .unwrap();
    let mut gateway = env.gateway(&["--name", "notes"], &changing_server());
    let mut child = gateway
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut answers = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        answers.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the gateway exits at the end of its input")
        .unwrap();
    assert!(status.success(), "{status}");
    let ids: Vec<&Value> = answers.iter().map(|answer| &answer["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)], "{answers:?}");
    assert_eq!(
        answers[0]["result"]["serverInfo"]["name"],
        "changing-server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_streamable_http_need_an_agents_token_and_are_gated_the_same() {
    let env = Env::new(ASK_WRITES);
    let agent = env.token("bot", "agent");
    let approver = env.token("alice", "approver");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut command = env.toolgate(&[
        "mcp",
        "--name",
        "files",
        "--approve-via",
        "inbox",
        "--timeout",
        "1s",
        "--listen",
        &listen,
        "--",
    ]);
    command.args(filesystem_server(&env.files()));
    let gateway = Server::start(command, &listen);
    let url = format!("{}/mcp", gateway.base);
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "1"}}
    });

    // Refused before anything reaches the server: no token, an empty one,
    // a token that is not known, an approver's.
    let bare = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 401);
    assert_eq!(
        bare.headers()["www-authenticate"],
        "Bearer realm=\"toolgate\""
    );
    let body: Value = bare.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("this needs a token"),
        "{body}"
    );
    for (token, status, says) in [
        ("", 401, "must be `Bearer ` and a token"),
        ("tg_0000", 401, "the token is not known"),
        (approver.as_str(), 403, "alice is an approver"),
    ] {
        let (got, body) = api("POST", url.clone(), token, Some(initialize.clone())).await;
        assert_eq!(got, status, "{token:?}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{token:?}: {body}");
    }

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(agent),
    );
    let client = Person::default().serve(transport).await.unwrap();
    let hello = env.files().join("hello.txt");
    let read = client
        .call_tool(call("read_text_file", json!({"path": hello})))
        .await
        .unwrap();
    assert_eq!(content_text(&read), "hello from the files\n");
    let target = env.files().join("http.txt");
    let write = client
        .call_tool(call("write_file", json!({"path": target, "content": "x"})))
        .await
        .unwrap();
    assert_eq!(write.is_error, Some(true), "{write:?}");
    assert!(!target.exists());
    // Who called is recorded with the call.
    let listed = env.json(&["approvals", "list", "--status", "expired", "--json"]);
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let shown = env.json(&["approvals", "show", &id, "--json"]);
    assert_eq!(shown["context"]["caller"], "bot", "{shown}");
    client.cancel().await.unwrap();
    let (status, _) = gateway.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_gateway_serves_http_only_on_loopback() {
    let env = Env::new(ASK_WRITES);
    let port = free_port();
    let wide = env
        .toolgate(&[
            "mcp",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--no-auth",
            "--",
            "node",
        ])
        .output()
        .unwrap();
    assert!(!wide.status.success());
    let stderr = text(&wide.stderr);
    assert!(
        stderr.contains("--no-auth would let anyone who can reach 0.0.0.0:")
            && stderr.contains("only allowed on a loopback address"),
        "{stderr}"
    );

    let listen = format!("127.0.0.1:{port}");
    let mut command = env.toolgate(&[
        "mcp",
        "--name",
        "files",
        "--listen",
        &listen,
        "--no-auth",
        "--",
    ]);
    command.args(filesystem_server(&env.files()));
    let gateway = Server::start(command, &listen);
    let transport =
        StreamableHttpClientTransport::from_uri(format!("{}/mcp", gateway.base).as_str());
    let client = Person::default().serve(transport).await.unwrap();
    let read = client
        .call_tool(call(
            "read_text_file",
            json!({"path": env.files().join("hello.txt")}),
        ))
        .await
        .unwrap();
    assert_eq!(content_text(&read), "hello from the files\n");
    client.cancel().await.unwrap();
    let (status, _) = gateway.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_streamable_http_passes_progress_and_its_own_requests_through() {
    let env = Env::new(
        r#"
[[policy.rules]]
tool = "everything:trigger-sampling-request"
action = "allow"
"#,
    );
    let port = free_port();
    let entry =
        servers_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let mut everything = tokio::process::Command::new("node");
    everything
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut everything = everything.spawn().unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(everything.stderr.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(&format!("listening on port {port}")) {
                break;
            }
        }
    }
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut command = env.toolgate(&[
        "mcp",
        "--name",
        "everything",
        "--approve-via",
        "inbox",
        "--upstream-url",
        &url,
    ]);
    command.stdin(std::process::Stdio::piped());
    let person = Person::default();
    let client = connect(person.clone(), command.into()).await;
    let echo = client
        .call_tool(call("echo", json!({"message": "through the gateway"})))
        .await
        .unwrap();
    assert_eq!(content_text(&echo), "Echo: through the gateway");

    // The server's progress reaches the client, under the client's token.
    let mut long = call(
        "trigger-long-running-operation",
        json!({"duration": 1, "steps": 4}),
    );
    long.meta = Some(serde_json::from_value(json!({"progressToken": "long-1"})).unwrap());
    let done = client.peer().call_tool(long).await.unwrap();
    assert_eq!(done.is_error, None, "{done:?}");
    // Notifications and the answer travel apart: the last may come after.
    let deadline = Instant::now() + Duration::from_secs(5);
    while person.progress.lock().unwrap().len() < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress = person.progress.lock().unwrap().clone();
    let steps: Vec<f64> = progress.iter().map(|p| p.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0], "{progress:?}");
    assert!(
        progress
            .iter()
            .all(|p| p.progress_token == progress[0].progress_token)
    );

    // The server's own request of the client (sampling) is the client's to answer.
    let sampled = client
        .call_tool(call(
            "trigger-sampling-request",
            json!({"prompt": "say hi"}),
        ))
        .await
        .unwrap();
    assert!(
        content_text(&sampled).contains("a sampled answer"),
        "{sampled:?}"
    );
    assert!(
        person
            .asked
            .lock()
            .unwrap()
            .iter()
            .any(|asked| asked.contains("say hi")),
        "{:?}",
        person.asked
    );
    client.cancel().await.unwrap();
    everything.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_else_the_person_at_the_terminal_decides() {
    let env = Env::new(ASK_WRITES);
    let transcript = env.path("terminal.txt");
    let mut command = tokio::process::Command::new("python3");
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TOOLGATE_USER", "admin")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/with_tty.py"))
        .arg(&transcript)
        .args(["Approve? [y]es / [n]o: ", "y"])
        .args(["Approve? [y]es / [n]o: ", "n"])
        .args(["Reason, told to the model (Enter for none): ", "too big"])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_toolgate"))
        .arg("--db")
        .arg(env.path("toolgate.db"))
        .args(["mcp", "--name", "files", "--"])
        .args(filesystem_server(&env.files()));
    let client = connect(Person::default(), command).await;
    let first = env.files().join("first.txt");
    let result = client
        .call_tool(call("write_file", json!({"path": first, "content": "one"})))
        .await
        .unwrap();
    assert_eq!(result.is_error, None, "{result:?}");
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "one");
    let second = env.files().join("second.txt");
    let result = client
        .call_tool(call(
            "write_file",
            json!({"path": second, "content": "two"}),
        ))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        content_text(&result),
        "terminal:admin rejected this call: too big"
    );
    assert!(!second.exists());
    client.cancel().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !transcript.exists() {
        assert!(
            Instant::now() < deadline,
            "the terminal's transcript was not written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = std::fs::read_to_string(&transcript).unwrap();
    assert!(
        shown.contains("toolgate: approve the call of `write_file` on the MCP server `files`?"),
        "{shown}"
    );
    assert!(shown.contains("\"content\": \"one\""), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_is_reported_to_the_client() {
    let env = Env::new("");
    let missing = env.path("no-such-server");
    let mut command = env.gateway(&["--name", "missing"], &[missing.display().to_string()]);
    command.stderr(std::process::Stdio::piped());
    let error = Person::default()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .err()
        .expect("initialize fails");
    let message = error.to_string();
    assert!(
        message.contains("toolgate cannot start the MCP server")
            && message.contains("no-such-server"),
        "{message}"
    );
}

#[test]
fn bad_command_lines_are_refused_saying_what_to_write() {
    let env = Env::new("[mcp]\napprove_via = [\"slack\"]\n");
    let cases: &[(&[&str], &str)] = &[
        (
            &["mcp"],
            "name the MCP server to put toolgate in front of: `toolgate mcp -- COMMAND ARGS…`",
        ),
        (
            &["mcp", "--", "node", "x.js"],
            "toolgate.toml: [mcp]: `approve_via`: `slack` is not a place to ask for approval; use client, inbox or terminal",
        ),
        (
            &["mcp", "--upstream-url", "ftp://x", "--", "node"],
            "cannot be used with",
        ),
        (
            &["mcp", "--upstream-url", "ftp://x"],
            "--upstream-url \"ftp://x\" is not an http:// or https:// URL",
        ),
    ];
    for (args, expected) in cases {
        let output = env.run(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let env = Env::new("");
    let output = env.run(&["mcp", "--name", "my files", "--", "node"]);
    assert!(
        text(&output.stderr).contains(
            "--name \"my files\" is not a server name toolgate accepts: use 1 to 64 letters, digits and `_ - .`"
        ),
        "{}",
        text(&output.stderr)
    );
}

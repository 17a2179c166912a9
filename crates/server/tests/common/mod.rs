//! A real server on a loopback port, over a real SQLite file, and a client
//! for it.

#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod web;

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use toolgate_core::store::Store;
use toolgate_core::{Policy, Principal, Role};
use toolgate_server::{Server, ServerConfig, issue_token};
use toolgate_store::SqliteStore;

pub struct TestServer {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with this policy (TOML), on a fresh store.
    pub async fn start(policy: &str) -> TestServer {
        TestServer::start_configured(policy, |_| {}).await
    }

    /// A server with this policy (TOML) and settings, on a fresh store.
    pub async fn start_configured(
        policy: &str,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("toolgate.db")).unwrap());
        let policy = Policy::from_toml_str(policy, "test policy").unwrap();
        let mut config = ServerConfig::with_policy(policy);
        config.poll = std::time::Duration::from_millis(50);
        config.expiry_sweep = std::time::Duration::from_millis(100);
        configure(&mut config);
        TestServer::start_with(store, config, dir).await
    }

    pub async fn start_with(
        store: Arc<dyn Store>,
        config: ServerConfig,
        dir: tempfile::TempDir,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::new(Arc::clone(&store), config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            base,
            store,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A token for a new principal, kept in the store.
    pub async fn token(&self, name: &str, role: Role, groups: &[&str]) -> String {
        let principal = Principal::new(name, role).groups(groups.iter().copied());
        let issued = issue_token(principal, "test", None, now()).unwrap();
        self.store.create_token(&issued.record).await.unwrap();
        issued.secret
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with `token` (if any) and a JSON body (if any); the status
    /// and the body as JSON (or as a string when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"));
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_client_error() || status.is_server_error() {
            assert!(problem, "errors are problem documents: {status} {value}");
            assert_eq!(value["status"], status.as_u16(), "{value}");
            assert!(
                value["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{value}"
            );
        }
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Asks for a call; panics unless it was recorded.
    pub async fn ask(&self, token: &str, body: Value) -> Value {
        let (status, approval) = self.post("/v1/approvals", token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{approval}");
        approval
    }

    /// Has `agent` ask to send an email in run `run_id` and `approver`
    /// approve it with a grant for the run; the grant's id.
    pub async fn grant_for_run(&self, agent: &str, approver: &str, run_id: &str) -> String {
        let mut call = send_email("sally@gmail.com");
        call["run_id"] = Value::String(run_id.to_owned());
        let asked = self.ask(agent, call).await;
        let (status, answer) = self
            .post(
                &format!("/v1/approvals/{}/decision", asked["id"].as_str().unwrap()),
                approver,
                serde_json::json!({"decision": "approve", "grant": "run"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["grant"]["id"].as_str().unwrap().to_owned()
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn now() -> i64 {
    toolgate_core::time::to_millis(std::time::SystemTime::now())
}

/// The seed's send_email, as an agent would describe it.
pub fn send_email(recipient: &str) -> Value {
    serde_json::json!({
        "tool": "send_email",
        "args": {"recipient": recipient, "message": "What's up homie"},
        "description": "Sends an email.",
        "schema": {
            "type": "object",
            "properties": {
                "recipient": {"type": "string"},
                "message": {"type": "string"}
            },
            "required": ["recipient", "message"],
            "additionalProperties": false
        },
        "context": {"ticket": 42}
    })
}

//! The event stream, and the server and the engine sharing one store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, send_email};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use toolgate_core::Role;

/// Reads server-sent events from a response, one `(event, data)` at a time.
struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Events {
    async fn open(server: &TestServer, token: &str, query: &str) -> Events {
        let response = server
            .client
            .get(server.url(&format!("/v1/events{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped), within 10 s.
    async fn next(&mut self) -> (String, u64, Value) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut kind = String::new();
                    let mut id = 0;
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_owned();
                        } else if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().parse().unwrap();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    if !kind.is_empty() {
                        return (kind, id, serde_json::from_str(&data).unwrap());
                    }
                    continue;
                }
                let chunk = self.stream.next().await.expect("the stream ended").unwrap();
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within 10 s")
    }
}

#[tokio::test]
async fn the_stream_carries_new_entries_and_each_agent_sees_only_its_own() {
    let server = TestServer::start("").await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let other = server.token("other", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    // Made before anyone listens: not sent to streams that start now.
    server.ask(&bot, send_email("early@gmail.com")).await;

    let mut everything = Events::open(&server, &alice, "").await;
    let mut others = Events::open(&server, &other, "").await;
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let (kind, first, data) = everything.next().await;
    assert_eq!(kind, "call_requested");
    assert_eq!(data["run_id"], created["run_id"]);
    assert_eq!(
        data["event"]["call"]["args"]["recipient"],
        "sally@gmail.com"
    );
    assert_eq!(everything.next().await.0, "gate_verdict");
    let (kind, _, data) = everything.next().await;
    assert_eq!(kind, "approval_requested");
    assert_eq!(data["event"]["approval_id"], created["id"]);

    let (status, _) = server
        .post(
            &format!("/v1/approvals/{}/decision", created["id"].as_str().unwrap()),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (kind, _, data) = everything.next().await;
    assert_eq!(kind, "decision_recorded");
    assert_eq!(data["event"]["principal"], "alice");

    // The other agent's stream skipped all of bot's entries.
    let mine = server.ask(&other, send_email("x@gmail.com")).await;
    let (kind, _, data) = others.next().await;
    assert_eq!(kind, "call_requested");
    assert_eq!(data["run_id"], mine["run_id"]);

    // Reconnecting after an entry resumes right after it.
    let mut again = Events::open(&server, &alice, &format!("?after={first}")).await;
    let (kind, id, _) = again.next().await;
    assert_eq!((kind.as_str(), id), ("gate_verdict", first + 1));
    let (status, problem) = server
        .call(
            reqwest::Method::GET,
            "/v1/events?after=soon",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    // A starting point past the end of the log names no event: refused,
    // rather than a stream that sends nothing.
    let head = first + 50_000;
    for (query, header) in [
        (format!("?after={head}"), None),
        (String::new(), Some(head.to_string())),
        ("?after=18446744073709551615".to_owned(), None),
    ] {
        let mut request = server
            .client
            .get(server.url(&format!("/v1/events{query}")))
            .bearer_auth(&alice);
        if let Some(header) = header {
            request = request.header("Last-Event-ID", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let problem: Value = response.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("there is no event ") && detail.contains("the log ends at"),
            "{detail}"
        );
    }

    // Who made which token is for admins' streams only: an approver's
    // stream skips it, as it may not list tokens.
    let root = server.token("root", Role::Admin, &[]).await;
    let mut admin = Events::open(&server, &root, "?after=0").await;
    let (kind, _, data) = admin.next().await;
    assert_eq!(kind, "token_created");
    assert_eq!(data["event"]["name"], "bot");
    server.ask(&bot, send_email("late@gmail.com")).await;
    loop {
        let (kind, _, data) = everything.next().await;
        assert!(!kind.starts_with("token_"), "{kind}: {data}");
        if data["event"]["call"]["args"]["recipient"] == "late@gmail.com" {
            break;
        }
    }
    drop((everything, others, again, admin));
    server.stop().await;
}

#[tokio::test]
async fn shutting_down_ends_waits_and_streams() {
    let server = TestServer::start("").await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let mut stream = Events::open(&server, &bot, "").await;
    let wait = {
        let request = server
            .client
            .get(server.url(&format!(
                "/v1/approvals/{}?wait=5m",
                created["id"].as_str().unwrap()
            )))
            .bearer_auth(&bot)
            .send();
        tokio::spawn(request)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stops without waiting out the long poll");
    let answer = wait.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), stream.stream.next())
            .await
            .expect("the stream ends")
            .is_none_or(|chunk| chunk.is_err())
    );
}

#[tokio::test]
async fn an_engine_run_waits_in_the_same_inbox_and_resumes_when_decided_over_http() {
    use toolgate_engine::{Agent, RunOutcome};

    let server = TestServer::start("").await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let model: Arc<dyn toolgate_core::ChatModel> = Arc::new(toolgate::seed::model());
    let agent = Agent::new(model, toolgate::seed::tools()).store(Arc::clone(&server.store));
    let outcome = agent
        .run("Send sally@gmail.com an email saying 'What's up homie'")
        .await
        .unwrap();
    let RunOutcome::Waiting { run_id, .. } = outcome else {
        panic!("the run waits for approval: {outcome:?}");
    };

    let (_, page) = server.get("/v1/approvals?status=pending", &alice).await;
    let approval = &page["approvals"][0];
    assert_eq!(approval["run_id"], run_id.as_str());
    assert_eq!(approval["tool"], "send_email");
    let (status, _) = server
        .post(
            &format!(
                "/v1/approvals/{}/decision",
                approval["id"].as_str().unwrap()
            ),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, detail) = server
        .get(
            &format!("/v1/approvals/{}", approval["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(detail["external"], false);

    let outcome = agent.resume(&run_id).await.unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let events = server.store.load(&run_id).await.unwrap();
    let started = events
        .iter()
        .filter(|e| e.event.kind() == "tool_started")
        .count();
    assert_eq!(started, 1, "send_email ran once");

    // An outside agent's run is not the engine's to resume.
    let bot = server.token("bot", Role::Agent, &[]).await;
    let external = server.ask(&bot, send_email("sally@gmail.com")).await;
    let error = agent
        .resume(external["run_id"].as_str().unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("outside agent"), "{error}");
    server.stop().await;
}

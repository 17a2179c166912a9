//! The HTTP API against a real server on a loopback port and a real
//! SQLite store: every endpoint, every error status, and who may do what.

mod common;

use std::time::Duration;

use common::{TestServer, send_email};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use toolgate_core::Role;

const POLICY: &str = r#"
[[policy.rules]]
name = "inside mail"
tool = "send_email"
when = 'args.recipient.endsWith("@example.com")'
action = "allow"

[[policy.rules]]
name = "outside mail"
tool = "send_email"
when = '!args.recipient.endsWith("@example.com")'
action = "ask"

[[policy.rules]]
name = "ops only"
tool = "deploy"
action = "ask"
approvers = ["group:ops"]
quorum = 2

[[policy.rules]]
name = "quick"
tool = "page_oncall"
action = "ask"
timeout = "300ms"

[[policy.rules]]
tool = "delete_*"
action = "deny"
reason = "deleting is never allowed here"
"#;

async fn server() -> TestServer {
    TestServer::start(POLICY).await
}

#[tokio::test]
async fn a_call_that_asks_waits_and_can_be_read_listed_and_approved() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;

    let response = server
        .client
        .post(server.url("/v1/approvals"))
        .bearer_auth(&bot)
        .json(&send_email("sally@gmail.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/approvals/{id}"));
    assert_eq!(created["status"], "pending");
    assert_eq!(created["tool"], "send_email");
    assert_eq!(created["rule"], "outside mail");
    assert_eq!(created["args"]["recipient"], "sally@gmail.com");
    assert_eq!(created["context"], json!({"ticket": 42}));
    assert_eq!(created["description"], "Sends an email.");
    assert_eq!(created["requested_by"], "bot");
    assert_eq!(created["external"], true);
    assert_eq!(created["decided_by"], Value::Null);
    assert_eq!(created["fingerprint"].as_str().unwrap().len(), 64);

    let (status, read) = server.get(&location, &bot).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);

    let (status, page) = server.get("/v1/approvals?status=pending", &alice).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    assert_eq!(page["next_before"], Value::Null);

    let (status, answer) = server
        .post(
            &format!("{location}/decision"),
            &alice,
            json!({"decision": "approve", "fingerprint": created["fingerprint"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["decided_by"], "alice");
    assert_eq!(answer["approval"]["decisions"][0]["decision"], "approve");
    assert_eq!(answer["grant"], Value::Null);

    let (_, read) = server.get(&location, &bot).await;
    assert_eq!(read["status"], "approved");
    let (_, pending) = server.get("/v1/approvals?status=pending", &alice).await;
    assert_eq!(pending["approvals"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn policy_settles_some_calls_at_once() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;

    let inside = server.ask(&bot, send_email("bob@example.com")).await;
    assert_eq!(inside["status"], "approved");
    assert_eq!(inside["decided_by"], "policy (inside mail)");
    assert_eq!(inside["message"], Value::Null);

    let denied = server
        .ask(
            &bot,
            json!({"tool": "delete_repo", "args": {"name": "toolgate"}}),
        )
        .await;
    assert_eq!(denied["status"], "rejected");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("deleting is never allowed here"),
        "{denied}"
    );

    // No rule: the hints decide. Read-only runs, anything else asks.
    let read_only = server
        .ask(
            &bot,
            json!({"tool": "count_emails", "args": {"last_n_days": 5}, "hints": {"read_only": true}}),
        )
        .await;
    assert_eq!(read_only["status"], "approved");
    assert_eq!(read_only["decided_by"], "policy (default)");
    let unknown = server
        .ask(
            &bot,
            json!({"tool": "count_emails", "args": {"last_n_days": 5}}),
        )
        .await;
    assert_eq!(unknown["status"], "pending");
    server.stop().await;
}

#[tokio::test]
async fn an_agent_waits_for_the_decision_by_long_polling() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let path = format!("/v1/approvals/{}", created["id"].as_str().unwrap());

    // Nobody decides: the wait ends with the approval still pending.
    let (status, still) = server.get(&format!("{path}?wait=200ms"), &bot).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(still["status"], "pending");

    let waiting = {
        let client = server.client.clone();
        let url = server.url(&format!("{path}?wait=30s"));
        let bot = bot.clone();
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(bot).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the wait answered before any decision"
    );
    let (status, _) = server
        .post(
            &format!("{path}/decision"),
            &alice,
            json!({"decision": "reject", "message": "not to gmail"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let decided = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait answers once decided")
        .unwrap();
    assert_eq!(decided["status"], "rejected");
    assert_eq!(decided["message"], "alice rejected this call: not to gmail");
    server.stop().await;
}

#[tokio::test]
async fn an_agent_asks_and_waits_in_one_request() {
    // The server looks at the store by itself only once an hour: only a
    // wait that started before the call was recorded sees the decision
    // made through it at once.
    let server = TestServer::start_configured(POLICY, |config| {
        config.poll = Duration::from_secs(3600);
    })
    .await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let asking = {
        let client = server.client.clone();
        let url = server.url("/v1/approvals?wait=30s");
        let bot = bot.clone();
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(bot)
                .json(&send_email("sally@gmail.com"))
                .send()
                .await
                .unwrap();
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            (
                response.status(),
                location,
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    // The approver finds it in the pending list, as an inbox would.
    let id = loop {
        let (status, page) = server.get("/v1/approvals?status=pending", &alice).await;
        assert_eq!(status, StatusCode::OK);
        if let Some(first) = page["approvals"].as_array().unwrap().first() {
            break first["id"].as_str().unwrap().to_owned();
        }
        assert!(
            !asking.is_finished(),
            "the ask answered before any decision"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !asking.is_finished(),
        "the ask answered before any decision"
    );
    let (status, _) = server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &alice,
            json!({"decision": "edit", "args": {"recipient": "sally@example.org", "message": "Hello"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, location, decided) = tokio::time::timeout(Duration::from_secs(10), asking)
        .await
        .expect("the ask answers once decided")
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(location, format!("/v1/approvals/{id}"));
    assert_eq!(decided["id"], id.as_str());
    assert_eq!(decided["status"], "edited");
    assert_eq!(decided["args"]["recipient"], "sally@example.org");

    // Nobody decides: the ask answers when its wait ends, still pending,
    // and the agent waits again on the approval's URL.
    let response = server
        .client
        .post(server.url("/v1/approvals?wait=200ms"))
        .bearer_auth(&bot)
        .json(&send_email("bob@gmail.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let still: Value = response.json().await.unwrap();
    assert_eq!(still["status"], "pending");
    assert_eq!(
        location,
        format!("/v1/approvals/{}", still["id"].as_str().unwrap())
    );
    let (status, again) = server.get(&format!("{location}?wait=100ms"), &bot).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "pending");

    // A call that policy settles is answered at once, wait or not.
    let settled = tokio::time::timeout(
        Duration::from_secs(10),
        server.post("/v1/approvals?wait=5m", &bot, send_email("bob@example.com")),
    )
    .await
    .expect("a settled call does not wait");
    assert_eq!(settled.0, StatusCode::CREATED);
    assert_eq!(settled.1["status"], "approved");
    server.stop().await;
}

#[tokio::test]
async fn an_ask_with_a_bad_wait_is_refused_and_records_nothing() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    for (query, detail) in [
        (
            "wait=soon",
            "wait=`soon` is not a duration (expected number at 0); write it like 30s or 2m",
        ),
        (
            "wait=6m",
            "wait=6m is longer than this server waits (5m); wait again after it answers",
        ),
        ("until=30s", ""),
    ] {
        let (status, problem) = server
            .post(
                &format!("/v1/approvals?{query}"),
                &bot,
                send_email("sally@gmail.com"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        if detail.is_empty() {
            assert!(
                problem["detail"].as_str().unwrap().contains("until"),
                "{query}: {problem}"
            );
        } else {
            assert_eq!(problem["detail"], detail, "{query}");
        }
    }
    let (_, page) = server.get("/v1/approvals", &alice).await;
    assert_eq!(page["approvals"], json!([]), "nothing was recorded");
    server.stop().await;
}

#[tokio::test]
async fn a_decision_wakes_the_waits_on_its_approval_at_once() {
    // The server looks at the store by itself only once an hour: only
    // the decision made through it can end these waits in time.
    let server = TestServer::start_configured(POLICY, |config| {
        config.poll = Duration::from_secs(3600);
    })
    .await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let first = server.ask(&bot, send_email("sally@gmail.com")).await;
    let second = server.ask(&bot, send_email("bob@gmail.com")).await;
    let wait = |approval: &Value| {
        let client = server.client.clone();
        let url = server.url(&format!(
            "/v1/approvals/{}?wait=30s",
            approval["id"].as_str().unwrap()
        ));
        let bot = bot.clone();
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(bot).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        })
    };
    let (one, two, other) = (wait(&first), wait(&first), wait(&second));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let decide = async |approval: &Value, decision: Value| {
        let path = format!(
            "/v1/approvals/{}/decision",
            approval["id"].as_str().unwrap()
        );
        let (status, problem) = server.post(&path, &alice, decision).await;
        assert_eq!(status, StatusCode::OK, "{problem}");
    };
    decide(&first, json!({"decision": "approve"})).await;
    for waiting in [one, two] {
        let decided = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("both waits on the approval answer once it is decided")
            .unwrap();
        assert_eq!(decided["status"], "approved");
    }
    assert!(
        !other.is_finished(),
        "the wait on the other approval goes on"
    );
    decide(&second, json!({"decision": "reject"})).await;
    let decided = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("the other wait answers once its approval is decided")
        .unwrap();
    assert_eq!(decided["status"], "rejected");

    // Two of ops must approve: the first approval leaves it pending, and
    // the wait goes on until the second.
    let alice = server.token("alice-ops", Role::Approver, &["ops"]).await;
    let carol = server.token("carol-ops", Role::Approver, &["ops"]).await;
    let deploy = server
        .ask(&bot, json!({"tool": "deploy", "args": {"version": "1.2"}}))
        .await;
    let waiting = wait(&deploy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/v1/approvals/{}/decision", deploy["id"].as_str().unwrap());
    let (status, first) = server
        .post(&path, &alice, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["approval"]["status"], "pending");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "one of two approvals ends no wait");
    let (status, _) = server
        .post(&path, &carol, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let decided = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait answers once the quorum is met")
        .unwrap();
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["approved_by"], json!(["alice-ops", "carol-ops"]));
    server.stop().await;
}

#[tokio::test]
async fn a_timeout_fails_closed() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let created = server
        .ask(&bot, json!({"tool": "page_oncall", "args": {}}))
        .await;
    assert_eq!(created["status"], "pending");
    assert!(created["expires_at"].is_string());
    let path = format!("/v1/approvals/{}", created["id"].as_str().unwrap());
    let (status, expired) = server.get(&format!("{path}?wait=20s"), &bot).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(expired["status"], "expired");
    assert!(
        expired["message"]
            .as_str()
            .unwrap()
            .contains("Nobody approved this call within 300ms"),
        "{expired}"
    );
    // Too late to approve.
    let (status, problem) = server
        .post(
            &format!("{path}/decision"),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:toolgate:problem:already-decided");
    assert_eq!(problem["approval"]["status"], "expired");
    server.stop().await;
}

#[tokio::test]
async fn edits_are_checked_against_the_schema_and_replace_the_arguments() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let decision = format!("/v1/approvals/{}/decision", created["id"].as_str().unwrap());

    let (status, problem) = server
        .post(
            &decision,
            &alice,
            json!({"decision": "edit", "args": {"recipient": 7, "message": "hi"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["type"], "urn:toolgate:problem:invalid-arguments");
    assert_eq!(problem["errors"][0]["argument"], "recipient");

    let (status, answer) = server
        .post(
            &decision,
            &alice,
            json!({
                "decision": "edit",
                "args": {"recipient": "sally@example.org", "message": "What's up homie"},
                "fingerprint": created["fingerprint"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let approval = &answer["approval"];
    assert_eq!(approval["status"], "edited");
    assert_eq!(approval["args"]["recipient"], "sally@example.org");
    assert_eq!(approval["proposed_args"]["recipient"], "sally@gmail.com");
    assert_eq!(approval["edited_by"], "alice");
    assert_ne!(approval["fingerprint"], created["fingerprint"]);
    server.stop().await;
}

#[tokio::test]
async fn a_decision_for_other_arguments_or_a_lost_race_conflicts() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let bob = server.token("bob", Role::Approver, &[]).await;
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let decision = format!("/v1/approvals/{}/decision", created["id"].as_str().unwrap());

    let (status, problem) = server
        .post(
            &decision,
            &alice,
            json!({"decision": "approve", "fingerprint": "00".repeat(32)}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:toolgate:problem:fingerprint-mismatch");
    assert_eq!(problem["approval"]["status"], "pending");

    // Both at once: exactly one counts, the other sees it.
    let (one, two) = tokio::join!(
        server.post(&decision, &alice, json!({"decision": "approve"})),
        server.post(
            &decision,
            &bob,
            json!({"decision": "reject", "message": "no"})
        ),
    );
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let (winner, loser) = if one.0 == StatusCode::OK {
        (one.1, two.1)
    } else {
        (two.1, one.1)
    };
    assert_eq!(loser["type"], "urn:toolgate:problem:already-decided");
    assert_eq!(loser["approval"]["status"], winner["approval"]["status"]);
    assert_eq!(
        loser["approval"]["decided_by"],
        winner["approval"]["decided_by"]
    );
    server.stop().await;
}

#[tokio::test]
async fn quorums_and_approver_groups_are_enforced() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &["ops"]).await;
    let carol = server.token("carol", Role::Approver, &["ops"]).await;
    let mallory = server.token("mallory", Role::Approver, &["sales"]).await;
    let created = server
        .ask(&bot, json!({"tool": "deploy", "args": {"version": "1.2"}}))
        .await;
    assert_eq!(created["quorum"], 2);
    assert_eq!(created["approvers"], json!(["group:ops"]));
    let decision = format!("/v1/approvals/{}/decision", created["id"].as_str().unwrap());

    let (status, problem) = server
        .post(&decision, &mallory, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(problem["detail"].as_str().unwrap().contains("group:ops"));

    let (status, first) = server
        .post(&decision, &alice, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["approval"]["status"], "pending");
    assert_eq!(first["approval"]["still_needed"], 1);
    let (status, twice) = server
        .post(&decision, &alice, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(twice["type"], "urn:toolgate:problem:already-approved");
    let (status, second) = server
        .post(&decision, &carol, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["approval"]["status"], "approved");
    assert_eq!(second["approval"]["approved_by"], json!(["alice", "carol"]));
    server.stop().await;
}

#[tokio::test]
async fn grants_cover_later_calls_and_can_be_listed_and_revoked() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let bob = server.token("bob", Role::Approver, &[]).await;
    let root = server.token("root", Role::Admin, &[]).await;
    let mut first = send_email("sally@gmail.com");
    first["run_id"] = json!("agent-run-1");
    let created = server.ask(&bot, first.clone()).await;
    assert_eq!(created["run_id"], "agent-run-1");
    let (status, answer) = server
        .post(
            &format!("/v1/approvals/{}/decision", created["id"].as_str().unwrap()),
            &alice,
            json!({"decision": "approve", "grant": "run"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let grant = &answer["grant"];
    assert_eq!(grant["scope"], "run");
    assert_eq!(grant["run_id"], "agent-run-1");
    assert_eq!(grant["tool"], "send_email");
    let grant_id = grant["id"].as_str().unwrap().to_owned();

    // The same run: covered. Another run: asked again.
    let again = server.ask(&bot, first.clone()).await;
    assert_eq!(again["status"], "approved");
    assert_eq!(again["decided_by"], format!("grant {grant_id}"));
    let other = server.ask(&bot, send_email("sally@gmail.com")).await;
    assert_eq!(other["status"], "pending");

    let (status, list) = server.get("/v1/grants", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["grants"][0]["id"], grant_id.as_str());
    assert_eq!(list["grants"][0]["state"], "live");

    let path = format!("/v1/grants/{grant_id}");
    let (status, problem) = server.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = server.call(Method::DELETE, &path, Some(&root), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = server.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:toolgate:problem:already-revoked");
    let (status, _) = server
        .call(Method::DELETE, "/v1/grants/nope", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = server.get("/v1/grants", &bob).await;
    assert_eq!(list["grants"][0]["state"], "revoked");
    assert_eq!(list["grants"][0]["revoked_by"], "root");

    // Revoked: the run's next call is asked about again.
    let after = server.ask(&bot, first).await;
    assert_eq!(after["status"], "pending");

    // A bad grant is refused before anything is decided.
    let (status, problem) = server
        .post(
            &format!("/v1/approvals/{}/decision", other["id"].as_str().unwrap()),
            &alice,
            json!({"decision": "approve", "grant": "forever"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("uses:N"));
    let (_, still) = server
        .get(
            &format!("/v1/approvals/{}", other["id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(still["status"], "pending");
    server.stop().await;
}

#[tokio::test]
async fn grants_are_listed_a_page_at_a_time_live_or_all() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(
            server
                .grant_for_run(&bot, &alice, &format!("agent-run-{i}"))
                .await,
        );
    }
    let ids = |list: &Value| -> Vec<String> {
        list["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Newest first: the last grant made heads the list.
    let (status, all) = server.get("/v1/grants", &alice).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["next_before"], Value::Null);

    let (status, first) = server.get("/v1/grants?limit=2", &alice).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), newest_first[..2]);
    let next = first["next_before"].as_str().unwrap();
    assert_eq!(next, newest_first[1]);
    let (status, second) = server
        .get(&format!("/v1/grants?limit=2&before={next}"), &alice)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(ids(&second), newest_first[2..]);
    assert_eq!(second["next_before"], Value::Null, "the last page");

    // The middle grant revoked: gone from the live ones, kept in all.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/grants/{}", made[1]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, live) = server.get("/v1/grants?state=live", &alice).await;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(ids(&live), [made[2].clone(), made[0].clone()]);
    assert!(
        live["grants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "live")
    );
    let (_, live_page) = server
        .get(
            &format!("/v1/grants?state=live&limit=1&before={}", made[2]),
            &alice,
        )
        .await;
    assert_eq!(ids(&live_page), [made[0].clone()]);
    let (_, all) = server.get("/v1/grants?state=all", &alice).await;
    assert_eq!(ids(&all), newest_first);

    // Bad queries say what was wrong.
    for (query, status, says) in [
        (
            "state=dead",
            StatusCode::BAD_REQUEST,
            "unknown grant state `dead`: use `live` or `all`",
        ),
        (
            "limit=0",
            StatusCode::BAD_REQUEST,
            "limit must be from 1 to 500",
        ),
        (
            "limit=501",
            StatusCode::BAD_REQUEST,
            "limit must be from 1 to 500",
        ),
        ("limit=many", StatusCode::BAD_REQUEST, "limit"),
        ("colour=red", StatusCode::BAD_REQUEST, "colour"),
        (
            "before=g-nope",
            StatusCode::NOT_FOUND,
            "there is no grant `g-nope`",
        ),
    ] {
        let (got, problem) = server.get(&format!("/v1/grants?{query}"), &alice).await;
        assert_eq!(got, status, "{query}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{query}: {detail}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_endpoint_refuses_a_missing_or_bad_token() {
    let server = server().await;
    let root = server.token("root", Role::Admin, &[]).await;
    let endpoints = [
        (Method::POST, "/v1/approvals"),
        (Method::GET, "/v1/approvals"),
        (Method::GET, "/v1/approvals/x"),
        (Method::POST, "/v1/approvals/x/decision"),
        (Method::GET, "/v1/grants"),
        (Method::DELETE, "/v1/grants/x"),
        (Method::GET, "/v1/events"),
        (Method::GET, "/v1/me"),
        (Method::POST, "/v1/tokens"),
        (Method::GET, "/v1/tokens"),
        (Method::GET, "/v1/tokens/x"),
        (Method::DELETE, "/v1/tokens/x"),
        (Method::GET, "/v1/webhooks/deliveries"),
        (Method::POST, "/v1/webhooks/deliveries/x/redeliver"),
    ];
    let revoked = {
        let secret = server.token("gone", Role::Admin, &[]).await;
        let tokens = server.store.tokens().await.unwrap();
        let id = &tokens
            .iter()
            .find(|t| t.principal.name == "gone")
            .unwrap()
            .id;
        server
            .store
            .revoke_token(id, "admin", common::now())
            .await
            .unwrap();
        secret
    };
    for (method, path) in endpoints {
        let (status, problem) = server.call(method.clone(), path, None, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {problem}"
        );
        assert!(problem["detail"].as_str().unwrap().contains("Bearer"));
        let bad = format!("tg_{}", "0".repeat(64));
        let (status, problem) = server.call(method.clone(), path, Some(&bad), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(problem["detail"].as_str().unwrap().contains("not known"));
        let (status, problem) = server
            .call(method.clone(), path, Some(&revoked), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(problem["detail"].as_str().unwrap().contains("revoked"));
    }
    let response = server
        .client
        .get(server.url("/v1/me"))
        .header("authorization", "Basic cm9vdDpyb290")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"toolgate\""
    );
    let (status, me) = server.get("/v1/me", &root).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "root");
    assert_eq!(me["role"], "admin");
    server.stop().await;
}

#[tokio::test]
async fn admins_make_list_and_revoke_tokens_over_http() {
    let server = server().await;
    let root = server.token("root", Role::Admin, &[]).await;

    // Made: the secret once, with headers that keep it out of caches.
    let response = server
        .client
        .post(server.url("/v1/tokens"))
        .bearer_auth(&root)
        .json(&json!({"name": "alice", "role": "approver", "groups": ["ops"], "expires_in": "12h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["token"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tokens/{id}"));
    assert!(secret.starts_with("tg_") && secret.len() == 67, "{secret}");
    assert_eq!(created["name"], "alice");
    assert_eq!(created["role"], "approver");
    assert_eq!(created["groups"], json!(["ops"]));
    let expires = created["expires_at"].as_str().unwrap();
    let expires = humantime::parse_rfc3339(expires).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(11 * 3600) && left <= Duration::from_secs(12 * 3600),
        "{left:?}"
    );

    // The new token works, for the principal it names.
    let (status, me) = server.get("/v1/me", &secret).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (&me["name"], &me["role"], &me["groups"], &me["token_id"]),
        (
            &json!("alice"),
            &json!("approver"),
            &json!(["ops"]),
            &json!(id)
        )
    );

    // Listed (never with a secret) and read one by one.
    let (status, list) = server.get("/v1/tokens", &root).await;
    assert_eq!(status, StatusCode::OK);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{list}");
    assert_eq!(tokens[0]["id"], json!(id), "newest first");
    assert_eq!(tokens[0]["state"], "live");
    assert_eq!(tokens[0]["created_by"], "root");
    assert_eq!(tokens[1]["name"], "root");
    assert!(!list.to_string().contains(&secret));
    assert!(!list.to_string().contains(&root));
    let (status, one) = server.get(&location, &root).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, tokens[0]);
    let (status, problem) = server.get("/v1/tokens/tok_nobody", &root).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("tok_nobody"));

    // Only admins manage tokens: not approvers, not agents.
    let bot = server.token("bot", Role::Agent, &[]).await;
    for who in [&secret, &bot] {
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/tokens",
                Some(json!({"name": "eve", "role": "admin"})),
            ),
            (Method::GET, "/v1/tokens", None),
            (Method::GET, location.as_str(), None),
            (Method::DELETE, location.as_str(), None),
        ] {
            let (status, problem) = server.call(method.clone(), path, Some(who), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
            assert!(
                problem["detail"].as_str().unwrap().contains("only admins"),
                "{problem}"
            );
        }
    }

    // Bad requests say what was wrong, and make no token.
    for (body, says) in [
        (json!({"name": "eve", "role": "boss"}), "not a role"),
        (json!({"name": "e ve", "role": "agent"}), "principal name"),
        (
            json!({"name": "eve", "role": "agent", "groups": ["<ops>"]}),
            "group name",
        ),
        (
            json!({"name": "eve", "role": "agent", "expires_in": "soon"}),
            "expires_in",
        ),
        (
            json!({"name": "eve", "role": "agent", "expires_in": "0s"}),
            "expires_in",
        ),
        (
            json!({"name": "eve", "role": "agent", "secret": "tg_x"}),
            "secret",
        ),
        (json!({"role": "agent"}), "name"),
    ] {
        let (status, problem) = server.post("/v1/tokens", &root, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{body}: {problem}"
        );
    }
    assert_eq!(server.store.tokens().await.unwrap().len(), 3);

    // Revoked: refused at once, although the server had just checked it.
    let (status, _) = server
        .call(Method::DELETE, &location, Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = server.get("/v1/me", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));
    let (status, one) = server.get(&location, &root).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["state"], "revoked");
    assert!(one["revoked_at"].is_string(), "{one}");
    let (status, problem) = server
        .call(Method::DELETE, &location, Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "urn:toolgate:problem:already-revoked");
    let (status, _) = server
        .call(Method::DELETE, "/v1/tokens/tok_nobody", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token past its time is listed as expired.
    let (status, brief) = server
        .post(
            "/v1/tokens",
            &root,
            json!({"name": "brief", "role": "agent", "expires_in": "1ms"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, view) = server
        .get(
            &format!("/v1/tokens/{}", brief["id"].as_str().unwrap()),
            &root,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "expired");
    let (status, _) = server.get("/v1/me", brief["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The audit log names the admin who made and revoked tokens over HTTP.
    let acts: Vec<(String, Value)> = server
        .store
        .audit(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.kind.starts_with("token_"))
        .map(|entry| (entry.kind, serde_json::from_str(&entry.body).unwrap()))
        .collect();
    let made_by_root: Vec<&str> = acts
        .iter()
        .filter(|(kind, body)| kind == "token_created" && body["by"] == "root")
        .map(|(_, body)| body["name"].as_str().unwrap())
        .collect();
    assert_eq!(made_by_root, ["alice", "brief"], "{acts:?}");
    let revoked: Vec<&Value> = acts
        .iter()
        .filter(|(kind, _)| kind == "token_revoked")
        .map(|(_, body)| body)
        .collect();
    assert_eq!(revoked.len(), 1, "the refused second revocation adds none");
    assert_eq!(
        (&revoked[0]["token_id"], &revoked[0]["by"]),
        (&json!(id), &json!("root"))
    );
    server.stop().await;
}

#[tokio::test]
async fn agents_never_decide_and_see_only_their_own_calls() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let other = server.token("other-bot", Role::Agent, &[]).await;
    let mine = server.ask(&bot, send_email("sally@gmail.com")).await;
    let id = mine["id"].as_str().unwrap();
    let run = mine["run_id"].as_str().unwrap();

    let (status, problem) = server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &bot,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("agents may not decide")
    );

    let (status, _) = server.get(&format!("/v1/approvals/{id}"), &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.get("/v1/approvals", &bot).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = server
        .get(&format!("/v1/approvals?run_id={run}"), &bot)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["approvals"][0]["id"], id);
    let (status, _) = server
        .get(&format!("/v1/approvals?run_id={run}"), &other)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.get("/v1/grants", &bot).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(Method::DELETE, "/v1/grants/x", Some(&bot), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another agent cannot add calls to this agent's run.
    let mut intrude = send_email("sally@gmail.com");
    intrude["run_id"] = json!(run);
    let (status, problem) = server.post("/v1/approvals", &other, intrude).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("belongs to bot")
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_clear_problem_and_store_nothing() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = server
            .client
            .post(server.url("/v1/approvals"))
            .bearer_auth(&bot)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    let json = Some("application/json");
    for (body, content_type, status) in [
        ("{not json", json, StatusCode::BAD_REQUEST),
        (r#"{"tool": "x"}"#, json, StatusCode::BAD_REQUEST),
        (
            r#"{"tool": "x", "args": [1]}"#,
            json,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"tool": "x", "args": {}, "colour": 1}"#,
            json,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"tool": "x y", "args": {}}"#,
            json,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"tool": "x", "args": {}, "run_id": ""}"#,
            json,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"tool": "x", "args": {}, "schema": 5}"#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"tool": "x", "args": {"n": "five"}, "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}"#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"tool": "x", "args": {}}"#,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let response = send(body, content_type).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{problem}");
    }
    let (_, page) = server.get("/v1/approvals", &alice).await;
    assert_eq!(page["approvals"], json!([]), "nothing was stored");

    for path in [
        "/v1/approvals?status=maybe",
        "/v1/approvals?limit=0",
        "/v1/approvals?limit=501",
        "/v1/approvals?colour=red",
    ] {
        let (status, problem) = server.get(path, &alice).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
    }
    let created = server.ask(&bot, send_email("sally@gmail.com")).await;
    let path = format!("/v1/approvals/{}", created["id"].as_str().unwrap());
    let (status, problem) = server.get(&format!("{path}?wait=soon"), &bot).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("30s"));
    let (status, _) = server.get(&format!("{path}?wait=1h"), &bot).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.get("/v1/approvals/no-such-id", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let decision = format!("{path}/decision");
    for (body, says) in [
        (json!({"decision": "maybe"}), "maybe"),
        (json!({"decision": "edit"}), "an edit needs `args`"),
        (
            json!({"decision": "approve", "args": {}}),
            "`args` go only with",
        ),
        (
            json!({"decision": "approve", "message": "why"}),
            "`message` goes only with",
        ),
        (
            json!({"decision": "approve", "fingerprint": "xyz"}),
            "fingerprint `xyz` is not one: a fingerprint is 64 lower-case hex digits, as the \
             approval's `fingerprint` shows",
        ),
        (json!({"approve": true}), "decision"),
    ] {
        let (status, problem) = server.post(&decision, &alice, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    let (status, _) = server
        .post(
            "/v1/approvals/no-such-id/decision",
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, still) = server.get(&path, &alice).await;
    assert_eq!(still["status"], "pending");
    assert_eq!(still["decisions"], json!([]));

    let (status, problem) = server.get("/v1/nothing-here", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("openapi.json"));
    let (status, _) = server
        .call(Method::PUT, "/v1/approvals", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn health_metrics_and_the_openapi_document() {
    let server = server().await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    server.ask(&bot, send_email("sally@gmail.com")).await;
    server.ask(&bot, send_email("bob@example.com")).await;

    let (status, health) = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    let (status, ready) = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, ready),
        (StatusCode::OK, json!({"status": "ready"}))
    );

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("toolgate_approvals_pending 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"toolgate_http_requests_total{method="POST",route="/v1/approvals",status="201"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("toolgate_decision_wait_seconds_bucket"),
        "{metrics}"
    );

    let (status, document) = server
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/approvals", "post"),
        ("/v1/approvals", "get"),
        ("/v1/approvals/{id}", "get"),
        ("/v1/approvals/{id}/decision", "post"),
        ("/v1/grants", "get"),
        ("/v1/grants/{id}", "delete"),
        ("/v1/events", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens", "get"),
        ("/v1/tokens/{id}", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/webhooks/deliveries", "get"),
        ("/v1/webhooks/deliveries/{id}/redeliver", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    // Query strings are documented as such, each parameter optional (both
    // ways to wait for a decision among them).
    for (path, method, name) in [
        ("/v1/approvals", "post", "wait"),
        ("/v1/approvals/{id}", "get", "wait"),
        ("/v1/approvals", "get", "status"),
        ("/v1/approvals", "get", "limit"),
        ("/v1/grants", "get", "state"),
        ("/v1/events", "get", "after"),
        ("/v1/webhooks/deliveries", "get", "status"),
    ] {
        let parameters = paths[path][method]["parameters"].as_array().unwrap();
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} documents {name}: {parameters:?}"));
        assert_eq!(parameter["in"], "query", "{method} {path} {name}");
        assert_ne!(parameter["required"], true, "{method} {path} {name}");
    }
    let id = &paths["/v1/approvals/{id}"]["get"]["parameters"][0];
    assert_eq!((&id["name"], &id["in"]), (&json!("id"), &json!("path")));
    // Refusals are documented as they are sent: problem documents, and a
    // 415 for a body that is not said to be JSON.
    let mut refusals = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    continue;
                }
                refusals += 1;
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}: {response}"
                );
                assert!(response["content"].get("application/json").is_none());
            }
            if operation.get("requestBody").is_some() {
                assert!(
                    operation["responses"]["415"].is_object(),
                    "{method} {path} documents 415"
                );
            }
        }
    }
    assert!(refusals > 40, "{refusals} refusals documented");
    let (status, problem) = server
        .call(Method::POST, "/v1/approvals", Some(&bot), None)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{problem}");
    // Each event of the stream is an object of id, event and data.
    let stream = &paths["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"];
    assert_eq!(
        stream["schema"]["$ref"], "#/components/schemas/SentEvent",
        "{stream}"
    );
    let event = &document["components"]["schemas"]["SentEvent"];
    assert_eq!(event["required"], json!(["id", "event", "data"]), "{event}");
    assert!(document["components"]["schemas"]["Problem"].is_object());
    assert_eq!(
        document["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    server.stop().await;
}

//! Webhooks end to end: real servers over real stores (SQLite, and
//! PostgreSQL for two servers sharing one database) sending to local
//! receivers that record what they get, check signatures, and answer what
//! each test needs (200, 500 then 200, 400, or nothing at all).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::{TestServer, now, send_email};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_postgres::NoTls;
use toolgate_core::store::{Delivery, DeliveryQuery, DeliveryStatus, Store};
use toolgate_core::{Policy, Principal, Role};
use toolgate_engine::{Agent, DecisionRequest, RunOutcome, decide};
use toolgate_server::{ServerConfig, Webhook, WebhookEvent};

const SECRET: &str = "whsec_test_0123456789";

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
"#;

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A local receiver: answers the statuses in `script` in turn, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let record = Arc::clone(&got);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let record = Arc::clone(&record);
                let script = Arc::clone(&script);
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    record.lock().unwrap().push(Received {
                        id: header("toolgate-webhook-id"),
                        timestamp: header("toolgate-webhook-timestamp"),
                        signature: header("toolgate-webhook-signature"),
                        body,
                    });
                    let status = script.lock().unwrap().next().unwrap_or(200);
                    (AxumStatus::from_u16(status).unwrap(), "receiver says so")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until it has had `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        wait_until(&format!("{n} requests at {}", self.url), || {
            let got = self.got();
            async move { (got.len() >= n).then_some(got) }
        })
        .await
    }
}

/// Polls `check` until it gives a value, for at most `PATIENCE`.
async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every delivery in `store` is out of `pending`, and there are
/// `n`; returns them, oldest first.
async fn settled(store: &dyn Store, n: usize) -> Vec<Delivery> {
    wait_until(&format!("{n} settled deliveries"), || async {
        let deliveries = store.deliveries(&DeliveryQuery::default()).await.unwrap();
        (deliveries.len() == n
            && deliveries
                .iter()
                .all(|d| d.status != DeliveryStatus::Pending))
        .then(|| deliveries.into_iter().rev().collect())
    })
    .await
}

/// A webhook to `url` with short waits between attempts.
fn hook(url: &str) -> Webhook {
    Webhook::new(url, SECRET)
        .unwrap()
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .timeout(Duration::from_secs(5))
}

fn config(webhooks: Vec<Webhook>) -> ServerConfig {
    let mut config = ServerConfig::with_policy(Policy::from_toml_str(POLICY, "test").unwrap())
        .with_webhooks(webhooks);
    config.poll = Duration::from_millis(50);
    config.webhook_poll = Duration::from_millis(50);
    config.webhook_lease = Duration::from_secs(10);
    config
}

async fn server(webhooks: Vec<Webhook>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(toolgate_store::SqliteStore::open(dir.path().join("toolgate.db")).unwrap());
    let server = TestServer::start_with(store, config(webhooks), dir).await;
    // The server answers once its webhooks' cursors are made.
    let (status, _) = server
        .call(reqwest::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    server
}

/// Checks a request the way a receiver should: the signature over
/// `{timestamp}.{body}` with the secret, a fresh timestamp, and the id
/// header matching the payload.
fn verify(received: &Received) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}", received.timestamp, received.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        received.signature,
        format!("v1={expected}"),
        "the signature checks out"
    );
    let timestamp: i64 = received.timestamp.parse().unwrap();
    assert!(
        (now() / 1000 - timestamp).abs() < 300,
        "the timestamp is fresh: {timestamp}"
    );
    let payload = received.json();
    assert_eq!(payload["id"], received.id.as_str(), "{payload}");
    assert!(payload["created_at"].as_str().unwrap().ends_with('Z'));
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_for_api_decisions_and_engine_runs() {
    let receiver = Receiver::start(vec![]).await;
    let server = server(vec![hook(&receiver.url)]).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    let alice = server.token("alice", Role::Approver, &[]).await;
    let admin = server.token("root", Role::Admin, &[]).await;

    // An outside agent's call waits; alice approves it over the API.
    let pending = server.ask(&bot, send_email("sally@gmail.com")).await;
    let id = pending["id"].as_str().unwrap().to_owned();
    let got = receiver.wait_for(1).await;
    let requested = verify(&got[0]);
    assert_eq!(requested["type"], "approval.requested");
    assert_eq!(requested["data"]["id"], id.as_str());
    assert_eq!(requested["data"]["status"], "pending");
    assert_eq!(requested["data"]["tool"], "send_email");
    assert_eq!(requested["data"]["args"]["recipient"], "sally@gmail.com");
    assert_eq!(requested["data"]["run_id"], pending["run_id"]);
    assert_eq!(requested["data"]["decided_by"], Value::Null);
    assert_eq!(requested["data"]["external"], true);
    let (status, _) = server
        .post(
            &format!("/v1/approvals/{id}/decision"),
            &alice,
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let decided = verify(&receiver.wait_for(2).await[1]);
    assert_eq!(decided["type"], "approval.decided");
    assert_eq!(decided["data"]["id"], id.as_str());
    assert_eq!(decided["data"]["status"], "approved");
    assert_eq!(decided["data"]["decided_by"], "alice");
    assert_ne!(
        decided["id"], requested["id"],
        "each delivery has its own id"
    );

    // A call policy settles at once was never pending: only `decided`.
    let inside = server.ask(&bot, send_email("bob@example.com")).await;
    let settled_at_once = verify(&receiver.wait_for(3).await[2]);
    assert_eq!(settled_at_once["type"], "approval.decided");
    assert_eq!(settled_at_once["data"]["id"], inside["id"]);
    assert_eq!(settled_at_once["data"]["status"], "approved");
    assert_eq!(
        settled_at_once["data"]["decided_by"],
        "policy (inside mail)"
    );

    // An engine run on the same store, decided by the engine directly (as
    // another process would), with no request to this server.
    let model: Arc<dyn toolgate_core::ChatModel> = Arc::new(toolgate::seed::model());
    let agent = Agent::new(model, toolgate::seed::tools()).store(Arc::clone(&server.store));
    let outcome = agent
        .run("Send sally@gmail.com an email saying 'What's up homie'")
        .await
        .unwrap();
    let RunOutcome::Waiting {
        run_id, approvals, ..
    } = outcome
    else {
        panic!("the run waits for approval: {outcome:?}");
    };
    let engine_requested = verify(&receiver.wait_for(4).await[3]);
    assert_eq!(engine_requested["type"], "approval.requested");
    assert_eq!(engine_requested["data"]["id"], approvals[0].id.as_str());
    assert_eq!(engine_requested["data"]["run_id"], run_id.as_str());
    assert_eq!(engine_requested["data"]["external"], false);
    decide(
        server.store.as_ref(),
        &Principal::new("carol", Role::Admin),
        &approvals[0].id,
        &approvals[0].fingerprint,
        DecisionRequest::Reject(Some("not today".to_owned())),
        None,
        now(),
    )
    .await
    .unwrap();
    let engine_decided = verify(&receiver.wait_for(5).await[4]);
    assert_eq!(engine_decided["type"], "approval.decided");
    assert_eq!(engine_decided["data"]["status"], "rejected");
    assert_eq!(engine_decided["data"]["decided_by"], "carol");
    assert_eq!(
        engine_decided["data"]["decisions"][0]["message"],
        "not today"
    );
    let outcome = agent.resume(&run_id).await.unwrap();
    let RunOutcome::Completed { answer, .. } = outcome else {
        panic!("the run completes: {outcome:?}");
    };
    let completed = verify(&receiver.wait_for(6).await[5]);
    assert_eq!(completed["type"], "run.completed");
    assert_eq!(
        completed["data"],
        json!({
            "run_id": run_id,
            "status": "completed",
            "thread": null,
            "completed_at": completed["created_at"],
            "answer": answer,
        })
    );

    // The log, over the API: admins only, newest first, all delivered once.
    let deliveries = settled(server.store.as_ref(), 6).await;
    assert!(deliveries.iter().all(|d| d.attempts.len() == 1
        && d.status == DeliveryStatus::Delivered
        && d.attempts[0].status_code == Some(200)));
    let (status, page) = server.get("/v1/webhooks/deliveries", &admin).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["deliveries"].as_array().unwrap();
    assert_eq!(listed.len(), 6);
    assert_eq!(listed[0]["type"], "run.completed");
    assert_eq!(listed[0]["status"], "delivered");
    assert_eq!(listed[0]["webhook"], receiver.url.as_str());
    assert_eq!(listed[0]["attempts"][0]["status_code"], 200);
    assert_eq!(listed[0]["payload"], completed);
    let (status, page) = server
        .get("/v1/webhooks/deliveries?status=failed", &admin)
        .await;
    assert_eq!(
        (status, page["deliveries"].clone()),
        (StatusCode::OK, json!([]))
    );
    let (status, _) = server
        .get("/v1/webhooks/deliveries?status=lost", &admin)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.get("/v1/webhooks/deliveries", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Only failed deliveries are sent again, and only by admins.
    let id = listed[0]["id"].as_str().unwrap();
    let path = format!("/v1/webhooks/deliveries/{id}/redeliver");
    let (status, problem) = server.post(&path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["type"], "urn:toolgate:problem:not-failed");
    assert_eq!(
        problem["detail"],
        format!("delivery {id} was delivered; only failed deliveries are sent again")
    );
    let (status, problem) = server.post(&path, &alice, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("only admins send webhook deliveries again")
    );
    let (status, problem) = server
        .post(
            "/v1/webhooks/deliveries/d-nope/redeliver",
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("there is no webhook delivery `d-nope`")
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
        metrics.contains(r#"toolgate_webhook_attempts_total{outcome="delivered"} 6"#),
        "{metrics}"
    );
    assert_eq!(receiver.got().len(), 6, "nothing was sent twice");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_three_attempts_and_a_webhook_only_its_events() {
    let receiver = Receiver::start(vec![500, 503]).await;
    let only_decided = Receiver::start(vec![]).await;
    let server = server(vec![
        hook(&receiver.url).events([WebhookEvent::ApprovalRequested]),
        hook(&only_decided.url).events([WebhookEvent::ApprovalDecided]),
    ])
    .await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    server.ask(&bot, send_email("sally@gmail.com")).await;
    server.ask(&bot, send_email("bob@example.com")).await;

    let deliveries = settled(server.store.as_ref(), 2).await;
    let retried = deliveries
        .iter()
        .find(|d| d.webhook == receiver.url)
        .unwrap();
    assert_eq!(retried.status, DeliveryStatus::Delivered);
    assert_eq!(retried.event_type, "approval.requested");
    let codes: Vec<_> = retried.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(503), Some(200)]);
    assert_eq!(
        retried
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let error = retried.attempts[0].error.as_deref().unwrap();
    assert!(
        error.contains("500") && error.contains("receiver says so"),
        "{error}"
    );
    assert_eq!(retried.attempts[2].error, None);
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|r| r.id == retried.id),
        "retries keep the id"
    );
    for received in &got {
        verify(received);
    }
    let other = deliveries
        .iter()
        .find(|d| d.webhook == only_decided.url)
        .unwrap();
    assert_eq!(other.event_type, "approval.decided");
    assert_eq!(only_decided.got().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_at_once() {
    let receiver = Receiver::start(vec![400]).await;
    let server = server(vec![hook(&receiver.url)]).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    server.ask(&bot, send_email("sally@gmail.com")).await;
    let deliveries = settled(server.store.as_ref(), 1).await;
    assert_eq!(deliveries[0].status, DeliveryStatus::Failed);
    assert_eq!(deliveries[0].attempts.len(), 1, "{:?}", deliveries[0]);
    assert_eq!(deliveries[0].attempts[0].status_code, Some(400));
    assert_eq!(receiver.got().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_retried_then_given_up_with_every_attempt_logged() {
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let server = server(vec![hook(&closed).max_attempts(3)]).await;
    let bot = server.token("bot", Role::Agent, &[]).await;
    server.ask(&bot, send_email("sally@gmail.com")).await;
    let deliveries = settled(server.store.as_ref(), 1).await;
    let delivery = &deliveries[0];
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.attempts.len(), 3, "{delivery:?}");
    for attempt in &delivery.attempts {
        assert_eq!(attempt.status_code, None);
        let error = attempt.error.as_deref().unwrap();
        assert!(
            error.to_lowercase().contains("connect") || error.contains("refused"),
            "{error}"
        );
    }
    assert!(delivery.attempts.windows(2).all(|w| w[0].at <= w[1].at));

    // Sent again on an admin's word: one more attempt (it has had its 3),
    // numbered on, then failed again as the receiver is still down.
    let admin = server.token("root", Role::Admin, &[]).await;
    let path = format!("/v1/webhooks/deliveries/{}/redeliver", delivery.id);
    let (status, answer) = server.post(&path, &admin, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({"id": delivery.id, "status": "pending"}));
    let again = wait_until("a fourth attempt", || async {
        let deliveries = server
            .store
            .deliveries(&DeliveryQuery::default())
            .await
            .unwrap();
        let delivery = deliveries.into_iter().next().unwrap();
        (delivery.status == DeliveryStatus::Failed && delivery.attempts.len() == 4)
            .then_some(delivery)
    })
    .await;
    assert_eq!(again.attempts[3].attempt, 4);
    assert_eq!(again.attempts[..3], delivery.attempts[..]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgres_database_deliver_each_event_once() {
    let database = TestDatabase::create().await;
    let receiver = Receiver::start(vec![]).await;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn Store> = Arc::new(
            toolgate_store::PgStore::connect(&database.url)
                .await
                .unwrap(),
        );
        let server = TestServer::start_with(
            store,
            config(vec![hook(&receiver.url)]),
            tempfile::tempdir().unwrap(),
        )
        .await;
        let (status, _) = server
            .call(reqwest::Method::GET, "/healthz", None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        servers.push(server);
    }
    let bot = servers[0].token("bot", Role::Agent, &[]).await;
    let alice = servers[0].token("alice", Role::Approver, &[]).await;
    // Ten calls asked through one server and decided through the other:
    // twenty events, each seen by both dispatchers.
    let mut ids = Vec::new();
    for n in 0..10 {
        let approval = servers[n % 2]
            .ask(&bot, send_email(&format!("user{n}@gmail.com")))
            .await;
        ids.push(approval["id"].as_str().unwrap().to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let (status, _) = servers[(n + 1) % 2]
            .post(
                &format!("/v1/approvals/{id}/decision"),
                &alice,
                json!({"decision": "reject"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let deliveries = settled(servers[0].store.as_ref(), 20).await;
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == DeliveryStatus::Delivered && d.attempts.len() == 1)
    );
    let got = receiver.got();
    assert_eq!(got.len(), 20, "each event once: {got:#?}");
    let mut keys: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let payload = verify(r);
            (
                payload["type"].as_str().unwrap().to_owned(),
                payload["data"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        20,
        "a requested and a decided for each approval"
    );
    for server in servers {
        server.stop().await;
    }
}

/// The URL of the PostgreSQL server's maintenance database.
fn postgres_url() -> String {
    std::env::var("TOOLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database made for one test, dropped when this is dropped.
struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("toolgate_test_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&postgres_url(), NoTls)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot reach the PostgreSQL server for the tests at {}: {error}",
                    postgres_url()
                )
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let base = postgres_url();
        let url = match base.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("TOOLGATE_TEST_POSTGRES must end in /DATABASE: {base}"),
        };
        TestDatabase { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&postgres_url(), NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
    }
}

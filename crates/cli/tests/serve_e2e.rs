//! `toolgate serve` and `toolgate tokens`, end to end: the built binary
//! serving a real store on a loopback port, tokens made by the command
//! line, and the example agent in Python (plain HTTP) asking, waiting and
//! acting on the decision.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::{Server, http};

struct Env {
    dir: tempfile::TempDir,
    /// The store: a SQLite file in `dir`, or a PostgreSQL URL.
    db: std::ffi::OsString,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("toolgate.db").into_os_string();
        Env { dir, db }
    }

    fn on(db: &str) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            db: db.into(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TOOLGATE_USER", "admin")
            .env(
                "TOOLGATE_MODEL",
                concat!(
                    "scripted:",
                    env!("CARGO_MANIFEST_DIR"),
                    "/../toolgate/seed/script.json"
                ),
            )
            .current_dir(self.dir.path())
            .arg("--db")
            .arg(&self.db)
            .args(args);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run_piped(self.command(args), "")
    }

    /// A new token's secret: the last word toolgate printed.
    fn token(&self, name: &str, role: &str) -> String {
        let output = self.run(&["tokens", "create", "--name", name, "--role", role]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let stdout = text(&output.stdout);
        let secret = stdout.split_whitespace().last().unwrap().to_owned();
        assert!(secret.starts_with("tg_"), "{stdout}");
        secret
    }

    /// Starts `toolgate serve` on a free loopback port; waits until it
    /// listens.
    fn serve(&self, policy: &str) -> Server {
        self.serve_with(policy, &[])
    }

    /// [`Env::serve`] with these environment variables set.
    fn serve_with(&self, policy: &str, vars: &[(&str, &str)]) -> Server {
        std::fs::write(self.dir.path().join("toolgate.toml"), policy).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = self.command(&["serve", "--listen", &listen]);
        command.envs(vars.iter().copied());
        common::Server::start(command, &listen)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits until an approval is pending, and returns it.
fn pending(server: &Server, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = http(
            "GET",
            &format!("{}/v1/approvals?status=pending", server.base),
            token,
            None,
        );
        assert_eq!(status, 200, "{page}");
        if let Some(approval) = page["approvals"].get(0) {
            return approval.clone();
        }
        assert!(Instant::now() < deadline, "no approval became pending");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn agent(server: &Server, token: &str, recipient: &str) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-agent/agent.py");
    Command::new("python3")
        .arg(script)
        .arg(recipient)
        .env("TOOLGATE_URL", &server.base)
        .env("TOOLGATE_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs the example agent")
}

#[test]
fn the_python_agent_sends_only_what_is_approved_and_reports_a_rejection() {
    let env = Env::new();
    let bot = env.token("python-agent", "agent");
    let alice = env.token("alice", "approver");
    let server = env.serve("");

    // Approved with an edit: the agent sends to the edited recipient.
    let run = agent(&server, &bot, "sally@gmail.com");
    let approval = pending(&server, &alice);
    assert_eq!(approval["tool"], "send_email");
    assert_eq!(approval["args"]["recipient"], "sally@gmail.com");
    let (status, answer) = http(
        "POST",
        &format!(
            "{}/v1/approvals/{}/decision",
            server.base,
            approval["id"].as_str().unwrap()
        ),
        &alice,
        Some(json!({
            "decision": "edit",
            "args": {"recipient": "sally@example.org", "message": "Hello Sally"},
            "fingerprint": approval["fingerprint"],
        })),
    );
    assert_eq!(status, 200, "{answer}");
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // It asked and waited in one request, which answered with the decision:
    // the server counted one ask and no read of the approval.
    let (_, metrics) = http("GET", &format!("{}/metrics", server.base), &alice, None);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(
            r#"toolgate_http_requests_total{method="POST",route="/v1/approvals",status="201"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"method="GET",route="/v1/approvals/{id}""#),
        "{metrics}"
    );
    let stdout = text(&output.stdout);
    assert_eq!(
        stdout,
        format!(
            "asked: approval {} is edited\nSuccessfully sent email to sally@example.org.\n",
            approval["id"].as_str().unwrap()
        )
    );

    // Rejected: nothing is sent, and the agent says why.
    let run = agent(&server, &bot, "mallory@gmail.com");
    let approval = pending(&server, &alice);
    let (status, _) = http(
        "POST",
        &format!(
            "{}/v1/approvals/{}/decision",
            server.base,
            approval["id"].as_str().unwrap()
        ),
        &alice,
        Some(json!({"decision": "reject", "message": "not to strangers"})),
    );
    assert_eq!(status, 200);
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("Successfully sent"), "{stdout}");
    assert!(
        stdout.contains("not sent (rejected): alice rejected this call: not to strangers"),
        "{stdout}"
    );

    // A bad token: the agent reports the server's words and fails.
    let output = agent(&server, "tg_nonsense", "x@y.z")
        .wait_with_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("401 Unauthorized: the token is not known"),
        "{}",
        text(&output.stderr)
    );

    let (status, rest) = server.stop();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("stopped"), "{rest}");

    // Everything is in the audit log, which verifies.
    let output = env.run(&["audit", "verify"]);
    assert!(output.status.success(), "{}", text(&output.stdout));
}

#[test]
fn tokens_are_made_listed_and_revoked_from_the_command_line() {
    let env = Env::new();
    let output = env.run(&[
        "tokens", "create", "--name", "alice", "--role", "approver", "--group", "ops", "--group",
        "sre", "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["name"], "alice");
    assert_eq!(created["role"], "approver");
    assert_eq!(created["groups"], json!(["ops", "sre"]));
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    let output = env.run(&["tokens", "list", "--json"]);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["state"], "live");
    assert!(
        !text(&output.stdout).contains(&secret),
        "the secret is never listed"
    );

    let server = env.serve("");
    let (status, me) = http("GET", &format!("{}/v1/me", server.base), &secret, None);
    assert_eq!((status, me["name"].as_str()), (200, Some("alice")));

    let output = env.run(&["tokens", "revoke", &id]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // The server trusts a checked token for up to 2 seconds.
    std::thread::sleep(Duration::from_millis(2100));
    let (status, problem) = http("GET", &format!("{}/v1/me", server.base), &secret, None);
    assert_eq!(status, 401, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));

    let output = env.run(&["tokens", "revoke", "tok_nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr)
            .contains("there is no token `tok_nope`; `toolgate tokens list` lists them"),
        "{}",
        text(&output.stderr)
    );
    let output = env.run(&["tokens", "create", "--name", "x", "--role", "root"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("use agent, approver or admin"));
    let output = env.run(&["tokens", "create", "--name", "two words", "--role", "agent"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("is not one toolgate accepts"));
    for (lifetime, says) in [("0s", "would never work"), ("soon", "is not a duration")] {
        let output = env.run(&[
            "tokens",
            "create",
            "--name",
            "x",
            "--role",
            "agent",
            "--expires-in",
            lifetime,
        ]);
        assert_eq!(output.status.code(), Some(2), "{lifetime}");
        assert!(
            text(&output.stderr).contains(says),
            "{}",
            text(&output.stderr)
        );
    }
    // Refused input made no token.
    let output = env.run(&["tokens", "list", "--json"]);
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // The audit log says who made the token for whom and who revoked it,
    // signed, and never holds the secret.
    let output = env.run(&["audit", "export", "--json"]);
    let exported = text(&output.stdout);
    assert!(!exported.contains(&secret));
    let entries: Vec<Value> = exported
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["token_created", "token_revoked"], "{exported}");
    assert!(
        entries.iter().all(|e| e["signature"].is_string()),
        "{exported}"
    );
    let table = text(&env.run(&["audit", "export"]).stdout);
    assert!(
        table.contains(&format!("admin made token {id} for alice (approver)")),
        "{table}"
    );
    assert!(
        table.contains(&format!("admin revoked token {id}")),
        "{table}"
    );
    let output = env.run(&["audit", "verify"]);
    assert!(output.status.success(), "{}", text(&output.stdout));
    drop(server);
}

#[test]
fn serve_refuses_a_taken_port_and_a_bad_policy_clearly() {
    let env = Env::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = env.run(&["serve", "--listen", &listen]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains(&format!("cannot listen on {listen}")),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(
        env.dir.path().join("toolgate.toml"),
        "[[policy.rules]]\ntool = \"x\"\naction = \"maybe\"\n",
    )
    .unwrap();
    let output = env.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("toolgate.toml:3:"),
        "{}",
        text(&output.stderr)
    );
}

fn decide(server: &Server, token: &str, id: &str, body: Value) -> (u16, Value) {
    http(
        "POST",
        &format!("{}/v1/approvals/{id}/decision", server.base),
        token,
        Some(body),
    )
}

#[test]
fn two_servers_on_one_postgresql_database_share_approvals_and_survive_a_kill() {
    let database = common::PgDatabase::create();
    let env = Env::on(&database.url());
    let bot = env.token("bot", "agent");
    let alice = env.token("alice", "approver");
    let bob = env.token("bob", "approver");
    let one = env.serve("");
    let two = env.serve("");

    // Asked on one, decided on two: the agent's wait on one answers.
    let (status, created) = http(
        "POST",
        &format!("{}/v1/approvals", one.base),
        &bot,
        Some(json!({"tool": "send_email", "args": {"recipient": "sally@gmail.com"}})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let waiting = {
        let url = format!("{}/v1/approvals/{id}?wait=60s", one.base);
        let bot = bot.clone();
        std::thread::spawn(move || http("GET", &url, &bot, None))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = decide(&two, &alice, &id, json!({"decision": "approve"}));
    assert_eq!(status, 200);
    let (status, waited) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert_eq!(waited["status"], "approved");
    assert_eq!(waited["decided_by"], "alice");

    // Two people at once, one on each server: exactly one decision counts.
    for round in 0..10 {
        let (_, created) = http(
            "POST",
            &format!("{}/v1/approvals", two.base),
            &bot,
            Some(json!({"tool": "send_email", "args": {"round": round}})),
        );
        let id = created["id"].as_str().unwrap().to_owned();
        let racers: Vec<_> = [(&one, &alice, "approve"), (&two, &bob, "reject")]
            .into_iter()
            .map(|(server, token, decision)| {
                let url = format!("{}/v1/approvals/{id}/decision", server.base);
                let token = token.clone();
                std::thread::spawn(move || {
                    http("POST", &url, &token, Some(json!({"decision": decision})))
                })
            })
            .collect();
        let mut outcomes: Vec<(u16, Value)> =
            racers.into_iter().map(|r| r.join().unwrap()).collect();
        outcomes.sort_by_key(|(status, _)| *status);
        assert_eq!(
            [outcomes[0].0, outcomes[1].0],
            [200, 409],
            "round {round}: {outcomes:?}"
        );
        assert_eq!(
            outcomes[1].1["approval"]["status"], outcomes[0].1["approval"]["status"],
            "the loser sees the winner's decision"
        );
    }

    // One server is killed while an agent waits on it: the agent asks the
    // other, and nothing acknowledged is lost.
    let (_, created) = http(
        "POST",
        &format!("{}/v1/approvals", one.base),
        &bot,
        Some(json!({"tool": "send_email", "args": {"recipient": "x@gmail.com"}})),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let waiting = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("{}/v1/approvals/{id}?wait=60s", one.base);
        let bot = bot.clone();
        std::thread::spawn(move || {
            runtime.block_on(async {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(bot)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut one = one;
    one.child.kill().unwrap();
    one.child.wait().unwrap();
    assert!(
        waiting.join().unwrap().is_err(),
        "the killed server's wait breaks off"
    );
    let (status, still) = http(
        "GET",
        &format!("{}/v1/approvals/{id}", two.base),
        &bot,
        None,
    );
    assert_eq!((status, still["status"].as_str()), (200, Some("pending")));
    let (status, _) = decide(&two, &alice, &id, json!({"decision": "approve"}));
    assert_eq!(status, 200);
    let again = env.serve("");
    let (_, read) = http(
        "GET",
        &format!("{}/v1/approvals/{id}", again.base),
        &bot,
        None,
    );
    assert_eq!(read["status"], "approved");
    let (status, rest) = two.stop();
    assert!(status.success(), "{rest}");
    drop(again);
    let output = env.run(&["audit", "verify"]);
    assert!(output.status.success(), "{}", text(&output.stdout));
}

/// Starts `toolgate worker` with a short lease.
fn worker(env: &Env) -> Child {
    env.command(&["worker", "--lease", "1s", "--poll", "50ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn workers_drive_decided_runs_and_take_over_from_a_killed_one() {
    use toolgate::engine::resolve_in_doubt;
    use toolgate::run::{Event, Resolution, RunState};
    use toolgate::store::Store;
    use toolgate::{PgStore, Principal, Role};

    const SEND: &str = "Send sally@gmail.com an email saying 'What's up homie'";
    let database = common::PgDatabase::create();
    let env = Env::on(&database.url());
    let alice = env.token("alice", "approver");
    let servers = [env.serve(""), env.serve("")];
    let mut first = worker(&env);
    let mut second = worker(&env);

    let mut runs = Vec::new();
    for _ in 0..6 {
        let output = env.run(&["run", "--detach", SEND]);
        assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
        let stderr = text(&output.stderr);
        let run_id = stderr
            .split_whitespace()
            .skip_while(|word| *word != "run")
            .nth(1)
            .unwrap()
            .to_owned();
        runs.push(run_id);
    }
    // Decided on either server, a few at a time; one worker is killed on
    // the way, whatever it was doing.
    for (index, _) in runs.iter().enumerate() {
        let server = &servers[index % 2];
        let approval = pending(server, &alice);
        let (status, answer) = decide(
            server,
            &alice,
            approval["id"].as_str().unwrap(),
            json!({"decision": "approve", "fingerprint": approval["fingerprint"]}),
        );
        assert_eq!(status, 200, "{answer}");
        if index == 2 {
            std::thread::sleep(Duration::from_millis(5));
            first.kill().unwrap();
        }
    }
    first.wait().unwrap();

    // The other worker finishes them all; a call the killed one had
    // started is in doubt, and a person says it was done.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(PgStore::connect(&database.url())).unwrap();
    let person = Principal::new("alice", Role::Approver);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut resolved = 0;
    loop {
        let mut finished = 0;
        for run_id in &runs {
            let events = runtime.block_on(store.load(run_id)).unwrap();
            let starts = events
                .iter()
                .filter(|e| matches!(e.event, Event::ToolStarted { .. }))
                .count();
            assert!(
                starts <= 1,
                "send_email of run {run_id} started {starts} times"
            );
            let state = RunState::fold(events.iter().map(|e| &e.event));
            if state.status.is_finished() {
                finished += 1;
            }
            for call in state.in_doubt() {
                runtime
                    .block_on(resolve_in_doubt(
                        &store,
                        &person,
                        run_id,
                        &call.call.id,
                        Resolution::Done {
                            output: json!("Successfully sent email to sally@gmail.com."),
                        },
                        0,
                    ))
                    .unwrap();
                resolved += 1;
            }
        }
        if finished == runs.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{finished} of {} runs finished",
            runs.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("calls the killed worker left in doubt: {resolved}");
    assert!(
        second.try_wait().unwrap().is_none(),
        "the other worker still runs"
    );
    Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("completed: I sent your email to sally@gmail.com."),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    drop(servers);
    let output = env.run(&["audit", "verify"]);
    assert!(output.status.success(), "{}", text(&output.stdout));
}

#[test]
fn serve_refuses_bad_webhooks_saying_what_to_write() {
    let env = Env::new();
    let cases = [
        (
            "[[webhooks]]\nurl = \"localhost:9000/hook\"\nsecret_env = \"HOOK_SECRET\"\n",
            "toolgate.toml: webhook 1: `url` \"localhost:9000/hook\" uses `localhost:`; \
             webhooks are sent over http:// or https://",
        ),
        (
            "[[webhooks]]\nurl = \"https://example.com/hook\"\n",
            "toolgate.toml: webhook 1 (https://example.com/hook): it has no secret; write \
             secret_env = \"NAME\"",
        ),
        (
            "[[webhooks]]\nurl = \"https://example.com/hook\"\nsecret_env = \"NOT_SET\"\n",
            "secret_env names the environment variable NOT_SET, which is not set",
        ),
        (
            "[[webhooks]]\nurl = \"https://example.com/hook\"\nsecret = \"s\"\n\
             events = [\"approval.approved\"]\n",
            "unknown event `approval.approved` in `events`; the events are approval.requested, \
             approval.decided and run.completed",
        ),
    ];
    for (config, expected) in cases {
        std::fs::write(env.dir.path().join("toolgate.toml"), config).unwrap();
        let output = env.run(&["serve", "--listen", "127.0.0.1:0"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{config}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "{config}\n{stderr}\nshould say {expected:?}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// A receiver on a loopback port, on a thread of its own, that answers
/// 200 and counts what it gets.
fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (url, count, _) = receiver_answering(200);
    (url, count)
}

/// A receiver that answers with the status in the atomic it hands back
/// (first `status`), and counts what it gets.
fn receiver_answering(
    status: u16,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicU16>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(AtomicU16::new(status));
    let (counted, answering) = (Arc::clone(&count), Arc::clone(&answer));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let status = answering.load(Ordering::SeqCst);
                    async move {
                        (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            "answered",
                        )
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, count, answer)
}

/// `toolgate serve` with one webhook, to `url`, for `approval.requested`,
/// and one approval asked for (so one delivery queued).
fn serve_one_request(env: &Env, url: &str) -> Server {
    let bot = env.token("bot", "agent");
    let config = format!(
        "[[webhooks]]\nurl = \"{url}\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"approval.requested\"]\n"
    );
    let server = env.serve_with(&config, &[("HOOK_SECRET", "s3cret")]);
    let (status, _) = http(
        "POST",
        &format!("{}/v1/approvals", server.base),
        &bot,
        Some(json!({"tool": "send_email", "args": {"to": "sally@gmail.com"}})),
    );
    assert_eq!(status, 201);
    server
}

/// `webhooks deliveries --json` once the newest delivery has `status`
/// (within 30 s).
fn deliveries_once(env: &Env, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = env.run(&["webhooks", "deliveries", "--json"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
        if listed[0]["status"] == status {
            return listed;
        }
        assert!(Instant::now() < deadline, "never {status}: {listed}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn webhooks_deliveries_lists_what_serve_sent() {
    let env = Env::new();
    let output = env.run(&["webhooks", "deliveries", "--json"]);
    assert!(
        !output.status.success(),
        "no store yet: {}",
        text(&output.stdout)
    );
    let (url, count) = receiver();
    let server = serve_one_request(&env, &url);
    let listed = deliveries_once(&env, "delivered");
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let delivery = &listed[0];
    assert_eq!(delivery["type"], "approval.requested");
    assert_eq!(delivery["webhook"], url.as_str());
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["payload"]["data"]["tool"], "send_email");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);

    let output = env.run(&["webhooks", "deliveries"]);
    let table = text(&output.stdout);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("TYPE") && header.contains("ATTEMPTS"),
        "{table}"
    );
    assert!(
        table.contains("approval.requested") && table.contains("delivered"),
        "{table}"
    );
    let output = env.run(&["webhooks", "deliveries", "--status", "failed", "--json"]);
    assert_eq!(text(&output.stdout).trim(), "[]");
    let output = env.run(&["webhooks", "deliveries", "--status", "lost"]);
    assert_eq!(output.status.code(), Some(2));

    // Pruning keeps what is newer than asked, and deletes the rest.
    let output = env.run(&["webhooks", "prune", "--older-than", "1h"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(
        said.starts_with("Deleted 0 settled deliveries made before ")
            && said.ends_with(", with their attempts; pending ones stay.\n"),
        "{said}"
    );
    let output = env.run(&["webhooks", "prune", "--older-than", "0s"]);
    assert!(
        text(&output.stdout).starts_with("Deleted 1 settled delivery made before "),
        "{}",
        text(&output.stdout)
    );
    let output = env.run(&["webhooks", "deliveries", "--json"]);
    assert_eq!(text(&output.stdout).trim(), "[]");
    let output = env.run(&["webhooks", "prune", "--older-than", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("invalid value 'soon' for '--older-than <DURATION>'"),
        "{}",
        text(&output.stderr)
    );
    let output = env.run(&["webhooks", "prune"]);
    assert_eq!(output.status.code(), Some(2), "--older-than is needed");
    let (status, rest) = server.stop();
    assert!(status.success(), "{rest}");
}

/// A delivery the receiver refused is sent again on `webhooks redeliver`,
/// by the running server, and its attempts are numbered on.
#[test]
fn webhooks_redeliver_sends_a_failed_delivery_again() {
    use std::sync::atomic::Ordering;
    let env = Env::new();
    let (url, count, answer) = receiver_answering(410);
    let server = serve_one_request(&env, &url);
    let wait_for = |status: &str| deliveries_once(&env, status)[0].clone();
    // 410 Gone is not worth retrying: failed after one attempt.
    let failed = wait_for("failed");
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(failed["attempts"][0]["status_code"], 410);
    let id = failed["id"].as_str().unwrap().to_owned();

    answer.store(200, Ordering::SeqCst);
    let output = env.run(&["webhooks", "redeliver", &id]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!(
            "Delivery {id} will be sent again: `toolgate serve` sends it at its next look at \
             the outbox.\n"
        )
    );
    let delivered = wait_for("delivered");
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{delivered}");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // Delivered: nothing to do. Unknown: an error that says where to look,
    // after the known ones are done.
    let output = env.run(&["webhooks", "redeliver", &id, "d-nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stdout),
        format!("Delivery {id} was delivered; nothing to do.\n")
    );
    assert_eq!(
        text(&output.stderr),
        "error: there is no webhook delivery `d-nope`; `toolgate webhooks deliveries \
         --status failed` lists the failed ones\n"
    );
    let output = env.run(&["webhooks", "redeliver"]);
    assert_eq!(output.status.code(), Some(2), "an id is needed");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count.load(Ordering::SeqCst), 2, "sent once more, not again");
    let (status, rest) = server.stop();
    assert!(status.success(), "{rest}");
}

#[test]
fn serve_takes_its_address_from_toolgate_toml_unless_a_flag_says_otherwise() {
    let env = Env::new();
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let from_file = free();
    std::fs::write(
        env.dir.path().join("toolgate.toml"),
        format!("[serve]\nlisten = \"{from_file}\"\nsecure_cookies = true\n"),
    )
    .unwrap();
    let server = Server::start(env.command(&["serve"]), &from_file);
    // The file's secure_cookies too: signing in sets a Secure cookie.
    let alice = env.token("alice", "approver");
    let login = format!("{}/inbox/login", server.base);
    let cookie = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let signed_in = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .post(login)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={alice}&next=%2Finbox"))
                .send()
                .await
                .unwrap();
            signed_in.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .to_owned()
        });
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    drop(server);

    // The flag, then the environment, come before the file.
    let from_flag = free();
    let server = Server::start(env.command(&["serve", "--listen", &from_flag]), &from_flag);
    assert!(
        TcpListener::bind(&from_file).is_ok(),
        "the file's address is not taken"
    );
    drop(server);
    let from_env = free();
    let mut command = env.command(&["serve"]);
    command.env("TOOLGATE_LISTEN", &from_env);
    drop(Server::start(command, &from_env));

    for (section, expected) in [
        (
            "[serve]\nlisten = \"localhost\"\n",
            "toolgate.toml: [serve]: listen = \"localhost\" is not an address to listen on; \
             write HOST:PORT with an IP address",
        ),
        (
            "[serve]\nport = 8080\n",
            "toolgate.toml: [serve]: unknown field `port`",
        ),
        (
            "[serve]\nsecure_cookies = \"yes\"\n",
            "toolgate.toml: [serve]: invalid type: string \"yes\", expected a boolean",
        ),
    ] {
        std::fs::write(env.dir.path().join("toolgate.toml"), section).unwrap();
        let output = env.run(&["serve"]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{section}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "{section}\n{stderr}\nshould say {expected:?}"
        );
    }
}

//! The approval server under load on loopback, measured with `wrk`.
//!
//! Run with `cargo bench -p toolgate-server --bench http -- MODE [ARGS]`:
//!
//! - `decide [PENDING] [CONNECTIONS] [SECONDS]`: fills the store with
//!   PENDING approvals (default 200000), then `wrk` posts one decision to
//!   each in turn (`POST /v1/approvals/{id}/decision`), from CONNECTIONS
//!   connections (default 64) for SECONDS (default 10).
//! - `ask [CONNECTIONS] [SECONDS]`: agents asking about calls that policy
//!   allows at once (`POST /v1/approvals`): the create path alone.
//! - `cycle [CONNECTIONS] [SECONDS]`: agents asking about calls that wait,
//!   each followed by a long-poll (`?wait=30s`) that an approver task
//!   answers by deciding it over HTTP: the whole create-and-wait cycle,
//!   timed by the agents (percentiles printed).
//! - `pending [N]`: fills the store with N pending approvals (default
//!   1000000), serves it, lists the newest 50 pending over HTTP a few
//!   hundred times, and prints the server process's resident memory.
//!
//! The store is a SQLite file under `TOOLGATE_BENCH_DIR` (default: the
//! system's temporary folder), or the PostgreSQL database of
//! `TOOLGATE_BENCH_POSTGRES` (a URL; the database must exist and be
//! empty). Needs `wrk` on the PATH for `decide` and `ask` (Debian: `apt-get
//! install wrk`).

/// The allocator of the `toolgate` binary, which serves in production (its
/// `main.rs` says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use toolgate_core::store::Store;
use toolgate_core::{Policy, Principal, Role};
use toolgate_engine::{CallRequest, request_call};
use toolgate_server::{Server, ServerConfig, issue_token};
use toolgate_store::{PgStore, SqliteStore};

const ASK_POLICY: &str = "[[policy.rules]]\ntool = \"send_email\"\naction = \"ask\"\n";
const ALLOW_POLICY: &str = "[[policy.rules]]\ntool = \"send_email\"\naction = \"allow\"\n";

struct Bench {
    store: Arc<dyn Store>,
    base: String,
    agent: String,
    approver: String,
    _dir: tempfile::TempDir,
}

fn now() -> i64 {
    toolgate_core::time::to_millis(std::time::SystemTime::now())
}

fn args(i: u64) -> Map<String, Value> {
    json!({"recipient": format!("user{i}@gmail.com"), "message": "What's up homie"})
        .as_object()
        .unwrap()
        .clone()
}

async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    match std::env::var("TOOLGATE_BENCH_POSTGRES") {
        Ok(url) => Arc::new(PgStore::connect(&url).await.unwrap()),
        Err(_) => Arc::new(SqliteStore::open(dir.path().join("toolgate.db")).unwrap()),
    }
}

async fn start(policy: &str) -> Bench {
    let dir = match std::env::var_os("TOOLGATE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = open_store(&dir).await;
    let mut tokens = Vec::new();
    for (name, role) in [
        ("bench-agent", Role::Agent),
        ("bench-approver", Role::Approver),
    ] {
        let issued = issue_token(Principal::new(name, role), "bench", None, now()).unwrap();
        store.create_token(&issued.record).await.unwrap();
        tokens.push(issued.secret);
    }
    let policy = Policy::from_toml_str(policy, "bench policy").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::new(Arc::clone(&store), ServerConfig::with_policy(policy));
    tokio::spawn(server.serve(listener, std::future::pending()));
    Bench {
        store,
        base,
        approver: tokens.pop().unwrap(),
        agent: tokens.pop().unwrap(),
        _dir: dir,
    }
}

/// Makes `n` pending approvals straight through the engine, 64 at a time;
/// their ids.
async fn fill(bench: &Bench, n: u64) -> Vec<String> {
    let policy = Arc::new(Policy::from_toml_str(ASK_POLICY, "bench policy").unwrap());
    let agent = Arc::new(Principal::new("bench-agent", Role::Agent));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, policy, agent, next) = (
            Arc::clone(&bench.store),
            Arc::clone(&policy),
            Arc::clone(&agent),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return ids;
                }
                let request = CallRequest::new("send_email", args(i));
                let detail = request_call(store.as_ref(), &policy, &agent, request, now())
                    .await
                    .unwrap();
                ids.push(detail.row.id);
            }
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    eprintln!(
        "filled: {n} pending approvals in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ids
}

/// Runs wrk with a Lua script; prints its report.
fn wrk(bench: &Bench, script: &str, path: &str, connections: u64, seconds: u64) {
    let file = bench._dir.path().join("bench.lua");
    std::fs::write(&file, script).unwrap();
    let output = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(&file)
        .arg(format!("{}{path}", bench.base))
        .output()
        .expect("wrk runs (Debian: apt-get install wrk)");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
}

/// A Lua script that sends each request with the token, and counts the
/// answers that were not `expected`.
fn lua(token: &str, setup: &str, request: &str, expected: u16) -> String {
    format!(
        r#"
{setup}
local failed = 0
function request()
  {request}
end
function response(status, headers, body)
  if status ~= {expected} then
    failed = failed + 1
    if failed < 4 then print("unexpected " .. status .. ": " .. body) end
  end
end
function done(summary, latency, requests)
  io.write(string.format("answers that were not 2xx or 3xx: %d; socket errors: %d\n",
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
"#
    )
}

async fn decide(pending: u64, connections: u64, seconds: u64) {
    let bench = start(ASK_POLICY).await;
    let ids = fill(&bench, pending).await;
    let list = bench._dir.path().join("ids.txt");
    std::fs::write(&list, ids.join("\n")).unwrap();
    // Each connection takes the next id: no approval is decided twice.
    let setup = format!(
        r#"
local ids = {{}}
for line in io.lines("{}") do ids[#ids + 1] = line end
local counter = 0
function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
end
local step = 0"#,
        list.display()
    );
    let request = r#"step = step + 1
  local id = ids[(step * 2 + offset) % #ids + 1]
  return wrk.format("POST", "/v1/approvals/" .. id .. "/decision", nil, '{"decision": "approve"}')"#;
    println!(
        "decide: {pending} pending, {connections} connections, {seconds} s (stop before the ids run out: each id decided once)"
    );
    wrk(
        &bench,
        &lua(&bench.approver, &setup, request, 200),
        "/",
        connections,
        seconds,
    );
}

async fn ask(connections: u64, seconds: u64) {
    let bench = start(ALLOW_POLICY).await;
    let request = r#"return wrk.format("POST", "/v1/approvals", nil,
    '{"tool": "send_email", "args": {"recipient": "bob@example.com", "message": "hi"}}')"#;
    println!("ask: policy allows at once, {connections} connections, {seconds} s");
    wrk(
        &bench,
        &lua(&bench.agent, "", request, 201),
        "/v1/approvals",
        connections,
        seconds,
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn cycle(connections: u64, seconds: u64) {
    let bench = Arc::new(start(ASK_POLICY).await);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (ids, mut to_decide) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The approver: decides each approval as soon as it is asked for.
    let approver = {
        let (bench, client) = (Arc::clone(&bench), client.clone());
        tokio::spawn(async move {
            let limit = Arc::new(tokio::sync::Semaphore::new(64));
            while let Some(id) = to_decide.recv().await {
                let permit = Arc::clone(&limit).acquire_owned().await.unwrap();
                let (bench, client) = (Arc::clone(&bench), client.clone());
                tokio::spawn(async move {
                    let response = client
                        .post(format!("{}/v1/approvals/{id}/decision", bench.base))
                        .bearer_auth(&bench.approver)
                        .json(&json!({"decision": "approve"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    drop(permit);
                });
            }
        })
    };
    let started = Instant::now();
    let mut agents = Vec::new();
    for i in 0..connections {
        let (bench, client, ids) = (Arc::clone(&bench), client.clone(), ids.clone());
        agents.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let created: Value = client
                    .post(format!("{}/v1/approvals", bench.base))
                    .bearer_auth(&bench.agent)
                    .json(&json!({"tool": "send_email", "args": args(i * 1_000_000 + n)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = created["id"].as_str().unwrap().to_owned();
                ids.send(id.clone()).unwrap();
                let decided: Value = client
                    .get(format!("{}/v1/approvals/{id}?wait=30s", bench.base))
                    .bearer_auth(&bench.agent)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(decided["status"], "approved");
                times.push(t.elapsed());
                n += 1;
            }
            times
        }));
    }
    drop(ids);
    let mut times = Vec::new();
    for agent in agents {
        times.extend(agent.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    approver.await.unwrap();
    times.sort();
    println!(
        "cycle: {connections} agents, {} cycles in {elapsed:.1} s = {:.0} cycles/s (3 HTTP requests each)",
        times.len(),
        times.len() as f64 / elapsed
    );
    println!(
        "  cycle time p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.9).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn pending(n: u64) {
    let bench = start(ASK_POLICY).await;
    fill(&bench, n).await;
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let page: Value = client
            .get(format!(
                "{}/v1/approvals?status=pending&limit=50",
                bench.base
            ))
            .bearer_auth(&bench.approver)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(page["approvals"].as_array().unwrap().len(), 50);
    }
    times.sort();
    println!(
        "pending: {n} pending; newest 50 over HTTP p50 {:.2} ms p99 {:.2} ms; resident memory {} MiB",
        percentile(&times, 0.5).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
        rss_kib() / 1024
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("decide") => decide(number(1, 200_000), number(2, 64), number(3, 10)).await,
            Some("ask") => ask(number(1, 64), number(2, 10)).await,
            Some("cycle") => cycle(number(1, 64), number(2, 10)).await,
            Some("pending") => pending(number(1, 1_000_000)).await,
            other => {
                eprintln!("unknown mode {other:?}: use decide, ask, cycle or pending");
                std::process::exit(2);
            }
        }
    });
}

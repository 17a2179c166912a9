//! The approval server under load on loopback, measured with `wrk`.
//!
//! Run with `cargo bench -p toolgate-server --bench http -- MODE [ARGS]`:
//!
//! - `decide [PENDING] [CONNECTIONS] [SECONDS] [ORDER]`: fills the store
//!   with PENDING approvals (default 200000), then `wrk` posts one decision
//!   to each in turn (`POST /v1/approvals/{id}/decision`), from CONNECTIONS
//!   connections (default 64) for SECONDS (default 10). ORDER `oldest`
//!   (the default) decides them in the order they were asked; `scattered`
//!   takes every 64th, so that no two decisions in a row touch the same
//!   pages of the store.
//! - `ask [CONNECTIONS] [SECONDS]`: agents asking about calls that policy
//!   allows at once (`POST /v1/approvals`): the create path alone.
//! - `cycle [CONNECTIONS] [SECONDS]`: agents asking about calls that wait,
//!   each followed by a long-poll (`?wait=30s`) that an approver task
//!   answers by deciding it over HTTP: the whole create-and-wait cycle,
//!   timed by the agents (percentiles printed).
//! - `ask-wait [CONNECTIONS] [SECONDS]`: the cycle in two requests, as an
//!   agent that asks and waits at once makes it: `POST
//!   /v1/approvals?wait=30s` answers when the approval is decided. The
//!   approver task learns of each approval from `/v1/events`, as an
//!   approver's program would, and decides it over HTTP.
//! - `servers [N] [CONNECTIONS] [SECONDS]`: the cycle of `cycle` across N
//!   `toolgate serve` processes (default 2) on one store: each agent asks
//!   and waits on one server, and its approval is decided on the next, so
//!   each wait is woken by another process. Runs the release binary next
//!   to the bench (`cargo build --release -p toolgate-cli` first), or the
//!   one `TOOLGATE_BIN` names.
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
    /// The same store when it is SQLite, for its writer's figures.
    sqlite: Option<Arc<SqliteStore>>,
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

async fn open_store(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Option<Arc<SqliteStore>>) {
    match std::env::var("TOOLGATE_BENCH_POSTGRES") {
        Ok(url) => (Arc::new(PgStore::connect(&url).await.unwrap()), None),
        Err(_) => {
            let store = Arc::new(SqliteStore::open(dir.path().join("toolgate.db")).unwrap());
            (Arc::clone(&store) as Arc<dyn Store>, Some(store))
        }
    }
}

impl Bench {
    /// Prints how the SQLite writer grouped the requests since `before`.
    fn writer_report(&self, before: Option<toolgate_store::WriterStats>) {
        let (Some(store), Some(before)) = (&self.sqlite, before) else {
            return;
        };
        let after = store.writer_stats();
        let requests = after.requests - before.requests;
        let transactions = (after.transactions - before.transactions).max(1);
        println!(
            "writer: {requests} requests in {transactions} transactions ({:.1} per transaction), \
             {} syncs",
            requests as f64 / transactions as f64,
            after.syncs - before.syncs,
        );
    }

    fn writer_stats(&self) -> Option<toolgate_store::WriterStats> {
        self.sqlite.as_ref().map(|store| store.writer_stats())
    }
}

/// The store and the tokens, with the server in this process (`policy`)
/// or none.
async fn start_with(policy: Option<&str>) -> Bench {
    let dir = match std::env::var_os("TOOLGATE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let (store, sqlite) = open_store(&dir).await;
    let mut tokens = Vec::new();
    for (name, role) in [
        ("bench-agent", Role::Agent),
        ("bench-approver", Role::Approver),
    ] {
        let issued = issue_token(Principal::new(name, role), "bench", None, now()).unwrap();
        store.create_token(&issued.record).await.unwrap();
        tokens.push(issued.secret);
    }
    let mut base = String::new();
    if let Some(policy) = policy {
        let policy = Policy::from_toml_str(policy, "bench policy").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::new(Arc::clone(&store), ServerConfig::with_policy(policy));
        tokio::spawn(server.serve(listener, std::future::pending()));
    }
    Bench {
        store,
        sqlite,
        base,
        approver: tokens.pop().unwrap(),
        agent: tokens.pop().unwrap(),
        _dir: dir,
    }
}

/// The store, the tokens and the server in this process.
async fn start(policy: &str) -> Bench {
    start_with(Some(policy)).await
}

/// Makes `n` pending approvals straight through the engine, 64 at a time;
/// their ids if `keep_ids` (a million ids take about 100 MiB, which the
/// allocator keeps after they are dropped: `pending` does not keep them,
/// so that the memory it reports is the server's).
async fn fill(bench: &Bench, n: u64, keep_ids: bool) -> Vec<String> {
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
                if keep_ids {
                    ids.push(detail.row.id);
                }
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

/// The order in which `decide` decides the approvals it made.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// The order they were asked in, as an inbox's queue is worked through:
    /// decisions one after the other touch the same pages of the store.
    Oldest,
    /// Each decision 64 approvals away (in the order they were asked) from
    /// the one before: no two decisions in a row share a page, the worst
    /// case for the store's writes.
    Scattered,
}

async fn decide(pending: u64, connections: u64, seconds: u64, order: Order) {
    let bench = start(ASK_POLICY).await;
    let mut ids = fill(&bench, pending, true).await;
    // The ids are UUIDv7s: sorted, they are in the order they were made.
    ids.sort_unstable();
    if let Order::Scattered = order {
        ids = (0..64)
            .flat_map(|start| ids.iter().skip(start).step_by(64).cloned())
            .collect();
    }
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
        "decide: {pending} pending, {connections} connections, {seconds} s, {} (stop before the ids run out: each id decided once)",
        match order {
            Order::Oldest => "oldest first",
            Order::Scattered => "scattered",
        }
    );
    let before = bench.writer_stats();
    wrk(
        &bench,
        &lua(&bench.approver, &setup, request, 200),
        "/",
        connections,
        seconds,
    );
    bench.writer_report(before);
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
    let bench = start(ASK_POLICY).await;
    let bases = vec![bench.base.clone()];
    let before = bench.writer_stats();
    run_cycle(bases, &bench.agent, &bench.approver, connections, seconds).await;
    bench.writer_report(before);
}

/// The cycle in two requests: each agent asks and waits in one
/// (`POST /v1/approvals?wait=30s`); the approver follows `/v1/events` and
/// decides each approval it sees asked for.
async fn ask_wait(connections: u64, seconds: u64) {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;

    let bench = start(ASK_POLICY).await;
    let base = bench.base.clone();
    let client = client();
    let before = bench.writer_stats();
    let events = client
        .get(format!("{base}/v1/events"))
        .bearer_auth(&bench.approver)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let approver = {
        let (approver, base) = (Approver::new(&client, &bench.approver), base.clone());
        tokio::spawn(async move {
            let mut events = events.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let event = event.unwrap();
                if event.event != "approval_requested" {
                    continue;
                }
                let entry: Value = serde_json::from_str(&event.data).unwrap();
                let id = entry["event"]["approval_id"].as_str().unwrap();
                approver.approve(&base, id).await;
            }
        })
    };
    let started = Instant::now();
    let agent = bench.agent.clone();
    let mut times = time_agents(connections, seconds, move |i, n| {
        let (client, agent, base) = (client.clone(), agent.clone(), base.clone());
        async move {
            let decided = ask_as(&client, &base, &agent, i, n, "?wait=30s").await;
            assert_eq!(decided["status"], "approved", "{decided}");
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    approver.abort();
    report_cycles("ask-wait", connections, 1, &mut times, elapsed, 2);
    bench.writer_report(before);
}

/// Agent `i`'s `n`th ask (`POST /v1/approvals{query}`) on the server at
/// `base`, with the `agent` token; the approval as answered.
async fn ask_as(
    client: &reqwest::Client,
    base: &str,
    agent: &str,
    i: u64,
    n: u64,
    query: &str,
) -> Value {
    client
        .post(format!("{base}/v1/approvals{query}"))
        .bearer_auth(agent)
        .json(&json!({"tool": "send_email", "args": args(i * 1_000_000 + n)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The bench's HTTP client.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap()
}

/// Approves approvals over HTTP as soon as it is told of them, at most
/// 64 at a time.
#[derive(Clone)]
struct Approver {
    client: reqwest::Client,
    token: String,
    limit: Arc<tokio::sync::Semaphore>,
}

impl Approver {
    fn new(client: &reqwest::Client, token: &str) -> Approver {
        Approver {
            client: client.clone(),
            token: token.to_owned(),
            limit: Arc::new(tokio::sync::Semaphore::new(64)),
        }
    }

    /// Starts approving approval `id` on the server at `base`, once fewer
    /// than 64 decisions are in flight.
    async fn approve(&self, base: &str, id: &str) {
        let permit = Arc::clone(&self.limit).acquire_owned().await.unwrap();
        let request = self
            .client
            .post(format!("{base}/v1/approvals/{id}/decision"))
            .bearer_auth(&self.token)
            .json(&json!({"decision": "approve"}));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            drop(permit);
        });
    }
}

/// Runs `connections` agents for `seconds`: agent `i` does
/// `cycle(i, n)` for n = 0, 1, … until the time is up. The time each
/// cycle took.
async fn time_agents<C, F>(connections: u64, seconds: u64, cycle: C) -> Vec<Duration>
where
    C: Fn(u64, u64) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut agents = Vec::new();
    for i in 0..connections {
        let cycle = cycle.clone();
        agents.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                cycle(i, n).await;
                times.push(t.elapsed());
                n += 1;
            }
            times
        }));
    }
    let mut times = Vec::new();
    for agent in agents {
        times.extend(agent.await.unwrap());
    }
    times
}

/// Prints the cycles per second and the percentiles of their times.
fn report_cycles(
    mode: &str,
    connections: u64,
    servers: usize,
    times: &mut [Duration],
    elapsed: f64,
    requests: u32,
) {
    times.sort();
    println!(
        "{mode}: {connections} agents, {servers} server(s), {} cycles in {elapsed:.1} s = {:.0} cycles/s ({requests} HTTP requests each)",
        times.len(),
        times.len() as f64 / elapsed
    );
    println!(
        "  cycle time p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms",
        percentile(times, 0.5).as_secs_f64() * 1000.0,
        percentile(times, 0.9).as_secs_f64() * 1000.0,
        percentile(times, 0.99).as_secs_f64() * 1000.0
    );
}

/// Agents asking about calls that wait and long-polling for the decision,
/// which an approver task makes over HTTP as soon as each is asked for:
/// agent `i` uses server `i` (of `bases`, in turn), and its approval is
/// decided on the next one. Prints the cycles per second and percentiles.
async fn run_cycle(
    bases: Vec<String>,
    agent: &str,
    approver: &str,
    connections: u64,
    seconds: u64,
) {
    let bases = Arc::new(bases);
    let client = client();
    let (ids, mut to_decide) = tokio::sync::mpsc::unbounded_channel::<(String, usize)>();
    // The approver: decides each approval as soon as it is asked for.
    let approver = {
        let (bases, approver) = (Arc::clone(&bases), Approver::new(&client, approver));
        tokio::spawn(async move {
            while let Some((id, server)) = to_decide.recv().await {
                let base = &bases[(server + 1) % bases.len()];
                approver.approve(base, &id).await;
            }
        })
    };
    let started = Instant::now();
    let agent = agent.to_owned();
    let servers = bases.len();
    let mut times = time_agents(connections, seconds, move |i, n| {
        let (bases, client, ids, agent) = (
            Arc::clone(&bases),
            client.clone(),
            ids.clone(),
            agent.clone(),
        );
        async move {
            let server = i as usize % bases.len();
            let base = &bases[server];
            let created = ask_as(&client, base, &agent, i, n, "").await;
            let id = created["id"].as_str().unwrap().to_owned();
            ids.send((id.clone(), server)).unwrap();
            let decided: Value = client
                .get(format!("{base}/v1/approvals/{id}?wait=30s"))
                .bearer_auth(&agent)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(decided["status"], "approved");
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    approver.await.unwrap();
    report_cycles("cycle", connections, servers, &mut times, elapsed, 3);
}

/// The `toolgate` binary that `servers` runs.
fn toolgate_bin() -> std::path::PathBuf {
    let bin = match std::env::var_os("TOOLGATE_BIN") {
        Some(bin) => std::path::PathBuf::from(bin),
        // target/release/deps/http-… → target/release/toolgate
        None => std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("toolgate"),
    };
    if !bin.exists() {
        eprintln!(
            "{} does not exist: build it with `cargo build --release -p toolgate-cli`, or name \
             one with TOOLGATE_BIN",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

/// `toolgate serve` processes, killed when dropped.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn servers(count: u64, connections: u64, seconds: u64) {
    let bin = toolgate_bin();
    let bench = start_with(None).await;
    let config = bench._dir.path().join("toolgate.toml");
    std::fs::write(&config, ASK_POLICY).unwrap();
    let db = match std::env::var("TOOLGATE_BENCH_POSTGRES") {
        Ok(url) => url,
        Err(_) => bench._dir.path().join("toolgate.db").display().to_string(),
    };
    let client = reqwest::Client::new();
    let mut children = Servers(Vec::new());
    let mut bases = Vec::new();
    for _ in 0..count {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                &db,
            ])
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", bin.display()));
        children.0.push(child);
        let base = format!("http://127.0.0.1:{port}");
        let ready = Instant::now();
        while !client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                ready.elapsed() < Duration::from_secs(30),
                "{} serve on port {port} did not become ready",
                bin.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bases.push(base);
    }
    run_cycle(bases, &bench.agent, &bench.approver, connections, seconds).await;
    drop(children);
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
    fill(&bench, n, false).await;
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
            Some("decide") => {
                let order = match args.get(4).map(String::as_str) {
                    None | Some("oldest") => Order::Oldest,
                    Some("scattered") => Order::Scattered,
                    Some(other) => {
                        eprintln!("unknown order {other:?}: use oldest or scattered");
                        std::process::exit(2);
                    }
                };
                decide(number(1, 200_000), number(2, 64), number(3, 10), order).await
            }
            Some("ask") => ask(number(1, 64), number(2, 10)).await,
            Some("cycle") => cycle(number(1, 64), number(2, 10)).await,
            Some("ask-wait") => ask_wait(number(1, 64), number(2, 10)).await,
            Some("servers") => servers(number(1, 2), number(2, 64), number(3, 10)).await,
            Some("pending") => pending(number(1, 1_000_000)).await,
            other => {
                eprintln!(
                    "unknown mode {other:?}: use decide, ask, cycle, ask-wait, servers or pending"
                );
                std::process::exit(2);
            }
        }
    });
}

//! The engine's approval cycle on SQLite at full durability: model turn →
//! approval pending (durably stored) → approve → tool runs → final answer,
//! with the scripted model and the seed's `count_emails` tool.
//!
//! Run with `cargo bench -p toolgate-engine --bench cycle -- [MODE]`, MODE
//! being one of:
//!
//! - `sequential [N]`: N cycles one after the other (default 2000); prints
//!   the latency percentiles and the commits per cycle.
//! - `concurrent [TASKS] [SECONDS] [DECIDER]`: TASKS runs at once (default
//!   256) for SECONDS (default 10); prints cycles per second.
//! - `pending [N]`: fills a store with N pending approvals (default
//!   100000), then times listing the newest 50 and reports disk and memory.
//! - `fsync`: what one durable commit of one row costs on this disk.
//!
//! DECIDER (for `sequential` too, after N) is who approves: `agent` (the
//! default), an approver in the agent's process, as at the command line's
//! terminal ([`Agent::decide`], which starts from the run the agent kept);
//! or `store`, an approver elsewhere, who has only the store ([`decide`],
//! which reads the run's log).
//!
//! The store lives in a temporary folder under `TOOLGATE_BENCH_DIR` (default
//! the system's temporary folder): put it on the disk you want to measure.
//! `TOOLGATE_BENCH_DEAD_GRANTS=N` first fills it with N used-up grants for
//! the tool, and `TOOLGATE_BENCH_RUN_GRANTS=N` with N live grants each for
//! a run of its own (as a store that has been in use a long time has), and
//! times what a gate reads of them (see `old_grants`).

/// The allocator of the `toolgate` binary, which runs the engine for the
/// command line and the server (its `main.rs` says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use toolgate_core::grant::{Grant, GrantScope};
use toolgate_core::policy::Policy;
use toolgate_core::run::ApprovalStatus;
use toolgate_core::run::Event;
use toolgate_core::store::{Append, ApprovalQuery, GrantQuery, RunRow, Store};
use toolgate_core::{
    ChatModel, Message, Principal, Role, Tool, ToolError, ToolHints, ToolSpec, Tools,
};
use toolgate_engine::{Agent, DecisionRequest, RunOutcome, Step, decide};
use toolgate_models::scripted::ScriptedModel;
use toolgate_store::SqliteStore;

const SEED_SCRIPT: &str = include_str!("../../toolgate/seed/script.json");
const PROMPT: &str = "how many emails did i get in the last 5 days?";
/// `count_emails` says it is read-only; this policy asks about it anyway,
/// so that every cycle has an approval.
const POLICY: &str = "[[policy.rules]]\ntool = \"count_emails\"\naction = \"ask\"\n";

/// The seed's `count_emails`.
struct CountEmails(ToolSpec);

#[async_trait]
impl Tool for CountEmails {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }

    async fn call(&self, args: Map<String, Value>) -> Result<Value, ToolError> {
        let days = args.get("last_n_days").and_then(Value::as_i64).unwrap_or(0);
        Ok(json!(days * 2))
    }
}

fn tools() -> Tools {
    let spec = ToolSpec::new(
        "count_emails",
        "Dummy function to count number of e-mails. Returns 2 * last_n_days.",
        json!({
            "type": "object",
            "properties": {"last_n_days": {"type": "integer", "format": "int64"}},
            "required": ["last_n_days"],
            "additionalProperties": false
        }),
    )
    .hints(ToolHints {
        read_only: Some(true),
        idempotent: Some(true),
        ..ToolHints::default()
    });
    Tools::new([Arc::new(CountEmails(spec)) as Arc<dyn Tool>]).unwrap()
}

struct Bench {
    store: Arc<dyn Store>,
    sqlite: Arc<SqliteStore>,
    agent: Agent,
    commits: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

fn bench() -> Bench {
    let dir = match std::env::var_os("TOOLGATE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let sqlite = Arc::new(SqliteStore::open(dir.path().join("toolgate.db")).unwrap());
    let store: Arc<dyn Store> = Arc::clone(&sqlite) as Arc<dyn Store>;
    let model = ScriptedModel::from_json(SEED_SCRIPT, "the seed script").unwrap();
    let commits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&commits);
    let agent = Agent::new(Arc::new(model) as Arc<dyn ChatModel>, tools())
        .policy(Policy::from_toml_str(POLICY, "bench policy").unwrap())
        .store(Arc::clone(&store))
        .observe(Arc::new(move |step: &Step<'_>| {
            if matches!(step, Step::Committed(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    Bench {
        store,
        sqlite,
        agent,
        commits,
        _dir: dir,
    }
}

/// Who approves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decider {
    /// An approver in the agent's process: [`Agent::decide`].
    Agent,
    /// An approver with the store only: [`decide`].
    Store,
}

impl Decider {
    fn parse(arg: Option<&String>) -> Decider {
        match arg.map(String::as_str) {
            None | Some("agent") => Decider::Agent,
            Some("store") => Decider::Store,
            Some(other) => {
                eprintln!("unknown decider `{other}`: use agent or store");
                std::process::exit(2);
            }
        }
    }
}

/// One full cycle.
async fn cycle(bench: &Bench, approver: &Principal, decider: Decider) {
    let outcome = bench.agent.run(PROMPT).await.unwrap();
    let RunOutcome::Waiting {
        run_id, approvals, ..
    } = outcome
    else {
        panic!("the run should wait for approval: {outcome:?}");
    };
    let approval = &approvals[0];
    let decided = match decider {
        Decider::Agent => {
            bench
                .agent
                .decide(
                    approver,
                    &run_id,
                    &approval.id,
                    &approval.fingerprint,
                    DecisionRequest::Approve,
                    None,
                    now(),
                )
                .await
        }
        Decider::Store => {
            decide(
                bench.store.as_ref(),
                approver,
                &approval.id,
                &approval.fingerprint,
                DecisionRequest::Approve,
                None,
                now(),
            )
            .await
        }
    };
    assert_eq!(decided.unwrap().status, ApprovalStatus::Approved);
    match bench.agent.resume(&run_id).await.unwrap() {
        RunOutcome::Completed { .. } => {}
        other => panic!("the run should complete: {other:?}"),
    }
}

fn now() -> i64 {
    toolgate_core::time::to_millis(std::time::SystemTime::now())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Fills the store with the grants a store that has been in use a long
/// time has, if asked, and times what a gate reads of them:
///
/// - `TOOLGATE_BENCH_DEAD_GRANTS=N`: N used-up grants for the bench's
///   tool; times reading all grants (what a gate read before it read only
///   the live ones, `GrantQuery::live`) and the live ones.
/// - `TOOLGATE_BENCH_RUN_GRANTS=N`: N live grants, each for a run of its
///   own ("approve for this run"), which stay live until revoked; times
///   reading the live ones (what a gate read before it read only those
///   reaching its run, `GrantQuery::reaching`) and those reaching a run.
async fn old_grants(bench: &Bench) {
    let count = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
    };
    if let Some(n) = count("TOOLGATE_BENCH_DEAD_GRANTS") {
        let filled = fill_grants(bench, n, "dead", |_| {
            (Some(0), GrantScope::Uses { uses: 1 })
        })
        .await;
        let now = now();
        let (all, read_all) = timed_grants(bench, &GrantQuery::all()).await;
        let (live, read_live) = timed_grants(bench, &GrantQuery::live(now)).await;
        println!(
            "dead grants: {n} made in {:.1} s; reading all {all}: {}, the live ones ({live}): {}",
            filled.as_secs_f64(),
            ms(read_all),
            ms(read_live)
        );
    }
    if let Some(n) = count("TOOLGATE_BENCH_RUN_GRANTS") {
        let filled = fill_grants(bench, n, "run", |i| {
            let run_id = format!("granted-run-{i}");
            (None, GrantScope::Run { run_id })
        })
        .await;
        let now = now();
        let (live, read_live) = timed_grants(bench, &GrantQuery::live(now)).await;
        let reaching = GrantQuery::live(now).reaching(Some("granted-run-7"), None);
        let (reached, read_reached) = timed_grants(bench, &reaching).await;
        println!(
            "run grants: {n} made in {:.1} s; reading the live ones ({live}): {}, those \
             reaching one run ({reached}): {}",
            filled.as_secs_f64(),
            ms(read_live),
            ms(read_reached)
        );
    }
}

/// Makes `n` grants for the bench's tool, `kind-0` to `kind-(n-1)`, with
/// the uses left and scope `shape` gives each; how long it took.
async fn fill_grants(
    bench: &Bench,
    n: usize,
    kind: &str,
    shape: impl Fn(usize) -> (Option<u32>, GrantScope),
) -> Duration {
    let started = Instant::now();
    for (batch, ids) in (0..n).collect::<Vec<_>>().chunks(1000).enumerate() {
        let run_id = format!("{kind}-grants-{batch}");
        let run = RunRow {
            id: run_id.clone(),
            status: "completed".to_owned(),
            thread: None,
            prompt: "grants".to_owned(),
            created_at: 1,
            updated_at: 1,
            version: 1,
        };
        let grants = ids
            .iter()
            .map(|&i| {
                let (uses_left, scope) = shape(i);
                Grant {
                    id: format!("{kind}-{i}"),
                    tool: "count_emails".to_owned(),
                    when: None,
                    uses_left,
                    scope,
                    created_by: "alice".to_owned(),
                    created_at: 1 + i as i64,
                    approval_id: None,
                    revoked: None,
                }
            })
            .collect();
        let events = vec![Event::RunStarted {
            messages: vec![Message::human("grants")],
            thread: None,
            principal: Some("alice".to_owned()),
        }];
        let append = Append {
            run_id,
            expected_version: 0,
            events,
            run,
            approvals: Vec::new(),
            grants,
            lease: None,
        };
        bench.store.append(append).await.unwrap();
    }
    started.elapsed()
}

/// How many grants `query` gives, and how long reading them took.
async fn timed_grants(bench: &Bench, query: &GrantQuery) -> (usize, Duration) {
    let t = Instant::now();
    let n = bench.store.grants(query).await.unwrap().len();
    (n, t.elapsed())
}

async fn sequential(n: usize, decider: Decider) {
    let bench = bench();
    old_grants(&bench).await;
    let approver = Principal::new("alice", Role::Approver);
    for _ in 0..50 {
        cycle(&bench, &approver, decider).await;
    }
    bench.commits.store(0, Ordering::Relaxed);
    let mut times = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        cycle(&bench, &approver, decider).await;
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    // The decision is one commit the observer does not see.
    let commits = bench.commits.load(Ordering::Relaxed) as f64 / n as f64 + 1.0;
    println!(
        "sequential: {n} cycles in {:.2} s, decided by the {decider:?}",
        total.as_secs_f64()
    );
    println!(
        "  latency p50 {}  p90 {}  p99 {}  max {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap())
    );
    println!("  durable commits per cycle: {commits:.1}");
}

async fn concurrent(tasks: usize, seconds: u64, decider: Decider) {
    let bench = Arc::new(bench());
    old_grants(&bench).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..tasks {
        let bench = Arc::clone(&bench);
        let done = Arc::clone(&done);
        handles.push(tokio::spawn(async move {
            let approver = Principal::new(format!("approver-{i}"), Role::Approver);
            while Instant::now() < deadline {
                cycle(&bench, &approver, decider).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cycles = done.load(Ordering::Relaxed);
    let stats = bench.sqlite.writer_stats();
    println!(
        "  group commit: {} writes in {} transactions ({:.1} per commit, at most {})",
        stats.requests,
        stats.transactions,
        stats.requests as f64 / stats.transactions.max(1) as f64,
        stats.largest_batch
    );
    println!(
        "concurrent: {tasks} runs at once, decided by the {decider:?}, {cycles} cycles in {elapsed:.2} s = {:.0} cycles/s ({:.0} commits/s)",
        cycles as f64 / elapsed,
        (bench.commits.load(Ordering::Relaxed) + cycles) as f64 / elapsed
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn pending(n: usize) {
    let bench = Arc::new(bench());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..256 {
        let bench = Arc::clone(&bench);
        let next = Arc::clone(&next);
        handles.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let outcome = bench.agent.run(PROMPT).await.unwrap();
                assert!(matches!(outcome, RunOutcome::Waiting { .. }));
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    println!(
        "pending: {n} pending approvals made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let query = ApprovalQuery {
        statuses: vec![ApprovalStatus::Pending],
        limit: 50,
        ..ApprovalQuery::default()
    };
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let page = bench.store.approvals(&query).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(page.len(), 50);
    }
    times.sort();
    println!(
        "  newest 50 pending: p50 {}  p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    let dir = bench._dir.path();
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let (db, wal) = (size("toolgate.db"), size("toolgate.db-wal"));
    println!(
        "  disk: database {:.1} MiB = {:.0} bytes per pending approval; WAL {:.1} MiB (reused, not grown, after checkpoints)",
        db as f64 / 1048576.0,
        db as f64 / n as f64,
        wal as f64 / 1048576.0,
    );
    println!("  memory: {} MiB resident", rss_kib() / 1024);
    if std::env::var_os("TOOLGATE_BENCH_KEEP").is_some() {
        println!("  kept: {}", dir.display());
        std::mem::forget(Arc::try_unwrap(bench).ok().map(|b| b._dir.keep()));
    }
}

async fn fsync() {
    let bench = bench();
    // One run's log: a single one-row append per iteration.
    let run_id = bench
        .agent
        .create(PROMPT, Default::default())
        .await
        .unwrap();
    let _ = run_id;
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        bench
            .agent
            .create(PROMPT, Default::default())
            .await
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "fsync: one durable one-event commit: p50 {}  p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("sequential") => sequential(number(1, 2000), Decider::parse(args.get(2))).await,
            Some("concurrent") => {
                concurrent(
                    number(1, 256),
                    number(2, 10) as u64,
                    Decider::parse(args.get(3)),
                )
                .await
            }
            Some("pending") => pending(number(1, 100_000)).await,
            Some("fsync") => fsync().await,
            None => {
                fsync().await;
                sequential(2000, Decider::Agent).await;
                concurrent(256, 10, Decider::Agent).await;
            }
            Some(other) => {
                eprintln!("unknown mode `{other}`: use sequential, concurrent, pending or fsync");
                std::process::exit(2);
            }
        }
    });
}

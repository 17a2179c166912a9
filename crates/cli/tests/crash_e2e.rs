//! The built `toolgate` killed with SIGKILL at random moments while it runs
//! and resumes the seed's send_email request, again and again; between
//! kills a person approves and resolves through the store, as another
//! process would. `send_email` is not idempotent: its call is never started
//! twice, a start without a finish is always left in doubt for a person,
//! every acknowledged decision stays in the log, and the audit log verifies.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use toolgate::engine::{DecisionRequest, decide, resolve_in_doubt};
use toolgate::run::{Event, Resolution, RunState};
use toolgate::store::{RunQuery, Store};
use toolgate::{Principal, Role, SqliteStore};

const SEND: &str = "Send sally@gmail.com an email saying 'What's up homie'";

/// Runs `toolgate ARGS` on the store in `dir`, killed after `kill_after`
/// when it has not exited by then; true when it was killed.
fn toolgate(dir: &Path, args: &[&str], kill_after: Duration) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../toolgate/seed/script.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .env_clear()
        .env("TOOLGATE_MODEL", format!("scripted:{script}"))
        .arg("--db")
        .arg(dir.join("toolgate.db"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < kill_after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let killed = child.kill().is_ok();
    let _ = child.wait();
    killed
}

#[test]
fn killed_at_random_moments_the_real_binary_never_sends_twice() {
    let seed: u64 = std::env::var("TOOLGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("TOOLGATE_CRASH_SEED={seed}");
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64: reproducible from the seed printed above.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let alice = Principal::new("alice", Role::Approver);
    let mut kills_in_doubt = 0;
    let mut kills = 0;
    let runs = 40;
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut acknowledged = 0;
        let mut finished = false;
        for attempt in 0..40 {
            // Most processes get 0 to 12 ms (a whole run takes a few ms
            // more than that), which kills them somewhere along the way;
            // every fifth one gets all the time it needs.
            let limit = if next() % 5 == 0 {
                Duration::from_secs(30)
            } else {
                Duration::from_micros(next() % 12_000)
            };
            let store_file = dir.path().join("toolgate.db");
            let run_id = if store_file.exists() {
                let store = SqliteStore::open(&store_file).unwrap();
                runtime
                    .block_on(store.runs(&RunQuery::default()))
                    .unwrap()
                    .first()
                    .map(|run| run.id.clone())
            } else {
                None
            };
            let Some(run_id) = run_id else {
                kills += usize::from(toolgate(dir.path(), &["run", "--detach", SEND], limit));
                continue;
            };
            // What a person does between the processes, through the store.
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&store_file).unwrap());
            let done = runtime.block_on(async {
                let events = store.load(&run_id).await.unwrap();
                let starts = events
                    .iter()
                    .filter(|e| matches!(&e.event, Event::ToolStarted { call_id, .. } if call_id == "toolu_014XccHFzBiVcc9GV1harV9U"))
                    .count();
                assert!(starts <= 1, "send_email was started {starts} times");
                let decided = events
                    .iter()
                    .filter(|e| matches!(e.event, Event::DecisionRecorded { .. }))
                    .count();
                assert_eq!(decided, acknowledged, "an acknowledged decision was lost");
                let state = RunState::fold(events.iter().map(|e| &e.event));
                if state.status.is_finished() {
                    return true;
                }
                for approval in state.pending_approvals() {
                    decide(store.as_ref(), &alice, &approval.id, &approval.fingerprint, DecisionRequest::Approve, None, 0)
                        .await
                        .unwrap();
                    acknowledged += 1;
                }
                for call in state.in_doubt() {
                    kills_in_doubt += 1;
                    resolve_in_doubt(store.as_ref(), &alice, &run_id, &call.call.id, Resolution::Done { output: json!("checked by hand") }, 0)
                        .await
                        .unwrap();
                }
                false
            });
            drop(store);
            if done {
                finished = true;
                break;
            }
            assert!(attempt < 39, "the run did not finish after 40 processes");
            kills += usize::from(toolgate(
                dir.path(),
                &["runs", "resume", "--detach", &run_id],
                limit,
            ));
        }
        assert!(finished);
        let verify = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .env_clear()
            .arg("--db")
            .arg(dir.path().join("toolgate.db"))
            .args(["audit", "verify"])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    }
    // Not asserted (a kill between a tool's start and its finish is rare
    // with a tool this fast), but worth seeing when it happens.
    eprintln!("{kills} kills over {runs} runs; calls left in doubt by a kill: {kills_in_doubt}");
    assert!(kills >= runs, "too few kills to mean anything: {kills}");
}

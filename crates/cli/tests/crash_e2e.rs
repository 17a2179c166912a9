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
/// when it has not exited by then: how long it ran when it exited by
/// itself, `None` when it was killed. What it did is added to `history`,
/// which a failure prints.
fn toolgate(
    dir: &Path,
    args: &[&str],
    kill_after: Duration,
    history: &mut Vec<String>,
) -> Option<Duration> {
    let stderr_file = dir.join("stderr");
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
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut exited = None;
    while started.elapsed() < kill_after {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let killed = exited.is_none() && child.kill().is_ok();
    let status = child.wait().unwrap();
    let ran = started.elapsed();
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    history.push(format!(
        "toolgate {} (limit {kill_after:?}): {} after {ran:?}\n{}",
        args.join(" "),
        if killed {
            "killed".to_owned()
        } else {
            status.to_string()
        },
        stderr.trim_end()
    ));
    (!killed).then_some(ran)
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
    let runs = 60;
    // Kills land anywhere in a process's life: from its start to a quarter
    // more than the median time processes took to exit by themselves so
    // far (a slow one, on a busy machine, does not widen it for good).
    let mut lives = vec![Duration::from_millis(12)];
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut acknowledged = 0;
        let mut finished = false;
        let mut history = Vec::new();
        let mut killed_in_a_row = 0;
        for attempt in 0..40 {
            // Most processes are killed somewhere along the way; about one
            // in eight, and always the one after seven kills in a row, gets
            // all the time it needs, so that the run gets on (it needs at
            // most four processes that are not killed).
            let limit = if killed_in_a_row >= 7 || next() % 8 == 0 {
                Duration::from_secs(30)
            } else {
                lives.sort();
                let window = lives[lives.len() / 2] * 5 / 4;
                Duration::from_micros(next() % u64::try_from(window.as_micros()).unwrap())
            };
            let mut process = |history: &mut Vec<String>, args: &[&str]| match toolgate(
                dir.path(),
                args,
                limit,
                history,
            ) {
                Some(ran) => {
                    lives.push(ran);
                    killed_in_a_row = 0;
                    0
                }
                None => {
                    killed_in_a_row += 1;
                    1
                }
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
                kills += process(&mut history, &["run", "--detach", SEND]);
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
            assert!(
                attempt < 39,
                "the run did not finish after 40 processes:\n{}",
                history.join("\n")
            );
            kills += process(&mut history, &["runs", "resume", "--detach", &run_id]);
        }
        assert!(
            finished,
            "no run was started after 40 processes:\n{}",
            history.join("\n")
        );
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
    assert!(kills >= 2 * runs, "too few kills to mean anything: {kills}");
}

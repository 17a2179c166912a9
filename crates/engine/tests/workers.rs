//! Leases and workers: one process drives a run at a time, and workers
//! take runs that are ready (decided elsewhere, or left by a process that
//! died) and drive them to the end.

#[allow(dead_code)] // The helpers serve every test binary; this one uses a few.
mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{kit, model, store};
use serde_json::json;
use toolgate_core::store::{Lease, Store};
use toolgate_core::{ChatModel, Principal, Role};
use toolgate_engine::{
    Agent, DecisionRequest, EngineError, RunOutcome, Step, decide, system_clock,
};

fn now() -> i64 {
    (system_clock())()
}

async fn approve_all(store: &dyn Store, outcome: &RunOutcome) {
    let RunOutcome::Waiting { approvals, .. } = outcome else {
        panic!("the run should wait: {outcome:?}");
    };
    for approval in approvals {
        decide(
            store,
            &Principal::new("alice", Role::Approver),
            &approval.id,
            &approval.fingerprint,
            DecisionRequest::Approve,
            None,
            now(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_held_by_one_process_is_refused_to_another() {
    let (store, _dir) = store();
    let kit = kit();
    let model: Arc<dyn ChatModel> = Arc::new(model("send it", &[("c1", "send", json!({}))]));
    let first = Agent::new(Arc::clone(&model), kit.tools.clone())
        .store(Arc::clone(&store))
        .lease("process-1", Duration::from_secs(30));
    let second = Agent::new(Arc::clone(&model), kit.tools.clone())
        .store(Arc::clone(&store))
        .lease("process-2", Duration::from_secs(30));
    let outcome = first.run("send it").await.unwrap();
    let run_id = outcome.run_id().to_owned();
    // Suspended: the lease was given up, so the other may take it.
    assert!(matches!(
        second.resume(&run_id).await.unwrap(),
        RunOutcome::Waiting { .. }
    ));

    // While another process holds it, it is refused, naming the holder.
    assert_eq!(
        store
            .lease_run(&run_id, "process-3", now() + 60_000, now())
            .await
            .unwrap(),
        Lease::Held
    );
    approve_all(store.as_ref(), &outcome).await;
    match second.resume(&run_id).await {
        Err(EngineError::Busy { owner, .. }) => assert_eq!(owner, "process-3"),
        other => panic!("the run is held by process-3: {other:?}"),
    }
    assert_eq!(kit.send.load(Ordering::SeqCst), 0, "nothing ran");
    store.release_run(&run_id, "process-3").await.unwrap();
    assert!(matches!(
        second.resume(&run_id).await.unwrap(),
        RunOutcome::Completed { .. }
    ));
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_decided_runs_and_runs_left_by_a_dead_process() {
    let (store, _dir) = store();
    let kit = kit();
    let model: Arc<dyn ChatModel> = Arc::new(model("send it", &[("c1", "send", json!({}))]));
    let asker = Agent::new(Arc::clone(&model), kit.tools.clone()).store(Arc::clone(&store));
    let decided = asker.run("send it").await.unwrap();
    let left = asker.run("send it").await.unwrap();
    approve_all(store.as_ref(), &decided).await;
    approve_all(store.as_ref(), &left).await;
    // A process that died holding `left`: its lease lapses in 300 ms.
    store
        .lease_run(left.run_id(), "dead-process", now() + 300, now())
        .await
        .unwrap();

    let drove = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&drove);
    let worker = Agent::new(Arc::clone(&model), kit.tools.clone())
        .store(Arc::clone(&store))
        .lease("worker-1", Duration::from_secs(10))
        .poll_interval(Duration::from_millis(20))
        .observe(Arc::new(move |step: &Step<'_>| {
            if let Step::Drove(run_id, outcome) = step {
                let completed = matches!(outcome, Ok(RunOutcome::Completed { .. }));
                seen.lock().unwrap().push((run_id.to_string(), completed));
            }
        }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(async move {
        worker
            .work(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        while drove.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker drives both runs");
    let _ = stop.send(());
    working.await.unwrap().unwrap();
    let drove = drove.lock().unwrap().clone();
    assert_eq!(
        drove,
        [
            (decided.run_id().to_owned(), true),
            (left.run_id().to_owned(), true)
        ],
        "the decided run first; the dead process's once its lease lapsed"
    );
    assert_eq!(kit.send.load(Ordering::SeqCst), 2, "each call ran once");
    // Nothing is left to claim: finished runs are not `running`.
    assert_eq!(
        store
            .claim_ready_runs("worker-2", now() + 1000, now(), 10)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_worker_needs_a_lease() {
    let (store, _dir) = store();
    let kit = kit();
    let model: Arc<dyn ChatModel> = Arc::new(model("x", &[]));
    let agent = Agent::new(model, kit.tools).store(store);
    let error = agent.work(std::future::pending()).await.unwrap_err();
    assert!(matches!(error, EngineError::NoLease), "{error}");
    assert!(error.to_string().contains(".lease("), "{error}");
}

//! The engine end to end over a real SQLite store: policy, approvals,
//! decisions, grants, expiry, suspend and resume, at most once.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{kit, manual_clock, model, store};
use serde_json::json;
use toolgate_core::grant::{GrantRequest, GrantScope};
use toolgate_core::policy::Policy;
use toolgate_core::run::{ApprovalStatus, DecisionError, Event, Resolution, RunState};
use toolgate_core::store::{ApprovalQuery, GrantQuery};
use toolgate_core::{Principal, Role};
use toolgate_engine::{
    Agent, DecideError, DecisionRequest, RunOutcome, Wait, decide, resolve_in_doubt,
};

const NOW: i64 = 1_800_000_000_000;

fn alice() -> Principal {
    Principal::new("alice", Role::Approver).groups(["ops"])
}

fn bob() -> Principal {
    Principal::new("bob", Role::Approver).groups(["ops"])
}

fn policy(text: &str) -> Policy {
    Policy::from_toml_str(text, "toolgate.toml").unwrap()
}

/// `principal` approves `approval` as it was shown.
async fn approve(
    store: &dyn toolgate_core::store::Store,
    principal: &Principal,
    approval: &toolgate_core::store::ApprovalRow,
) -> Result<toolgate_core::store::ApprovalRow, DecideError> {
    decide(
        store,
        principal,
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Approve,
        None,
        NOW,
    )
    .await
}

/// `principal` approves approval `approval_id` of run `run_id`, on the
/// fingerprint `approval` showed, through `agent` (in its process).
async fn approve_in(
    agent: &Agent,
    principal: &Principal,
    run_id: &str,
    approval_id: &str,
    approval: &toolgate_core::store::ApprovalRow,
) -> Result<toolgate_core::store::ApprovalRow, DecideError> {
    agent
        .decide(
            principal,
            run_id,
            approval_id,
            &approval.fingerprint,
            DecisionRequest::Approve,
            None,
            NOW,
        )
        .await
}

fn waiting(outcome: &RunOutcome) -> &[toolgate_core::store::ApprovalRow] {
    match outcome {
        RunOutcome::Waiting { approvals, .. } => approvals,
        other => panic!("expected the run to wait, got {other:?}"),
    }
}

fn answer(outcome: &RunOutcome) -> &str {
    match outcome {
        RunOutcome::Completed { answer, .. } => answer,
        other => panic!("expected the run to complete, got {other:?}"),
    }
}

#[tokio::test]
async fn read_only_tools_run_without_asking() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("look it up", &[("c1", "lookup", json!({"n": 1}))]);
    let (clock, _) = manual_clock(NOW);
    let agent = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .clock(clock);
    let outcome = agent.run("look it up").await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.lookup.load(Ordering::SeqCst), 1);
    assert_eq!(model.last_tool_result(), ("lookup ran".to_owned(), false));
    let runs = store.runs(&Default::default()).await.unwrap();
    assert_eq!(runs[0].status, "completed");
    assert_eq!(runs[0].prompt, "look it up");
}

#[tokio::test]
async fn a_destructive_call_suspends_and_runs_once_after_approval() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let (clock, _) = manual_clock(NOW);
    let agent = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .clock(clock);
    let outcome = agent.run("send it").await.unwrap();
    let approvals = waiting(&outcome).to_vec();
    assert_eq!(approvals.len(), 1);
    let approval = &approvals[0];
    assert_eq!(
        (approval.tool.as_str(), approval.status),
        ("send", ApprovalStatus::Pending)
    );
    assert_eq!(approval.rule, "default");
    assert_eq!(
        kit.send.load(Ordering::SeqCst),
        0,
        "nothing runs before approval"
    );

    // Listed as pending in the store, as any other process would see it.
    let pending = store
        .approvals(&ApprovalQuery {
            statuses: vec![ApprovalStatus::Pending],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, approval.id);

    // Resuming without a decision changes nothing.
    let again = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(waiting(&again).len(), 1);

    let decided = approve(store.as_ref(), &alice(), approval).await.unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("alice"));

    // A second agent, as in another process, resumes it.
    let other = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = other.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
    // Resuming a finished run runs nothing again.
    let outcome = other.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
    // The first agent kept its fold of the run as it was waiting; the
    // other finished the run since. Its fold is brought up to date first,
    // so it runs nothing either.
    let outcome = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_rejection_goes_back_to_the_model_and_nothing_runs() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    let decided = decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Reject(Some("not to sally, ever".into())),
        None,
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Rejected);
    let outcome = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "could not do it");
    assert_eq!(kit.send.load(Ordering::SeqCst), 0);
    assert_eq!(
        model.last_tool_result(),
        (
            "alice rejected this call: not to sally, ever".to_owned(),
            true
        )
    );
}

#[tokio::test]
async fn an_edit_runs_the_new_arguments_and_the_model_is_told() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();

    // Arguments that fail the schema are refused, and nothing is recorded.
    let bad = json!({"recipient": 42}).as_object().unwrap().clone();
    let error = decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Edit(bad),
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DecideError::InvalidArguments(_)), "{error}");
    assert_eq!(
        error.to_string(),
        "invalid arguments for tool `send`: `recipient`: 42 is not of type \"string\""
    );
    assert_eq!(
        store.approval(&approval.id).await.unwrap().status,
        ApprovalStatus::Pending
    );

    let good = json!({"recipient": "sally@example.com"})
        .as_object()
        .unwrap()
        .clone();
    let decided = decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Edit(good.clone()),
        None,
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Edited);
    assert_eq!(decided.args, good);
    assert_ne!(decided.fingerprint, approval.fingerprint);

    let outcome = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send_args.lock().unwrap().clone(), Some(good));
    assert_eq!(
        model.last_tool_result().0,
        r#"alice edited the arguments of this call before it ran; it ran with {"recipient":"sally@example.com"}. Result: send ran"#
    );
}

#[tokio::test]
async fn decisions_are_bound_to_the_fingerprint_and_the_approvers() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .policy(policy(
        r#"
            [[policy.rules]]
            name = "mail"
            tool = "send"
            action = "ask"
            approvers = ["group:ops"]
            "#,
    ));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    assert_eq!(approval.rule, "mail");
    assert_eq!(approval.approvers, vec!["group:ops"]);

    let other_args = toolgate_core::Fingerprint::of_call(
        "send",
        &json!({"recipient": "eve"}).as_object().unwrap().clone(),
        &json!({}),
    );
    let error = decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &other_args,
        DecisionRequest::Approve,
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            DecideError::Decision(DecisionError::FingerprintMismatch { .. })
        ),
        "{error}"
    );

    let sales = Principal::new("carol", Role::Approver).groups(["sales"]);
    let error = decide(
        store.as_ref(),
        &sales,
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Approve,
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "carol may not decide approval {}: it may be decided by group:ops only",
            approval.id
        )
    );
    let agent_token = Principal::new("bot", Role::Agent).groups(["ops"]);
    let error = decide(
        store.as_ref(),
        &agent_token,
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Approve,
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("agents never decide"), "{error}");
    assert_eq!(
        store.approval(&approval.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(kit.send.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn of_two_racing_deciders_exactly_one_wins() {
    for _ in 0..5 {
        let (store, _dir) = store();
        let kit = kit();
        let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
        let agent = Agent::new(
            Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
            kit.tools.clone(),
        )
        .store(Arc::clone(&store));
        let outcome = agent.run("send it").await.unwrap();
        let approval = waiting(&outcome)[0].clone();
        let (alice, bob) = (alice(), bob());
        let (a, b) = tokio::join!(
            decide(
                store.as_ref(),
                &alice,
                &approval.id,
                &approval.fingerprint,
                DecisionRequest::Approve,
                None,
                NOW
            ),
            decide(
                store.as_ref(),
                &bob,
                &approval.id,
                &approval.fingerprint,
                DecisionRequest::Reject(None),
                None,
                NOW
            ),
        );
        let (winner, loser) = match (a, b) {
            (Ok(row), Err(error)) | (Err(error), Ok(row)) => (row, error),
            other => panic!("exactly one decision must win: {other:?}"),
        };
        match loser {
            DecideError::Decision(DecisionError::AlreadyDecided { status, by, .. }) => {
                assert_eq!(status, winner.status);
                assert_eq!(by, winner.decided_by);
            }
            other => panic!("the loser must see the winning decision: {other}"),
        }
        let decisions = store
            .load(outcome.run_id())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.event, Event::DecisionRecorded { .. }))
            .count();
        assert_eq!(decisions, 1);
    }
}

/// The agent that left `prompt`'s run waiting on one call to `send`.
async fn waiting_send(
    store: &Arc<dyn toolgate_core::store::Store>,
    kit: &common::Kit,
) -> (Agent, RunOutcome) {
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(store));
    let outcome = agent.run("send it").await.unwrap();
    (agent, outcome)
}

#[tokio::test]
async fn an_approver_in_the_agents_process_decides_from_the_run_it_kept() {
    let (store, _dir) = store();
    let kit = kit();
    let (agent, outcome) = waiting_send(&store, &kit).await;
    let approval = waiting(&outcome)[0].clone();
    let decided = approve_in(&agent, &alice(), outcome.run_id(), &approval.id, &approval)
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("alice"));
    // Stored as any decision is: the row, and a signed entry in the log.
    assert_eq!(store.approval(&approval.id).await.unwrap(), decided);
    let log = store.load(outcome.run_id()).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| matches!(e.event, Event::DecisionRecorded { .. }))
            .count(),
        1
    );
    let outcome = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_decision_from_a_kept_run_sees_one_made_elsewhere_first() {
    let (store, _dir) = store();
    let kit = kit();
    let (agent, outcome) = waiting_send(&store, &kit).await;
    let approval = waiting(&outcome)[0].clone();
    decide(
        store.as_ref(),
        &bob(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Reject(Some("not to sally".to_owned())),
        None,
        NOW,
    )
    .await
    .unwrap();
    // The agent's fold of the run still has the approval pending.
    let refused = approve_in(&agent, &alice(), outcome.run_id(), &approval.id, &approval)
        .await
        .unwrap_err();
    match refused {
        DecideError::Decision(DecisionError::AlreadyDecided { status, by, .. }) => {
            assert_eq!(status, ApprovalStatus::Rejected);
            assert_eq!(by.as_deref(), Some("bob"));
        }
        other => panic!("alice must see bob's decision: {other}"),
    }
    let outcome = agent.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "could not do it");
    assert_eq!(kit.send.load(Ordering::SeqCst), 0, "the rejection stands");
}

#[tokio::test]
async fn an_agent_decides_runs_it_did_not_keep_from_the_store() {
    let (store, _dir) = store();
    let kit = kit();
    let (_agent, outcome) = waiting_send(&store, &kit).await;
    let approval = waiting(&outcome)[0].clone();
    // Another agent on the same store, as in another process.
    let (other, _) = waiting_send(&store, &kit).await;
    let decided = approve_in(&other, &alice(), outcome.run_id(), &approval.id, &approval)
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    let missing = approve_in(
        &other,
        &alice(),
        outcome.run_id(),
        "no-such-approval",
        &approval,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&missing, DecideError::NotFound { what: "approval", id } if id == "no-such-approval"),
        "{missing}"
    );
    let outcome = other.resume(outcome.run_id()).await.unwrap();
    assert_eq!(answer(&outcome), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_quorum_needs_distinct_approvers() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .policy(policy(
        "[[policy.rules]]\ntool = \"send\"\naction = \"ask\"\nquorum = 2\n",
    ));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    assert_eq!(approval.quorum, 2);
    let first = approve(store.as_ref(), &alice(), &approval).await.unwrap();
    assert_eq!(first.status, ApprovalStatus::Pending);
    let error = approve(store.as_ref(), &alice(), &approval)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            DecideError::Decision(DecisionError::AlreadyApproved { needed: 1, .. })
        ),
        "{error}"
    );
    assert_eq!(
        waiting(&agent.resume(outcome.run_id()).await.unwrap()).len(),
        1
    );
    assert_eq!(kit.send.load(Ordering::SeqCst), 0);
    let second = approve(store.as_ref(), &bob(), &approval).await.unwrap();
    assert_eq!(second.status, ApprovalStatus::Approved);
    assert_eq!(
        answer(&agent.resume(outcome.run_id()).await.unwrap()),
        "done"
    );
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn denied_and_invalid_calls_never_run_and_the_model_is_told_why() {
    let (store, _dir) = store();
    let kit = kit();
    let denied = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(denied.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .policy(policy(
        "[[policy.rules]]\ntool = \"send\"\naction = \"deny\"\nreason = \"no mail today\"\n",
    ));
    assert_eq!(
        answer(&agent.run("send it").await.unwrap()),
        "could not do it"
    );
    assert_eq!(
        denied.last_tool_result(),
        (
            "toolgate's policy (rule 1) refused this call: no mail today".to_owned(),
            true
        )
    );

    let invalid = model("wipe", &[("c1", "wipe_disk", json!({}))]);
    let agent = Agent::new(
        Arc::new(invalid.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    // The scripted model refuses to call a tool that is not bound, so this
    // conversation fails in the model; check the gate with bad arguments
    // instead.
    assert!(agent.run("wipe").await.is_err());

    let bad_args = model("look", &[("c1", "lookup", json!({"n": "many"}))]);
    let agent = Agent::new(
        Arc::new(bad_args.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    assert_eq!(answer(&agent.run("look").await.unwrap()), "could not do it");
    assert_eq!(
        bad_args.last_tool_result(),
        (
            "invalid arguments for tool `lookup`: `n`: \"many\" is not of type \"integer\""
                .to_owned(),
            true
        )
    );
    assert_eq!(
        kit.send.load(Ordering::SeqCst) + kit.lookup.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn an_approval_nobody_decides_in_time_is_rejected() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let (clock, now) = manual_clock(NOW);
    let agent = Agent::new(
        Arc::new(model.clone()) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .clock(clock)
    .policy(policy(
        "[[policy.rules]]\ntool = \"send\"\naction = \"ask\"\ntimeout = \"30m\"\n",
    ));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    assert_eq!(approval.expires_at, Some(NOW + 30 * 60 * 1000));
    assert_eq!(
        waiting(&agent.resume(outcome.run_id()).await.unwrap()).len(),
        1
    );

    now.store(NOW + 30 * 60 * 1000, Ordering::SeqCst);
    // A decision after the time is refused: the approval expired.
    let error = decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Approve,
        None,
        NOW + 30 * 60 * 1000,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            DecideError::Decision(DecisionError::AlreadyDecided {
                status: ApprovalStatus::Expired,
                ..
            })
        ),
        "{error}"
    );
    assert_eq!(
        answer(&agent.resume(outcome.run_id()).await.unwrap()),
        "could not do it"
    );
    assert_eq!(
        model.last_tool_result(),
        (
            "Nobody approved this call within 30m, so it was rejected.".to_owned(),
            true
        )
    );
    assert_eq!(kit.send.load(Ordering::SeqCst), 0);
    assert_eq!(
        store.approval(&approval.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
}

#[tokio::test]
async fn a_grant_covers_later_calls_until_it_is_used_up() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let first = agent.run("send it").await.unwrap();
    let approval = waiting(&first)[0].clone();
    let grant = GrantRequest {
        tool: None,
        when: Some(r#"args.recipient == "sally""#.into()),
        scope: GrantScope::Uses { uses: 2 },
    };
    decide(
        store.as_ref(),
        &alice(),
        &approval.id,
        &approval.fingerprint,
        DecisionRequest::Approve,
        Some(grant),
        NOW,
    )
    .await
    .unwrap();
    let grants = store.grants(&GrantQuery::all()).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].tool.as_str(), grants[0].uses_left),
        ("send", Some(2))
    );
    assert_eq!(answer(&agent.resume(first.run_id()).await.unwrap()), "done");
    // Two more runs go through on the grant; the third asks again.
    assert_eq!(answer(&agent.run("send it").await.unwrap()), "done");
    assert_eq!(answer(&agent.run("send it").await.unwrap()), "done");
    assert_eq!(waiting(&agent.run("send it").await.unwrap()).len(), 1);
    assert_eq!(kit.send.load(Ordering::SeqCst), 3);
    assert_eq!(
        store.grants(&GrantQuery::all()).await.unwrap()[0].uses_left,
        Some(0)
    );
}

#[tokio::test]
async fn a_started_call_without_a_finish_is_in_doubt_unless_idempotent() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model(
        "both",
        &[
            ("c1", "send", json!({"recipient": "sally"})),
            ("c2", "sync", json!({})),
        ],
    );
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = agent.run("both").await.unwrap();
    let approvals = waiting(&outcome).to_vec();
    assert_eq!(
        approvals.len(),
        2,
        "each parallel call has its own approval"
    );
    assert_ne!(approvals[0].fingerprint, approvals[1].fingerprint);
    for approval in &approvals {
        approve(store.as_ref(), &alice(), approval).await.unwrap();
    }
    // A crash right after `send` started: its start is committed, its
    // finish never was.
    let run_id = outcome.run_id().to_owned();
    let events = store.load(&run_id).await.unwrap();
    let state = RunState::fold(events.iter().map(|e| &e.event));
    store
        .append(toolgate_core::store::Append {
            run_id: run_id.clone(),
            expected_version: state.version,
            events: vec![Event::ToolStarted {
                call_id: "c1".into(),
                args: json!({"recipient": "sally"}).as_object().unwrap().clone(),
            }],
            run: store.runs(&Default::default()).await.unwrap()[0].clone(),
            approvals: vec![],
            grants: vec![],
            lease: None,
        })
        .await
        .unwrap();

    let outcome = agent.resume(&run_id).await.unwrap();
    match &outcome {
        RunOutcome::Waiting { in_doubt, .. } => assert_eq!(in_doubt, &vec!["c1".to_owned()]),
        other => panic!("expected an in-doubt call, got {other:?}"),
    }
    assert_eq!(
        kit.send.load(Ordering::SeqCst),
        0,
        "a non-idempotent tool is not re-run"
    );

    let error = resolve_in_doubt(
        store.as_ref(),
        &alice(),
        &run_id,
        "c2",
        Resolution::Retry,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DecideError::NotInDoubt { .. }), "{error}");
    resolve_in_doubt(
        store.as_ref(),
        &alice(),
        &run_id,
        "c1",
        Resolution::Done {
            output: json!("sent, checked by hand"),
        },
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(answer(&agent.resume(&run_id).await.unwrap()), "done");
    assert_eq!(kit.send.load(Ordering::SeqCst), 0);
    assert_eq!(kit.sync.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idempotent_call_found_started_runs_again() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("sync", &[("c1", "sync", json!({}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = agent.run("sync").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    approve(store.as_ref(), &alice(), &approval).await.unwrap();
    let run_id = outcome.run_id().to_owned();
    let events = store.load(&run_id).await.unwrap();
    let version = events.len() as u64;
    store
        .append(toolgate_core::store::Append {
            run_id: run_id.clone(),
            expected_version: version,
            events: vec![Event::ToolStarted {
                call_id: "c1".into(),
                args: Default::default(),
            }],
            run: store.runs(&Default::default()).await.unwrap()[0].clone(),
            approvals: vec![],
            grants: vec![],
            lease: None,
        })
        .await
        .unwrap();
    assert_eq!(answer(&agent.resume(&run_id).await.unwrap()), "done");
    assert_eq!(kit.sync.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn waiting_in_process_goes_on_when_someone_decides() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store))
    .wait(Wait::For(Duration::from_secs(30)))
    .poll_interval(Duration::from_millis(10));
    let approver = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                let pending = store
                    .approvals(&ApprovalQuery {
                        statuses: vec![ApprovalStatus::Pending],
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                if let Some(approval) = pending.first() {
                    approve(store.as_ref(), &alice(), approval).await.unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    assert_eq!(answer(&agent.run("send it").await.unwrap()), "done");
    approver.await.unwrap();
    assert_eq!(kit.send.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_audit_log_of_a_run_verifies_and_its_decision_is_signed() {
    let (store, _dir) = store();
    let kit = kit();
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(
        Arc::new(model) as Arc<dyn toolgate_core::ChatModel>,
        kit.tools.clone(),
    )
    .store(Arc::clone(&store));
    let outcome = agent.run("send it").await.unwrap();
    let approval = waiting(&outcome)[0].clone();
    approve(store.as_ref(), &alice(), &approval).await.unwrap();
    agent.resume(outcome.run_id()).await.unwrap();
    let entries = store.audit(0, 1000).await.unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "model_turn",
            "gate_verdict",
            "approval_requested",
            "decision_recorded",
            "tool_started",
            "tool_finished",
            "model_turn",
            "run_completed"
        ]
    );
    let mut verifier = toolgate_core::audit::Verifier::new(&store.public_key().await.unwrap());
    for entry in &entries {
        verifier.check(entry).unwrap();
    }
    assert_eq!(verifier.verified().signatures, 1);
}

#[tokio::test]
async fn a_failing_condition_fails_closed_and_the_audit_log_says_so() {
    let (store, _dir) = store();
    let kit = kit();
    // `n` is missing from the call: the allow rule's condition fails, so it
    // does not allow; the call is asked about, and the failure is recorded.
    let model = model("send it", &[("c1", "send", json!({"recipient": "sally"}))]);
    let agent = Agent::new(Arc::new(model) as Arc<dyn toolgate_core::ChatModel>, kit.tools.clone())
        .store(Arc::clone(&store))
        .policy(policy(
            "[[policy.rules]]\nname = \"small\"\ntool = \"send\"\nwhen = \"args.n < 10\"\naction = \"allow\"\n",
        ));
    let outcome = agent.run("send it").await.unwrap();
    assert_eq!(
        waiting(&outcome).len(),
        1,
        "a failing allow condition never allows"
    );
    let entries = store.audit(0, 100).await.unwrap();
    let verdict = entries.iter().find(|e| e.kind == "gate_verdict").unwrap();
    let body: serde_json::Value = serde_json::from_str(&verdict.body).unwrap();
    let errors = body["condition_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["rule_name"], "small");
    assert_eq!(errors[0]["action"], "allow");
    assert_eq!(body["verdict"]["action"], "ask");
}

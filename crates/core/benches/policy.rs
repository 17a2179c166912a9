//! How many verdicts per second a 20-rule policy with CEL conditions gives
//! on one core.
//!
//! Run with `cargo bench -p toolgate-core --bench policy`; criterion reports
//! the throughput in elements per second, one element being one verdict.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use toolgate_core::ToolHints;
use toolgate_core::policy::{Action, EvalInput, Policy};

/// Twenty rules, nineteen of them with conditions, over a handful of tools.
const POLICY: &str = r#"
[store]
url = "sqlite://toolgate.db"

[[policy.rules]]
tool = "send_email"
when = 'args.recipient.endsWith("@example.com")'
action = "allow"

[[policy.rules]]
tool = "send_email"
when = '!args.recipient.endsWith("@example.com")'
action = "ask"
approvers = ["group:ops"]
quorum = 2
timeout = "30m"

[[policy.rules]]
tool = "send_email"
when = 'args.recipient.endsWith("@competitor.com")'
action = "deny"
reason = "no mail to competitors"

[[policy.rules]]
tool = "send_email"
when = 'size(args.message) > 10000'
action = "deny"
reason = "message too long"

[[policy.rules]]
tool = "count_emails"
when = 'args.last_n_days <= 30'
action = "allow"

[[policy.rules]]
tool = "count_emails"
when = 'args.last_n_days > 365'
action = "deny"
reason = "at most a year"

[[policy.rules]]
tool = "delete_*"
action = "deny"
reason = "deleting is never allowed here"

[[policy.rules]]
tool = "github.*"
when = 'args.repo.startsWith("toolgate/")'
action = "allow"

[[policy.rules]]
tool = "github.merge_*"
when = 'args.branch == "main"'
action = "ask"
approvers = ["role:maintainer"]

[[policy.rules]]
tool = "github.*"
when = 'args.repo.startsWith("secret/")'
action = "deny"

[[policy.rules]]
tool = "read_file"
when = 'args.path.startsWith("/workspace/")'
action = "allow"

[[policy.rules]]
tool = "read_file"
when = 'args.path.contains("..") || args.path.startsWith("/etc/")'
action = "deny"
reason = "outside the workspace"

[[policy.rules]]
tool = "write_file"
when = 'args.path.startsWith("/workspace/tmp/")'
action = "allow"

[[policy.rules]]
tool = "write_file"
when = 'args.path.endsWith(".env")'
action = "deny"

[[policy.rules]]
tool = "http_get"
when = 'args.url.startsWith("https://docs.")'
action = "allow"

[[policy.rules]]
tool = "http_*"
when = 'args.url.startsWith("http://")'
action = "deny"
reason = "plain http"

[[policy.rules]]
tool = "transfer_money"
when = 'args.amount > 1000'
action = "ask"
approvers = ["user:alice", "user:bob"]
quorum = 2

[[policy.rules]]
tool = "transfer_money"
when = 'args.amount <= 1000 && args.currency in ["EUR", "USD"]'
action = "ask"

[[policy.rules]]
tool = "*"
when = 'principal != null && principal.role == "intern"'
action = "ask"

[[policy.rules]]
tool = "search_*"
when = 'tool != "search_private"'
action = "allow"
"#;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("the calls below are objects"),
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::from_toml_str(POLICY, "toolgate.toml").expect("the policy loads");
    assert_eq!(policy.rules().len(), 20);
    let principal = json!({"id": "user:carol", "role": "engineer"});
    let calls: Vec<(&str, Map<String, Value>, Action)> = vec![
        (
            "send_email",
            object(json!({"recipient": "sally@gmail.com", "message": "hi"})),
            Action::Ask,
        ),
        (
            "send_email",
            object(json!({"recipient": "bob@example.com", "message": "hi"})),
            Action::Allow,
        ),
        (
            "count_emails",
            object(json!({"last_n_days": 5})),
            Action::Allow,
        ),
        (
            "delete_repo",
            object(json!({"repo": "toolgate/x"})),
            Action::Deny,
        ),
        (
            "github.merge_pr",
            object(json!({"repo": "toolgate/toolgate", "branch": "main"})),
            Action::Ask,
        ),
        (
            "read_file",
            object(json!({"path": "/workspace/src/lib.rs"})),
            Action::Allow,
        ),
        (
            "transfer_money",
            object(json!({"amount": 50, "currency": "EUR"})),
            Action::Ask,
        ),
        (
            "search_docs",
            object(json!({"query": "policy"})),
            Action::Allow,
        ),
    ];
    let hints = ToolHints {
        destructive: Some(true),
        ..ToolHints::default()
    };
    for (tool, args, expected) in &calls {
        let input = EvalInput::new(tool, args)
            .hints(hints)
            .principal(&principal);
        assert_eq!(policy.evaluate(&input).action, *expected, "{tool} {args:?}");
    }

    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(1));
    let (tool, args, _) = &calls[0];
    group.bench_function("send_email outside (4 conditions)", |b| {
        let input = EvalInput::new(tool, args)
            .hints(hints)
            .principal(&principal);
        b.iter(|| black_box(policy.evaluate(black_box(&input))));
    });
    let (tool, args, _) = &calls[3];
    group.bench_function("delete_repo (no condition)", |b| {
        let input = EvalInput::new(tool, args)
            .hints(hints)
            .principal(&principal);
        b.iter(|| black_box(policy.evaluate(black_box(&input))));
    });
    group.throughput(Throughput::Elements(calls.len() as u64));
    group.bench_function("mix of 8 calls", |b| {
        let inputs: Vec<EvalInput<'_>> = calls
            .iter()
            .map(|(tool, args, _)| {
                EvalInput::new(tool, args)
                    .hints(hints)
                    .principal(&principal)
            })
            .collect();
        b.iter(|| {
            for input in &inputs {
                black_box(policy.evaluate(black_box(input)));
            }
        });
    });
    // The fast path gives up on a condition that fails, and `cel` runs it
    // again for its error message: the slow path, measured on its own.
    let no_recipient = object(json!({"message": "hi"}));
    let input = EvalInput::new("send_email", &no_recipient)
        .hints(hints)
        .principal(&principal);
    let verdict = policy.evaluate(&input);
    assert_eq!(verdict.action, Action::Deny);
    assert_eq!(verdict.condition_errors.len(), 1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_email without recipient (condition fails, cel)", |b| {
        b.iter(|| black_box(policy.evaluate(black_box(&input))));
    });
    let unknown = Map::new();
    group.bench_function("no rule but the catch-all matches", |b| {
        let input = EvalInput::new("list_calendars", &unknown).hints(ToolHints {
            read_only: Some(true),
            ..ToolHints::default()
        });
        b.iter(|| black_box(policy.evaluate(black_box(&input))));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

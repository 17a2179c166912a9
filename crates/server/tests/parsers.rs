//! Property tests of what the API parses: request bodies, query strings
//! and grant scopes built from random pieces, some near the real shapes
//! and some not, sent to a real server. Whatever comes in, the answer is a
//! success or a 4xx problem document, never a 5xx or a dropped connection,
//! and a request refused stores nothing.

mod common;

use common::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use toolgate_core::Role;

/// JSON values, nested a few levels, with keys drawn mostly from the
/// fields the API knows.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("tool".to_owned()),
        Just("args".to_owned()),
        Just("schema".to_owned()),
        Just("context".to_owned()),
        Just("run_id".to_owned()),
        Just("thread".to_owned()),
        Just("hints".to_owned()),
        Just("decision".to_owned()),
        Just("message".to_owned()),
        Just("fingerprint".to_owned()),
        Just("grant".to_owned()),
        Just("scope".to_owned()),
        Just("type".to_owned()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinities", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("approve".to_owned()),
            Just("edit".to_owned()),
            Just("reject".to_owned()),
            Just("send_email".to_owned()),
            Just("uses:2".to_owned()),
            Just("for:1h".to_owned()),
            Just("run".to_owned()),
            Just("object".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body near a real request: the real fields, mostly of the right
/// kinds with random contents, now and then wrong or with an unknown field.
fn near_request() -> impl Strategy<Value = Value> {
    let tool = prop_oneof![
        4 => "[a-z_]{1,12}".prop_map(Value::String),
        1 => json_value(),
    ];
    let args = prop_oneof![
        4 => prop::collection::vec(("[a-z]{1,6}", json_value()), 0..4)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
    ];
    (
        tool,
        args,
        prop::option::weighted(0.2, json_value()),
        prop::option::weighted(0.3, json_value()),
        prop::option::weighted(0.2, json_value()),
        prop::option::weighted(0.1, json_value()),
    )
        .prop_map(|(tool, args, schema, context, run_id, extra)| {
            let mut body = json!({"tool": tool, "args": args});
            for (key, value) in [
                ("schema", schema),
                ("context", context),
                ("run_id", run_id),
                ("colour", extra),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            body
        })
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Sends each generated request; fails the property on any answer that is
/// not a success or a 4xx problem.
fn check(
    server: &TestServer,
    runtime: &tokio::runtime::Handle,
    token: &str,
    method: Method,
    path: &str,
    body: &Value,
    success: StatusCode,
) -> Result<StatusCode, TestCaseError> {
    let (status, answer) =
        runtime.block_on(server.call(method, path, Some(token), Some(body.clone())));
    prop_assert!(
        status == success || status.is_client_error(),
        "{status} for {body}: {answer}"
    );
    Ok(status)
}

#[test]
fn any_body_gets_a_success_or_a_problem_and_refused_ones_store_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start(""));
    let bot = runtime.block_on(server.token("bot", Role::Agent, &[]));
    let alice = runtime.block_on(server.token("alice", Role::Approver, &[]));
    let handle = runtime.handle().clone();

    let created = std::cell::Cell::new(0u32);
    for strategy in [json_value().boxed(), near_request().boxed()] {
        runner(150)
            .run(&strategy, |body| {
                let status = check(
                    &server,
                    &handle,
                    &bot,
                    Method::POST,
                    "/v1/approvals",
                    &body,
                    StatusCode::CREATED,
                )?;
                if status == StatusCode::CREATED {
                    created.set(created.get() + 1);
                }
                Ok(())
            })
            .unwrap();
    }
    assert!(created.get() > 0, "some random requests were valid ones");
    // Only the requests that were answered 201 are in the store.
    let (_, page) = runtime.block_on(server.get("/v1/approvals?limit=500", &alice));
    assert_eq!(
        page["approvals"].as_array().unwrap().len() as u32,
        created.get()
    );

    // Decisions: random bodies against a pending approval.
    let pending =
        runtime.block_on(server.ask(&bot, json!({"tool": "send_email", "args": {"to": "x"}})));
    let path = format!("/v1/approvals/{}/decision", pending["id"].as_str().unwrap());
    runner(150)
        .run(&json_value(), |body| {
            check(
                &server,
                &handle,
                &alice,
                Method::POST,
                &path,
                &body,
                StatusCode::OK,
            )
            .map(drop)
        })
        .unwrap();

    // Query strings: random statuses, limits and waits (without digits, a
    // wait is never one the server would honour, so none of them waits).
    let query = (".{0,12}", ".{0,6}", "[a-z .:]{0,6}");
    runner(150)
        .run(&query, |(status, limit, wait)| {
            let encode = |text: &str| {
                text.bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect::<String>()
            };
            let list = format!(
                "/v1/approvals?status={}&limit={}",
                encode(&status),
                encode(&limit)
            );
            let (code, answer) = handle.block_on(server.get(&list, &alice));
            prop_assert!(
                code == StatusCode::OK || code == StatusCode::BAD_REQUEST,
                "{code} {list}: {answer}"
            );
            let one = format!(
                "/v1/approvals/{}?wait={}",
                pending["id"].as_str().unwrap(),
                encode(&wait)
            );
            let (code, answer) = handle.block_on(server.get(&one, &alice));
            prop_assert!(
                code == StatusCode::OK || code == StatusCode::BAD_REQUEST,
                "{code} {one}: {answer}"
            );
            Ok(())
        })
        .unwrap();
    runtime.block_on(server.stop());
}

//! The OpenAI-compatible provider against a local server that speaks Chat
//! Completions: what toolgate sends, how it reads answers (whole and
//! streamed), and how it handles failures.

mod common;

use std::time::{Duration, Instant};

use common::{Mock, Reply, ask, ask_streaming, fast};
use expect_test::expect;
use serde_json::{Value, json};
use toolgate_core::{
    AiMessage, ChatModel, ChatRequest, FinishReason, Message, ModelError, ToolCall, ToolMessage,
    Usage,
};
use toolgate_models::HttpOptions;
use toolgate_models::openai::OpenAiModel;

fn model(mock: &Mock) -> OpenAiModel {
    model_with(mock, fast())
}

fn model_with(mock: &Mock, options: HttpOptions) -> OpenAiModel {
    OpenAiModel::builder("gpt-4o-mini")
        .api_key("sk-test")
        .base_url(format!("{}/v1", mock.url))
        .http_options(options)
        .build()
        .unwrap()
}

fn question() -> Vec<Message> {
    vec![Message::human(
        "how many emails did i get in the last 5 days? and send sally@gmail.com an email saying 'What's up homie'",
    )]
}

/// The conversation after the model called both tools, one approved and
/// one not.
fn conversation() -> Vec<Message> {
    let mut messages = vec![Message::system("Answer briefly.")];
    messages.extend(question());
    messages.extend([
        AiMessage::with_tool_calls([count_call(), send_call()])
            .content("Let me check.")
            .into(),
        ToolMessage::new("call_count", "10").into(),
        ToolMessage::error("call_send", "The user did not approve this tool call.").into(),
    ]);
    messages
}

fn count_call() -> ToolCall {
    ToolCall::new("call_count", "count_emails", json!({"last_n_days": 5}))
}

fn send_call() -> ToolCall {
    ToolCall::new(
        "call_send",
        "send_email",
        json!({"recipient": "sally@gmail.com", "message": "What's up homie"}),
    )
}

// Fixtures shaped like OpenAI's documented answers.

fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": {
            "prompt_tokens": 82,
            "completion_tokens": 17,
            "total_tokens": 99,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306"
    })
}

fn tool_calls_completion(arguments: [&str; 2]) -> Value {
    completion(
        json!({
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_count", "type": "function",
                 "function": {"name": "count_emails", "arguments": arguments[0]}},
                {"id": "call_send", "type": "function",
                 "function": {"name": "send_email", "arguments": arguments[1]}}
            ],
            "refusal": null,
            "annotations": []
        }),
        "tool_calls",
    )
}

const COUNT_ARGS: &str = r#"{"last_n_days":5}"#;
const SEND_ARGS: &str = r#"{"recipient":"sally@gmail.com","message":"What's up homie"}"#;

fn text_completion(text: &str) -> Value {
    completion(
        json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}),
        "stop",
    )
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    data(json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    }))
}

fn usage_chunk() -> String {
    data(json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_06737a9306",
        "choices": [],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
    }))
}

fn data(value: Value) -> String {
    format!("data: {value}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn args_delta(index: usize, arguments: &str) -> String {
    chunk(
        json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
        None,
    )
}

/// The tool-calls answer as OpenAI streams it: the arguments arrive in
/// pieces cut mid-key, mid-string and mid-number.
fn tool_calls_stream() -> Vec<String> {
    vec![
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ),
        chunk(json!({"content": "Let me"}), None),
        chunk(json!({"content": " check."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_count", "type": "function",
                "function": {"name": "count_emails", "arguments": ""}}]}),
            None,
        ),
        args_delta(0, r#"{"last_"#),
        args_delta(0, r#"n_days":"#),
        args_delta(0, "5}"),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_send", "type": "function",
                "function": {"name": "send_email", "arguments": ""}}]}),
            None,
        ),
        args_delta(1, r#"{"recipient":"sal"#),
        args_delta(1, r#"ly@gmail.com","message":"What"#),
        args_delta(1, r#"'s up homie"}"#),
        chunk(json!({}), Some("tool_calls")),
        usage_chunk(),
        DONE.to_owned(),
    ]
}

fn expected_tool_calls_answer() -> AiMessage {
    AiMessage::with_tool_calls([count_call(), send_call()])
        .content("Let me check.")
        .usage(Usage {
            input_tokens: 82,
            output_tokens: 17,
        })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

#[tokio::test]
async fn sends_the_conversation_and_tools_as_chat_completions() {
    let mock = Mock::start(vec![Reply::json(200, &text_completion("Done."))]).await;
    model(&mock).generate(ask(conversation())).await.unwrap();
    let request = mock.only();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], "Bearer sk-test");
    assert_eq!(request.headers["content-type"], "application/json");
    expect![[r#"
        {
          "model": "gpt-4o-mini",
          "messages": [
            {
              "role": "system",
              "content": "Answer briefly."
            },
            {
              "role": "user",
              "content": "how many emails did i get in the last 5 days? and send sally@gmail.com an email saying 'What's up homie'"
            },
            {
              "role": "assistant",
              "content": "Let me check.",
              "tool_calls": [
                {
                  "id": "call_count",
                  "type": "function",
                  "function": {
                    "name": "count_emails",
                    "arguments": "{\"last_n_days\":5}"
                  }
                },
                {
                  "id": "call_send",
                  "type": "function",
                  "function": {
                    "name": "send_email",
                    "arguments": "{\"recipient\":\"sally@gmail.com\",\"message\":\"What's up homie\"}"
                  }
                }
              ]
            },
            {
              "role": "tool",
              "tool_call_id": "call_count",
              "content": "10"
            },
            {
              "role": "tool",
              "tool_call_id": "call_send",
              "content": "The user did not approve this tool call."
            }
          ],
          "tools": [
            {
              "type": "function",
              "function": {
                "name": "count_emails",
                "description": "Dummy function to count number of e-mails. Returns 2 * last_n_days.",
                "parameters": {
                  "type": "object",
                  "properties": {
                    "last_n_days": {
                      "type": "integer"
                    }
                  },
                  "required": [
                    "last_n_days"
                  ]
                }
              }
            },
            {
              "type": "function",
              "function": {
                "name": "send_email",
                "description": "Dummy function for sending an e-mail.",
                "parameters": {
                  "type": "object",
                  "properties": {
                    "message": {
                      "type": "string"
                    },
                    "recipient": {
                      "type": "string"
                    }
                  },
                  "required": [
                    "message",
                    "recipient"
                  ]
                }
              }
            }
          ],
          "tool_choice": "auto"
        }"#]].assert_eq(&pretty(&request.body));
}

#[tokio::test]
async fn streaming_requests_ask_for_a_stream_with_usage() {
    let mock = Mock::start(vec![
        Reply::json(200, &text_completion("Done.")),
        Reply::events(&[
            chunk(json!({"role": "assistant", "content": "Done."}), None),
            chunk(json!({}), Some("stop")),
            usage_chunk(),
            DONE.to_owned(),
        ]),
    ])
    .await;
    let model = model(&mock);
    model.generate(ask(conversation())).await.unwrap();
    ask_streaming(&model, conversation()).await.0.unwrap();
    let [whole, streamed] = <[_; 2]>::try_from(mock.received()).unwrap();
    let mut extra = streamed.body.as_object().unwrap().clone();
    for (key, value) in whole.body.as_object().unwrap() {
        assert_eq!(extra.shift_remove(key).as_ref(), Some(value), "{key}");
    }
    expect![[r#"
        {
          "stream": true,
          "stream_options": {
            "include_usage": true
          }
        }"#]]
    .assert_eq(&pretty(&Value::Object(extra)));
}

#[tokio::test]
async fn requests_without_tools_or_key_leave_them_out() {
    let mock = Mock::start(vec![Reply::json(200, &text_completion("Hi."))]).await;
    let local = OpenAiModel::builder("llama3.2")
        .base_url(format!("{}/v1/", mock.url))
        .provider_name("ollama")
        .build()
        .unwrap();
    let answer = local
        .generate(ChatRequest::new(vec![Message::human("hi")], vec![]))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hi.");
    let request = mock.only();
    assert_eq!(request.path, "/v1/chat/completions");
    assert!(request.headers.get("authorization").is_none());
    expect![[r#"
        {
          "model": "llama3.2",
          "messages": [
            {
              "role": "user",
              "content": "hi"
            }
          ]
        }"#]]
    .assert_eq(&pretty(&request.body));
}

#[tokio::test]
async fn parallel_tool_calls_are_read_with_their_arguments() {
    let mock = Mock::start(vec![Reply::json(
        200,
        &tool_calls_completion([COUNT_ARGS, SEND_ARGS]),
    )])
    .await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer, expected_tool_calls_answer());
}

#[tokio::test]
async fn streamed_tool_calls_are_assembled_into_the_same_answer() {
    let mock = Mock::start(vec![
        Reply::json(200, &tool_calls_completion([COUNT_ARGS, SEND_ARGS])),
        Reply::events(&tool_calls_stream()),
        Reply::events_cut_every(&tool_calls_stream(), 7),
    ])
    .await;
    let model = model(&mock);
    let whole = model.generate(ask(question())).await.unwrap();
    let (streamed, pieces) = ask_streaming(&model, question()).await;
    assert_eq!(streamed.unwrap(), whole);
    assert_eq!(pieces, ["Let me", " check."]);
    let (cut, _) = ask_streaming(&model, question()).await;
    assert_eq!(cut.unwrap(), expected_tool_calls_answer());
}

#[tokio::test]
async fn streamed_text_reaches_the_sink_as_it_arrives() {
    let deltas = ["You got 1", "0 emails", " – in the last 5 days ", "🎉."];
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend(deltas.iter().map(|d| chunk(json!({"content": d}), None)));
    events.extend([
        chunk(json!({}), Some("stop")),
        usage_chunk(),
        DONE.to_owned(),
    ]);
    // Cut every 5 bytes: lines, JSON and multi-byte characters are split
    // across network reads.
    let mock = Mock::start(vec![Reply::events_cut_every(&events, 5)]).await;
    let (answer, pieces) = ask_streaming(&model(&mock), question()).await;
    assert_eq!(pieces, deltas);
    let expected = AiMessage::text("You got 10 emails – in the last 5 days 🎉.").usage(Usage {
        input_tokens: 82,
        output_tokens: 17,
    });
    assert_eq!(answer.unwrap(), expected);
}

#[tokio::test]
async fn finish_reasons_are_mapped() {
    let mut length = text_completion("You got");
    length["choices"][0]["finish_reason"] = json!("length");
    let mut filtered = text_completion("");
    filtered["choices"][0]["finish_reason"] = json!("content_filter");
    let mut other = text_completion("");
    other["choices"][0]["finish_reason"] = json!("eos");
    let mock = Mock::start(vec![
        Reply::json(200, &length),
        Reply::json(200, &filtered),
        Reply::json(200, &other),
    ])
    .await;
    let model = model(&mock);
    let mut reasons = Vec::new();
    for _ in 0..3 {
        reasons.push(model.generate(ask(question())).await.unwrap().finish_reason);
    }
    assert_eq!(
        reasons,
        [
            Some(FinishReason::Length),
            Some(FinishReason::ContentFilter),
            Some(FinishReason::Other("eos".into()))
        ]
    );
}

fn invalid_arguments(error: ModelError) -> (String, String, String) {
    match error {
        ModelError::InvalidToolArguments {
            call_id,
            tool,
            message,
        } => (call_id, tool, message),
        other => panic!("expected invalid tool arguments, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_tool_arguments_are_an_error_naming_the_call() {
    let mock = Mock::start(vec![
        Reply::json(
            200,
            &tool_calls_completion([COUNT_ARGS, r#"{"recipient": "sally"#]),
        ),
        Reply::json(200, &tool_calls_completion(["[5]", SEND_ARGS])),
        Reply::json(200, &tool_calls_completion(["", SEND_ARGS])),
    ])
    .await;
    let model = model(&mock);
    let error = model.generate(ask(question())).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"the model's arguments for tool call `call_send` (send_email) are not valid JSON: EOF while parsing a string at line 1 column 20, in "{\"recipient\": \"sally""#
    );
    let (call_id, tool, message) =
        invalid_arguments(model.generate(ask(question())).await.unwrap_err());
    assert_eq!(
        (call_id.as_str(), tool.as_str()),
        ("call_count", "count_emails")
    );
    assert_eq!(message, "expected a JSON object, got `[5]`");
    let (call_id, _, message) =
        invalid_arguments(model.generate(ask(question())).await.unwrap_err());
    assert_eq!(call_id, "call_count");
    assert_eq!(message, "the arguments are empty; expected a JSON object");
}

#[tokio::test]
async fn malformed_streamed_tool_arguments_are_an_error_too() {
    let mut events = tool_calls_stream();
    // The last piece of `send_email`'s arguments never closes the object.
    let last = events.iter().position(|e| e.contains("up homie")).unwrap();
    events[last] = args_delta(1, r#"'s up homie""#);
    let mock = Mock::start(vec![Reply::events(&events)]).await;
    let (answer, _) = ask_streaming(&model(&mock), question()).await;
    let (call_id, tool, message) = invalid_arguments(answer.unwrap_err());
    assert_eq!(
        (call_id.as_str(), tool.as_str()),
        ("call_send", "send_email")
    );
    assert!(
        message.starts_with("EOF while parsing an object"),
        "{message}"
    );
}

#[tokio::test]
async fn calls_from_servers_that_leave_out_ids_or_send_objects_are_read() {
    // Some compatible servers send no call id, or the arguments as an
    // object rather than as JSON text.
    let lenient = completion(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"type": "function", "function": {"name": "count_emails", "arguments": {"last_n_days": 5}}},
            {"type": "function", "function": {"name": "send_email", "arguments": SEND_ARGS}}
        ]}),
        "tool_calls",
    );
    let mock = Mock::start(vec![Reply::json(200, &lenient)]).await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    let ids: Vec<&str> = answer.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_0", "call_1"]);
    assert_eq!(answer.tool_calls[0].args, count_call().args);
    assert_eq!(answer.tool_calls[1].args, send_call().args);
}

#[tokio::test]
async fn a_streamed_call_without_a_name_is_reported() {
    let events = [
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_count", "type": "function",
                "function": {"arguments": COUNT_ARGS}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        DONE.to_owned(),
    ];
    let mock = Mock::start(vec![Reply::events(&events)]).await;
    let (answer, _) = ask_streaming(&model(&mock), question()).await;
    assert_eq!(
        answer.unwrap_err().to_string(),
        "openai sent a response toolgate cannot read: streamed tool call 0 (id `call_count`) has no function name"
    );
}

#[tokio::test]
async fn a_stream_that_ends_early_is_an_error_not_a_partial_answer() {
    let events = tool_calls_stream();
    let without_done = &events[..events.len() - 1];
    let mid_event = {
        let mut cut = events[..6].concat();
        cut.truncate(cut.len() - 10);
        cut
    };
    let mock = Mock::start(vec![
        Reply::events(without_done),
        Reply::events(&[mid_event]),
    ])
    .await;
    let model = model(&mock);
    for _ in 0..2 {
        let (answer, _) = ask_streaming(&model, question()).await;
        let error = answer.unwrap_err();
        assert!(
            matches!(error, ModelError::InvalidResponse { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "openai sent a response toolgate cannot read: the stream ended before `data: [DONE]`, so the answer is incomplete; try again"
        );
    }
}

#[tokio::test]
async fn an_error_in_the_stream_is_reported() {
    let mock = Mock::start(vec![Reply::events(&[
        chunk(json!({"role": "assistant", "content": "You"}), None),
        data(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}})),
    ])])
    .await;
    let (answer, pieces) = ask_streaming(&model(&mock), question()).await;
    assert_eq!(pieces, ["You"]);
    assert_eq!(
        answer.unwrap_err().to_string(),
        "openai sent a response toolgate cannot read: the stream stopped with an error: The server had an error while processing your request."
    );
}

#[tokio::test]
async fn answers_that_are_not_chat_completions_are_reported() {
    let mock = Mock::start(vec![
        Reply::json(200, &json!({"id": "x", "choices": []})),
        Reply::Body {
            status: 200,
            headers: vec![],
            body: "<html>Welcome to nginx!</html>".into(),
        },
    ])
    .await;
    let model = model(&mock);
    assert_eq!(
        model
            .generate(ask(question()))
            .await
            .unwrap_err()
            .to_string(),
        "openai sent a response toolgate cannot read: the answer has no choices"
    );
    assert_eq!(
        model
            .generate(ask(question()))
            .await
            .unwrap_err()
            .to_string(),
        r#"openai sent a response toolgate cannot read: expected value at line 1 column 1; the answer began with "<html>Welcome to nginx!</html>""#
    );
}

fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn api_error(error: ModelError) -> (u16, String) {
    match error {
        ModelError::Api {
            provider,
            status,
            message,
        } => {
            assert_eq!(provider, "openai");
            (status, message)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limits_wait_as_long_as_retry_after_says() {
    let limited = openai_error(
        "Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    );
    let mock = Mock::start(vec![
        Reply::json(429, &limited).with_header("retry-after", "1"),
        Reply::json(200, &text_completion("Done.")),
    ])
    .await;
    let started = Instant::now();
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer.content, "Done.");
    let [first, second] = <[_; 2]>::try_from(mock.received()).unwrap();
    let waited = second.at - first.at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_at_once() {
    let limited = openai_error(
        "You exceeded your current quota.",
        "insufficient_quota",
        "insufficient_quota",
    );
    let mock = Mock::start(vec![
        Reply::json(429, &limited).with_header("retry-after", "3600"),
        Reply::json(200, &text_completion("Done.")),
    ])
    .await;
    let error = model(&mock).generate(ask(question())).await.unwrap_err();
    assert_eq!(
        api_error(error),
        (429, "You exceeded your current quota.".to_owned())
    );
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let failed = openai_error(
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        "server_error",
    );
    let mock = Mock::start(vec![
        Reply::json(500, &failed),
        Reply::json(503, &failed),
        Reply::json(200, &text_completion("Done.")),
    ])
    .await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer.content, "Done.");
    assert_eq!(mock.received().len(), 3);
}

#[tokio::test]
async fn retries_stop_after_the_configured_number() {
    let failed = openai_error("Bad gateway.", "server_error", "bad_gateway");
    let mock = Mock::start(vec![Reply::json(502, &failed); 4]).await;
    let error = model_with(&mock, fast().max_retries(2))
        .generate(ask(question()))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "openai answered 502: Bad gateway.");
    assert_eq!(mock.received().len(), 3);

    let mock = Mock::start(vec![Reply::json(502, &failed); 2]).await;
    let error = model_with(&mock, fast().max_retries(0))
        .generate(ask(question()))
        .await
        .unwrap_err();
    assert_eq!(api_error(error).0, 502);
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn client_errors_are_reported_with_the_providers_message_and_not_retried() {
    let cases = [
        (
            400,
            openai_error(
                "Invalid schema for function 'count_emails': 'integer' is not valid under any of the given schemas.",
                "invalid_request_error",
                "invalid_function_parameters",
            ),
        ),
        (
            401,
            openai_error(
                "Incorrect API key provided: sk-test. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        ),
        (
            403,
            openai_error(
                "Project does not have access to model gpt-4o-mini",
                "invalid_request_error",
                "model_not_found",
            ),
        ),
        (
            404,
            openai_error(
                "The model `gpt-9` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
        ),
    ];
    for (status, body) in cases {
        let mock = Mock::start(vec![
            Reply::json(status, &body),
            Reply::json(200, &text_completion("Done.")),
        ])
        .await;
        let error = model(&mock).generate(ask(question())).await.unwrap_err();
        let expected = body["error"]["message"].as_str().unwrap().to_owned();
        assert_eq!(api_error(error), (status, expected));
        assert_eq!(mock.received().len(), 1, "{status} was retried");
    }
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let mock =
        Mock::start_dropping_first_connection(vec![Reply::json(200, &text_completion("Done."))])
            .await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer.content, "Done.");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let url = common::closed_port_url();
    let model = OpenAiModel::builder("llama3.2")
        .base_url(format!("{url}/v1"))
        .provider_name("ollama")
        .http_options(fast().max_retries(1))
        .build()
        .unwrap();
    let error = model.generate(ask(question())).await.unwrap_err();
    assert!(matches!(error, ModelError::Transport { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "could not reach ollama: error sending request for url ({url}/v1/chat/completions)"
        )
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_without_a_retry() {
    let mock = Mock::start(vec![
        Reply::After(
            Duration::from_secs(2),
            Box::new(Reply::json(200, &text_completion("Late."))),
        ),
        Reply::json(200, &text_completion("Done.")),
    ])
    .await;
    let limit = Duration::from_millis(200);
    let started = Instant::now();
    let error = model_with(&mock, fast().timeout(limit))
        .generate(ask(question()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(&error, ModelError::Timeout { after, .. } if *after == limit),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "openai did not answer within 200ms");
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    let events = tool_calls_stream();
    let mock = Mock::start(vec![Reply::Stall {
        pieces: events[..5].iter().map(|e| e.clone().into()).collect(),
    }])
    .await;
    let model = model_with(&mock, fast().timeout(Duration::from_millis(300)));
    let (answer, pieces) = ask_streaming(&model, question()).await;
    assert_eq!(pieces, ["Let me", " check."]);
    let error = answer.unwrap_err();
    assert!(matches!(error, ModelError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn dropping_the_request_closes_the_connection() {
    let (url, got_request, closed) = common::silent_server().await;
    let model = OpenAiModel::builder("gpt-4o-mini")
        .api_key("sk-test")
        .base_url(format!("{url}/v1"))
        .build()
        .unwrap();
    let task = tokio::spawn(async move { model.generate(ask(question())).await });
    got_request.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .expect("the server should see the connection closed")
        .unwrap();
}

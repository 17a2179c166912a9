//! The Anthropic provider against a local server that speaks the Messages
//! API: what toolgate sends, how it reads answers (whole and streamed), and
//! how it handles failures.

mod common;

use std::time::Duration;

use common::{Mock, Reply, ask, ask_streaming, fast};
use expect_test::expect;
use serde_json::{Value, json};
use toolgate_core::{
    AiMessage, ChatModel, ChatRequest, FinishReason, Message, ModelError, ToolCall, ToolMessage,
    Usage,
};
use toolgate_models::anthropic::AnthropicModel;

fn model(mock: &Mock) -> AnthropicModel {
    AnthropicModel::builder("claude-sonnet-4-5")
        .api_key("sk-ant-test")
        .base_url(&mock.url)
        .http_options(fast())
        .build()
        .unwrap()
}

fn question() -> Vec<Message> {
    vec![Message::human(
        "how many emails did i get in the last 5 days? and send sally@gmail.com an email saying 'What's up homie'",
    )]
}

fn count_call() -> ToolCall {
    ToolCall::new(
        "toolu_01WbD8XeMoQaRFtsZezfsHor",
        "count_emails",
        json!({"last_n_days": 5}),
    )
}

fn send_call() -> ToolCall {
    ToolCall::new(
        "toolu_014XccHFzBiVcc9GV1harV9U",
        "send_email",
        json!({"recipient": "sally@gmail.com", "message": "What's up homie"}),
    )
}

/// The conversation after the model called both tools, one approved and
/// one not, and the person asked something more.
fn conversation() -> Vec<Message> {
    let mut messages = vec![Message::system("Answer briefly.")];
    messages.extend(question());
    messages.extend([
        AiMessage::with_tool_calls([count_call(), send_call()])
            .content("I'll count them and send the email.")
            .into(),
        ToolMessage::new("toolu_01WbD8XeMoQaRFtsZezfsHor", "10").into(),
        ToolMessage::error(
            "toolu_014XccHFzBiVcc9GV1harV9U",
            "The user did not approve this tool call.",
        )
        .into(),
        Message::human("Then just count them."),
        Message::system("Never send e-mail."),
    ]);
    messages
}

// Fixtures shaped like Anthropic's documented answers.

fn message(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": 472,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 91
        }
    })
}

fn tool_use_message() -> Value {
    message(
        json!([
            {"type": "text", "text": "I'll count them and send the email."},
            {"type": "tool_use", "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "name": "count_emails",
             "input": {"last_n_days": 5}},
            {"type": "tool_use", "id": "toolu_014XccHFzBiVcc9GV1harV9U", "name": "send_email",
             "input": {"recipient": "sally@gmail.com", "message": "What's up homie"}}
        ]),
        "tool_use",
    )
}

fn text_message(text: &str) -> Value {
    message(json!([{"type": "text", "text": text}]), "end_turn")
}

fn event(value: Value) -> String {
    format!(
        "event: {}\ndata: {value}\n\n",
        value["type"].as_str().unwrap()
    )
}

fn message_start() -> String {
    event(json!({"type": "message_start", "message": {
        "id": "msg_01Aq9w938a90dw8q", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 472, "output_tokens": 1}
    }}))
}

fn text_delta(index: usize, text: &str) -> String {
    event(json!({"type": "content_block_delta", "index": index,
        "delta": {"type": "text_delta", "text": text}}))
}

fn json_delta(index: usize, partial: &str) -> String {
    event(json!({"type": "content_block_delta", "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial}}))
}

fn block_stop(index: usize) -> String {
    event(json!({"type": "content_block_stop", "index": index}))
}

fn tool_start(index: usize, call: &ToolCall) -> String {
    event(json!({"type": "content_block_start", "index": index,
        "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}))
}

fn text_start(index: usize) -> String {
    event(json!({"type": "content_block_start", "index": index,
        "content_block": {"type": "text", "text": ""}}))
}

fn message_end(stop_reason: &str) -> [String; 2] {
    [
        event(json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": 91}})),
        event(json!({"type": "message_stop"})),
    ]
}

/// The tool-use answer as the API streams it, the JSON of the inputs cut
/// mid-key, mid-string and mid-number.
fn tool_use_stream() -> Vec<String> {
    let mut events = vec![
        message_start(),
        text_start(0),
        event(json!({"type": "ping"})),
        text_delta(0, "I'll count them"),
        text_delta(0, " and send the email."),
        block_stop(0),
        tool_start(1, &count_call()),
        json_delta(1, ""),
        json_delta(1, r#"{"last_n_d"#),
        json_delta(1, r#"ays": 5}"#),
        block_stop(1),
        tool_start(2, &send_call()),
        json_delta(2, r#"{"recipient": "sally@gm"#),
        json_delta(2, r#"ail.com", "message": "What's"#),
        json_delta(2, r#" up homie"}"#),
        block_stop(2),
    ];
    events.extend(message_end("tool_use"));
    events
}

fn expected_tool_use_answer() -> AiMessage {
    AiMessage::with_tool_calls([count_call(), send_call()])
        .content("I'll count them and send the email.")
        .usage(Usage {
            input_tokens: 472,
            output_tokens: 91,
        })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

#[tokio::test]
async fn sends_the_conversation_and_tools_as_messages() {
    let mock = Mock::start(vec![Reply::json(200, &text_message("Done."))]).await;
    model(&mock).generate(ask(conversation())).await.unwrap();
    let request = mock.only();
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], "sk-ant-test");
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(request.headers.get("authorization").is_none());
    expect![[r#"
        {
          "model": "claude-sonnet-4-5",
          "max_tokens": 4096,
          "system": "Answer briefly.\n\nNever send e-mail.",
          "messages": [
            {
              "role": "user",
              "content": "how many emails did i get in the last 5 days? and send sally@gmail.com an email saying 'What's up homie'"
            },
            {
              "role": "assistant",
              "content": [
                {
                  "type": "text",
                  "text": "I'll count them and send the email."
                },
                {
                  "type": "tool_use",
                  "id": "toolu_01WbD8XeMoQaRFtsZezfsHor",
                  "name": "count_emails",
                  "input": {
                    "last_n_days": 5
                  }
                },
                {
                  "type": "tool_use",
                  "id": "toolu_014XccHFzBiVcc9GV1harV9U",
                  "name": "send_email",
                  "input": {
                    "recipient": "sally@gmail.com",
                    "message": "What's up homie"
                  }
                }
              ]
            },
            {
              "role": "user",
              "content": [
                {
                  "type": "tool_result",
                  "tool_use_id": "toolu_01WbD8XeMoQaRFtsZezfsHor",
                  "content": "10",
                  "is_error": false
                },
                {
                  "type": "tool_result",
                  "tool_use_id": "toolu_014XccHFzBiVcc9GV1harV9U",
                  "content": "The user did not approve this tool call.",
                  "is_error": true
                },
                {
                  "type": "text",
                  "text": "Then just count them."
                }
              ]
            }
          ],
          "tools": [
            {
              "name": "count_emails",
              "description": "Dummy function to count number of e-mails. Returns 2 * last_n_days.",
              "input_schema": {
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
            },
            {
              "name": "send_email",
              "description": "Dummy function for sending an e-mail.",
              "input_schema": {
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
          ]
        }"#]].assert_eq(&pretty(&request.body));
}

#[tokio::test]
async fn streaming_requests_ask_for_a_stream_and_max_tokens_is_configurable() {
    let mut events = vec![
        message_start(),
        text_start(0),
        text_delta(0, "Done."),
        block_stop(0),
    ];
    events.extend(message_end("end_turn"));
    let mock = Mock::start(vec![Reply::events(&events)]).await;
    let model = AnthropicModel::builder("claude-haiku-4-5")
        .base_url(format!("{}/", mock.url))
        .max_tokens(512)
        .build()
        .unwrap();
    let (answer, _) = ask_streaming(&model, vec![Message::human("hi")]).await;
    assert_eq!(answer.unwrap().content, "Done.");
    let request = mock.only();
    assert!(request.headers.get("x-api-key").is_none());
    assert_eq!(request.body["model"], "claude-haiku-4-5");
    assert_eq!(request.body["max_tokens"], 512);
    assert_eq!(request.body["stream"], true);
    assert_eq!(
        request.body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );
    assert!(request.body.get("system").is_none());
}

#[tokio::test]
async fn requests_without_tools_leave_them_out() {
    let mock = Mock::start(vec![Reply::json(200, &text_message("Hi."))]).await;
    model(&mock)
        .generate(ChatRequest::new(vec![Message::human("hi")], vec![]))
        .await
        .unwrap();
    assert!(mock.only().body.get("tools").is_none());
}

#[tokio::test]
async fn tool_use_blocks_become_tool_calls() {
    let mock = Mock::start(vec![Reply::json(200, &tool_use_message())]).await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer, expected_tool_use_answer());
}

#[tokio::test]
async fn streamed_tool_use_is_assembled_into_the_same_answer() {
    let mock = Mock::start(vec![
        Reply::json(200, &tool_use_message()),
        Reply::events(&tool_use_stream()),
        Reply::events_cut_every(&tool_use_stream(), 9),
    ])
    .await;
    let model = model(&mock);
    let whole = model.generate(ask(question())).await.unwrap();
    let (streamed, pieces) = ask_streaming(&model, question()).await;
    assert_eq!(streamed.unwrap(), whole);
    assert_eq!(pieces, ["I'll count them", " and send the email."]);
    let (cut, _) = ask_streaming(&model, question()).await;
    assert_eq!(cut.unwrap(), expected_tool_use_answer());
}

#[tokio::test]
async fn a_tool_without_arguments_streams_no_json() {
    let call = ToolCall::new("toolu_01", "count_emails", json!({}));
    let mut events = vec![message_start(), tool_start(0, &call), block_stop(0)];
    events.extend(message_end("tool_use"));
    let mock = Mock::start(vec![Reply::events(&events)]).await;
    let (answer, pieces) = ask_streaming(&model(&mock), question()).await;
    assert!(pieces.is_empty());
    assert_eq!(answer.unwrap().tool_calls, [call]);
}

#[tokio::test]
async fn stop_reasons_are_mapped() {
    let replies = [
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "refusal",
        "pause_turn",
    ]
    .map(|reason| {
        Reply::json(
            200,
            &message(json!([{"type": "text", "text": "…"}]), reason),
        )
    });
    let mock = Mock::start(replies.to_vec()).await;
    let model = model(&mock);
    let mut reasons = Vec::new();
    for _ in 0..replies.len() {
        reasons.push(
            model
                .generate(ask(question()))
                .await
                .unwrap()
                .finish_reason
                .unwrap(),
        );
    }
    assert_eq!(
        reasons,
        [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Stop,
            FinishReason::ContentFilter,
            FinishReason::Other("pause_turn".into())
        ]
    );
}

#[tokio::test]
async fn streamed_text_reaches_the_sink_as_it_arrives() {
    let deltas = ["You got 1", "0 emails", " – in the last 5 days ", "🎉."];
    let mut events = vec![message_start(), text_start(0)];
    events.extend(deltas.iter().map(|d| text_delta(0, d)));
    events.push(block_stop(0));
    events.extend(message_end("max_tokens"));
    let mock = Mock::start(vec![Reply::events_cut_every(&events, 5)]).await;
    let (answer, pieces) = ask_streaming(&model(&mock), question()).await;
    assert_eq!(pieces, deltas);
    let expected = AiMessage::text("You got 10 emails – in the last 5 days 🎉.")
        .finish_reason(FinishReason::Length)
        .usage(Usage {
            input_tokens: 472,
            output_tokens: 91,
        });
    assert_eq!(answer.unwrap(), expected);
}

#[tokio::test]
async fn malformed_tool_input_is_an_error_naming_the_call() {
    let mut events = tool_use_stream();
    let last = events.iter().position(|e| e.contains("up homie")).unwrap();
    events[last] = json_delta(2, r#" up homie""#);
    let mut not_an_object = tool_use_message();
    not_an_object["content"][1]["input"] = json!("five");
    let mock = Mock::start(vec![
        Reply::events(&events),
        Reply::json(200, &not_an_object),
    ])
    .await;
    let model = model(&mock);
    let (answer, _) = ask_streaming(&model, question()).await;
    let error = answer.unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"the model's arguments for tool call `toolu_014XccHFzBiVcc9GV1harV9U` (send_email) are not valid JSON: EOF while parsing an object at line 1 column 61, in "{\"recipient\": \"sally@gmail.com\", \"message\": \"What's up homie\"""#
    );
    let error = model.generate(ask(question())).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the model's arguments for tool call `toolu_01WbD8XeMoQaRFtsZezfsHor` (count_emails) are not valid JSON: expected a JSON object, got `\"five\"`"
    );
}

#[tokio::test]
async fn a_stream_without_message_stop_is_an_error_not_a_partial_answer() {
    let events = tool_use_stream();
    let mock = Mock::start(vec![
        Reply::events(&events[..events.len() - 1]),
        Reply::events(&events[..8]),
    ])
    .await;
    let model = model(&mock);
    for _ in 0..2 {
        let (answer, _) = ask_streaming(&model, question()).await;
        assert_eq!(
            answer.unwrap_err().to_string(),
            "anthropic sent a response toolgate cannot read: the stream ended before `message_stop`, so the answer is incomplete; try again"
        );
    }
}

#[tokio::test]
async fn streams_out_of_order_are_reported() {
    let mut never_stopped = vec![message_start(), tool_start(0, &count_call())];
    never_stopped.push(json_delta(0, r#"{"last_n_days": 5}"#));
    never_stopped.extend(message_end("tool_use"));
    let mut delta_first = vec![message_start(), text_delta(0, "You")];
    delta_first.extend(message_end("end_turn"));
    let garbled = vec![
        message_start(),
        "event: content_block_start\ndata: {\"type\": \"content_block_start\"}\n\n".to_owned(),
    ];
    let mock = Mock::start(vec![
        Reply::events(&never_stopped),
        Reply::events(&delta_first),
        Reply::events(&garbled),
    ])
    .await;
    let model = model(&mock);
    let mut errors = Vec::new();
    for _ in 0..3 {
        errors.push(
            ask_streaming(&model, question())
                .await
                .0
                .unwrap_err()
                .to_string(),
        );
    }
    assert_eq!(
        errors,
        [
            "anthropic sent a response toolgate cannot read: the tool_use block 0 (id `toolu_01WbD8XeMoQaRFtsZezfsHor`) never stopped",
            "anthropic sent a response toolgate cannot read: a delta for content block 0 came before the block started",
            r#"anthropic sent a response toolgate cannot read: a `content_block_start` event is not what the Messages API sends (missing field `index`): "{\"type\": \"content_block_start\"}""#,
        ]
    );
}

#[tokio::test]
async fn error_events_become_errors() {
    let mock = Mock::start(vec![Reply::events(&[
        message_start(),
        text_start(0),
        text_delta(0, "You got"),
        event(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    ])])
    .await;
    let (answer, pieces) = ask_streaming(&model(&mock), question()).await;
    assert_eq!(pieces, ["You got"]);
    let error = answer.unwrap_err();
    assert!(
        matches!(&error, ModelError::Api { status: 529, .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "anthropic answered 529: Overloaded");
}

fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message},
           "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"})
}

#[tokio::test]
async fn overloads_are_retried() {
    let mock = Mock::start(vec![
        Reply::json(529, &anthropic_error("overloaded_error", "Overloaded")),
        Reply::json(200, &text_message("Done.")),
    ])
    .await;
    let answer = model(&mock).generate(ask(question())).await.unwrap();
    assert_eq!(answer.content, "Done.");
    assert_eq!(mock.received().len(), 2);
}

#[tokio::test]
async fn client_errors_are_reported_with_the_providers_message_and_not_retried() {
    let cases = [
        (
            400,
            "invalid_request_error",
            "messages: text content blocks must be non-empty",
        ),
        (401, "authentication_error", "invalid x-api-key"),
        (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        (404, "not_found_error", "model: claude-sonnet-9"),
    ];
    for (status, kind, text) in cases {
        let mock = Mock::start(vec![
            Reply::json(status, &anthropic_error(kind, text)),
            Reply::json(200, &text_message("Done.")),
        ])
        .await;
        let error = model(&mock).generate(ask(question())).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("anthropic answered {status}: {text}")
        );
        assert_eq!(mock.received().len(), 1, "{status} was retried");
    }
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let mock = Mock::start(vec![Reply::After(
        Duration::from_secs(2),
        Box::new(Reply::json(200, &text_message("Late."))),
    )])
    .await;
    let model = AnthropicModel::builder("claude-sonnet-4-5")
        .api_key("sk-ant-test")
        .base_url(&mock.url)
        .http_options(fast().timeout(Duration::from_millis(200)))
        .build()
        .unwrap();
    let error = model.generate(ask(question())).await.unwrap_err();
    assert_eq!(error.to_string(), "anthropic did not answer within 200ms");
}

#[test]
fn builders_refuse_what_cannot_work() {
    let error = AnthropicModel::builder("claude-sonnet-4-5")
        .max_tokens(0)
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "max_tokens is 0 for anthropic:claude-sonnet-4-5: allow at least 1 token (the default is 4096)"
    );
    let error = AnthropicModel::builder(" ").build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "no model name given for anthropic: name one, e.g. claude-sonnet-4-5"
    );
}

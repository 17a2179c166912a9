//! `toolgate run` end to end: the built binary against local servers that
//! play an OpenAI and an Anthropic model, with a fresh store and a policy
//! that asks about every call, approved through a terminal or refused
//! through a pipe.
//!
//! The mock models call `count_emails` for 5 days, then answer with what
//! the tool result said, so the printed answer shows that the tool ran (or
//! that the refusal reached the model).

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

mod common;

use common::Answer;

const PROMPT: &str = "how many emails did i get in the last 5 days?";
/// What the model is told when the person (`alice`) says no.
const REFUSAL: &str = "alice rejected this call.";
/// The end of the engine's approval question.
const PROMPT_END: &str =
    "Anything except 'Y'/'Yes', 'E' or 'R' (case-insensitive) will be treated as a no.\r\n >>>";
/// A policy that asks about every call, even read-only ones.
const ASK_ALL: &str = "[[policy.rules]]\ntool = \"*\"\naction = \"ask\"\n";

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    OpenAi,
    Anthropic,
}

/// What the model does after the question.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Calls `count_emails` once, then answers with the result.
    CountOnce,
    /// Calls `count_emails` with an argument of the wrong type.
    BadArguments,
    /// Calls `count_emails` again after every result.
    Forever,
    /// Refuses the key.
    BadKey,
}

struct Mock {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Holds the store and the configuration.
    dir: tempfile::TempDir,
    // Keeps the server running for the length of the test.
    _runtime: tokio::runtime::Runtime,
}

impl Mock {
    fn start(provider: Provider, behaviour: Behaviour) -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = (provider, behaviour, Arc::clone(&requests));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(answer).with_state(state);
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("toolgate.toml"), ASK_ALL).unwrap();
        Mock {
            url,
            requests,
            dir,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The environment that points `toolgate run` at this server, and only
    /// at it, with a fresh store and the ask-everything policy.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
        command
            .env_clear()
            .env("TOOLGATE_USER", "alice")
            .arg("--db")
            .arg(self.dir.path().join("toolgate.db"))
            .arg("--config")
            .arg(self.dir.path().join("toolgate.toml"))
            .env("OPENAI_API_KEY", "sk-dummy")
            .env("OPENAI_BASE_URL", format!("{}/v1", self.url))
            .env("ANTHROPIC_API_KEY", "sk-ant-dummy")
            .env("ANTHROPIC_BASE_URL", &self.url)
            .arg("run")
            .args(args);
        command
    }
}

type Shared = (Provider, Behaviour, Arc<Mutex<Vec<Value>>>);

async fn answer(
    State((provider, behaviour, requests)): State<Shared>,
    uri: Uri,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap();
    requests.lock().unwrap().push(body.clone());
    let expected_path = match provider {
        Provider::OpenAi => "/v1/chat/completions",
        Provider::Anthropic => "/v1/messages",
    };
    assert_eq!(uri.path(), expected_path);
    if let Behaviour::BadKey = behaviour {
        let error = match provider {
            Provider::OpenAi => {
                json!({"error": {"message": "Incorrect API key provided: sk-dummy.", "type": "invalid_request_error", "code": "invalid_api_key"}})
            }
            Provider::Anthropic => {
                json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
            }
        };
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(error.to_string()))
            .unwrap();
    }
    let turn = match last_tool_result(provider, &body) {
        None => Turn::Call(json!({"last_n_days": 5})),
        Some(_) if matches!(behaviour, Behaviour::Forever) => Turn::Call(json!({"last_n_days": 5})),
        Some((content, is_error)) => Turn::Say(if is_error {
            format!("I could not count your emails: {content}")
        } else {
            format!("You got {content} emails in the last 5 days.")
        }),
    };
    let turn = match (turn, behaviour) {
        (Turn::Call(_), Behaviour::BadArguments) => Turn::Call(json!({"last_n_days": "five"})),
        (turn, _) => turn,
    };
    let stream = body["stream"] == true;
    match (provider, stream) {
        (Provider::OpenAi, false) => json_response(openai_message(&turn)),
        (Provider::OpenAi, true) => sse_response(openai_events(&turn)),
        (Provider::Anthropic, false) => json_response(anthropic_message(&turn)),
        (Provider::Anthropic, true) => sse_response(anthropic_events(&turn)),
    }
}

enum Turn {
    Call(Value),
    Say(String),
}

/// The content of the last tool result, and whether it reports a failure
/// (only Anthropic's format can say so).
fn last_tool_result(provider: Provider, body: &Value) -> Option<(String, bool)> {
    let last = body["messages"].as_array().unwrap().last().unwrap();
    match provider {
        Provider::OpenAi => (last["role"] == "tool").then(|| {
            let content = last["content"].as_str().unwrap().to_owned();
            let refused = content == REFUSAL || content.starts_with("invalid arguments");
            (content, refused)
        }),
        Provider::Anthropic => {
            let result = last["content"]
                .as_array()?
                .iter()
                .find(|block| block["type"] == "tool_result")?;
            Some((
                result["content"].as_str().unwrap().to_owned(),
                result["is_error"] == true,
            ))
        }
    }
}

fn json_response(body: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn sse_response(events: Vec<String>) -> Response {
    let pieces = futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(pieces))
        .unwrap()
}

fn openai_message(turn: &Turn) -> Value {
    let (message, finish) = match turn {
        Turn::Call(args) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "count_emails", "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
        Turn::Say(text) => (json!({"role": "assistant", "content": text}), "stop"),
    };
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
}

fn openai_events(turn: &Turn) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    match turn {
        Turn::Call(args) => {
            let args = args.to_string();
            let (head, tail) = args.split_at(args.len() / 2);
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "count_emails", "arguments": head}}]}),
                None,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}),
                None,
            ));
            events.push(chunk(json!({}), Some("tool_calls")));
        }
        Turn::Say(text) => {
            for word in text.split_inclusive(' ') {
                events.push(chunk(json!({"content": word}), None));
            }
            events.push(chunk(json!({}), Some("stop")));
        }
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn anthropic_message(turn: &Turn) -> Value {
    let (content, stop) = match turn {
        Turn::Call(args) => (
            json!([{"type": "tool_use", "id": "toolu_1", "name": "count_emails", "input": args}]),
            "tool_use",
        ),
        Turn::Say(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
    };
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": content, "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5}})
}

fn anthropic_events(turn: &Turn) -> Vec<String> {
    let event = |value: Value| {
        format!(
            "event: {}\ndata: {value}\n\n",
            value["type"].as_str().unwrap()
        )
    };
    let mut events = vec![event(json!({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}))];
    let stop = match turn {
        Turn::Call(args) => {
            let args = args.to_string();
            let (head, tail) = args.split_at(args.len() / 2);
            events.push(event(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "count_emails", "input": {}}})));
            for part in [head, tail] {
                events.push(event(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
            "tool_use"
        }
        Turn::Say(text) => {
            events.push(event(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})));
            for word in text.split_inclusive(' ') {
                events.push(event(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": word}})));
            }
            "end_turn"
        }
    };
    events.push(event(json!({"type": "content_block_stop", "index": 0})));
    events.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 5}})));
    events.push(event(json!({"type": "message_stop"})));
    events
}

/// Runs `command` in a terminal, answers the approval prompt with
/// `answer`, and returns the screen and the exit code.
fn run_in_terminal(command: Command, answer: &'static str) -> (String, i32) {
    common::run_in_terminal(command, PROMPT_END, &[Answer::Line(answer)])
}

/// Runs `command` with `input` piped to it.
fn run_piped(command: Command, input: &str) -> Output {
    common::run_piped(command, input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The message toolgate sent back after the tool call, in OpenAI's format.
fn openai_tool_message(request: &Value) -> &Value {
    request["messages"].as_array().unwrap().last().unwrap()
}

/// The tool result toolgate sent back, in Anthropic's format.
fn anthropic_tool_result(request: &Value) -> &Value {
    let last = request["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "user");
    &last["content"][0]
}

#[test]
fn openai_approved_in_a_terminal_runs_the_tool_and_streams_the_answer() {
    let mock = Mock::start(Provider::OpenAi, Behaviour::CountOnce);
    let command = mock.command(&["--model", "openai:gpt-4o-mini", PROMPT]);
    let (screen, code) = run_in_terminal(command, "y");
    assert!(screen.contains("\"name\": \"count_emails\""), "{screen}");
    assert!(
        screen.ends_with("You got 10 emails in the last 5 days.\r\n"),
        "{screen}"
    );
    assert_eq!(code, 0, "{screen}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r["stream"] == true),
        "{requests:#?}"
    );
    assert_eq!(requests[0]["model"], "gpt-4o-mini");
    assert_eq!(
        openai_tool_message(&requests[1]),
        &json!({"role": "tool", "tool_call_id": "call_1", "content": "10"})
    );
}

#[test]
fn no_stream_in_a_terminal_asks_for_whole_answers() {
    let mock = Mock::start(Provider::OpenAi, Behaviour::CountOnce);
    let command = mock.command(&["--no-stream", "--model", "openai:gpt-4o-mini", PROMPT]);
    let (screen, code) = run_in_terminal(command, "yes");
    assert!(
        screen.ends_with("You got 10 emails in the last 5 days.\r\n"),
        "{screen}"
    );
    assert_eq!(code, 0, "{screen}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.get("stream").is_none()),
        "{requests:#?}"
    );
}

#[test]
fn anthropic_approved_in_a_terminal_runs_the_tool_and_streams_the_answer() {
    let mock = Mock::start(Provider::Anthropic, Behaviour::CountOnce);
    let command = mock.command(&["--model", "anthropic:claude-sonnet-4-5", PROMPT]);
    let (screen, code) = run_in_terminal(command, "Y");
    assert!(
        screen.ends_with("You got 10 emails in the last 5 days.\r\n"),
        "{screen}"
    );
    assert_eq!(code, 0, "{screen}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r["stream"] == true),
        "{requests:#?}"
    );
    assert_eq!(
        anthropic_tool_result(&requests[1]),
        &json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "10", "is_error": false})
    );
}

#[test]
fn a_piped_no_is_sent_to_the_model_and_exits_3() {
    let mock = Mock::start(Provider::Anthropic, Behaviour::CountOnce);
    let output = run_piped(
        mock.command(&["--model", "anthropic:claude-sonnet-4-5", PROMPT]),
        "no\n",
    );
    let stdout = text(&output.stdout);
    assert!(stdout.contains(" >>> no\n"), "{stdout}");
    // Asked why; the end of input gives no reason.
    assert!(
        stdout.contains("Why? (the model is told; press Enter to give no reason)\n >>> \n"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(&format!("I could not count your emails: {REFUSAL}\n")),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    // A pipe is no terminal: no streaming unless asked for.
    assert!(
        requests.iter().all(|r| r.get("stream").is_none()),
        "{requests:#?}"
    );
    assert_eq!(
        anthropic_tool_result(&requests[1]),
        &json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": REFUSAL, "is_error": true})
    );
}

#[test]
fn a_piped_no_with_stream_reaches_an_openai_model_too() {
    let mock = Mock::start(Provider::OpenAi, Behaviour::CountOnce);
    let output = run_piped(
        mock.command(&["--stream", "--model", "openai:gpt-4o-mini", PROMPT]),
        "nope\n",
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.ends_with(&format!("I could not count your emails: {REFUSAL}\n")),
        "{stdout}"
    );
    let requests = mock.requests();
    assert!(
        requests.iter().all(|r| r["stream"] == true),
        "{requests:#?}"
    );
    assert_eq!(
        openai_tool_message(&requests[1]),
        &json!({"role": "tool", "tool_call_id": "call_1", "content": REFUSAL})
    );
}

#[test]
fn a_failing_tool_call_is_reported_to_the_model() {
    let mock = Mock::start(Provider::Anthropic, Behaviour::BadArguments);
    let output = run_piped(
        mock.command(&["--model", "anthropic:claude-sonnet-4-5", PROMPT]),
        "y\n",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let result = anthropic_tool_result(&mock.requests()[1]).clone();
    assert_eq!(result["is_error"], true);
    let content = result["content"].as_str().unwrap();
    assert!(
        content.starts_with("invalid arguments for tool `count_emails`: `last_n_days`:"),
        "{content}"
    );
    // Invalid arguments never reach a person: nothing was asked.
    assert!(
        !text(&output.stdout).contains(">>>"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr).contains("invalid arguments for tool `count_emails`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_seed_script_counts_ten_emails() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../toolgate/seed/script.json");
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
    // The model comes from the environment when --model is not given.
    command
        .env_clear()
        .env("TOOLGATE_MODEL", format!("scripted:{script}"))
        .arg("--db")
        .arg(dir.path().join("toolgate.db"))
        .args(["run", PROMPT]);
    let output = run_piped(command, "");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // `count_emails` says it is read-only, so with no policy it runs
    // without asking.
    assert_eq!(
        text(&output.stdout),
        "You got 10 emails in the last 5 days.\n"
    );
}

#[test]
fn max_turns_bounds_the_loop() {
    let mock = Mock::start(Provider::OpenAi, Behaviour::Forever);
    let output = run_piped(
        mock.command(&["--max-turns", "2", "--model", "openai:gpt-4o-mini", PROMPT]),
        "y\ny\ny\n",
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "error: the model `openai:gpt-4o-mini` was still calling tools after 2 answers; pass a larger --max-turns to let it go on (run "
        ),
        "{stderr}"
    );
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn without_a_model_it_says_how_to_name_one() {
    let output = run_piped(
        {
            let mut command = Command::new(env!("CARGO_BIN_EXE_toolgate"));
            command.env_clear().args(["run", PROMPT]);
            command
        },
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "error: no model given: pass --model PROVIDER:MODEL or set TOOLGATE_MODEL (e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, scripted:PATH)\n"
    );
}

#[test]
fn a_missing_key_says_what_to_set() {
    let mock = Mock::start(Provider::OpenAi, Behaviour::CountOnce);
    let mut command = mock.command(&["--model", "openai:gpt-4o-mini", PROMPT]);
    command.env_remove("OPENAI_API_KEY");
    let output = run_piped(command, "");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        "error: cannot use the model `openai:gpt-4o-mini`: OPENAI_API_KEY is not set: export OPENAI_API_KEY=… (a key from https://platform.openai.com/api-keys), or use ollama:MODEL for a local server\n"
    );
    assert!(mock.requests().is_empty());
}

#[test]
fn a_refused_key_shows_the_providers_message_and_what_to_check() {
    for (provider, spec, message) in [
        (
            Provider::OpenAi,
            "openai:gpt-4o-mini",
            "error: the model `openai:gpt-4o-mini` gave no answer (check the key in OPENAI_API_KEY): openai answered 401: Incorrect API key provided: sk-dummy.; run ",
        ),
        (
            Provider::Anthropic,
            "anthropic:claude-sonnet-4-5",
            "error: the model `anthropic:claude-sonnet-4-5` gave no answer (check the key in ANTHROPIC_API_KEY): anthropic answered 401: invalid x-api-key; run ",
        ),
    ] {
        let mock = Mock::start(provider, Behaviour::BadKey);
        let output = run_piped(mock.command(&["--model", spec, PROMPT]), "");
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with(message), "{stderr}");
        assert!(
            stderr.contains(" is kept, continue it with `toolgate runs resume "),
            "{stderr}"
        );
        assert_eq!(mock.requests().len(), 1, "a refused key is not retried");
    }
}

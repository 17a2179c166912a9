//! Model specs (`openai:MODEL`, …) reach the server, with the key, that the
//! environment names.

mod common;

use common::{Mock, Reply, ask};
use serde_json::json;
use toolgate_core::Message;
use toolgate_models::from_spec_with_env;

fn env(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    }
}

fn chat_completion(text: &str) -> serde_json::Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}]})
}

#[tokio::test]
async fn openai_specs_use_the_key_and_base_url_from_the_environment() {
    let mock = Mock::start(vec![Reply::json(200, &chat_completion("Hi from OpenAI."))]).await;
    let model = from_spec_with_env(
        "openai:gpt-4o-mini",
        env(vec![
            ("OPENAI_API_KEY", "sk-from-env".into()),
            ("OPENAI_BASE_URL", format!("{}/v1", mock.url)),
            ("ANTHROPIC_API_KEY", "sk-ant-wrong".into()),
        ]),
    )
    .unwrap();
    let answer = model
        .generate(ask(vec![Message::human("hi")]))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hi from OpenAI.");
    let request = mock.only();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], "Bearer sk-from-env");
    assert_eq!(request.body["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn anthropic_specs_use_the_key_and_base_url_from_the_environment() {
    let reply = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": "Hi from Claude."}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 2}});
    let mock = Mock::start(vec![Reply::json(200, &reply)]).await;
    let model = from_spec_with_env(
        "anthropic:claude-sonnet-4-5",
        env(vec![
            ("ANTHROPIC_API_KEY", "sk-ant-from-env".into()),
            ("ANTHROPIC_BASE_URL", mock.url.clone()),
            ("OPENAI_API_KEY", "sk-wrong".into()),
        ]),
    )
    .unwrap();
    let answer = model
        .generate(ask(vec![Message::human("hi")]))
        .await
        .unwrap();
    assert_eq!(answer.content, "Hi from Claude.");
    let request = mock.only();
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], "sk-ant-from-env");
    assert_eq!(request.body["model"], "claude-sonnet-4-5");
    assert_eq!(request.body["max_tokens"], 4096);
}

#[tokio::test]
async fn ollama_specs_need_no_key_and_name_ollama_in_errors() {
    let not_found = json!({"error": {"message": "model \"llama9\" not found, try pulling it first",
        "type": "api_error", "param": null, "code": null}});
    let mock = Mock::start(vec![Reply::json(404, &not_found)]).await;
    let model = from_spec_with_env(
        "ollama:llama9",
        env(vec![
            ("OLLAMA_BASE_URL", format!("{}/v1", mock.url)),
            ("OPENAI_API_KEY", "sk-must-not-leak".into()),
        ]),
    )
    .unwrap();
    let error = model
        .generate(ask(vec![Message::human("hi")]))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "ollama answered 404: model \"llama9\" not found, try pulling it first"
    );
    let request = mock.only();
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.body["model"], "llama9");
}

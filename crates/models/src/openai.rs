//! OpenAI's Chat Completions API, and every server that speaks it: OpenAI,
//! Ollama (`http://localhost:11434/v1`), vLLM, the llama.cpp server, LM
//! Studio.
//!
//! ```no_run
//! use toolgate_models::openai::OpenAiModel;
//!
//! # fn main() -> Result<(), toolgate_core::ModelError> {
//! let openai = OpenAiModel::builder("gpt-4o-mini").api_key("sk-…").build()?;
//! let local = OpenAiModel::builder("llama3.2")
//!     .base_url("http://localhost:11434/v1")
//!     .provider_name("ollama")
//!     .build()?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use toolgate_core::{
    AiMessage, ChatModel, ChatRequest, FinishReason, Message, ModelError, TextSink, ToolCall, Usage,
};

use crate::http::{Http, HttpOptions, endpoint, null_as_default};

/// Where OpenAI's API is.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Where a local Ollama serves its OpenAI-compatible API.
pub const OLLAMA_BASE_URL: &str = "http://localhost:11434/v1";

/// A chat model behind an OpenAI-compatible Chat Completions endpoint.
#[derive(Clone)]
pub struct OpenAiModel {
    http: Http,
    url: String,
    api_key: Option<String>,
    model: String,
}

impl fmt::Debug for OpenAiModel {
    // By hand, so that the API key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("provider", &self.http.provider())
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Sets up an [`OpenAiModel`]; see [`OpenAiModel::builder`].
#[derive(Clone)]
pub struct OpenAiBuilder {
    model: String,
    base_url: String,
    api_key: Option<String>,
    provider: String,
    http: HttpOptions,
}

impl fmt::Debug for OpenAiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBuilder")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .field("provider", &self.provider)
            .field("http", &self.http)
            .finish()
    }
}

impl OpenAiModel {
    /// A builder for `model` (e.g. `gpt-4o-mini`) at OpenAI, without a key;
    /// set one with [`OpenAiBuilder::api_key`], or point
    /// [`OpenAiBuilder::base_url`] at a local server that needs none.
    pub fn builder(model: impl Into<String>) -> OpenAiBuilder {
        OpenAiBuilder {
            model: model.into(),
            base_url: OPENAI_BASE_URL.to_owned(),
            api_key: None,
            provider: "openai".to_owned(),
            http: HttpOptions::default(),
        }
    }

    /// The model's name, as sent to the server.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl OpenAiBuilder {
    /// The API key, sent as `Authorization: Bearer KEY`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The API's base URL, the part before `/chat/completions`
    /// (default [`OPENAI_BASE_URL`]).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The provider's name in error messages (default `openai`).
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.provider = name.into();
        self
    }

    /// Time limits and retries.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The model; fails when the model name is empty or the base URL is not
    /// a URL.
    pub fn build(self) -> Result<OpenAiModel, ModelError> {
        if self.model.trim().is_empty() {
            return Err(ModelError::Config {
                message: format!(
                    "no model name given for {}: name one, e.g. gpt-4o-mini",
                    self.provider
                ),
            });
        }
        let url = endpoint(&self.provider, &self.base_url, "chat/completions")?;
        Ok(OpenAiModel {
            http: Http::new(&self.provider, self.http)?,
            url,
            api_key: self.api_key,
            model: self.model,
        })
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        let stream = request.on_text.is_some();
        let body = self.body(&request, stream);
        let response = self
            .http
            .send(|| {
                let builder = self.http.client().post(&self.url).json(&body);
                match &self.api_key {
                    Some(key) => builder.bearer_auth(key),
                    None => builder,
                }
            })
            .await?;
        match &request.on_text {
            Some(sink) => self.read_stream(response, sink).await,
            None => {
                let completion: Completion = self.http.json(response).await?;
                self.answer(completion)
            }
        }
    }
}

impl OpenAiModel {
    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": tool.parameters,
                        }
                    })
                })
                .collect();
            body["tool_choice"] = json!("auto");
        }
        if stream {
            body["stream"] = json!(true);
            // Without it the stream carries no token counts, and a streamed
            // answer would differ from the same answer unstreamed.
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    fn answer(&self, completion: Completion) -> Result<AiMessage, ModelError> {
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(self.http.invalid("the answer has no choices"));
        };
        let mut answer = AiMessage::default();
        answer.content = choice
            .message
            .content
            .or(choice.message.refusal)
            .unwrap_or_default();
        for (index, call) in choice.message.tool_calls.into_iter().enumerate() {
            let id = call.id.unwrap_or_else(|| missing_id(index));
            let args = tool_arguments(&id, &call.function.name, call.function.arguments)?;
            answer
                .tool_calls
                .push(ToolCall::new(id, call.function.name, args));
        }
        answer.finish_reason = choice.finish_reason.as_deref().map(finish_reason);
        answer.usage = completion.usage.map(Usage::from);
        Ok(answer)
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        on_text: &TextSink,
    ) -> Result<AiMessage, ModelError> {
        let mut events = std::pin::pin!(self.http.events(response));
        let mut content = String::new();
        let mut calls: BTreeMap<usize, PartialCall> = BTreeMap::new();
        let mut finish = None;
        let mut usage = None;
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = event?;
            let data = event.data.trim();
            if data == "[DONE]" {
                done = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|error| {
                self.http.invalid(format!(
                    "a streamed chunk is not what Chat Completions sends ({error}): {}",
                    crate::http::snippet(data)
                ))
            })?;
            if let Some(error) = chunk.error {
                let message = match error.get("message").and_then(Value::as_str) {
                    Some(message) => message.to_owned(),
                    None => error.to_string(),
                };
                return Err(self
                    .http
                    .invalid(format!("the stream stopped with an error: {message}")));
            }
            if let Some(chunk_usage) = chunk.usage {
                usage = Some(Usage::from(chunk_usage));
            }
            // One answer is asked for, so only the first choice counts.
            let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
                continue;
            };
            if let Some(text) = choice.delta.content.or(choice.delta.refusal)
                && !text.is_empty()
            {
                on_text(&text);
                content.push_str(&text);
            }
            for (position, delta) in choice.delta.tool_calls.into_iter().enumerate() {
                let call = calls.entry(delta.index.unwrap_or(position)).or_default();
                if let Some(id) = delta.id.filter(|id| !id.is_empty()) {
                    call.id = Some(id);
                }
                if let Some(function) = delta.function {
                    if let Some(name) = function.name.filter(|name| !name.is_empty()) {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                finish = Some(finish_reason(&reason));
            }
        }
        if !done {
            return Err(self.http.invalid(
                "the stream ended before `data: [DONE]`, so the answer is incomplete; try again",
            ));
        }
        let mut answer = AiMessage::default();
        answer.content = content;
        for (position, (index, call)) in calls.into_iter().enumerate() {
            let id = call.id.unwrap_or_else(|| missing_id(position));
            if call.name.is_empty() {
                return Err(self.http.invalid(format!(
                    "streamed tool call {index} (id `{id}`) has no function name"
                )));
            }
            let args = tool_arguments(&id, &call.name, Value::String(call.arguments))?;
            answer.tool_calls.push(ToolCall::new(id, call.name, args));
        }
        answer.finish_reason = finish;
        answer.usage = usage;
        Ok(answer)
    }
}

/// An id for a call from a server that sent none (some local servers do):
/// toolgate needs one to pair the call with its result.
fn missing_id(index: usize) -> String {
    format!("call_{index}")
}

/// Parses the arguments of a tool call, which Chat Completions sends as a
/// JSON text; some compatible servers send the object itself.
fn tool_arguments(call_id: &str, tool: &str, arguments: Value) -> Result<Value, ModelError> {
    let invalid = |message: String| ModelError::InvalidToolArguments {
        call_id: call_id.to_owned(),
        tool: tool.to_owned(),
        message,
    };
    let value = match arguments {
        Value::String(text) if text.trim().is_empty() => {
            return Err(invalid(
                "the arguments are empty; expected a JSON object".to_owned(),
            ));
        }
        Value::String(text) => serde_json::from_str::<Value>(&text)
            .map_err(|error| invalid(format!("{error}, in {}", crate::http::snippet(&text))))?,
        other => other,
    };
    if value.is_object() {
        Ok(value)
    } else {
        Err(invalid(format!("expected a JSON object, got `{value}`")))
    }
}

pub(crate) fn wire_message(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({"role": "system", "content": content}),
        Message::Human { content } => json!({"role": "user", "content": content}),
        Message::Ai(ai) => {
            let mut wire = json!({"role": "assistant"});
            // OpenAI wants `null`, not "", beside tool calls.
            wire["content"] = if ai.content.is_empty() && !ai.tool_calls.is_empty() {
                Value::Null
            } else {
                json!(ai.content)
            };
            if !ai.tool_calls.is_empty() {
                wire["tool_calls"] = ai
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": Value::Object(call.args.clone()).to_string(),
                            }
                        })
                    })
                    .collect();
            }
            wire
        }
        // Chat Completions has no field for a failed call: the text says it.
        Message::Tool(result) => json!({
            "role": "tool",
            "tool_call_id": result.tool_call_id,
            "content": result.content,
        }),
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        // `function_call` is the name from before parallel tool calls.
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    content: Option<String>,
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<DeltaToolCall>,
}

#[derive(Deserialize)]
struct DeltaToolCall {
    index: Option<usize>,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

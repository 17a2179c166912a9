//! Anthropic's Messages API.
//!
//! ```no_run
//! use toolgate_models::anthropic::AnthropicModel;
//!
//! # fn main() -> Result<(), toolgate_core::ModelError> {
//! let claude = AnthropicModel::builder("claude-sonnet-4-5")
//!     .api_key("sk-ant-…")
//!     .max_tokens(8192)
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

use crate::http::{Http, HttpOptions, endpoint, null_as_default, snippet};

/// Where Anthropic's API is: the part before `/v1/messages`.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The API version toolgate speaks, sent as `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The default limit on the length of an answer, in tokens; the API
/// requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A chat model behind Anthropic's Messages API.
#[derive(Clone)]
pub struct AnthropicModel {
    http: Http,
    url: String,
    api_key: Option<String>,
    model: String,
    max_tokens: u32,
}

impl fmt::Debug for AnthropicModel {
    // By hand, so that the API key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicModel")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Sets up an [`AnthropicModel`]; see [`AnthropicModel::builder`].
#[derive(Clone)]
pub struct AnthropicBuilder {
    model: String,
    base_url: String,
    api_key: Option<String>,
    max_tokens: u32,
    http: HttpOptions,
}

impl fmt::Debug for AnthropicBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicBuilder")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .field("max_tokens", &self.max_tokens)
            .field("http", &self.http)
            .finish()
    }
}

impl AnthropicModel {
    /// A builder for `model` (e.g. `claude-sonnet-4-5`); set the key with
    /// [`AnthropicBuilder::api_key`].
    pub fn builder(model: impl Into<String>) -> AnthropicBuilder {
        AnthropicBuilder {
            model: model.into(),
            base_url: ANTHROPIC_BASE_URL.to_owned(),
            api_key: None,
            max_tokens: DEFAULT_MAX_TOKENS,
            http: HttpOptions::default(),
        }
    }

    /// The model's name, as sent to the API.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl AnthropicBuilder {
    /// The API key, sent as `x-api-key`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The API's base URL, the part before `/v1/messages` (default
    /// [`ANTHROPIC_BASE_URL`]).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The longest answer, in tokens (default [`DEFAULT_MAX_TOKENS`]).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Time limits and retries.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The model; fails when the model name is empty, `max_tokens` is 0 or
    /// the base URL is not a URL.
    pub fn build(self) -> Result<AnthropicModel, ModelError> {
        if self.model.trim().is_empty() {
            return Err(ModelError::Config {
                message: "no model name given for anthropic: name one, e.g. claude-sonnet-4-5"
                    .to_owned(),
            });
        }
        if self.max_tokens == 0 {
            return Err(ModelError::Config {
                message: format!(
                    "max_tokens is 0 for anthropic:{}: allow at least 1 token (the default is {DEFAULT_MAX_TOKENS})",
                    self.model
                ),
            });
        }
        Ok(AnthropicModel {
            url: endpoint("anthropic", &self.base_url, "v1/messages")?,
            http: Http::new("anthropic", self.http)?,
            api_key: self.api_key,
            model: self.model,
            max_tokens: self.max_tokens,
        })
    }
}

#[async_trait]
impl ChatModel for AnthropicModel {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        let stream = request.on_text.is_some();
        let body = self.body(&request, stream);
        let response = self
            .http
            .send(|| {
                let builder = self
                    .http
                    .client()
                    .post(&self.url)
                    .header("anthropic-version", ANTHROPIC_VERSION)
                    .json(&body);
                match &self.api_key {
                    Some(key) => builder.header("x-api-key", key),
                    None => builder,
                }
            })
            .await?;
        match &request.on_text {
            Some(sink) => self.read_stream(response, sink).await,
            None => {
                let answer: WireResponse = self.http.json(response).await?;
                answer_of(answer)
            }
        }
    }
}

impl AnthropicModel {
    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let (system, messages) = wire_messages(&request.messages);
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
        });
        if let Some(system) = system {
            body["system"] = json!(system);
        }
        body["messages"] = json!(messages);
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.parameters,
                    })
                })
                .collect();
        }
        if stream {
            body["stream"] = json!(true);
        }
        body
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        on_text: &TextSink,
    ) -> Result<AiMessage, ModelError> {
        let mut events = std::pin::pin!(self.http.events(response));
        let mut blocks: BTreeMap<usize, StreamBlock> = BTreeMap::new();
        let mut finish = None;
        let mut usage: Option<Usage> = None;
        let mut stopped = false;
        while let Some(event) = events.next().await {
            let event = event?;
            if event.data.trim().is_empty() {
                continue;
            }
            let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|error| {
                self.http.invalid(format!(
                    "a `{}` event is not what the Messages API sends ({error}): {}",
                    event.event,
                    snippet(&event.data)
                ))
            })?;
            match parsed {
                StreamEvent::MessageStart { message } => {
                    usage = message.usage.map(Usage::from);
                }
                StreamEvent::ContentBlockStart {
                    index,
                    content_block,
                } => {
                    let block = match content_block {
                        Block::Text { text } => {
                            if !text.is_empty() {
                                on_text(&text);
                            }
                            StreamBlock::Text(text)
                        }
                        Block::ToolUse { id, name, input } => {
                            StreamBlock::ToolUse(Box::new(ToolUseBlock {
                                id,
                                name,
                                start: input,
                                json: String::new(),
                                call: None,
                            }))
                        }
                        Block::Other => StreamBlock::Other,
                    };
                    blocks.insert(index, block);
                }
                StreamEvent::ContentBlockDelta { index, delta } => {
                    let block = blocks.get_mut(&index).ok_or_else(|| {
                        self.http.invalid(format!(
                            "a delta for content block {index} came before the block started"
                        ))
                    })?;
                    match (block, delta) {
                        (StreamBlock::Text(text), BlockDelta::TextDelta { text: piece }) => {
                            on_text(&piece);
                            text.push_str(&piece);
                        }
                        (
                            StreamBlock::ToolUse(block),
                            BlockDelta::InputJsonDelta { partial_json },
                        ) => block.json.push_str(&partial_json),
                        // Thinking, signatures, citations: not part of the
                        // answer toolgate passes on.
                        _ => {}
                    }
                }
                StreamEvent::ContentBlockStop { index } => {
                    if let Some(StreamBlock::ToolUse(block)) = blocks.get_mut(&index) {
                        let ToolUseBlock {
                            id,
                            name,
                            start,
                            json,
                            call,
                        } = &mut **block;
                        // A tool without arguments streams no JSON at all;
                        // the block's start then holds its (empty) input.
                        let input = if json.trim().is_empty() {
                            start.clone()
                        } else {
                            serde_json::from_str(json).map_err(|error| {
                                ModelError::InvalidToolArguments {
                                    call_id: id.clone(),
                                    tool: name.clone(),
                                    message: format!("{error}, in {}", snippet(json)),
                                }
                            })?
                        };
                        *call = Some(tool_call(id, name, input)?);
                    }
                }
                StreamEvent::MessageDelta {
                    delta,
                    usage: delta_usage,
                } => {
                    if let Some(reason) = delta.stop_reason {
                        finish = Some(finish_reason(&reason));
                    }
                    if let Some(delta_usage) = delta_usage {
                        let total = usage.get_or_insert_with(Usage::default);
                        // Counts in `message_delta` are running totals.
                        if let Some(input) = delta_usage.input_tokens {
                            total.input_tokens = input;
                        }
                        if let Some(output) = delta_usage.output_tokens {
                            total.output_tokens = output;
                        }
                    }
                }
                StreamEvent::MessageStop => {
                    stopped = true;
                    break;
                }
                StreamEvent::Error { error } => return Err(stream_error(error)),
                StreamEvent::Ping | StreamEvent::Other => {}
            }
        }
        if !stopped {
            return Err(self.http.invalid(
                "the stream ended before `message_stop`, so the answer is incomplete; try again",
            ));
        }
        let mut answer = AiMessage::default();
        for (index, block) in blocks {
            match block {
                StreamBlock::Text(text) => answer.content.push_str(&text),
                StreamBlock::ToolUse(block) => match block.call {
                    Some(call) => answer.tool_calls.push(call),
                    None => {
                        return Err(self.http.invalid(format!(
                            "the tool_use block {index} (id `{}`) never stopped",
                            block.id
                        )));
                    }
                },
                StreamBlock::Other => {}
            }
        }
        answer.finish_reason = finish;
        answer.usage = usage;
        Ok(answer)
    }
}

fn answer_of(response: WireResponse) -> Result<AiMessage, ModelError> {
    let mut answer = AiMessage::default();
    for block in response.content {
        match block {
            Block::Text { text } => answer.content.push_str(&text),
            Block::ToolUse { id, name, input } => {
                answer.tool_calls.push(tool_call(&id, &name, input)?);
            }
            Block::Other => {}
        }
    }
    answer.finish_reason = response.stop_reason.as_deref().map(finish_reason);
    answer.usage = response.usage.map(Usage::from);
    Ok(answer)
}

fn tool_call(id: &str, name: &str, input: Value) -> Result<ToolCall, ModelError> {
    if !input.is_object() {
        return Err(ModelError::InvalidToolArguments {
            call_id: id.to_owned(),
            tool: name.to_owned(),
            message: format!("expected a JSON object, got `{input}`"),
        });
    }
    Ok(ToolCall::new(id, name, input))
}

/// An `error` event: the same error an HTTP status would have carried, had
/// it come before the stream began.
fn stream_error(error: WireError) -> ModelError {
    let status = match error.kind.as_str() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    };
    ModelError::Api {
        provider: "anthropic".to_owned(),
        status,
        message: error.message,
    }
}

/// The system prompt, and the conversation as alternating user and
/// assistant turns.
fn wire_messages(messages: &[Message]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match turns.last_mut() {
        // Consecutive tool results (and anything else of one role) form one
        // turn: the API wants every result of a turn's calls in the next.
        Some((last, blocks)) if *last == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    };
    for message in messages {
        match message {
            Message::System { content } => system.push(content),
            Message::Human { content } => {
                push("user", json!({"type": "text", "text": content}));
            }
            Message::Ai(ai) => {
                if !ai.content.is_empty() {
                    push("assistant", json!({"type": "text", "text": ai.content}));
                }
                for call in &ai.tool_calls {
                    push(
                        "assistant",
                        json!({
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.name,
                            "input": call.args,
                        }),
                    );
                }
            }
            Message::Tool(result) => push(
                "user",
                json!({
                    "type": "tool_result",
                    "tool_use_id": result.tool_call_id,
                    "content": result.content,
                    "is_error": result.is_error,
                }),
            ),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            let content = match blocks.as_mut_slice() {
                [only] if only["type"] == "text" => only["text"].take(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, messages)
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: Option<DeltaUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: WireError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

enum StreamBlock {
    Text(String),
    ToolUse(Box<ToolUseBlock>),
    Other,
}

/// A `tool_use` block as it streams in.
struct ToolUseBlock {
    id: String,
    name: String,
    /// The input the block started with, `{}` in practice.
    start: Value,
    /// The pieces of the input's JSON so far.
    json: String,
    /// The finished call, once the block stopped.
    call: Option<ToolCall>,
}

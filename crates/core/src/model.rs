//! The chat model trait, and a model bound to a set of tools.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{BoxError, Result};
use crate::message::{AiMessage, Messages};
use crate::runnable::Runnable;
use crate::tool::{ToolSpec, Tools};

/// Receives text as a streaming model produces it.
pub type TextSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What a chat model is asked: the conversation and the tools it may call.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<crate::Message>,
    /// The tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// When set, the model streams its answer and passes each piece of text
    /// here as it arrives; the returned message is the same either way.
    pub on_text: Option<TextSink>,
}

impl fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatRequest")
            .field("messages", &self.messages)
            .field("tools", &self.tools)
            .field("streaming", &self.on_text.is_some())
            .finish()
    }
}

impl ChatRequest {
    /// A request with these messages and tools.
    pub fn new(messages: Vec<crate::Message>, tools: Vec<ToolSpec>) -> Self {
        ChatRequest {
            messages,
            tools,
            on_text: None,
        }
    }

    /// Streams the answer's text into `sink`.
    pub fn on_text(mut self, sink: TextSink) -> Self {
        self.on_text = Some(sink);
        self
    }
}

/// A chat model: turns a conversation and tool specs into an answer.
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a toolgate chat model",
    note = "implement `toolgate::ChatModel`, or use a provider from `toolgate::models`"
)]
pub trait ChatModel: Send + Sync {
    /// Asks the model for its next message.
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError>;
}

#[async_trait]
impl<M: ChatModel + ?Sized> ChatModel for Arc<M> {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        (**self).generate(request).await
    }
}

#[async_trait]
impl<M: ChatModel + ?Sized> ChatModel for Box<M> {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        (**self).generate(request).await
    }
}

/// `bind_tools` for every chat model.
pub trait ChatModelExt: ChatModel + Sized {
    /// This model, told about `tools` on every call: the first step of the
    /// seed's chain, `model.bind_tools(&tools) | human_approval() | call_tools(&tools)`.
    fn bind_tools(self, tools: &Tools) -> BoundModel<Self> {
        BoundModel {
            model: self,
            tools: tools.specs(),
        }
    }
}

impl<M: ChatModel + Sized> ChatModelExt for M {}

/// A chat model with tools bound; a [`Runnable`] from messages to the
/// model's answer.
#[derive(Debug, Clone)]
pub struct BoundModel<M> {
    model: M,
    tools: Vec<ToolSpec>,
}

impl<M> BoundModel<M> {
    /// The specs of the bound tools.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

impl<M: ChatModel> Runnable for BoundModel<M> {
    type Input = Messages;
    type Output = AiMessage;

    async fn invoke(&self, input: impl Into<Messages> + Send) -> Result<AiMessage> {
        let request = ChatRequest::new(input.into().0, self.tools.clone());
        Ok(self.model.generate(request).await?)
    }
}

/// Why a model gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model is not set up right: a missing key, an unknown provider.
    /// The message says what to set.
    #[error("{message}")]
    Config {
        /// What is wrong and what to do.
        message: String,
    },
    /// A scripted model's script does not cover this conversation.
    #[error("{message}")]
    Script {
        /// Where the conversation and the script part ways.
        message: String,
    },
    /// The model called a tool it was not given.
    #[error("the model called tool `{tool}`, which is not bound; the bound tools are: {}", if bound.is_empty() { "(none)".to_owned() } else { bound.join(", ") })]
    ToolNotBound {
        /// The tool called.
        tool: String,
        /// The tools that are bound.
        bound: Vec<String>,
    },
    /// The provider refused the request; its own message is kept.
    #[error("{provider} answered {status}: {message}")]
    Api {
        /// The provider, e.g. `openai`.
        provider: String,
        /// The HTTP status.
        status: u16,
        /// The provider's error message.
        message: String,
    },
    /// The provider could not be reached, or the connection broke.
    #[error("could not reach {provider}: {source}")]
    Transport {
        /// The provider.
        provider: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The provider did not answer in time.
    #[error("{provider} did not answer within {after:?}")]
    Timeout {
        /// The provider.
        provider: String,
        /// The time limit that ran out.
        after: Duration,
    },
    /// The provider's answer could not be understood.
    #[error("{provider} sent a response toolgate cannot read: {message}")]
    InvalidResponse {
        /// The provider.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// The model's arguments for a tool call are not a JSON object.
    #[error(
        "the model's arguments for tool call `{call_id}` ({tool}) are not valid JSON: {message}"
    )]
    InvalidToolArguments {
        /// The call's id.
        call_id: String,
        /// The tool named.
        tool: String,
        /// What the parser said.
        message: String,
    },
    /// The request was cancelled.
    #[error("the request to {provider} was cancelled")]
    Cancelled {
        /// The provider.
        provider: String,
    },
}

//! toolgate's domain model: messages, tool calls, tools, chat models, chains
//! composed with `|`, and the errors they produce.
//!
//! Architecture invariant: this crate does no I/O and needs no async runtime.
//! Everything that talks to a terminal, a network or a disk lives in the
//! crates around it; everything here is testable with plain values.
//!
//! # Example
//!
//! ```
//! use toolgate_core::{AiMessage, Runnable, ToolCall, runnable_fn};
//! # futures::executor::block_on(async {
//! let count = runnable_fn(|msg: AiMessage| async move { Ok(msg.tool_calls.len()) });
//! let msg = AiMessage::with_tool_calls([ToolCall::new("1", "count_emails", serde_json::json!({"last_n_days": 5}))]);
//! assert_eq!(count.invoke(msg).await.unwrap(), 1);
//! # });
//! ```

mod chain;
mod error;
mod fingerprint;
mod message;
mod model;
pub mod pyjson;
mod runnable;
pub mod seed;
mod tool;

pub use chain::{CallTools, CallToolsError, ToolCallOutput, call_tools};
pub use error::{BoxError, Error, Result};
pub use fingerprint::Fingerprint;
pub use message::{AiMessage, FinishReason, Message, Messages, ToolMessage, Usage};
pub use model::{BoundModel, ChatModel, ChatModelExt, ChatRequest, ModelError, TextSink};
pub use runnable::{Pipe, Runnable, RunnableFn, runnable_fn};
pub use seed::NotApproved;
pub use tool::{ArgumentProblem, Tool, ToolCall, ToolError, ToolHints, ToolSpec, Tools};

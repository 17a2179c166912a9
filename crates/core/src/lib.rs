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

pub mod audit;
mod chain;
mod error;
mod fingerprint;
pub mod grant;
mod message;
mod model;
pub mod policy;
mod principal;
pub mod pyjson;
mod recent;
pub mod run;
mod runnable;
pub mod seed;
pub mod store;
pub mod time;
mod tool;

pub use chain::{CallTools, CallToolsError, ToolCallOutput, call_tools};
pub use error::{BoxError, Error, Result};
pub use fingerprint::Fingerprint;
pub use message::{AiMessage, FinishReason, Message, Messages, ToolMessage, Usage};
pub use model::{BoundModel, ChatModel, ChatModelExt, ChatRequest, ModelError, TextSink};
pub use policy::{Action, EvalInput, Policy, PolicyError, Rule, Verdict};
pub use principal::{Principal, Role};
pub use runnable::{Pipe, Runnable, RunnableFn, runnable_fn};
pub use seed::NotApproved;
pub use tool::{
    ArgumentProblem, Tool, ToolCall, ToolError, ToolHints, ToolSpec, Tools, check_args,
    schema_compiles,
};

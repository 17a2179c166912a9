//! `call_tools`: the seed's last step, which runs the approved calls.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Result;
use crate::message::AiMessage;
use crate::runnable::Runnable;
use crate::tool::{ToolCall, ToolError, Tools};

/// A tool call with the output of running it; serialises as the seed's
/// `{"name", "args", "id", "output"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOutput {
    /// The tool called.
    pub name: String,
    /// The arguments it was called with.
    pub args: Map<String, Value>,
    /// The call's id.
    pub id: String,
    /// What the tool returned.
    pub output: Value,
}

/// A list of tool calls stopped at a failing call.
///
/// The calls before it ran (their side effects happened) and are in
/// `completed`; the calls after it did not run.
#[derive(Debug, thiserror::Error)]
#[error("tool call {} of {total} (`{}`, id `{}`) failed after {} ran: {source}", index + 1, call.name, call.id, completed.len())]
#[non_exhaustive]
pub struct CallToolsError {
    /// The failing call.
    pub call: ToolCall,
    /// Its position in the list, from 0.
    pub index: usize,
    /// How many calls the list had.
    pub total: usize,
    /// The calls that ran before it, with their outputs.
    pub completed: Vec<ToolCallOutput>,
    /// Why it failed.
    #[source]
    pub source: ToolError,
}

/// The step that runs a model's tool calls in order; see [`call_tools`].
#[derive(Debug, Clone)]
pub struct CallTools {
    tools: Tools,
}

/// Runs every tool call of a model's answer, in order, and returns each call
/// with its `output`.
///
/// All calls are checked (tool known, arguments valid) before the first one
/// runs, so a bad call in the list runs nothing. If a tool then fails, the
/// calls after it do not run and the error says which ones did.
pub fn call_tools(tools: &Tools) -> CallTools {
    CallTools {
        tools: tools.clone(),
    }
}

impl Runnable for CallTools {
    type Input = AiMessage;
    type Output = Vec<ToolCallOutput>;

    async fn invoke(&self, input: impl Into<AiMessage> + Send) -> Result<Vec<ToolCallOutput>> {
        let message = input.into();
        for call in &message.tool_calls {
            self.tools.check(call)?;
        }
        let total = message.tool_calls.len();
        let mut outputs = Vec::with_capacity(total);
        for (index, call) in message.tool_calls.into_iter().enumerate() {
            match self.tools.invoke(&call).await {
                Ok(output) => outputs.push(ToolCallOutput {
                    name: call.name,
                    args: call.args,
                    id: call.id,
                    output,
                }),
                Err(source) => {
                    return Err(CallToolsError {
                        call,
                        index,
                        total,
                        completed: outputs,
                        source,
                    }
                    .into());
                }
            }
        }
        Ok(outputs)
    }
}

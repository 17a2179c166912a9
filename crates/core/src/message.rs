//! Chat messages: what people, models and tools say to each other.

use serde::{Deserialize, Serialize};

use crate::tool::ToolCall;

/// One message of a conversation with a chat model.
///
/// The serialised form is tagged by `role` (`system`, `human`, `ai`, `tool`),
/// which is also the format of scripted conversations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    /// Instructions that frame the conversation.
    System {
        /// The instructions.
        content: String,
    },
    /// What the person asked.
    Human {
        /// The text of the request.
        content: String,
    },
    /// What the model answered, possibly with tool calls.
    Ai(AiMessage),
    /// The result of one tool call, sent back to the model.
    Tool(ToolMessage),
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::System {
            content: content.into(),
        }
    }

    /// A human message.
    pub fn human(content: impl Into<String>) -> Self {
        Message::Human {
            content: content.into(),
        }
    }

    /// The role's name as it appears in the serialised form.
    pub fn role(&self) -> &'static str {
        match self {
            Message::System { .. } => "system",
            Message::Human { .. } => "human",
            Message::Ai(_) => "ai",
            Message::Tool(_) => "tool",
        }
    }
}

impl From<AiMessage> for Message {
    fn from(message: AiMessage) -> Self {
        Message::Ai(message)
    }
}

impl From<ToolMessage> for Message {
    fn from(message: ToolMessage) -> Self {
        Message::Tool(message)
    }
}

/// A model's answer: text, tool calls, or both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AiMessage {
    /// The text the model wrote (often empty when it calls tools).
    #[serde(default)]
    pub content: String,
    /// The tools the model wants to call, in the order it listed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Tokens used for this answer, when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl AiMessage {
    /// An answer made of text only.
    pub fn text(content: impl Into<String>) -> Self {
        AiMessage {
            content: content.into(),
            finish_reason: Some(FinishReason::Stop),
            ..AiMessage::default()
        }
    }

    /// An answer that calls tools.
    pub fn with_tool_calls(tool_calls: impl IntoIterator<Item = ToolCall>) -> Self {
        AiMessage {
            tool_calls: tool_calls.into_iter().collect(),
            finish_reason: Some(FinishReason::ToolCalls),
            ..AiMessage::default()
        }
    }

    /// Sets the text of the answer.
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }

    /// Sets the token usage.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Sets why the model stopped.
    pub fn finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish_reason = Some(reason);
        self
    }
}

/// Why a model stopped generating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The model finished its answer.
    Stop,
    /// The model wants tools to run.
    ToolCalls,
    /// The answer hit the token limit.
    Length,
    /// The provider filtered the answer.
    ContentFilter,
    /// Any other reason, as the provider named it.
    #[serde(untagged)]
    Other(String),
}

/// Tokens a model used for one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

/// The result of one tool call, as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolMessage {
    /// The id of the call this answers.
    pub tool_call_id: String,
    /// The result, as text (JSON for structured results).
    pub content: String,
    /// True when the call did not run or failed; `content` says why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl ToolMessage {
    /// A successful result.
    pub fn new(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ToolMessage {
            tool_call_id: tool_call_id.into(),
            content: content.into(),
            is_error: false,
        }
    }

    /// A result that reports a failure or a refusal to the model.
    pub fn error(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ToolMessage {
            is_error: true,
            ..ToolMessage::new(tool_call_id, content)
        }
    }
}

/// The input of a chat model: a conversation.
///
/// Converts from a `&str` or `String` (one human message), a [`Message`], or a
/// list of messages, so that a chain can be invoked as in the how-to:
/// `chain.invoke("how many emails did i get in the last 5 days?")`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Messages(pub Vec<Message>);

impl From<&str> for Messages {
    fn from(text: &str) -> Self {
        Messages(vec![Message::human(text)])
    }
}

impl From<String> for Messages {
    fn from(text: String) -> Self {
        Messages(vec![Message::human(text)])
    }
}

impl From<Message> for Messages {
    fn from(message: Message) -> Self {
        Messages(vec![message])
    }
}

impl From<Vec<Message>> for Messages {
    fn from(messages: Vec<Message>) -> Self {
        Messages(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_serialise_tagged_by_role() {
        let ai = AiMessage::with_tool_calls([ToolCall::new(
            "toolu_1",
            "count_emails",
            json!({"last_n_days": 5}),
        )]);
        let conversation = vec![
            Message::system("be brief"),
            Message::human("how many?"),
            Message::Ai(ai),
            Message::Tool(ToolMessage::new("toolu_1", "10")),
            Message::Tool(ToolMessage::error("toolu_2", "rejected")),
        ];
        let value = serde_json::to_value(&conversation).unwrap();
        assert_eq!(
            value,
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "human", "content": "how many?"},
                {"role": "ai", "content": "", "tool_calls": [
                    {"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_1"}
                ], "finish_reason": "tool_calls"},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "10"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "rejected", "is_error": true},
            ])
        );
        let back: Vec<Message> = serde_json::from_value(value).unwrap();
        assert_eq!(back, conversation);
    }

    #[test]
    fn unknown_finish_reasons_are_kept() {
        let reason: FinishReason = serde_json::from_value(json!("pause_turn")).unwrap();
        assert_eq!(reason, FinishReason::Other("pause_turn".into()));
        let reason: FinishReason = serde_json::from_value(json!("length")).unwrap();
        assert_eq!(reason, FinishReason::Length);
    }

    #[test]
    fn text_becomes_one_human_message() {
        assert_eq!(Messages::from("hi").0, vec![Message::human("hi")]);
        assert_eq!(Messages::from(String::from("hi")).0[0].role(), "human");
        assert_eq!(Messages::from(Message::system("s")).0[0].role(), "system");
    }
}

//! A model that replays recorded conversations: for tests, demos and offline
//! use.
//!
//! A script is a JSON file:
//!
//! ```json
//! {"conversations": [{"name": "count", "messages": [
//!   {"role": "human", "content": "how many emails did i get in the last 5 days?"},
//!   {"role": "ai", "content": "", "tool_calls": [{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_1"}]},
//!   {"role": "tool", "tool_call_id": "toolu_1", "content": "10"},
//!   {"role": "ai", "content": "You got 10 emails."}
//! ]}]}
//! ```
//!
//! Given a conversation, the model finds the first recorded conversation
//! that begins with it and answers with the recorded AI message that comes
//! next. Matching is deliberately by meaning, not by text, so that a
//! recording survives a resumed run or edited arguments:
//!
//! - human messages match when their text is equal;
//! - AI messages match when they call the same tools with the same ids (the
//!   text is not compared);
//! - tool results match when they answer the same call id and agree on
//!   whether the call failed (the text is not compared);
//! - system messages are ignored on both sides.
//!
//! The model is stateless: the same conversation always gets the same
//! answer, in any process.

use std::path::Path;

use async_trait::async_trait;
use serde::Deserialize;
use toolgate_core::{AiMessage, ChatModel, ChatRequest, Message, ModelError};

/// A chat model that replays a script.
#[derive(Debug, Clone)]
pub struct ScriptedModel {
    source: String,
    conversations: Vec<Conversation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    conversations: Vec<Conversation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conversation {
    #[serde(default)]
    name: Option<String>,
    messages: Vec<Message>,
}

impl Conversation {
    fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("conversation {} ({name:?})", index + 1),
            None => format!("conversation {}", index + 1),
        }
    }
}

fn script_error(message: String) -> ModelError {
    ModelError::Script { message }
}

impl ScriptedModel {
    /// Reads a script file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| {
            script_error(format!(
                "cannot read the script {}: {error}",
                path.display()
            ))
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Reads a script from JSON text; `source` names it in error messages.
    pub fn from_json(json: &str, source: &str) -> Result<Self, ModelError> {
        let script: Script = serde_json::from_str(json)
            .map_err(|error| script_error(format!("the script {source} is not valid: {error}")))?;
        let model = ScriptedModel {
            source: source.to_owned(),
            conversations: script.conversations,
        };
        model.check()?;
        Ok(model)
    }

    /// Refuses scripts that could never be replayed.
    fn check(&self) -> Result<(), ModelError> {
        if self.conversations.is_empty() {
            return Err(script_error(format!(
                "the script {} has no conversations",
                self.source
            )));
        }
        for (index, conversation) in self.conversations.iter().enumerate() {
            let label = conversation.label(index);
            let invalid = |message: String| {
                script_error(format!("the script {}: {label}: {message}", self.source))
            };
            if !conversation
                .messages
                .iter()
                .any(|m| matches!(m, Message::Ai(_)))
            {
                return Err(invalid("it has no AI message to replay".to_owned()));
            }
            let mut open_calls: Vec<&str> = Vec::new();
            for (position, message) in conversation.messages.iter().enumerate() {
                match message {
                    Message::Ai(ai) => {
                        open_calls = ai.tool_calls.iter().map(|c| c.id.as_str()).collect();
                        let mut ids = open_calls.clone();
                        ids.sort_unstable();
                        if ids.windows(2).any(|w| w[0] == w[1]) {
                            return Err(invalid(format!(
                                "message {} calls two tools with the same id",
                                position + 1
                            )));
                        }
                    }
                    Message::Tool(result) => {
                        if !open_calls.contains(&result.tool_call_id.as_str()) {
                            return Err(invalid(format!(
                                "message {} answers tool call `{}`, which the AI message before it did not make",
                                position + 1,
                                result.tool_call_id
                            )));
                        }
                    }
                    Message::Human { .. } | Message::System { .. } => open_calls.clear(),
                }
            }
        }
        Ok(())
    }

    fn reply(&self, request: &ChatRequest) -> Result<AiMessage, ModelError> {
        let incoming: Vec<&Message> = without_system(&request.messages).collect();
        // The conversation that fits longest, and where it stops fitting.
        let mut best: Option<(usize, usize)> = None;
        for (index, conversation) in self.conversations.iter().enumerate() {
            let recorded: Vec<&Message> = without_system(&conversation.messages).collect();
            let fitting = incoming
                .iter()
                .zip(&recorded)
                .take_while(|(got, want)| fits(got, want))
                .count();
            if fitting == incoming.len() {
                match recorded.get(fitting) {
                    Some(Message::Ai(answer)) => return Ok(answer.clone()),
                    Some(other) => {
                        return Err(script_error(format!(
                            "the script {}: {} expects a {} message after message {}, not an answer from the model",
                            self.source,
                            conversation.label(index),
                            other.role(),
                            fitting
                        )));
                    }
                    None => {
                        return Err(script_error(format!(
                            "the script {} has run out: {} ends after message {}, and the model is asked for another answer; record the next AI message to go on",
                            self.source,
                            conversation.label(index),
                            fitting
                        )));
                    }
                }
            }
            if best.is_none_or(|(_, longest)| fitting > longest) {
                best = Some((index, fitting));
            }
        }
        let (index, fitting) = best.expect("a script has at least one conversation");
        let conversation = &self.conversations[index];
        let recorded: Vec<&Message> = without_system(&conversation.messages).collect();
        let got = incoming[fitting];
        let detail = match recorded.get(fitting) {
            Some(want) => format!("expects {} but got {}", describe(want), describe(got)),
            None => format!(
                "ends after message {fitting}, but the conversation goes on with {}",
                describe(got)
            ),
        };
        Err(script_error(format!(
            "the script {} does not fit this conversation: the closest, {}, matches {} message(s), then {}",
            self.source,
            conversation.label(index),
            fitting,
            detail
        )))
    }
}

fn without_system(messages: &[Message]) -> impl Iterator<Item = &Message> {
    messages
        .iter()
        .filter(|m| !matches!(m, Message::System { .. }))
}

fn fits(got: &Message, want: &Message) -> bool {
    match (got, want) {
        (Message::Human { content: a }, Message::Human { content: b }) => a == b,
        (Message::Ai(a), Message::Ai(b)) => {
            a.tool_calls.len() == b.tool_calls.len()
                && a.tool_calls
                    .iter()
                    .zip(&b.tool_calls)
                    .all(|(x, y)| x.id == y.id && x.name == y.name)
        }
        (Message::Tool(a), Message::Tool(b)) => {
            a.tool_call_id == b.tool_call_id && a.is_error == b.is_error
        }
        _ => false,
    }
}

fn describe(message: &Message) -> String {
    const LIMIT: usize = 80;
    let short = |text: &str| {
        if text.chars().count() > LIMIT {
            format!("{:?}…", text.chars().take(LIMIT).collect::<String>())
        } else {
            format!("{text:?}")
        }
    };
    match message {
        Message::System { content } => format!("a system message {}", short(content)),
        Message::Human { content } => format!("a human message {}", short(content)),
        Message::Ai(ai) if ai.tool_calls.is_empty() => {
            "an AI message without tool calls".to_owned()
        }
        Message::Ai(ai) => format!(
            "an AI message calling {}",
            ai.tool_calls
                .iter()
                .map(|c| format!("{} (id {})", c.name, c.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Message::Tool(result) => format!(
            "a {} for tool call {}",
            if result.is_error {
                "failed tool result"
            } else {
                "tool result"
            },
            result.tool_call_id
        ),
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn generate(&self, request: ChatRequest) -> Result<AiMessage, ModelError> {
        let answer = self.reply(&request)?;
        for call in &answer.tool_calls {
            if !request.tools.iter().any(|spec| spec.name == call.name) {
                return Err(ModelError::ToolNotBound {
                    tool: call.name.clone(),
                    bound: request.tools.iter().map(|spec| spec.name.clone()).collect(),
                });
            }
        }
        if let Some(sink) = &request.on_text
            && !answer.content.is_empty()
        {
            sink(&answer.content);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use toolgate_core::{ToolCall, ToolMessage, ToolSpec};

    const SCRIPT: &str = r#"{"conversations": [
      {"name": "count", "messages": [
        {"role": "human", "content": "how many?"},
        {"role": "ai", "content": "", "tool_calls": [{"name": "count_emails", "args": {"last_n_days": 5}, "id": "t1"}]},
        {"role": "tool", "tool_call_id": "t1", "content": "10"},
        {"role": "ai", "content": "You got 10."}
      ]},
      {"name": "count refused", "messages": [
        {"role": "human", "content": "how many?"},
        {"role": "ai", "content": "", "tool_calls": [{"name": "count_emails", "args": {"last_n_days": 5}, "id": "t1"}]},
        {"role": "tool", "tool_call_id": "t1", "content": "no", "is_error": true},
        {"role": "ai", "content": "I may not count."}
      ]}
    ]}"#;

    fn model() -> ScriptedModel {
        ScriptedModel::from_json(SCRIPT, "test.json").unwrap()
    }

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "count_emails",
            "Counts.",
            json!({"type": "object"}),
        )]
    }

    fn ask(messages: Vec<Message>, tools: Vec<ToolSpec>) -> Result<AiMessage, ModelError> {
        futures::executor::block_on(model().generate(ChatRequest::new(messages, tools)))
    }

    fn first_answer() -> AiMessage {
        AiMessage::with_tool_calls([ToolCall::new(
            "t1",
            "count_emails",
            json!({"last_n_days": 5}),
        )])
    }

    #[test]
    fn replays_the_next_ai_message() {
        let answer = ask(
            vec![Message::system("be brief"), Message::human("how many?")],
            tools(),
        )
        .unwrap();
        assert_eq!(answer.tool_calls, first_answer().tool_calls);
        let answer = ask(
            vec![
                Message::human("how many?"),
                first_answer().into(),
                ToolMessage::new("t1", "12 (edited args)").into(),
            ],
            tools(),
        )
        .unwrap();
        assert_eq!(answer.content, "You got 10.");
    }

    #[test]
    fn branches_on_failed_tool_results() {
        let answer = ask(
            vec![
                Message::human("how many?"),
                first_answer().into(),
                ToolMessage::error("t1", "rejected").into(),
            ],
            tools(),
        )
        .unwrap();
        assert_eq!(answer.content, "I may not count.");
    }

    #[test]
    fn says_where_the_conversation_stops_fitting() {
        let error = ask(vec![Message::human("hello")], tools()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the script test.json does not fit this conversation: the closest, conversation 1 (\"count\"), matches 0 message(s), then expects a human message \"how many?\" but got a human message \"hello\""
        );
    }

    #[test]
    fn says_when_the_script_runs_out() {
        let error = ask(
            vec![
                Message::human("how many?"),
                first_answer().into(),
                ToolMessage::new("t1", "10").into(),
                AiMessage::text("You got 10.").into(),
                Message::human("and yesterday?"),
            ],
            tools(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("ends after message 4, but the conversation goes on with a human message \"and yesterday?\""), "{error}");
        let error = ask(
            vec![
                Message::human("how many?"),
                first_answer().into(),
                ToolMessage::new("t1", "10").into(),
                AiMessage::text("You got 10.").into(),
            ],
            tools(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the script test.json has run out: conversation 1 (\"count\") ends after message 4, and the model is asked for another answer; record the next AI message to go on"
        );
    }

    #[test]
    fn refuses_to_call_tools_that_are_not_bound() {
        let error = ask(vec![Message::human("how many?")], vec![]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the model called tool `count_emails`, which is not bound; the bound tools are: (none)"
        );
    }

    #[test]
    fn expects_the_right_kind_of_message_next() {
        let error = ask(
            vec![Message::human("how many?"), first_answer().into()],
            tools(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the script test.json: conversation 1 (\"count\") expects a tool message after message 2, not an answer from the model"
        );
    }

    #[test]
    fn bad_scripts_are_refused_at_load() {
        let cases = [
            (
                "{",
                "the script s.json is not valid: EOF while parsing an object at line 1 column 1",
            ),
            (
                r#"{"conversations": []}"#,
                "the script s.json has no conversations",
            ),
            (
                r#"{"conversations": [{"messages": [{"role": "human", "content": "hi"}]}]}"#,
                "the script s.json: conversation 1: it has no AI message to replay",
            ),
            (
                r#"{"conversations": [{"name": "x", "messages": [{"role": "ai", "content": ""}, {"role": "tool", "tool_call_id": "t9", "content": "1"}]}]}"#,
                "the script s.json: conversation 1 (\"x\"): message 2 answers tool call `t9`, which the AI message before it did not make",
            ),
            (
                r#"{"conversations": [{"messages": [{"role": "ai", "tool_calls": [{"name": "a", "args": {}, "id": "1"}, {"name": "b", "args": {}, "id": "1"}]}]}]}"#,
                "the script s.json: conversation 1: message 1 calls two tools with the same id",
            ),
            (
                r#"{"conversations": [], "extra": 1}"#,
                "the script s.json is not valid: unknown field `extra`, expected `description` or `conversations` at line 1 column 29",
            ),
        ];
        for (json, message) in cases {
            let error = ScriptedModel::from_json(json, "s.json").unwrap_err();
            assert_eq!(error.to_string(), message, "for {json}");
        }
    }

    #[test]
    fn reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script.json");
        std::fs::write(&path, SCRIPT).unwrap();
        assert!(ScriptedModel::from_file(&path).is_ok());
        let missing = dir.path().join("missing.json");
        let error = ScriptedModel::from_file(&missing).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read the script {}: ", missing.display())),
            "{error}"
        );
    }

    #[test]
    fn streams_text_to_the_sink() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink_seen = seen.clone();
        let request = ChatRequest::new(
            vec![
                Message::human("how many?"),
                first_answer().into(),
                ToolMessage::new("t1", "10").into(),
            ],
            tools(),
        )
        .on_text(std::sync::Arc::new(move |text: &str| {
            sink_seen.lock().unwrap().push_str(text)
        }));
        let answer = futures::executor::block_on(model().generate(request)).unwrap();
        assert_eq!(*seen.lock().unwrap(), answer.content);
    }
}

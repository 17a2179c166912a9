//! The seed's approval text: the prompt `human_approval` shows, the answers
//! it accepts, and the error it raises, byte for byte as in the how-to.

use crate::pyjson;
use crate::tool::ToolCall;

/// The tool calls as the seed prints them: each one as `json.dumps(call,
/// indent=2)` with the keys `name`, `args`, `id`, joined by blank lines.
pub fn tool_calls_text(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(pyjson::to_string_indented)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The question `human_approval` asks before any of `calls` runs.
pub fn approval_prompt(calls: &[ToolCall]) -> String {
    format!(
        "Do you approve of the following tool invocations\n\n{}\n\n\
         Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.\n >>>",
        tool_calls_text(calls)
    )
}

/// True when `answer` approves: `y` or `yes` in any case, surrounding white
/// space ignored. Everything else, including no answer at all, is a no.
pub fn is_approval(answer: &str) -> bool {
    let answer = answer.trim();
    answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes")
}

/// A person did not approve a list of tool calls; none of them ran.
///
/// Its message is the seed's: `Tool invocations not approved:` followed by a
/// blank line and the calls as they were shown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Tool invocations not approved:\n\n{}", tool_calls_text(calls))]
pub struct NotApproved {
    /// The calls that were refused.
    pub calls: Vec<ToolCall>,
    /// What the person answered; `None` when the input ended first.
    pub answer: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    fn count_emails() -> ToolCall {
        ToolCall::new(
            "toolu_01WbD8XeMoQaRFtsZezfsHor",
            "count_emails",
            json!({"last_n_days": 5}),
        )
    }

    fn send_email() -> ToolCall {
        ToolCall::new(
            "toolu_014XccHFzBiVcc9GV1harV9U",
            "send_email",
            json!({"recipient": "sally@gmail.com", "message": "What's up homie"}),
        )
    }

    #[test]
    fn prompt_is_the_seeds() {
        // The how-to's output for its first invocation, byte for byte.
        expect![[r#"
            Do you approve of the following tool invocations

            {
              "name": "count_emails",
              "args": {
                "last_n_days": 5
              },
              "id": "toolu_01WbD8XeMoQaRFtsZezfsHor"
            }

            Anything except 'Y'/'Yes' (case-insensitive) will be treated as a no.
             >>>"#]]
        .assert_eq(&approval_prompt(&[count_emails()]));
    }

    #[test]
    fn several_calls_are_separated_by_blank_lines() {
        let text = tool_calls_text(&[count_emails(), send_email()]);
        assert_eq!(
            text,
            "{\n  \"name\": \"count_emails\",\n  \"args\": {\n    \"last_n_days\": 5\n  },\n  \"id\": \"toolu_01WbD8XeMoQaRFtsZezfsHor\"\n}\n\n{\n  \"name\": \"send_email\",\n  \"args\": {\n    \"recipient\": \"sally@gmail.com\",\n    \"message\": \"What's up homie\"\n  },\n  \"id\": \"toolu_014XccHFzBiVcc9GV1harV9U\"\n}"
        );
    }

    #[test]
    fn not_approved_message_is_the_seeds() {
        let error = NotApproved {
            calls: vec![send_email()],
            answer: Some("no".into()),
        };
        expect![[r#"
            Tool invocations not approved:

            {
              "name": "send_email",
              "args": {
                "recipient": "sally@gmail.com",
                "message": "What's up homie"
              },
              "id": "toolu_014XccHFzBiVcc9GV1harV9U"
            }"#]]
        .assert_eq(&error.to_string());
    }

    #[test]
    fn only_y_and_yes_approve() {
        for yes in ["y", "Y", "yes", "YES", "Yes", "yEs", " y ", "\tyes\r\n"] {
            assert!(is_approval(yes), "{yes:?} should approve");
        }
        for no in [
            "",
            "n",
            "no",
            "nope",
            "yes!",
            "ye",
            "y e s",
            "yess",
            "oui",
            "1",
            "true",
            "ｙｅｓ",
        ] {
            assert!(!is_approval(no), "{no:?} should not approve");
        }
    }
}

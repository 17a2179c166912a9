//! The seed system: the how-to's two tools and its recorded conversations.
//!
//! `toolgate demo` runs these offline; tests and examples use them as a
//! known-good fixture.

use crate::models::scripted::ScriptedModel;
use crate::{ToolError, Tools, tool};

/// The how-to's two prompts, in the order it runs them.
pub const PROMPTS: [&str; 2] = [
    "how many emails did i get in the last 5 days?",
    "Send sally@gmail.com an email saying 'What's up homie'",
];

/// The recorded conversations (JSON, the scripted model's format).
pub const SCRIPT: &str = include_str!("../seed/script.json");

/// Dummy function to count number of e-mails. Returns 2 * last_n_days.
#[tool(read_only, idempotent)]
pub async fn count_emails(last_n_days: i64) -> i64 {
    last_n_days * 2
}

/// Dummy function for sending an e-mail.
#[tool(destructive)]
pub async fn send_email(message: String, recipient: String) -> String {
    let _ = message;
    format!("Successfully sent email to {recipient}.")
}

/// The seed's tools: `count_emails` and `send_email`.
pub fn tools() -> Tools {
    crate::tools![CountEmails, SendEmail].unwrap_or_else(|error: ToolError| {
        unreachable!("the seed's tools have valid, distinct names: {error}")
    })
}

/// A scripted model that replays the how-to's conversations.
pub fn model() -> ScriptedModel {
    ScriptedModel::from_json(SCRIPT, "the built-in seed script")
        .unwrap_or_else(|error| unreachable!("the built-in seed script is valid: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tool;
    use expect_test::expect;

    #[test]
    fn schemas_are_what_models_expect() {
        let specs: Vec<_> = tools().specs();
        expect![[r#"
            [
              {
                "name": "count_emails",
                "description": "Dummy function to count number of e-mails. Returns 2 * last_n_days.",
                "parameters": {
                  "type": "object",
                  "additionalProperties": false,
                  "properties": {
                    "last_n_days": {
                      "type": "integer",
                      "format": "int64"
                    }
                  },
                  "required": [
                    "last_n_days"
                  ]
                },
                "hints": {
                  "read_only": true,
                  "idempotent": true
                }
              },
              {
                "name": "send_email",
                "description": "Dummy function for sending an e-mail.",
                "parameters": {
                  "type": "object",
                  "additionalProperties": false,
                  "properties": {
                    "message": {
                      "type": "string"
                    },
                    "recipient": {
                      "type": "string"
                    }
                  },
                  "required": [
                    "message",
                    "recipient"
                  ]
                },
                "hints": {
                  "destructive": true
                }
              }
            ]"#]]
        .assert_eq(&serde_json::to_string_pretty(&specs).unwrap());
    }

    #[tokio::test]
    async fn the_tools_do_what_the_how_to_says() {
        assert_eq!(count_emails(5).await, 10);
        let args = serde_json::json!({"message": "hi", "recipient": "sally@gmail.com"});
        let output = SendEmail
            .call(args.as_object().unwrap().clone())
            .await
            .unwrap();
        assert_eq!(output, "Successfully sent email to sally@gmail.com.");
    }
}

//! `toolgate run`: one request to a model, with the seed's tools, and a
//! person approving every tool call before it runs.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use toolgate::{
    ChatRequest, Error, Message, ModelError, Runnable, TextSink, ToolMessage, human_approval, seed,
};

use crate::exit;

/// What the model is told when a person did not approve its tool call.
const NOT_APPROVED: &str = "The user did not approve this tool call.";

/// Ask a model to do something with the seed's tools (`count_emails`,
/// `send_email`); each tool call runs only once a person approves it.
///
/// The model is asked again with the tools' results (or the refusals) until
/// it answers without calling a tool; that answer is printed. Exits 0 when
/// every call was approved, 3 when one was not (the model still answers),
/// 1 on an error.
///
/// Keys come from OPENAI_API_KEY and ANTHROPIC_API_KEY; OPENAI_BASE_URL,
/// ANTHROPIC_BASE_URL and OLLAMA_BASE_URL point at other servers.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The model, as PROVIDER:MODEL: openai:gpt-4o-mini,
    /// anthropic:claude-sonnet-4-5, ollama:llama3.2 or scripted:PATH.
    #[arg(long, value_name = "SPEC", env = "TOOLGATE_MODEL")]
    model: Option<String>,
    /// Print the answer as the model writes it (the default when standard
    /// output is a terminal).
    #[arg(long, conflicts_with = "no_stream")]
    stream: bool,
    /// Print each answer only once it is complete.
    #[arg(long)]
    no_stream: bool,
    /// How many answers to ask the model for, at most, before giving up.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_turns: u32,
    /// What to ask the model.
    prompt: String,
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args
        .model
        .filter(|spec| !spec.trim().is_empty())
        .context(
            "no model given: pass --model PROVIDER:MODEL or set TOOLGATE_MODEL (e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, scripted:PATH)",
        )?;
    let model = toolgate::models::from_spec(&spec)
        .with_context(|| format!("cannot use the model `{spec}`"))?;
    let tools = seed::tools();
    // Piped answers are not echoed by a terminal; write them out so the
    // output reads like a conversation.
    let approval = human_approval().echo_answers(!std::io::stdin().is_terminal());
    let stream = args.stream || (!args.no_stream && std::io::stdout().is_terminal());
    let streamed = Arc::new(AtomicBool::new(false));
    let sink: TextSink = {
        let streamed = Arc::clone(&streamed);
        Arc::new(move |text: &str| {
            streamed.store(true, Ordering::Relaxed);
            let mut stdout = std::io::stdout().lock();
            // A closed stdout shows up when the final answer is printed.
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        })
    };

    let mut messages = vec![Message::human(args.prompt)];
    let mut all_approved = true;
    for _ in 0..args.max_turns {
        let mut request = ChatRequest::new(messages.clone(), tools.specs());
        if stream {
            request = request.on_text(Arc::clone(&sink));
        }
        streamed.store(false, Ordering::Relaxed);
        let answer = model.generate(request).await;
        if streamed.load(Ordering::Relaxed) {
            // End the streamed line, so that what follows (a prompt, an
            // error) starts on its own.
            println!();
        }
        let answer = answer.map_err(|error| model_failed(&spec, error))?;
        if !streamed.load(Ordering::Relaxed) && !answer.content.is_empty() {
            println!("{}", answer.content);
        }
        std::io::stdout()
            .flush()
            .context("cannot write to standard output")?;
        messages.push(answer.clone().into());
        if answer.tool_calls.is_empty() {
            return Ok(exit::code(if all_approved {
                exit::SUCCESS
            } else {
                exit::NOT_APPROVED
            }));
        }
        match approval.invoke(answer.clone()).await {
            Ok(_) => {
                for call in &answer.tool_calls {
                    let result = match tools.invoke(call).await {
                        Ok(output) => ToolMessage::new(&call.id, output_text(&output)),
                        Err(error) => {
                            eprintln!("toolgate: {error}; the model is told so");
                            ToolMessage::error(&call.id, error.to_string())
                        }
                    };
                    messages.push(result.into());
                }
            }
            Err(Error::NotApproved(_)) => {
                all_approved = false;
                for call in &answer.tool_calls {
                    messages.push(ToolMessage::error(&call.id, NOT_APPROVED).into());
                }
            }
            Err(error) => return Err(error).context("cannot ask for approval"),
        }
    }
    anyhow::bail!(
        "the model `{spec}` was still calling tools after {} answers; pass a larger --max-turns to let it go on",
        args.max_turns
    )
}

/// A tool's output as the model reads it: strings as they are, anything
/// else as JSON.
fn output_text(output: &serde_json::Value) -> String {
    match output {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The model's error, with what to check when the fix is likely on this
/// side.
fn model_failed(spec: &str, error: ModelError) -> anyhow::Error {
    let provider = spec.split(':').next().unwrap_or_default();
    let (key, url) = match provider {
        "openai" => ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
        "anthropic" => ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
        "ollama" => ("", "OLLAMA_BASE_URL"),
        _ => ("", ""),
    };
    let hint = match &error {
        ModelError::Api {
            status: 401 | 403, ..
        } if !key.is_empty() => format!(" (check the key in {key})"),
        ModelError::Api { status: 404, .. } if !url.is_empty() => {
            format!(" (check the model name, and {url} if it is set)")
        }
        ModelError::Transport { .. } if !url.is_empty() => {
            format!(" (check that the server is running, and {url} if it is set)")
        }
        _ => String::new(),
    };
    anyhow::anyhow!(
        "the model `{spec}` gave no answer{hint}: {}",
        with_causes(&error)
    )
}

/// The error and its causes, each once: `ModelError` already shows its
/// first cause, which an `anyhow` chain would print a second time.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(spec: &str, error: ModelError) -> String {
        format!("{:#}", model_failed(spec, error))
    }

    fn api(provider: &str, status: u16) -> ModelError {
        ModelError::Api {
            provider: provider.to_owned(),
            status,
            message: "refused".to_owned(),
        }
    }

    #[test]
    fn model_errors_say_what_to_check() {
        assert_eq!(
            message("anthropic:claude-sonnet-4-5", api("anthropic", 403)),
            "the model `anthropic:claude-sonnet-4-5` gave no answer (check the key in ANTHROPIC_API_KEY): anthropic answered 403: refused"
        );
        assert_eq!(
            message("openai:gpt-9", api("openai", 404)),
            "the model `openai:gpt-9` gave no answer (check the model name, and OPENAI_BASE_URL if it is set): openai answered 404: refused"
        );
        let unreachable = ModelError::Transport {
            provider: "ollama".to_owned(),
            source: "connection refused".into(),
        };
        assert_eq!(
            message("ollama:llama3.2", unreachable),
            "the model `ollama:llama3.2` gave no answer (check that the server is running, and OLLAMA_BASE_URL if it is set): could not reach ollama: connection refused"
        );
        // Nothing to check on this side: no hint.
        assert_eq!(
            message("openai:gpt-4o-mini", api("openai", 500)),
            "the model `openai:gpt-4o-mini` gave no answer: openai answered 500: refused"
        );
        assert_eq!(
            message("ollama:llama3.2", api("ollama", 401)),
            "the model `ollama:llama3.2` gave no answer: ollama answered 401: refused"
        );
    }

    #[test]
    fn tool_output_is_text_for_strings_and_json_otherwise() {
        assert_eq!(output_text(&serde_json::json!(10)), "10");
        assert_eq!(
            output_text(&serde_json::json!(
                "Successfully sent email to sally@gmail.com."
            )),
            "Successfully sent email to sally@gmail.com."
        );
        assert_eq!(
            output_text(&serde_json::json!({"sent": true})),
            r#"{"sent":true}"#
        );
    }
}

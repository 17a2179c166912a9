//! Chat model providers behind toolgate's one [`ChatModel`] trait.
//!
//! Architecture invariant: nothing outside this crate knows which provider is
//! in use. Callers get an `Arc<dyn ChatModel>` from [`from_spec`] and speak
//! toolgate's own message types; wire formats stay in here.
//!
//! The providers:
//!
//! - [`openai::OpenAiModel`]: OpenAI's Chat Completions API, and the servers
//!   that copy it (Ollama, vLLM, the llama.cpp server, LM Studio);
//! - [`anthropic::AnthropicModel`]: Anthropic's Messages API;
//! - [`scripted::ScriptedModel`]: recorded conversations, offline.
//!
//! The HTTP providers stream when the request asks for text as it comes
//! ([`toolgate_core::ChatRequest::on_text`]), and retry rate limits, server
//! errors and broken connections as [`HttpOptions`] says.

pub mod anthropic;
mod http;
pub mod openai;
pub mod scripted;

use std::sync::Arc;

use toolgate_core::{ChatModel, ModelError};

pub use http::HttpOptions;

/// The providers [`from_spec`] knows, as `PROVIDER:MODEL` examples.
pub const SPEC_EXAMPLES: &str =
    "openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, scripted:PATH";

/// A model from a spec such as `openai:gpt-4o-mini`, configured from the
/// process environment.
///
/// - `openai:MODEL`: OpenAI, with the key in `OPENAI_API_KEY`; the base URL
///   is `OPENAI_BASE_URL` when set (for any OpenAI-compatible server).
/// - `anthropic:MODEL`: Anthropic, with the key in `ANTHROPIC_API_KEY`; the
///   base URL is `ANTHROPIC_BASE_URL` when set.
/// - `ollama:MODEL`: a local Ollama at `OLLAMA_BASE_URL` (default
///   `http://localhost:11434/v1`); no key needed.
/// - `scripted:PATH`: replays the conversations recorded in the JSON file
///   at `PATH`.
pub fn from_spec(spec: &str) -> Result<Arc<dyn ChatModel>, ModelError> {
    from_spec_with_env(spec, |name| std::env::var(name).ok())
}

/// [`from_spec`], reading variables through `env` instead of the process
/// environment (for tests, or settings kept elsewhere). An empty value
/// counts as unset.
pub fn from_spec_with_env(
    spec: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ChatModel>, ModelError> {
    let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let (provider, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let model_name = |example: &str| {
        if rest.trim().is_empty() {
            Err(ModelError::Config {
                message: format!(
                    "`{spec}` names no model: write `{provider}:MODEL`, e.g. `{provider}:{example}`"
                ),
            })
        } else {
            Ok(rest.trim())
        }
    };
    match provider {
        "openai" => {
            let model = model_name("gpt-4o-mini")?;
            let key = env("OPENAI_API_KEY").ok_or_else(|| ModelError::Config {
                message: "OPENAI_API_KEY is not set: export OPENAI_API_KEY=… (a key from https://platform.openai.com/api-keys), or use ollama:MODEL for a local server".to_owned(),
            })?;
            let mut builder = openai::OpenAiModel::builder(model).api_key(key);
            if let Some(url) = env("OPENAI_BASE_URL") {
                builder = builder.base_url(url);
            }
            Ok(Arc::new(builder.build()?))
        }
        "anthropic" => {
            let model = model_name("claude-sonnet-4-5")?;
            let key = env("ANTHROPIC_API_KEY").ok_or_else(|| ModelError::Config {
                message: "ANTHROPIC_API_KEY is not set: export ANTHROPIC_API_KEY=… (a key from https://console.anthropic.com/settings/keys), or use ollama:MODEL for a local server".to_owned(),
            })?;
            let mut builder = anthropic::AnthropicModel::builder(model).api_key(key);
            if let Some(url) = env("ANTHROPIC_BASE_URL") {
                builder = builder.base_url(url);
            }
            Ok(Arc::new(builder.build()?))
        }
        "ollama" => {
            let model = model_name("llama3.2")?;
            let url = env("OLLAMA_BASE_URL").unwrap_or_else(|| openai::OLLAMA_BASE_URL.to_owned());
            let model = openai::OpenAiModel::builder(model)
                .base_url(url)
                .provider_name("ollama")
                .build()?;
            Ok(Arc::new(model))
        }
        "scripted" => {
            if rest.is_empty() {
                return Err(ModelError::Config {
                    message: "`scripted` needs the path of a script: `scripted:PATH`".to_owned(),
                });
            }
            Ok(Arc::new(scripted::ScriptedModel::from_file(rest)?))
        }
        _ => Err(ModelError::Config {
            message: format!(
                "unknown model provider `{provider}` in `{spec}`; write PROVIDER:MODEL with one of these providers: openai, anthropic, ollama, scripted (e.g. {SPEC_EXAMPLES})"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(spec: &str, vars: &[(&str, &str)]) -> String {
        let env = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        match from_spec_with_env(spec, env) {
            Ok(_) => panic!("`{spec}` should not give a model"),
            Err(error) => {
                assert!(matches!(error, ModelError::Config { .. }), "{error:?}");
                error.to_string()
            }
        }
    }

    #[test]
    fn unknown_providers_list_the_known_ones() {
        assert_eq!(
            error("gemini:pro", &[]),
            "unknown model provider `gemini` in `gemini:pro`; write PROVIDER:MODEL with one of these providers: openai, anthropic, ollama, scripted (e.g. openai:gpt-4o-mini, anthropic:claude-sonnet-4-5, ollama:llama3.2, scripted:PATH)"
        );
        assert_eq!(
            error("scripted", &[]),
            "`scripted` needs the path of a script: `scripted:PATH`"
        );
    }

    #[test]
    fn missing_keys_say_what_to_set() {
        assert_eq!(
            error("openai:gpt-4o-mini", &[("ANTHROPIC_API_KEY", "sk-ant")]),
            "OPENAI_API_KEY is not set: export OPENAI_API_KEY=… (a key from https://platform.openai.com/api-keys), or use ollama:MODEL for a local server"
        );
        // An empty variable is as good as none.
        assert_eq!(
            error(
                "anthropic:claude-sonnet-4-5",
                &[("ANTHROPIC_API_KEY", " "), ("OPENAI_API_KEY", "sk")]
            ),
            "ANTHROPIC_API_KEY is not set: export ANTHROPIC_API_KEY=… (a key from https://console.anthropic.com/settings/keys), or use ollama:MODEL for a local server"
        );
    }

    #[test]
    fn specs_without_a_model_name_one() {
        assert_eq!(
            error("openai", &[("OPENAI_API_KEY", "sk")]),
            "`openai` names no model: write `openai:MODEL`, e.g. `openai:gpt-4o-mini`"
        );
        assert_eq!(
            error("anthropic:", &[("ANTHROPIC_API_KEY", "sk")]),
            "`anthropic:` names no model: write `anthropic:MODEL`, e.g. `anthropic:claude-sonnet-4-5`"
        );
        assert_eq!(
            error("ollama: ", &[]),
            "`ollama: ` names no model: write `ollama:MODEL`, e.g. `ollama:llama3.2`"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_url() {
        assert_eq!(
            error(
                "openai:gpt-4o-mini",
                &[
                    ("OPENAI_API_KEY", "sk"),
                    ("OPENAI_BASE_URL", "localhost:8080/v1")
                ]
            ),
            "the base URL `localhost:8080/v1` of openai uses `localhost:`; use an http:// or https:// URL"
        );
        assert_eq!(
            error("ollama:llama3.2", &[("OLLAMA_BASE_URL", "http//box/v1")]),
            "the base URL `http//box/v1` of ollama is not a URL (relative URL without a base); write it in full, e.g. http://localhost:11434/v1"
        );
        assert_eq!(
            error(
                "anthropic:claude-sonnet-4-5",
                &[
                    ("ANTHROPIC_API_KEY", "sk"),
                    ("ANTHROPIC_BASE_URL", "ftp://x")
                ]
            ),
            "the base URL `ftp://x` of anthropic uses `ftp:`; use an http:// or https:// URL"
        );
    }

    #[test]
    fn local_and_keyed_providers_build_without_network() {
        let none = |_: &str| None;
        assert!(from_spec_with_env("ollama:llama3.2", none).is_ok());
        let keys = |name: &str| name.ends_with("_API_KEY").then(|| "k".to_owned());
        assert!(from_spec_with_env("openai:gpt-4o-mini", keys).is_ok());
        assert!(from_spec_with_env("anthropic:claude-sonnet-4-5", keys).is_ok());
    }
}

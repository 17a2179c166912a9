//! Chat model providers behind toolgate's one [`ChatModel`] trait.
//!
//! Architecture invariant: nothing outside this crate knows which provider is
//! in use. Callers get an `Arc<dyn ChatModel>` from [`from_spec`] and speak
//! toolgate's own message types; wire formats stay in here.

pub mod scripted;

use std::sync::Arc;

use toolgate_core::{ChatModel, ModelError};

/// A model from a spec such as `scripted:PATH`.
///
/// Known providers: `scripted:PATH` replays the conversations recorded in
/// the JSON file at `PATH`.
pub fn from_spec(spec: &str) -> Result<Arc<dyn ChatModel>, ModelError> {
    let (provider, rest) = spec.split_once(':').unwrap_or((spec, ""));
    match provider {
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
                "unknown model provider `{provider}` in `{spec}`; write PROVIDER:MODEL with one of these providers: scripted"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_providers_list_the_known_ones() {
        let error = from_spec("gemini:pro").err().unwrap();
        assert_eq!(
            error.to_string(),
            "unknown model provider `gemini` in `gemini:pro`; write PROVIDER:MODEL with one of these providers: scripted"
        );
        let error = from_spec("scripted").err().unwrap();
        assert_eq!(
            error.to_string(),
            "`scripted` needs the path of a script: `scripted:PATH`"
        );
    }
}

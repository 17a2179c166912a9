//! toolgate puts a human between AI models and the tools they call.
//!
//! This crate is the library people use: typed tools made with [`tool`],
//! chat models from [`models`], and chains composed with `|`. The seed
//! system, LangChain's "human-in-the-loop for tools" how-to, reads:
//!
//! ```
//! use toolgate::{ChatModelExt, Runnable, call_tools, human_approval, tool, tools};
//!
//! /// Dummy function to count number of e-mails. Returns 2 * last_n_days.
//! #[tool]
//! async fn count_emails(last_n_days: i64) -> i64 {
//!     last_n_days * 2
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tools = tools![CountEmails]?;
//! let llm = toolgate::seed::model();
//! # let answers = std::io::Cursor::new("yes\n");
//! # let human_approval = || toolgate::HumanApproval::with_io(answers, std::io::sink());
//! let chain = llm.bind_tools(&tools) | human_approval() | call_tools(&tools);
//! let outputs = chain.invoke("how many emails did i get in the last 5 days?").await?;
//! assert_eq!(outputs[0].output, 10);
//! # Ok(())
//! # }
//! ```

extern crate self as toolgate;

mod approval;
pub mod seed;

pub use approval::{HumanApproval, human_approval};
pub use toolgate_core::*;
pub use toolgate_engine as engine;
pub use toolgate_engine::{Agent, RunOptions, RunOutcome, Wait};
pub use toolgate_models as models;
pub use toolgate_store::{PgStore, SqliteStore};

/// Makes a tool of a documented async fn.
///
/// The doc comment becomes the tool's description; an `# Arguments`
/// section in it (`` * `name` - what it is ``) describes each parameter.
/// The parameters become the JSON Schema of the arguments (through
/// `schemars`), and calls are checked against that schema before the
/// function runs, so the function only ever sees valid arguments.
///
/// The function stays as written. Next to it, `#[tool]` defines a unit
/// struct, named in `PascalCase` after the function (`count_emails` →
/// `CountEmails`), that implements [`Tool`].
///
/// ```
/// use toolgate::tool;
///
/// /// Dummy function for sending an e-mail.
/// ///
/// /// # Arguments
/// /// * `message` - the text of the e-mail
/// /// * `recipient` - the address to send it to
/// #[tool(destructive)]
/// async fn send_email(message: String, recipient: String) -> String {
///     format!("Successfully sent email to {recipient}.")
/// }
///
/// use toolgate::Tool;
/// let spec = SendEmail.spec();
/// assert_eq!(spec.name, "send_email");
/// assert_eq!(spec.description, "Dummy function for sending an e-mail.");
/// assert_eq!(spec.parameters["properties"]["recipient"]["description"], "the address to send it to");
/// assert_eq!(spec.hints.destructive, Some(true));
/// ```
///
/// Options: `name = "…"` (the tool's name, by default the function's),
/// `description = "…"` (instead of the doc comment), and the hints
/// `read_only`, `destructive`, `idempotent` (each alone, or `= true`/`= false`).
///
/// The function may return any `Serialize` type, or a `Result` whose error
/// converts into a boxed error (`std::io::Error`, `anyhow::Error`, `String`,
/// …); an `Err` becomes [`ToolError::Failed`].
pub use toolgate_macros::tool;

/// A [`Tools`] set of tool values: `tools![CountEmails, SendEmail]`.
///
/// Evaluates to `Result<Tools, ToolError>`: tool names must be valid and
/// distinct.
#[macro_export]
macro_rules! tools {
    ($($tool:expr),* $(,)?) => {
        $crate::Tools::new([$(::std::sync::Arc::new($tool) as ::std::sync::Arc<dyn $crate::Tool>),*])
    };
}

#[doc(hidden)]
pub mod __private {
    //! What `#[tool]` expands to; not a stable API.

    pub use async_trait::async_trait;
    pub use schemars;
    pub use serde;
    pub use serde_json;

    use serde_json::{Map, Value};
    use toolgate_core::{ArgumentProblem, ToolError, ToolHints};

    /// The JSON Schema of a tool's arguments struct, as models expect it:
    /// an inline object schema without a title or `$schema`.
    pub fn schema_for<T: schemars::JsonSchema>() -> Value {
        let generator = schemars::generate::SchemaSettings::draft2020_12()
            .with(|settings| {
                settings.inline_subschemas = true;
                settings.meta_schema = None;
            })
            .into_generator();
        let mut schema = generator.into_root_schema_for::<T>().to_value();
        if let Some(object) = schema.as_object_mut() {
            object.remove("title");
            object.remove("$schema");
        }
        schema
    }

    /// Reads checked arguments into the arguments struct.
    pub fn parse_args<T: serde::de::DeserializeOwned>(
        tool: &str,
        args: Map<String, Value>,
    ) -> Result<T, ToolError> {
        serde_json::from_value(Value::Object(args)).map_err(|error| ToolError::InvalidArguments {
            tool: tool.to_owned(),
            problems: vec![ArgumentProblem {
                argument: String::new(),
                problem: error.to_string(),
            }],
        })
    }

    /// Turns a tool's return value into JSON.
    pub fn output<T: serde::Serialize>(tool: &str, output: T) -> Result<Value, ToolError> {
        serde_json::to_value(output).map_err(|source| ToolError::InvalidOutput {
            tool: tool.to_owned(),
            source,
        })
    }

    /// The hints given in `#[tool(…)]`.
    pub fn hints(
        read_only: Option<bool>,
        destructive: Option<bool>,
        idempotent: Option<bool>,
    ) -> ToolHints {
        ToolHints {
            read_only,
            destructive,
            idempotent,
        }
    }
}

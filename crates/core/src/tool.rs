//! Tools, tool calls, and the checks that stand between a model's call and a
//! tool's function.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::BoxError;
use crate::fingerprint::Fingerprint;
use crate::recent::{Recent, with_recent};

/// A call of one tool, as a model proposed it.
///
/// Serialises with its keys in the order `name`, `args`, `id`, as the seed
/// prints tool calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The name of the tool to call.
    pub name: String,
    /// The arguments, a JSON object.
    pub args: Map<String, Value>,
    /// The id the model gave this call; the tool's result refers to it.
    pub id: String,
}

impl ToolCall {
    /// A call of `name` with `args`.
    ///
    /// `args` that are not a JSON object are kept as the single key `""`, so
    /// that validation reports them instead of silently dropping them.
    pub fn new(id: impl Into<String>, name: impl Into<String>, args: Value) -> Self {
        let args = match args {
            Value::Object(map) => map,
            other => Map::from_iter([(String::new(), other)]),
        };
        ToolCall {
            name: name.into(),
            args,
            id: id.into(),
        }
    }

    /// The fingerprint of this call against the schema of the tool it names.
    pub fn fingerprint(&self, parameters: &Value) -> Fingerprint {
        Fingerprint::of_call(&self.name, &self.args, parameters)
    }
}

/// What the tool's author says about its effects (the MCP tool annotations).
///
/// `None` means "not said"; policy then falls back to the cautious default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolHints {
    /// The tool does not change anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// The tool may destroy or overwrite something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// Calling the tool twice with the same arguments has the effect of once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
}

/// What a model is told about a tool: its name, what it does, and the JSON
/// Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// The name models call it by: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// What the tool does, for the model and for the people approving it.
    pub description: String,
    /// The JSON Schema of the arguments object.
    pub parameters: Value,
    /// What the tool's effects are.
    #[serde(default)]
    pub hints: ToolHints,
}

impl ToolSpec {
    /// A tool spec.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters,
            hints: ToolHints::default(),
        }
    }

    /// Sets the hints.
    pub fn hints(mut self, hints: ToolHints) -> Self {
        self.hints = hints;
        self
    }
}

/// A tool: a described, schema-checked async function.
///
/// Usually written with `#[tool]` on an async fn. By the time `call` runs,
/// [`Tools`] has already checked `args` against [`ToolSpec::parameters`].
#[async_trait]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a toolgate tool",
    note = "put `#[toolgate::tool]` on an async fn, or implement `toolgate::Tool` by hand"
)]
pub trait Tool: Send + Sync {
    /// The tool's name, description and argument schema.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool with arguments that passed its schema.
    async fn call(&self, args: Map<String, Value>) -> Result<Value, ToolError>;
}

impl fmt::Debug for dyn Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.spec().name)
            .finish_non_exhaustive()
    }
}

/// A problem with one argument of a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgumentProblem {
    /// The argument, as a path (`recipient`, `filters[0].name`), or empty
    /// when the problem is with the arguments as a whole.
    pub argument: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ArgumentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.argument.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "`{}`: {}", self.argument, self.problem)
        }
    }
}

/// Why a tool call could not run, or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The model called a tool that is not bound.
    #[error(
        "unknown tool `{name}`; the available tools are: {}",
        list_or_none(available)
    )]
    UnknownTool {
        /// The name the model used.
        name: String,
        /// The names of the tools that are bound.
        available: Vec<String>,
    },
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments for tool `{tool}`: {}", join_problems(problems))]
    InvalidArguments {
        /// The tool called.
        tool: String,
        /// Every problem found, in schema order.
        problems: Vec<ArgumentProblem>,
    },
    /// The tool ran and returned an error.
    #[error("tool `{tool}` failed: {source}")]
    Failed {
        /// The tool called.
        tool: String,
        /// The tool's own error.
        #[source]
        source: BoxError,
    },
    /// The tool's result could not be turned into JSON.
    #[error("tool `{tool}` returned a result that is not JSON: {source}")]
    InvalidOutput {
        /// The tool called.
        tool: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// The tool's declared schema is not a valid JSON Schema.
    #[error("tool `{tool}` declares an invalid argument schema: {message}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What the schema compiler said.
        message: String,
    },
    /// The tool's name cannot be sent to models.
    #[error(
        "tool name `{name}` is invalid: use 1 to 64 letters, digits, `_` or `-` (models reject other names)"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two tools share a name.
    #[error("two tools are named `{name}`; tool names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
    },
}

impl ToolError {
    /// A tool's own failure.
    pub fn failed(tool: impl Into<String>, source: impl Into<BoxError>) -> Self {
        ToolError::Failed {
            tool: tool.into(),
            source: source.into(),
        }
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

fn join_problems(problems: &[ArgumentProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

struct Entry {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

/// A set of tools, looked up by name, that checks every call before it runs.
///
/// Cheap to clone. The order is the order the tools were given in, which is
/// the order models are told about them.
#[derive(Clone)]
pub struct Tools {
    entries: Arc<[Entry]>,
}

impl fmt::Debug for Tools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Tools {
    /// A tool set; fails if a name is invalid or taken twice, or if a
    /// schema does not compile.
    pub fn new(tools: impl IntoIterator<Item = Arc<dyn Tool>>) -> Result<Self, ToolError> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for tool in tools {
            let spec = tool.spec();
            if !valid_tool_name(&spec.name) {
                return Err(ToolError::InvalidName {
                    name: spec.name.clone(),
                });
            }
            if !seen.insert(spec.name.clone()) {
                return Err(ToolError::DuplicateName {
                    name: spec.name.clone(),
                });
            }
            let validator = jsonschema::validator_for(&spec.parameters).map_err(|error| {
                ToolError::InvalidSchema {
                    tool: spec.name.clone(),
                    message: error.to_string(),
                }
            })?;
            entries.push(Entry { tool, validator });
        }
        Ok(Tools {
            entries: entries.into(),
        })
    }

    /// The specs of all tools, in order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.entries.iter().map(|e| e.tool.spec().clone()).collect()
    }

    /// The names of all tools, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| e.tool.spec().name.clone())
            .collect()
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.entry(name).map(|e| &e.tool)
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no tools.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tool.spec().name == name)
    }

    /// Checks a call without running it: the tool exists and the arguments
    /// fit its schema.
    pub fn check(&self, call: &ToolCall) -> Result<&Arc<dyn Tool>, ToolError> {
        let entry = self
            .entry(&call.name)
            .ok_or_else(|| ToolError::UnknownTool {
                name: call.name.clone(),
                available: self.names(),
            })?;
        let args = Value::Object(call.args.clone());
        let problems: Vec<ArgumentProblem> = entry
            .validator
            .iter_errors(&args)
            .map(|error| argument_problem(&error))
            .collect();
        if problems.is_empty() {
            Ok(&entry.tool)
        } else {
            Err(ToolError::InvalidArguments {
                tool: call.name.clone(),
                problems,
            })
        }
    }

    /// Checks a call, then runs it.
    pub async fn invoke(&self, call: &ToolCall) -> Result<Value, ToolError> {
        let tool = self.check(call)?;
        tool.call(call.args.clone()).await
    }
}

/// Checks `args` against a JSON Schema that is not bound to a tool set: an
/// approval's stored schema, when a person edits the arguments.
///
/// # Errors
///
/// [`ToolError::InvalidSchema`] when `schema` does not compile, and
/// [`ToolError::InvalidArguments`] with every problem found.
pub fn check_args(tool: &str, schema: &Value, args: &Map<String, Value>) -> Result<(), ToolError> {
    with_validator(schema, |validator| {
        let validator = validator.map_err(|message| ToolError::InvalidSchema {
            tool: tool.to_owned(),
            message: message.to_owned(),
        })?;
        let args = Value::Object(args.clone());
        let problems: Vec<ArgumentProblem> = validator
            .iter_errors(&args)
            .map(|error| argument_problem(&error))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ToolError::InvalidArguments {
                tool: tool.to_owned(),
                problems,
            })
        }
    })
}

/// Whether `schema` compiles as a JSON Schema, so that [`check_args`] can
/// check arguments against it (the answer is kept as its schemas are).
pub fn schema_compiles(schema: &Value) -> bool {
    with_validator(schema, |validator| validator.is_ok())
}

/// How many compiled schemas each thread keeps for [`check_args`].
const KEPT_VALIDATORS: usize = 8;

/// A schema compiled, or why it does not compile.
type Compiled = Result<jsonschema::Validator, String>;

thread_local! {
    /// The schemas [`check_args`] used last on this thread, compiled. An
    /// outside agent or a gateway sends the same few schemas call after
    /// call, and compiling one costs far more than comparing it.
    static VALIDATORS: Recent<Compiled> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `schema` compiled, compiling it only if it is not among
/// the schemas seen last.
fn with_validator<R>(
    schema: &Value,
    f: impl FnOnce(Result<&jsonschema::Validator, &str>) -> R,
) -> R {
    let compile = |schema: &Value| jsonschema::validator_for(schema).map_err(|e| e.to_string());
    with_recent(&VALIDATORS, KEPT_VALIDATORS, schema, compile, |compiled| {
        f(compiled.as_ref().map_err(String::as_str))
    })
}

/// Tool names that every major provider accepts.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn argument_problem(error: &jsonschema::ValidationError<'_>) -> ArgumentProblem {
    use jsonschema::error::ValidationErrorKind;

    let mut path = pointer_to_path(error.instance_path().as_str());
    let problem = match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            path = join_path(&path, &name);
            "is required but missing".to_owned()
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            if let [name] = unexpected.as_slice() {
                path = join_path(&path, name);
                "is not an argument of this tool".to_owned()
            } else {
                format!(
                    "unexpected arguments: {}",
                    unexpected
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        _ => error.to_string(),
    };
    ArgumentProblem {
        argument: path,
        problem,
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// `/filters/0/name` → `filters[0].name`.
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Echo(ToolSpec);

    #[async_trait]
    impl Tool for Echo {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        async fn call(&self, args: Map<String, Value>) -> Result<Value, ToolError> {
            Ok(Value::Object(args))
        }
    }

    #[test]
    fn check_args_keeps_each_schema_apart() {
        // More schemas than are kept, in turn, twice: each call is checked
        // against its own schema, compiled or kept, and a schema that does
        // not compile is refused every time.
        let schemas: Vec<Value> = (0..KEPT_VALIDATORS + 3)
            .map(|i| {
                json!({
                    "type": "object",
                    "properties": {format!("n{i}"): {"type": "integer", "maximum": i}},
                    "required": [format!("n{i}")]
                })
            })
            .collect();
        let broken = json!({"type": "no such type"});
        for _ in 0..2 {
            for (i, schema) in schemas.iter().enumerate() {
                let fits = json!({format!("n{i}"): i});
                let too_big = json!({format!("n{i}"): i + 1});
                let other = json!({format!("n{}", i + 1): 0});
                assert!(check_args("t", schema, fits.as_object().unwrap()).is_ok());
                for bad in [too_big, other] {
                    let error = check_args("t", schema, bad.as_object().unwrap()).unwrap_err();
                    assert!(
                        matches!(error, ToolError::InvalidArguments { .. }),
                        "{error}"
                    );
                }
                let error = check_args("t", &broken, &Map::new()).unwrap_err();
                assert!(matches!(error, ToolError::InvalidSchema { .. }), "{error}");
            }
        }
    }

    fn echo(name: &str) -> Arc<dyn Tool> {
        Arc::new(Echo(ToolSpec::new(
            name,
            "Echoes its arguments.",
            json!({
                "type": "object",
                "properties": {
                    "recipient": {"type": "string"},
                    "filters": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"]
                    }}
                },
                "required": ["recipient"],
                "additionalProperties": false
            }),
        )))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn valid_calls_run() {
        let tools = Tools::new([echo("echo")]).unwrap();
        let call = ToolCall::new("1", "echo", json!({"recipient": "sally@gmail.com"}));
        assert_eq!(
            block_on(tools.invoke(&call)).unwrap(),
            json!({"recipient": "sally@gmail.com"})
        );
    }

    #[test]
    fn unknown_tools_name_the_available_ones() {
        let tools = Tools::new([echo("echo"), echo("other")]).unwrap();
        let error = tools
            .check(&ToolCall::new("1", "delete_all", json!({})))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown tool `delete_all`; the available tools are: echo, other"
        );
        let empty = Tools::new([]).unwrap();
        let error = empty
            .check(&ToolCall::new("1", "x", json!({})))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown tool `x`; the available tools are: (none)"
        );
    }

    #[test]
    fn invalid_arguments_name_each_argument_and_problem() {
        let tools = Tools::new([echo("echo")]).unwrap();
        let call = ToolCall::new(
            "1",
            "echo",
            json!({"filters": [{"name": 3}], "bcc": "eve@example.com"}),
        );
        let error = tools.check(&call).unwrap_err();
        let ToolError::InvalidArguments { tool, problems } = &error else {
            panic!("expected invalid arguments, got {error:?}")
        };
        assert_eq!(tool, "echo");
        let arguments: Vec<&str> = problems.iter().map(|p| p.argument.as_str()).collect();
        assert!(arguments.contains(&"recipient"), "{problems:?}");
        assert!(arguments.contains(&"bcc"), "{problems:?}");
        assert!(arguments.contains(&"filters[0].name"), "{problems:?}");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid arguments for tool `echo`: "),
            "{message}"
        );
        assert!(
            message.contains("`recipient`: is required but missing"),
            "{message}"
        );
        assert!(
            message.contains("`bcc`: is not an argument of this tool"),
            "{message}"
        );
        assert!(
            message.contains("`filters[0].name`: 3 is not of type \"string\""),
            "{message}"
        );
    }

    #[test]
    fn non_object_arguments_are_reported_not_dropped() {
        let tools = Tools::new([echo("echo")]).unwrap();
        let call = ToolCall::new("1", "echo", json!("sally"));
        assert_eq!(call.args.get(""), Some(&json!("sally")));
        assert!(matches!(
            tools.check(&call),
            Err(ToolError::InvalidArguments { .. })
        ));
    }

    #[test]
    fn tool_sets_refuse_bad_and_duplicate_names_and_bad_schemas() {
        let error = Tools::new([echo("send email")]).unwrap_err();
        assert!(matches!(error, ToolError::InvalidName { .. }), "{error}");
        let error = Tools::new([echo(&"x".repeat(65))]).unwrap_err();
        assert!(matches!(error, ToolError::InvalidName { .. }), "{error}");
        let error = Tools::new([echo("a"), echo("a")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "two tools are named `a`; tool names must be unique"
        );
        let bad: Arc<dyn Tool> = Arc::new(Echo(ToolSpec::new(
            "bad",
            "",
            json!({"type": "no-such-type"}),
        )));
        let error = Tools::new([bad]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("tool `bad` declares an invalid argument schema: "),
            "{error}"
        );
    }

    #[test]
    fn tool_calls_serialise_as_name_args_id() {
        let call = ToolCall::new(
            "toolu_1",
            "send_email",
            json!({"recipient": "a", "message": "b"}),
        );
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"name":"send_email","args":{"recipient":"a","message":"b"},"id":"toolu_1"}"#
        );
    }

    #[test]
    fn json_pointers_become_readable_paths() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/a/0/b~1c/d~0e"), "a[0].b/c.d~e");
    }
}

//! `when` conditions: CEL programs compiled once at load, and the variables
//! they see (`args`, `tool`, `run`, `principal`), converted from the call on
//! first use only. Conditions the [fast path](super::fast) handles skip the
//! interpreter unless the fast path gives up.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ParseErrors, Program};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::EvalInput;
use super::fast::Node;

/// The CEL environment every condition is compiled and run in: the
/// standard library and the strings extension (`lowerAscii`, `split`, …).
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .expect("the strings extension fits the standard library");
        Arc::new(env)
    })
}

/// A compiled `when` condition.
#[derive(Clone)]
pub(super) struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    fast: Option<Arc<Node>>,
}

/// Why a condition does not compile.
#[derive(Debug)]
pub(super) enum CompileError {
    /// It is not CEL.
    Parse(ParseErrors),
    /// It passes `matches` a literal pattern that is not a regular
    /// expression.
    Regex { pattern: String, message: String },
}

impl Condition {
    /// Parses `source`, and compiles it for the fast path when it can.
    pub(super) fn compile(source: &str) -> Result<Condition, CompileError> {
        let program = env().compile(source).map_err(CompileError::Parse)?;
        if let Some((pattern, message)) = invalid_regex(program.expression()) {
            return Err(CompileError::Regex { pattern, message });
        }
        let fast = Node::compile(program.expression()).map(Arc::new);
        Ok(Condition {
            source: Arc::from(source),
            program: Arc::new(program),
            fast,
        })
    }

    /// Whether the fast path can evaluate this condition.
    #[cfg(test)]
    pub(super) fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The expression, as written.
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn source_arc(&self) -> Arc<str> {
        Arc::clone(&self.source)
    }

    /// The fast path's answer, if it has one.
    #[cfg(test)]
    pub(super) fn fast_answer(&self, input: &EvalInput<'_>) -> Option<bool> {
        self.fast
            .as_ref()
            .and_then(|fast| fast.evaluate_condition(input).ok())
    }

    /// Runs the condition: its bool, or why it has none.
    pub(super) fn evaluate(&self, variables: &Variables<'_>) -> Result<bool, String> {
        if let Some(fast) = &self.fast
            && let Ok(answer) = fast.evaluate_condition(variables.input)
        {
            return Ok(answer);
        }
        self.evaluate_with_cel(variables)
    }

    /// Runs the condition with the interpreter alone.
    pub(super) fn evaluate_with_cel(&self, variables: &Variables<'_>) -> Result<bool, String> {
        let mut context = Context::with_env(Arc::clone(env()));
        context.set_variable_resolver(variables);
        let value = cel::Value::resolve_val(self.program.expression(), &context)
            .map_err(|error| error.to_string())?;
        match value.downcast_ref::<CelBool>() {
            Some(b) => Ok(*b.inner()),
            None => Err(format!(
                "the condition gave a {} ({}), not a bool",
                value.get_type().name(),
                describe(&*value),
            )),
        }
    }
}

/// The first literal pattern given to `matches` that is not a valid regular
/// expression, with the reason: better refused at load than failing on
/// every call.
fn invalid_regex(expr: &IdedExpr) -> Option<(String, String)> {
    let check = |pattern: &IdedExpr| match &pattern.expr {
        Expr::Literal(LiteralValue::String(pattern)) => regex::Regex::new(pattern.inner())
            .err()
            .map(|error| (pattern.inner().to_owned(), error.to_string())),
        _ => None,
    };
    match &expr.expr {
        Expr::Call(call) => {
            let pattern = match (&call.target, call.args.as_slice()) {
                (Some(_), [pattern]) | (None, [_, pattern]) if call.func_name == "matches" => {
                    check(pattern)
                }
                _ => None,
            };
            pattern
                .or_else(|| call.target.as_deref().and_then(invalid_regex))
                .or_else(|| call.args.iter().find_map(invalid_regex))
        }
        Expr::Select(select) => invalid_regex(&select.operand),
        Expr::List(list) => list.elements.iter().find_map(invalid_regex),
        Expr::Map(map) => map.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                invalid_regex(&entry.key).or_else(|| invalid_regex(&entry.value))
            }
            EntryExpr::StructField(field) => invalid_regex(&field.value),
        }),
        Expr::Struct(s) => s.entries.iter().find_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(entry) => {
                invalid_regex(&entry.key).or_else(|| invalid_regex(&entry.value))
            }
            EntryExpr::StructField(field) => invalid_regex(&field.value),
        }),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .find_map(invalid_regex),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => None,
    }
}

/// A short rendering of a value for error messages, in CEL's notation.
/// Map keys are sorted, so that one value is always described alike.
fn describe(value: &dyn Val) -> String {
    const LIMIT: usize = 80;
    let mut text = String::new();
    match cel::Value::try_from(value) {
        Ok(value) => render(&value, &mut text, LIMIT),
        Err(_) => text.push_str("a value"),
    }
    if text.len() > LIMIT {
        let mut end = LIMIT - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Writes `value` to `out`, stopping soon after `out` reaches `limit`
/// bytes.
fn render(value: &cel::Value, out: &mut String, limit: usize) {
    use std::fmt::Write as _;

    if out.len() > limit {
        return;
    }
    match value {
        cel::Value::String(s) => {
            let _ = write!(out, "{:?}", s.as_str());
        }
        cel::Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        cel::Value::UInt(u) => {
            let _ = write!(out, "{u}u");
        }
        cel::Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        cel::Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        cel::Value::Null => out.push_str("null"),
        cel::Value::List(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                render(item, out, limit);
                if out.len() > limit {
                    return;
                }
            }
            out.push(']');
        }
        cel::Value::Map(map) => {
            let mut entries: Vec<_> = map.map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                let _ = match key {
                    cel::objects::Key::String(s) => write!(out, "{:?}: ", s.as_str()),
                    cel::objects::Key::Int(i) => write!(out, "{i}: "),
                    cel::objects::Key::Uint(u) => write!(out, "{u}u: "),
                    cel::objects::Key::Bool(b) => write!(out, "{b}: "),
                };
                render(item, out, limit);
                if out.len() > limit {
                    return;
                }
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

type Slot<'a> = OnceLock<Box<dyn Val + 'a>>;

/// The variables of one evaluation, each converted from the call the first
/// time a condition reads it, then shared by the other conditions.
pub(super) struct Variables<'a> {
    pub(super) input: &'a EvalInput<'a>,
    args: Slot<'a>,
    tool: Slot<'a>,
    run: Slot<'a>,
    principal: Slot<'a>,
}

impl<'a> Variables<'a> {
    pub(super) fn new(input: &'a EvalInput<'a>) -> Self {
        Variables {
            input,
            args: OnceLock::new(),
            tool: OnceLock::new(),
            run: OnceLock::new(),
            principal: OnceLock::new(),
        }
    }
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let input = self.input;
        let value = match variable {
            "args" => self.args.get_or_init(|| object(input.args)),
            "tool" => self
                .tool
                .get_or_init(|| Box::new(CelString::from(input.tool))),
            "run" => self.run.get_or_init(|| match input.run {
                Some(run) => {
                    let thread: Box<dyn Val> = match run.thread {
                        Some(thread) => Box::new(CelString::from(thread)),
                        None => Box::new(CelNull),
                    };
                    let entries: HashMap<CelMapKey<'_>, Box<dyn Val>> = HashMap::from([
                        (
                            CelMapKey::from("id"),
                            Box::new(CelString::from(run.id)) as _,
                        ),
                        (CelMapKey::from("thread"), thread),
                    ]);
                    Box::new(CelMap::from(entries))
                }
                None => Box::new(CelNull),
            }),
            "principal" => self.principal.get_or_init(|| match input.principal {
                Some(principal) => json(principal),
                None => Box::new(CelNull),
            }),
            _ => return None,
        };
        Some(CowVal::Borrowed(value.as_ref()))
    }
}

/// A JSON value as a CEL value; strings are borrowed, not copied.
///
/// Integers that fit an `i64` are `int`, larger ones `uint`, the others
/// `double`.
fn json(value: &Value) -> Box<dyn Val + '_> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(items.iter().map(json).collect::<Vec<_>>())),
        Value::Object(map) => object(map),
    }
}

fn object(map: &Map<String, Value>) -> Box<dyn Val + '_> {
    let entries: HashMap<CelMapKey<'_>, Box<dyn Val>> = map
        .iter()
        .map(|(key, value)| (CelMapKey::from(key.as_str()), json(value)))
        .collect();
    Box::new(CelMap::from(entries))
}

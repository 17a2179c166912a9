//! Loading `[[policy.rules]]` from the text of a `toolgate.toml`, checking
//! every rule so that a bad policy is refused with the line and column of
//! the problem.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::condition::{CompileError, Condition};
use super::glob::Glob;
use super::{Action, Approver, AskSpec, Rule};

/// A policy that cannot be loaded: where, and why.
///
/// Displays as `FILE:LINE:COLUMN: MESSAGE`, e.g.
/// ``toolgate.toml:12:8: rule 3 (send_email): `when` is not valid CEL: …``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
#[non_exhaustive]
pub struct PolicyError {
    /// The file, as the caller named it.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, in characters, from 1.
    pub column: usize,
    /// What is wrong, naming the rule when it is about one.
    pub message: String,
}

/// The fields a rule may have, in the order the messages list them.
const FIELDS: &str = "name, tool, when, action, reason, approvers, quorum and timeout";

const CEL_HINT: &str = "write a CEL expression over args, tool, run and principal, e.g. \
                        'args.recipient.endsWith(\"@example.com\")'";

const GLOB_HINT: &str = "use * for any characters, ? for one character and [abc] for one of a set";

/// Turns byte offsets into lines and columns.
struct Source<'t> {
    file: &'t str,
    text: &'t str,
}

impl Source<'_> {
    fn error(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        PolicyError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }
}

type Entry<'i> = (
    &'i Spanned<std::borrow::Cow<'i, str>>,
    &'i Spanned<DeValue<'i>>,
);

/// The entries of a table in the order they are written.
fn in_file_order<'i>(table: &'i DeTable<'i>) -> Vec<Entry<'i>> {
    let mut entries: Vec<Entry<'i>> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Reads the rules of the policy in `text`.
pub(super) fn load(text: &str, file: &str) -> Result<Vec<Rule>, PolicyError> {
    let source = Source { file, text };
    let document = DeTable::parse(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        source.error(
            offset,
            format!("invalid TOML: {}", error.message().trim_end()),
        )
    })?;
    let Some((_, policy)) = document
        .get_ref()
        .iter()
        .find(|(key, _)| key.get_ref() == "policy")
    else {
        return Ok(Vec::new());
    };
    let DeValue::Table(policy_table) = policy.get_ref() else {
        return Err(source.error(
            policy.span().start,
            format!(
                "`policy` must be a table, not {}; write each rule as [[policy.rules]]",
                a(policy.get_ref())
            ),
        ));
    };
    let mut rules_value = None;
    for (key, value) in in_file_order(policy_table) {
        if key.get_ref() == "rules" {
            rules_value = Some(value);
        } else {
            return Err(source.error(
                key.span().start,
                format!(
                    "unknown field `{}` in [policy]; it holds only `rules`, written as [[policy.rules]]",
                    key.get_ref()
                ),
            ));
        }
    }
    let Some(rules_value) = rules_value else {
        return Ok(Vec::new());
    };
    let DeValue::Array(items) = rules_value.get_ref() else {
        return Err(source.error(
            rules_value.span().start,
            format!(
                "`policy.rules` must be an array of tables, not {}; write each rule as [[policy.rules]]",
                a(rules_value.get_ref())
            ),
        ));
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut names: HashMap<Arc<str>, usize> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let number = index + 1;
        let rule = read_rule(&source, number, item)?;
        if let Some(&first) = names.get(&rule.name) {
            return Err(source.error(
                item.span().start,
                format!(
                    "rule {number} ({}): the name `{}` is already used by rule {first}; rule names must be unique",
                    rule.name, rule.name
                ),
            ));
        }
        names.insert(Arc::clone(&rule.name), number);
        rules.push(rule);
    }
    Ok(rules)
}

/// "a string", "an integer", … for messages.
fn a(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {kind}")
}

/// A string of the file, with where it was written.
type Text<'i> = (&'i str, Range<usize>);

/// One rule's fields, as written, with where they were written.
#[derive(Default)]
struct RawRule<'i> {
    name: Option<Text<'i>>,
    tool: Option<Text<'i>>,
    when: Option<Text<'i>>,
    action: Option<Text<'i>>,
    reason: Option<Text<'i>>,
    /// The approvers, and where the `approvers` key is.
    approvers: Option<(Vec<Text<'i>>, Range<usize>)>,
    quorum: Option<(i128, Range<usize>)>,
    timeout: Option<Text<'i>>,
}

/// How a rule is named in messages: `rule 3 (send_email)`, by its name if
/// it has one, else by its glob.
struct Label<'a> {
    number: usize,
    name: Option<&'a str>,
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "rule {} ({name})", self.number),
            None => write!(f, "rule {}", self.number),
        }
    }
}

fn read_rule<'i>(
    source: &Source<'_>,
    number: usize,
    item: &'i Spanned<DeValue<'i>>,
) -> Result<Rule, PolicyError> {
    let DeValue::Table(table) = item.get_ref() else {
        return Err(source.error(
            item.span().start,
            format!(
                "rule {number}: a rule must be a table with `tool` and `action`, not {}",
                a(item.get_ref())
            ),
        ));
    };
    let entries = in_file_order(table);
    // Named by its name, else its glob, as soon as either is known; an
    // empty one names nothing, and the rule goes by its number alone.
    let string_field = |field: &str| {
        entries
            .iter()
            .find_map(|(key, value)| match value.get_ref() {
                DeValue::String(s) if key.get_ref() == field && !s.is_empty() => Some(s.as_ref()),
                _ => None,
            })
    };
    let label = Label {
        number,
        name: string_field("name")
            .or_else(|| string_field("id"))
            .or_else(|| string_field("tool")),
    };
    let error =
        |offset: usize, message: String| source.error(offset, format!("{label}: {message}"));

    let mut raw = RawRule::default();
    for (key, value) in &entries {
        let field = key.get_ref().as_ref();
        let span = value.span();
        let string = || match value.get_ref() {
            DeValue::String(s) => Ok((s.as_ref(), span.clone())),
            other => Err(error(
                span.start,
                format!("`{field}` must be a string, not {}", a(other)),
            )),
        };
        let slot = match field {
            "name" | "id" => &mut raw.name,
            "tool" => &mut raw.tool,
            "when" => &mut raw.when,
            "action" => &mut raw.action,
            "reason" => &mut raw.reason,
            "timeout" => &mut raw.timeout,
            "approvers" => {
                let DeValue::Array(items) = value.get_ref() else {
                    return Err(error(
                        span.start,
                        format!(
                            "`approvers` must be an array of strings such as [\"group:ops\", \"user:alice\"], not {}",
                            a(value.get_ref())
                        ),
                    ));
                };
                let mut approvers = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => approvers.push((s.as_ref(), item.span())),
                        other => {
                            return Err(error(
                                item.span().start,
                                format!(
                                    "each approver must be a string such as \"group:ops\" or \"user:alice\", not {}",
                                    a(other)
                                ),
                            ));
                        }
                    }
                }
                raw.approvers = Some((approvers, key.span()));
                continue;
            }
            "quorum" => {
                let quorum = match value.get_ref() {
                    DeValue::Integer(integer) => {
                        i128::from_str_radix(integer.as_str(), integer.radix()).map_err(|_| {
                            error(span.start, "`quorum` is not a valid integer".to_owned())
                        })?
                    }
                    other => {
                        return Err(error(
                            span.start,
                            format!("`quorum` must be an integer, not {}", a(other)),
                        ));
                    }
                };
                raw.quorum = Some((quorum, span.clone()));
                continue;
            }
            other => {
                return Err(error(
                    key.span().start,
                    format!("unknown field `{other}`; a rule's fields are {FIELDS}"),
                ));
            }
        };
        if slot.is_some() {
            // Only `name` and `id` can meet here: TOML refuses repeated keys.
            return Err(error(
                key.span().start,
                "give a rule either `name` or `id`, not both".to_owned(),
            ));
        }
        *slot = Some(string()?);
    }

    let rule_start = item.span().start;
    let name: Arc<str> = match &raw.name {
        Some((name, span)) => {
            if name.trim().is_empty() {
                return Err(error(
                    span.start,
                    "`name` must not be empty; leave it out to call the rule by its number"
                        .to_owned(),
                ));
            }
            Arc::from(*name)
        }
        None => Arc::from(format!("rule {number}")),
    };

    let Some((tool, tool_span)) = raw.tool.clone() else {
        return Err(error(
            rule_start,
            "`tool` is missing; say which tools the rule is for, e.g. tool = \"send_email\" or tool = \"delete_*\""
                .to_owned(),
        ));
    };
    let glob = Glob::new(tool).map_err(|problem| {
        error(
            tool_span.start,
            format!("`tool` is not a valid glob: {problem}; {GLOB_HINT}"),
        )
    })?;

    let Some((action_text, action_span)) = raw.action.clone() else {
        return Err(error(
            rule_start,
            "`action` is missing; use allow, deny or ask".to_owned(),
        ));
    };
    let action: Action = action_text
        .parse()
        .map_err(|problem: super::UnknownAction| error(action_span.start, problem.to_string()))?;

    let ask = if action == Action::Ask {
        Some(read_ask(&raw, &error)?)
    } else {
        let mut misplaced: Vec<(&str, usize)> = Vec::new();
        if let Some((_, span)) = &raw.approvers {
            misplaced.push(("approvers", span.start));
        }
        if let Some((_, span)) = &raw.quorum {
            misplaced.push(("quorum", span.start));
        }
        if let Some((_, span)) = &raw.timeout {
            misplaced.push(("timeout", span.start));
        }
        if let Some(&(field, offset)) = misplaced.iter().min_by_key(|(_, offset)| *offset) {
            return Err(error(
                offset,
                format!(
                    "`{field}` is only for rules with action = \"ask\", and this rule's action is \"{action}\""
                ),
            ));
        }
        None
    };

    let when = match raw.when.clone() {
        Some((text, span)) => Some(Condition::compile(text).map_err(|problem| {
            let message = match problem {
                CompileError::Parse(problems) => format!(
                    "`when` is not valid CEL: {}; {CEL_HINT}",
                    cel_problems(text, &problems)
                ),
                CompileError::Regex { pattern, message } => format!(
                    "`when` passes `matches` an invalid regular expression \"{pattern}\": {}",
                    message.lines().last().unwrap_or_default().trim()
                ),
            };
            error(span.start, message)
        })?),
        None => None,
    };

    Ok(Rule {
        number,
        name,
        tool: tool.to_owned(),
        glob,
        bare: !tool.contains(':'),
        when,
        action,
        reason: raw.reason.clone().map(|(reason, _)| Arc::from(reason)),
        ask,
        line: source.line(rule_start),
    })
}

fn read_ask(
    raw: &RawRule<'_>,
    error: &impl Fn(usize, String) -> PolicyError,
) -> Result<AskSpec, PolicyError> {
    let mut approvers = Vec::new();
    if let Some((items, _)) = &raw.approvers {
        for (text, span) in items {
            let approver: Approver = text.parse().map_err(|problem: super::InvalidApprover| {
                error(span.start, problem.to_string())
            })?;
            approvers.push(approver);
        }
    }
    let quorum = match &raw.quorum {
        None => 1,
        Some((quorum, span)) => {
            if *quorum < 1 {
                return Err(error(
                    span.start,
                    format!("`quorum` must be at least 1, not {quorum}"),
                ));
            }
            let quorum = u32::try_from(*quorum)
                .map_err(|_| error(span.start, format!("`quorum` {quorum} is too large")))?;
            if !approvers.is_empty() && approvers.iter().all(|a| matches!(a, Approver::User(_))) {
                let users: BTreeSet<&str> = approvers.iter().map(Approver::name).collect();
                if quorum as usize > users.len() {
                    let listed: Vec<String> =
                        users.iter().map(|name| format!("user:{name}")).collect();
                    return Err(error(
                        span.start,
                        format!(
                            "`quorum` is {quorum} but only {} may approve ({}); lower the quorum or add approvers",
                            plural(users.len(), "user"),
                            listed.join(", ")
                        ),
                    ));
                }
            }
            quorum
        }
    };
    let timeout = match &raw.timeout {
        None => None,
        Some((text, span)) => {
            let duration: Duration = humantime::parse_duration(text).map_err(|problem| {
                error(
                    span.start,
                    format!(
                        "`timeout` \"{text}\" is not a duration ({problem}); write e.g. \"45s\", \"30m\" or \"2h\""
                    ),
                )
            })?;
            if duration.is_zero() {
                return Err(error(
                    span.start,
                    "`timeout` must be longer than zero; leave it out to wait until someone decides"
                        .to_owned(),
                ));
            }
            Some(duration)
        }
    };
    Ok(AskSpec {
        approvers: approvers.into(),
        quorum,
        timeout,
    })
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

/// The CEL parser's messages, with where in the expression (the parser's
/// positions are 1-based).
fn cel_problems(text: &str, problems: &cel::ParseErrors) -> String {
    let multiline = text.contains('\n');
    let messages: Vec<String> = problems
        .errors
        .iter()
        .map(|problem| {
            let (line, column) = problem.pos;
            if multiline {
                format!(
                    "{} (line {line}, column {column} of the expression)",
                    problem.msg
                )
            } else {
                format!("{} (column {column} of the expression)", problem.msg)
            }
        })
        .collect();
    if messages.is_empty() {
        problems.to_string()
    } else {
        messages.join("; ")
    }
}

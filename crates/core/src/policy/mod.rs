//! Policy: ordered rules that decide, before anyone is asked, whether a tool
//! call runs (`allow`), is refused (`deny`) or waits for people (`ask`).
//!
//! A policy lives in `toolgate.toml` as `[[policy.rules]]`; the other
//! sections of that file are left to their own loaders. Each rule names the
//! tools it is for with a glob, may add a condition on the call in CEL, and
//! says what to do:
//!
//! ```toml
//! [[policy.rules]]
//! tool = "send_email"                                # glob over tool names
//! when = 'args.recipient.endsWith("@example.com")'   # optional CEL
//! action = "allow"                                   # allow | deny | ask
//!
//! [[policy.rules]]
//! name = "outside-mail"                              # optional; else "rule 2"
//! tool = "send_email"
//! when = '!args.recipient.endsWith("@example.com")'
//! action = "ask"
//! approvers = ["group:ops", "user:alice"]            # empty or absent: anyone
//! quorum = 2                                         # distinct approvers
//! timeout = "30m"                                    # then rejected
//!
//! [[policy.rules]]
//! tool = "delete_*"
//! action = "deny"
//! reason = "deleting is never allowed here"          # shown to the model
//! ```
//!
//! # How a call is decided
//!
//! - A rule matches a call when its `tool` glob matches the tool's name and
//!   its `when` condition, if any, is true. The MCP gateway names a server's
//!   tools `SERVER:TOOL`; a glob without a `:` matches them by the tool's own
//!   name too, so `write_*` covers `files:write_file`, while `files:*` is
//!   for that server's tools only. Conditions see `args` (the call's
//!   arguments), `tool` (the tool's name), `run` (`{id, thread}` or `null`)
//!   and `principal` (who asks, or `null`).
//! - The strictest matching action wins: `deny` > `ask` > `allow`. Among the
//!   matching rules with that action, the first in the file decides, and its
//!   `reason`, `approvers`, `quorum` and `timeout` are the verdict's.
//! - When no rule matches, the tool's hints decide: a tool that says it is
//!   read-only is allowed, anything else (destructive, or saying nothing)
//!   is asked about. Any matching rule overrides the hints.
//! - A condition that fails at run time (a missing argument, a wrong type, a
//!   result that is not a bool) fails closed: it does not match for an
//!   `allow` rule, and matches for a `deny` or `ask` rule. Every such failure
//!   is kept in [`Verdict::condition_errors`] for the audit log. Note that
//!   in CEL `has(x.f)` on an `x` that is not a map is such a failure, not
//!   `false`: where `x` may be a string (a principal, say), guard it with
//!   `type(x) == map && has(x.f)`.
//!
//! Loading checks everything it can, so a bad policy is refused when it is
//! loaded, with the file, line and column of the problem, never when a call
//! comes. This module does no I/O: the caller reads the file and hands over
//! its text.
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use toolgate_core::policy::{Action, EvalInput, Policy};
//!
//! let policy = Policy::from_toml_str(
//!     r#"
//!     [[policy.rules]]
//!     tool = "send_email"
//!     when = 'args.recipient.endsWith("@example.com")'
//!     action = "allow"
//!     "#,
//!     "toolgate.toml",
//! )
//! .unwrap();
//! let args = json!({"recipient": "bob@example.com"});
//! let verdict = policy.evaluate(&EvalInput::new("send_email", args.as_object().unwrap()));
//! assert_eq!(verdict.action, Action::Allow);
//! assert_eq!(verdict.decided_by.to_string(), "rule 1");
//! ```

mod condition;
mod fast;
mod glob;
mod load;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tool::{ToolCall, ToolHints};

use self::condition::{Condition, Variables};
use self::glob::Glob;
pub use self::load::PolicyError;

/// What a policy decides for a tool call.
///
/// Ordered by strictness, `Allow < Ask < Deny`, so the strictest of several
/// actions is their maximum. Serialises in lower case (`"allow"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The call runs without asking anyone.
    Allow,
    /// The call waits for the approval of people.
    Ask,
    /// The call is refused; the model is told why.
    Deny,
}

impl Action {
    /// The action's name as written in `toolgate.toml`: `allow`, `ask` or
    /// `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Ask => "ask",
            Action::Deny => "deny",
        }
    }

    /// What happens to a call that no rule matches: allowed when the tool
    /// says it is read-only, asked about otherwise (destructive tools, and
    /// tools that say nothing about their effects).
    pub fn default_for(hints: &ToolHints) -> Action {
        if hints.read_only == Some(true) {
            Action::Allow
        } else {
            Action::Ask
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Action::Allow),
            "ask" => Ok(Action::Ask),
            "deny" => Ok(Action::Deny),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

/// A word that is not `allow`, `ask` or `deny`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`; use allow, deny or ask")]
pub struct UnknownAction(pub String);

/// Someone who may decide an `ask`: a user, any member of a group, or anyone
/// holding a role. Written `user:alice`, `group:ops`, `role:admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Approver {
    /// One user, by name (`user:alice`).
    User(String),
    /// Any member of a group (`group:ops`).
    Group(String),
    /// Anyone holding a role (`role:admin`).
    Role(String),
}

impl Approver {
    /// The name after the `kind:` prefix.
    pub fn name(&self) -> &str {
        match self {
            Approver::User(name) | Approver::Group(name) | Approver::Role(name) => name,
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::User(name) => write!(f, "user:{name}"),
            Approver::Group(name) => write!(f, "group:{name}"),
            Approver::Role(name) => write!(f, "role:{name}"),
        }
    }
}

impl FromStr for Approver {
    type Err = InvalidApprover;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidApprover(s.to_owned());
        let (kind, name) = s.split_once(':').ok_or_else(invalid)?;
        if name.is_empty() || name.trim() != name {
            return Err(invalid());
        }
        match kind {
            "user" => Ok(Approver::User(name.to_owned())),
            "group" => Ok(Approver::Group(name.to_owned())),
            "role" => Ok(Approver::Role(name.to_owned())),
            _ => Err(invalid()),
        }
    }
}

impl TryFrom<String> for Approver {
    type Error = InvalidApprover;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Approver> for String {
    fn from(value: Approver) -> Self {
        value.to_string()
    }
}

/// A string that does not name an approver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("approver `{0}` is not valid; write \"user:NAME\", \"group:NAME\" or \"role:NAME\"")]
pub struct InvalidApprover(pub String);

/// What an `ask` needs: who may decide, how many must agree, and how long
/// to wait before the call is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskSpec {
    /// Who may approve; empty means any approver.
    #[serde(default)]
    pub approvers: Arc<[Approver]>,
    /// How many distinct approvers must approve; at least 1.
    pub quorum: u32,
    /// How long to wait; when it passes, the call is rejected (fails
    /// closed). `None`: wait until someone decides. Serialised as a
    /// human-readable duration (`"30m"`).
    #[serde(
        default,
        with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl Default for AskSpec {
    /// Anyone may approve, one approval is enough, no timeout.
    fn default() -> Self {
        AskSpec {
            approvers: Arc::from([]),
            quorum: 1,
            timeout: None,
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.collect_str(&humantime::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One rule of a policy, as loaded and checked.
///
/// Built only by loading a policy, so that every rule is valid: its glob
/// compiled, its condition parsed, its `ask` settings consistent.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    number: usize,
    name: Arc<str>,
    tool: String,
    #[serde(skip)]
    glob: Glob,
    /// `tool` has no `:`: it matches servers' tools by their own names
    /// ([`own_name`]).
    #[serde(skip)]
    bare: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<Condition>,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Arc<str>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    ask: Option<AskSpec>,
    #[serde(skip)]
    line: usize,
}

impl Rule {
    /// The rule's position in the policy, from 1.
    pub fn number(&self) -> usize {
        self.number
    }

    /// The rule's name: the `name` it was given, else `rule N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The glob over tool names.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The CEL condition, as written.
    pub fn when(&self) -> Option<&str> {
        self.when.as_ref().map(Condition::source)
    }

    /// What the rule decides when it matches.
    pub fn action(&self) -> Action {
        self.action
    }

    /// Why, for the model (mostly for `deny`).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Who may approve, how many, how long: for `ask` rules only.
    pub fn ask(&self) -> Option<&AskSpec> {
        self.ask.as_ref()
    }

    /// The line of the file the rule starts on (1-based).
    pub fn line(&self) -> usize {
        self.line
    }

    fn decided_by(&self) -> DecidedBy {
        DecidedBy::Rule {
            number: self.number,
            name: Arc::clone(&self.name),
        }
    }
}

/// Which part of the policy decided a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum DecidedBy {
    /// A rule matched.
    Rule {
        /// Its position in the policy, from 1.
        number: usize,
        /// Its name (`rule N` unless it was given one).
        name: Arc<str>,
    },
    /// No rule matched; the tool's hints decided.
    Default,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::Rule { name, .. } => f.write_str(name),
            DecidedBy::Default => f.write_str("default"),
        }
    }
}

/// A `when` condition that failed while a call was evaluated, and so was
/// treated as failing closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionError {
    /// The rule's position in the policy, from 1.
    pub rule: usize,
    /// The rule's name.
    pub rule_name: Arc<str>,
    /// The rule's action, which says how the failure counted: as no match
    /// for `allow`, as a match for `deny` and `ask`.
    pub action: Action,
    /// The CEL expression.
    pub expression: Arc<str>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = if self.action == Action::Allow {
            "not matched"
        } else {
            "matched"
        };
        write!(
            f,
            "{}: `when` failed, so the {} rule counts as {counted}: {} (in `{}`)",
            self.rule_name, self.action, self.message, self.expression
        )
    }
}

/// What the policy decided for one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Allow, ask or deny.
    pub action: Action,
    /// The rule that decided, or the default.
    pub decided_by: DecidedBy,
    /// The deciding rule's reason, to tell the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Arc<str>>,
    /// For `ask`: who may approve, how many, how long. `None` for the other
    /// actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<AskSpec>,
    /// The conditions that failed while deciding, for the audit log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub condition_errors: Vec<ConditionError>,
}

/// A run, as conditions see it: `run.id`, `run.thread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo<'a> {
    /// The run's id.
    pub id: &'a str,
    /// The conversation thread the run belongs to, if any (`null` in CEL).
    pub thread: Option<&'a str>,
}

/// One call to decide, with what conditions may look at.
#[derive(Debug, Clone, Copy)]
pub struct EvalInput<'a> {
    /// The tool's name (`tool` in CEL).
    pub tool: &'a str,
    /// The call's arguments (`args` in CEL).
    pub args: &'a Map<String, Value>,
    /// What the tool says about its effects; decides when no rule matches.
    pub hints: ToolHints,
    /// The run the call belongs to (`run` in CEL; `null` when `None`).
    pub run: Option<RunInfo<'a>>,
    /// Who asks, as JSON: a string or an object (`principal` in CEL; `null`
    /// when `None`).
    pub principal: Option<&'a Value>,
}

impl<'a> EvalInput<'a> {
    /// A call of `tool` with `args`, no hints, no run, no principal.
    pub fn new(tool: &'a str, args: &'a Map<String, Value>) -> Self {
        EvalInput {
            tool,
            args,
            hints: ToolHints::default(),
            run: None,
            principal: None,
        }
    }

    /// The input for a model's tool call.
    pub fn call(call: &'a ToolCall) -> Self {
        EvalInput::new(&call.name, &call.args)
    }

    /// Sets the tool's hints.
    pub fn hints(mut self, hints: ToolHints) -> Self {
        self.hints = hints;
        self
    }

    /// Sets the run.
    pub fn run(mut self, id: &'a str, thread: Option<&'a str>) -> Self {
        self.run = Some(RunInfo { id, thread });
        self
    }

    /// Sets who asks.
    pub fn principal(mut self, principal: &'a Value) -> Self {
        self.principal = Some(principal);
        self
    }
}

/// An ordered set of rules, checked at load and ready to evaluate calls.
///
/// Cheap to clone and to share between threads: the rules live behind an
/// `Arc`. [`Policy::default`] has no rules, so every call falls back to its
/// tool's hints.
#[derive(Clone, Default)]
pub struct Policy {
    inner: Arc<Compiled>,
}

#[derive(Default)]
struct Compiled {
    /// The rules in file order.
    rules: Vec<Rule>,
    /// Rule indices, strictest action first, then in file order: the order
    /// in which rules are tried, so the first one that matches decides.
    order: Vec<usize>,
}

impl Policy {
    /// Loads the policy from the text of a `toolgate.toml`.
    ///
    /// Reads `[[policy.rules]]` and ignores every other section. A document
    /// without a `[policy]` section is an empty policy. `source` names the
    /// file in error messages (`toolgate.toml:12:8: …`).
    ///
    /// # Errors
    ///
    /// The first problem found, with its line and column: invalid TOML, an
    /// unknown field, a missing or invalid `tool` or `action`, a `when` that
    /// is not valid CEL, `ask` settings on another action, a quorum of 0 or
    /// larger than the users allowed to approve, a bad timeout or approver,
    /// two rules with one name.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let rules = load::load(text, source)?;
        Ok(Policy::from_rules(rules))
    }

    fn from_rules(rules: Vec<Rule>) -> Policy {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Stable: within one action, file order is kept.
        order.sort_by_key(|&i| std::cmp::Reverse(rules[i].action));
        Policy {
            inner: Arc::new(Compiled { rules, order }),
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.inner.rules.is_empty()
    }

    /// Decides a call.
    ///
    /// Never fails: a condition that fails counts as not matching for
    /// `allow` rules and as matching for `deny` and `ask` rules, and is
    /// reported in [`Verdict::condition_errors`]. Rules are tried strictest
    /// first, so conditions of rules that could no longer change the verdict
    /// are not evaluated, and their failures are not reported.
    pub fn evaluate(&self, input: &EvalInput<'_>) -> Verdict {
        let mut condition_errors = Vec::new();
        if let Some(rule) = self.first_match(input, &mut condition_errors) {
            return Verdict {
                action: rule.action,
                decided_by: rule.decided_by(),
                reason: rule.reason.clone(),
                ask: rule.ask.clone(),
                condition_errors,
            };
        }
        let action = Action::default_for(&input.hints);
        Verdict {
            action,
            decided_by: DecidedBy::Default,
            reason: None,
            ask: (action == Action::Ask).then(AskSpec::default),
            condition_errors,
        }
    }

    /// The first rule, strictest first and then in file order, whose glob
    /// matches and whose condition holds (or fails, for `deny` and `ask`).
    fn first_match(
        &self,
        input: &EvalInput<'_>,
        condition_errors: &mut Vec<ConditionError>,
    ) -> Option<&Rule> {
        let compiled = &*self.inner;
        // Built on the first condition only, and each variable converted on
        // its first use, so rules without conditions cost no conversion.
        let mut variables: Option<Variables<'_>> = None;
        // What bare globs match: a server's tool by its own name.
        let own_name = own_name(input.tool);
        for &index in &compiled.order {
            let rule = &compiled.rules[index];
            let name = if rule.bare { own_name } else { input.tool };
            if !rule.glob.is_match(name) {
                continue;
            }
            let Some(condition) = &rule.when else {
                return Some(rule);
            };
            let variables = variables.get_or_insert_with(|| Variables::new(input));
            match condition.evaluate(variables) {
                Ok(true) => return Some(rule),
                Ok(false) => {}
                Err(message) => {
                    condition_errors.push(ConditionError {
                        rule: rule.number,
                        rule_name: Arc::clone(&rule.name),
                        action: rule.action,
                        expression: condition.source_arc(),
                        message,
                    });
                    if rule.action != Action::Allow {
                        return Some(rule);
                    }
                }
            }
        }
        None
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.inner.rules)
            .finish()
    }
}

/// The tool's own name: toolgate's MCP gateway names a server's tools
/// `SERVER:TOOL`. A glob with a `:` is matched against the whole name, one
/// without (a bare glob) against the tool's own name, so `write_*` matches
/// `files:write_file` and `files:*` only that server's tools.
fn own_name(tool: &str) -> &str {
    tool.split_once(':').map_or(tool, |(_, own)| own)
}

/// A tool-name glob and an optional CEL condition, compiled once: what a
/// grant matches.
#[derive(Clone)]
pub struct Matcher {
    tool: String,
    glob: Glob,
    bare: bool,
    when: Option<Condition>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Matcher")
            .field("tool", &self.tool)
            .field("when", &self.when.as_ref().map(Condition::source))
            .finish()
    }
}

impl Matcher {
    /// Compiles `tool` (a glob over tool names) and `when` (CEL over
    /// `args`, `tool`, `run` and `principal`).
    ///
    /// # Errors
    ///
    /// What is wrong with the glob or the condition, and how to write it.
    pub fn new(tool: &str, when: Option<&str>) -> Result<Matcher, String> {
        let glob = Glob::new(tool)
            .map_err(|message| format!("`{tool}` is not a valid tool pattern: {message}"))?;
        let when = when
            .map(|source| {
                Condition::compile(source).map_err(|error| match error {
                    condition::CompileError::Parse(errors) => {
                        format!("`{source}` is not valid CEL: {errors}")
                    }
                    condition::CompileError::Regex { pattern, message } => {
                        format!(
                            "`{source}` uses the invalid regular expression `{pattern}`: {message}"
                        )
                    }
                })
            })
            .transpose()?;
        Ok(Matcher {
            tool: tool.to_owned(),
            glob,
            bare: !tool.contains(':'),
            when,
        })
    }

    /// True when the call's tool matches the glob and the condition holds.
    ///
    /// # Errors
    ///
    /// The condition failed (a missing argument, a wrong type); callers
    /// that grant something must treat this as no match.
    pub fn matches(&self, input: &EvalInput<'_>) -> Result<bool, String> {
        let name = if self.bare {
            own_name(input.tool)
        } else {
            input.tool
        };
        if !self.glob.is_match(name) {
            return Ok(false);
        }
        match &self.when {
            None => Ok(true),
            Some(condition) => condition.evaluate(&Variables::new(input)),
        }
    }
}

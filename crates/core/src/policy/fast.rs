//! A fast path for the CEL conditions policies are mostly made of.
//!
//! `cel`'s interpreter resolves names through scopes, dispatches functions
//! by name and boxes every value on every evaluation; a typical condition
//! costs it most of a microsecond. Most conditions, though, are a handful of
//! field reads, comparisons and string tests on `args`. Those are compiled
//! here, once, into a small tree that reads the call's JSON directly.
//!
//! The fast path only ever answers when it is sure to agree with the
//! interpreter: on anything it does not handle exactly as `cel` does (a
//! missing key, a type mismatch, a comparison across numeric types, a
//! result that is not a bool, …) it gives up ([`Bail`]), and the condition
//! is evaluated again by `cel`, whose answer and error message count. So
//! errors, and their messages, always come from `cel`. The property tests
//! check the agreement on random expressions and arguments.

use std::borrow::Cow;
use std::cmp::Ordering;

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};
use regex::Regex;
use serde_json::{Map, Value};

use super::{EvalInput, RunInfo};

/// A compiled condition, or a part of one.
#[derive(Debug)]
pub(super) enum Node {
    Const(Const),
    ConstList(Box<[Const]>),
    Var(Var),
    Select(Box<Node>, Box<str>),
    Has(Box<Node>, Box<str>),
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    Equals(Box<Node>, Box<Node>),
    NotEquals(Box<Node>, Box<Node>),
    Compare(Box<Node>, Box<Node>, Comparison),
    In(Box<Node>, Box<Node>),
    Size(Box<Node>),
    StartsWith(Box<Node>, Box<Node>),
    EndsWith(Box<Node>, Box<Node>),
    Contains(Box<Node>, Box<Node>),
    Matches(Box<Node>, Box<Regex>),
    LowerAscii(Box<Node>),
    UpperAscii(Box<Node>),
}

/// A literal.
#[derive(Debug, Clone)]
pub(super) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Box<str>),
}

/// The variables a condition sees.
#[derive(Debug, Clone, Copy)]
pub(super) enum Var {
    Args,
    Tool,
    Run,
    Principal,
}

/// `<`, `<=`, `>`, `>=`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Comparison {
    Less,
    LessEquals,
    Greater,
    GreaterEquals,
}

/// The fast path cannot answer; ask `cel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bail;

/// A value during fast evaluation, borrowing the call and the condition.
#[derive(Debug, Clone)]
enum Fv<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'a, str>),
    Array(&'a [Value]),
    Object(&'a Map<String, Value>),
    Run(RunInfo<'a>),
    List(&'a [Const]),
}

impl Node {
    /// Compiles `expr`, or `None` when it uses anything the fast path does
    /// not handle (comprehensions, arithmetic, map literals, other
    /// functions, other names, …).
    pub(super) fn compile(expr: &IdedExpr) -> Option<Node> {
        let boxed = |e: &IdedExpr| Node::compile(e).map(Box::new);
        match &expr.expr {
            Expr::Literal(literal) => Some(Node::Const(constant(literal)?)),
            Expr::Ident(name) => Some(Node::Var(match name.as_str() {
                "args" => Var::Args,
                "tool" => Var::Tool,
                "run" => Var::Run,
                "principal" => Var::Principal,
                _ => return None,
            })),
            Expr::Select(select) => {
                let operand = boxed(&select.operand)?;
                let field = select.field.as_str().into();
                Some(if select.test {
                    Node::Has(operand, field)
                } else {
                    Node::Select(operand, field)
                })
            }
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return None;
                }
                let items = list
                    .elements
                    .iter()
                    .map(|element| match &element.expr {
                        Expr::Literal(literal) => constant(literal),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Node::ConstList(items.into()))
            }
            Expr::Call(call) => {
                let name = call.func_name.as_str();
                let args = call.args.as_slice();
                match (&call.target, args) {
                    (None, [a, b, c]) if name == operators::CONDITIONAL => {
                        Some(Node::Conditional(boxed(a)?, boxed(b)?, boxed(c)?))
                    }
                    (None, [a]) => match name {
                        operators::LOGICAL_NOT => Some(Node::Not(boxed(a)?)),
                        "size" => Some(Node::Size(boxed(a)?)),
                        _ => None,
                    },
                    (None, [a, b]) => {
                        let (a, b) = (boxed(a)?, boxed(b)?);
                        Some(match name {
                            operators::LOGICAL_AND => Node::And(a, b),
                            operators::LOGICAL_OR => Node::Or(a, b),
                            operators::EQUALS => Node::Equals(a, b),
                            operators::NOT_EQUALS => Node::NotEquals(a, b),
                            operators::LESS => Node::Compare(a, b, Comparison::Less),
                            operators::LESS_EQUALS => Node::Compare(a, b, Comparison::LessEquals),
                            operators::GREATER => Node::Compare(a, b, Comparison::Greater),
                            operators::GREATER_EQUALS => {
                                Node::Compare(a, b, Comparison::GreaterEquals)
                            }
                            operators::IN => Node::In(a, b),
                            operators::INDEX => Node::Index(a, b),
                            "matches" => Node::Matches(a, literal_regex(&call.args[1])?),
                            _ => return None,
                        })
                    }
                    (Some(target), []) => {
                        let target = boxed(target)?;
                        match name {
                            "size" => Some(Node::Size(target)),
                            "lowerAscii" => Some(Node::LowerAscii(target)),
                            "upperAscii" => Some(Node::UpperAscii(target)),
                            _ => None,
                        }
                    }
                    (Some(target), [argument]) => {
                        let target_node = boxed(target)?;
                        match name {
                            "startsWith" => Some(Node::StartsWith(target_node, boxed(argument)?)),
                            "endsWith" => Some(Node::EndsWith(target_node, boxed(argument)?)),
                            "contains" => Some(Node::Contains(target_node, boxed(argument)?)),
                            "matches" => Some(Node::Matches(target_node, literal_regex(argument)?)),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Evaluates a whole condition: its bool, or [`Bail`].
    pub(super) fn evaluate_condition(&self, input: &EvalInput<'_>) -> Result<bool, Bail> {
        match self.evaluate(input)? {
            Fv::Bool(b) => Ok(b),
            _ => Err(Bail),
        }
    }

    fn evaluate<'a>(&'a self, input: &EvalInput<'a>) -> Result<Fv<'a>, Bail> {
        match self {
            Node::Const(c) => Ok(from_const(c)),
            Node::ConstList(items) => Ok(Fv::List(items)),
            Node::Var(var) => Ok(match var {
                Var::Args => Fv::Object(input.args),
                Var::Tool => Fv::Str(Cow::Borrowed(input.tool)),
                Var::Run => input.run.map_or(Fv::Null, Fv::Run),
                Var::Principal => input.principal.map_or(Fv::Null, from_json),
            }),
            Node::Select(operand, field) => match operand.evaluate(input)? {
                Fv::Object(map) => map.get(&**field).map(from_json).ok_or(Bail),
                Fv::Run(run) => match &**field {
                    "id" => Ok(Fv::Str(Cow::Borrowed(run.id))),
                    "thread" => Ok(run
                        .thread
                        .map_or(Fv::Null, |thread| Fv::Str(Cow::Borrowed(thread)))),
                    _ => Err(Bail),
                },
                _ => Err(Bail),
            },
            Node::Has(operand, field) => match operand.evaluate(input)? {
                Fv::Object(map) => Ok(Fv::Bool(map.contains_key(&**field))),
                Fv::Run(_) => Ok(Fv::Bool(matches!(&**field, "id" | "thread"))),
                _ => Err(Bail),
            },
            Node::Index(operand, index) => {
                let operand = operand.evaluate(input)?;
                let index = index.evaluate(input)?;
                match (operand, index) {
                    (Fv::Array(items), Fv::Int(i)) => usize::try_from(i)
                        .ok()
                        .and_then(|i| items.get(i))
                        .map(from_json)
                        .ok_or(Bail),
                    (Fv::List(items), Fv::Int(i)) => usize::try_from(i)
                        .ok()
                        .and_then(|i| items.get(i))
                        .map(from_const)
                        .ok_or(Bail),
                    (Fv::Object(map), Fv::Str(key)) => map.get(&*key).map(from_json).ok_or(Bail),
                    _ => Err(Bail),
                }
            }
            Node::Not(operand) => match operand.evaluate(input)? {
                Fv::Bool(b) => Ok(Fv::Bool(!b)),
                _ => Err(Bail),
            },
            Node::And(left, right) => match left.evaluate(input)? {
                Fv::Bool(false) => Ok(Fv::Bool(false)),
                Fv::Bool(true) => match right.evaluate(input)? {
                    Fv::Bool(b) => Ok(Fv::Bool(b)),
                    _ => Err(Bail),
                },
                _ => Err(Bail),
            },
            Node::Or(left, right) => match left.evaluate(input)? {
                Fv::Bool(true) => Ok(Fv::Bool(true)),
                Fv::Bool(false) => match right.evaluate(input)? {
                    Fv::Bool(b) => Ok(Fv::Bool(b)),
                    _ => Err(Bail),
                },
                _ => Err(Bail),
            },
            Node::Conditional(condition, then, otherwise) => match condition.evaluate(input)? {
                Fv::Bool(true) => then.evaluate(input),
                Fv::Bool(false) => otherwise.evaluate(input),
                _ => Err(Bail),
            },
            Node::Equals(left, right) => {
                let (left, right) = (left.evaluate(input)?, right.evaluate(input)?);
                equals(&left, &right).map(Fv::Bool).ok_or(Bail)
            }
            Node::NotEquals(left, right) => {
                let (left, right) = (left.evaluate(input)?, right.evaluate(input)?);
                equals(&left, &right).map(|b| Fv::Bool(!b)).ok_or(Bail)
            }
            Node::Compare(left, right, comparison) => {
                let (left, right) = (left.evaluate(input)?, right.evaluate(input)?);
                let ordering = compare(&left, &right).ok_or(Bail)?;
                Ok(Fv::Bool(match comparison {
                    Comparison::Less => ordering == Ordering::Less,
                    Comparison::LessEquals => ordering != Ordering::Greater,
                    Comparison::Greater => ordering == Ordering::Greater,
                    Comparison::GreaterEquals => ordering != Ordering::Less,
                }))
            }
            Node::In(item, container) => {
                let item = item.evaluate(input)?;
                match container.evaluate(input)? {
                    Fv::List(items) => contains(items.iter().map(from_const), &item).map(Fv::Bool),
                    Fv::Array(items) => contains(items.iter().map(from_json), &item).map(Fv::Bool),
                    Fv::Object(map) => match item {
                        Fv::Str(key) => Ok(Fv::Bool(map.contains_key(&*key))),
                        _ => Err(Bail),
                    },
                    _ => Err(Bail),
                }
            }
            Node::Size(operand) => match operand.evaluate(input)? {
                Fv::Str(s) => Ok(Fv::Int(s.chars().count() as i64)),
                Fv::Array(items) => Ok(Fv::Int(items.len() as i64)),
                Fv::List(items) => Ok(Fv::Int(items.len() as i64)),
                Fv::Object(map) => Ok(Fv::Int(map.len() as i64)),
                _ => Err(Bail),
            },
            Node::StartsWith(target, argument) => {
                string_test(target, argument, input, |s, needle| s.starts_with(needle))
            }
            Node::EndsWith(target, argument) => {
                string_test(target, argument, input, |s, needle| s.ends_with(needle))
            }
            Node::Contains(target, argument) => {
                string_test(target, argument, input, |s, needle| s.contains(needle))
            }
            Node::Matches(target, regex) => match target.evaluate(input)? {
                Fv::Str(s) => Ok(Fv::Bool(regex.is_match(&s))),
                _ => Err(Bail),
            },
            Node::LowerAscii(target) => match target.evaluate(input)? {
                Fv::Str(s) => Ok(Fv::Str(Cow::Owned(s.to_ascii_lowercase()))),
                _ => Err(Bail),
            },
            Node::UpperAscii(target) => match target.evaluate(input)? {
                Fv::Str(s) => Ok(Fv::Str(Cow::Owned(s.to_ascii_uppercase()))),
                _ => Err(Bail),
            },
        }
    }
}

fn string_test<'a>(
    target: &'a Node,
    argument: &'a Node,
    input: &EvalInput<'a>,
    test: impl Fn(&str, &str) -> bool,
) -> Result<Fv<'a>, Bail> {
    match (target.evaluate(input)?, argument.evaluate(input)?) {
        (Fv::Str(s), Fv::Str(needle)) => Ok(Fv::Bool(test(&s, &needle))),
        _ => Err(Bail),
    }
}

fn constant(literal: &LiteralValue) -> Option<Const> {
    Some(match literal {
        LiteralValue::Null => Const::Null,
        LiteralValue::Boolean(b) => Const::Bool(*b.inner()),
        LiteralValue::Int(i) => Const::Int(*i.inner()),
        LiteralValue::UInt(u) => Const::UInt(*u.inner()),
        LiteralValue::Double(d) => Const::Double(*d.inner()),
        LiteralValue::String(s) => Const::Str(s.inner().into()),
        LiteralValue::Bytes(_) => return None,
    })
}

/// The pattern of `matches`, compiled once, when it is a valid literal: a
/// pattern computed at run time, or an invalid one, is left to `cel`.
fn literal_regex(expr: &IdedExpr) -> Option<Box<Regex>> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(pattern)) => {
            Regex::new(pattern.inner()).ok().map(Box::new)
        }
        _ => None,
    }
}

fn from_const(c: &Const) -> Fv<'_> {
    match c {
        Const::Null => Fv::Null,
        Const::Bool(b) => Fv::Bool(*b),
        Const::Int(i) => Fv::Int(*i),
        Const::UInt(u) => Fv::UInt(*u),
        Const::Double(d) => Fv::Double(*d),
        Const::Str(s) => Fv::Str(Cow::Borrowed(s)),
    }
}

/// As `condition::json` converts JSON for `cel`.
fn from_json(value: &Value) -> Fv<'_> {
    match value {
        Value::Null => Fv::Null,
        Value::Bool(b) => Fv::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Fv::Int(i)
            } else if let Some(u) = n.as_u64() {
                Fv::UInt(u)
            } else {
                Fv::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Fv::Str(Cow::Borrowed(s)),
        Value::Array(items) => Fv::Array(items),
        Value::Object(map) => Fv::Object(map),
    }
}

fn is_scalar(v: &Fv<'_>) -> bool {
    matches!(
        v,
        Fv::Null | Fv::Bool(_) | Fv::Int(_) | Fv::UInt(_) | Fv::Double(_) | Fv::Str(_)
    )
}

fn is_number(v: &Fv<'_>) -> bool {
    matches!(v, Fv::Int(_) | Fv::UInt(_) | Fv::Double(_))
}

/// CEL equality where it is plain: values of one scalar type, or values of
/// different kinds that are never equal. Numbers of different types and
/// pairs of containers are left to `cel`.
fn equals(left: &Fv<'_>, right: &Fv<'_>) -> Option<bool> {
    match (left, right) {
        (Fv::Null, Fv::Null) => Some(true),
        (Fv::Bool(a), Fv::Bool(b)) => Some(a == b),
        (Fv::Int(a), Fv::Int(b)) => Some(a == b),
        (Fv::UInt(a), Fv::UInt(b)) => Some(a == b),
        (Fv::Double(a), Fv::Double(b)) => Some(a == b),
        (Fv::Str(a), Fv::Str(b)) => Some(a == b),
        (a, b) if is_number(a) && is_number(b) => None,
        (a, b) if is_scalar(a) && is_scalar(b) => Some(false),
        (a, b) if is_scalar(a) != is_scalar(b) => Some(false),
        _ => None,
    }
}

/// CEL ordering of two values of one type; `None` for the rest.
fn compare(left: &Fv<'_>, right: &Fv<'_>) -> Option<Ordering> {
    match (left, right) {
        (Fv::Int(a), Fv::Int(b)) => Some(a.cmp(b)),
        (Fv::UInt(a), Fv::UInt(b)) => Some(a.cmp(b)),
        (Fv::Double(a), Fv::Double(b)) => a.partial_cmp(b),
        (Fv::Str(a), Fv::Str(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn contains<'a>(mut items: impl Iterator<Item = Fv<'a>>, item: &Fv<'_>) -> Result<bool, Bail> {
    items.try_fold(false, |found, candidate| {
        if found {
            return Ok(true);
        }
        equals(&candidate, item).ok_or(Bail)
    })
}

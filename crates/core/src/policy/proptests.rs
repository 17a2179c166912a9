//! Property tests, on random inputs:
//!
//! - the fast path answers a condition only as `cel` does, and a condition
//!   evaluates as `cel` alone would;
//! - a policy decides as its rules say: the strictest matching action, the
//!   first such rule in the file, failing conditions matching for `deny`
//!   and `ask` only, the hints when nothing matches;
//! - globs match as the same pattern written as a regular expression.

use std::cmp::Reverse;
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};

use super::condition::{Condition, Variables};
use super::glob::Glob;
use super::*;

// ---------------------------------------------------------------- calls

fn text() -> impl Strategy<Value = String> {
    select(vec![
        "", "a", "b", "ab", "ba", "s", "sx", "A", "aB", "é", "7", "a@x.com", "B@X.COM",
    ])
    .prop_map(str::to_owned)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..12).prop_map(Value::from),
        Just(json!(u64::MAX)),
        select(vec![0.5, -1.0, 7.0, 2.5, 0.0]).prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    select(vec!["s", "n", "b", "x", "tags", "m", "id", "groups"]).prop_map(str::to_owned)
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Mostly a value of the type `typed` gives, sometimes anything.
fn mostly(typed: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![6 => typed, 1 => json_value()].boxed()
}

fn strings() -> impl Strategy<Value = Value> {
    prop::collection::vec(text().prop_map(Value::from), 0..4).prop_map(Value::Array)
}

/// Arguments whose keys usually hold what conditions expect of them (`s`
/// a string, `n` a number, `tags` a list, …), so that conditions often
/// have an answer, and sometimes hold anything, or are missing.
fn arguments() -> impl Strategy<Value = Map<String, Value>> {
    let number = prop_oneof![
        4 => (-3i64..12).prop_map(Value::from),
        1 => select(vec![0.5, 7.0, -1.0]).prop_map(Value::from),
        1 => Just(json!(u64::MAX)),
    ];
    let object = (prop::option::of(text()), prop::option::of(strings())).prop_map(|(s, tags)| {
        let mut map = Map::new();
        if let Some(s) = s {
            map.insert("s".into(), s.into());
        }
        if let Some(tags) = tags {
            map.insert("tags".into(), tags);
        }
        Value::Object(map)
    });
    (
        prop::option::weighted(0.9, mostly(text().prop_map(Value::from))),
        prop::option::weighted(0.9, mostly(number.clone())),
        prop::option::weighted(0.8, mostly(any::<bool>().prop_map(Value::from))),
        prop::option::weighted(
            0.8,
            mostly(prop_oneof![number, text().prop_map(Value::from)]),
        ),
        prop::option::weighted(0.8, mostly(strings())),
        prop::option::weighted(0.8, mostly(object)),
    )
        .prop_map(|(s, n, b, x, tags, m)| {
            [
                ("s", s),
                ("n", n),
                ("b", b),
                ("x", x),
                ("tags", tags),
                ("m", m),
            ]
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect()
        })
}

fn principal() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(|name| Value::from(format!("user:{name}"))),
        (text(), strings()).prop_map(|(id, groups)| json!({"id": id, "groups": groups})),
        text().prop_map(|id| json!({"id": id})),
        json_value(),
    ]
}

/// A call and what conditions may see of it.
#[derive(Debug, Clone)]
struct Call {
    tool: String,
    args: Map<String, Value>,
    run: Option<(String, Option<String>)>,
    principal: Option<Value>,
    hints: ToolHints,
}

impl Call {
    fn input(&self) -> EvalInput<'_> {
        let mut input = EvalInput::new(&self.tool, &self.args).hints(self.hints);
        if let Some((id, thread)) = &self.run {
            input = input.run(id, thread.as_deref());
        }
        if let Some(principal) = &self.principal {
            input = input.principal(principal);
        }
        input
    }
}

fn call(tools: Vec<&'static str>) -> impl Strategy<Value = Call> {
    (
        select(tools),
        arguments(),
        prop::option::of((text(), prop::option::of(text()))),
        prop::option::of(principal()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(tool, args, run, principal, read_only)| Call {
            tool: tool.to_owned(),
            args,
            run,
            principal,
            hints: ToolHints {
                read_only,
                ..ToolHints::default()
            },
        })
}

// ---------------------------------------------------------------- conditions

fn words(words: &[&'static str]) -> BoxedStrategy<String> {
    select(words.to_vec()).prop_map(str::to_owned).boxed()
}

/// Expressions that give a string when the call is as expected.
fn string_expression() -> BoxedStrategy<String> {
    let leaf = words(&[
        "args.s",
        "args.x",
        "args.m.s",
        "args[\"s\"]",
        "args.tags[0]",
        "tool",
        "run.id",
        "run.thread",
        "principal.id",
        "principal",
        "\"\"",
        "\"a\"",
        "\"ab\"",
        "\"s\"",
        "\"é\"",
        "\"A\"",
        "\"user:a\"",
    ]);
    leaf.prop_recursive(2, 4, 1, |inner| {
        (inner, select(vec!["lowerAscii()", "upperAscii()"]))
            .prop_map(|(s, f)| format!("({s}).{f}"))
    })
    .boxed()
}

/// Expressions that give a number when the call is as expected.
fn number_expression() -> BoxedStrategy<String> {
    prop_oneof![
        words(&[
            "args.n",
            "args.x",
            "0",
            "1",
            "7",
            "-2",
            "3u",
            "18446744073709551615u",
            "0.5",
            "7.0",
            "size(args.tags)",
            "size(args)",
            "args.tags.size()",
        ]),
        string_expression().prop_map(|s| format!("size({s})")),
        string_expression().prop_map(|s| format!("({s}).size()")),
    ]
    .boxed()
}

/// Expressions that give a list or a map when the call is as expected.
fn container_expression() -> BoxedStrategy<String> {
    words(&[
        "args.tags",
        "args.m.tags",
        "principal.groups",
        "args",
        "args.m",
        "run",
        "[]",
        "[\"a\", \"b\"]",
        "[\"a\", 1]",
        "[1, 2.0]",
        "[\"s\", \"user:a\", null]",
    ])
}

/// Expressions of any type.
fn any_expression() -> BoxedStrategy<String> {
    prop_oneof![
        string_expression(),
        number_expression(),
        container_expression(),
        words(&["null", "true", "false", "args.b", "principal", "run"]),
    ]
    .boxed()
}

/// Random CEL, mostly within what the fast path compiles, and mostly
/// well-typed for the calls it meets, so that it often has an answer; the
/// rest is ill-typed or reads what is missing, so that both must agree
/// that `cel` decides.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        words(&[
            "true",
            "false",
            "args.b",
            "has(run.id)",
            "has(principal.groups)"
        ]),
        key().prop_map(|key| format!("has(args.{key})")),
        key().prop_map(|key| format!("has(args.m.{key})")),
        (any_expression(), select(vec!["==", "!="]), any_expression())
            .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
        (
            string_expression(),
            select(vec!["==", "!=", "<", "<=", ">", ">="]),
            string_expression()
        )
            .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
        (
            number_expression(),
            select(vec!["==", "!=", "<", "<=", ">", ">="]),
            number_expression()
        )
            .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
        (any_expression(), container_expression()).prop_map(|(a, b)| format!("({a}) in ({b})")),
        (
            string_expression(),
            select(vec!["startsWith", "endsWith", "contains"]),
            string_expression()
        )
            .prop_map(|(a, f, b)| format!("({a}).{f}({b})")),
        (
            string_expression(),
            select(vec!["^a", "b$", "^[A-Za-z.]+@", "é"])
        )
            .prop_map(|(s, r)| format!("({s}).matches(\"{r}\")")),
        (string_expression(), select(vec!["^a", "b$"]))
            .prop_map(|(s, r)| format!("matches({s}, \"{r}\")")),
        // Anything at all in a condition, even what cannot be a bool.
        any_expression(),
        (any_expression(), any_expression()).prop_map(|(a, b)| format!("({a})[{b}]")),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("!({a})")),
            (inner.clone(), select(vec!["&&", "||"]), inner.clone())
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(a, b, c)| format!("({a}) ? ({b}) : ({c})")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_fast_path_answers_only_as_cel_does(
        expression in expression(),
        call in call(vec!["t", "send_email"]),
    ) {
        // The generator may write what the parser refuses (`has` of an
        // index, say): nothing to compare then.
        let Ok(condition) = Condition::compile(&expression) else {
            return Ok(());
        };
        let input = call.input();
        let cel = condition.evaluate_with_cel(&Variables::new(&input));
        if let Some(fast) = condition.fast_answer(&input) {
            prop_assert_eq!(Ok(fast), cel.clone(), "{}", expression);
        }
        prop_assert_eq!(condition.evaluate(&Variables::new(&input)), cel, "{}", expression);
    }
}

// ---------------------------------------------------------------- policies

const GLOBS: [&str; 6] = ["t", "t*", "*", "?", "u", "[st]"];

const CONDITIONS: [&str; 8] = [
    "args.x > 1",
    "args.x == \"s\"",
    "args.x.startsWith(\"s\")",
    "has(args.x)",
    "args.x",
    "!has(args.x) || args.x < 3",
    "tool == \"t\"",
    "args.tags.exists(t, t == 1)",
];

#[derive(Debug, Clone)]
struct RawRule {
    glob: &'static str,
    when: Option<&'static str>,
    action: Action,
    quorum: u32,
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (
        select(GLOBS.to_vec()),
        prop::option::of(select(CONDITIONS.to_vec())),
        select(vec![Action::Allow, Action::Ask, Action::Deny]),
        1u32..4,
    )
        .prop_map(|(glob, when, action, quorum)| RawRule {
            glob,
            when,
            action,
            quorum,
        })
}

fn policy_text(rules: &[RawRule]) -> String {
    let mut text = String::new();
    for (index, rule) in rules.iter().enumerate() {
        let number = index + 1;
        writeln!(text, "[[policy.rules]]\ntool = \"{}\"", rule.glob).unwrap();
        if let Some(when) = rule.when {
            writeln!(text, "when = '{when}'").unwrap();
        }
        writeln!(text, "action = \"{}\"\nreason = \"r{number}\"", rule.action).unwrap();
        if rule.action == Action::Ask {
            writeln!(text, "quorum = {}", rule.quorum).unwrap();
        }
        text.push('\n');
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn policies_decide_as_their_rules_say(
        rules in prop::collection::vec(raw_rule(), 0..7),
        call in call(vec!["t", "tt", "s", "u", "send_email"]),
    ) {
        let policy = Policy::from_toml_str(&policy_text(&rules), "toolgate.toml")
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        let input = call.input();
        let verdict = policy.evaluate(&input);

        // Each rule on its own: does its glob match, and what does `cel`
        // alone say of its condition?
        let outcomes: Vec<Option<Result<bool, String>>> = rules
            .iter()
            .map(|rule| {
                Glob::new(rule.glob).unwrap().is_match(&call.tool).then(|| match rule.when {
                    None => Ok(true),
                    Some(when) => Condition::compile(when)
                        .unwrap()
                        .evaluate_with_cel(&Variables::new(&input)),
                })
            })
            .collect();
        let matches = |i: usize| match &outcomes[i] {
            Some(Ok(true)) => true,
            Some(Err(_)) => rules[i].action != Action::Allow,
            _ => false,
        };
        let strictest = (0..rules.len()).filter(|&i| matches(i)).map(|i| rules[i].action).max();
        match strictest {
            Some(action) => {
                let first = (0..rules.len())
                    .find(|&i| matches(i) && rules[i].action == action)
                    .unwrap();
                let number = first + 1;
                prop_assert_eq!(verdict.action, action);
                prop_assert_eq!(
                    &verdict.decided_by,
                    &DecidedBy::Rule { number, name: format!("rule {number}").into() }
                );
                let reason = format!("r{number}");
                prop_assert_eq!(verdict.reason.as_deref(), Some(reason.as_str()));
                prop_assert_eq!(
                    verdict.ask.as_ref().map(|ask| ask.quorum),
                    (action == Action::Ask).then_some(rules[first].quorum)
                );
            }
            None => {
                let action = Action::default_for(&call.hints);
                prop_assert_eq!(verdict.action, action);
                prop_assert_eq!(&verdict.decided_by, &DecidedBy::Default);
                prop_assert_eq!(verdict.reason, None);
                prop_assert_eq!(verdict.ask, (action == Action::Ask).then(AskSpec::default));
            }
        }

        // The failures reported are those of the conditions tried: rules are
        // tried strictest first, then in file order, until one decides.
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by_key(|&i| Reverse(rules[i].action));
        let mut expected = Vec::new();
        for i in order {
            if let Some(Err(message)) = &outcomes[i] {
                expected.push((i + 1, rules[i].action, message.clone()));
            }
            if matches(i) {
                break;
            }
        }
        let reported: Vec<(usize, Action, String)> = verdict
            .condition_errors
            .iter()
            .map(|error| (error.rule, error.action, error.message.clone()))
            .collect();
        prop_assert_eq!(reported, expected);
    }
}

// ---------------------------------------------------------------- globs

fn glob_piece() -> impl Strategy<Value = (&'static str, &'static str)> {
    // The piece of a glob, and the same as a regular expression.
    select(vec![
        ("a", "a"),
        ("b", "b"),
        (".", "\\."),
        ("é", "é"),
        ("*", ".*"),
        ("?", "."),
        ("[ab]", "[ab]"),
        ("[!a]", "[^a]"),
        ("[a-c]", "[a-c]"),
        ("\\*", "\\*"),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn globs_match_as_regular_expressions_do(
        pieces in prop::collection::vec(glob_piece(), 1..7),
        name in prop::collection::vec(select(vec!['a', 'b', 'c', '.', 'é', '*']), 0..8),
    ) {
        let pattern: String = pieces.iter().map(|(glob, _)| *glob).collect();
        let regex: String = pieces.iter().map(|(_, regex)| *regex).collect();
        let regex = regex::Regex::new(&format!("^(?s:{regex})$")).unwrap();
        let name: String = name.into_iter().collect();
        prop_assert_eq!(
            Glob::new(&pattern).unwrap().is_match(&name),
            regex.is_match(&name),
            "{} against {:?}",
            pattern,
            name
        );
    }
}

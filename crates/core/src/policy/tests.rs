use std::time::Duration;

use serde_json::{Value, json};

use super::condition::{Condition, Variables};
use super::*;

const FILE: &str = "toolgate.toml";

fn load(text: &str) -> Policy {
    Policy::from_toml_str(text, FILE).unwrap_or_else(|error| panic!("{error}"))
}

fn load_error(text: &str) -> String {
    match Policy::from_toml_str(text, FILE) {
        Ok(policy) => panic!("expected an error, got {policy:?}"),
        Err(error) => error.to_string(),
    }
}

fn args(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn decide(policy: &Policy, tool: &str, call_args: Value) -> Verdict {
    let call_args = args(call_args);
    policy.evaluate(&EvalInput::new(tool, &call_args))
}

fn rule(number: usize, name: &str) -> DecidedBy {
    DecidedBy::Rule {
        number,
        name: name.into(),
    }
}

const READ_ONLY: ToolHints = ToolHints {
    read_only: Some(true),
    destructive: None,
    idempotent: None,
};

const DESTRUCTIVE: ToolHints = ToolHints {
    read_only: Some(false),
    destructive: Some(true),
    idempotent: None,
};

// ---------------------------------------------------------------- loading

#[test]
fn the_design_example_loads_beside_other_sections() {
    let policy = load(
        r#"[store]
url = "sqlite://toolgate.db"

[providers.openai]
api_key_env = "OPENAI_API_KEY"

[[principals]]
id = "user:alice"
groups = ["ops"]

[[policy.rules]]
tool = "send_email"
when = 'args.recipient.endsWith("@example.com")'
action = "allow"

[[policy.rules]]
tool = "send_email"
when = '!args.recipient.endsWith("@example.com")'
action = "ask"
approvers = ["group:ops"]
quorum = 2
timeout = "30m"

[[policy.rules]]
name = "no-deletes"
tool = "delete_*"
action = "deny"
reason = "deleting is never allowed here"
"#,
    );
    let rules = policy.rules();
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules
            .iter()
            .map(|r| (r.number(), r.name(), r.tool(), r.action(), r.line()))
            .collect::<Vec<_>>(),
        [
            (1, "rule 1", "send_email", Action::Allow, 11),
            (2, "rule 2", "send_email", Action::Ask, 16),
            (3, "no-deletes", "delete_*", Action::Deny, 24),
        ]
    );
    assert_eq!(
        rules[0].when(),
        Some(r#"args.recipient.endsWith("@example.com")"#)
    );
    assert_eq!(rules[0].ask(), None);
    assert_eq!(
        rules[1].ask(),
        Some(&AskSpec {
            approvers: Arc::from([Approver::Group("ops".into())]),
            quorum: 2,
            timeout: Some(Duration::from_secs(30 * 60)),
        })
    );
    assert_eq!(rules[2].reason(), Some("deleting is never allowed here"));
    assert_eq!(rules[2].when(), None);
}

#[test]
fn ask_rules_default_to_any_approver_one_approval_no_timeout() {
    let policy = load("[[policy.rules]]\ntool = \"x\"\naction = \"ask\"\n");
    assert_eq!(policy.rules()[0].ask(), Some(&AskSpec::default()));
    assert_eq!(AskSpec::default().quorum, 1);
    assert!(AskSpec::default().approvers.is_empty());
}

#[test]
fn a_document_without_policy_is_an_empty_policy() {
    assert!(load("[store]\nurl = \"x\"\n").is_empty());
    assert!(load("").is_empty());
    assert!(load("[policy]\n").is_empty());
    assert!(Policy::default().is_empty());
}

#[test]
fn rules_may_be_inline_tables() {
    let policy = load(
        "policy.rules = [\n  { tool = \"a\", action = \"deny\" },\n  { tool = \"b\", action = \"allow\", id = \"bee\" },\n]\n",
    );
    assert_eq!(policy.rules()[1].name(), "bee");
    assert_eq!(policy.rules()[1].line(), 3);
}

#[test]
fn invalid_toml_is_refused_with_its_position() {
    // Where the closing `"` is missing: the end of line 2, the 10th
    // character of `tool = "a⏎` (the `toml` crate says the same).
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\naction = \"allow\"\n"),
        "toolgate.toml:2:10: invalid TOML: invalid basic string, expected `\"`"
    );
}

#[test]
fn unknown_actions_are_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"send_email\"\naction = \"permit\"\n"),
        "toolgate.toml:3:10: rule 1 (send_email): unknown action `permit`; use allow, deny or ask"
    );
}

#[test]
fn unknown_fields_are_refused() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"allow\"\n\n[[policy.rules]]\ntool = \"send_email\"\naction = \"ask\"\napprover = [\"group:ops\"]\n"
        ),
        "toolgate.toml:8:1: rule 2 (send_email): unknown field `approver`; a rule's fields are name, tool, when, action, reason, approvers, quorum and timeout"
    );
}

#[test]
fn unknown_fields_of_the_policy_section_are_refused() {
    assert_eq!(
        load_error("[[policy.rule]]\ntool = \"a\"\naction = \"allow\"\n"),
        "toolgate.toml:1:10: unknown field `rule` in [policy]; it holds only `rules`, written as [[policy.rules]]"
    );
    assert_eq!(
        load_error("policy = \"strict\"\n"),
        "toolgate.toml:1:10: `policy` must be a table, not a string; write each rule as [[policy.rules]]"
    );
    assert_eq!(
        load_error("[policy]\nrules = \"all\"\n"),
        "toolgate.toml:2:9: `policy.rules` must be an array of tables, not a string; write each rule as [[policy.rules]]"
    );
    assert_eq!(
        load_error("[policy]\nrules = [1]\n"),
        "toolgate.toml:2:10: rule 1: a rule must be a table with `tool` and `action`, not an integer"
    );
}

#[test]
fn a_missing_tool_is_refused_at_the_rule() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"allow\"\n\n[[policy.rules]]\naction = \"deny\"\n"
        ),
        "toolgate.toml:5:1: rule 2: `tool` is missing; say which tools the rule is for, e.g. tool = \"send_email\" or tool = \"delete_*\""
    );
}

#[test]
fn a_missing_action_is_refused_at_the_rule() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\n"),
        "toolgate.toml:1:1: rule 1 (a): `action` is missing; use allow, deny or ask"
    );
}

#[test]
fn fields_of_the_wrong_type_are_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = 3\naction = \"deny\"\n"),
        "toolgate.toml:2:8: rule 1: `tool` must be a string, not an integer"
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\nquorum = \"two\"\n"),
        "toolgate.toml:4:10: rule 1 (a): `quorum` must be an integer, not a string"
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\napprovers = \"group:ops\"\n"),
        "toolgate.toml:4:13: rule 1 (a): `approvers` must be an array of strings such as [\"group:ops\", \"user:alice\"], not a string"
    );
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\napprovers = [\"group:ops\", 7]\n"
        ),
        "toolgate.toml:4:27: rule 1 (a): each approver must be a string such as \"group:ops\" or \"user:alice\", not an integer"
    );
}

#[test]
fn invalid_globs_are_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"delete_[\"\naction = \"deny\"\n"),
        "toolgate.toml:2:8: rule 1 (delete_[): `tool` is not a valid glob: a `[` is not closed by `]`; use * for any characters, ? for one character and [abc] for one of a set"
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"\"\naction = \"deny\"\n"),
        "toolgate.toml:2:8: rule 1: `tool` is not a valid glob: it is empty; use * for any characters, ? for one character and [abc] for one of a set"
    );
}

#[test]
fn when_that_is_not_cel_is_refused_with_the_parser_message() {
    let text = "[store]\nurl = \"x\"\n\n[[policy.rules]]\ntool = \"a\"\naction = \"allow\"\n\n[[policy.rules]]\ntool = \"b\"\naction = \"allow\"\n\n[[policy.rules]]\ntool = \"send_email\"\nwhen = 'args.recipient == = \"x\"'\naction = \"allow\"\n";
    assert_eq!(
        load_error(text),
        "toolgate.toml:14:8: rule 3 (send_email): `when` is not valid CEL: Syntax error: token recognition error at: '= ' (column 19 of the expression); write a CEL expression over args, tool, run and principal, e.g. 'args.recipient.endsWith(\"@example.com\")'"
    );
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\nwhen = \"\"\"\nargs.x &&\n\"\"\"\naction = \"deny\"\n"
        ),
        "toolgate.toml:3:8: rule 1 (a): `when` is not valid CEL: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (line 2, column 1 of the expression); write a CEL expression over args, tool, run and principal, e.g. 'args.recipient.endsWith(\"@example.com\")'"
    );
}

#[test]
fn invalid_regular_expressions_in_matches_are_refused() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\nwhen = 'args.s.matches(\"(\")'\naction = \"deny\"\n"
        ),
        "toolgate.toml:3:8: rule 1 (a): `when` passes `matches` an invalid regular expression \"(\": error: unclosed group"
    );
}

#[test]
fn quorum_zero_is_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\nquorum = 0\n"),
        "toolgate.toml:4:10: rule 1 (a): `quorum` must be at least 1, not 0"
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\nquorum = -2\n"),
        "toolgate.toml:4:10: rule 1 (a): `quorum` must be at least 1, not -2"
    );
}

#[test]
fn quorum_larger_than_the_users_who_may_approve_is_refused() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"transfer\"\naction = \"ask\"\napprovers = [\"user:alice\", \"user:bob\", \"user:alice\"]\nquorum = 3\n"
        ),
        "toolgate.toml:5:10: rule 1 (transfer): `quorum` is 3 but only 2 users may approve (user:alice, user:bob); lower the quorum or add approvers"
    );
    // With a group or a role among the approvers, their number is unknown.
    let policy = load(
        "[[policy.rules]]\ntool = \"t\"\naction = \"ask\"\napprovers = [\"user:alice\", \"group:ops\"]\nquorum = 3\n",
    );
    assert_eq!(policy.rules()[0].ask().unwrap().quorum, 3);
    // No approvers: anyone may approve.
    let policy = load("[[policy.rules]]\ntool = \"t\"\naction = \"ask\"\nquorum = 4\n");
    assert_eq!(policy.rules()[0].ask().unwrap().quorum, 4);
    // Exactly as many users as the quorum.
    load(
        "[[policy.rules]]\ntool = \"t\"\naction = \"ask\"\napprovers = [\"user:a\", \"user:b\"]\nquorum = 2\n",
    );
}

#[test]
fn bad_timeouts_are_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\ntimeout = \"30\"\n"),
        "toolgate.toml:4:11: rule 1 (a): `timeout` \"30\" is not a duration (time unit needed, for example 30sec or 30ms); write e.g. \"45s\", \"30m\" or \"2h\""
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\ntimeout = \"0s\"\n"),
        "toolgate.toml:4:11: rule 1 (a): `timeout` must be longer than zero; leave it out to wait until someone decides"
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\ntimeout = 30\n"),
        "toolgate.toml:4:11: rule 1 (a): `timeout` must be a string, not an integer"
    );
    for (text, seconds) in [("45s", 45), ("30m", 1800), ("2h", 7200), ("1h 30m", 5400)] {
        let policy = load(&format!(
            "[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\ntimeout = \"{text}\"\n"
        ));
        assert_eq!(
            policy.rules()[0].ask().unwrap().timeout,
            Some(Duration::from_secs(seconds)),
            "{text}"
        );
    }
}

#[test]
fn ask_settings_on_other_actions_are_refused() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"deny\"\napprovers = [\"group:ops\"]\n"
        ),
        "toolgate.toml:4:1: rule 1 (a): `approvers` is only for rules with action = \"ask\", and this rule's action is \"deny\""
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"allow\"\nquorum = 2\n"),
        "toolgate.toml:4:10: rule 1 (a): `quorum` is only for rules with action = \"ask\", and this rule's action is \"allow\""
    );
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\ntimeout = \"1m\"\naction = \"deny\"\n"),
        "toolgate.toml:3:11: rule 1 (a): `timeout` is only for rules with action = \"ask\", and this rule's action is \"deny\""
    );
}

#[test]
fn bad_approvers_are_refused() {
    assert_eq!(
        load_error("[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\napprovers = [\"alice\"]\n"),
        "toolgate.toml:4:14: rule 1 (a): approver `alice` is not valid; write \"user:NAME\", \"group:NAME\" or \"role:NAME\""
    );
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"ask\"\napprovers = [\"team:ops\"]\n"
        ),
        "toolgate.toml:4:14: rule 1 (a): approver `team:ops` is not valid; write \"user:NAME\", \"group:NAME\" or \"role:NAME\""
    );
    assert_eq!(
        "user:".parse::<Approver>(),
        Err(InvalidApprover("user:".into()))
    );
    assert_eq!(
        "role:admin".parse::<Approver>(),
        Ok(Approver::Role("admin".into()))
    );
}

#[test]
fn rule_names_must_be_unique_and_not_empty() {
    assert_eq!(
        load_error(
            "[[policy.rules]]\nname = \"mail\"\ntool = \"a\"\naction = \"allow\"\n\n[[policy.rules]]\nname = \"mail\"\ntool = \"b\"\naction = \"deny\"\n"
        ),
        "toolgate.toml:6:1: rule 2 (mail): the name `mail` is already used by rule 1; rule names must be unique"
    );
    assert_eq!(
        load_error(
            "[[policy.rules]]\ntool = \"a\"\naction = \"allow\"\n\n[[policy.rules]]\nname = \"rule 1\"\ntool = \"b\"\naction = \"deny\"\n"
        ),
        "toolgate.toml:5:1: rule 2 (rule 1): the name `rule 1` is already used by rule 1; rule names must be unique"
    );
    assert_eq!(
        load_error("[[policy.rules]]\nname = \" \"\ntool = \"a\"\naction = \"allow\"\n"),
        "toolgate.toml:2:8: rule 1 ( ): `name` must not be empty; leave it out to call the rule by its number"
    );
    assert_eq!(
        load_error(
            "[[policy.rules]]\nname = \"n\"\nid = \"i\"\ntool = \"a\"\naction = \"allow\"\n"
        ),
        "toolgate.toml:3:1: rule 1 (n): give a rule either `name` or `id`, not both"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    assert_eq!(
        load_error("[[policy.rules]]\nreason = \"é\"; tool = \"a\"\n"),
        "toolgate.toml:2:13: invalid TOML: unexpected key or value, expected newline, `#`"
    );
}

// ---------------------------------------------------------------- evaluation

#[test]
fn each_action_gives_its_verdict() {
    let policy = load(
        r#"[[policy.rules]]
tool = "count_emails"
action = "allow"

[[policy.rules]]
tool = "send_email"
action = "ask"
approvers = ["group:ops", "user:alice"]
quorum = 2
timeout = "30m"
reason = "mail leaves the company"

[[policy.rules]]
name = "no-deletes"
tool = "delete_*"
action = "deny"
reason = "deleting is never allowed here"
"#,
    );
    assert_eq!(
        decide(&policy, "count_emails", json!({"last_n_days": 5})),
        Verdict {
            action: Action::Allow,
            decided_by: rule(1, "rule 1"),
            reason: None,
            ask: None,
            condition_errors: vec![],
        }
    );
    assert_eq!(
        decide(&policy, "send_email", json!({})),
        Verdict {
            action: Action::Ask,
            decided_by: rule(2, "rule 2"),
            reason: Some("mail leaves the company".into()),
            ask: Some(AskSpec {
                approvers: Arc::from([
                    Approver::Group("ops".into()),
                    Approver::User("alice".into())
                ]),
                quorum: 2,
                timeout: Some(Duration::from_secs(1800)),
            }),
            condition_errors: vec![],
        }
    );
    assert_eq!(
        decide(&policy, "delete_repo", json!({})),
        Verdict {
            action: Action::Deny,
            decided_by: rule(3, "no-deletes"),
            reason: Some("deleting is never allowed here".into()),
            ask: None,
            condition_errors: vec![],
        }
    );
    // The glob is anchored at both ends.
    assert_eq!(
        decide(&policy, "undelete_repo", json!({})).decided_by,
        DecidedBy::Default
    );
}

#[test]
fn the_strictest_matching_action_wins_wherever_it_is_in_the_file() {
    let rules = [
        "[[policy.rules]]\ntool = \"t\"\naction = \"allow\"\n",
        "[[policy.rules]]\ntool = \"t*\"\naction = \"ask\"\n",
        "[[policy.rules]]\ntool = \"*\"\naction = \"deny\"\n",
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]] {
        let text: String = order.iter().map(|&i| rules[i]).collect();
        let policy = load(&text);
        let verdict = decide(&policy, "t", json!({}));
        assert_eq!(verdict.action, Action::Deny, "{order:?}");
        let deny_position = order.iter().position(|&i| i == 2).unwrap() + 1;
        assert_eq!(
            verdict.decided_by,
            rule(deny_position, &format!("rule {deny_position}"))
        );
    }
    // Without the deny, ask beats allow.
    let policy = load(&format!("{}{}", rules[0], rules[1]));
    assert_eq!(decide(&policy, "t", json!({})).action, Action::Ask);
}

#[test]
fn among_rules_of_the_strictest_action_the_first_decides() {
    let policy = load(
        r#"[[policy.rules]]
tool = "send_email"
action = "allow"

[[policy.rules]]
tool = "send_*"
when = 'args.urgent'
action = "ask"
approvers = ["user:oncall"]
timeout = "5m"

[[policy.rules]]
tool = "send_email"
action = "ask"
approvers = ["group:ops"]
quorum = 2
reason = "second ask"

[[policy.rules]]
tool = "*"
action = "ask"
approvers = ["role:admin"]
"#,
    );
    let verdict = decide(&policy, "send_email", json!({"urgent": false}));
    assert_eq!(verdict.decided_by, rule(3, "rule 3"));
    assert_eq!(verdict.reason.as_deref(), Some("second ask"));
    let ask = verdict.ask.unwrap();
    assert_eq!(&*ask.approvers, [Approver::Group("ops".into())]);
    assert_eq!(ask.quorum, 2);
    assert_eq!(ask.timeout, None);

    let verdict = decide(&policy, "send_email", json!({"urgent": true}));
    assert_eq!(verdict.decided_by, rule(2, "rule 2"));
    let ask = verdict.ask.unwrap();
    assert_eq!(&*ask.approvers, [Approver::User("oncall".into())]);
    assert_eq!(ask.quorum, 1);
    assert_eq!(ask.timeout, Some(Duration::from_secs(300)));

    let two_denies = load(
        "[[policy.rules]]\ntool = \"x\"\naction = \"deny\"\nreason = \"first\"\n[[policy.rules]]\ntool = \"x\"\naction = \"deny\"\nreason = \"second\"\n",
    );
    assert_eq!(
        decide(&two_denies, "x", json!({})).reason.as_deref(),
        Some("first")
    );
}

#[test]
fn without_a_matching_rule_the_hints_decide() {
    let policy = load("[[policy.rules]]\ntool = \"other\"\naction = \"deny\"\n");
    let empty = Map::new();
    let cases = [
        (ToolHints::default(), Action::Ask),
        (READ_ONLY, Action::Allow),
        (DESTRUCTIVE, Action::Ask),
        (
            ToolHints {
                read_only: Some(false),
                ..ToolHints::default()
            },
            Action::Ask,
        ),
        (
            ToolHints {
                idempotent: Some(true),
                ..ToolHints::default()
            },
            Action::Ask,
        ),
    ];
    for (hints, expected) in cases {
        for policy in [&policy, &Policy::default()] {
            let verdict = policy.evaluate(&EvalInput::new("tool", &empty).hints(hints));
            assert_eq!(verdict.action, expected, "{hints:?}");
            assert_eq!(verdict.decided_by, DecidedBy::Default);
            assert_eq!(verdict.reason, None);
            assert_eq!(
                verdict.ask,
                (expected == Action::Ask).then(AskSpec::default)
            );
            assert_eq!(Action::default_for(&hints), expected);
        }
    }
}

#[test]
fn rules_override_the_hints() {
    let policy = load(
        "[[policy.rules]]\ntool = \"read_file\"\naction = \"ask\"\n\n[[policy.rules]]\ntool = \"rm\"\naction = \"allow\"\n",
    );
    let empty = Map::new();
    let read = policy.evaluate(&EvalInput::new("read_file", &empty).hints(READ_ONLY));
    assert_eq!(read.action, Action::Ask);
    assert_eq!(read.decided_by, rule(1, "rule 1"));
    let rm = policy.evaluate(&EvalInput::new("rm", &empty).hints(DESTRUCTIVE));
    assert_eq!(rm.action, Action::Allow);
}

#[test]
fn conditions_decide_whether_a_rule_matches() {
    let policy = load(
        r#"[[policy.rules]]
tool = "send_email"
when = 'args.recipient.endsWith("@example.com")'
action = "allow"

[[policy.rules]]
tool = "send_email"
when = '!args.recipient.endsWith("@example.com")'
action = "ask"
"#,
    );
    let inside = decide(
        &policy,
        "send_email",
        json!({"recipient": "bob@example.com"}),
    );
    assert_eq!(
        (inside.action, inside.decided_by),
        (Action::Allow, rule(1, "rule 1"))
    );
    let outside = decide(
        &policy,
        "send_email",
        json!({"recipient": "sally@gmail.com"}),
    );
    assert_eq!(
        (outside.action, outside.decided_by),
        (Action::Ask, rule(2, "rule 2"))
    );
    assert!(inside.condition_errors.is_empty());
    assert!(outside.condition_errors.is_empty());
}

#[test]
fn failing_conditions_do_not_match_for_allow_rules() {
    let policy = load(
        "[[policy.rules]]\ntool = \"send_email\"\nwhen = 'args.recipient.endsWith(\"@example.com\")'\naction = \"allow\"\n",
    );
    // `recipient` is missing, then not a string.
    for (call, message) in [
        (json!({"to": "bob@example.com"}), "No such key: recipient"),
        (
            json!({"recipient": 42}),
            "found no matching overload for 'endsWith' applied to 'int.(string)'",
        ),
    ] {
        let call_args = args(call);
        let verdict = policy.evaluate(&EvalInput::new("send_email", &call_args).hints(READ_ONLY));
        // Not matched: the read-only default applies, not the rule.
        assert_eq!(verdict.action, Action::Allow);
        assert_eq!(verdict.decided_by, DecidedBy::Default);
        assert_eq!(
            verdict.condition_errors,
            [ConditionError {
                rule: 1,
                rule_name: "rule 1".into(),
                action: Action::Allow,
                expression: r#"args.recipient.endsWith("@example.com")"#.into(),
                message: message.to_owned(),
            }]
        );
        let no_hints = policy.evaluate(&EvalInput::new("send_email", &call_args));
        assert_eq!(no_hints.action, Action::Ask);
    }
}

#[test]
fn failing_conditions_match_for_deny_and_ask_rules() {
    for action in [Action::Deny, Action::Ask] {
        let policy = load(&format!(
            "[[policy.rules]]\ntool = \"*\"\naction = \"allow\"\n\n[[policy.rules]]\nname = \"guard\"\ntool = \"send_email\"\nwhen = '!args.recipient.endsWith(\"@example.com\")'\naction = \"{action}\"\n"
        ));
        let verdict = decide(&policy, "send_email", json!({"to": "x"}));
        assert_eq!(verdict.action, action);
        assert_eq!(verdict.decided_by, rule(2, "guard"));
        assert_eq!(
            verdict.condition_errors,
            [ConditionError {
                rule: 2,
                rule_name: "guard".into(),
                action,
                expression: r#"!args.recipient.endsWith("@example.com")"#.into(),
                message: "No such key: recipient".into(),
            }]
        );
        assert_eq!(
            verdict.condition_errors[0].to_string(),
            format!(
                "guard: `when` failed, so the {action} rule counts as matched: No such key: recipient (in `!args.recipient.endsWith(\"@example.com\")`)"
            )
        );
        // With the argument present and fine, the allow rule decides.
        let ok = decide(&policy, "send_email", json!({"recipient": "a@example.com"}));
        assert_eq!(ok.action, Action::Allow);
        assert!(ok.condition_errors.is_empty());
    }
}

#[test]
fn conditions_that_give_no_bool_are_errors() {
    let policy = load(
        "[[policy.rules]]\ntool = \"t\"\nwhen = 'args.recipient'\naction = \"allow\"\n\n[[policy.rules]]\ntool = \"t\"\nwhen = 'size(args.recipient)'\naction = \"deny\"\n",
    );
    let verdict = decide(&policy, "t", json!({"recipient": "bob"}));
    assert_eq!(verdict.action, Action::Deny);
    assert_eq!(verdict.decided_by, rule(2, "rule 2"));
    // Only the deny rule ran: nothing less strict could change the verdict.
    assert_eq!(verdict.condition_errors.len(), 1);
    assert_eq!(
        verdict.condition_errors[0].message,
        "the condition gave a int (3), not a bool"
    );

    let allow_only =
        load("[[policy.rules]]\ntool = \"t\"\nwhen = 'args.recipient'\naction = \"allow\"\n");
    let verdict = decide(&allow_only, "t", json!({"recipient": "bob"}));
    assert_eq!(verdict.action, Action::Ask);
    assert_eq!(
        verdict.condition_errors[0].message,
        "the condition gave a string (\"bob\"), not a bool"
    );
    let verdict = decide(&allow_only, "t", json!({"recipient": null}));
    assert_eq!(
        verdict.condition_errors[0].message,
        "the condition gave a null_type (null), not a bool"
    );

    // Maps are described with their keys sorted, so that one call always
    // gets one message, whatever the order of a hash map.
    let verdict = decide(
        &allow_only,
        "t",
        json!({"recipient": {"z": [1, 2.5, "é"], "a": {"n": 18446744073709551615u64}, "m": true}}),
    );
    assert_eq!(
        verdict.condition_errors[0].message,
        "the condition gave a map ({\"a\": {\"n\": 18446744073709551615u}, \"m\": true, \"z\": [1, 2.5, \"é\"]}), not a bool"
    );
    let long: Map<String, Value> = (0..40).map(|i| (format!("key{i:02}"), json!(i))).collect();
    let verdict = decide(&allow_only, "t", json!({"recipient": long}));
    assert_eq!(
        verdict.condition_errors[0].message,
        "the condition gave a map ({\"key00\": 0, \"key01\": 1, \"key02\": 2, \"key03\": 3, \"key04\": 4, \"key05\": 5, \"key...), not a bool"
    );
}

#[test]
fn conditions_see_the_tool_name() {
    let policy = load(
        "[[policy.rules]]\ntool = \"github.*\"\nwhen = 'tool.endsWith(\"_pr\") && tool != \"github.close_pr\"'\naction = \"deny\"\n",
    );
    assert_eq!(
        decide(&policy, "github.merge_pr", json!({})).action,
        Action::Deny
    );
    assert_eq!(
        decide(&policy, "github.close_pr", json!({})).decided_by,
        DecidedBy::Default
    );
    assert_eq!(
        decide(&policy, "github.list", json!({})).decided_by,
        DecidedBy::Default
    );
}

#[test]
fn conditions_see_the_run() {
    let policy = load(
        r#"[[policy.rules]]
tool = "t"
when = 'run != null && run.id == "run-1" && run.thread == null'
action = "allow"

[[policy.rules]]
tool = "t"
when = 'run != null && run.thread == "support"'
action = "deny"
"#,
    );
    let empty = Map::new();
    let input = EvalInput::new("t", &empty);
    assert_eq!(policy.evaluate(&input).decided_by, DecidedBy::Default);
    assert_eq!(
        policy.evaluate(&input.run("run-1", None)).decided_by,
        rule(1, "rule 1")
    );
    assert_eq!(
        policy.evaluate(&input.run("run-2", None)).decided_by,
        DecidedBy::Default
    );
    assert_eq!(
        policy
            .evaluate(&input.run("run-1", Some("support")))
            .decided_by,
        rule(2, "rule 2")
    );
    assert_eq!(
        policy
            .evaluate(&input.run("run-1", Some("sales")))
            .decided_by,
        DecidedBy::Default
    );
}

#[test]
fn conditions_see_the_principal() {
    let policy = load(
        r#"[[policy.rules]]
tool = "t"
when = 'principal == "user:alice"'
action = "allow"

[[policy.rules]]
tool = "t"
when = 'principal != null && type(principal) == map && has(principal.groups) && "interns" in principal.groups'
action = "deny"
reason = "interns may not"
"#,
    );
    let empty = Map::new();
    let input = EvalInput::new("t", &empty);
    let alice = json!("user:alice");
    let intern = json!({"id": "user:bob", "groups": ["interns", "ops"]});
    let staff = json!({"id": "user:carol", "groups": ["ops"]});
    let anonymous = json!({"id": "user:dan"});
    assert_eq!(policy.evaluate(&input).decided_by, DecidedBy::Default);
    assert_eq!(
        policy.evaluate(&input.principal(&alice)).decided_by,
        rule(1, "rule 1")
    );
    assert_eq!(
        policy.evaluate(&input.principal(&intern)).action,
        Action::Deny
    );
    assert_eq!(
        policy.evaluate(&input.principal(&staff)).decided_by,
        DecidedBy::Default
    );
    let verdict = policy.evaluate(&input.principal(&anonymous));
    assert_eq!(verdict.decided_by, DecidedBy::Default);
    assert!(verdict.condition_errors.is_empty());

    // In CEL, `has(e.f)` on an `e` that is not a map is an error, not
    // false. Without the `type(principal) == map` guard, the deny rule's
    // condition fails for a principal given as a string, and so counts as
    // matched (fail closed): even alice is denied, and the failure is
    // reported.
    let unguarded = load(
        r#"[[policy.rules]]
tool = "t"
when = 'principal == "user:alice"'
action = "allow"

[[policy.rules]]
tool = "t"
when = 'principal != null && has(principal.groups) && "interns" in principal.groups'
action = "deny"
"#,
    );
    let verdict = unguarded.evaluate(&input.principal(&alice));
    assert_eq!(
        (verdict.action, verdict.decided_by),
        (Action::Deny, rule(2, "rule 2"))
    );
    assert_eq!(verdict.condition_errors.len(), 1);
    assert_eq!(verdict.condition_errors[0].rule, 2);
    assert_eq!(verdict.condition_errors[0].action, Action::Deny);
    // Maps are read alike with or without the guard.
    for principal in [&intern, &staff, &anonymous] {
        let guarded = policy.evaluate(&input.principal(principal));
        let verdict = unguarded.evaluate(&input.principal(principal));
        assert_eq!(
            (verdict.action, verdict.decided_by),
            (guarded.action, guarded.decided_by),
            "{principal}"
        );
        assert!(verdict.condition_errors.is_empty(), "{principal}");
    }
}

#[test]
fn conditions_may_use_the_strings_extension_and_regexes() {
    let policy = load(
        r#"[[policy.rules]]
tool = "t"
when = 'args.to.lowerAscii().endsWith("@example.com") && args.to.matches("^[A-Za-z.]+@")'
action = "allow"
"#,
    );
    // Regular expressions are case-sensitive (RE2): the letters and the
    // dots before the `@` are what the pattern checks, in either case.
    assert_eq!(
        decide(&policy, "t", json!({"to": "Bob@EXAMPLE.com"})).action,
        Action::Allow
    );
    assert_eq!(
        decide(&policy, "t", json!({"to": "B0b@example.com"})).action,
        Action::Ask
    );
}

#[test]
fn evaluation_input_can_come_from_a_tool_call() {
    let policy = load(
        "[[policy.rules]]\ntool = \"count_emails\"\nwhen = 'args.last_n_days <= 30'\naction = \"allow\"\n",
    );
    let call = ToolCall::new("1", "count_emails", json!({"last_n_days": 5}));
    assert_eq!(
        policy.evaluate(&EvalInput::call(&call)).action,
        Action::Allow
    );
    let call = ToolCall::new("1", "count_emails", json!({"last_n_days": 50}));
    assert_eq!(policy.evaluate(&EvalInput::call(&call)).action, Action::Ask);
}

// ---------------------------------------------------------------- fast path

/// Evaluates `expression` both ways: the fast path's answer (if it gives
/// one) and the interpreter's.
fn both_ways(expression: &str, input: &EvalInput<'_>) -> (Option<bool>, Result<bool, String>) {
    let condition = Condition::compile(expression).unwrap_or_else(|_| panic!("{expression}"));
    let variables = Variables::new(input);
    (
        condition.fast_answer(input),
        condition.evaluate_with_cel(&variables),
    )
}

#[test]
fn the_fast_path_answers_common_conditions_as_cel_does() {
    let call_args = args(json!({
        "recipient": "Bob@Example.com",
        "message": "héllo",
        "n": 7,
        "big": 18446744073709551615u64,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "nested": {"k": "v"},
        "none": null,
        "flag": true
    }));
    let principal = json!({"id": "user:alice", "groups": ["ops"]});
    let input = EvalInput::new("send_email", &call_args)
        .run("run-1", None)
        .principal(&principal);
    let expressions = [
        r#"args.recipient.endsWith("@Example.com")"#,
        r#"!args.recipient.startsWith("Bob")"#,
        r#"args.recipient.contains("@")"#,
        r#"args.recipient.lowerAscii() == "bob@example.com""#,
        r#"args.recipient.upperAscii() == "BOB@EXAMPLE.COM""#,
        r#"args.recipient.matches("^[A-Za-z]+@")"#,
        r#"matches(args.recipient, "example")"#,
        "size(args.message) == 5",
        "args.message.size() == 5",
        "size(args.tags) == 2 && size(args.nested) == 1",
        "args.n > 5 && args.n <= 7 && args.n >= 7 && args.n < 8",
        "args.n == 7 && args.n != 8",
        "args.big == 18446744073709551615u",
        "args.ratio < 1.0",
        r#"args.message > "a""#,
        r#""a" in args.tags && !("c" in args.tags)"#,
        r#"args.recipient in ["x", "Bob@Example.com"]"#,
        r#""k" in args.nested && args.nested.k == "v" && args.nested["k"] == "v""#,
        r#"args.tags[1] == "b""#,
        "has(args.none) && args.none == null && !has(args.missing)",
        "args.flag ? args.n == 7 : false",
        "args.flag || args.missing",
        "!args.flag && args.missing",
        r#"tool == "send_email""#,
        r#"run.id == "run-1" && run.thread == null && has(run.id)"#,
        r#"principal.id == "user:alice" && "ops" in principal.groups"#,
        r#"args.n == "7""#,
        "args.tags != null",
        "null != args.nested",
        "args.none != 7",
        "[1, 2] != null",
    ];
    for expression in expressions {
        let (fast, cel) = both_ways(expression, &input);
        assert!(fast.is_some(), "the fast path gave up on {expression}");
        assert_eq!(fast.map(Ok), Some(cel), "{expression}");
    }
}

#[test]
fn the_fast_path_leaves_errors_and_unusual_cases_to_cel() {
    let call_args = args(json!({"n": 7, "ratio": 2.5, "tags": ["a", 1], "s": "x"}));
    let input = EvalInput::new("t", &call_args);
    for (expression, cel) in [
        // Errors: cel's message is what the audit log gets.
        ("args.missing == 1", Err("No such key: missing".to_owned())),
        (
            "args.n.startsWith(\"x\")",
            Err("found no matching overload for 'startsWith' applied to 'int.(string)'".to_owned()),
        ),
        (
            "args.tags[5] == 1",
            Err("Index out of bounds: Int(5)".to_owned()),
        ),
        // Numbers of different types compare by value in cel.
        ("args.n == 7.0", Ok(true)),
        ("args.ratio > 2", Ok(true)),
        ("args.n < 8u", Ok(true)),
        // Lists compare element by element.
        ("args.tags == [\"a\", 1]", Ok(true)),
        // Errors absorbed by `||` and `&&`.
        ("args.missing || true", Ok(true)),
        ("args.missing && false", Ok(false)),
    ] {
        let (fast, result) = both_ways(expression, &input);
        assert_eq!(fast, None, "{expression}");
        assert_eq!(result, cel, "{expression}");
    }
}

#[test]
fn conditions_outside_the_fast_path_still_work() {
    let condition = Condition::compile("args.tags.exists(t, t == \"x\")").unwrap();
    assert!(!condition.is_fast());
    assert!(Condition::compile("args.n + 1 > 2").is_ok_and(|c| !c.is_fast()));
    assert!(Condition::compile("args.n > 2").is_ok_and(|c| c.is_fast()));
    let policy = load(
        "[[policy.rules]]\ntool = \"t\"\nwhen = 'args.tags.exists(t, t == \"x\") && args.n + 1 > 2'\naction = \"deny\"\n",
    );
    assert_eq!(
        decide(&policy, "t", json!({"tags": ["x"], "n": 2})).action,
        Action::Deny
    );
    assert_eq!(
        decide(&policy, "t", json!({"tags": ["y"], "n": 2})).decided_by,
        DecidedBy::Default
    );
}

// ---------------------------------------------------------------- types

#[test]
fn actions_serialise_in_lower_case_and_order_by_strictness() {
    assert_eq!(
        serde_json::to_string(&[Action::Allow, Action::Ask, Action::Deny]).unwrap(),
        r#"["allow","ask","deny"]"#
    );
    assert_eq!(
        serde_json::from_str::<Action>(r#""deny""#).unwrap(),
        Action::Deny
    );
    assert!(Action::Allow < Action::Ask && Action::Ask < Action::Deny);
    assert_eq!("ask".parse::<Action>(), Ok(Action::Ask));
    assert_eq!(
        "Allow".parse::<Action>().unwrap_err().to_string(),
        "unknown action `Allow`; use allow, deny or ask"
    );
}

#[test]
fn verdicts_round_trip_through_json() {
    let policy = load(
        "[[policy.rules]]\nname = \"mail\"\ntool = \"t\"\nwhen = 'args.x'\naction = \"ask\"\napprovers = [\"user:alice\"]\ntimeout = \"1h 30m\"\n",
    );
    let verdict = decide(&policy, "t", json!({}));
    let text = serde_json::to_value(&verdict).unwrap();
    assert_eq!(
        text,
        json!({
            "action": "ask",
            "decided_by": {"by": "rule", "number": 1, "name": "mail"},
            "ask": {"approvers": ["user:alice"], "quorum": 1, "timeout": "1h 30m"},
            "condition_errors": [{
                "rule": 1,
                "rule_name": "mail",
                "action": "ask",
                "expression": "args.x",
                "message": "No such key: x"
            }]
        })
    );
    assert_eq!(serde_json::from_value::<Verdict>(text).unwrap(), verdict);
    let default = decide(&Policy::default(), "t", json!({}));
    assert_eq!(
        serde_json::to_value(&default).unwrap(),
        json!({"action": "ask", "decided_by": {"by": "default"}, "ask": {"approvers": [], "quorum": 1}})
    );
}

#[test]
fn rules_serialise_as_written() {
    let policy = load(
        "[[policy.rules]]\ntool = \"t\"\nwhen = 'args.x == 1'\naction = \"ask\"\nquorum = 2\n",
    );
    assert_eq!(
        serde_json::to_value(&policy.rules()[0]).unwrap(),
        json!({
            "number": 1,
            "name": "rule 1",
            "tool": "t",
            "when": "args.x == 1",
            "action": "ask",
            "approvers": [],
            "quorum": 2
        })
    );
}

#[test]
fn policies_are_cheap_to_share_between_threads() {
    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
    assert_shareable::<Policy>();
    assert_shareable::<Verdict>();
    let policy = load("[[policy.rules]]\ntool = \"t\"\nwhen = 'args.n > 1'\naction = \"deny\"\n");
    let copy = policy.clone();
    assert!(Arc::ptr_eq(&policy.inner, &copy.inner));
    let handle = std::thread::spawn(move || decide(&copy, "t", json!({"n": 2})).action);
    assert_eq!(handle.join().unwrap(), Action::Deny);
}

#[test]
fn a_bare_glob_matches_a_servers_tools_by_their_own_names() {
    let policy = load(
        r#"
        [[policy.rules]]
        tool = "files:read_*"
        action = "allow"

        [[policy.rules]]
        tool = "write_*"
        action = "deny"
        "#,
    );
    assert_eq!(
        decide(&policy, "files:read_file", json!({})).action,
        Action::Allow
    );
    // A prefixed glob is for that server only.
    assert_eq!(
        decide(&policy, "notes:read_file", json!({})).action,
        Action::Ask
    );
    assert_eq!(decide(&policy, "read_file", json!({})).action, Action::Ask);
    // A bare glob covers every server's tool of that name, and plain tools.
    assert_eq!(
        decide(&policy, "files:write_file", json!({})).action,
        Action::Deny
    );
    assert_eq!(
        decide(&policy, "notes:write_note", json!({})).action,
        Action::Deny
    );
    assert_eq!(
        decide(&policy, "write_note", json!({})).action,
        Action::Deny
    );
    // A bare glob sees only the part after the server's name.
    assert_eq!(
        decide(&policy, "write_x:other", json!({})).action,
        Action::Ask
    );

    let grant = Matcher::new("read_*", None).unwrap();
    let no_args = Map::new();
    assert!(
        grant
            .matches(&EvalInput::new("files:read_file", &no_args))
            .unwrap()
    );
    assert!(
        !grant
            .matches(&EvalInput::new("files:write_file", &no_args))
            .unwrap()
    );
}

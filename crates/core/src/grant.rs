//! Grants: standing approvals with an explicit scope.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{EvalInput, Matcher};

/// How far a grant reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum GrantScope {
    /// Calls of one run.
    Run {
        /// The run.
        run_id: String,
    },
    /// Calls of every run of one thread.
    Thread {
        /// The thread.
        thread: String,
    },
    /// Calls until a time (Unix milliseconds).
    Until {
        /// When the grant ends.
        until: i64,
    },
    /// A number of calls.
    Uses {
        /// How many calls it covered when made.
        uses: u32,
    },
}

impl fmt::Display for GrantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantScope::Run { run_id } => write!(f, "run {run_id}"),
            GrantScope::Thread { thread } => write!(f, "thread {thread}"),
            GrantScope::Until { until } => {
                write!(f, "until {}", crate::time::format_millis(*until))
            }
            GrantScope::Uses { uses } => write!(f, "{uses} use(s)"),
        }
    }
}

/// A grant's scope as people write it: `run`, `thread`, `uses:N`,
/// `for:DURATION` (`for:30m`) or `until:TIME` (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSpec {
    /// The decided call's run.
    Run,
    /// The decided call's thread.
    Thread,
    /// The next N calls.
    Uses(u32),
    /// From the decision on, for this long.
    For(std::time::Duration),
    /// Until this time (Unix milliseconds).
    Until(i64),
}

impl GrantSpec {
    /// The scope of a grant made at `now`. `run` and `thread` are left
    /// empty: the engine fills in the decided call's.
    pub fn scope(&self, now: i64) -> GrantScope {
        match self {
            GrantSpec::Run => GrantScope::Run {
                run_id: String::new(),
            },
            GrantSpec::Thread => GrantScope::Thread {
                thread: String::new(),
            },
            GrantSpec::Uses(uses) => GrantScope::Uses { uses: *uses },
            GrantSpec::For(duration) => GrantScope::Until {
                until: crate::time::after(now, *duration),
            },
            GrantSpec::Until(until) => GrantScope::Until { until: *until },
        }
    }
}

impl std::str::FromStr for GrantSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<GrantSpec, String> {
        let usage =
            "write run, thread, uses:N, for:DURATION (e.g. for:30m) or until:TIME (RFC 3339)";
        let (kind, value) = match text.split_once(':') {
            Some((kind, value)) => (kind.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        match (kind, value) {
            ("run", None) => Ok(GrantSpec::Run),
            ("thread", None) => Ok(GrantSpec::Thread),
            ("uses", Some(n)) => match n.parse::<u32>() {
                Ok(0) => {
                    Err("a grant for 0 uses would cover nothing; give at least uses:1".to_owned())
                }
                Ok(n) => Ok(GrantSpec::Uses(n)),
                Err(_) => Err(format!("`{n}` is not a number of uses; {usage}")),
            },
            ("for", Some(duration)) => match humantime::parse_duration(duration) {
                Ok(duration) if duration.is_zero() => Err(
                    "a grant for no time would cover nothing; give a duration such as for:30m"
                        .to_owned(),
                ),
                Ok(duration) => Ok(GrantSpec::For(duration)),
                Err(error) => Err(format!("`{duration}` is not a duration ({error}); {usage}")),
            },
            ("until", Some(time)) => match humantime::parse_rfc3339_weak(time) {
                Ok(time) => Ok(GrantSpec::Until(crate::time::to_millis(time))),
                Err(error) => Err(format!("`{time}` is not a time ({error}); {usage}")),
            },
            _ => Err(format!("`{text}` is not a grant scope; {usage}")),
        }
    }
}

/// What a decider asks for when a decision should also cover later calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// A glob over tool names; by default the decided call's tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// A CEL condition the later calls must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How far it reaches.
    #[serde(flatten)]
    pub scope: GrantScope,
}

/// A standing approval: calls of matching tools, with matching arguments,
/// within the scope, run without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant's id.
    pub id: String,
    /// A glob over tool names.
    pub tool: String,
    /// A CEL condition on the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How far it reaches.
    #[serde(flatten)]
    pub scope: GrantScope,
    /// Calls it may still cover, for `uses` grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// Who made it.
    pub created_by: String,
    /// When (Unix milliseconds).
    pub created_at: i64,
    /// The approval whose decision made it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// When it was revoked, and by whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// Who revoked a grant, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who.
    pub by: String,
    /// When (Unix milliseconds).
    pub at: i64,
}

impl Grant {
    /// When the grant ends, for a grant for a time.
    pub fn ends_at(&self) -> Option<i64> {
        match self.scope {
            GrantScope::Until { until } => Some(until),
            _ => None,
        }
    }

    /// True when the grant can still cover calls at `now`: not revoked,
    /// not past its time, not used up.
    pub fn is_live(&self, now: i64) -> bool {
        if self.revoked.is_some() {
            return false;
        }
        match self.scope {
            GrantScope::Until { until } => now < until,
            GrantScope::Uses { .. } => self.uses_left.unwrap_or(0) > 0,
            GrantScope::Run { .. } | GrantScope::Thread { .. } => true,
        }
    }

    /// Where the grant stands at `now`, in a word: `live` (it covers
    /// calls), `revoked`, `used up` or `expired`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.is_live(now) {
            "live"
        } else if matches!(self.scope, GrantScope::Uses { .. }) {
            "used up"
        } else {
            "expired"
        }
    }

    /// True when the grant covers this call at `now`. A condition that
    /// fails counts as no match: a grant never allows by mistake.
    pub fn covers(&self, input: &EvalInput<'_>, now: i64) -> bool {
        if !self.is_live(now) {
            return false;
        }
        let in_scope = match &self.scope {
            GrantScope::Run { run_id } => input.run.is_some_and(|run| run.id == run_id),
            GrantScope::Thread { thread } => {
                input.run.and_then(|run| run.thread) == Some(thread.as_str())
            }
            GrantScope::Until { .. } | GrantScope::Uses { .. } => true,
        };
        in_scope
            && Matcher::new(&self.tool, self.when.as_deref())
                .and_then(|matcher| matcher.matches(input))
                .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(scope: GrantScope, when: Option<&str>) -> Grant {
        Grant {
            id: "g1".into(),
            tool: "send_*".into(),
            when: when.map(str::to_owned),
            uses_left: match scope {
                GrantScope::Uses { uses } => Some(uses),
                _ => None,
            },
            scope,
            created_by: "alice".into(),
            created_at: 0,
            approval_id: None,
            revoked: None,
        }
    }

    #[test]
    fn grants_cover_only_their_scope_tool_and_condition() {
        let args = json!({"recipient": "bob@example.com"});
        let args = args.as_object().unwrap();
        let call = EvalInput::new("send_email", args).run("r1", Some("t1"));
        let other_run = EvalInput::new("send_email", args).run("r2", Some("t2"));

        let run = grant(
            GrantScope::Run {
                run_id: "r1".into(),
            },
            None,
        );
        assert!(run.covers(&call, 0));
        assert!(!run.covers(&other_run, 0));
        assert!(!run.covers(&EvalInput::new("delete_all", args).run("r1", None), 0));

        let thread = grant(
            GrantScope::Thread {
                thread: "t1".into(),
            },
            None,
        );
        assert!(thread.covers(&call, 0));
        assert!(!thread.covers(&other_run, 0));

        let until = grant(GrantScope::Until { until: 100 }, None);
        assert!(until.covers(&call, 99));
        assert!(!until.covers(&call, 100));

        let mut uses = grant(GrantScope::Uses { uses: 2 }, None);
        assert!(uses.covers(&call, 0));
        uses.uses_left = Some(0);
        assert!(!uses.covers(&call, 0));

        let conditional = grant(
            GrantScope::Uses { uses: 5 },
            Some(r#"args.recipient.endsWith("@example.com")"#),
        );
        assert!(conditional.covers(&call, 0));
        let outside = json!({"recipient": "eve@evil.test"});
        assert!(!conditional.covers(
            &EvalInput::new("send_email", outside.as_object().unwrap()),
            0
        ));
    }

    #[test]
    fn failing_conditions_and_revocations_never_cover() {
        let args = json!({});
        let call = EvalInput::new("send_email", args.as_object().unwrap());
        let failing = grant(
            GrantScope::Uses { uses: 5 },
            Some("args.recipient.size() > 0"),
        );
        assert!(!failing.covers(&call, 0));
        let mut revoked = grant(GrantScope::Uses { uses: 5 }, None);
        assert!(revoked.covers(&call, 0));
        revoked.revoked = Some(Revocation {
            by: "bob".into(),
            at: 1,
        });
        assert!(!revoked.covers(&call, 0));
    }

    proptest::proptest! {
        /// Whatever is written, parsing a scope gives a scope or a message
        /// saying what to write; what people write for real parses to what
        /// they meant.
        #[test]
        fn grant_scopes_parse_or_say_what_to_write(text in ".{0,24}", uses in 1u32.., minutes in 1u64..100_000) {
            match text.parse::<GrantSpec>() {
                Ok(_) => {}
                Err(message) => proptest::prop_assert!(!message.is_empty()),
            }
            proptest::prop_assert_eq!(format!("uses:{uses}").parse::<GrantSpec>(), Ok(GrantSpec::Uses(uses)));
            proptest::prop_assert_eq!(
                format!(" for: {minutes}m ").parse::<GrantSpec>(),
                Ok(GrantSpec::For(std::time::Duration::from_secs(minutes * 60)))
            );
            let scope = GrantSpec::For(std::time::Duration::from_secs(minutes * 60)).scope(1_000);
            proptest::prop_assert_eq!(scope, GrantScope::Until { until: 1_000 + minutes as i64 * 60_000 });
        }
    }
}

//! Calls from outside agents: a program in any language asks, through
//! toolgate's API, whether it may make a tool call it will make itself.
//!
//! Each such call is gated like an engine run's (policy, then grants) and
//! recorded in an *external* run: a log that starts with
//! [`Event::CallRequested`] and holds, for every call, its verdict and an
//! approval, pending or born settled. People decide those approvals with
//! [`crate::decide`], as any other; the agent reads the decision and acts.
//! An agent that names the same run again adds its calls to it, so that
//! grants scoped to the run cover them.

use std::time::Duration;

use serde_json::{Map, Value};
use toolgate_core::policy::{AskSpec, EvalInput, Policy};
use toolgate_core::run::{ApprovalStatus, Event, Gate, Outcome, RunState};
use toolgate_core::store::{Store, StoreError};
use toolgate_core::time;
use toolgate_core::{Fingerprint, Principal, Role, ToolCall, ToolError, ToolHints, check_args};

use crate::agent::{Loaded, append_events, append_events_deferred, gate_call};
use crate::detail::ApprovalDetail;
use crate::rows::approval_row;
use crate::{EngineError, new_id};

/// How often a request that lost a race for its run is tried again.
const MAX_ATTEMPTS: u32 = 20;

/// The longest tool name and run id accepted.
const MAX_NAME: usize = 128;

/// A call an outside agent wants to make.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CallRequest {
    /// The run to add the call to (made if it does not exist); `None` for
    /// a new run with a new id.
    pub run_id: Option<String>,
    /// The agent's conversation thread, for grants scoped to a thread
    /// (taken when the run is made).
    pub thread: Option<String>,
    /// The tool.
    pub tool: String,
    /// Its arguments.
    pub args: Map<String, Value>,
    /// The JSON Schema of the arguments: they are checked against it now,
    /// and edits later. `None` accepts any object.
    pub schema: Option<Value>,
    /// What the tool does, for the people deciding.
    pub description: Option<String>,
    /// The tool's hints, which decide when no policy rule matches.
    pub hints: ToolHints,
    /// Anything the agent wants the people deciding to see.
    pub context: Option<Value>,
    /// How long people have to decide when the policy's rule sets no
    /// timeout; `None` lets such an approval wait until decided.
    pub timeout: Option<Duration>,
    /// Whether a call that policy or a grant clears at once is recorded as
    /// started ([`Event::ToolStarted`]) in the same commit: for an agent
    /// that makes the call as soon as it is cleared, and reports how it
    /// ended with [`report_call`].
    pub start: bool,
    /// Whether grants are ignored: only policy clears the call, or people.
    pub skip_grants: bool,
    /// The id to give the call's approval, made beforehand by a caller
    /// that must know it before the call is recorded (a server that starts
    /// waiting on the approval first, so that no decision can slip in
    /// between); `None` makes a new one.
    pub approval_id: Option<NewApprovalId>,
}

/// The id of an approval not recorded yet ([`CallRequest::approval_id`]).
///
/// Only [`NewApprovalId::new`] makes one: a UUIDv7, as every approval id,
/// so it names no approval already stored. A request whose run already
/// has an approval with this id is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApprovalId(String);

impl NewApprovalId {
    /// A new approval id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NewApprovalId(new_id())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl CallRequest {
    /// A request for `tool` with `args`.
    pub fn new(tool: impl Into<String>, args: Map<String, Value>) -> Self {
        CallRequest {
            tool: tool.into(),
            args,
            ..CallRequest::default()
        }
    }
}

/// Why a call request was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request itself is malformed: a bad tool name or run id.
    #[error("{0}")]
    Invalid(String),
    /// The arguments fail the schema given, or the schema is not one.
    #[error(transparent)]
    InvalidArguments(ToolError),
    /// The run named is an engine run, not an outside agent's.
    #[error(
        "run {run_id} is an engine run, driven by toolgate itself; name another run, or none for a new one"
    )]
    NotExternal {
        /// The run.
        run_id: String,
    },
    /// The run named belongs to another principal.
    #[error("run {run_id} belongs to {owner}; {principal} may not add calls to it")]
    Forbidden {
        /// The run.
        run_id: String,
        /// Its owner.
        owner: String,
        /// Who asked.
        principal: String,
    },
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for RequestError {
    fn from(error: StoreError) -> Self {
        RequestError::Engine(error.into())
    }
}

/// Gates `request` for `principal` and records it; returns its approval,
/// pending or already settled by policy or a grant.
///
/// The arguments are checked against the schema first; a request that
/// fails any check stores nothing.
pub async fn request_call(
    store: &dyn Store,
    policy: &Policy,
    principal: &Principal,
    request: CallRequest,
    now: i64,
) -> Result<ApprovalDetail, RequestError> {
    Ok(request_call_kept(store, policy, principal, request, now)
        .await?
        .detail)
}

/// [`request_call`] for an agent in this process that makes the call and
/// reports its start and end with [`RequestedCall::report`], which starts
/// from the run as this append left it instead of reading it back.
pub async fn request_call_kept(
    store: &dyn Store,
    policy: &Policy,
    principal: &Principal,
    request: CallRequest,
    now: i64,
) -> Result<RequestedCall, RequestError> {
    check_name("tool name", &request.tool)?;
    if let Some(run_id) = &request.run_id {
        check_name("run id", run_id)?;
    }
    let schema = request
        .schema
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if !schema.is_object() && !schema.is_boolean() {
        return Err(RequestError::InvalidArguments(ToolError::InvalidSchema {
            tool: request.tool.clone(),
            message: "a JSON Schema is an object (or true or false)".to_owned(),
        }));
    }
    check_args(&request.tool, &schema, &request.args).map_err(RequestError::InvalidArguments)?;
    let run_id = request.run_id.clone().unwrap_or_else(new_id);
    // A run id just made is nobody's yet: there is nothing to read.
    let mut fresh = request.run_id.is_none();
    let principal_name = Value::String(principal.name.clone());
    for _ in 0..MAX_ATTEMPTS {
        let loaded = if fresh {
            Ok(Vec::new())
        } else {
            store.load(&run_id).await
        };
        let log = match loaded {
            Ok(log) => log,
            Err(StoreError::NotFound { .. }) => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let mut run = if log.is_empty() {
            Loaded {
                run_id: run_id.clone(),
                state: RunState::fold([]),
                created_at: now,
            }
        } else {
            Loaded::of(&run_id, &log)
        };
        if run.state.version > 0 {
            if !run.state.external {
                return Err(RequestError::NotExternal { run_id });
            }
            let owner = run.state.principal.clone().unwrap_or_default();
            if owner != principal.name && principal.role != Role::Admin {
                return Err(RequestError::Forbidden {
                    run_id,
                    owner,
                    principal: principal.name.clone(),
                });
            }
        }
        let call = ToolCall {
            id: new_id(),
            name: request.tool.clone(),
            args: request.args.clone(),
        };
        let asked = Event::CallRequested {
            call: call.clone(),
            principal: principal.name.clone(),
            thread: request.thread.clone(),
            context: request.context.clone(),
        };
        let mut after = run.state.clone();
        after.apply(&asked);
        let input = EvalInput::call(&call)
            .hints(request.hints)
            .run(&run_id, after.thread.as_deref())
            .principal(&principal_name);
        let mut grants = request.skip_grants.then(Vec::new);
        let (gate, verdict) = gate_call(store, policy, &input, &mut grants, now).await?;
        let ask = match gate {
            Gate::Ask { .. } => {
                let mut ask = verdict.ask.clone().unwrap_or_default();
                ask.timeout = ask.timeout.or(request.timeout);
                ask
            }
            _ => AskSpec::default(),
        };
        let expires_at = match gate {
            Gate::Ask { .. } => ask.timeout.map(|timeout| time::after(now, timeout)),
            _ => None,
        };
        let approval_id = match &request.approval_id {
            Some(id) if after.approval(id.as_str()).is_some() => {
                return Err(RequestError::Invalid(format!(
                    "run {run_id} already has approval {}: make a new id for each call",
                    id.as_str()
                )));
            }
            Some(id) => id.as_str().to_owned(),
            None => new_id(),
        };
        let cleared = matches!(gate, Gate::Allow { .. } | Gate::Granted { .. });
        let mut events = vec![
            asked,
            Event::GateVerdict {
                call_id: call.id.clone(),
                verdict: gate,
                condition_errors: verdict.condition_errors,
            },
            Event::ApprovalRequested {
                call_id: call.id.clone(),
                approval_id: approval_id.clone(),
                fingerprint: Fingerprint::of_call(&call.name, &call.args, &schema),
                ask,
                requested_at: now,
                expires_at,
                description: request.description.clone().unwrap_or_default(),
                schema: schema.clone(),
            },
        ];
        let started = request.start && cleared;
        if started {
            events.push(Event::ToolStarted {
                call_id: call.id.clone(),
                args: call.args.clone(),
            });
        }
        // A read-only tool has no side effect to make at most once, so the
        // record of its start need not be on disk before the call is made:
        // it is committed without a sync of its own ([`Store::append_deferred`])
        // and is on disk with the store's next sync, soon after. A crash of
        // the process loses nothing; a power cut may lose the record of
        // such a call made in the moment before it. Any other call's start
        // is on disk before the call is made.
        let appended = if started && request.hints.read_only == Some(true) {
            append_events_deferred(store, &mut run, events, now).await
        } else {
            append_events(store, &mut run, events, Vec::new(), now).await
        };
        match appended {
            Ok(()) => {
                let approval = run
                    .state
                    .approval(&approval_id)
                    .expect("the approval was just appended");
                let row = approval_row(&run_id, approval, Some(now));
                let detail = ApprovalDetail::just_made(row, &run.state, now)
                    .expect("the fold has the approval: it was just appended");
                return Ok(RequestedCall {
                    detail,
                    kept: Some(Kept {
                        run,
                        started,
                        finished: false,
                    }),
                });
            }
            Err(StoreError::Conflict { .. }) => {
                fresh = false;
                continue;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(EngineError::Contended {
        run_id,
        attempts: MAX_ATTEMPTS,
    }
    .into())
}

/// What an outside agent says of a call it was cleared to make.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallReport {
    /// It is about to make the call.
    Started,
    /// The call ended so.
    Finished(Outcome),
}

/// A call recorded by [`request_call_kept`].
#[derive(Debug)]
pub struct RequestedCall {
    detail: ApprovalDetail,
    /// The run as the last append of this process left it; `None` once
    /// it may be behind the store.
    kept: Option<Kept>,
}

impl RequestedCall {
    /// The call's approval, as recorded.
    pub fn detail(&self) -> &ApprovalDetail {
        &self.detail
    }

    /// Records in the audit log what `principal`, the agent whose run
    /// holds the call, says of it, as [`report_call`] does. The run is
    /// read back only if someone else wrote to it since (a person deciding
    /// the call, say). The end of a call is appended with
    /// [`Store::append_deferred`]: it shares the sync of the store's next
    /// commit, so that reporting it does not delay the next call; report
    /// it after the call's result was handed on.
    pub async fn report(
        &mut self,
        store: &dyn Store,
        principal: &Principal,
        report: CallReport,
        now: i64,
    ) -> Result<(), RequestError> {
        let row = &self.detail.row;
        let call = Reported {
            approval_id: &row.id,
            run_id: &row.run_id,
            defer_end: true,
        };
        report_in(store, principal, call, &mut self.kept, report, now).await
    }
}

/// A run's fold, with whether its log has the start and the end of the
/// call reported on.
#[derive(Debug)]
struct Kept {
    run: Loaded,
    started: bool,
    finished: bool,
}

impl Kept {
    /// Run `run_id` as stored, for reports on approval `approval_id`.
    async fn load(store: &dyn Store, run_id: &str, approval_id: &str) -> Result<Kept, StoreError> {
        let events = store.load(run_id).await?;
        let run = Loaded::of(run_id, &events);
        let call_id = run
            .state
            .approval(approval_id)
            .map(|approval| approval.call.id.clone());
        // A cleared call is the agent's: its start and end are in the log,
        // not in the fold, which handed the call over.
        let has = |kind: fn(&Event, &str) -> bool| {
            call_id
                .as_deref()
                .is_some_and(|id| events.iter().any(|stored| kind(&stored.event, id)))
        };
        Ok(Kept {
            started: has(
                |event, id| matches!(event, Event::ToolStarted { call_id, .. } if call_id == id),
            ),
            finished: has(
                |event, id| matches!(event, Event::ToolFinished { call_id, .. } if call_id == id),
            ),
            run,
        })
    }
}

/// Records in the audit log what `principal`, the outside agent whose run
/// holds approval `approval_id`, says of that call: that it started, or
/// how it ended. A call must be cleared (approved, edited, or allowed by
/// policy or a grant) to start, and is taken as started when its end is
/// reported first; a second report of either kind is refused.
pub async fn report_call(
    store: &dyn Store,
    principal: &Principal,
    approval_id: &str,
    report: CallReport,
    now: i64,
) -> Result<(), RequestError> {
    let row = store.approval(approval_id).await?;
    let call = Reported {
        approval_id,
        run_id: &row.run_id,
        defer_end: false,
    };
    report_in(store, principal, call, &mut None, report, now).await
}

/// The call a report is on.
struct Reported<'a> {
    approval_id: &'a str,
    run_id: &'a str,
    /// Whether its end may be appended with [`Store::append_deferred`]:
    /// only when the agent is in this process and has handed the call's
    /// result on already; one that reports over the API is told that the
    /// report is stored.
    defer_end: bool,
}

/// Reports on `call`, starting from `kept` (or from the store when it is
/// `None`, or behind); leaves in `kept` the run as the report left it.
async fn report_in(
    store: &dyn Store,
    principal: &Principal,
    call: Reported<'_>,
    kept: &mut Option<Kept>,
    report: CallReport,
    now: i64,
) -> Result<(), RequestError> {
    let Reported {
        approval_id,
        run_id,
        defer_end,
    } = call;
    for _ in 0..MAX_ATTEMPTS {
        let from_kept = kept.is_some();
        let Kept {
            mut run,
            started,
            finished,
        } = match kept.take() {
            Some(kept) => kept,
            None => Kept::load(store, run_id, approval_id).await?,
        };
        let events = match report_events(&run, principal, approval_id, (started, finished), &report)
        {
            Ok(events) => events,
            // What this process kept may be behind the store: a person may
            // have decided the call since.
            Err(_) if from_kept => continue,
            Err(error) => return Err(error),
        };
        let ends = matches!(report, CallReport::Finished(_));
        let appended = if ends && defer_end {
            append_events_deferred(store, &mut run, events, now).await
        } else {
            append_events(store, &mut run, events, Vec::new(), now).await
        };
        match appended {
            Ok(()) => {
                *kept = Some(Kept {
                    run,
                    started: true,
                    finished: finished || ends,
                });
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(EngineError::Contended {
        run_id: run_id.to_owned(),
        attempts: MAX_ATTEMPTS,
    }
    .into())
}

/// The events that record `report` on approval `approval_id` of `run`,
/// whose log has the call's start and end as `(started, finished)` say.
fn report_events(
    run: &Loaded,
    principal: &Principal,
    approval_id: &str,
    (started, finished): (bool, bool),
    report: &CallReport,
) -> Result<Vec<Event>, RequestError> {
    let run_id = &run.run_id;
    check_owner(run, principal)?;
    let Some(approval) = run.state.approval(approval_id) else {
        return Err(RequestError::Invalid(format!(
            "approval {approval_id} is not in the log of run {run_id}"
        )));
    };
    if !matches!(
        approval.status,
        ApprovalStatus::Approved | ApprovalStatus::Edited
    ) {
        return Err(RequestError::Invalid(format!(
            "the call of approval {approval_id} is {}, not cleared to run: nothing to report",
            approval.status
        )));
    }
    let call_id = approval.call.id.as_str();
    let start = Event::ToolStarted {
        call_id: call_id.to_owned(),
        args: approval.args.clone(),
    };
    let events = match report {
        CallReport::Started if started => {
            return Err(RequestError::Invalid(format!(
                "the call of approval {approval_id} was already reported started"
            )));
        }
        CallReport::Started => vec![start],
        CallReport::Finished(_) if finished => {
            return Err(RequestError::Invalid(format!(
                "the call of approval {approval_id} was already reported finished"
            )));
        }
        CallReport::Finished(outcome) => {
            let finish = Event::ToolFinished {
                call_id: call_id.to_owned(),
                outcome: outcome.clone(),
            };
            if started {
                vec![finish]
            } else {
                vec![start, finish]
            }
        }
    };
    Ok(events)
}

/// Withdraws the call of approval `approval_id` for `principal`, the outside
/// agent whose run holds it, when it will not make the call whatever is
/// decided (its client went away, say): a pending approval is cancelled,
/// and the people deciding see why. One that was decided already is left
/// as it is. Returns the approval's row as it then stands.
pub async fn withdraw_call(
    store: &dyn Store,
    principal: &Principal,
    approval_id: &str,
    reason: Option<String>,
    now: i64,
) -> Result<toolgate_core::store::ApprovalRow, RequestError> {
    let row = store.approval(approval_id).await?;
    for _ in 0..MAX_ATTEMPTS {
        let mut run = Loaded::load(store, &row.run_id).await?;
        check_owner(&run, principal)?;
        let pending = run
            .state
            .approval(approval_id)
            .is_some_and(|approval| approval.status == ApprovalStatus::Pending);
        if !pending {
            return Ok(store.approval(approval_id).await?);
        }
        let withdrawn = Event::CallWithdrawn {
            approval_id: approval_id.to_owned(),
            reason: reason.clone(),
        };
        match append_events(store, &mut run, vec![withdrawn], Vec::new(), now).await {
            Ok(()) => return Ok(store.approval(approval_id).await?),
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(EngineError::Contended {
        run_id: row.run_id,
        attempts: MAX_ATTEMPTS,
    }
    .into())
}

/// Refuses an engine run, and another principal's run (unless an admin
/// asks).
fn check_owner(run: &Loaded, principal: &Principal) -> Result<(), RequestError> {
    if !run.state.external {
        return Err(RequestError::NotExternal {
            run_id: run.run_id.clone(),
        });
    }
    let owner = run.state.principal.clone().unwrap_or_default();
    if owner != principal.name && principal.role != Role::Admin {
        return Err(RequestError::Forbidden {
            run_id: run.run_id.clone(),
            owner,
            principal: principal.name.clone(),
        });
    }
    Ok(())
}

fn check_name(what: &str, text: &str) -> Result<(), RequestError> {
    let fine = (1..=MAX_NAME).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(RequestError::Invalid(format!(
            "the {what} {text:?} is not one toolgate accepts: use 1 to {MAX_NAME} letters, digits \
             and `_ - . : /`"
        )))
    }
}

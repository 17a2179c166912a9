//! People's side of a run: deciding approvals, resolving in-doubt calls,
//! and expiring approvals nobody decided in time.
//!
//! Each of these folds the run's log, checks the act against that state,
//! and appends one event at the version it folded. Two acts at once: one
//! append wins, the other folds again and is checked again, so it sees the
//! winner's decision and is refused with it.

use serde_json::{Map, Value};
use toolgate_core::grant::{Grant, GrantRequest, GrantScope};
use toolgate_core::policy::Matcher;
use toolgate_core::run::{ApprovalStatus, Decision, DecisionError, Event, Resolution};
use toolgate_core::store::{ApprovalRow, Store, StoreError, StoredEvent};
use toolgate_core::{Fingerprint, Principal, Role, ToolError, check_args};

use crate::agent::{Loaded, append_events};
use crate::detail::ApprovalDetail;
use crate::rows::approval_row;
use crate::{EngineError, new_id};

/// How often an act that lost a race is tried again.
const MAX_ATTEMPTS: u32 = 20;

/// What a person decides about an approval.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DecisionRequest {
    /// Run the call as shown.
    Approve,
    /// Run the call with these arguments instead.
    Edit(Map<String, Value>),
    /// Do not run it; the message goes back to the model.
    Reject(Option<String>),
}

/// Why a decision, a resolution or an expiry was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// No approval, run or call with that id.
    #[error("there is no {what} `{id}`")]
    NotFound {
        /// `approval`, `run` or `call`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// This principal may not decide it.
    #[error("{principal} may not decide approval {approval_id}: {reason}")]
    Forbidden {
        /// Who tried.
        principal: String,
        /// The approval.
        approval_id: String,
        /// Why not.
        reason: String,
    },
    /// The decision does not fit the approval's state: already decided,
    /// another fingerprint, or the same approver twice.
    #[error(transparent)]
    Decision(#[from] DecisionError),
    /// The edited arguments fail the tool's schema.
    #[error(transparent)]
    InvalidArguments(ToolError),
    /// The grant asked for cannot be made.
    #[error("the grant cannot be made: {0}")]
    InvalidGrant(String),
    /// The call is not in doubt.
    #[error("call {call_id} of run {run_id} is not in doubt; nothing to resolve")]
    NotInDoubt {
        /// The run.
        run_id: String,
        /// The call.
        call_id: String,
    },
    /// The store or the run failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for DecideError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, id } => DecideError::NotFound { what, id },
            other => DecideError::Engine(other.into()),
        }
    }
}

/// Records `principal`'s decision on approval `approval_id`, made on the
/// call with fingerprint `fingerprint`; returns the approval as it stands
/// after it.
///
/// An edit's arguments are checked against the tool's schema first and
/// count as the editor's approval of them. A grant, when given, is made in
/// the same append: later calls it covers run without asking.
///
/// The decision is refused unless the approval is pending (an approval past
/// its time is expired first, then refused), `fingerprint` is the one
/// pending, and `principal` may decide it; a racing decision that wins
/// makes this one fail with the winner's state.
pub async fn decide(
    store: &dyn Store,
    principal: &Principal,
    approval_id: &str,
    fingerprint: &Fingerprint,
    request: DecisionRequest,
    grant: Option<GrantRequest>,
    now: i64,
) -> Result<ApprovalRow, DecideError> {
    let decision = Decide {
        principal,
        approval_id,
        fingerprint: Some(fingerprint),
        request,
        grant,
        now,
    };
    let recorded = decision.record_in_store(store, false).await?;
    Ok(recorded.row(approval_id, now))
}

/// [`decide`], returning the approval with its history (so that a caller
/// showing it needs no second read). Without a fingerprint, the decision
/// is for the call as it stands when the decision is recorded.
pub async fn decide_detailed(
    store: &dyn Store,
    principal: &Principal,
    approval_id: &str,
    fingerprint: Option<&Fingerprint>,
    request: DecisionRequest,
    grant: Option<GrantRequest>,
    now: i64,
) -> Result<ApprovalDetail, DecideError> {
    let decision = Decide {
        principal,
        approval_id,
        fingerprint,
        request,
        grant,
        now,
    };
    let recorded = decision.record_in_store(store, true).await?;
    let row = recorded.row(approval_id, now);
    Ok(ApprovalDetail::of(row, &recorded.log.unwrap_or_default())
        .expect("the log has the approval: it was just decided"))
}

/// A decision to record: [`decide`]'s arguments.
pub(crate) struct Decide<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) approval_id: &'a str,
    pub(crate) fingerprint: Option<&'a Fingerprint>,
    pub(crate) request: DecisionRequest,
    pub(crate) grant: Option<GrantRequest>,
    pub(crate) now: i64,
}

/// What [`Decide::record`] folds first.
pub(crate) enum First {
    /// A fold the caller kept.
    Kept(Loaded),
    /// The run's whole log, as just read.
    Log(Vec<StoredEvent>),
}

/// A decision as recorded.
pub(crate) struct Recorded {
    /// The run as the decision left it.
    pub(crate) run: Loaded,
    /// The run's whole log, decision included, when it was asked for.
    log: Option<Vec<StoredEvent>>,
}

impl Recorded {
    /// The decided approval's row.
    pub(crate) fn row(&self, approval_id: &str, now: i64) -> ApprovalRow {
        let decided = self
            .run
            .state
            .approval(approval_id)
            .expect("the approval was just decided");
        approval_row(&self.run.run_id, decided, Some(now))
    }
}

impl Decide<'_> {
    /// [`Decide::record`] for the run the store says holds the approval,
    /// folded from its whole log.
    pub(crate) async fn record_in_store(
        &self,
        store: &dyn Store,
        with_log: bool,
    ) -> Result<Recorded, DecideError> {
        let (row, events) = store.approval_with_log(self.approval_id).await?;
        self.record(store, &row.run_id, Some(First::Log(events)), with_log)
            .await
    }

    /// Checks the decision against run `run_id` as folded and appends it at
    /// the folded version; folds again from the store and checks again
    /// after losing a race. The first fold is `first` when given: a kept
    /// fold as it is (should it be behind the store, the append conflicts,
    /// and a fold that is behind refuses nothing a fresh one would allow:
    /// approvers, schema and pending fingerprint do not change; decisions
    /// only add up), or the fold of a log just read. Otherwise it is the
    /// fold of the whole log, kept when `with_log`.
    pub(crate) async fn record(
        &self,
        store: &dyn Store,
        run_id: &str,
        mut first: Option<First>,
        with_log: bool,
    ) -> Result<Recorded, DecideError> {
        let Decide {
            principal,
            approval_id,
            now,
            ..
        } = *self;
        for _ in 0..MAX_ATTEMPTS {
            let (mut run, mut log) = match first.take() {
                Some(First::Kept(kept)) => (kept, None),
                Some(First::Log(events)) => {
                    (Loaded::of(run_id, &events), with_log.then_some(events))
                }
                None if with_log => {
                    let events = store.load(run_id).await?;
                    (Loaded::of(run_id, &events), Some(events))
                }
                None => (Loaded::load(store, run_id).await?, None),
            };
            let approval = run
                .state
                .approval(approval_id)
                .ok_or_else(|| DecideError::NotFound {
                    what: "approval",
                    id: approval_id.to_owned(),
                })?
                .clone();
            if approval.status == ApprovalStatus::Pending
                && approval.expires_at.is_some_and(|at| at <= now)
            {
                match expire_due_in(store, &mut run, now).await {
                    Ok(_) => continue,
                    Err(EngineError::Store(StoreError::Conflict { .. })) => continue,
                    Err(error) => return Err(error.into()),
                }
            }
            if !principal.may_decide(&approval.ask.approvers) {
                let reason = if principal.role == Role::Agent {
                    "agents never decide; use an approver's or an admin's token".to_owned()
                } else {
                    format!(
                        "it may be decided by {} only",
                        approval
                            .ask
                            .approvers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(DecideError::Forbidden {
                    principal: principal.name.clone(),
                    approval_id: approval_id.to_owned(),
                    reason,
                });
            }
            let decision = match &self.request {
                DecisionRequest::Approve => Decision::Approve,
                DecisionRequest::Reject(message) => Decision::Reject {
                    message: message.clone(),
                },
                DecisionRequest::Edit(args) => {
                    check_args(&approval.call.name, &approval.schema, args)
                        .map_err(DecideError::InvalidArguments)?;
                    Decision::Edit {
                        args: args.clone(),
                        new_fingerprint: Fingerprint::of_call(
                            &approval.call.name,
                            args,
                            &approval.schema,
                        ),
                    }
                }
            };
            let fingerprint = self.fingerprint.unwrap_or(&approval.fingerprint);
            approval.check_decision(&principal.name, &decision, fingerprint)?;
            let grant = match (&self.grant, &decision) {
                (Some(_), Decision::Reject { .. }) => {
                    return Err(DecideError::InvalidGrant(
                        "a rejection cannot grant anything; approve or edit to grant".to_owned(),
                    ));
                }
                (Some(request), _) => Some(make_grant(
                    request,
                    &approval.call.name,
                    run_id,
                    run.state.thread.as_deref(),
                    principal,
                    approval_id,
                    now,
                )?),
                (None, _) => None,
            };
            let event = Event::DecisionRecorded {
                approval_id: approval_id.to_owned(),
                decision,
                principal: principal.name.clone(),
                fingerprint: fingerprint.clone(),
                grant: grant.clone(),
            };
            let appended = log.as_ref().map(|_| StoredEvent {
                run_id: run_id.to_owned(),
                seq: run.state.version + 1,
                at: now,
                event: event.clone(),
            });
            match append_events(
                store,
                &mut run,
                vec![event],
                grant.into_iter().collect(),
                now,
            )
            .await
            {
                Ok(()) => {
                    if let (Some(log), Some(appended)) = (&mut log, appended) {
                        log.push(appended);
                    }
                    return Ok(Recorded { run, log });
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
}

fn make_grant(
    request: &GrantRequest,
    tool: &str,
    run_id: &str,
    thread: Option<&str>,
    principal: &Principal,
    approval_id: &str,
    now: i64,
) -> Result<Grant, DecideError> {
    let pattern = request.tool.as_deref().unwrap_or(tool);
    Matcher::new(pattern, request.when.as_deref()).map_err(DecideError::InvalidGrant)?;
    let scope = match &request.scope {
        GrantScope::Run { run_id: given } if given.is_empty() => GrantScope::Run {
            run_id: run_id.to_owned(),
        },
        GrantScope::Thread { thread: given } if given.is_empty() => match thread {
            Some(thread) => GrantScope::Thread {
                thread: thread.to_owned(),
            },
            None => {
                return Err(DecideError::InvalidGrant(format!(
                    "run {run_id} belongs to no thread; grant for the run, a time or a number of uses instead"
                )));
            }
        },
        GrantScope::Until { until } if *until <= now => {
            return Err(DecideError::InvalidGrant(
                "its end time has already passed".to_owned(),
            ));
        }
        GrantScope::Uses { uses: 0 } => {
            return Err(DecideError::InvalidGrant(
                "a grant for 0 uses would cover nothing; give at least 1".to_owned(),
            ));
        }
        other => other.clone(),
    };
    Ok(Grant {
        id: new_id(),
        tool: pattern.to_owned(),
        when: request.when.clone(),
        uses_left: match scope {
            GrantScope::Uses { uses } => Some(uses),
            _ => None,
        },
        scope,
        created_by: principal.name.clone(),
        created_at: now,
        approval_id: Some(approval_id.to_owned()),
        revoked: None,
    })
}

/// Records what a person says about an in-doubt call of run `run_id`: run
/// it again, it did run (with this output), or count it as failed.
pub async fn resolve_in_doubt(
    store: &dyn Store,
    principal: &Principal,
    run_id: &str,
    call_id: &str,
    resolution: Resolution,
    now: i64,
) -> Result<(), DecideError> {
    if principal.role == Role::Agent {
        return Err(DecideError::Forbidden {
            principal: principal.name.clone(),
            approval_id: call_id.to_owned(),
            reason: "agents never resolve in-doubt calls".to_owned(),
        });
    }
    for _ in 0..MAX_ATTEMPTS {
        let mut run = Loaded::load(store, run_id).await?;
        let call = run
            .state
            .call(call_id)
            .ok_or_else(|| DecideError::NotInDoubt {
                run_id: run_id.to_owned(),
                call_id: call_id.to_owned(),
            })?;
        if !call.in_doubt {
            return Err(DecideError::NotInDoubt {
                run_id: run_id.to_owned(),
                call_id: call_id.to_owned(),
            });
        }
        let event = Event::InDoubtResolved {
            call_id: call_id.to_owned(),
            resolution: resolution.clone(),
            principal: principal.name.clone(),
        };
        match append_events(store, &mut run, vec![event], Vec::new(), now).await {
            Ok(()) => return Ok(()),
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

/// Expires the pending approvals of a folded run whose time has come;
/// true when it appended anything.
pub(crate) async fn expire_due_in(
    store: &dyn Store,
    run: &mut Loaded,
    now: i64,
) -> Result<bool, EngineError> {
    let events: Vec<Event> = run
        .state
        .pending_approvals()
        .filter(|a| a.expires_at.is_some_and(|at| at <= now))
        .map(|a| Event::ApprovalExpired {
            approval_id: a.id.clone(),
        })
        .collect();
    if events.is_empty() {
        return Ok(false);
    }
    match append_events(store, run, events, Vec::new(), now).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict { .. }) => {
            *run = Loaded::load(store, &run.run_id).await?;
            Ok(true)
        }
        Err(error) => Err(error.into()),
    }
}

/// Expires approval `approval_id` if it is pending past its time (and any
/// other approval of its run that is); returns its row as it then stands.
pub async fn expire_approval(
    store: &dyn Store,
    approval_id: &str,
    now: i64,
) -> Result<ApprovalRow, DecideError> {
    let row = store.approval(approval_id).await?;
    if row.status != ApprovalStatus::Pending || row.expires_at.is_none_or(|at| at > now) {
        return Ok(row);
    }
    let mut run = Loaded::load(store, &row.run_id).await?;
    expire_due_in(store, &mut run, now).await?;
    Ok(store.approval(approval_id).await?)
}

/// Expires every pending approval in the store whose time has come (they
/// are rejected: a timeout fails closed); returns how many.
///
/// It reads only the approvals that are due, however many wait.
pub async fn expire_due(store: &dyn Store, now: i64) -> Result<usize, EngineError> {
    let mut expired = 0;
    loop {
        let due = store.due_approvals(now, 500).await?;
        if due.is_empty() {
            return Ok(expired);
        }
        let mut progressed = false;
        let mut runs: Vec<&str> = due.iter().map(|row| row.run_id.as_str()).collect();
        runs.dedup();
        for run_id in runs {
            let mut run = Loaded::load(store, run_id).await?;
            let count = run
                .state
                .pending_approvals()
                .filter(|a| a.expires_at.is_some_and(|at| at <= now))
                .count();
            if expire_due_in(store, &mut run, now).await? {
                expired += count;
                progressed = true;
            }
        }
        if !progressed {
            // Rows say due, logs say not (the store is inconsistent):
            // stop rather than read the same page for ever.
            return Ok(expired);
        }
    }
}

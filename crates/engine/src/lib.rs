//! toolgate's durable run loop: model turn → gate → (wait) → execute →
//! model turn … → final answer, one committed event at a time.
//!
//! The engine keeps nothing in memory that it has not first written to its
//! [`Store`]: a run is its log of events, and the engine acts on the fold of
//! that log ([`RunState`]). So a run waiting for people can be suspended,
//! the process can exit, and [`Agent::resume`] in any process with the same
//! tools continues exactly where it stopped.
//!
//! The guarantees it keeps:
//!
//! - A tool never runs without an `allow` from policy, a grant, or
//!   approvals bound to its exact fingerprint.
//! - `ToolStarted` is committed before a tool is called and `ToolFinished`
//!   after, so a side effect happens at most once: a call found started but
//!   not finished is re-run only if its tool is idempotent, and otherwise
//!   becomes an in-doubt item for a person ([`resolve_in_doubt`]).
//! - Exactly one of two racing decisions counts ([`decide`]); the other gets
//!   [`DecideError::Decision`] with the winning state.
//! - Unknown tools, arguments that fail the schema and bad decisions never
//!   run anything: the model or the caller is told why.
//!
//! # Example
//!
//! ```no_run
//! # async fn example(
//! #     model: std::sync::Arc<dyn toolgate_core::ChatModel>,
//! #     tools: toolgate_core::Tools,
//! #     store: std::sync::Arc<dyn toolgate_core::store::Store>,
//! # ) -> Result<(), toolgate_engine::EngineError> {
//! use toolgate_core::Policy;
//! use toolgate_engine::{Agent, RunOutcome};
//!
//! let agent = Agent::new(model, tools).policy(Policy::default()).store(store);
//! match agent.run("how many emails did i get in the last 5 days?").await? {
//!     RunOutcome::Completed { answer, .. } => println!("{answer}"),
//!     RunOutcome::Waiting { run_id, .. } => println!("run {run_id} waits for approval"),
//!     RunOutcome::Failed { error, .. } => eprintln!("{error}"),
//! }
//! # Ok(())
//! # }
//! ```

mod agent;
mod decide;
mod detail;
mod external;
mod rows;

use std::sync::Arc;

pub use agent::{Agent, Observer, RunOptions, RunOutcome, Step, Wait};
pub use decide::{
    DecideError, DecisionRequest, decide, decide_detailed, expire_approval, expire_due,
    resolve_in_doubt,
};
pub use detail::{ApprovalDetail, approval_detail};
pub use external::{
    CallReport, CallRequest, NewApprovalId, RequestError, RequestedCall, report_call, request_call,
    request_call_kept, withdraw_call,
};

use toolgate_core::store::StoreError;
use toolgate_core::{ModelError, ToolError};

/// Reads the time, as Unix milliseconds. Tests set their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| toolgate_core::time::to_millis(std::time::SystemTime::now()))
}

/// A new id: a UUIDv7, so ids sort by creation time.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Why the engine could not drive a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No store was given.
    #[error("the agent has no store: call `.store(…)` with a SQLite or PostgreSQL store")]
    NoStore,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model failed; the run is unchanged and can be resumed.
    #[error("the model gave no answer; resume the run to try again: {0}")]
    Model(#[from] ModelError),
    /// The run names a tool this process does not have.
    #[error(
        "run {run_id} needs tool `{tool}`, which this process does not have; resume it where that tool is available"
    )]
    MissingTool {
        /// The run.
        run_id: String,
        /// The tool.
        tool: String,
    },
    /// A tool set could not be built.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The run asked the model for as many answers as it may.
    #[error(
        "run {run_id} reached its limit of {turns} model answers; resume it with a higher limit to go on"
    )]
    TurnLimit {
        /// The run.
        run_id: String,
        /// The limit.
        turns: u32,
    },
    /// The run belongs to an outside agent that asks over the API: it has
    /// no model or tools here to drive.
    #[error(
        "run {run_id} is driven by an outside agent through toolgate's API; it cannot be resumed here (decide its approvals instead)"
    )]
    External {
        /// The run.
        run_id: String,
    },
    /// Another process drives the run now.
    #[error(
        "run {run_id} is being driven by {owner} (its lease runs until {}); let it finish, or try again once it stops",
        toolgate_core::time::format_millis(*until)
    )]
    Busy {
        /// The run.
        run_id: String,
        /// Who drives it.
        owner: String,
        /// Until when its lease lasts (Unix milliseconds).
        until: i64,
    },
    /// This process lost its lease on the run (it could not renew it in
    /// time), so it stopped: another process may be driving it now.
    #[error(
        "this process lost its lease on run {run_id} (it could not renew it in time) and stopped driving it; another process may have taken it over"
    )]
    LeaseLost {
        /// The run.
        run_id: String,
    },
    /// [`Agent::work`] needs a lease to claim runs with.
    #[error("a worker needs a lease: give the agent `.lease(owner, ttl)` first")]
    NoLease,
    /// The run was changed by others faster than this process could act.
    #[error("run {run_id} kept changing under this process ({attempts} attempts); try again")]
    Contended {
        /// The run.
        run_id: String,
        /// How many times it tried.
        attempts: u32,
    },
}

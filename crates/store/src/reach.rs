//! Which runs a grant's scope reaches, as both stores keep it: a gate reads
//! the live grants that may cover its call, not every run's.
//!
//! Each grant row has a `reach`: empty for a scope that reaches every run
//! (for a time, for a number of uses), `run:ID` for one run's, `thread:NAME`
//! for one thread's. A gate for run R of thread T reads the live grants
//! whose `reach` is one of `""`, `run:R` and `thread:T`, through an index
//! that starts with `reach`.

use toolgate_core::grant::GrantScope;
use toolgate_core::store::GrantReach;

/// The `reach` of a grant of `scope`.
pub(crate) fn key(scope: &GrantScope) -> String {
    match scope {
        GrantScope::Run { run_id } => format!("run:{run_id}"),
        GrantScope::Thread { thread } => format!("thread:{thread}"),
        GrantScope::Until { .. } | GrantScope::Uses { .. } => String::new(),
    }
}

/// The `reach` values of the grants that may cover calls of `reach`'s run.
pub(crate) fn keys(reach: &GrantReach) -> Vec<String> {
    let mut keys = vec![String::new()];
    if let Some(run_id) = &reach.run_id {
        keys.push(key(&GrantScope::Run {
            run_id: run_id.clone(),
        }));
    }
    if let Some(thread) = &reach.thread {
        keys.push(key(&GrantScope::Thread {
            thread: thread.clone(),
        }));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reaches_its_own_grants_its_threads_and_everyones() {
        let reach = GrantReach {
            run_id: Some("run-1".to_owned()),
            thread: Some("t:1".to_owned()),
        };
        assert_eq!(keys(&reach), ["", "run:run-1", "thread:t:1"]);
        assert_eq!(keys(&GrantReach::default()), [""]);
        // A thread named like a run's key is still a thread.
        assert_ne!(
            key(&GrantScope::Thread {
                thread: "run:x".to_owned()
            }),
            key(&GrantScope::Run {
                run_id: "x".to_owned()
            })
        );
        assert_eq!(key(&GrantScope::Uses { uses: 3 }), "");
        assert_eq!(key(&GrantScope::Until { until: 5 }), "");
    }
}

//! Waiting for a phase's tasks, with a deadline so that a stuck session
//! fails the run instead of hanging it.

use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::shared::Shared;

/// Waits for every task of `set`, at most until `deadline`; the rest are
/// aborted and reported as a failure of `what`.
pub async fn collect<T: 'static>(
    set: &mut JoinSet<T>,
    deadline: Instant,
    shared: &Shared,
    what: &str,
) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    loop {
        match timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(value))) => out.push(value),
            Ok(Some(Err(error))) => shared.error(format!("{what}: task failed: {error}")),
            Ok(None) => return out,
            Err(_) => {
                let left = set.len();
                shared.fail(format!("{what} timed out with {left} tasks unfinished"));
                set.abort_all();
                return out;
            }
        }
    }
}

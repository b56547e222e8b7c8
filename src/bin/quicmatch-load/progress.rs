//! The progress line on stderr, so that a long run shows it is alive.

use std::sync::Arc;
use std::time::Duration;

use crate::shared::{Counters, Shared};

/// Prints a progress line on stderr every two seconds, until aborted.
pub async fn progress(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    interval.tick().await;
    loop {
        interval.tick().await;
        let c = &shared.counters;
        let phase = shared.phase();
        eprintln!(
            "quicmatch-load: [{:.0}s] {phase}: connected {}, matched {}, delivered {}, matches {}, lost {}, misrouted {}, errors {}",
            shared.epoch.elapsed().as_secs_f64(),
            Counters::get(&c.connected),
            Counters::get(&c.matched),
            Counters::get(&c.delivered),
            Counters::get(&c.matches),
            Counters::get(&c.lost),
            Counters::get(&c.misrouted),
            Counters::get(&c.errors),
        );
    }
}

//! The last hour of the figures the live dashboard (`GET /dashboard`) draws,
//! served as JSON on `GET /api/history`.
//!
//! Every [`INTERVAL`] the sampler renders the Prometheus page (the same
//! numbers `/metrics` gives) and keeps the series the dashboard needs:
//! sessions and queues, and the running totals of matches, errors, closes
//! and the wait and relay histograms' buckets. The page turns totals into
//! rates and percentiles between samples. One hour is [`SAMPLES`] samples of
//! a few dozen numbers: a few hundred KiB at most, whatever the load.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const SAMPLES: usize = 360;

/// The series kept, by metric name (with any labels and, for histograms,
/// every bucket).
const KEPT: [&str; 10] = [
    "quicmatch_sessions",
    "quicmatch_waiting",
    "quicmatch_pool_sessions",
    "quicmatch_pool_waiting",
    "quicmatch_matches_total",
    "quicmatch_errors_total",
    "quicmatch_closes_total",
    "quicmatch_match_wait_seconds_bucket",
    "quicmatch_relay_seconds_bucket",
    "quicmatch_rate_limited_total",
];

/// One sample: when, and each kept series' value.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix time, milliseconds.
    pub t: u64,
    /// Series (name with labels, as on `/metrics`) to value.
    pub v: BTreeMap<String, f64>,
}

/// What `/api/history` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// Seconds between samples.
    pub interval_secs: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// The samples of the last hour, shared by the sampler and the sidecar.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    samples: Arc<Mutex<VecDeque<Sample>>>,
}

impl Recorder {
    /// The last hour, oldest first, and `now` (a sample of this moment,
    /// not kept) as the last one, so the page's latest point is live.
    pub fn history(&self, now: Option<&str>) -> History {
        let mut samples: Vec<Sample> = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        if let Some(page) = now {
            samples.push(Sample {
                t: unix_ms(),
                v: kept_series(page),
            });
        }
        History {
            interval_secs: INTERVAL.as_secs(),
            samples,
        }
    }

    /// Takes one sample of `page` (Prometheus text) at `t` (Unix ms).
    pub fn record(&self, t: u64, page: &str) {
        let sample = Sample {
            t,
            v: kept_series(page),
        };
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Samples `hub`'s metrics now and every [`INTERVAL`] until `shutdown`.
    pub async fn run(self, handle: PrometheusHandle, hub: Arc<Hub>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let page = crate::metrics::render(&handle, &hub);
            self.record(unix_ms(), &page);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The kept series of a Prometheus text page: `name{labels} value` lines
/// whose name is one of [`KEPT`].
fn kept_series(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            if !KEPT.contains(&name) {
                return None;
            }
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_dashboards_series() {
        let page = "# HELP quicmatch_sessions Sessions.\n\
                    # TYPE quicmatch_sessions gauge\n\
                    quicmatch_sessions 3\n\
                    quicmatch_waiting{gender=\"male\"} 1\n\
                    quicmatch_relay_seconds_bucket{le=\"0.00001\"} 7\n\
                    quicmatch_relay_seconds_sum 0.5\n\
                    process_open_fds 12\n";
        let kept = kept_series(page);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept["quicmatch_sessions"], 3.0);
        assert_eq!(kept["quicmatch_waiting{gender=\"male\"}"], 1.0);
        assert_eq!(kept["quicmatch_relay_seconds_bucket{le=\"0.00001\"}"], 7.0);
    }

    #[test]
    fn keeps_one_hour() {
        let recorder = Recorder::default();
        for t in 0..(SAMPLES as u64 + 5) {
            recorder.record(t, "quicmatch_sessions 1\n");
        }
        let history = recorder.history(None);
        assert_eq!(history.samples.len(), SAMPLES);
        assert_eq!(history.samples[0].t, 5);
        assert_eq!(history.interval_secs, 10);
        let live = recorder.history(Some("quicmatch_sessions 4\n"));
        assert_eq!(live.samples.len(), SAMPLES + 1);
        assert_eq!(live.samples[SAMPLES].v["quicmatch_sessions"], 4.0);
    }
}

//! Prometheus metrics. Counters and histograms are recorded where things happen;
//! gauges that describe the database are read at scrape time. The series labelled
//! by trigger are kept by each engine ([`DeliveryCounts`]), not in the recorder,
//! which cannot forget a series: a deleted trigger's would stay until the process
//! ends, and a project creating and deleting triggers would grow every node's
//! memory without bound.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS_QUEUED: &str = "herald_events_queued_total";
pub const QUEUE_REFUSED: &str = "herald_queue_refused_total";
pub const DELIVERIES: &str = "herald_deliveries_total";
pub const ATTEMPT_SECONDS: &str = "herald_attempt_duration_seconds";
pub const LAG_SECONDS: &str = "herald_delivery_lag_seconds";
pub const DUE_UNCLAIMED: &str = "herald_due_unclaimed";
pub const IN_FLIGHT: &str = "herald_deliveries_in_flight";
pub const DB_POOL: &str = "herald_db_pool_connections";
pub const CIRCUIT_OPEN: &str = "herald_trigger_circuit_open";

/// How often the recorder folds its histograms' samples into their buckets. It
/// keeps every sample until then, so this bounds its memory whether or not
/// anything scrapes `/metrics`.
pub const UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ATTEMPT_SECONDS.into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(LAG_SECONDS.into()), &seconds))
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Tests start several engines in one process; only the first install wins,
        // and every engine records into it.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
                // The drained sample blocks are freed through crossbeam's epochs,
                // deferred in this thread's bag; hand them over to be freed now
                // rather than when the bag fills, dozens of passes later.
                crossbeam_epoch::pin().flush();
            })
            .expect("cannot start the metrics upkeep thread");
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_QUEUED, "Events stored by the queue API, by project.");
    describe_counter!(QUEUE_REFUSED, "Queue calls refused with 503 because too many were already waiting.");
    describe_histogram!(ATTEMPT_SECONDS, Unit::Seconds, "Duration of one HTTP attempt.");
    describe_histogram!(LAG_SECONDS, Unit::Seconds, "From when an event log was due to its successful delivery.");
    describe_gauge!(DUE_UNCLAIMED, "Event logs that are due and not yet claimed by any node (counted up to 100,000).");
    describe_gauge!(IN_FLIGHT, "Deliveries running on this node.");
    describe_gauge!(DB_POOL, "Database connections of this node, by state (active, idle, max).");
}

/// How a delivery attempt ended, as `herald_deliveries_total` counts it; the
/// discriminant is its place in a trigger's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Processed = 0,
    Retry = 1,
    Failed = 2,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Processed, Outcome::Retry, Outcome::Failed];

    /// The `outcome` label.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
        }
    }
}

/// The attempts a node made, per project, then trigger name, then [`Outcome`].
/// Each engine keeps its own, as it keeps its database.
#[derive(Default)]
pub struct DeliveryCounts(Mutex<HashMap<String, HashMap<String, [u64; 3]>>>);

impl DeliveryCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, [u64; 3]>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one delivery attempt of a trigger.
    pub fn count(&self, project: &str, trigger: &str, outcome: Outcome) {
        let mut counts = self.lock();
        let by_trigger = match counts.get_mut(project) {
            Some(m) => m,
            None => counts.entry(project.to_owned()).or_default(),
        };
        let n = match by_trigger.get_mut(trigger) {
            Some(n) => n,
            None => by_trigger.entry(trigger.to_owned()).or_default(),
        };
        n[outcome as usize] += 1;
    }

    /// Forgets the counts of triggers that no longer exist; `triggers` is every
    /// (project, trigger name, circuit open) there is. Run at each scrape and each
    /// minute.
    pub fn forget_deleted_triggers(&self, triggers: &[(String, String, bool)]) {
        let mut exists: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
        for (project, trigger, _) in triggers {
            exists.entry(project).or_default().insert(trigger);
        }
        self.lock().retain(|project, by_trigger| {
            by_trigger.retain(|trigger, _| exists.get(project.as_str()).is_some_and(|t| t.contains(trigger.as_str())));
            !by_trigger.is_empty()
        });
    }

    /// The series labelled by trigger, in Prometheus text format, for the
    /// triggers that exist now: the attempts counted here, and the circuit gauge.
    /// Without the list (the database did not answer), the attempts of every
    /// trigger counted so far, and no circuit gauge.
    pub fn render(&self, triggers: Option<&[(String, String, bool)]>) -> String {
        if let Some(triggers) = triggers {
            self.forget_deleted_triggers(triggers);
        }
        let mut out = format!(
            "# HELP {DELIVERIES} Delivery attempts by project, trigger and outcome (processed, retry, failed).\n\
             # TYPE {DELIVERIES} counter\n"
        );
        {
            let counts = self.lock();
            let mut series: Vec<(&String, &String, &[u64; 3])> =
                counts.iter().flat_map(|(p, by)| by.iter().map(move |(t, n)| (p, t, n))).collect();
            series.sort();
            for (project, trigger, n) in series {
                for outcome in Outcome::ALL {
                    if n[outcome as usize] > 0 {
                        push_series(&mut out, DELIVERIES, project, trigger, Some(outcome), n[outcome as usize]);
                    }
                }
            }
        }
        let Some(triggers) = triggers else {
            out.push('\n');
            return out;
        };
        out.push_str(&format!(
            "\n# HELP {CIRCUIT_OPEN} 1 while the trigger's circuit is open (its deliveries wait; SPEC §10), else 0.\n\
             # TYPE {CIRCUIT_OPEN} gauge\n"
        ));
        for (project, trigger, open) in triggers {
            push_series(&mut out, CIRCUIT_OPEN, project, trigger, None, u64::from(*open));
        }
        out.push('\n');
        out
    }
}

/// One line of a series labelled by project and trigger (and outcome), the label
/// values escaped for the Prometheus text format.
fn push_series(out: &mut String, metric: &str, project: &str, trigger: &str, outcome: Option<Outcome>, value: u64) {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let outcome = outcome.map(|o| format!(",outcome=\"{}\"", o.name())).unwrap_or_default();
    out.push_str(&format!("{metric}{{project=\"{}\",trigger=\"{}\"{outcome}}} {value}\n", escape(project), escape(trigger)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_series_escape_their_labels_and_go_with_their_trigger() {
        let counts = DeliveryCounts::default();
        counts.count("p", "a\"b\\c\nd", Outcome::Failed);
        let text = counts.render(Some(&[("p".into(), "a\"b\\c\nd".into(), true), ("p".into(), "x".into(), false)]));
        assert!(text.contains(r#"herald_trigger_circuit_open{project="p",trigger="a\"b\\c\nd"} 1"#), "{text}");
        assert!(text.contains(r#"herald_deliveries_total{project="p",trigger="a\"b\\c\nd",outcome="failed"} 1"#), "{text}");
        assert!(text.contains(r#"herald_trigger_circuit_open{project="p",trigger="x"} 0"#), "{text}");
        assert!(text.contains("# TYPE herald_trigger_circuit_open gauge"), "{text}");
    }

    #[test]
    fn a_deleted_triggers_attempts_are_forgotten() {
        let counts = DeliveryCounts::default();
        let trigger = |p: &str, t: &str| (p.to_string(), t.to_string(), false);
        counts.count("p", "kept", Outcome::Processed);
        counts.count("p", "kept", Outcome::Processed);
        counts.count("p", "kept", Outcome::Failed);
        counts.count("p", "deleted", Outcome::Retry);
        counts.count("gone", "t", Outcome::Retry);
        let text = counts.render(Some(&[trigger("p", "kept"), trigger("p", "deleted")]));
        assert!(text.contains(r#"herald_deliveries_total{project="p",trigger="kept",outcome="processed"} 2"#), "{text}");
        assert!(text.contains(r#"herald_deliveries_total{project="p",trigger="kept",outcome="failed"} 1"#), "{text}");
        assert!(!text.contains(r#"trigger="kept",outcome="retry""#), "{text}");
        assert!(text.contains(r#"herald_deliveries_total{project="p",trigger="deleted",outcome="retry"} 1"#), "{text}");
        // The project `gone` and its trigger are gone: so are their counts.
        assert!(!text.contains("gone"), "{text}");
        assert!(!counts.lock().contains_key("gone"));

        counts.forget_deleted_triggers(&[trigger("p", "kept")]);
        assert!(!counts.lock()["p"].contains_key("deleted"));
        // Counting goes on where it was for the triggers that remain.
        counts.count("p", "kept", Outcome::Processed);
        assert_eq!(counts.lock()["p"]["kept"], [3, 0, 1]);
        // Without the list of triggers, every count is shown and none forgotten.
        let text = counts.render(None);
        assert!(text.contains(r#"herald_deliveries_total{project="p",trigger="kept",outcome="processed"} 3"#), "{text}");
        assert!(!text.contains("herald_trigger_circuit_open"), "{text}");
    }
}

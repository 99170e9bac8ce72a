//! Prometheus metrics. Counters and histograms are recorded where things happen;
//! gauges that describe the database are read at scrape time.

use std::sync::OnceLock;
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
    describe_counter!(DELIVERIES, "Delivery attempts by project, trigger and outcome (processed, retry, failed).");
    describe_histogram!(ATTEMPT_SECONDS, Unit::Seconds, "Duration of one HTTP attempt.");
    describe_histogram!(LAG_SECONDS, Unit::Seconds, "From when an event log was due to its successful delivery.");
    describe_gauge!(DUE_UNCLAIMED, "Event logs that are due and not yet claimed by any node (counted up to 100,000).");
    describe_gauge!(IN_FLIGHT, "Deliveries running on this node.");
    describe_gauge!(DB_POOL, "Database connections of this node, by state (active, idle, max).");
}

/// The circuit gauge, one series per trigger that exists now, in Prometheus text
/// format. It is written from the database at each scrape rather than kept in the
/// recorder, where a deleted trigger's series would keep its last value (an open
/// circuit, 1) until the process ends.
pub fn render_circuits(circuits: &[(String, String, bool)]) -> String {
    let mut out = format!(
        "# HELP {CIRCUIT_OPEN} 1 while the trigger's circuit is open (its deliveries wait; SPEC §10), else 0.\n\
         # TYPE {CIRCUIT_OPEN} gauge\n"
    );
    for (project, trigger, open) in circuits {
        out.push_str(&format!(
            "{CIRCUIT_OPEN}{{project=\"{}\",trigger=\"{}\"}} {}\n",
            label_value(project),
            label_value(trigger),
            u8::from(*open)
        ));
    }
    out.push('\n');
    out
}

/// A label value escaped for the Prometheus text format.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_series_escape_their_labels() {
        let text = render_circuits(&[("p".into(), "a\"b\\c\nd".into(), true), ("p".into(), "x".into(), false)]);
        assert!(text.contains(r#"herald_trigger_circuit_open{project="p",trigger="a\"b\\c\nd"} 1"#), "{text}");
        assert!(text.contains(r#"herald_trigger_circuit_open{project="p",trigger="x"} 0"#), "{text}");
        assert!(text.starts_with("# HELP herald_trigger_circuit_open "), "{text}");
    }
}

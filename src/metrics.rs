//! The Prometheus exporter. Names follow `fjord_<area>_<what>_<unit>`;
//! every `_seconds` metric is a histogram with the buckets below.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Serves `/metrics` on `listen` for the rest of the process.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| e.to_string())?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "fjord_raft_term",
        "Current Raft term of the metadata quorum"
    );
    describe_gauge!(
        "fjord_raft_commit_index",
        "Highest metadata log index known committed"
    );
    describe_gauge!(
        "fjord_raft_applied_index",
        "Highest metadata log index applied to the image"
    );
    describe_gauge!(
        "fjord_raft_last_log_index",
        "Last index in this node's metadata log"
    );
    describe_gauge!(
        "fjord_raft_is_leader",
        "1 if this node is the active controller"
    );
    describe_gauge!(
        "fjord_raft_leader_id",
        "Node id of the active controller, -1 if unknown"
    );
    describe_gauge!(
        "fjord_raft_snapshot_index",
        "Log index covered by the last metadata snapshot"
    );
    describe_counter!(
        "fjord_raft_leader_changes_total",
        "Times this node saw a new quorum leader"
    );
    describe_counter!(
        "fjord_raft_snapshots_built_total",
        "Metadata snapshots built"
    );
    describe_counter!(
        "fjord_raft_snapshots_installed_total",
        "Metadata snapshots installed from the leader"
    );
    describe_histogram!(
        "fjord_raft_append_to_commit_seconds",
        Unit::Seconds,
        "Time from proposing a metadata entry to its commit and apply"
    );
    describe_gauge!(
        "fjord_controller_brokers_registered",
        "Brokers registered in the metadata image"
    );
    describe_gauge!(
        "fjord_controller_brokers_fenced",
        "Registered brokers that are fenced"
    );
    describe_gauge!(
        "fjord_controller_offline_partitions",
        "Partitions without a leader (no live in-sync replica); active controller only"
    );
    describe_gauge!(
        "fjord_controller_under_replicated_partitions",
        "Partitions whose ISR is smaller than their replica set; active controller only"
    );
    describe_counter!(
        "fjord_controller_leader_elections_total",
        "Partition leader changes this node wrote as active controller (fence, shutdown, preferred, recovery)"
    );
    describe_counter!(
        "fjord_controller_isr_changes_total",
        "Partition ISR changes this node wrote as active controller (AlterPartition and broker changes)"
    );
    describe_counter!(
        "fjord_broker_heartbeats_total",
        "Heartbeats this broker sent and the controller accepted"
    );
    describe_counter!(
        "fjord_broker_heartbeat_failures_total",
        "Heartbeats or registrations that failed"
    );
    describe_counter!(
        "fjord_log_appended_records_total",
        "Records appended to partitions this broker leads"
    );
    describe_counter!(
        "fjord_log_appended_bytes_total",
        Unit::Bytes,
        "Record batch bytes appended to partitions this broker leads"
    );
    describe_counter!(
        "fjord_fetch_bytes_total",
        Unit::Bytes,
        "Record batch bytes returned to Fetch requests"
    );
    describe_counter!(
        "fjord_produce_partition_errors_total",
        "Produce partitions answered with an error, by Kafka error"
    );
    describe_histogram!(
        "fjord_log_append_seconds",
        Unit::Seconds,
        "Time to append one partition's batches (write, index, flush if due)"
    );
    describe_histogram!(
        "fjord_log_flush_seconds",
        Unit::Seconds,
        "Time to fdatasync a partition's unflushed segments"
    );
    describe_counter!("fjord_log_segments_rolled_total", "Segments rolled");
    describe_counter!(
        "fjord_log_segments_deleted_total",
        "Segments deleted by retention or DeleteRecords"
    );
    describe_counter!(
        "fjord_log_recovery_truncations_total",
        "Torn or corrupt segment tails cut at start-up"
    );
    describe_gauge!("fjord_partition_leaders", "Partitions this broker leads");
    describe_gauge!(
        "fjord_partition_replicas",
        "Partition logs this broker holds"
    );
    describe_gauge!(
        "fjord_partition_under_replicated",
        "Partitions this broker leads whose ISR is smaller than their replicas"
    );
    describe_counter!(
        "fjord_partition_isr_shrinks_total",
        "ISR shrinks this broker's partitions had accepted"
    );
    describe_counter!(
        "fjord_partition_isr_expands_total",
        "ISR expansions this broker's partitions had accepted"
    );
    describe_gauge!(
        "fjord_replica_lag_records",
        "Largest follower lag behind this leader's log end, in records"
    );
    describe_gauge!(
        "fjord_replica_lag_seconds",
        Unit::Seconds,
        "Longest time a follower of this leader has not been caught up"
    );
    describe_gauge!(
        "fjord_replica_follower_lag_records",
        "This follower's distance to its leader's high watermark"
    );
    describe_gauge!(
        "fjord_replica_fetchers",
        "Replica fetcher tasks (one per leader followed)"
    );
    describe_counter!(
        "fjord_replica_fetch_requests_total",
        "Fetches sent to leaders as a follower"
    );
    describe_counter!(
        "fjord_replica_fetch_errors_total",
        "Follower fetches that failed"
    );
    describe_counter!(
        "fjord_replica_fetched_bytes_total",
        Unit::Bytes,
        "Batch bytes a follower appended from its leaders"
    );
    describe_counter!(
        "fjord_log_truncations_total",
        "Follower logs truncated to a divergence point"
    );
    describe_gauge!(
        "fjord_produce_waiting_for_isr",
        "acks=all produce partitions waiting for the ISR"
    );
    describe_histogram!(
        "fjord_produce_isr_wait_seconds",
        Unit::Seconds,
        "Time acks=all produce partitions waited for the ISR"
    );
    describe_gauge!(
        "fjord_groups",
        "Consumer groups this broker coordinates, by state"
    );
    describe_counter!(
        "fjord_group_rebalances_total",
        "Rebalances started by groups this broker coordinates"
    );
    describe_counter!(
        "fjord_group_commits_total",
        "OffsetCommit requests written through the metadata log"
    );
    describe_histogram!(
        "fjord_group_commit_seconds",
        Unit::Seconds,
        "Time from an offset commit's validation until the quorum had it"
    );
    describe_histogram!(
        "fjord_group_commit_batch_records",
        "Offset records per metadata log entry the committer proposed"
    );
    describe_gauge!(
        "fjord_group_lag",
        "High watermark minus committed offset, per group, topic and partition (coordinator's groups, partitions this broker leads)"
    );
    describe_counter!(
        "fjord_produce_duplicates_total",
        "Idempotent producers' retried batches answered with their original offsets"
    );
    describe_counter!(
        "fjord_producer_ids_issued_total",
        "Producer ids this broker handed out (InitProducerId)"
    );
    describe_counter!(
        "fjord_producer_id_blocks_total",
        "Producer id blocks this broker got from the active controller"
    );
    describe_kafka_and_process();
}

/// The Kafka listener's metrics, the per-topic traffic counters, the
/// dashboard's gauges (voter lag, partition size) and the standard process
/// collector (`crate::process_metrics`).
fn describe_kafka_and_process() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "fjord_kafka_requests_total",
        "Kafka requests served, by API"
    );
    describe_counter!(
        "fjord_kafka_request_errors_total",
        "Kafka requests that failed or were refused, by API"
    );
    describe_counter!(
        "fjord_kafka_malformed_requests_total",
        "Kafka frames that could not be decoded (the connection is closed)"
    );
    describe_histogram!(
        "fjord_kafka_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's decode to its response, by API"
    );
    describe_gauge!("fjord_kafka_connections", "Open Kafka client connections");
    describe_counter!(
        "fjord_topic_bytes_in_total",
        Unit::Bytes,
        "Record batch bytes clients produced to partitions this broker leads (idempotent retries once), by topic"
    );
    describe_counter!(
        "fjord_topic_records_in_total",
        "Records clients produced to partitions this broker leads (idempotent retries once), by topic"
    );
    describe_counter!(
        "fjord_topic_bytes_out_total",
        Unit::Bytes,
        "Record batch bytes served to consumers (not to followers), by topic"
    );
    describe_counter!(
        "fjord_topic_records_out_total",
        "Records served to consumers (not to followers), by topic"
    );
    describe_gauge!(
        "fjord_raft_voter_lag_entries",
        "Metadata log entries each voter is behind the leader's log end; active controller only"
    );
    describe_gauge!(
        "fjord_log_size_bytes",
        Unit::Bytes,
        "Segment bytes of each partition log this broker holds"
    );
    describe_counter!(
        "process_cpu_seconds_total",
        Unit::Seconds,
        "User and system CPU time of the process, in whole seconds"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory size of the process"
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        Unit::Bytes,
        "Virtual memory size of the process"
    );
    describe_gauge!("process_open_fds", "Open file descriptors of the process");
    describe_gauge!(
        "process_max_fds",
        "Soft limit on open file descriptors of the process"
    );
    describe_gauge!(
        "process_start_time_seconds",
        Unit::Seconds,
        "Start time of the process since the Unix epoch"
    );
}

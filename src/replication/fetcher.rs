//! Followers replicate by fetching from their leader, exactly as Kafka's
//! `ReplicaFetcherThread`: one task per leader broker, one Fetch request for
//! all partitions it leads here, carrying this broker's id as `replica_id`,
//! each partition's log end as the fetch offset and its latest leader epoch
//! as `last_fetched_epoch` (KIP-595-style truncation): when the leader
//! answers with a diverging epoch, the follower truncates to the point where
//! the two logs agree before it fetches on. This replaces the separate
//! OffsetForLeaderEpoch round trip Kafka's followers made before 2.7; the
//! leader still serves OffsetForLeaderEpoch for clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::client::KafkaClient;
use crate::storage::PartitionLog;

/// Fetch v14: topic ids, and `replica_id` still a plain field.
const FETCH_VERSION: i16 = 14;
const MAX_WAIT: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF: Duration = Duration::from_millis(200);
const PARTITION_MAX_BYTES: i32 = 1 << 20;
const MAX_BYTES: i32 = 16 << 20;

/// One partition this broker follows.
#[derive(Clone)]
pub struct FollowerAssignment {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub log: Arc<PartitionLog>,
}

type Assignments = Arc<HashMap<(Uuid, i32), FollowerAssignment>>;

struct FetcherHandle {
    endpoint: String,
    assignments: watch::Sender<Assignments>,
    task: JoinHandle<()>,
}

/// The fetcher tasks of this broker, one per leader it follows.
pub struct FetcherManager {
    node_id: i32,
    fetchers: Mutex<HashMap<i32, FetcherHandle>>,
}

impl FetcherManager {
    pub fn new(node_id: i32) -> FetcherManager {
        FetcherManager {
            node_id,
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the fetchers follow exactly `assignments`; `endpoints` maps
    /// leader ids to `host:port`. Must run inside a tokio runtime.
    pub fn update(&self, assignments: Vec<FollowerAssignment>, endpoints: &HashMap<i32, String>) {
        let mut by_leader: HashMap<i32, HashMap<(Uuid, i32), FollowerAssignment>> = HashMap::new();
        for a in assignments {
            if endpoints.contains_key(&a.leader) {
                by_leader
                    .entry(a.leader)
                    .or_default()
                    .insert((a.topic_id, a.partition), a);
            }
        }
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|e| e.into_inner());
        fetchers.retain(|leader, handle| {
            let keep = by_leader.contains_key(leader)
                && endpoints.get(leader) == Some(&handle.endpoint)
                && !handle.task.is_finished();
            if !keep {
                handle.task.abort();
            }
            keep
        });
        for (leader, partitions) in by_leader {
            let partitions = Arc::new(partitions);
            if let Some(handle) = fetchers.get(&leader) {
                handle.assignments.send_replace(partitions);
                continue;
            }
            let Some(endpoint) = endpoints.get(&leader).cloned() else {
                continue;
            };
            let (tx, rx) = watch::channel(partitions);
            let task = tokio::spawn(run_fetcher(self.node_id, leader, endpoint.clone(), rx));
            fetchers.insert(
                leader,
                FetcherHandle {
                    endpoint,
                    assignments: tx,
                    task,
                },
            );
        }
        metrics::gauge!("fjord_replica_fetchers").set(fetchers.len() as f64);
    }

    /// Stops every fetcher.
    pub fn shutdown(&self) {
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, handle) in fetchers.drain() {
            handle.task.abort();
        }
    }
}

async fn run_fetcher(
    node_id: i32,
    leader: i32,
    endpoint: String,
    mut assignments: watch::Receiver<Assignments>,
) {
    let mut client: Option<KafkaClient> = None;
    // Partitions the leader refused, and until when to leave them out.
    let mut held: HashMap<(Uuid, i32), Instant> = HashMap::new();
    loop {
        let current = assignments.borrow_and_update().clone();
        if current.is_empty() {
            if assignments.changed().await.is_err() {
                return;
            }
            continue;
        }
        let now = Instant::now();
        held.retain(|_, until| *until > now);
        let fetchable: Vec<&FollowerAssignment> = current
            .values()
            .filter(|a| !held.contains_key(&(a.topic_id, a.partition)))
            .collect();
        if fetchable.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(BACKOFF) => {}
                r = assignments.changed() => if r.is_err() { return },
            }
            continue;
        }
        let connection = match client.as_mut() {
            Some(c) => c,
            None => match KafkaClient::connect(&endpoint, REQUEST_TIMEOUT).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    tracing::debug!(leader, %endpoint, "replica fetcher cannot connect: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(BACKOFF) => {}
                        r = assignments.changed() => if r.is_err() { return },
                    }
                    continue;
                }
            },
        };
        let request = fetch_request(node_id, &fetchable);
        let response = match connection.send(request, FETCH_VERSION).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, %endpoint, "replica fetch failed: {e}");
                metrics::counter!("fjord_replica_fetch_errors_total").increment(1);
                client = None;
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        metrics::counter!("fjord_replica_fetch_requests_total").increment(1);
        if response.error_code != 0 {
            tracing::debug!(leader, code = response.error_code, "replica fetch refused");
            tokio::time::sleep(BACKOFF).await;
            continue;
        }
        for (key, outcome) in apply_response(&current, response) {
            if let Outcome::Hold(why) = outcome {
                tracing::debug!(leader, topic_id = %key.0, partition = key.1, "replica fetch: {why}");
                held.insert(key, Instant::now() + BACKOFF);
            }
        }
    }
}

fn fetch_request(node_id: i32, partitions: &[&FollowerAssignment]) -> FetchRequest {
    let mut topics: HashMap<Uuid, Vec<FetchPartition>> = HashMap::new();
    for a in partitions {
        topics.entry(a.topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(a.partition)
                .with_current_leader_epoch(a.leader_epoch)
                .with_fetch_offset(a.log.log_end_offset())
                .with_last_fetched_epoch(a.log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(a.log.log_start_offset())
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        );
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(MAX_WAIT.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

enum Outcome {
    Done,
    /// Leave the partition out for a moment (not the leader any more, an
    /// epoch mismatch while metadata catches up, an error).
    Hold(String),
}

fn apply_response(
    assignments: &HashMap<(Uuid, i32), FollowerAssignment>,
    response: FetchResponse,
) -> Vec<((Uuid, i32), Outcome)> {
    let mut outcomes = Vec::new();
    for topic in response.responses {
        for p in topic.partitions {
            let key = (topic.topic_id, p.partition_index);
            let Some(a) = assignments.get(&key) else {
                continue;
            };
            let outcome = match apply_partition(a, &p) {
                Ok(o) => o,
                Err(e) => Outcome::Hold(e.to_string()),
            };
            outcomes.push((key, outcome));
        }
    }
    outcomes
}

fn apply_partition(
    a: &FollowerAssignment,
    p: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<Outcome, crate::storage::LogError> {
    let log = &a.log;
    if p.error_code == ResponseError::OffsetOutOfRange.code() {
        let fetch_offset = log.log_end_offset();
        if fetch_offset < p.log_start_offset {
            log.truncate_fully_and_start_at(p.log_start_offset)?;
        } else if p.high_watermark >= 0 {
            // The leader's log ends below ours (it never had our tail).
            log.truncate_to(p.high_watermark)?;
        }
        return Ok(Outcome::Done);
    }
    if p.error_code != 0 {
        let name = ResponseError::try_from_code(p.error_code)
            .map_or(format!("error {}", p.error_code), |e| format!("{e:?}"));
        return Ok(Outcome::Hold(name));
    }
    let diverging = &p.diverging_epoch;
    if diverging.epoch >= 0 && diverging.end_offset >= 0 {
        let (epoch, end) = log.end_offset_for_epoch(diverging.epoch);
        let target = if end >= 0 && epoch <= diverging.epoch {
            end.min(diverging.end_offset)
        } else {
            diverging.end_offset
        };
        log.truncate_to(target)?;
        return Ok(Outcome::Done);
    }
    if let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) {
        let info = log.append_as_follower(records)?;
        metrics::counter!("fjord_replica_fetched_bytes_total").increment(info.bytes as u64);
    }
    let end = log.log_end_offset();
    log.set_high_watermark(p.high_watermark.min(end));
    if p.log_start_offset > log.log_start_offset() {
        let start = p.log_start_offset.min(log.high_watermark());
        if start > log.log_start_offset() {
            log.delete_records_before(start)?;
        }
    }
    let lag = (p.high_watermark - end).max(0);
    metrics::gauge!("fjord_replica_follower_lag_records", "topic" => log.topic.clone(), "partition" => a.partition.to_string())
        .set(lag as f64);
    Ok(Outcome::Done)
}

//! The group coordinator on a 3-node in-process cluster, over the Kafka
//! protocol with fjord's own client: placement agreed by every broker,
//! the join/sync/heartbeat/commit/leave cycle with Kafka's errors, the
//! admin APIs, and commit latency with many concurrent committers.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{wait_for, TestCluster};
use fjord::client::admin::NewTopicSpec;
use fjord::client::KafkaClient;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const EXTRA: &str = "group.initial.rebalance.delay.ms=0\n";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn client(cluster: &TestCluster, i: usize) -> KafkaClient {
    let addr = cluster.node(i).kafka_addr.to_string();
    KafkaClient::connect(&addr, Duration::from_secs(15))
        .await
        .expect("connect")
}

async fn started() -> TestCluster {
    let cluster = TestCluster::start(3, EXTRA).await;
    let leader = cluster.wait_for_leader().await;
    wait_for("3 active brokers", Duration::from_secs(30), || async {
        (0..3)
            .all(|i| cluster.image(i).cluster.active_brokers().count() == 3)
            .then_some(())
    })
    .await;
    let mut admin = client(&cluster, leader).await;
    admin
        .create_topic(
            &NewTopicSpec {
                name: "events".into(),
                num_partitions: 2,
                replication_factor: 3,
                configs: Default::default(),
            },
            false,
        )
        .await
        .expect("create topic");
    wait_for("the topic everywhere", Duration::from_secs(30), || async {
        (0..3)
            .all(|i| cluster.image(i).topics.ids_by_name.contains_key("events"))
            .then_some(())
    })
    .await;
    cluster
}

/// The node index coordinating `group`, as FindCoordinator v4 answers it
/// from every node (they must agree).
async fn coordinator(cluster: &TestCluster, group: &str) -> usize {
    let mut answers = Vec::new();
    for i in 0..3 {
        let mut c = client(cluster, i).await;
        let r = c
            .send(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s(group)]),
                4,
            )
            .await
            .expect("find coordinator");
        assert_eq!(r.coordinators.len(), 1);
        assert_eq!(r.coordinators[0].error_code, 0);
        answers.push(r.coordinators[0].node_id.0);
        // v3 (one key) agrees with v4.
        let v3 = c
            .send(FindCoordinatorRequest::default().with_key(s(group)), 3)
            .await
            .expect("find coordinator v3");
        assert_eq!(v3.node_id.0, r.coordinators[0].node_id.0);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    (answers[0] - 1) as usize
}

/// Waits until node `i` has loaded `group` (COORDINATOR_LOAD_IN_PROGRESS
/// until its image has every earlier commit).
async fn wait_loaded(cluster: &TestCluster, i: usize, group: &str) {
    let mut c = client(cluster, i).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .send(
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None),
                7,
            )
            .await
            .expect("offset fetch");
        if r.error_code != ResponseError::CoordinatorLoadInProgress.code() {
            return;
        }
        assert!(Instant::now() < deadline, "node {i} never loaded {group}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"subscription"))])
}

/// Joins the v4+ way: MEMBER_ID_REQUIRED, then again with the given id.
async fn join_member(c: &mut KafkaClient, group: &str) -> JoinGroupResponse {
    let first = c.send(join(group, ""), 7).await.expect("join");
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    c.send(join(group, &first.member_id), 7)
        .await
        .expect("join with member id")
}

fn commit(group: &str, generation: i32, member: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("events")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s("meta")))])])
}

fn commit_error(r: &kafka_protocol::messages::OffsetCommitResponse) -> i16 {
    r.topics[0].partitions[0].error_code
}

async fn fetched(c: &mut KafkaClient, group: &str) -> (i64, Option<String>) {
    let r = c
        .send(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("events")))
                    .with_partition_indexes(vec![0])])),
            7,
        )
        .await
        .expect("offset fetch");
    assert_eq!(r.error_code, 0);
    let p = &r.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata.as_ref().map(|m| m.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_rebalance_commit_and_leave() {
    let cluster = started().await;
    let group = "orders-app";
    let coord = coordinator(&cluster, group).await;
    wait_loaded(&cluster, coord, group).await;
    // Another broker refuses the group.
    let mut other = client(&cluster, (coord + 1) % 3).await;
    let refused = other.send(join(group, ""), 7).await.unwrap();
    assert_eq!(refused.error_code, ResponseError::NotCoordinator.code());

    let mut a = client(&cluster, coord).await;
    let short = a
        .send(join(group, "").with_session_timeout_ms(1000), 7)
        .await
        .unwrap();
    assert_eq!(
        short.error_code,
        ResponseError::InvalidSessionTimeout.code(),
        "below group.min.session.timeout.ms"
    );
    let ja = join_member(&mut a, group).await;
    assert_eq!(ja.error_code, 0);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader, ja.member_id);
    let sa = a
        .send(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(1)
                .with_member_id(ja.member_id.clone())
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(ja.member_id.clone())
                    .with_assignment(Bytes::from_static(b"all"))]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(sa.assignment, Bytes::from_static(b"all"));

    // A second member joins: a's JoinGroup long-polls until both are in.
    let cluster_b = client(&cluster, coord).await;
    let b_task = tokio::spawn(async move {
        let mut b = cluster_b;
        let jb = join_member(&mut b, "orders-app").await;
        (b, jb)
    });
    // a's heartbeat learns of the rebalance b's join started.
    let deadline = Instant::now() + Duration::from_secs(10);
    let hb = loop {
        let r = a
            .send(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_generation_id(1)
                    .with_member_id(ja.member_id.clone()),
                4,
            )
            .await
            .unwrap();
        if r.error_code != 0 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(hb.error_code, ResponseError::RebalanceInProgress.code());
    // A commit in the old generation is still accepted while rebalancing.
    let r = a.send(commit(group, 1, &ja.member_id, 5), 8).await.unwrap();
    assert_eq!(commit_error(&r), 0);
    let ja2 = a.send(join(group, &ja.member_id), 7).await.unwrap();
    let (mut b, jb) = b_task.await.unwrap();
    assert_eq!((ja2.generation_id, jb.generation_id), (2, 2));
    assert_eq!(ja2.members.len(), 2, "the leader sees both members");
    assert!(jb.members.is_empty());
    // Old generation now refused; the follower's sync waits for the leader.
    let r = a.send(commit(group, 1, &ja.member_id, 6), 8).await.unwrap();
    assert_eq!(commit_error(&r), ResponseError::IllegalGeneration.code());
    let b_id = jb.member_id.clone();
    let sync_b = tokio::spawn(async move {
        let r = b
            .send(
                SyncGroupRequest::default()
                    .with_group_id(GroupId(s("orders-app")))
                    .with_generation_id(2)
                    .with_member_id(b_id),
                5,
            )
            .await
            .unwrap();
        (b, r)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let assignments = vec![
        SyncGroupRequestAssignment::default()
            .with_member_id(ja.member_id.clone())
            .with_assignment(Bytes::from_static(b"p0")),
        SyncGroupRequestAssignment::default()
            .with_member_id(jb.member_id.clone())
            .with_assignment(Bytes::from_static(b"p1")),
    ];
    let sa = a
        .send(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(2)
                .with_member_id(ja.member_id.clone())
                .with_assignments(assignments),
            5,
        )
        .await
        .unwrap();
    let (mut b, sb) = sync_b.await.unwrap();
    assert_eq!(sa.assignment, Bytes::from_static(b"p0"));
    assert_eq!(sb.assignment, Bytes::from_static(b"p1"));

    let r = a
        .send(commit(group, 2, &ja.member_id, 42), 8)
        .await
        .unwrap();
    assert_eq!(commit_error(&r), 0);
    let r = a.send(commit(group, 2, "stranger", 43), 8).await.unwrap();
    assert_eq!(commit_error(&r), ResponseError::UnknownMemberId.code());
    assert_eq!(fetched(&mut a, group).await, (42, Some("meta".into())));

    // Describe and list while Stable.
    let d = a
        .send(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members.len(), 2);
    let l = a
        .send(
            ListGroupsRequest::default().with_states_filter(vec![s("Stable")]),
            4,
        )
        .await
        .unwrap();
    assert!(l.groups.iter().any(|g| g.group_id.0.as_str() == group));

    // Not deletable with members.
    let del = a
        .send(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        del.results[0].error_code,
        ResponseError::NonEmptyGroup.code()
    );

    // Both leave in one batched LeaveGroup: the group is Empty.
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    let leave = b
        .send(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(ja.member_id.clone()),
                    MemberIdentity::default().with_member_id(jb.member_id.clone()),
                ]),
            5,
        )
        .await
        .unwrap();
    assert!(leave.members.iter().all(|m| m.error_code == 0));
    let d = a
        .send(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    // A simple commit (no membership) is fine for an empty group.
    let r = a.send(commit(group, -1, "", 50), 8).await.unwrap();
    assert_eq!(commit_error(&r), 0);
    // OffsetFetch v8 asks for several groups at once; a group coordinated
    // elsewhere is NOT_COORDINATOR on its own.
    let elsewhere = (0..)
        .map(|i| format!("elsewhere-{i}"))
        .find(|g| fjord::group::coordinator_for(&cluster.image(coord), g) != Some(coord as i32 + 1))
        .unwrap();
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    let multi = a
        .send(
            OffsetFetchRequest::default().with_groups(vec![
                // No topics: everything the group committed.
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(None),
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&elsewhere)))
                    .with_topics(None),
            ]),
            8,
        )
        .await
        .unwrap();
    assert_eq!(multi.groups[0].error_code, 0);
    assert_eq!(multi.groups[0].topics[0].partitions[0].committed_offset, 50);
    assert_eq!(
        multi.groups[1].error_code,
        ResponseError::NotCoordinator.code()
    );
    // OffsetDelete on the empty group removes that partition's offset.
    {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        use kafka_protocol::messages::OffsetDeleteRequest;
        let r = a.send(commit(group, -1, "", 51), 8).await.unwrap();
        assert_eq!(commit_error(&r), 0);
        let del = a
            .send(
                OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s(group)))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(s("events")))
                        .with_partitions(vec![OffsetDeleteRequestPartition::default()])]),
                0,
            )
            .await
            .unwrap();
        assert_eq!(del.error_code, 0);
        assert_eq!(del.topics[0].partitions[0].error_code, 0);
        assert_eq!(fetched(&mut a, group).await.0, -1);
        let r = a.send(commit(group, -1, "", 50), 8).await.unwrap();
        assert_eq!(commit_error(&r), 0);
    }
    // The committed offset is in every node's image.
    wait_for("offset 50 everywhere", Duration::from_secs(10), || async {
        (0..3)
            .all(|i| {
                cluster
                    .image(i)
                    .offsets
                    .groups
                    .get(group)
                    .and_then(|t| t.get("events"))
                    .and_then(|p| p.get(&0))
                    .map(|c| c.offset)
                    == Some(50)
            })
            .then_some(())
    })
    .await;
    let del = a
        .send(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(del.results[0].error_code, 0);
    assert_eq!(fetched(&mut a, group).await.0, -1);
    let del = a
        .send(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(
        del.results[0].error_code,
        ResponseError::GroupIdNotFound.code()
    );
}

/// Many committers at once: each commit is answered after the quorum has
/// it, and concurrent ones share log entries. Prints commits/s, p50, p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_are_batched() {
    let cluster = started().await;
    // FJORD_GROUP_COMMITTERS to measure other loads (default 64).
    let committers: usize = std::env::var("FJORD_GROUP_COMMITTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    const COMMITS_EACH: i64 = 30;
    let image = cluster.image(0);
    // Groups coordinated by node 1, so every committer talks to one broker.
    let groups: Vec<String> = (0..)
        .map(|i| format!("bench-{i}"))
        .filter(|g| fjord::group::coordinator_for(&image, g) == Some(1))
        .take(committers)
        .collect();
    wait_loaded(&cluster, 0, &groups[0]).await;
    let entries_before = cluster.image(0).offset;
    let started_at = Instant::now();
    let mut tasks = Vec::new();
    for g in groups.clone() {
        let mut c = client(&cluster, 0).await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for offset in 1..=COMMITS_EACH {
                let t = Instant::now();
                let r = c.send(commit(&g, -1, "", offset), 8).await.expect("commit");
                assert_eq!(commit_error(&r), 0, "{g} offset {offset}");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started_at.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let total = latencies.len();
    let entries = cluster.image(0).offset - entries_before;
    println!(
        "{total} commits by {committers} committers in {elapsed:?}: {:.0} commits/s, p50 {:?}, p99 {:?}, {entries} metadata log entries",
        total as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99)
    );
    // Batching: far fewer log entries than commits.
    assert!(
        committers < 8 || (entries as usize) < total / 2,
        "{entries} entries for {total} commits"
    );
    let mut c = client(&cluster, 0).await;
    for g in &groups {
        assert_eq!(fetched(&mut c, g).await.0, COMMITS_EACH);
    }
}

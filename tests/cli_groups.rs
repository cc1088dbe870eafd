//! Consumer groups as a user runs them: two `fjord consume --group`
//! processes share a topic's partitions through the group coordinator,
//! together print every record, commit what they printed and leave on
//! Ctrl-C; `fjord group describe` shows the members, their partitions and
//! the committed offsets with zero lag; `fjord group reset-offsets` moves
//! an empty group back so a new member reads everything again. A member
//! killed with -9 loses its partitions to the survivor within the session
//! timeout, and the survivor resumes them at the dead member's commits.
//! When the coordinator's node stops, a member finds the new coordinator
//! and goes on from the group's committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fjord::client::KafkaClient;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde_json::Value;

mod common;

use common::bin::{run_with_input, signal, FJORD};
use common::{wait_for, TestCluster};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
const RECORDS: usize = 200;

/// Creates `name`, retrying while the new node's broker is not yet unfenced.
async fn create_topic(bootstrap: &str, name: &str, partitions: i32, replication_factor: i16) {
    let mut client = KafkaClient::connect(bootstrap, Duration::from_secs(10))
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)]);
        let response = client.request(request).await.expect("CreateTopics");
        match ResponseError::try_from_code(response.topics[0].error_code) {
            None | Some(ResponseError::TopicAlreadyExists) => return,
            Some(ResponseError::InvalidReplicationFactor) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Some(e) => panic!("create {name}: {e:?}"),
        }
    }
}

/// Runs the binary off the runtime's threads, so the in-process node keeps serving.
async fn fjord(args: Vec<String>, input: &str) -> Output {
    let input = input.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_with_input(&args, &input)
    })
    .await
    .expect("fjord ran")
}

fn args(list: &[&str], bootstrap: &str) -> Vec<String> {
    list.iter()
        .map(|s| s.to_string())
        .chain(["--bootstrap-server".to_string(), bootstrap.to_string()])
        .collect()
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// `fjord group describe g --json`, if it succeeds.
async fn describe(bootstrap: &str, group: &str) -> Option<Value> {
    let out = fjord(
        args(
            &["group", "describe", group, "--json", "--timeout", "5"],
            bootstrap,
        ),
        "",
    )
    .await;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Committed offset, log end offset and lag of one partition.
type PartitionOffsets = (Option<i64>, Option<i64>, Option<i64>);

/// Per partition of TOPIC, as `describe --json` reports it.
fn offsets(described: &Value) -> BTreeMap<i64, PartitionOffsets> {
    described["offsets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["topic"] == TOPIC)
        .filter_map(|o| {
            Some((
                o["partition"].as_i64()?,
                (
                    o["committed_offset"].as_i64(),
                    o["log_end_offset"].as_i64(),
                    o["lag"].as_i64(),
                ),
            ))
        })
        .collect()
}

/// A `fjord consume --group` process; killed if the test ends early.
struct Member(Option<Child>);

impl Member {
    fn start(bootstrap: &str, group: &str, extra: &[&str]) -> Member {
        let child = Command::new(FJORD)
            .args([
                "consume",
                TOPIC,
                "--group",
                group,
                "--bootstrap-server",
                bootstrap,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fjord consume");
        Member(Some(child))
    }

    /// Ctrl-C, then its output once it has committed, left and exited.
    async fn interrupt(mut self) -> Output {
        let child = self.0.take().expect("running");
        signal(&child, libc::SIGINT);
        Self::wait(child).await
    }

    async fn wait(child: Child) -> Output {
        tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("joined")
            .expect("wait for fjord consume")
    }

    async fn finish(mut self) -> Output {
        let child = self.0.take().expect("running");
        Self::wait(child).await
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn values(stdout: &str) -> Vec<String> {
    stdout.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_share_a_topic_commit_and_a_reset_group_reads_again() {
    let cluster = TestCluster::start(1, "").await;
    cluster.wait_for_leader().await;
    let bootstrap = format!("127.0.0.1:{}", cluster.nodes[0].kafka_port);
    create_topic(&bootstrap, TOPIC, PARTITIONS, 1).await;

    let a = Member::start(&bootstrap, "g", &["--from-beginning"]);
    let b = Member::start(&bootstrap, "g", &["--from-beginning"]);

    // Both members in one generation, two partitions each, all four covered.
    let stable = wait_for(
        "group g stable with two members of two partitions each",
        Duration::from_secs(60),
        || async {
            let d = describe(&bootstrap, "g").await?;
            let members = d["members"].as_array()?;
            if d["state"] != "Stable" || members.len() != 2 {
                return None;
            }
            let mut covered = BTreeSet::new();
            for m in members {
                let partitions = m["assignment"][TOPIC].as_array()?;
                if partitions.len() != 2 {
                    return None;
                }
                covered.extend(partitions.iter().filter_map(Value::as_i64));
            }
            (covered == (0..i64::from(PARTITIONS)).collect()).then_some(d)
        },
    )
    .await;
    assert_eq!(stable["protocol_type"], "consumer");
    assert_eq!(stable["protocol"], "range");

    let lines: Vec<String> = (0..RECORDS).map(|i| format!("key-{i}:value-{i}")).collect();
    let out = fjord(
        args(&["produce", TOPIC, "--key-separator", ":"], &bootstrap),
        &(lines.join("\n") + "\n"),
    )
    .await;
    stdout_of(&out, "produce");

    // They commit after each printed batch: the group catches up to the
    // log end on every partition while both are still members.
    let caught_up = wait_for(
        "group g to commit every record with two members",
        Duration::from_secs(60),
        || async {
            let d = describe(&bootstrap, "g").await?;
            let offsets = offsets(&d);
            let total: i64 = offsets.values().filter_map(|(_, end, _)| *end).sum();
            let done = offsets.len() == PARTITIONS as usize
                && total == RECORDS as i64
                && offsets
                    .values()
                    .all(|(c, e, lag)| c == e && *lag == Some(0));
            (done && d["members"].as_array()?.len() == 2).then_some(d)
        },
    )
    .await;
    for o in caught_up["offsets"].as_array().expect("offsets") {
        assert!(
            o["member_id"].is_string(),
            "partition without an owner: {o}"
        );
    }

    let out_a = a.interrupt().await;
    let out_b = b.interrupt().await;
    let printed_a = values(&stdout_of(&out_a, "member a"));
    let printed_b = values(&stdout_of(&out_b, "member b"));
    assert!(
        !printed_a.is_empty() && !printed_b.is_empty(),
        "one member printed nothing"
    );
    let together: BTreeSet<String> = printed_a.iter().chain(&printed_b).cloned().collect();
    let expected: BTreeSet<String> = (0..RECORDS).map(|i| format!("value-{i}")).collect();
    assert_eq!(together, expected, "together they print every record");

    // Both left: the group is empty at once, its offsets stay.
    let empty = describe(&bootstrap, "g").await.expect("describe g");
    assert_eq!(empty["state"], "Empty", "{empty}");
    assert_eq!(empty["members"].as_array().map(Vec::len), Some(0));
    let committed = offsets(&empty);
    assert_eq!(committed.len(), PARTITIONS as usize);
    for (partition, (c, end, lag)) in &committed {
        assert_eq!(c, end, "partition {partition}");
        assert_eq!(*lag, Some(0), "partition {partition}");
    }
    let listed = stdout_of(
        &fjord(args(&["group", "list"], &bootstrap), "").await,
        "group list",
    );
    assert!(listed.lines().any(|l| l == "g"), "{listed}");

    // A dry run prints the plan and changes nothing.
    let reset = [
        "group",
        "reset-offsets",
        "g",
        "--topic",
        TOPIC,
        "--to-earliest",
    ];
    let plan = stdout_of(&fjord(args(&reset, &bootstrap), "").await, "dry run");
    for (partition, (c, _, _)) in &committed {
        let row = format!("g\t{TOPIC}\t{partition}\t{}\t0", c.expect("committed"));
        assert!(plan.lines().any(|l| l == row), "no '{row}' in\n{plan}");
    }
    let unchanged = describe(&bootstrap, "g").await.expect("describe g");
    assert_eq!(offsets(&unchanged), committed, "a dry run changed offsets");

    let mut execute = reset.to_vec();
    execute.push("--execute");
    stdout_of(
        &fjord(args(&execute, &bootstrap), "").await,
        "reset --execute",
    );
    let rewound = describe(&bootstrap, "g").await.expect("describe g");
    for (partition, (c, end, lag)) in offsets(&rewound) {
        assert_eq!(c, Some(0), "partition {partition}");
        assert_eq!(lag, end, "partition {partition}");
    }

    // A new member starts at the committed offsets, not at the end.
    let again = Member::start(&bootstrap, "g", &["--timeout-ms", "5000"])
        .finish()
        .await;
    let reread: BTreeSet<String> = values(&stdout_of(&again, "new member"))
        .into_iter()
        .collect();
    assert_eq!(reread, expected, "the reset group reads everything again");

    // Resetting a group with a live member is refused.
    let live = Member::start(&bootstrap, "g", &[]);
    wait_for(
        "the live member to join",
        Duration::from_secs(30),
        || async {
            let d = describe(&bootstrap, "g").await?;
            (d["members"].as_array()?.len() == 1 && d["state"] == "Stable").then_some(())
        },
    )
    .await;
    let refused = fjord(args(&execute, &bootstrap), "").await;
    assert_eq!(refused.status.code(), Some(2), "reset of a live group");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("group 'g'"), "{message}");
    let refused = fjord(args(&["group", "delete", "g"], &bootstrap), "").await;
    assert_eq!(refused.status.code(), Some(2), "delete of a live group");
    stdout_of(&live.interrupt().await, "live member");

    stdout_of(
        &fjord(args(&["group", "delete", "g"], &bootstrap), "").await,
        "group delete",
    );
    let gone = fjord(args(&["group", "describe", "g"], &bootstrap), "").await;
    assert_eq!(gone.status.code(), Some(2), "describe of a deleted group");
    let message = String::from_utf8_lossy(&gone.stderr);
    assert!(message.contains("group 'g'"), "{message}");
}

/// `Partition:P\tOffset:O\tvalue` lines as (partition, offset, value).
fn placed(stdout: &str) -> Vec<(i64, i64, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut fields = l.splitn(3, '\t');
            let partition = fields.next()?.strip_prefix("Partition:")?.parse().ok()?;
            let offset = fields.next()?.strip_prefix("Offset:")?.parse().ok()?;
            Some((partition, offset, fields.next()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_partitions_move_to_the_survivor_at_its_committed_offsets() {
    let cluster = TestCluster::start(1, "").await;
    cluster.wait_for_leader().await;
    let bootstrap = format!("127.0.0.1:{}", cluster.nodes[0].kafka_port);
    create_topic(&bootstrap, TOPIC, PARTITIONS, 1).await;
    let flags = ["--from-beginning", "--print-partition", "--print-offset"];
    let mut a = Member::start(&bootstrap, "h", &flags);
    let b = Member::start(&bootstrap, "h", &flags);
    let member_of = |d: &Value, i: usize| -> Option<(String, Vec<i64>)> {
        let m = &d["members"].as_array()?[i];
        let partitions = m["assignment"][TOPIC].as_array()?;
        Some((
            m["member_id"].as_str()?.to_string(),
            partitions.iter().filter_map(Value::as_i64).collect(),
        ))
    };
    wait_for(
        "two members of group h",
        Duration::from_secs(60),
        || async {
            let d = describe(&bootstrap, "h").await?;
            let both = d["state"] == "Stable" && d["members"].as_array()?.len() == 2;
            (both && member_of(&d, 0)?.1.len() == 2 && member_of(&d, 1)?.1.len() == 2).then_some(())
        },
    )
    .await;

    stdout_of(&produce(&bootstrap, 0, 100).await, "produce");
    let caught_up = |members: usize, total: i64| {
        let bootstrap = bootstrap.clone();
        move || {
            let bootstrap = bootstrap.clone();
            async move {
                let d = describe(&bootstrap, "h").await?;
                let offsets = offsets(&d);
                let sum: i64 = offsets.values().filter_map(|(_, end, _)| *end).sum();
                let done = sum == total && offsets.values().all(|(_, _, lag)| *lag == Some(0));
                (done && d["members"].as_array()?.len() == members).then_some(d)
            }
        }
    };
    let before = wait_for(
        "both members to commit the first 100",
        Duration::from_secs(60),
        caught_up(2, 100),
    )
    .await;
    let committed_before = offsets(&before);

    // kill -9: no commit, no LeaveGroup; the coordinator notices only
    // when its heartbeats stop for a session timeout.
    let child = a.0.take().expect("running");
    signal(&child, libc::SIGKILL);
    let printed_a = placed(&stdout_of_killed(Member::wait(child).await));
    let a_partitions: BTreeSet<i64> = printed_a.iter().map(|(p, _, _)| *p).collect();
    assert!(
        !a_partitions.is_empty(),
        "the killed member printed nothing"
    );

    stdout_of(&produce(&bootstrap, 100, 200).await, "produce");
    let after = wait_for(
        "the survivor to own every partition and commit all 200",
        Duration::from_secs(60),
        caught_up(1, 200),
    )
    .await;
    assert_eq!(
        member_of(&after, 0).expect("one member").1,
        (0..i64::from(PARTITIONS)).collect::<Vec<_>>()
    );
    let printed_b = placed(&stdout_of(&b.interrupt().await, "survivor"));

    let together: BTreeSet<&str> = printed_a
        .iter()
        .chain(&printed_b)
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(together.len(), 200, "every record printed at least once");
    for (partition, offset, value) in &printed_b {
        if a_partitions.contains(partition) {
            let committed = committed_before[partition].0.expect("committed");
            assert!(
                *offset >= committed,
                "{value} at {partition}/{offset} re-read below the dead member's commit {committed}"
            );
        }
    }
}

/// Records `key-i:value-i` for i in `from..to`.
async fn produce(bootstrap: &str, from: usize, to: usize) -> Output {
    let lines: Vec<String> = (from..to).map(|i| format!("key-{i}:value-{i}")).collect();
    fjord(
        args(&["produce", TOPIC, "--key-separator", ":"], bootstrap),
        &(lines.join("\n") + "\n"),
    )
    .await
}

/// A killed process's output: whatever it printed before the signal.
fn stdout_of_killed(out: Output) -> String {
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_follows_its_group_to_a_new_coordinator() {
    let mut cluster = TestCluster::start(
        3,
        "broker.heartbeat.interval.ms=200\nbroker.session.timeout.ms=2000\n",
    )
    .await;
    cluster.wait_for_active_brokers(3).await;
    let bootstrap = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.kafka_port))
        .collect::<Vec<_>>()
        .join(",");
    create_topic(&bootstrap, TOPIC, PARTITIONS, 3).await;
    let member = Member::start(
        &bootstrap,
        "f",
        &["--from-beginning", "--print-partition", "--print-offset"],
    );
    let committed_all = |total: i64| {
        let bootstrap = bootstrap.clone();
        move || {
            let bootstrap = bootstrap.clone();
            async move {
                let d = describe(&bootstrap, "f").await?;
                let offsets = offsets(&d);
                let sum: i64 = offsets.values().filter_map(|(_, end, _)| *end).sum();
                let done = sum == total && offsets.values().all(|(_, _, lag)| *lag == Some(0));
                (done && d["state"] == "Stable" && d["members"].as_array()?.len() == 1).then_some(d)
            }
        }
    };
    stdout_of(&produce(&bootstrap, 0, 100).await, "produce");
    let before = wait_for(
        "the member to commit the first 100",
        Duration::from_secs(60),
        committed_all(100),
    )
    .await;
    let committed_before = offsets(&before);

    let mut client = KafkaClient::connect(&bootstrap, Duration::from_secs(10))
        .await
        .expect("connect");
    let (coordinator, _) = client.find_coordinator("f").await.expect("coordinator");
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.id == coordinator)
        .expect("the coordinator is a node");
    cluster.stop_node(index).await;

    stdout_of(&produce(&bootstrap, 100, 200).await, "produce");
    let after = wait_for(
        "the member to rejoin at the new coordinator and commit all 200",
        Duration::from_secs(90),
        committed_all(200),
    )
    .await;
    let mut client = KafkaClient::connect(&bootstrap, Duration::from_secs(10))
        .await
        .expect("connect");
    let (moved_to, _) = client.find_coordinator("f").await.expect("coordinator");
    assert_ne!(moved_to, coordinator, "the coordinator moved");
    // Membership lived in the old coordinator's memory: a new member id.
    assert_ne!(
        after["members"][0]["member_id"], before["members"][0]["member_id"],
        "the member joined the new coordinator"
    );
    let printed = placed(&stdout_of(&member.interrupt().await, "member"));
    let values: BTreeSet<&str> = printed.iter().map(|(_, _, v)| v.as_str()).collect();
    assert_eq!(values.len(), 200, "every record printed");
    // Nothing the group had committed before the move is read again.
    let mut seen = BTreeSet::new();
    for (partition, offset, value) in &printed {
        let committed = committed_before[partition].0.expect("committed");
        if *offset < committed {
            assert!(seen.insert((*partition, *offset)), "{value} read twice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_commits_exactly_what_was_printed() {
    let cluster = TestCluster::start(1, "").await;
    cluster.wait_for_leader().await;
    let bootstrap = format!("127.0.0.1:{}", cluster.nodes[0].kafka_port);
    create_topic(&bootstrap, TOPIC, PARTITIONS, 1).await;
    stdout_of(&produce(&bootstrap, 0, 120).await, "produce");

    let first = Member::start(
        &bootstrap,
        "m",
        &["--from-beginning", "--max-messages", "50"],
    )
    .finish()
    .await;
    let first = values(&stdout_of(&first, "first run"));
    assert_eq!(first.len(), 50);
    let d = describe(&bootstrap, "m").await.expect("describe m");
    let committed: i64 = offsets(&d).values().filter_map(|(c, _, _)| *c).sum();
    assert_eq!(
        committed, 50,
        "commits cover exactly the printed records: {d}"
    );

    // The next member picks up after them: no record twice, none missed.
    let rest = Member::start(&bootstrap, "m", &["--timeout-ms", "3000"])
        .finish()
        .await;
    let rest = values(&stdout_of(&rest, "second run"));
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    let mut expected: Vec<String> = (0..120).map(|i| format!("value-{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);
}

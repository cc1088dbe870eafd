//! `fjord produce` and `fjord consume` as a user runs them, against an
//! in-process node: lines with keys go in, the same lines come back with
//! the partitions the Java client's partitioner picks and dense offsets;
//! every codec and acks=0 work; mistakes end with a one-line reason.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use fjord::client::producer::partition_for_key;
use fjord::client::KafkaClient;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

mod common;

use common::bin::run_with_input;
use common::TestCluster;

async fn single_node() -> (TestCluster, String) {
    let cluster = TestCluster::start(1, "").await;
    cluster.wait_for_leader().await;
    let bootstrap = format!("127.0.0.1:{}", cluster.nodes[0].kafka_port);
    (cluster, bootstrap)
}

/// Creates `name`, retrying while the new node's broker is not yet
/// unfenced (the controller has no broker to place replicas on).
async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
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
                .with_replication_factor(1)]);
        let response = client.request(request).await.expect("CreateTopics");
        let code = response.topics[0].error_code;
        match ResponseError::try_from_code(code) {
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

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_lines_come_back_on_the_java_partition_with_dense_offsets() {
    let (_cluster, bootstrap) = single_node().await;
    create_topic(&bootstrap, "lines", 3).await;
    let lines: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("user-{}", i % 7),
                format!("event {i} with: a colon"),
            )
        })
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let out = fjord(
        args(&[
            "produce",
            "lines",
            "--bootstrap-server",
            &bootstrap,
            "--key-separator",
            ":",
        ]),
        &input,
    )
    .await;
    assert_success(&out, "produce");

    // What a Kafka client would have done: per partition, in input order,
    // offsets from 0.
    let mut expected: BTreeMap<i32, Vec<(String, String)>> = BTreeMap::new();
    for (k, v) in &lines {
        expected
            .entry(partition_for_key(k.as_bytes(), 3))
            .or_default()
            .push((k.clone(), v.clone()));
    }
    let mut expected_lines: Vec<String> = expected
        .iter()
        .flat_map(|(p, records)| {
            records
                .iter()
                .enumerate()
                .map(move |(offset, (k, v))| format!("Partition:{p}\tOffset:{offset}\t{k}\t{v}"))
        })
        .collect();
    expected_lines.sort();

    let out = fjord(
        args(&[
            "consume",
            "lines",
            "--bootstrap-server",
            &bootstrap,
            "--from-beginning",
            "--max-messages",
            "40",
            "--timeout-ms",
            "20000",
            "--print-partition",
            "--print-offset",
            "--print-key",
        ]),
        "",
    )
    .await;
    let stdout = assert_success(&out, "consume");
    let mut got: Vec<String> = stdout.lines().map(str::to_string).collect();
    // Partitions interleave in any order; within one, order is checked by the offsets.
    got.sort();
    assert_eq!(got, expected_lines);
}

/// Partitions led by three different nodes: the producer routes each batch
/// to its leader and the consumer fetches from all of them, whichever node
/// it was pointed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_and_come_back_from_every_leader_of_a_three_node_cluster() {
    let cluster = TestCluster::start(3, "").await;
    cluster.wait_for_leader().await;
    let bootstrap = |i: usize| format!("127.0.0.1:{}", cluster.nodes[i].kafka_port);
    common::wait_for(
        "three unfenced brokers",
        Duration::from_secs(30),
        || async {
            let image = cluster.image(0);
            (image.cluster.brokers.values().filter(|b| !b.fenced).count() == 3).then_some(())
        },
    )
    .await;
    create_topic(&bootstrap(0), "spread", 6).await;
    let leaders = common::wait_for("leaders on every node", Duration::from_secs(30), || async {
        let image = cluster.image(0);
        let topic = image.topics.by_id.values().find(|t| t.name == "spread")?;
        let leaders: std::collections::BTreeSet<i32> =
            topic.partitions.values().map(|p| p.leader).collect();
        (leaders.len() == 3).then_some(leaders)
    })
    .await;
    assert_eq!(leaders.len(), 3);
    let input: String = (0..60).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = fjord(
        args(&[
            "produce",
            "spread",
            "--bootstrap-server",
            &bootstrap(1),
            "--key-separator",
            ":",
        ]),
        &input,
    )
    .await;
    assert_success(&out, "produce");
    let out = fjord(
        args(&[
            "consume",
            "spread",
            "--bootstrap-server",
            &bootstrap(2),
            "--from-beginning",
            "--max-messages",
            "60",
            "--timeout-ms",
            "20000",
            "--print-partition",
            "--print-key",
        ]),
        "",
    )
    .await;
    let stdout = assert_success(&out, "consume");
    let mut got: Vec<String> = stdout.lines().map(str::to_string).collect();
    got.sort();
    let mut expected: Vec<String> = (0..60)
        .map(|i| {
            let key = format!("k{i}");
            let p = partition_for_key(key.as_bytes(), 6);
            format!("Partition:{p}\t{key}\tv{i}")
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_and_acks_0_round_trip_with_headers() {
    let (_cluster, bootstrap) = single_node().await;
    let mut sent = Vec::new();
    for (codec, acks) in [
        ("none", "all"),
        ("gzip", "1"),
        ("snappy", "1"),
        ("lz4", "all"),
        ("zstd", "1"),
        ("none", "0"),
    ] {
        let lines: Vec<String> = (0..5).map(|i| format!("{codec}-acks{acks}-{i}")).collect();
        let out = fjord(
            args(&[
                "produce",
                "codecs",
                "--bootstrap-server",
                &bootstrap,
                "--compression",
                codec,
                "--acks",
                acks,
                "--key",
                codec,
                "--header",
                &format!("codec={codec}"),
            ]),
            &(lines.join("\n") + "\n"),
        )
        .await;
        assert_success(&out, &format!("produce with {codec}, acks {acks}"));
        sent.extend(lines.into_iter().map(|l| (codec.to_string(), l)));
    }
    let out = fjord(
        args(&[
            "consume",
            "codecs",
            "--bootstrap-server",
            &bootstrap,
            "--from-beginning",
            "--max-messages",
            &sent.len().to_string(),
            "--timeout-ms",
            "20000",
            "--json",
        ]),
        "",
    )
    .await;
    let stdout = assert_success(&out, "consume --json");
    let got: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(got.len(), sent.len(), "{stdout}");
    // One auto-created partition: everything in the order sent.
    for (i, ((codec, value), record)) in sent.iter().zip(&got).enumerate() {
        assert_eq!(record["offset"], i as i64);
        assert_eq!(record["value"], value.as_str());
        assert_eq!(record["key"], codec.as_str());
        assert_eq!(record["headers"]["codec"], codec.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_end_with_one_line_that_names_them() {
    let (_cluster, bootstrap) = single_node().await;
    create_topic(&bootstrap, "small", 2).await;
    let out = fjord(
        args(&[
            "produce",
            "small",
            "--bootstrap-server",
            &bootstrap,
            "--partition",
            "9",
        ]),
        "hello\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("topic small has no partition 9 (it has 2)"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = fjord(
        args(&[
            "produce",
            "small",
            "--bootstrap-server",
            &bootstrap,
            "--key-separator",
            "=",
        ]),
        "a=1\nno separator\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: no key separator"), "{stderr}");

    let out = fjord(
        args(&[
            "consume",
            "absent",
            "--bootstrap-server",
            &bootstrap,
            "--timeout-ms",
            "500",
        ]),
        "",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownTopicOrPartition"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_starts_at_the_end_unless_told_otherwise() {
    let (_cluster, bootstrap) = single_node().await;
    let out = fjord(
        args(&["produce", "old", "--bootstrap-server", &bootstrap]),
        "one\ntwo\nthree\n",
    )
    .await;
    assert_success(&out, "produce");
    let from_end = fjord(
        args(&[
            "consume",
            "old",
            "--bootstrap-server",
            &bootstrap,
            "--timeout-ms",
            "1000",
        ]),
        "",
    )
    .await;
    assert_eq!(assert_success(&from_end, "consume from the end"), "");
    let from_offset = fjord(
        args(&[
            "consume",
            "old",
            "--bootstrap-server",
            &bootstrap,
            "--partition",
            "0",
            "--offset",
            "1",
            "--max-messages",
            "2",
            "--timeout-ms",
            "20000",
        ]),
        "",
    )
    .await;
    assert_eq!(
        assert_success(&from_offset, "consume from offset 1"),
        "two\nthree\n"
    );
}

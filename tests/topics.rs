//! Topic administration on a 3-node in-process cluster, over the Kafka
//! protocol: requests go to a node that is not the active controller, so
//! every change is forwarded, and the answer must already be visible in
//! that node's own image.

mod common;

use std::time::Duration;

use common::{wait_for, TestCluster};
use fjord::client::admin::NewTopicSpec;
use fjord::client::{ClientError, KafkaClient};
use fjord::controller::topic_control::AlterConfigOp;
use fjord::metadata::records::ConfigResourceType;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{AlterConfigsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

const EXTRA: &str = "log.segment.bytes=2048\nnum.partitions=2\n";

/// A started cluster whose brokers are all active, and the index of a node
/// that is not the active controller.
async fn cluster() -> (TestCluster, usize) {
    let cluster = TestCluster::start(3, EXTRA).await;
    let leader = cluster.wait_for_leader().await;
    wait_for("3 active brokers", Duration::from_secs(30), || async {
        (cluster.image(leader).cluster.active_brokers().count() == 3).then_some(())
    })
    .await;
    let follower = (leader + 1) % 3;
    (cluster, follower)
}

async fn client(cluster: &TestCluster, i: usize) -> KafkaClient {
    let addr = cluster.node(i).kafka_addr.to_string();
    KafkaClient::connect(&addr, Duration::from_secs(15))
        .await
        .expect("connect")
}

fn spec(name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> NewTopicSpec {
    NewTopicSpec {
        name: name.to_string(),
        num_partitions: partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The Kafka error a call was refused with.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (ResponseError, String) {
    match result {
        Err(ClientError::Broker { code, message, .. }) => (
            ResponseError::try_from_code(code).expect("a Kafka error code"),
            message,
        ),
        other => panic!("expected a broker refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_topics_through_a_follower() {
    let (mut cluster, follower) = cluster().await;
    let mut admin = client(&cluster, follower).await;

    let created = admin
        .create_topic(&spec("orders", 6, -1, &[("retention.ms", "1000")]), false)
        .await
        .expect("orders created");
    assert_eq!((created.num_partitions, created.replication_factor), (6, 1));
    // The answering node already has it: no waiting needed by the client.
    let image = cluster.image(follower);
    let topic = image.topics.get("orders").expect("in the follower's image");
    assert_eq!(topic.topic_id, created.topic_id);
    assert_eq!(topic.partitions.len(), 6);
    // Leaders spread evenly, each partition led by its first replica, epoch 0.
    let mut led = std::collections::BTreeMap::<i32, usize>::new();
    for p in topic.partitions.values() {
        assert_eq!(
            (p.replicas.len(), p.replicas[0], p.leader_epoch),
            (1, p.leader, 0)
        );
        assert_eq!(p.isr, p.replicas);
        *led.entry(p.leader).or_default() += 1;
    }
    assert_eq!(led.into_values().collect::<Vec<_>>(), [2, 2, 2]);
    let overrides = image.configs.get(ConfigResourceType::Topic, "orders");
    assert_eq!(
        overrides
            .and_then(|o| o.get("retention.ms"))
            .map(String::as_str),
        Some("1000")
    );

    // -1 partitions takes num.partitions.
    let defaulted = admin
        .create_topic(&spec("defaulted", -1, -1, &[]), false)
        .await
        .unwrap();
    assert_eq!(defaulted.num_partitions, 2);

    let (e, _) = refused(admin.create_topic(&spec("orders", 1, 1, &[]), false).await);
    assert_eq!(e, ResponseError::TopicAlreadyExists);
    for bad in ["bad name", "..", "", &"x".repeat(250)] {
        let (e, message) = refused(admin.create_topic(&spec(bad, 1, 1, &[]), false).await);
        assert_eq!(
            e,
            ResponseError::InvalidTopicException,
            "{bad:?}: {message}"
        );
    }
    admin
        .create_topic(&spec("a.b", 1, 1, &[]), false)
        .await
        .unwrap();
    let (e, message) = refused(admin.create_topic(&spec("a_b", 1, 1, &[]), false).await);
    assert_eq!(e, ResponseError::InvalidTopicException);
    assert!(message.contains("collides"), "{message}");
    let (e, message) = refused(
        admin
            .create_topic(&spec("overreplicated", 1, 4, &[]), false)
            .await,
    );
    assert_eq!(e, ResponseError::InvalidReplicationFactor);
    assert!(message.contains("only 3 broker(s)"), "{message}");
    let (e, _) = refused(admin.create_topic(&spec("empty", 0, 1, &[]), false).await);
    assert_eq!(e, ResponseError::InvalidPartitions);
    let (e, message) = refused(
        admin
            .create_topic(&spec("badconf", 1, 1, &[("retention.mss", "1")]), false)
            .await,
    );
    assert_eq!(e, ResponseError::InvalidConfig);
    assert!(message.contains("retention.mss"), "{message}");
    let (e, message) = refused(
        admin
            .create_topic(&spec("badvalue", 1, 1, &[("segment.bytes", "12")]), false)
            .await,
    );
    assert_eq!(e, ResponseError::InvalidConfig);
    assert!(message.contains("segment.bytes"), "{message}");

    // Validate-only answers as a create would, and creates nothing.
    let would = admin
        .create_topic(&spec("dry", 4, 1, &[]), true)
        .await
        .unwrap();
    assert_eq!(would.num_partitions, 4);
    let (e, _) = refused(admin.create_topic(&spec("dry", 0, 1, &[]), true).await);
    assert_eq!(e, ResponseError::InvalidPartitions);
    let image = cluster.wait_for_equal_images().await;
    assert!(image.topics.get("dry").is_none());
    for name in ["badconf", "badvalue", "overreplicated", "empty", "a_b"] {
        assert!(image.topics.get(name).is_none(), "{name} was created");
    }
    assert_eq!(image.topics.by_id.len(), 3);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_name_make_one_topic() {
    let (mut cluster, _) = cluster().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3 {
        let addr = cluster.node(i).kafka_addr.to_string();
        tasks.spawn(async move {
            let mut c = KafkaClient::connect(&addr, Duration::from_secs(15))
                .await
                .unwrap();
            c.create_topic(&spec("race", 3, 1, &[]), false).await
        });
    }
    let mut won = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(refused::<()>(Err(e)).0, ResponseError::TopicAlreadyExists),
        }
    }
    assert_eq!(won, 1);
    let image = cluster.wait_for_equal_images().await;
    assert_eq!(image.topics.get("race").unwrap().partitions.len(), 3);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_grow_and_topics_delete_by_name_and_id() {
    let (mut cluster, follower) = cluster().await;
    let mut admin = client(&cluster, follower).await;
    admin
        .create_topic(&spec("grow", 2, 1, &[]), false)
        .await
        .unwrap();
    admin.create_partitions("grow", 5, false).await.unwrap();
    let topic = cluster.image(follower).topics.get("grow").cloned().unwrap();
    assert_eq!(
        topic.partitions.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let (e, message) = refused(admin.create_partitions("grow", 3, false).await);
    assert_eq!(e, ResponseError::InvalidPartitions);
    assert!(message.contains("currently has 5"), "{message}");
    let (e, _) = refused(admin.create_partitions("grow", 5, false).await);
    assert_eq!(e, ResponseError::InvalidPartitions);
    admin.create_partitions("grow", 9, true).await.unwrap();
    let (e, _) = refused(admin.create_partitions("nope", 9, false).await);
    assert_eq!(e, ResponseError::UnknownTopicOrPartition);
    assert_eq!(
        cluster
            .image(follower)
            .topics
            .get("grow")
            .unwrap()
            .partitions
            .len(),
        5
    );

    // The metadata a client reads agrees.
    let md = admin.metadata(Some(vec!["grow".into()])).await.unwrap();
    assert_eq!(md.topics[0].partitions.len(), 5);

    let deleted_id = admin.delete_topic("grow").await.unwrap();
    assert_eq!(deleted_id, topic.topic_id);
    assert!(cluster.image(follower).topics.get("grow").is_none());
    let md = admin.metadata(Some(vec!["grow".into()])).await.unwrap();
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(cluster
        .image(follower)
        .configs
        .get(ConfigResourceType::Topic, "grow")
        .is_none());

    let created = admin
        .create_topic(&spec("byid", 1, 1, &[]), false)
        .await
        .unwrap();
    let name = admin.delete_topic_by_id(created.topic_id).await.unwrap();
    assert_eq!(name, "byid");
    assert!(!cluster
        .image(follower)
        .topics
        .by_id
        .contains_key(&created.topic_id));
    let (e, _) = refused(admin.delete_topic("byid").await);
    assert_eq!(e, ResponseError::UnknownTopicOrPartition);
    let (e, _) = refused(admin.delete_topic_by_id(Uuid::new_v4()).await);
    assert_eq!(e, ResponseError::UnknownTopicId);

    // A deleted name can be created again, with a new id.
    let again = admin
        .create_topic(&spec("grow", 1, 1, &[]), false)
        .await
        .unwrap();
    assert_ne!(again.topic_id, topic.topic_id);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_describe_with_sources_and_alter_incrementally() {
    let (mut cluster, follower) = cluster().await;
    let mut admin = client(&cluster, follower).await;
    admin
        .create_topic(&spec("conf", 1, 1, &[("retention.ms", "1000")]), false)
        .await
        .unwrap();
    let describe = |configs: &[fjord::client::admin::TopicConfigEntry], name: &str| {
        let c = configs
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        (c.value.clone().unwrap_or_default(), c.source.clone())
    };
    let configs = admin.describe_topic_configs("conf").await.unwrap();
    assert_eq!(
        describe(&configs, "retention.ms"),
        ("1000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    assert_eq!(
        describe(&configs, "segment.bytes"),
        ("2048".into(), "STATIC_BROKER_CONFIG".into())
    );
    assert_eq!(
        describe(&configs, "cleanup.policy"),
        ("delete".into(), "DEFAULT_CONFIG".into())
    );
    let (e, _) = refused(admin.describe_topic_configs("missing").await);
    assert_eq!(e, ResponseError::UnknownTopicOrPartition);

    let set =
        |k: &str, op: AlterConfigOp, v: Option<&str>| (k.to_string(), op, v.map(str::to_string));
    admin
        .alter_topic_configs(
            "conf",
            &[
                set("segment.ms", AlterConfigOp::Set, Some("60000")),
                set("retention.ms", AlterConfigOp::Delete, None),
                set("cleanup.policy", AlterConfigOp::Append, Some("compact")),
            ],
            false,
        )
        .await
        .unwrap();
    let configs = admin.describe_topic_configs("conf").await.unwrap();
    assert_eq!(
        describe(&configs, "segment.ms"),
        ("60000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    assert_eq!(
        describe(&configs, "retention.ms"),
        ("604800000".into(), "DEFAULT_CONFIG".into())
    );
    assert_eq!(
        describe(&configs, "cleanup.policy"),
        ("delete,compact".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    admin
        .alter_topic_configs(
            "conf",
            &[set(
                "cleanup.policy",
                AlterConfigOp::Subtract,
                Some("delete"),
            )],
            false,
        )
        .await
        .unwrap();
    let configs = admin.describe_topic_configs("conf").await.unwrap();
    assert_eq!(describe(&configs, "cleanup.policy").0, "compact");

    // Validate-only changes nothing; bad values and keys are refused by name.
    admin
        .alter_topic_configs(
            "conf",
            &[set("segment.ms", AlterConfigOp::Set, Some("5"))],
            true,
        )
        .await
        .unwrap();
    let (e, message) = refused(
        admin
            .alter_topic_configs(
                "conf",
                &[set("segment.ms", AlterConfigOp::Set, Some("0"))],
                false,
            )
            .await,
    );
    assert_eq!(e, ResponseError::InvalidConfig);
    assert!(message.contains("segment.ms"), "{message}");
    let (e, _) = refused(
        admin
            .alter_topic_configs(
                "conf",
                &[set("retention.ms", AlterConfigOp::Append, Some("1"))],
                false,
            )
            .await,
    );
    assert_eq!(e, ResponseError::InvalidConfig);
    let (e, _) = refused(
        admin
            .alter_topic_configs(
                "missing",
                &[set("segment.ms", AlterConfigOp::Set, Some("5"))],
                false,
            )
            .await,
    );
    assert_eq!(e, ResponseError::UnknownTopicOrPartition);
    let configs = admin.describe_topic_configs("conf").await.unwrap();
    assert_eq!(describe(&configs, "segment.ms").0, "60000");

    // Legacy AlterConfigs replaces the whole override set.
    let legacy =
        AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("conf"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.bytes"))
                .with_value(Some(StrBytes::from_static_str("4096")))])]);
    let response = admin.request(legacy).await.unwrap();
    assert_eq!(response.responses[0].error_code, 0);
    let image = cluster.wait_for_equal_images().await;
    let overrides = image
        .configs
        .get(ConfigResourceType::Topic, "conf")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        overrides.into_iter().collect::<Vec<_>>(),
        [("retention.bytes".to_string(), "4096".to_string())]
    );
    cluster.stop_all().await;
}

fn metadata_for(name: &str, allow_auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(name.to_string())),
        ))]))
        .with_allow_auto_topic_creation(allow_auto_create)
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_auto_creates_when_allowed() {
    let (mut cluster, follower) = cluster().await;
    let mut c = client(&cluster, follower).await;
    let md = c.request(metadata_for("not-asked", false)).await.unwrap();
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );

    let md = c.request(metadata_for("auto", true)).await.unwrap();
    let topic = &md.topics[0];
    assert_eq!(topic.error_code, 0, "{topic:?}");
    assert_eq!(topic.partitions.len(), 2, "num.partitions");
    assert!(topic.partitions.iter().all(|p| p.leader_id.0 > 0));

    let md = c.request(metadata_for("bad name", true)).await.unwrap();
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
    let md = c
        .request(metadata_for("__consumer_offsets", true))
        .await
        .unwrap();
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let image = cluster.wait_for_equal_images().await;
    assert!(image.topics.get("not-asked").is_none());
    assert!(image.topics.get("auto").is_some());
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_creation_can_be_switched_off() {
    let mut cluster = TestCluster::start(1, "auto.create.topics.enable=false\n").await;
    cluster.wait_for_leader().await;
    wait_for("an active broker", Duration::from_secs(30), || async {
        (cluster.image(0).cluster.active_brokers().count() == 1).then_some(())
    })
    .await;
    let mut c = client(&cluster, 0).await;
    let md = c.request(metadata_for("auto", true)).await.unwrap();
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert!(cluster.image(0).topics.get("auto").is_none());
    cluster.stop_all().await;
}

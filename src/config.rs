//! Broker configuration: a Kafka-style Java `.properties` file parsed into a typed,
//! validated [`Config`].
//!
//! Key names follow Kafka wherever Kafka has the setting; fjord-only settings use a
//! `fjord.` prefix. Unknown keys are not errors: they are returned as warnings
//! (one per key) for the caller to log once.
//!
//! Listener names are case-insensitive and normalised to upper case, as in Kafka.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Data directory used when neither `log.dirs` nor `log.dir` is set.
pub const DEFAULT_LOG_DIR: &str = "./fjord-data";

const DEFAULT_LISTENERS: &str = "PLAINTEXT://:9092,CONTROLLER://:9093";
const MS_PER_MINUTE: i64 = 60 * 1000;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;

/// A configuration problem: the key it concerns (or the file path, for an unreadable
/// file) and what is wrong with it. Always a single line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// A named listener, `NAME://host:port`. `host` is stored without IPv6 brackets;
/// an empty host means all interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// Address string suitable for binding a socket: empty host becomes `0.0.0.0`,
    /// IPv6 hosts are bracketed.
    pub fn bind_address(&self) -> String {
        if self.host.is_empty() {
            format!("0.0.0.0:{}", self.port)
        } else {
            format!("{}:{}", bracket_host(&self.host), self.port)
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}",
            self.name,
            bracket_host(&self.host),
            self.port
        )
    }
}

/// A member of the controller quorum, `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.id, bracket_host(&self.host), self.port)
    }
}

fn bracket_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Typed, validated broker configuration. See the module docs and
/// `config/server.properties` for the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `node.id` [1], >= 0.
    pub node_id: i32,
    /// `process.roles` [broker,controller]; fjord currently requires both.
    pub process_roles: Vec<String>,
    /// `listeners` [PLAINTEXT://:9092,CONTROLLER://:9093].
    pub listeners: Vec<Listener>,
    /// `advertised.listeners` [the non-controller `listeners`, with an empty or
    /// wildcard host replaced by `localhost`].
    pub advertised_listeners: Vec<Listener>,
    /// `controller.listener.names` [CONTROLLER].
    pub controller_listener_names: Vec<String>,
    /// `inter.broker.listener.name` [PLAINTEXT].
    pub inter_broker_listener_name: String,
    /// `controller.quorum.voters` [`<node.id>@localhost:<controller listener port>`].
    pub controller_quorum_voters: Vec<Voter>,
    /// `log.dirs`, else `log.dir` [./fjord-data]; never empty.
    pub log_dirs: Vec<PathBuf>,
    /// `metadata.log.dir` [unset: first of `log_dirs`].
    pub metadata_log_dir: Option<PathBuf>,
    /// `fjord.metrics.listen` [0.0.0.0:9308].
    pub metrics_listen: SocketAddr,
    /// `fjord.cluster.id` [unset]; 1..=64 chars of `[A-Za-z0-9_-]`.
    pub cluster_id: Option<String>,
    /// `broker.heartbeat.interval.ms` [2000].
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms` [9000]; > heartbeat interval.
    pub broker_session_timeout_ms: u64,
    /// `controller.quorum.election.timeout.ms` [1000]; >= 10.
    pub controller_quorum_election_timeout_ms: u64,
    /// `fjord.raft.heartbeat.interval.ms` [100]; < election timeout.
    pub raft_heartbeat_interval_ms: u64,
    /// `fjord.metadata.snapshot.interval.entries` [10000].
    pub metadata_snapshot_interval_entries: u64,
    /// `fjord.metadata.log.keep.entries` [1000]: entries kept behind a snapshot.
    pub metadata_log_keep_entries: u64,
    /// `num.partitions` [1].
    pub num_partitions: i32,
    /// `default.replication.factor` [1].
    pub default_replication_factor: i16,
    /// `min.insync.replicas` [1].
    pub min_insync_replicas: i32,
    /// `auto.create.topics.enable` [true].
    pub auto_create_topics_enable: bool,
    /// `log.segment.bytes` [1 GiB]; >= 1024.
    pub log_segment_bytes: u64,
    /// `log.roll.ms`, else `log.roll.hours` [168 hours].
    pub log_roll_ms: u64,
    /// `log.retention.ms`, else `.minutes`, else `.hours` [168 hours]; -1 = unlimited.
    pub log_retention_ms: i64,
    /// `log.retention.bytes` [-1 = unlimited].
    pub log_retention_bytes: i64,
    /// `log.flush.interval.messages` [i64::MAX].
    pub log_flush_interval_messages: i64,
    /// `log.flush.interval.ms` [unset].
    pub log_flush_interval_ms: Option<u64>,
    /// `log.retention.check.interval.ms` [300000].
    pub log_retention_check_interval_ms: u64,
    /// `socket.request.max.bytes` [100 MiB].
    pub socket_request_max_bytes: i32,
    /// `replica.lag.time.max.ms` [30000].
    pub replica_lag_time_max_ms: u64,
    /// `unclean.leader.election.enable` [false].
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable` [true].
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds` [10; Kafka's is 300]: how
    /// often the active controller returns leadership to preferred replicas.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `controlled.shutdown.enable` [true]: on shutdown, hand leaderships
    /// to other ISR members first.
    pub controlled_shutdown_enable: bool,
    /// `group.initial.rebalance.delay.ms` [3000].
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.max.size` [i32::MAX].
    pub group_max_size: i32,
    /// `group.min.session.timeout.ms` [6000].
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` [1800000].
    pub group_max_session_timeout_ms: i32,
    /// `offsets.retention.minutes` [10080 = 7 days].
    pub offsets_retention_minutes: u64,
    /// `message.max.bytes` [1048588].
    pub message_max_bytes: i32,
    /// `log.message.timestamp.type` [CreateTime]; CreateTime or LogAppendTime.
    pub log_message_timestamp_type: String,
    /// The known keys the file or the command line set, whatever their value.
    pub explicit_keys: ExplicitKeys,
}

/// Which keys were spelled out: Kafka reports a topic config whose default
/// comes from such a key as `STATIC_BROKER_CONFIG`, else `DEFAULT_CONFIG`.
/// Provenance, not value: configs with equal values are equal whichever
/// keys spelled them out.
#[derive(Debug, Clone, Default)]
pub struct ExplicitKeys(pub BTreeSet<String>);

impl ExplicitKeys {
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

impl PartialEq for ExplicitKeys {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for Config {
    /// All defaults (what an empty properties file gives).
    fn default() -> Self {
        Config::from_properties("", &[])
            .expect("built-in defaults are valid")
            .0
    }
}

impl Config {
    /// Parse properties text, then apply overrides (later wins), validate. Returns the
    /// config and warnings (one per unknown key, e.g. "config: unknown key 'foo.bar' ignored").
    pub fn from_properties(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut props = Props::default();
        for (key, value) in parse_properties(text)? {
            props.set(key, value);
        }
        for (key, value) in overrides {
            props.set(key.trim().to_string(), value.trim().to_string());
        }
        let config = build(&mut props)?;
        Ok((config, props.unknown_key_warnings()))
    }

    /// Reads the file (None = no file, all defaults) and calls from_properties. An
    /// unreadable file is a ConfigError with key = the path.
    pub fn load(
        path: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let text = match path {
            None => String::new(),
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    path.display().to_string(),
                    format!("cannot read config file: {e}"),
                )
            })?,
        };
        Config::from_properties(&text, overrides)
    }

    /// The listener named by `inter.broker.listener.name` (the Kafka client listener).
    pub fn kafka_listener(&self) -> &Listener {
        self.listener_named(&self.inter_broker_listener_name)
    }

    /// The listener named by the first of `controller.listener.names`.
    pub fn controller_listener(&self) -> &Listener {
        let name = self
            .controller_listener_names
            .first()
            .expect("validated config has a controller listener name");
        self.listener_named(name)
    }

    /// Host and port that clients should use to reach this broker.
    pub fn advertised_kafka_endpoint(&self) -> (String, u16) {
        if let Some(l) = self
            .advertised_listeners
            .iter()
            .find(|l| l.name == self.inter_broker_listener_name)
        {
            return (l.host.clone(), l.port);
        }
        let l = self.kafka_listener();
        (advertisable_host(&l.host), l.port)
    }

    /// `metadata.log.dir` if set, else the first of `log.dirs`.
    pub fn metadata_dir(&self) -> PathBuf {
        self.metadata_log_dir
            .clone()
            .unwrap_or_else(|| self.data_dir())
    }

    /// The first of `log.dirs`.
    pub fn data_dir(&self) -> PathBuf {
        self.log_dirs
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR))
    }

    fn listener_named(&self, name: &str) -> &Listener {
        self.listeners
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("config: listener '{name}' not in listeners"))
    }
}

/// Host to advertise for a bound host: empty or wildcard becomes `localhost`.
fn advertisable_host(host: &str) -> String {
    match host {
        "" | "0.0.0.0" | "::" => "localhost".to_string(),
        h => h.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Building and validating
// ---------------------------------------------------------------------------

fn build(p: &mut Props) -> Result<Config, ConfigError> {
    // node.id
    let node_id: i32 = int_or(p, "node.id", 1)?;
    require(node_id >= 0, "node.id", || {
        format!("must be >= 0, got {node_id}")
    })?;

    // process.roles
    let process_roles = parse_roles(&p.get_or("process.roles", "broker,controller"))?;

    // listeners
    let listeners = parse_listener_list("listeners", &p.get_or("listeners", DEFAULT_LISTENERS))?;
    let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let not_a_listener = |key: &str, name: &str| {
        ConfigError::new(
            key,
            format!(
                "'{}' is not one of the listeners ({})",
                show(name),
                listener_names.join(", ")
            ),
        )
    };

    // controller.listener.names
    let key = "controller.listener.names";
    let controller_listener_names: Vec<String> = split_list(&p.get_or(key, "CONTROLLER"))
        .into_iter()
        .map(|n| n.to_ascii_uppercase())
        .collect();
    require(!controller_listener_names.is_empty(), key, || {
        "must name at least one listener".to_string()
    })?;
    for (i, name) in controller_listener_names.iter().enumerate() {
        require(!controller_listener_names[..i].contains(name), key, || {
            format!("'{}' is listed twice", show(name))
        })?;
        if !listener_names.contains(&name.as_str()) {
            return Err(not_a_listener(key, name));
        }
    }

    // inter.broker.listener.name
    let key = "inter.broker.listener.name";
    let inter_broker_listener_name = p.get_or(key, "PLAINTEXT").to_ascii_uppercase();
    require(!inter_broker_listener_name.is_empty(), key, || {
        "must not be empty".to_string()
    })?;
    if !listener_names.contains(&inter_broker_listener_name.as_str()) {
        return Err(not_a_listener(key, &inter_broker_listener_name));
    }
    require(
        !controller_listener_names.contains(&inter_broker_listener_name),
        key,
        || {
            format!(
                "'{inter_broker_listener_name}' is a controller listener (controller.listener.names); \
                 the Kafka listener must be a different one"
            )
        },
    )?;

    // advertised.listeners
    let key = "advertised.listeners";
    let advertised_listeners = match p.get(key) {
        None => listeners
            .iter()
            .filter(|l| !controller_listener_names.contains(&l.name))
            .map(|l| Listener {
                name: l.name.clone(),
                host: advertisable_host(&l.host),
                port: l.port,
            })
            .collect(),
        Some(raw) => {
            let mut advertised = parse_listener_list(key, &raw)?;
            for l in &mut advertised {
                if !listener_names.contains(&l.name.as_str()) {
                    return Err(not_a_listener(key, &l.name));
                }
                require(l.host != "0.0.0.0" && l.host != "::", key, || {
                    format!(
                        "'{l}' uses a wildcard address; advertise a host name or address clients can reach"
                    )
                })?;
                require(l.port != 0, key, || format!("'{l}' has port 0"))?;
                l.host = advertisable_host(&l.host);
            }
            require(
                advertised
                    .iter()
                    .any(|l| l.name == inter_broker_listener_name),
                key,
                || format!("must include the inter-broker listener '{inter_broker_listener_name}'"),
            )?;
            advertised
        }
    };

    // controller.quorum.voters
    let key = "controller.quorum.voters";
    let controller_quorum_voters = match p.get(key) {
        None => {
            let controller_name = &controller_listener_names[0];
            let port = listeners
                .iter()
                .find(|l| &l.name == controller_name)
                .map_or(9093, |l| l.port);
            vec![Voter {
                id: node_id,
                host: "localhost".to_string(),
                port,
            }]
        }
        Some(raw) => {
            let voters = split_list(&raw)
                .iter()
                .map(|item| parse_voter(key, item))
                .collect::<Result<Vec<_>, _>>()?;
            require(!voters.is_empty(), key, || {
                "must list at least one voter (id@host:port)".to_string()
            })?;
            for (i, v) in voters.iter().enumerate() {
                require(!voters[..i].iter().any(|o| o.id == v.id), key, || {
                    format!("voter id {} is listed twice", v.id)
                })?;
            }
            require(voters.iter().any(|v| v.id == node_id), key, || {
                format!("does not contain this node's node.id {node_id}")
            })?;
            voters
        }
    };

    // log.dirs / log.dir
    let log_dirs_raw = p.get("log.dirs");
    let log_dir_raw = p.get("log.dir");
    let (key, raw) = match (log_dirs_raw, log_dir_raw) {
        (Some(v), _) => ("log.dirs", v),
        (None, Some(v)) => ("log.dir", v),
        (None, None) => ("log.dirs", DEFAULT_LOG_DIR.to_string()),
    };
    let log_dirs: Vec<PathBuf> = split_list(&raw).into_iter().map(PathBuf::from).collect();
    require(!log_dirs.is_empty(), key, || {
        "must list at least one directory".to_string()
    })?;

    // metadata.log.dir
    let key = "metadata.log.dir";
    let metadata_log_dir = match p.get(key) {
        None => None,
        Some(v) => {
            require(!v.is_empty(), key, || "must not be empty".to_string())?;
            Some(PathBuf::from(v))
        }
    };

    // fjord.metrics.listen
    let key = "fjord.metrics.listen";
    let raw = p.get_or(key, "0.0.0.0:9308");
    let metrics_listen: SocketAddr = raw.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!(
                "expected an address like 0.0.0.0:9308, got '{}'",
                show(&raw)
            ),
        )
    })?;

    // fjord.cluster.id
    let key = "fjord.cluster.id";
    let cluster_id = p.get(key);
    if let Some(id) = &cluster_id {
        require(
            (1..=64).contains(&id.chars().count())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            key,
            || {
                format!(
                    "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', got '{}'",
                    show(id)
                )
            },
        )?;
    }

    // Broker liveness.
    let broker_heartbeat_interval_ms: u64 = int_or(p, "broker.heartbeat.interval.ms", 2000)?;
    require_positive("broker.heartbeat.interval.ms", broker_heartbeat_interval_ms)?;
    let broker_session_timeout_ms: u64 = int_or(p, "broker.session.timeout.ms", 9000)?;
    require(
        broker_session_timeout_ms > broker_heartbeat_interval_ms,
        "broker.session.timeout.ms",
        || {
            format!(
                "must be greater than broker.heartbeat.interval.ms ({broker_heartbeat_interval_ms}), \
                 got {broker_session_timeout_ms}"
            )
        },
    )?;

    // Raft timing.
    let key = "controller.quorum.election.timeout.ms";
    let controller_quorum_election_timeout_ms: u64 = int_or(p, key, 1000)?;
    require(controller_quorum_election_timeout_ms >= 10, key, || {
        format!("must be >= 10, got {controller_quorum_election_timeout_ms}")
    })?;
    let key = "fjord.raft.heartbeat.interval.ms";
    let raft_heartbeat_interval_ms: u64 = int_or(p, key, 100)?;
    require_positive(key, raft_heartbeat_interval_ms)?;
    require(
        raft_heartbeat_interval_ms < controller_quorum_election_timeout_ms,
        key,
        || {
            format!(
                "must be less than controller.quorum.election.timeout.ms \
                 ({controller_quorum_election_timeout_ms}), got {raft_heartbeat_interval_ms}"
            )
        },
    )?;

    // Metadata log.
    let key = "fjord.metadata.snapshot.interval.entries";
    let metadata_snapshot_interval_entries: u64 = int_or(p, key, 10_000)?;
    require_positive(key, metadata_snapshot_interval_entries)?;
    let metadata_log_keep_entries: u64 = int_or(p, "fjord.metadata.log.keep.entries", 1000)?;

    // Topic defaults.
    let num_partitions: i32 = int_or(p, "num.partitions", 1)?;
    require_positive("num.partitions", num_partitions)?;
    let default_replication_factor: i16 = int_or(p, "default.replication.factor", 1)?;
    require_positive("default.replication.factor", default_replication_factor)?;
    let min_insync_replicas: i32 = int_or(p, "min.insync.replicas", 1)?;
    require_positive("min.insync.replicas", min_insync_replicas)?;
    let auto_create_topics_enable = bool_or(p, "auto.create.topics.enable", true)?;

    // Log segments.
    let key = "log.segment.bytes";
    let log_segment_bytes: u64 = int_or(p, key, 1_073_741_824)?;
    require(log_segment_bytes >= 1024, key, || {
        format!("must be >= 1024, got {log_segment_bytes}")
    })?;

    let roll_ms: Option<u64> = opt_int(p, "log.roll.ms")?;
    let roll_hours: Option<u64> = opt_int(p, "log.roll.hours")?;
    let log_roll_ms = match (roll_ms, roll_hours) {
        (Some(ms), _) => {
            require_positive("log.roll.ms", ms)?;
            ms
        }
        (None, Some(hours)) => {
            require_positive("log.roll.hours", hours)?;
            hours.checked_mul(MS_PER_HOUR as u64).ok_or_else(|| {
                ConfigError::new("log.roll.hours", format!("{hours} hours is too large"))
            })?
        }
        (None, None) => 168 * MS_PER_HOUR as u64,
    };

    // Retention: ms over minutes over hours (Kafka precedence); -1 = unlimited.
    let retention_ms: Option<i64> = opt_int(p, "log.retention.ms")?;
    let retention_minutes: Option<i64> = opt_int(p, "log.retention.minutes")?;
    let retention_hours: Option<i64> = opt_int(p, "log.retention.hours")?;
    let (key, value, unit) = match (retention_ms, retention_minutes, retention_hours) {
        (Some(v), _, _) => ("log.retention.ms", v, 1),
        (None, Some(v), _) => ("log.retention.minutes", v, MS_PER_MINUTE),
        (None, None, Some(v)) => ("log.retention.hours", v, MS_PER_HOUR),
        (None, None, None) => ("log.retention.hours", 168, MS_PER_HOUR),
    };
    require(value >= -1, key, || {
        format!("must be -1 (unlimited) or >= 0, got {value}")
    })?;
    let log_retention_ms = if value == -1 {
        -1
    } else {
        value
            .checked_mul(unit)
            .ok_or_else(|| ConfigError::new(key, format!("{value} is too large")))?
    };

    let key = "log.retention.bytes";
    let log_retention_bytes: i64 = int_or(p, key, -1)?;
    require(log_retention_bytes >= -1, key, || {
        format!("must be -1 (unlimited) or >= 0, got {log_retention_bytes}")
    })?;

    let key = "log.flush.interval.messages";
    let log_flush_interval_messages: i64 = int_or(p, key, i64::MAX)?;
    require_positive(key, log_flush_interval_messages)?;
    let log_flush_interval_ms: Option<u64> = opt_int(p, "log.flush.interval.ms")?;
    let key = "log.retention.check.interval.ms";
    let log_retention_check_interval_ms: u64 = int_or(p, key, 300_000)?;
    require_positive(key, log_retention_check_interval_ms)?;

    // Requests and replication.
    let key = "socket.request.max.bytes";
    let socket_request_max_bytes: i32 = int_or(p, key, 104_857_600)?;
    require_positive(key, socket_request_max_bytes)?;
    let replica_lag_time_max_ms: u64 = int_or(p, "replica.lag.time.max.ms", 30_000)?;
    let unclean_leader_election_enable = bool_or(p, "unclean.leader.election.enable", false)?;
    let auto_leader_rebalance_enable = bool_or(p, "auto.leader.rebalance.enable", true)?;
    let key = "leader.imbalance.check.interval.seconds";
    let leader_imbalance_check_interval_seconds: u64 = int_or(p, key, 10)?;
    require_positive(key, leader_imbalance_check_interval_seconds)?;
    let controlled_shutdown_enable = bool_or(p, "controlled.shutdown.enable", true)?;

    // Consumer groups.
    let group_initial_rebalance_delay_ms: u64 =
        int_or(p, "group.initial.rebalance.delay.ms", 3000)?;
    let key = "group.max.size";
    let group_max_size: i32 = int_or(p, key, i32::MAX)?;
    require_positive(key, group_max_size)?;
    let key = "group.min.session.timeout.ms";
    let group_min_session_timeout_ms: i32 = int_or(p, key, 6000)?;
    require_positive(key, group_min_session_timeout_ms)?;
    let key = "group.max.session.timeout.ms";
    let group_max_session_timeout_ms: i32 = int_or(p, key, 1_800_000)?;
    require_positive(key, group_max_session_timeout_ms)?;
    let key = "offsets.retention.minutes";
    let offsets_retention_minutes: u64 = int_or(p, key, 10_080)?;
    require_positive(key, offsets_retention_minutes)?;

    // Messages.
    let key = "message.max.bytes";
    let message_max_bytes: i32 = int_or(p, key, 1_048_588)?;
    require(message_max_bytes >= 0, key, || {
        format!("must be >= 0, got {message_max_bytes}")
    })?;
    let key = "log.message.timestamp.type";
    let log_message_timestamp_type = p.get_or(key, "CreateTime");
    require(
        log_message_timestamp_type == "CreateTime" || log_message_timestamp_type == "LogAppendTime",
        key,
        || {
            format!(
                "expected CreateTime or LogAppendTime, got '{}'",
                show(&log_message_timestamp_type)
            )
        },
    )?;

    let explicit_keys = ExplicitKeys(
        p.entries
            .iter()
            .filter(|(k, _)| p.known.contains(k.as_str()))
            .map(|(k, _)| k.clone())
            .collect(),
    );
    Ok(Config {
        node_id,
        process_roles,
        listeners,
        advertised_listeners,
        controller_listener_names,
        inter_broker_listener_name,
        controller_quorum_voters,
        log_dirs,
        metadata_log_dir,
        metrics_listen,
        cluster_id,
        broker_heartbeat_interval_ms,
        broker_session_timeout_ms,
        controller_quorum_election_timeout_ms,
        raft_heartbeat_interval_ms,
        metadata_snapshot_interval_entries,
        metadata_log_keep_entries,
        num_partitions,
        default_replication_factor,
        min_insync_replicas,
        auto_create_topics_enable,
        log_segment_bytes,
        log_roll_ms,
        log_retention_ms,
        log_retention_bytes,
        log_flush_interval_messages,
        log_flush_interval_ms,
        log_retention_check_interval_ms,
        socket_request_max_bytes,
        replica_lag_time_max_ms,
        unclean_leader_election_enable,
        auto_leader_rebalance_enable,
        leader_imbalance_check_interval_seconds,
        controlled_shutdown_enable,
        group_initial_rebalance_delay_ms,
        group_max_size,
        group_min_session_timeout_ms,
        group_max_session_timeout_ms,
        offsets_retention_minutes,
        message_max_bytes,
        log_message_timestamp_type,
        explicit_keys,
    })
}

fn parse_roles(raw: &str) -> Result<Vec<String>, ConfigError> {
    let key = "process.roles";
    let roles = split_list(raw);
    require(!roles.is_empty(), key, || {
        "must list at least one role (broker, controller)".to_string()
    })?;
    for (i, role) in roles.iter().enumerate() {
        require(role == "broker" || role == "controller", key, || {
            format!(
                "unknown role '{}'; expected broker or controller",
                show(role)
            )
        })?;
        require(!roles[..i].contains(role), key, || {
            format!("role '{role}' is listed twice")
        })?;
    }
    let has = |r: &str| roles.iter().any(|x| x == r);
    require(has("broker") && has("controller"), key, || {
        format!(
            "fjord nodes run both broker and controller roles; '{}' alone is not supported yet",
            roles.join(",")
        )
    })?;
    Ok(roles)
}

fn parse_listener_list(key: &str, raw: &str) -> Result<Vec<Listener>, ConfigError> {
    let listeners = split_list(raw)
        .iter()
        .map(|item| parse_listener(key, item))
        .collect::<Result<Vec<_>, _>>()?;
    require(!listeners.is_empty(), key, || {
        "must list at least one listener (NAME://host:port)".to_string()
    })?;
    for (i, l) in listeners.iter().enumerate() {
        for other in &listeners[..i] {
            require(other.name != l.name, key, || {
                format!("listener name '{}' is used twice", l.name)
            })?;
            require(l.port == 0 || other.port != l.port, key, || {
                format!(
                    "listeners '{}' and '{}' both use port {}",
                    other.name, l.name, l.port
                )
            })?;
        }
    }
    Ok(listeners)
}

/// `NAME://host:port`; host may be empty or a bracketed IPv6 address.
fn parse_listener(key: &str, item: &str) -> Result<Listener, ConfigError> {
    let bad = || {
        ConfigError::new(
            key,
            format!("expected NAME://host:port, got '{}'", show(item)),
        )
    };
    let (name, host_port) = item.split_once("://").ok_or_else(bad)?;
    let name = name.trim();
    require(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        key,
        || {
            format!(
                "listener name '{}' must be letters, digits, '_' or '-' (in '{}')",
                show(name),
                show(item)
            )
        },
    )?;
    let (host, port) = parse_host_port(key, host_port, item, bad)?;
    Ok(Listener {
        name: name.to_ascii_uppercase(),
        host,
        port,
    })
}

/// `id@host:port` with a non-empty host and a non-zero port.
fn parse_voter(key: &str, item: &str) -> Result<Voter, ConfigError> {
    let bad = || ConfigError::new(key, format!("expected id@host:port, got '{}'", show(item)));
    let (id, host_port) = item.split_once('@').ok_or_else(bad)?;
    let id = id.trim();
    let id: i32 = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        id.parse().map_err(|_| {
            ConfigError::new(
                key,
                format!("voter id '{id}' is out of range (in '{}')", show(item)),
            )
        })?
    } else {
        return Err(ConfigError::new(
            key,
            format!(
                "voter id must be a non-negative integer, got '{}' (in '{}')",
                show(id),
                show(item)
            ),
        ));
    };
    let (host, port) = parse_host_port(key, host_port, item, bad)?;
    require(!host.is_empty(), key, || {
        format!("voter '{}' has an empty host", show(item))
    })?;
    require(port != 0, key, || {
        format!("voter '{}' has port 0", show(item))
    })?;
    Ok(Voter { id, host, port })
}

fn parse_host_port(
    key: &str,
    host_port: &str,
    item: &str,
    bad: impl Fn() -> ConfigError,
) -> Result<(String, u16), ConfigError> {
    let (host, port) = host_port.trim().rsplit_once(':').ok_or_else(&bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(&bad)?,
        None => host,
    };
    if host
        .chars()
        .any(|c| c.is_whitespace() || "/[]@,".contains(c))
    {
        return Err(bad());
    }
    let port = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        port.parse::<u16>().ok()
    } else {
        None
    };
    let port = port.ok_or_else(|| {
        ConfigError::new(
            key,
            format!(
                "port must be an integer from 0 to 65535, got '{}' (in '{}')",
                show(host_port.rsplit_once(':').map_or("", |(_, p)| p)),
                show(item)
            ),
        )
    })?;
    Ok((host.to_string(), port))
}

// ---------------------------------------------------------------------------
// Typed value helpers
// ---------------------------------------------------------------------------

/// The key/value pairs seen so far (file then overrides; later wins, first position
/// kept) and the keys fjord asked for.
#[derive(Default)]
struct Props {
    entries: Vec<(String, String)>,
    known: HashSet<&'static str>,
}

impl Props {
    fn set(&mut self, key: String, value: String) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value of `key`, if set; marks `key` as known.
    fn get(&mut self, key: &'static str) -> Option<String> {
        self.known.insert(key);
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn get_or(&mut self, key: &'static str, default: &str) -> String {
        self.get(key).unwrap_or_else(|| default.to_string())
    }

    fn unknown_key_warnings(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(k, _)| !self.known.contains(k.as_str()))
            .map(|(k, _)| format!("config: unknown key '{}' ignored", show(k)))
            .collect()
    }
}

/// Integer types a config value can be parsed into.
trait Int: Copy + TryFrom<i128> {
    const MIN: i128;
    const MAX: i128;
}

macro_rules! impl_int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
        }
    )*};
}
impl_int!(i16, i32, i64, u16, u64);

/// Plain decimal with an optional sign.
fn parse_int<T: Int>(key: &str, value: &str) -> Result<T, ConfigError> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::new(
            key,
            format!("expected an integer, got '{}'", show(value)),
        ));
    }
    let out_of_range = || {
        if T::MIN == 0 && value.starts_with('-') {
            ConfigError::new(
                key,
                format!("expected a non-negative integer, got '{}'", show(value)),
            )
        } else {
            ConfigError::new(
                key,
                format!(
                    "expected an integer from {} to {}, got '{}'",
                    T::MIN,
                    T::MAX,
                    show(value)
                ),
            )
        }
    };
    let n: i128 = value.parse().map_err(|_| out_of_range())?;
    T::try_from(n).map_err(|_| out_of_range())
}

fn opt_int<T: Int>(p: &mut Props, key: &'static str) -> Result<Option<T>, ConfigError> {
    p.get(key).map(|v| parse_int(key, &v)).transpose()
}

fn int_or<T: Int>(p: &mut Props, key: &'static str, default: T) -> Result<T, ConfigError> {
    Ok(opt_int(p, key)?.unwrap_or(default))
}

fn bool_or(p: &mut Props, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match p.get(key) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ConfigError::new(
            key,
            format!("expected true or false, got '{}'", show(&v)),
        )),
    }
}

fn require(ok: bool, key: &str, problem: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(key, problem()))
    }
}

fn require_positive<T: PartialOrd + Default + fmt::Display>(
    key: &str,
    value: T,
) -> Result<(), ConfigError> {
    require(value > T::default(), key, || {
        format!("must be > 0, got {value}")
    })
}

/// Comma-separated list; items trimmed, empty items dropped.
fn split_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A value made safe for a one-line message (control characters escaped).
fn show(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Java .properties syntax
// ---------------------------------------------------------------------------

/// Java `.properties` text -> key/value pairs in file order (duplicates kept).
///
/// Supports `#`/`!` comment lines, `key=value`, `key: value` and `key value`,
/// backslash line continuation (leading whitespace of the continuation line is
/// dropped), and the escapes `\t \n \r \f \uXXXX` (any other `\c` is `c`). Keys and
/// values are trimmed.
fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let first = trim_ws_start(line);
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut current = first;
        loop {
            if ends_with_odd_backslashes(current) {
                logical.push_str(&current[..current.len() - 1]);
                match lines.next() {
                    Some(next) => current = trim_ws_start(next),
                    None => break,
                }
            } else {
                logical.push_str(current);
                break;
            }
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let key = unescape(raw_key).map_err(|problem| ConfigError::new(show(raw_key), problem))?;
        let value =
            unescape(raw_value).map_err(|problem| ConfigError::new(key.clone(), problem))?;
        out.push((key, value));
    }
    Ok(out)
}

fn trim_ws_start(s: &str) -> &str {
    s.trim_start_matches([' ', '\t', '\x0c'])
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Splits a logical line at the first unescaped `=`, `:` or whitespace; the
/// separator (whitespace around at most one `=`/`:`) is dropped. Both parts are
/// still escaped.
fn split_key_value(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' | b'\x0c' => break,
            _ => i += 1,
        }
    }
    let i = i.min(bytes.len());
    let key = &line[..i];
    let mut rest = trim_ws_start(&line[i..]);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = trim_ws_start(after);
    }
    // Keep an escaped trailing space ("a\ ") from being trimmed into a lone backslash.
    let trimmed = rest.trim_end();
    if trimmed.len() < rest.len() && ends_with_odd_backslashes(trimmed) {
        let escaped = rest[trimmed.len()..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
        rest = &rest[..trimmed.len() + escaped];
    } else {
        rest = trimmed;
    }
    (key, rest)
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {} // a lone trailing backslash is dropped, as in Java
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let unit = read_hex4(&mut chars)?;
                let c = if (0xD800..0xDC00).contains(&unit) {
                    // High surrogate: must be followed by \uXXXX with a low surrogate.
                    let low = match (chars.next(), chars.next()) {
                        (Some('\\'), Some('u')) => read_hex4(&mut chars)?,
                        _ => return Err(malformed_unicode()),
                    };
                    char::decode_utf16([unit, low])
                        .next()
                        .and_then(Result::ok)
                        .ok_or_else(malformed_unicode)?
                } else {
                    char::from_u32(u32::from(unit)).ok_or_else(malformed_unicode)?
                };
                out.push(c);
            }
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

fn read_hex4(chars: &mut std::str::Chars<'_>) -> Result<u16, String> {
    let mut unit: u16 = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or_else(malformed_unicode)?;
        unit = unit * 16 + digit as u16;
    }
    Ok(unit)
}

fn malformed_unicode() -> String {
    "malformed \\uXXXX escape".to_string()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Config, Vec<String>) {
        Config::from_properties(text, &[]).unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    fn parse_err(text: &str) -> ConfigError {
        match Config::from_properties(text, &[]) {
            Ok((c, _)) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts `text` fails on `key`, and returns the one-line message.
    fn assert_err(text: &str, key: &str) -> String {
        let e = parse_err(text);
        assert_eq!(e.key, key, "wrong key for {text:?}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("config: {key}: ")), "{msg}");
        assert!(!msg.contains('\n'), "multi-line message: {msg:?}");
        msg
    }

    fn ov(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn l(name: &str, host: &str, port: u16) -> Listener {
        Listener {
            name: name.into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn defaults_from_empty_text() {
        let (c, warnings) = parse("");
        assert!(warnings.is_empty());
        assert_eq!(c.node_id, 1);
        assert_eq!(c.process_roles, vec!["broker", "controller"]);
        assert_eq!(
            c.listeners,
            vec![l("PLAINTEXT", "", 9092), l("CONTROLLER", "", 9093)]
        );
        assert_eq!(
            c.advertised_listeners,
            vec![l("PLAINTEXT", "localhost", 9092)]
        );
        assert_eq!(c.controller_listener_names, vec!["CONTROLLER"]);
        assert_eq!(c.inter_broker_listener_name, "PLAINTEXT");
        assert_eq!(
            c.controller_quorum_voters,
            vec![Voter {
                id: 1,
                host: "localhost".into(),
                port: 9093
            }]
        );
        assert_eq!(c.log_dirs, vec![PathBuf::from("./fjord-data")]);
        assert_eq!(c.metadata_log_dir, None);
        assert_eq!(c.metrics_listen, "0.0.0.0:9308".parse().unwrap());
        assert_eq!(c.cluster_id, None);
        assert_eq!(c.broker_heartbeat_interval_ms, 2000);
        assert_eq!(c.broker_session_timeout_ms, 9000);
        assert_eq!(c.controller_quorum_election_timeout_ms, 1000);
        assert_eq!(c.raft_heartbeat_interval_ms, 100);
        assert_eq!(c.metadata_snapshot_interval_entries, 10_000);
        assert_eq!(c.metadata_log_keep_entries, 1000);
        assert_eq!(c.num_partitions, 1);
        assert_eq!(c.default_replication_factor, 1);
        assert_eq!(c.min_insync_replicas, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.log_segment_bytes, 1_073_741_824);
        assert_eq!(c.log_roll_ms, 168 * 3_600_000);
        assert_eq!(c.log_retention_ms, 168 * 3_600_000);
        assert_eq!(c.log_retention_bytes, -1);
        assert_eq!(c.log_flush_interval_messages, i64::MAX);
        assert_eq!(c.log_flush_interval_ms, None);
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
        assert_eq!(c.replica_lag_time_max_ms, 30_000);
        assert!(!c.unclean_leader_election_enable);
        assert!(c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 10);
        assert!(c.controlled_shutdown_enable);
        assert_eq!(c.group_initial_rebalance_delay_ms, 3000);
        assert_eq!(c.group_max_size, i32::MAX);
        assert_eq!(c.group_min_session_timeout_ms, 6000);
        assert_eq!(c.group_max_session_timeout_ms, 1_800_000);
        assert_eq!(c.offsets_retention_minutes, 10_080);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.log_message_timestamp_type, "CreateTime");

        assert_eq!(c.kafka_listener(), &l("PLAINTEXT", "", 9092));
        assert_eq!(c.controller_listener(), &l("CONTROLLER", "", 9093));
        assert_eq!(
            c.advertised_kafka_endpoint(),
            ("localhost".to_string(), 9092)
        );
        assert_eq!(c.data_dir(), PathBuf::from("./fjord-data"));
        assert_eq!(c.metadata_dir(), PathBuf::from("./fjord-data"));
        assert_eq!(c, Config::default());
    }

    #[test]
    fn error_messages_are_one_line_and_name_the_key() {
        assert_eq!(
            parse_err("node.id=abc").to_string(),
            "config: node.id: expected an integer, got 'abc'"
        );
        assert_eq!(
            parse_err("node.id=4\ncontroller.quorum.voters=1@localhost:9093").to_string(),
            "config: controller.quorum.voters: does not contain this node's node.id 4"
        );
        assert_eq!(
            parse_err("process.roles=broker").to_string(),
            "config: process.roles: fjord nodes run both broker and controller roles; \
             'broker' alone is not supported yet"
        );
    }

    #[test]
    fn node_id_errors() {
        assert_err("node.id=abc", "node.id");
        assert_err("node.id=", "node.id");
        assert_err("node.id=1.5", "node.id");
        assert_err("node.id=-1", "node.id");
        assert_err("node.id=99999999999", "node.id");
        assert_err(
            "node.id=4\ncontroller.quorum.voters=1@localhost:9093",
            "controller.quorum.voters",
        );
        // Without explicit voters the single default voter is this node.
        let (c, _) = parse("node.id=7");
        assert_eq!(c.controller_quorum_voters[0].id, 7);
    }

    #[test]
    fn process_roles_errors() {
        let msg = assert_err("process.roles=controller", "process.roles");
        assert!(
            msg.contains("'controller' alone is not supported yet"),
            "{msg}"
        );
        assert_err("process.roles=broker", "process.roles");
        let msg = assert_err("process.roles=broker,worker", "process.roles");
        assert!(msg.contains("worker"), "{msg}");
        assert_err("process.roles=", "process.roles");
        assert_err("process.roles=broker,broker,controller", "process.roles");
        let (c, _) = parse("process.roles = controller , broker");
        assert_eq!(c.process_roles, vec!["controller", "broker"]);
    }

    #[test]
    fn listener_errors() {
        assert_err("listeners=PLAINTEXT:9092", "listeners");
        assert_err("listeners=PLAINTEXT://localhost", "listeners");
        assert_err(
            "listeners=PLAINTEXT://:70000,CONTROLLER://:9093",
            "listeners",
        );
        assert_err("listeners=PLAINTEXT://:x,CONTROLLER://:9093", "listeners");
        assert_err("listeners=://:9092,CONTROLLER://:9093", "listeners");
        let msg = assert_err(
            "listeners=PLAINTEXT://:9092,plaintext://:9094,CONTROLLER://:9093",
            "listeners",
        );
        assert!(msg.contains("PLAINTEXT"), "{msg}");
        assert_err(
            "listeners=PLAINTEXT://:9092,CONTROLLER://:9092",
            "listeners",
        );
        assert_err("listeners=", "listeners");
    }

    #[test]
    fn listener_forms() {
        let (c, _) = parse(
            "listeners=plaintext://0.0.0.0:0, CONTROLLER://[::1]:9093, EXTERNAL://host.example:9000",
        );
        assert_eq!(
            c.listeners,
            vec![
                l("PLAINTEXT", "0.0.0.0", 0),
                l("CONTROLLER", "::1", 9093),
                l("EXTERNAL", "host.example", 9000),
            ]
        );
        assert_eq!(
            c.advertised_listeners,
            vec![
                l("PLAINTEXT", "localhost", 0),
                l("EXTERNAL", "host.example", 9000)
            ]
        );
        assert_eq!(c.controller_listener().bind_address(), "[::1]:9093");
        assert_eq!(c.kafka_listener().bind_address(), "0.0.0.0:0");
        assert_eq!(
            c.controller_listener().to_string(),
            "CONTROLLER://[::1]:9093"
        );
    }

    #[test]
    fn controller_and_inter_broker_listener_errors() {
        let msg = assert_err(
            "controller.listener.names=CTRL",
            "controller.listener.names",
        );
        assert!(msg.contains("'CTRL' is not one of the listeners"), "{msg}");
        assert_err("controller.listener.names=", "controller.listener.names");
        assert_err(
            "inter.broker.listener.name=SSL",
            "inter.broker.listener.name",
        );
        assert_err(
            "inter.broker.listener.name=CONTROLLER",
            "inter.broker.listener.name",
        );
        let (c, _) = parse(
            "listeners=INTERNAL://:9092,CTRL://:9093\n\
             controller.listener.names=ctrl\n\
             inter.broker.listener.name=internal",
        );
        assert_eq!(c.kafka_listener().name, "INTERNAL");
        assert_eq!(c.controller_listener().port, 9093);
        assert_eq!(c.controller_quorum_voters[0].port, 9093);
    }

    #[test]
    fn advertised_listeners() {
        let (c, _) = parse(
            "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n\
             advertised.listeners=PLAINTEXT://broker1.example:19092,CONTROLLER://localhost:9093",
        );
        assert_eq!(
            c.advertised_kafka_endpoint(),
            ("broker1.example".to_string(), 19092)
        );
        let (c, _) = parse("listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093");
        assert_eq!(
            c.advertised_kafka_endpoint(),
            ("127.0.0.1".to_string(), 9092)
        );

        assert_err("advertised.listeners=OTHER://h:1", "advertised.listeners");
        assert_err(
            "advertised.listeners=PLAINTEXT://0.0.0.0:9092",
            "advertised.listeners",
        );
        assert_err(
            "advertised.listeners=PLAINTEXT://h:0",
            "advertised.listeners",
        );
        let msg = assert_err(
            "advertised.listeners=CONTROLLER://h:9093",
            "advertised.listeners",
        );
        assert!(msg.contains("inter-broker listener 'PLAINTEXT'"), "{msg}");
    }

    #[test]
    fn voter_errors() {
        assert_err(
            "controller.quorum.voters=1@localhost:9093,1@localhost:9094",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=localhost:9093",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=x@localhost:9093",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=-1@localhost:9093",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=1@:9093",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=1@localhost:0",
            "controller.quorum.voters",
        );
        assert_err(
            "controller.quorum.voters=1@localhost:99999",
            "controller.quorum.voters",
        );
        assert_err("controller.quorum.voters=", "controller.quorum.voters");
        let (c, _) = parse("node.id=2\ncontroller.quorum.voters=1@a:1, 2@[::1]:2 ,3@c:3");
        assert_eq!(c.controller_quorum_voters.len(), 3);
        assert_eq!(c.controller_quorum_voters[1].host, "::1");
        assert_eq!(c.controller_quorum_voters[1].to_string(), "2@[::1]:2");
    }

    #[test]
    fn dirs_and_metrics_and_cluster_id() {
        assert_err("log.dirs=", "log.dirs");
        assert_err("log.dirs= , ", "log.dirs");
        assert_err("log.dir=", "log.dir");
        assert_err("metadata.log.dir=", "metadata.log.dir");
        let (c, _) = parse("log.dir=/one");
        assert_eq!(c.log_dirs, vec![PathBuf::from("/one")]);
        let (c, w) = parse("log.dir=/one\nlog.dirs=/a, /b\nmetadata.log.dir=/meta");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.log_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.data_dir(), PathBuf::from("/a"));
        assert_eq!(c.metadata_dir(), PathBuf::from("/meta"));

        assert_err("fjord.metrics.listen=localhost", "fjord.metrics.listen");
        assert_err("fjord.metrics.listen=0.0.0.0", "fjord.metrics.listen");
        let (c, _) = parse("fjord.metrics.listen=[::1]:9999");
        assert_eq!(c.metrics_listen.port(), 9999);

        assert_err("fjord.cluster.id=", "fjord.cluster.id");
        assert_err("fjord.cluster.id=has space", "fjord.cluster.id");
        assert_err("fjord.cluster.id=a.b", "fjord.cluster.id");
        assert_err(
            &format!("fjord.cluster.id={}", "a".repeat(65)),
            "fjord.cluster.id",
        );
        let id = format!("{}-_Z9", "a".repeat(60));
        let (c, _) = parse(&format!("fjord.cluster.id={id}"));
        assert_eq!(c.cluster_id, Some(id));
    }

    #[test]
    fn timing_errors() {
        assert_err(
            "broker.heartbeat.interval.ms=0",
            "broker.heartbeat.interval.ms",
        );
        assert_err(
            "broker.heartbeat.interval.ms=-5",
            "broker.heartbeat.interval.ms",
        );
        assert_err(
            "broker.session.timeout.ms=2000",
            "broker.session.timeout.ms",
        );
        assert_err(
            "broker.heartbeat.interval.ms=500\nbroker.session.timeout.ms=400",
            "broker.session.timeout.ms",
        );
        assert_err(
            "controller.quorum.election.timeout.ms=9",
            "controller.quorum.election.timeout.ms",
        );
        assert_err(
            "controller.quorum.election.timeout.ms=100",
            "fjord.raft.heartbeat.interval.ms",
        );
        assert_err(
            "fjord.raft.heartbeat.interval.ms=0",
            "fjord.raft.heartbeat.interval.ms",
        );
        assert_err(
            "fjord.metadata.snapshot.interval.entries=0",
            "fjord.metadata.snapshot.interval.entries",
        );
        let (c, _) =
            parse("controller.quorum.election.timeout.ms=10\nfjord.raft.heartbeat.interval.ms=9");
        assert_eq!(c.raft_heartbeat_interval_ms, 9);
    }

    #[test]
    fn topic_and_log_errors() {
        assert_err("num.partitions=0", "num.partitions");
        assert_err("default.replication.factor=0", "default.replication.factor");
        assert_err(
            "default.replication.factor=40000",
            "default.replication.factor",
        );
        assert_err("min.insync.replicas=0", "min.insync.replicas");
        assert_err("auto.create.topics.enable=yes", "auto.create.topics.enable");
        assert_err(
            "unclean.leader.election.enable=1",
            "unclean.leader.election.enable",
        );
        assert_err("log.segment.bytes=1023", "log.segment.bytes");
        assert_err("log.roll.ms=0", "log.roll.ms");
        assert_err("log.roll.hours=0", "log.roll.hours");
        assert_err("log.retention.ms=-2", "log.retention.ms");
        assert_err("log.retention.hours=abc", "log.retention.hours");
        assert_err(
            "log.retention.hours=9223372036854775807",
            "log.retention.hours",
        );
        assert_err("log.retention.bytes=-2", "log.retention.bytes");
        assert_err(
            "log.flush.interval.messages=0",
            "log.flush.interval.messages",
        );
        assert_err("log.flush.interval.ms=-1", "log.flush.interval.ms");
        assert_err("socket.request.max.bytes=0", "socket.request.max.bytes");
        assert_err("group.max.size=0", "group.max.size");
        assert_err("offsets.retention.minutes=0", "offsets.retention.minutes");
        assert_err("message.max.bytes=-1", "message.max.bytes");
        let msg = assert_err(
            "log.message.timestamp.type=createtime",
            "log.message.timestamp.type",
        );
        assert!(msg.contains("CreateTime or LogAppendTime"), "{msg}");

        let (c, _) = parse(
            "auto.create.topics.enable=FALSE\nunclean.leader.election.enable=True\n\
             log.message.timestamp.type=LogAppendTime\nlog.flush.interval.ms=+500\n\
             default.replication.factor=3\nlog.roll.hours=1",
        );
        assert!(!c.auto_create_topics_enable);
        assert!(c.unclean_leader_election_enable);
        assert_eq!(c.log_message_timestamp_type, "LogAppendTime");
        assert_eq!(c.log_flush_interval_ms, Some(500));
        assert_eq!(c.default_replication_factor, 3);
        assert_eq!(c.log_roll_ms, 3_600_000);
        let (c, _) = parse("log.roll.hours=1\nlog.roll.ms=5000");
        assert_eq!(c.log_roll_ms, 5000);
    }

    #[test]
    fn retention_precedence() {
        let (c, _) = parse("log.retention.hours=2");
        assert_eq!(c.log_retention_ms, 2 * 3_600_000);
        let (c, _) = parse("log.retention.hours=2\nlog.retention.minutes=3");
        assert_eq!(c.log_retention_ms, 3 * 60_000);
        let (c, w) = parse("log.retention.ms=1234\nlog.retention.hours=2\nlog.retention.minutes=3");
        assert_eq!(c.log_retention_ms, 1234);
        assert!(w.is_empty(), "{w:?}");
        let (c, _) = parse("log.retention.hours=-1");
        assert_eq!(c.log_retention_ms, -1);
        let (c, _) = parse("log.retention.ms=-1\nlog.retention.hours=5");
        assert_eq!(c.log_retention_ms, -1);
        let (c, _) = parse("log.retention.minutes=0");
        assert_eq!(c.log_retention_ms, 0);
        // An error in a lower-precedence key still counts: it is a typo in the file.
        assert_err(
            "log.retention.ms=5\nlog.retention.hours=x",
            "log.retention.hours",
        );
    }

    #[test]
    fn overrides_win_over_file() {
        let text = "node.id=1\nnum.partitions=3\ncontroller.quorum.voters=1@a:1,2@b:2";
        let overrides = ov(&[
            ("node.id", "2"),
            ("num.partitions", "4"),
            ("num.partitions", "5"),
        ]);
        let (c, w) = Config::from_properties(text, &overrides).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.node_id, 2);
        assert_eq!(c.num_partitions, 5);
        // Overrides are validated too.
        let e = Config::from_properties(text, &ov(&[("num.partitions", "zero")])).unwrap_err();
        assert_eq!(e.key, "num.partitions");
        // load() applies overrides on top of no file at all.
        let (c, _) = Config::load(None, &ov(&[("log.dirs", "/x")])).unwrap();
        assert_eq!(c.data_dir(), PathBuf::from("/x"));
    }

    #[test]
    fn unknown_key_gives_one_warning() {
        let (c, w) = parse("foo.bar=1\nnode.id=1\nfoo.bar=2");
        assert_eq!(w, vec!["config: unknown key 'foo.bar' ignored".to_string()]);
        assert_eq!(c.node_id, 1);
        let (_, w) = Config::from_properties("", &ov(&[("num.network.threads", "3")])).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("'num.network.threads'"), "{w:?}");
    }

    #[test]
    fn properties_syntax() {
        let text = "# a comment\r\n\
                    ! another comment \\\n\
                    \n   \t\n\
                    node.id : 3\n\
                    num.partitions   7\n\
                    \x20 min.insync.replicas=2   \n\
                    listeners = PLAINTEXT://:9092,\\\n\
                    \x20          CONTROLLER://:9093\n\
                    log.dirs=C:\\\\data\\\\fjord\n\
                    controller.quorum.voters=3@localhost:9093\n\
                    fjord.cluster.id=\\u0041bc\n\
                    log.message.timestamp.type=LogAppendTime\n\
                    log.message.timestamp.type=CreateTime\n\
                    my\\ key=x\n\
                    #listeners=broken\n\
                    auto.create.topics.enable=false";
        let (c, w) = parse(text);
        assert_eq!(c.node_id, 3);
        assert_eq!(c.num_partitions, 7);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(
            c.listeners,
            vec![l("PLAINTEXT", "", 9092), l("CONTROLLER", "", 9093)]
        );
        assert_eq!(c.log_dirs, vec![PathBuf::from("C:\\data\\fjord")]);
        assert_eq!(c.cluster_id.as_deref(), Some("Abc"));
        assert_eq!(c.log_message_timestamp_type, "CreateTime");
        assert!(!c.auto_create_topics_enable);
        assert_eq!(w, vec!["config: unknown key 'my key' ignored".to_string()]);
    }

    #[test]
    fn properties_parser_details() {
        let pairs =
            parse_properties("a=b=c\nb:\nc\nd = x\\ \ne=\\t\\n\\uD83D\\uDE00\nf=tail\\").unwrap();
        let expect = [
            ("a", "b=c"),
            ("b", ""),
            ("c", ""),
            ("d", "x "),
            ("e", "\t\n\u{1F600}"),
            ("f", "tail"),
        ];
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, expect);
        let e = parse_properties("key=\\u12").unwrap_err();
        assert_eq!(e.key, "key");
        assert!(parse_properties("key=\\uD83Dx").is_err());
    }

    #[test]
    fn load_errors_name_the_path() {
        let path = Path::new("/nonexistent/fjord/server.properties");
        let e = Config::load(Some(path), &[]).unwrap_err();
        assert_eq!(e.key, path.display().to_string());
        assert!(!e.to_string().contains('\n'));
        let (c, w) = Config::load(None, &[]).unwrap();
        assert!(w.is_empty());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn shipped_config_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let load = |name: &str| {
            let (c, w) =
                Config::load(Some(&dir.join(name)), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(w.is_empty(), "{name}: {w:?}");
            c
        };

        let c = load("server.properties");
        assert_eq!(c.node_id, 1);
        assert_eq!(c.kafka_listener().port, 9092);
        assert_eq!(c.controller_listener().port, 9093);
        assert_eq!(
            c.advertised_kafka_endpoint(),
            ("localhost".to_string(), 9092)
        );
        assert_eq!(c.metrics_listen.port(), 9308);
        assert_eq!(c.controller_quorum_voters.len(), 1);
        assert_eq!(c.controller_quorum_voters[0].port, 9093);
        assert_eq!(c.data_dir(), PathBuf::from("./fjord-data"));
        // The explicit file is the defaults written out.
        assert_eq!(c, Config::default());

        for n in 1..=3u16 {
            let c = load(&format!("node-{n}.properties"));
            let base = n * 10_000;
            assert_eq!(c.node_id, i32::from(n));
            assert_eq!(
                c.kafka_listener(),
                &l("PLAINTEXT", "127.0.0.1", base + 9092)
            );
            assert_eq!(
                c.controller_listener(),
                &l("CONTROLLER", "127.0.0.1", base + 9093)
            );
            assert_eq!(
                c.advertised_kafka_endpoint(),
                ("localhost".to_string(), base + 9092)
            );
            assert_eq!(c.metrics_listen.port(), base + 9308);
            let voters: Vec<(i32, u16)> = c
                .controller_quorum_voters
                .iter()
                .map(|v| (v.id, v.port))
                .collect();
            assert_eq!(voters, vec![(1, 19093), (2, 29093), (3, 39093)]);
            assert_eq!(
                c.data_dir(),
                PathBuf::from(format!("./fjord-data/node-{n}"))
            );
            assert_eq!(c.default_replication_factor, 3);
        }
    }
}

//! The Kafka listener: accepts connections and answers each one's requests.
//!
//! A connection's requests are answered in order. Kafka handles one request
//! per connection at a time (its network layer mutes a channel while a
//! request is in flight), so a producer pipelining `acks=all` requests
//! waits a replication round trip per request. fjord does the same for
//! every request except a run of Produce requests: each is appended as soon
//! as it is read, in order, and up to [`MAX_PIPELINED_PRODUCE`] of them
//! wait for their acknowledgements together; answers still go out in
//! request order. Any other request first waits for the run to be
//! answered, so a client never sees a later request overtake an earlier
//! one. Anything malformed closes that connection only, after one log line;
//! nothing a peer sends can panic the process.
//!
//! Shutdown: when the shutdown flag flips, the listener stops accepting and
//! every connection stops reading new requests; a request already read is
//! answered. After [`SHUTDOWN_GRACE`] the stragglers are dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use metrics::{counter, gauge, histogram};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::codec::{self, CodecError};
use super::handlers;
use super::BrokerContext;

/// How long in-flight requests get to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed accept (say, out of file descriptors) so the loop
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Produce requests of one connection that may wait for their
/// acknowledgements at once (librdkafka and the Java client send at most 5).
pub const MAX_PIPELINED_PRODUCE: usize = 16;

/// A request being answered, and what its metrics need once it is.
type Answering = Pin<
    Box<dyn Future<Output = (Result<handlers::Reply, CodecError>, &'static str, Instant)> + Send>,
>;

/// Serves Kafka clients on `listener` until `shutdown` becomes true (or its
/// sender is dropped), then waits up to [`SHUTDOWN_GRACE`] for requests in
/// flight and returns.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<BrokerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "kafka listener accepting connections");
    }
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown_signalled(&mut shutdown) => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    error!(error = %e, "kafka connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = Connection::new(stream, peer, ctx.clone());
                    connections.spawn(connection.run(shutdown.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "kafka listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    drain(connections).await;
    info!("kafka listener stopped");
}

async fn drain(mut connections: JoinSet<()>) {
    let open = connections.len();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        warn!(
            open,
            left = connections.len(),
            "kafka connections still busy after {SHUTDOWN_GRACE:?}; dropping them"
        );
        connections.shutdown().await;
    }
}

/// Resolves once shutdown is requested; a dropped sender means the node is
/// going away, which is a shutdown too.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Counts itself in `fjord_kafka_connections` while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        gauge!("fjord_kafka_connections").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!("fjord_kafka_connections").decrement(1.0);
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    buffer: BytesMut,
    ctx: Arc<BrokerContext>,
    /// From the last request header, for log lines.
    client_id: Option<StrBytes>,
}

impl Connection {
    fn new(stream: TcpStream, peer: SocketAddr, ctx: Arc<BrokerContext>) -> Self {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        Connection {
            stream,
            peer,
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            ctx,
            client_id: None,
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let _open = OpenConnection::new();
        debug!(peer = %self.peer, "kafka connection opened");
        // Produce requests appended and waiting for their acknowledgements.
        let mut produce: FuturesOrdered<Answering> = FuturesOrdered::new();
        let result = loop {
            let frame = tokio::select! {
                biased;
                () = shutdown_signalled(&mut shutdown) => break Ok(()),
                Some(answered) = produce.next(), if !produce.is_empty() => {
                    if let Err(e) = self.send(answered).await {
                        break Err(e);
                    }
                    continue;
                }
                frame = self.read_frame(), if produce.len() < MAX_PIPELINED_PRODUCE => frame,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if let Err(e) = self.answer(frame, &mut produce).await {
                break Err(e);
            }
        };
        // Requests already read are answered, even on shutdown.
        let result = match result {
            Ok(()) => self.send_all(&mut produce).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.report(&e);
        }
        debug!(peer = %self.peer, "kafka connection closed");
    }

    /// The next whole request frame, or `None` when the peer closed the
    /// connection between requests. Cancel-safe: bytes read stay buffered.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, ConnectionError> {
        loop {
            let max = self.ctx.socket_request_max_bytes;
            if let Some(frame) = codec::parse_frame(&mut self.buffer, max)? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed mid-request");
                return Err(eof.into());
            }
        }
    }

    /// Starts answering one request: a Produce request is appended now and
    /// joins `produce`; anything else waits for `produce` to be answered,
    /// then is answered itself.
    async fn answer(
        &mut self,
        mut frame: Bytes,
        produce: &mut FuturesOrdered<Answering>,
    ) -> Result<(), ConnectionError> {
        let (api, header) = codec::decode_request_header(&mut frame)?;
        self.client_id = header.client_id.clone();
        let api_label = codec::api_name(api);
        counter!("fjord_kafka_requests_total", "api" => api_label).increment(1);
        let started = Instant::now();
        if api == ApiKey::Produce {
            let answering = handlers::begin_produce(&self.ctx, &header, frame)?;
            produce.push_back(Box::pin(
                async move { (answering.await, api_label, started) },
            ));
            return Ok(());
        }
        self.send_all(produce).await?;
        let reply = handlers::respond(&self.ctx, api, &header, frame).await;
        self.send((reply, api_label, started)).await
    }

    /// Answers every request in `produce`, in order.
    async fn send_all(
        &mut self,
        produce: &mut FuturesOrdered<Answering>,
    ) -> Result<(), ConnectionError> {
        while let Some(answered) = produce.next().await {
            self.send(answered).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        (reply, api_label, started): (Result<handlers::Reply, CodecError>, &'static str, Instant),
    ) -> Result<(), ConnectionError> {
        let mut reply = reply?;
        if !reply.frame.is_empty() {
            // A fetch's record sets are chunks of their own: sendfile from
            // their segment files, or vectored writes.
            reply.frame.write_to(&mut self.stream).await?;
        }
        histogram!("fjord_kafka_request_duration_seconds", "api" => api_label)
            .record(started.elapsed().as_secs_f64());
        if reply.error_code != 0 {
            counter!("fjord_kafka_request_errors_total", "api" => api_label).increment(1);
        }
        Ok(())
    }

    /// The one log line (and metric) for a connection closed on an error.
    fn report(&self, error: &ConnectionError) {
        let peer = &self.peer;
        let client_id = self.client_id.as_deref().unwrap_or("-");
        match error {
            ConnectionError::Io(e) => debug!(%peer, client_id, error = %e, "kafka connection lost"),
            ConnectionError::Codec(e @ CodecError::UnsupportedVersion { api, .. }) => {
                counter!("fjord_kafka_request_errors_total", "api" => codec::api_name(*api))
                    .increment(1);
                warn!(%peer, client_id, error = %e, "closing kafka connection: unsupported request");
            }
            ConnectionError::Codec(e @ CodecError::Encode { .. }) => {
                error!(%peer, client_id, error = %e, "closing kafka connection: cannot encode response");
            }
            ConnectionError::Codec(e) => {
                counter!("fjord_kafka_malformed_requests_total").increment(1);
                warn!(%peer, client_id, error = %e, "closing kafka connection: malformed request");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::BufMut;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, RequestHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};
    use tokio::io::AsyncWriteExt;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::client::KafkaClient;
    use crate::controller::broker_lifecycle::BrokerLifecycle;
    use crate::controller::{Controller, ControllerOptions};
    use crate::metadata::Endpoint;

    const MAX_REQUEST: i32 = 64 * 1024;
    const PATIENCE: Duration = Duration::from_secs(20);

    /// A one-node quorum with its broker registered, served on loopback.
    struct TestBroker {
        addr: SocketAddr,
        shutdown: watch::Sender<bool>,
        server: JoinHandle<()>,
        controller: Arc<Controller>,
        _dir: tempfile::TempDir,
    }

    impl TestBroker {
        async fn start() -> TestBroker {
            let dir = tempfile::tempdir().unwrap();
            let raft_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let options = ControllerOptions {
                node_id: 1,
                voters: BTreeMap::from([(1, raft_listener.local_addr().unwrap().to_string())]),
                metadata_dir: dir.path().join("__cluster_metadata-0"),
                election_timeout_ms: 300,
                raft_heartbeat_interval_ms: 50,
                snapshot_interval_entries: 10_000,
                log_keep_entries: 10_000,
                broker_session_timeout_ms: 5_000,
                cluster_id: Some("kafka-server-test".into()),
                auto_leader_rebalance_enable: true,
                leader_imbalance_check_interval_ms: 10_000,
                unclean_leader_election_enable: false,
            };
            let controller = Controller::start(options, raft_listener).await.unwrap();
            let kafka = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = kafka.local_addr().unwrap();
            let (shutdown, shutdown_rx) = watch::channel(false);
            let lifecycle = BrokerLifecycle {
                broker_id: 1,
                incarnation_id: uuid::Uuid::new_v4(),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    security_protocol: 0,
                }],
                rack: None,
                heartbeat_interval: Duration::from_millis(100),
                lease: Arc::new(crate::controller::broker_lifecycle::BrokerLease::new(
                    Duration::from_millis(5_000),
                    controller.image(),
                )),
            };
            tokio::spawn(lifecycle.run(controller.clone(), shutdown_rx.clone()));
            let ctx = Arc::new(BrokerContext {
                node_id: 1,
                listener_name: "PLAINTEXT".into(),
                socket_request_max_bytes: MAX_REQUEST,
                image: controller.image(),
                controller: controller.clone(),
                config: Arc::new(crate::config::Config::default()),
                replicas: Arc::new(crate::replication::ReplicaManager::new(
                    1,
                    uuid::Uuid::new_v4(),
                    Arc::new(crate::config::Config::default()),
                    Arc::new(crate::storage::LogManager::open(&dir.path().join("logs")).unwrap()),
                )),
                group: crate::group::GroupCoordinator::start(
                    1,
                    crate::group::GroupSettings::from_config(&crate::config::Config::default()),
                    controller.clone(),
                    None,
                    shutdown_rx.clone(),
                ),
            });
            let server = tokio::spawn(serve(kafka, ctx, shutdown_rx));
            TestBroker {
                addr,
                shutdown,
                server,
                controller,
                _dir: dir,
            }
        }

        async fn client(&self) -> KafkaClient {
            KafkaClient::connect(&self.addr.to_string(), Duration::from_secs(5))
                .await
                .unwrap()
        }

        async fn stop(self) {
            self.shutdown.send(true).unwrap();
            tokio::time::timeout(SHUTDOWN_GRACE * 2, self.server)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
            self.controller.shutdown().await;
        }
    }

    fn header(api: ApiKey, version: i16, correlation_id: i32) -> RequestHeader {
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    async fn read_response(stream: &mut TcpStream, buffer: &mut BytesMut) -> Option<Bytes> {
        loop {
            if let Some(frame) = codec::parse_frame(buffer, i32::MAX).unwrap() {
                return Some(frame);
            }
            if stream.read_buf(buffer).await.unwrap() == 0 {
                return None;
            }
        }
    }

    fn correlation_id(frame: &mut Bytes) -> i32 {
        codec::decode_response_header(frame, 0)
            .unwrap()
            .correlation_id
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_client_negotiates_and_reads_the_cluster() {
        let broker = TestBroker::start().await;
        let mut client = broker.client().await;
        assert_eq!(
            client.broker_versions(ApiKey::Metadata).map(|r| r.max),
            Some(13)
        );
        let deadline = Instant::now() + PATIENCE;
        let cluster = loop {
            let cluster = client.describe_cluster().await.unwrap();
            let unfenced = |b: &DescribeClusterBroker| b.broker_id.0 == 1 && !b.is_fenced;
            if cluster.brokers.iter().any(unfenced) && !cluster.cluster_id.is_empty() {
                break cluster;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never settled: {cluster:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(cluster.cluster_id.as_str(), "kafka-server-test");
        assert_eq!(cluster.controller_id.0, 1);

        let metadata = client.metadata(None).await.unwrap();
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!(metadata.brokers[0].port, i32::from(broker.addr.port()));
        assert!(metadata.topics.is_empty());
        let missing = client.metadata(Some(vec!["nope".into()])).await.unwrap();
        assert_eq!(missing.topics[0].error_code, 3);

        let quorum = client.describe_quorum().await.unwrap();
        let partition = &quorum.topics[0].partitions[0];
        assert_eq!(partition.leader_id.0, 1);
        assert_eq!(partition.current_voters.len(), 1);
        assert_eq!(quorum.nodes[0].listeners[0].name.as_str(), "CONTROLLER");
        broker.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pipelined_requests_and_an_unknown_api_versions_version() {
        let broker = TestBroker::start().await;
        let mut stream = TcpStream::connect(broker.addr).await.unwrap();
        let mut pipelined = BytesMut::new();
        for (id, version) in [(1, 3), (2, 0)] {
            let request = ApiVersionsRequest::default();
            let frame = codec::encode_request(
                &header(ApiKey::ApiVersions, version, id),
                ApiKey::ApiVersions,
                &request,
            );
            pipelined.put_slice(&frame.unwrap());
        }
        let metadata = MetadataRequest::default().with_topics(None);
        let frame = codec::encode_request(
            &header(ApiKey::Metadata, 12, 3),
            ApiKey::Metadata,
            &metadata,
        );
        pipelined.put_slice(&frame.unwrap());
        // ApiVersions v99: header v2, a body nobody can parse.
        let mut future = BytesMut::new();
        header(ApiKey::ApiVersions, 99, 4)
            .encode(&mut future, 2)
            .unwrap();
        future.put_slice(&[0xde, 0xad]);
        pipelined.put_i32(future.len() as i32);
        pipelined.put_slice(&future);
        stream.write_all(&pipelined).await.unwrap();

        let mut buffer = BytesMut::new();
        for expected in 1..=3 {
            let mut frame = read_response(&mut stream, &mut buffer).await.unwrap();
            assert_eq!(correlation_id(&mut frame), expected);
        }
        let mut frame = read_response(&mut stream, &mut buffer).await.unwrap();
        assert_eq!(correlation_id(&mut frame), 4);
        let answer = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
        assert_eq!(answer.error_code, 35);
        assert_eq!(answer.api_keys.len(), codec::SUPPORTED_APIS.len());
        broker.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_frames_close_only_their_connection_and_shutdown_stops_accepting() {
        let broker = TestBroker::start().await;
        let mut buffer = BytesMut::new();

        let mut oversized = TcpStream::connect(broker.addr).await.unwrap();
        oversized
            .write_all(&(MAX_REQUEST + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(read_response(&mut oversized, &mut buffer).await.is_none());

        let mut unknown_key = TcpStream::connect(broker.addr).await.unwrap();
        let frame = [0, 0, 0, 10, 0x7f, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
        unknown_key.write_all(&frame).await.unwrap();
        assert!(read_response(&mut unknown_key, &mut buffer).await.is_none());

        let mut unsupported = TcpStream::connect(broker.addr).await.unwrap();
        let request = MetadataRequest::default();
        let frame =
            codec::encode_request(&header(ApiKey::Metadata, 13, 1), ApiKey::Metadata, &request);
        let mut frame = BytesMut::from(&frame.unwrap()[..]);
        // Rewrite the version in place to one fjord does not serve.
        frame[6..8].copy_from_slice(&14i16.to_be_bytes());
        unsupported.write_all(&frame).await.unwrap();
        assert!(read_response(&mut unsupported, &mut buffer).await.is_none());

        let mut client = broker.client().await;
        client.api_versions().await.unwrap();

        let addr = broker.addr;
        broker.stop().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
        assert!(
            client.api_versions().await.is_err(),
            "connections closed after shutdown"
        );
    }
}

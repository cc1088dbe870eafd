//! A small async Kafka client for the CLI, the benchmarks and the tests.
//!
//! One connection to one broker, one request at a time. `connect` tries
//! each bootstrap address in turn and negotiates versions with ApiVersions
//! first, as every Kafka client does; [`KafkaClient::request`] then uses the
//! highest version both sides know. Any failure in the middle of an
//! exchange (I/O, timeout, a frame that does not parse) leaves the
//! connection unusable, because a late answer could be mistaken for the
//! next one; reconnect after such an error.

pub mod admin;
pub mod consumer;
pub mod group;
pub mod producer;

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeQuorumResponse, MetadataRequest, MetadataResponse,
    RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes, VersionRange};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kafka::codec::{self, CodecError};
use crate::kafka::handlers::describe_quorum;

/// Largest response frame accepted. Well above any real answer (fetch
/// responses default to 50 MiB), low enough that a non-Kafka peer's bytes
/// read as a size cannot make the client allocate gigabytes.
pub const MAX_RESPONSE_BYTES: i32 = 256 * 1024 * 1024;

/// Used when a bootstrap address names no port.
pub const DEFAULT_PORT: u16 = 9092;

const CLIENT_ID: &str = "fjord";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{api} failed: {}", describe_error(*.code, .message))]
    Broker {
        api: &'static str,
        code: i16,
        message: String,
    },
}

impl From<CodecError> for ClientError {
    fn from(e: CodecError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

fn describe_error(code: i16, message: &str) -> String {
    let kind =
        ResponseError::try_from_code(code).map_or_else(|| "NONE".to_string(), |e| format!("{e:?}"));
    match message {
        "" => format!("{kind} (error {code})"),
        message => format!("{kind} (error {code}): {message}"),
    }
}

pub struct KafkaClient {
    stream: TcpStream,
    broker: String,
    timeout: Duration,
    read_buffer: BytesMut,
    next_correlation_id: i32,
    /// What the broker advertised in ApiVersions, by API key.
    broker_versions: BTreeMap<i16, VersionRange>,
    /// Set when an exchange failed half-way; see the module docs.
    broken: bool,
}

impl KafkaClient {
    /// Connects to the first of `bootstrap` ("host:port[,host:port...]")
    /// that answers ApiVersions within `timeout`; the same timeout then
    /// applies to every request.
    pub async fn connect(bootstrap: &str, timeout: Duration) -> Result<KafkaClient, ClientError> {
        let mut last_error = ClientError::Protocol(format!("no address in '{bootstrap}'"));
        for address in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Self::connect_one(address, timeout).await {
                Ok(client) => return Ok(client),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    async fn connect_one(address: &str, timeout: Duration) -> Result<KafkaClient, ClientError> {
        let address = with_default_port(address);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| io::Error::new(e.kind(), format!("{address}: {e}")))?;
        // Best effort: requests are small and answered one at a time.
        let _ = stream.set_nodelay(true);
        let mut client = KafkaClient {
            stream,
            broker: address,
            timeout,
            read_buffer: BytesMut::new(),
            next_correlation_id: 0,
            broker_versions: BTreeMap::new(),
            broken: false,
        };
        client.negotiate().await?;
        Ok(client)
    }

    /// The broker this client talks to, `host:port`.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The version range the broker advertised for `api`.
    pub fn broker_versions(&self, api: ApiKey) -> Option<VersionRange> {
        self.broker_versions.get(&(api as i16)).copied()
    }

    /// The highest version of `R` both this client and the broker know.
    pub fn negotiated_version<R: Request>(&self) -> Result<i16, ClientError> {
        let api = api_key::<R>()?;
        let theirs = self.broker_versions(api).ok_or_else(|| {
            ClientError::Protocol(format!(
                "{} does not serve {}",
                self.broker,
                codec::api_name(api)
            ))
        })?;
        let common = R::VERSIONS.intersect(&theirs);
        if common.is_empty() {
            return Err(ClientError::Protocol(format!(
                "no common {} version: broker {theirs}, client {}",
                codec::api_name(api),
                R::VERSIONS
            )));
        }
        Ok(common.max)
    }

    /// Sends `request` at the negotiated version.
    pub async fn request<R: Request>(&mut self, request: R) -> Result<R::Response, ClientError> {
        let version = self.negotiated_version::<R>()?;
        self.send(request, version).await
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let api = api_key::<R>()?;
        let mut body = self.round_trip(api, version, &request).await?;
        R::Response::decode(&mut body, version).map_err(|e| {
            self.broken = true;
            ClientError::Protocol(format!("{} v{version} response: {e}", codec::api_name(api)))
        })
    }

    /// The broker's ApiVersions answer, asked again.
    pub async fn api_versions(&mut self) -> Result<ApiVersionsResponse, ClientError> {
        let response = self.request(api_versions_request()).await?;
        check("ApiVersions", response.error_code, None)?;
        Ok(response)
    }

    /// The metadata quorum; a failure of the quorum partition is an error too.
    pub async fn describe_quorum(&mut self) -> Result<DescribeQuorumResponse, ClientError> {
        let response: DescribeQuorumResponse = self.request(describe_quorum::request()).await?;
        check(
            "DescribeQuorum",
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for partition in response.topics.iter().flat_map(|t| &t.partitions) {
            check(
                "DescribeQuorum",
                partition.error_code,
                partition.error_message.as_ref(),
            )?;
        }
        Ok(response)
    }

    /// The cluster id and brokers, fenced ones included where the broker
    /// can say so (DescribeCluster v2).
    pub async fn describe_cluster(&mut self) -> Result<DescribeClusterResponse, ClientError> {
        let version = self.negotiated_version::<DescribeClusterRequest>()?;
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2);
        let response = self.send(request, version).await?;
        check(
            "DescribeCluster",
            response.error_code,
            response.error_message.as_ref(),
        )?;
        Ok(response)
    }

    /// Metadata for `topics`, or for every topic when `None`. Never asks the
    /// broker to create topics; per-topic errors are left in the response.
    pub async fn metadata(
        &mut self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        let version = self.negotiated_version::<MetadataRequest>()?;
        let response = self
            .send(metadata_request(topics, version), version)
            .await?;
        check("Metadata", response.error_code, None)?;
        Ok(response)
    }

    /// Writes `request` at `version` without waiting for its answer and
    /// returns its correlation id: the pipelined half of [`Self::send`].
    /// Kafka answers the requests of one connection in the order they came,
    /// so a caller may keep several in flight and collect the answers with
    /// [`Self::receive`] in the same order. A Produce with acks=0 is never
    /// answered; nothing is to be received for it.
    pub async fn send_only<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        self.send_only_sharing(request, version, &[]).await
    }

    /// [`Self::send_only`] for a request carrying `shared` (a produce
    /// request's batches): they go to the socket by reference, with one
    /// vectored write, instead of being copied into the frame.
    pub async fn send_only_sharing<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        shared: &[Bytes],
    ) -> Result<i32, ClientError> {
        let api = api_key::<R>()?;
        self.check_usable()?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let header = request_header(api, version, correlation_id);
        let mut frame = codec::encode_request_frame(&header, api, request, shared)?;
        match tokio::time::timeout(self.timeout, frame.write_to(&mut self.stream)).await {
            Ok(Ok(())) => Ok(correlation_id),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e.into())
            }
            Err(_) => {
                self.broken = true;
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }

    /// Reads the next answer, which must be the one for `correlation_id`
    /// (an `R` sent at `version` by [`Self::send_only`]). No deadline of its
    /// own: the caller bounds the wait. Cancel-safe: bytes already read stay
    /// buffered, so dropping this future (in `select!`, or on a timeout)
    /// loses nothing; after a timeout, though, the caller should drop the
    /// connection, since the late answer is still due.
    pub async fn receive<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let api = api_key::<R>()?;
        self.check_usable()?;
        let result = async {
            let mut response = self.read_frame().await?;
            let header =
                codec::decode_response_header(&mut response, api.response_header_version(version))?;
            if header.correlation_id != correlation_id {
                return Err(ClientError::Protocol(format!(
                    "response for correlation id {}, expected {correlation_id}",
                    header.correlation_id
                )));
            }
            R::Response::decode(&mut response, version).map_err(|e| {
                ClientError::Protocol(format!("{} v{version} response: {e}", codec::api_name(api)))
            })
        }
        .await;
        self.broken = result.is_err();
        result
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            let e = io::Error::new(
                io::ErrorKind::NotConnected,
                format!("connection to {} failed earlier; reconnect", self.broker),
            );
            return Err(e.into());
        }
        Ok(())
    }

    /// ApiVersions at our highest version; a broker that does not know it
    /// answers v0 with UNSUPPORTED_VERSION and its own range (KIP-511), and
    /// we ask once more within that range.
    async fn negotiate(&mut self) -> Result<(), ClientError> {
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _ in 0..2 {
            let body = self
                .round_trip(ApiKey::ApiVersions, version, &api_versions_request())
                .await?;
            let response = decode_api_versions(body, version)?;
            self.broker_versions = response
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.api_key,
                        VersionRange {
                            min: k.min_version,
                            max: k.max_version,
                        },
                    )
                })
                .collect();
            if response.error_code != ResponseError::UnsupportedVersion.code() {
                return check("ApiVersions", response.error_code, None);
            }
            version = self.negotiated_version::<ApiVersionsRequest>()?;
        }
        Err(ClientError::Protocol(
            "broker keeps refusing every ApiVersions version".into(),
        ))
    }

    /// Writes one request and reads its response, returning the response
    /// body after its header.
    async fn round_trip<B: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &B,
    ) -> Result<Bytes, ClientError> {
        if self.broken {
            let e = io::Error::new(
                io::ErrorKind::NotConnected,
                format!("connection to {} failed earlier; reconnect", self.broker),
            );
            return Err(e.into());
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let frame = codec::encode_request(&header, api, body)?;
        let timeout = self.timeout;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.read_frame().await
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(mut response)) => {
                let header_version = api.response_header_version(version);
                codec::decode_response_header(&mut response, header_version)
                    .map_err(ClientError::from)
                    .and_then(|h| match h.correlation_id {
                        id if id == correlation_id => Ok(response),
                        id => Err(ClientError::Protocol(format!(
                            "response for correlation id {id}, expected {correlation_id}"
                        ))),
                    })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout(timeout)),
        };
        self.broken = result.is_err();
        result
    }

    async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(frame) = codec::parse_frame(&mut self.read_buffer, MAX_RESPONSE_BYTES)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
                let message = format!("{} closed the connection", self.broker);
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, message).into());
            }
        }
    }
}

fn request_header(api: ApiKey, version: i16, correlation_id: i32) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
}

/// `host:port` for a broker as Metadata describes it; IPv6 hosts get the
/// brackets an address needs.
pub fn broker_address(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn api_key<R: Request>() -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY)
        .map_err(|()| ClientError::Protocol(format!("unknown API key {}", R::KEY)))
}

fn with_default_port(address: &str) -> String {
    // "[::1]" and "host" have no port; "[::1]:9092" and "host:9092" do.
    let has_port = match address.rsplit_once(':') {
        Some((host, _)) => !address.starts_with('[') || host.ends_with(']'),
        None => false,
    };
    if has_port {
        address.to_string()
    } else {
        format!("{address}:{DEFAULT_PORT}")
    }
}

fn check(api: &'static str, code: i16, message: Option<&StrBytes>) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    Err(ClientError::Broker {
        api,
        code,
        message: message.map(|m| m.to_string()).unwrap_or_default(),
    })
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

/// An ApiVersions answer to a version the broker does not know comes as v0
/// (KIP-511); try that when the asked-for version does not parse.
fn decode_api_versions(body: Bytes, version: i16) -> Result<ApiVersionsResponse, ClientError> {
    ApiVersionsResponse::decode(&mut body.clone(), version)
        .ok()
        .filter(|r| r.error_code != ResponseError::UnsupportedVersion.code())
        .map_or_else(|| ApiVersionsResponse::decode(&mut body.clone(), 0), Ok)
        .map_err(|e| ClientError::Protocol(format!("ApiVersions response: {e}")))
}

/// Null asks for every topic from v1; v0 asks for every topic with an empty
/// list. Auto-creation can only be turned off from v4.
fn metadata_request(topics: Option<Vec<String>>, version: i16) -> MetadataRequest {
    let topics = match topics {
        Some(names) => Some(names.into_iter().map(metadata_topic).collect()),
        None if version >= 1 => None,
        None => Some(Vec::new()),
    };
    MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(version < 4)
}

fn metadata_topic(name: String) -> MetadataRequestTopic {
    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_port_get_the_default() {
        assert_eq!(with_default_port("localhost"), "localhost:9092");
        assert_eq!(with_default_port("localhost:19092"), "localhost:19092");
        assert_eq!(with_default_port("[::1]"), "[::1]:9092");
        assert_eq!(with_default_port("[::1]:19092"), "[::1]:19092");
    }

    #[test]
    fn metadata_requests_follow_the_version_rules() {
        assert_eq!(metadata_request(None, 12).topics, None);
        assert_eq!(metadata_request(None, 0).topics, Some(Vec::new()));
        assert!(!metadata_request(None, 12).allow_auto_topic_creation);
        assert!(metadata_request(None, 3).allow_auto_topic_creation);
        let named = metadata_request(Some(vec!["orders".into()]), 12);
        let name = named
            .topics
            .unwrap()
            .remove(0)
            .name
            .map(|n| n.0.to_string());
        assert_eq!(name.as_deref(), Some("orders"));
    }

    #[test]
    fn broker_errors_read_well() {
        let e = ClientError::Broker {
            api: "DescribeQuorum",
            code: 6,
            message: "no active controller is known yet".into(),
        };
        assert_eq!(
            e.to_string(),
            "DescribeQuorum failed: NotLeaderOrFollower (error 6): no active controller is known yet"
        );
    }

    #[tokio::test]
    async fn connect_reports_the_last_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = KafkaClient::connect(&format!(" ,{addr}"), Duration::from_secs(2)).await;
        assert!(
            matches!(result, Err(ClientError::Io(_))),
            "{:?}",
            result.err()
        );
    }
}

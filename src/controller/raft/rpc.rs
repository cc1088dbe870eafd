//! The controller listener's wire format: length-prefixed MessagePack frames
//! carrying one request and, in order, one response. Raft's own RPCs and the
//! requests forwarded to the active controller share it.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use super::TypeConfig;
use crate::controller::topic_control::{
    AlterTopicConfigsRequest, CreatePartitionsRequest, CreateTopicsReply, CreateTopicsRequest,
    DeleteTopicsReply, NamedResults, TopicRef,
};
use crate::controller::{ControllerError, QuorumInfo};
use crate::metadata::records::{decode, encode, CodecError};
use crate::metadata::{Endpoint, MetadataBatch};

/// Largest frame accepted on the controller listener; snapshot chunks and
/// append batches stay far below it.
pub const MAX_FRAME_BYTES: u32 = 64 << 20;

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BrokerRegistrationRequest {
    pub broker_id: i32,
    pub incarnation_id: uuid::Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct BrokerHeartbeatRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeatReply {
    pub is_fenced: bool,
    /// When this heartbeat unfenced the broker, the metadata offset of the
    /// unfence: the broker must replay up to it (and so see every election
    /// made while it was away) before it acts as a leader again. 0 otherwise.
    #[serde(default)]
    pub metadata_offset: u64,
}

/// An ISR change proposed by a partition leader (Kafka's AlterPartition,
/// API 56, carried on the controller listener).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AlterPartitionRequest {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    /// KIP-497: the partition epoch the leader's view is based on; a stale
    /// one is refused (INVALID_UPDATE_VERSION).
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The partition's state after the change.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionReply {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlledShutdownReply {
    /// The offset holding the hand-over (or the one it was judged at).
    pub metadata_offset: u64,
    /// Partitions the broker still leads that another ISR member could take.
    pub leaderships_left: usize,
    /// Partitions it still leads or is in the ISR of that a controlled
    /// shutdown would change.
    #[serde(default)]
    pub partitions_left: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum ControllerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Append these records to the metadata log; forwarded to the leader.
    Propose(MetadataBatch),
    RegisterBroker(BrokerRegistrationRequest),
    BrokerHeartbeat(BrokerHeartbeatRequest),
    DescribeQuorum,
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(Vec<TopicRef>),
    CreatePartitions(CreatePartitionsRequest),
    AlterTopicConfigs(AlterTopicConfigsRequest),
    AlterPartition(AlterPartitionRequest),
    /// The broker is about to stop: move its leaderships to other ISR members.
    ControlledShutdown {
        broker_id: i32,
        broker_epoch: i64,
    },
    /// A block of producer ids for this broker.
    AllocateProducerIds {
        broker_id: i32,
        broker_epoch: i64,
    },
}

#[derive(Serialize, Deserialize, Debug)]
pub enum ControllerResponse {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The log index of the committed entry.
    Propose(Result<u64, ControllerError>),
    /// The broker epoch.
    RegisterBroker(Result<i64, ControllerError>),
    BrokerHeartbeat(Result<BrokerHeartbeatReply, ControllerError>),
    DescribeQuorum(Result<QuorumInfo, ControllerError>),
    CreateTopics(Result<CreateTopicsReply, ControllerError>),
    DeleteTopics(Result<DeleteTopicsReply, ControllerError>),
    CreatePartitions(Result<NamedResults, ControllerError>),
    AlterTopicConfigs(Result<NamedResults, ControllerError>),
    AlterPartition(Result<AlterPartitionReply, ControllerError>),
    ControlledShutdown(Result<ControlledShutdownReply, ControllerError>),
    /// Ids `start..end`.
    AllocateProducerIds(Result<(i64, i64), ControllerError>),
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    FrameTooLarge(u32),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("peer answered {0} to a different request")]
    UnexpectedResponse(&'static str),
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<T: DeserializeOwned>(
    stream: &mut TcpStream,
) -> Result<Option<T>, RpcError> {
    let len = match stream.read_u32().await {
        Ok(len) => len,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len > MAX_FRAME_BYTES {
        return Err(RpcError::FrameTooLarge(len));
    }
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(Some(decode(&buf)?))
}

pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> Result<(), RpcError> {
    let body = encode(value)?;
    let len = u32::try_from(body.len()).map_err(|_| RpcError::FrameTooLarge(u32::MAX))?;
    if len > MAX_FRAME_BYTES {
        return Err(RpcError::FrameTooLarge(len));
    }
    let mut w = BufWriter::new(stream);
    w.write_u32(len).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// One connection to a peer's controller listener, made on first use and
/// remade after any failure, so a peer that is down costs a timeout per call
/// and nothing more.
pub struct PeerClient {
    addr: String,
    conn: Option<TcpStream>,
}

impl PeerClient {
    pub fn new(addr: impl Into<String>) -> Self {
        PeerClient {
            addr: addr.into(),
            conn: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn call(
        &mut self,
        req: &ControllerRequest,
        timeout: Duration,
    ) -> Result<ControllerResponse, RpcError> {
        match tokio::time::timeout(timeout, self.call_inner(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    async fn call_inner(
        &mut self,
        req: &ControllerRequest,
    ) -> Result<ControllerResponse, RpcError> {
        let mut stream = match self.conn.take() {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(&self.addr).await?;
                stream.set_nodelay(true)?;
                stream
            }
        };
        write_frame(&mut stream, req).await?;
        match read_frame(&mut stream).await? {
            Some(resp) => {
                self.conn = Some(stream);
                Ok(resp)
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
        }
    }
}

//! The Kafka wire-protocol server: what unmodified Kafka clients talk to.
//!
//! `server` owns the listener, the connection tasks and shutdown; `codec`
//! owns framing, request headers and the table of versions fjord serves;
//! `handlers` has one file per API family. Handlers read cluster state from
//! the published [`MetadataImage`] and ask the [`Controller`] for what only
//! the active controller knows; they never keep private copies.

pub mod array_guard;
pub mod codec;
pub mod frame;
pub mod handlers;
pub mod server;

use std::sync::Arc;

use tokio::sync::watch;

use crate::controller::Controller;
use crate::metadata::MetadataImage;

pub use server::serve;

/// What the Kafka listener needs from the node. Deliberately not the whole
/// node config: the server takes only what it answers with.
pub struct BrokerContext {
    pub node_id: i32,
    /// The listener whose endpoint brokers advertise in Metadata and
    /// DescribeCluster (Kafka's `inter.broker.listener.name` by default).
    pub listener_name: String,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub socket_request_max_bytes: i32,
    pub image: watch::Receiver<Arc<MetadataImage>>,
    pub controller: Arc<Controller>,
    /// Topic defaults (`num.partitions`, `log.*`) and `auto.create.topics.enable`.
    pub config: Arc<crate::config::Config>,
    /// The partitions this broker hosts: produce and fetch go through it.
    pub replicas: Arc<crate::replication::ReplicaManager>,
    /// Consumer groups this broker coordinates, and offset commits.
    pub group: Arc<crate::group::GroupCoordinator>,
}

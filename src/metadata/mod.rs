//! Cluster metadata: the records of the metadata log and the image they
//! replay into. Knows nothing of sockets or Raft.

pub mod image;
pub mod records;

pub use image::{BrokerRegistration, MetadataDelta, MetadataImage};
pub use records::{Endpoint, MetadataBatch, MetadataRecord};

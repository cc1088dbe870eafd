//! On-disk state of a node's log directories.

pub mod meta_properties;

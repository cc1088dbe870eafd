//! `meta.properties`: Kafka's file, with Kafka's keys, naming the cluster and
//! node a log directory belongs to. A directory that belongs to another
//! cluster or node is refused, so two clusters' data never mix.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "meta.properties";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: i32,
    pub cluster_id: Option<String>,
    pub directory_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaPropertiesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{path}: belongs to node.id {found}, but this node is node.id {expected}")]
    OtherNode {
        path: PathBuf,
        found: i32,
        expected: i32,
    },
    #[error("{path}: belongs to cluster {found}, but this node is in cluster {expected}")]
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl MetaProperties {
    pub fn read(dir: &Path) -> Result<Option<MetaProperties>, MetaPropertiesError> {
        let path = dir.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MetaPropertiesError::Io { path, source }),
        };
        let map: BTreeMap<&str, &str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let invalid = |problem: String| MetaPropertiesError::Invalid {
            path: path.clone(),
            problem,
        };
        let node_id = map
            .get("node.id")
            .ok_or_else(|| invalid("no node.id".into()))?
            .parse()
            .map_err(|_| invalid("node.id is not an integer".into()))?;
        Ok(Some(MetaProperties {
            node_id,
            cluster_id: map.get("cluster.id").map(|s| s.to_string()),
            directory_id: map
                .get("directory.id")
                .map(|s| s.to_string())
                .unwrap_or_default(),
        }))
    }

    /// Writes atomically (temp file, fsync, rename), so a crash leaves either
    /// the old file or the new one.
    pub fn write(&self, dir: &Path) -> Result<(), MetaPropertiesError> {
        let path = dir.join(FILE_NAME);
        let io = |source| MetaPropertiesError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut text = String::from("#\n#Written by fjord\n");
        if let Some(c) = &self.cluster_id {
            text.push_str(&format!("cluster.id={c}\n"));
        }
        text.push_str(&format!(
            "directory.id={}\nnode.id={}\nversion=1\n",
            self.directory_id, self.node_id
        ));
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Checks every directory's `meta.properties` against this node and each
/// other; returns the cluster id they agree on, if any has one.
pub fn check_dirs(
    dirs: &[PathBuf],
    node_id: i32,
    configured_cluster_id: Option<&str>,
) -> Result<Option<String>, MetaPropertiesError> {
    let mut cluster_id = configured_cluster_id.map(str::to_string);
    for dir in dirs {
        let Some(meta) = MetaProperties::read(dir)? else {
            continue;
        };
        let path = dir.join(FILE_NAME);
        if meta.node_id != node_id {
            return Err(MetaPropertiesError::OtherNode {
                path,
                found: meta.node_id,
                expected: node_id,
            });
        }
        match (&cluster_id, meta.cluster_id) {
            (Some(expected), Some(found)) if *expected != found => {
                return Err(MetaPropertiesError::OtherCluster {
                    path,
                    found,
                    expected: expected.clone(),
                })
            }
            (None, Some(found)) => cluster_id = Some(found),
            _ => {}
        }
    }
    Ok(cluster_id)
}

/// Records `cluster_id` in every directory (keeping each one's directory id).
pub fn stamp_dirs(
    dirs: &[PathBuf],
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<(), MetaPropertiesError> {
    for dir in dirs {
        let existing = MetaProperties::read(dir)?;
        let directory_id = existing
            .as_ref()
            .map(|m| m.directory_id.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(crate::controller::random_cluster_id);
        let meta = MetaProperties {
            node_id,
            cluster_id: cluster_id.map(str::to_string),
            directory_id,
        };
        if existing.as_ref() != Some(&meta) {
            meta.write(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        assert_eq!(check_dirs(&dirs, 1, None).unwrap(), None);
        stamp_dirs(&dirs, 1, Some("abc")).unwrap();
        assert_eq!(check_dirs(&dirs, 1, None).unwrap().as_deref(), Some("abc"));
        assert!(matches!(
            check_dirs(&dirs, 2, None),
            Err(MetaPropertiesError::OtherNode { found: 1, .. })
        ));
        assert!(matches!(
            check_dirs(&dirs, 1, Some("xyz")),
            Err(MetaPropertiesError::OtherCluster { .. })
        ));
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("cluster.id=abc\n") && text.contains("node.id=1\n"));
    }
}

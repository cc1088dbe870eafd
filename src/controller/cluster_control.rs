//! The active controller's view of broker liveness (Kafka's
//! `ClusterControlManager` and heartbeat manager): registrations and fencing
//! become records in the metadata log; heartbeats themselves are not
//! written, only kept in memory on the leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::sync::watch;

use super::raft::rpc::{BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationRequest};
use super::{Controller, ControllerError};
use crate::metadata::{BrokerRegistration, MetadataRecord};

pub(super) struct ClusterControl {
    session_timeout: Duration,
    last_heartbeat: std::sync::Mutex<HashMap<i32, Instant>>,
}

impl ClusterControl {
    pub(super) fn new(session_timeout: Duration) -> Self {
        ClusterControl {
            session_timeout,
            last_heartbeat: Default::default(),
        }
    }

    fn touch(&self, broker_id: i32) {
        if let Ok(mut m) = self.last_heartbeat.lock() {
            m.insert(broker_id, Instant::now());
        }
    }

    /// A new incarnation gets a new registration record (fenced until its
    /// first heartbeat); a retried registration of the same incarnation gets
    /// its existing epoch back.
    pub(super) async fn register(
        &self,
        controller: &Controller,
        req: &BrokerRegistrationRequest,
    ) -> Result<i64, ControllerError> {
        let existing = current_registration(controller, req.broker_id)?;
        if let Some(b) = existing.filter(|b| b.incarnation_id == req.incarnation_id) {
            self.touch(req.broker_id);
            return Ok(b.broker_epoch);
        }
        // The cluster is named before any broker is in it, so no client
        // ever sees a live broker with no cluster id.
        let mut records: Vec<MetadataRecord> =
            cluster_id_if_missing(controller).into_iter().collect();
        records.push(MetadataRecord::RegisterBroker {
            broker_id: req.broker_id,
            incarnation_id: req.incarnation_id,
            endpoints: req.endpoints.clone(),
            rack: req.rack.clone(),
            fenced: true,
        });
        let index = controller.write(records).await?;
        self.touch(req.broker_id);
        tracing::info!(broker = req.broker_id, epoch = index, "broker registered");
        Ok(index as i64)
    }

    pub(super) async fn heartbeat(
        &self,
        controller: &Controller,
        req: &BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatReply, ControllerError> {
        let registration = current_registration(controller, req.broker_id)?;
        let Some(b) = registration.filter(|b| b.broker_epoch == req.broker_epoch) else {
            return Err(ControllerError::StaleBrokerEpoch(format!(
                "broker {} epoch {} is not registered",
                req.broker_id, req.broker_epoch
            )));
        };
        self.touch(req.broker_id);
        if b.fenced {
            controller
                .write(vec![MetadataRecord::UnfenceBroker {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                }])
                .await?;
            tracing::info!(broker = b.broker_id, "broker unfenced");
        }
        Ok(BrokerHeartbeatReply { is_fenced: false })
    }

    /// Brokers that are unfenced in the image but have not heartbeated within
    /// the session timeout. `since` is when this node became leader: a broker
    /// it has not heard from yet gets a whole session from then.
    fn expired(&self, controller: &Controller, since: Instant) -> Vec<(i32, i64)> {
        let image = controller.image.borrow().clone();
        let Ok(last) = self.last_heartbeat.lock() else {
            return Vec::new();
        };
        image
            .cluster
            .active_brokers()
            .filter(|b| {
                let seen = last.get(&b.broker_id).copied().unwrap_or(since).max(since);
                seen.elapsed() > self.session_timeout
            })
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect()
    }
}

/// The broker's registration in the image, as only the active controller
/// may judge it.
fn current_registration(
    controller: &Controller,
    broker_id: i32,
) -> Result<Option<BrokerRegistration>, ControllerError> {
    if !controller.is_leader() {
        return Err(ControllerError::NotController);
    }
    Ok(controller
        .image
        .borrow()
        .cluster
        .brokers
        .get(&broker_id)
        .cloned())
}

/// The record naming the cluster (the configured id, else a new one), if
/// the log has none yet. Replay keeps the first, so racing writers are safe.
fn cluster_id_if_missing(controller: &Controller) -> Option<MetadataRecord> {
    if controller.image.borrow().cluster_id.is_some() {
        return None;
    }
    let cluster_id = controller
        .options
        .cluster_id
        .clone()
        .unwrap_or_else(random_cluster_id);
    Some(MetadataRecord::ClusterId { cluster_id })
}

/// Kafka's format for a cluster id: 16 random bytes, URL-safe base64.
pub fn random_cluster_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// What only the active controller does, on a timer: give the cluster its id
/// and fence brokers whose session expired.
pub(super) async fn run_leader_duties(
    controller: Arc<Controller>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leader_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !controller.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        if let Some(record) = cluster_id_if_missing(&controller) {
            if let Err(e) = controller.write(vec![record]).await {
                tracing::warn!("writing the cluster id: {e}");
            }
        }
        for (broker_id, broker_epoch) in controller.cluster_control.expired(&controller, since) {
            tracing::warn!(broker = broker_id, "broker session expired; fencing it");
            let fence = MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            };
            if let Err(e) = controller.write(vec![fence]).await {
                tracing::warn!(broker = broker_id, "fencing: {e}");
            }
        }
    }
}

//! The active controller's view of broker liveness (Kafka's
//! `ClusterControlManager` and heartbeat manager): registrations and fencing
//! become records in the metadata log; heartbeats themselves are not
//! written, only kept in memory on the leader.
//!
//! Every broker change that alters who may lead (a fence, an unfence, a new
//! incarnation replacing an old one) is written in one entry with the
//! leader elections and ISR changes it forces (`replication_control`), under
//! the topic lock, so no image ever shows a fenced broker leading a
//! partition another ISR member could lead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::sync::watch;

use super::raft::rpc::{BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationRequest};
use super::replication_control::{changes_for_broker, write_counted, BrokerState};
use super::{Controller, ControllerError};
use crate::metadata::{BrokerRegistration, MetadataImage, MetadataRecord};

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
        let _guard = controller.topic_control.lock.lock().await;
        let (image, existing) = current_registration(controller, req.broker_id).await?;
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
        // A new incarnation (a restart, maybe faster than the session
        // timeout) starts fenced: its old self's leaderships and ISR places
        // go as for a fence.
        records.extend(changes_for_broker(
            controller,
            &image,
            req.broker_id,
            BrokerState::Gone,
        ));
        let index = write_counted(controller, records).await?;
        self.touch(req.broker_id);
        tracing::info!(broker = req.broker_id, epoch = index, "broker registered");
        Ok(index as i64)
    }

    pub(super) async fn heartbeat(
        &self,
        controller: &Controller,
        req: &BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatReply, ControllerError> {
        // Under the lock a heartbeat cannot slip between the expiry check
        // and the fence: it either comes first (and the fence is skipped)
        // or sees the fence (and unfences).
        let _guard = controller.topic_control.lock.lock().await;
        let (image, registration) = current_registration(controller, req.broker_id).await?;
        let Some(b) = registration.filter(|b| b.broker_epoch == req.broker_epoch) else {
            return Err(ControllerError::StaleBrokerEpoch(format!(
                "broker {} epoch {} is not registered",
                req.broker_id, req.broker_epoch
            )));
        };
        self.touch(req.broker_id);
        if !b.fenced {
            return Ok(BrokerHeartbeatReply {
                is_fenced: false,
                metadata_offset: 0,
            });
        }
        let mut records = vec![MetadataRecord::UnfenceBroker {
            broker_id: b.broker_id,
            broker_epoch: b.broker_epoch,
        }];
        records.extend(changes_for_broker(
            controller,
            &image,
            b.broker_id,
            BrokerState::Active,
        ));
        let offset = write_counted(controller, records).await?;
        tracing::info!(broker = b.broker_id, "broker unfenced");
        Ok(BrokerHeartbeatReply {
            is_fenced: false,
            metadata_offset: offset,
        })
    }

    fn is_expired(&self, broker_id: i32, since: Instant) -> bool {
        let Ok(last) = self.last_heartbeat.lock() else {
            return false;
        };
        let seen = last.get(&broker_id).copied().unwrap_or(since).max(since);
        seen.elapsed() > self.session_timeout
    }

    /// Brokers that are unfenced in the image (shutting down or not) but
    /// have not heartbeated within the session timeout. `since` is when this
    /// node became leader: a broker it has not heard from yet gets a whole
    /// session from then.
    fn expired(&self, controller: &Controller, since: Instant) -> Vec<(i32, i64)> {
        let image = controller.image.borrow().clone();
        image
            .cluster
            .unfenced_brokers()
            .filter(|b| self.is_expired(b.broker_id, since))
            .map(|b| (b.broker_id, b.broker_epoch))
            .collect()
    }

    /// Fences `broker_id` (if its session is still expired and its epoch
    /// still current) together with the elections and ISR removals it forces.
    async fn fence(
        &self,
        controller: &Controller,
        broker_id: i32,
        broker_epoch: i64,
        since: Instant,
    ) -> Result<(), ControllerError> {
        let _guard = controller.topic_control.lock.lock().await;
        if !self.is_expired(broker_id, since) {
            return Ok(());
        }
        let (image, current) = current_registration(controller, broker_id).await?;
        if !current.is_some_and(|b| b.broker_epoch == broker_epoch && !b.fenced) {
            return Ok(());
        }
        tracing::warn!(broker = broker_id, "broker session expired; fencing it");
        let mut records = vec![MetadataRecord::FenceBroker {
            broker_id,
            broker_epoch,
        }];
        records.extend(changes_for_broker(
            controller,
            &image,
            broker_id,
            BrokerState::Gone,
        ));
        write_counted(controller, records).await?;
        Ok(())
    }
}

/// The active controller's image (see `Controller::linearizable_image`)
/// and the broker's registration in it, as only the active controller may
/// judge it.
async fn current_registration(
    controller: &Controller,
    broker_id: i32,
) -> Result<(Arc<MetadataImage>, Option<BrokerRegistration>), ControllerError> {
    let image = controller.linearizable_image().await?;
    let registration = image.cluster.brokers.get(&broker_id).cloned();
    Ok((image, registration))
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
        let cluster_control = &controller.cluster_control;
        for (broker_id, broker_epoch) in cluster_control.expired(&controller, since) {
            if let Err(e) = cluster_control
                .fence(&controller, broker_id, broker_epoch, since)
                .await
            {
                tracing::warn!(broker = broker_id, "fencing: {e}");
            }
        }
    }
}

//! The broker role's side of KRaft membership (Kafka's
//! `BrokerLifecycleManager`): register with the active controller, then
//! heartbeat every `broker.heartbeat.interval.ms`. A heartbeat refused for a
//! stale epoch (the controller lost or replaced our registration) means
//! registering again.
//!
//! The [`BrokerLease`] is what keeps a broker from acting as a zombie: the
//! controller fences a broker whose heartbeats stop for
//! `broker.session.timeout.ms` and elects other leaders, so a broker that
//! was paused (SIGSTOP, a long GC-like stall, a partition from the
//! controller) must assume the same has happened to it once its own last
//! acknowledged heartbeat is that old, and stop leading until a heartbeat
//! succeeds again and its image has caught up with what was decided while
//! it was away.
//!
//! Controlled shutdown lives here too: before the Kafka listener stops, the
//! broker asks the controller to move its leaderships to other ISR members
//! and waits (bounded) until its own image shows them moved, so producers
//! only ever see a retriable NOT_LEADER_OR_FOLLOWER and a new leader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::raft::rpc::{BrokerHeartbeatReply, BrokerHeartbeatRequest, BrokerRegistrationRequest};
use super::replication_control::controlled_shutdown_pending;
use super::{Controller, ControllerError};
use crate::config::Config;
use crate::metadata::{Endpoint, MetadataImage};

/// How long a stopping broker waits for its leaderships to move.
pub const CONTROLLED_SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

/// This broker's standing with the controller, shared with whoever must not
/// act as a leader without it (the replica manager).
pub struct BrokerLease {
    session_timeout: Duration,
    image: watch::Receiver<Arc<MetadataImage>>,
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default)]
struct LeaseState {
    broker_epoch: Option<i64>,
    /// When the last accepted registration or heartbeat was *sent*: the
    /// controller's session clock for it started no earlier.
    renewed_at: Option<Instant>,
    fenced: bool,
    /// The local image must reach this offset (the unfence) first.
    caught_up_offset: u64,
}

impl BrokerLease {
    /// A lease that is not active until the broker registers and a
    /// heartbeat unfences it; `image` is this node's metadata image.
    pub fn new(session_timeout: Duration, image: watch::Receiver<Arc<MetadataImage>>) -> Self {
        BrokerLease {
            session_timeout,
            image,
            state: Mutex::new(LeaseState {
                fenced: true,
                ..Default::default()
            }),
        }
    }

    /// True only while the last accepted heartbeat is younger than the
    /// session timeout, that heartbeat found the broker unfenced, and the
    /// local image holds the unfence (so every election made while the
    /// broker was fenced is known here).
    pub fn is_active(&self) -> bool {
        let (renewed_at, caught_up_offset) = {
            let s = self.lock();
            if s.broker_epoch.is_none() || s.fenced {
                return false;
            }
            (s.renewed_at, s.caught_up_offset)
        };
        renewed_at.is_some_and(|t| t.elapsed() < self.session_timeout)
            && self.image.borrow().offset >= caught_up_offset
    }

    /// The epoch of this broker's current registration, if it has one.
    pub fn broker_epoch(&self) -> Option<i64> {
        self.lock().broker_epoch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A registration sent at `sent_at` was accepted: fenced until the first
    /// heartbeat, as the controller registers it.
    fn registered(&self, broker_epoch: i64, sent_at: Instant) {
        let mut s = self.lock();
        *s = LeaseState {
            broker_epoch: Some(broker_epoch),
            renewed_at: Some(sent_at),
            fenced: true,
            caught_up_offset: 0,
        };
    }

    fn renewed(&self, sent_at: Instant, reply: BrokerHeartbeatReply) {
        let mut s = self.lock();
        s.renewed_at = Some(s.renewed_at.map_or(sent_at, |t| t.max(sent_at)));
        s.fenced = reply.is_fenced;
        s.caught_up_offset = s.caught_up_offset.max(reply.metadata_offset);
    }

    /// The controller no longer knows this registration.
    fn lost(&self) {
        let mut s = self.lock();
        s.broker_epoch = None;
        s.fenced = true;
    }
}

pub struct BrokerLifecycle {
    pub broker_id: i32,
    pub incarnation_id: uuid::Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub heartbeat_interval: Duration,
    pub lease: Arc<BrokerLease>,
}

impl BrokerLifecycle {
    pub async fn run(self, controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let sent_at = Instant::now();
            let result = match self.lease.broker_epoch() {
                None => controller
                    .register_broker(self.registration())
                    .await
                    .map(|e| self.lease.registered(e, sent_at)),
                Some(broker_epoch) => controller
                    .broker_heartbeat(BrokerHeartbeatRequest {
                        broker_id: self.broker_id,
                        broker_epoch,
                    })
                    .await
                    .map(|reply| {
                        self.lease.renewed(sent_at, reply);
                        metrics::counter!("fjord_broker_heartbeats_total").increment(1);
                    }),
            };
            match result {
                Ok(()) => warned = false,
                Err(ControllerError::StaleBrokerEpoch(why)) => {
                    tracing::warn!("heartbeat refused ({why}); registering again");
                    self.lease.lost();
                }
                Err(e) => {
                    metrics::counter!("fjord_broker_heartbeat_failures_total").increment(1);
                    if !warned {
                        tracing::warn!(broker = self.broker_id, "broker heartbeat: {e}");
                        warned = true;
                    }
                }
            }
        }
    }

    fn registration(&self) -> BrokerRegistrationRequest {
        BrokerRegistrationRequest {
            broker_id: self.broker_id,
            incarnation_id: self.incarnation_id,
            endpoints: self.endpoints.clone(),
            rack: self.rack.clone(),
        }
    }
}

/// Kafka's controlled shutdown, broker side (with `controlled.shutdown.enable`):
/// asks the controller to move this broker's leaderships away and take it
/// out of ISRs, and waits, up to [`CONTROLLED_SHUTDOWN_PATIENCE`], until the
/// local image shows it leads nothing another ISR member could lead and no
/// leader's acks=all waits on it. Asks again while waiting, since a follower
/// may catch up (and so become a possible successor) meanwhile. A broker
/// with nothing to change (the last of a cluster going down) does not ask,
/// so it does not wait for a quorum that may be gone. Never fails: the
/// shutdown goes on regardless.
pub async fn controlled_shutdown(controller: &Controller, lease: &BrokerLease, config: &Config) {
    if !config.controlled_shutdown_enable {
        return;
    }
    let broker_id = config.node_id;
    let Some(broker_epoch) = lease.broker_epoch() else {
        return;
    };
    let deadline = Instant::now() + CONTROLLED_SHUTDOWN_PATIENCE;
    let mut image = controller.image();
    if controlled_shutdown_pending(&image.borrow(), broker_id) == 0 {
        return;
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let asked = tokio::time::timeout(
            left,
            controller.controlled_shutdown(broker_id, broker_epoch),
        )
        .await;
        let offset = match asked {
            Ok(Ok(reply)) => reply.metadata_offset,
            Ok(Err(e)) => {
                tracing::warn!(broker = broker_id, "controlled shutdown refused: {e}");
                return;
            }
            Err(_) => break,
        };
        let wait = left.min(Duration::from_millis(500));
        let moved = tokio::time::timeout(
            wait,
            image
                .wait_for(|i| i.offset >= offset && controlled_shutdown_pending(i, broker_id) == 0),
        )
        .await;
        if matches!(moved, Ok(Ok(_))) {
            tracing::info!(
                broker = broker_id,
                "controlled shutdown: leaderships handed over"
            );
            return;
        }
    }
    let left = controlled_shutdown_pending(&image.borrow(), broker_id);
    tracing::warn!(
        broker = broker_id,
        partitions = left,
        "controlled shutdown: stopping before every leadership moved"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_at(offset: u64) -> Arc<MetadataImage> {
        Arc::new(MetadataImage {
            offset,
            ..Default::default()
        })
    }

    #[test]
    fn lease_needs_a_fresh_unfenced_heartbeat_and_a_caught_up_image() {
        let (tx, rx) = watch::channel(image_at(5));
        let lease = BrokerLease::new(Duration::from_secs(9), rx);
        assert!(!lease.is_active());
        assert_eq!(lease.broker_epoch(), None);

        // Registered brokers are fenced until a heartbeat unfences them.
        lease.registered(4, Instant::now());
        assert_eq!(lease.broker_epoch(), Some(4));
        assert!(!lease.is_active());

        // Unfenced at offset 7: not active until the image holds it.
        let unfenced = BrokerHeartbeatReply {
            is_fenced: false,
            metadata_offset: 7,
        };
        lease.renewed(Instant::now(), unfenced);
        assert!(!lease.is_active());
        tx.send(image_at(7)).unwrap();
        assert!(lease.is_active());

        // The last accepted heartbeat was sent a whole session ago: the
        // controller may have fenced us and elected other leaders.
        let stale = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .expect("the clock runs past ten seconds");
        let (_tx, rx) = watch::channel(image_at(7));
        let paused = BrokerLease::new(Duration::from_secs(9), rx);
        paused.registered(4, stale);
        paused.renewed(stale, unfenced);
        assert!(!paused.is_active());
        paused.renewed(Instant::now(), unfenced);
        assert!(paused.is_active());

        // A fenced answer or a lost registration ends it at once.
        paused.renewed(
            Instant::now(),
            BrokerHeartbeatReply {
                is_fenced: true,
                metadata_offset: 0,
            },
        );
        assert!(!paused.is_active());
        lease.lost();
        assert!(!lease.is_active());
        assert_eq!(lease.broker_epoch(), None);
    }
}

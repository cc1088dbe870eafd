//! The broker role's side of KRaft membership (Kafka's
//! `BrokerLifecycleManager`): register with the active controller, then
//! heartbeat every `broker.heartbeat.interval.ms`. A heartbeat refused for a
//! stale epoch (the controller lost or replaced our registration) means
//! registering again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::raft::rpc::{BrokerHeartbeatRequest, BrokerRegistrationRequest};
use super::{Controller, ControllerError};
use crate::metadata::Endpoint;

pub struct BrokerLifecycle {
    pub broker_id: i32,
    pub incarnation_id: uuid::Uuid,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    pub heartbeat_interval: Duration,
}

impl BrokerLifecycle {
    pub async fn run(self, controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut epoch: Option<i64> = None;
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let result = match epoch {
                None => controller
                    .register_broker(self.registration())
                    .await
                    .map(|e| epoch = Some(e)),
                Some(broker_epoch) => controller
                    .broker_heartbeat(BrokerHeartbeatRequest {
                        broker_id: self.broker_id,
                        broker_epoch,
                    })
                    .await
                    .map(|_| metrics::counter!("fjord_broker_heartbeats_total").increment(1)),
            };
            match result {
                Ok(()) => warned = false,
                Err(ControllerError::StaleBrokerEpoch(why)) => {
                    tracing::warn!("heartbeat refused ({why}); registering again");
                    epoch = None;
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

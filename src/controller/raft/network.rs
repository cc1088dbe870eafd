//! openraft's network over the controller listener: one [`PeerClient`] per
//! target, with the RPC's own deadline. Successful appends are stamped in
//! [`PeerContacts`] so DescribeQuorum can report each voter's last contact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::rpc::{ControllerRequest, ControllerResponse, PeerClient, RpcError};
use super::TypeConfig;

/// Unix milliseconds of the last successful AppendEntries to each peer, and
/// of the last one after which the peer had the leader's whole log.
#[derive(Clone, Default)]
pub struct PeerContacts {
    inner: Arc<Mutex<HashMap<u64, Contact>>>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Contact {
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl PeerContacts {
    pub fn get(&self, id: u64) -> Option<Contact> {
        self.inner.lock().ok()?.get(&id).copied()
    }

    fn record(&self, id: u64, caught_up: bool) {
        if let Ok(mut map) = self.inner.lock() {
            let now = now_ms();
            let c = map.entry(id).or_default();
            c.last_fetch_ms = now;
            if caught_up {
                c.last_caught_up_ms = now;
            }
        }
    }
}

pub struct Network {
    pub contacts: PeerContacts,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            client: PeerClient::new(node.addr.clone()),
            contacts: self.contacts.clone(),
        }
    }
}

pub struct PeerConnection {
    target: u64,
    client: PeerClient,
    contacts: PeerContacts,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

fn transport_error<E: std::error::Error>(
    e: RpcError,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match e {
        RpcError::Io(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl PeerConnection {
    async fn call(
        &mut self,
        req: ControllerRequest,
        option: &RPCOption,
    ) -> Result<ControllerResponse, RpcError> {
        self.client.call(&req, option.hard_ttl()).await
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<u64, E>,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        // The leader sends nothing past its last entry, so a peer that accepts
        // an append ending where the leader's log ends is caught up.
        let sent_to_end = rpc.entries.is_empty();
        match self
            .call(ControllerRequest::AppendEntries(rpc), &option)
            .await
        {
            Ok(ControllerResponse::AppendEntries(Ok(resp))) => {
                let ok = matches!(resp, AppendEntriesResponse::Success);
                self.contacts.record(self.target, ok && sent_to_end);
                Ok(resp)
            }
            Ok(ControllerResponse::AppendEntries(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(transport_error(RpcError::UnexpectedResponse(
                "AppendEntries",
            ))),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .call(ControllerRequest::InstallSnapshot(rpc), &option)
            .await
        {
            Ok(ControllerResponse::InstallSnapshot(Ok(resp))) => {
                self.contacts.record(self.target, false);
                Ok(resp)
            }
            Ok(ControllerResponse::InstallSnapshot(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(transport_error(RpcError::UnexpectedResponse(
                "InstallSnapshot",
            ))),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self.call(ControllerRequest::Vote(rpc), &option).await {
            Ok(ControllerResponse::Vote(Ok(resp))) => Ok(resp),
            Ok(ControllerResponse::Vote(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(transport_error(RpcError::UnexpectedResponse("Vote"))),
            Err(e) => Err(transport_error(e)),
        }
    }
}

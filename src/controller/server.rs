//! The controller listener: one task per connection, requests answered in
//! order. A malformed frame closes only its connection.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::raft::rpc::{read_frame, write_frame, ControllerRequest, RpcError};
use super::Controller;

pub(super) async fn serve(
    listener: TcpListener,
    controller: Arc<Controller>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let controller = controller.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(stream, controller, shutdown).await {
                            tracing::debug!(%peer, "controller connection closed: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("controller listener accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    controller: Arc<Controller>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RpcError> {
    loop {
        let req: ControllerRequest = tokio::select! {
            r = read_frame(&mut stream) => match r? {
                Some(req) => req,
                None => return Ok(()),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let resp = controller.handle(req).await;
        write_frame(&mut stream, &resp).await?;
    }
}

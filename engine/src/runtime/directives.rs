//! Carrying out PD's directives. A directive names the region epoch it was
//! computed for; the store checks it against the meta its leader reported
//! in the same heartbeat and ignores it if the region has moved past it.
//! What remains goes to the region's leader as the admin request an
//! operator would send (the shard checks the epoch again when it proposes a
//! membership change), from a worker thread of its own so heartbeats never
//! wait for a change to be applied. The worker's queue is bounded; a
//! directive that does not fit, or that fails, is dropped (logged): PD
//! hands each out once, and a scheduler issues again what did not happen.

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

use pd::protocol::{Directive, DirectiveAction};

use crate::client::one_shot::call_once;
use crate::client::protocol::{ClientOp, ClientRequest};
use crate::region::meta::{PeerChange, PeerMeta, RegionMeta};

/// Directives waiting for the worker.
pub const DIRECTIVES_QUEUED_MAX: usize = 1024;
/// How long one directive's request may take.
const DIRECTIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin request carrying `d` out on `meta` (as its leader reported
/// it), or why the directive is ignored.
pub fn directive_op(d: &Directive, meta: &RegionMeta) -> Result<ClientOp, String> {
    if meta.id != d.region_id {
        return Err(format!("a directive for region {} checked against region {}", d.region_id, meta.id));
    }
    let now = meta.epoch();
    if now.conf_ver != d.epoch.conf_ver || now.version != d.epoch.version {
        return Err(format!(
            "region {}: the directive is for epoch {}/{}, the region is at {}/{}",
            meta.id, d.epoch.conf_ver, d.epoch.version, now.conf_ver, now.version
        ));
    }
    Ok(match &d.action {
        DirectiveAction::TransferLeader { to_store } => {
            let to = meta
                .peer_on(*to_store)
                .ok_or_else(|| format!("region {}: no peer on store {to_store} to hand leadership to", meta.id))?;
            ClientOp::TransferLeader { to_peer: to.peer_id }
        }
        DirectiveAction::AddPeer(p) => ClientOp::ChangePeer(PeerChange::AddVoter(PeerMeta::from(*p))),
        DirectiveAction::RemovePeer(p) => ClientOp::ChangePeer(PeerChange::RemoveVoter(PeerMeta::from(*p))),
    })
}

/// Carries out directives on this store's region leaders, one at a time.
pub struct DirectiveRunner {
    store_id: u64,
    /// To the worker; dropping it ends the worker after its current request.
    queue: Option<SyncSender<(SocketAddr, ClientRequest)>>,
    next_id: u64,
}

impl DirectiveRunner {
    pub fn new(store_id: u64) -> DirectiveRunner {
        let (tx, rx) = sync_channel::<(SocketAddr, ClientRequest)>(DIRECTIVES_QUEUED_MAX);
        let worker = std::thread::Builder::new().name(format!("store{store_id}-directives")).spawn(move || {
            for (addr, req) in rx {
                match call_once(addr, &req, DIRECTIVE_TIMEOUT) {
                    Ok(resp) => match resp.result {
                        Ok(_) => tracing::info!(region = req.region, op = ?req.op, "PD directive carried out"),
                        Err(e) => tracing::warn!(region = req.region, op = ?req.op, "PD directive refused: {e}"),
                    },
                    Err(e) => tracing::warn!(region = req.region, "PD directive not delivered: {e}"),
                }
            }
        });
        let queue = match worker {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("no directive worker ({e}): PD's directives will be ignored");
                None
            }
        };
        DirectiveRunner { store_id, queue, next_id: 1 }
    }

    /// Queues `work`: each directive with its region's reported meta and the
    /// leader's client address. Returns how many were queued.
    pub fn run(&mut self, work: Vec<(Directive, RegionMeta, SocketAddr)>) -> usize {
        let mut queued = 0;
        for (d, meta, addr) in work {
            let op = match directive_op(&d, &meta) {
                Ok(op) => op,
                Err(why) => {
                    tracing::info!("PD directive ignored: {why}");
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            let (conf_ver, version) = (d.epoch.conf_ver, d.epoch.version);
            let req = ClientRequest { id, store_id: self.store_id, region: meta.id, conf_ver, version, op };
            let Some(queue) = self.queue.as_ref() else {
                tracing::warn!(region = meta.id, "PD directive dropped: no worker");
                continue;
            };
            match queue.try_send((addr, req)) {
                Ok(()) => queued += 1,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!(region = meta.id, "PD directive dropped: {DIRECTIVES_QUEUED_MAX} already wait")
                }
                Err(TrySendError::Disconnected(_)) => {
                    tracing::warn!(region = meta.id, "PD directive dropped: no worker")
                }
            }
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RegionMeta {
        RegionMeta {
            id: 7,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 3,
            version: 2,
            peers: vec![
                PeerMeta { peer_id: 10, store_id: 1, shard: 0 },
                PeerMeta { peer_id: 11, store_id: 2, shard: 0 },
            ],
            max_peer_id: 11,
        }
    }

    fn directive(conf_ver: u64, version: u64, action: DirectiveAction) -> Directive {
        Directive { region_id: 7, epoch: pd::Epoch { conf_ver, version }, action }
    }

    #[test]
    fn a_directive_for_the_current_epoch_becomes_the_admin_request_and_a_stale_one_is_ignored() {
        let m = meta();
        let to2 = DirectiveAction::TransferLeader { to_store: 2 };
        assert_eq!(directive_op(&directive(3, 2, to2.clone()), &m), Ok(ClientOp::TransferLeader { to_peer: 11 }));
        assert!(directive_op(&directive(2, 2, to2.clone()), &m).unwrap_err().contains("epoch 2/2"));
        assert!(directive_op(&directive(3, 1, to2), &m).is_err(), "an older version: before a split");
        let nowhere = DirectiveAction::TransferLeader { to_store: 9 };
        assert!(directive_op(&directive(3, 2, nowhere), &m).unwrap_err().contains("no peer on store 9"));
        let p = pd::PeerInfo { peer_id: 12, store_id: 3, shard: 1 };
        assert_eq!(
            directive_op(&directive(3, 2, DirectiveAction::AddPeer(p)), &m),
            Ok(ClientOp::ChangePeer(PeerChange::AddVoter(PeerMeta { peer_id: 12, store_id: 3, shard: 1 })))
        );
    }
}

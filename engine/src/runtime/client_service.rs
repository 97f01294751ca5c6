//! A shard's client port: each connection's frames are decoded into
//! requests for the shard loop; replies go back on the connection they came
//! from, in whatever order they finish. A malformed frame closes that
//! connection only; a request naming another cluster is answered
//! `ClusterNotMatch` here, before the loop sees it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use transport::{FrameDecoder, FrameKind};

use crate::client::protocol::{decode, encode_frame, ClientRequest, ClientResponse, CLIENT_MESSAGE_BYTES_MAX};
use crate::error::RegionError;
use transport::net::Notify;

/// Client connections one shard serves at once.
pub const CLIENT_CONNECTIONS_MAX: usize = 4096;
/// Requests one connection may have in flight (until their answers are
/// written); past it the connection stops being read.
pub const CONNECTION_REQUESTS_MAX: usize = 4096;
/// A client that takes longer than this to accept our replies is dropped.
pub const REPLY_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The loop's side of the client port.
#[derive(Default)]
pub struct ClientQueues {
    /// Requests read from connections, not yet taken by the loop.
    pub requests: RefCell<Vec<(u64, ClientRequest)>>,
    connections: RefCell<BTreeMap<u64, Rc<Connection>>>,
    next_connection: std::cell::Cell<u64>,
}

struct Connection {
    /// Encoded response frames not yet written, and how many.
    replies: RefCell<(Vec<u8>, usize)>,
    wake: Notify,
    in_flight: std::cell::Cell<usize>,
    more_room: Notify,
}

impl ClientQueues {
    /// Sends a response on connection `conn` (dropped if it has closed).
    pub fn reply(&self, conn: u64, response: &ClientResponse) {
        if let Some(c) = self.connections.borrow().get(&conn) {
            let mut replies = c.replies.borrow_mut();
            encode_frame(&mut replies.0, FrameKind::ClientResponse, response);
            replies.1 += 1;
            drop(replies);
            c.wake.notify();
        }
    }
}

/// Accepts client connections until the listener fails; requests must
/// name `cluster_id`.
pub async fn serve(listener: TcpListener, queues: Rc<ClientQueues>, loop_wake: Rc<Notify>, cluster_id: u64) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("client accept: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if queues.connections.borrow().len() >= CLIENT_CONNECTIONS_MAX {
            tracing::warn!("client connection refused: {CLIENT_CONNECTIONS_MAX} already open");
            continue;
        }
        stream.set_nodelay(true).ok();
        if let Err(e) = transport::net::tune(&stream) {
            tracing::warn!("client socket options: {e}");
        }
        let id = queues.next_connection.get();
        queues.next_connection.set(id + 1);
        let conn = Rc::new(Connection {
            replies: RefCell::default(),
            wake: Notify::default(),
            in_flight: Default::default(),
            more_room: Notify::default(),
        });
        queues.connections.borrow_mut().insert(id, conn.clone());
        let (q, w) = (queues.clone(), loop_wake.clone());
        glommio::spawn_local(async move {
            let (mut read, mut write) = futures_lite::io::split(stream);
            let reader = async {
                let mut decoder = FrameDecoder::with_limit(CLIENT_MESSAGE_BYTES_MAX);
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    while conn.in_flight.get() >= CONNECTION_REQUESTS_MAX {
                        conn.more_room.wait().await;
                    }
                    match decoder.next_frame() {
                        Ok(Some(f)) if f.kind == FrameKind::ClientRequest => {
                            match decode::<ClientRequest>(&f.payload) {
                                Ok(req) if req.cluster_id != cluster_id => {
                                    conn.in_flight.set(conn.in_flight.get() + 1);
                                    let err = RegionError::ClusterNotMatch {
                                        request_cluster: req.cluster_id,
                                        actual_cluster: cluster_id,
                                    };
                                    q.reply(id, &ClientResponse { id: req.id, result: Err(err) });
                                    continue;
                                }
                                Ok(req) => {
                                    conn.in_flight.set(conn.in_flight.get() + 1);
                                    q.requests.borrow_mut().push((id, req));
                                    w.notify();
                                    continue;
                                }
                                Err(e) => return tracing::warn!("client connection closed: {e}"),
                            }
                        }
                        Ok(Some(f)) => {
                            return tracing::warn!("client connection closed: unexpected {:?} frame", f.kind)
                        }
                        Ok(None) => {}
                        Err(e) => return tracing::warn!("client connection closed: {e}"),
                    }
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => decoder.push(&buf[..n]),
                    }
                }
            };
            let writer = async {
                loop {
                    conn.wake.wait().await;
                    let (out, count) = std::mem::take(&mut *conn.replies.borrow_mut());
                    let timed = futures_lite::future::or(async { write.write_all(&out).await.is_ok() }, async {
                        glommio::timer::sleep(REPLY_WRITE_TIMEOUT).await;
                        false
                    });
                    if !out.is_empty() && !timed.await {
                        return;
                    }
                    // a request counts against the connection until its answer is written:
                    // a client that stops reading stops being read
                    conn.in_flight.set(conn.in_flight.get().saturating_sub(count));
                    conn.more_room.notify();
                }
            };
            futures_lite::future::or(reader, writer).await;
            q.connections.borrow_mut().remove(&id);
        })
        .detach();
    }
}

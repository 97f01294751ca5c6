//! One request on a fresh connection to one shard's client port, and its
//! answer, without routing or retries: for tests and tools that must ask a
//! given store (the process tests ask a restarted store itself). A store
//! never calls itself with it: PD's directives reach its shards in-process
//! (`runtime::control`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use transport::{FrameDecoder, FrameKind};

use crate::client::protocol::{decode, encode_frame, ClientRequest, ClientResponse};

pub fn call_once(addr: SocketAddr, req: &ClientRequest, timeout: Duration) -> std::io::Result<ClientResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut frame = vec![];
    encode_frame(&mut frame, FrameKind::ClientRequest, req);
    stream.write_all(&frame)?;
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match decoder.next_frame() {
            Ok(Some(f)) if f.kind == FrameKind::ClientResponse => {
                let resp: ClientResponse =
                    decode(&f.payload).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                if resp.id == req.id {
                    return Ok(resp);
                }
            }
            Ok(Some(f)) => return Err(std::io::Error::other(format!("unexpected {:?} frame", f.kind))),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the store closed the connection"));
        }
        decoder.push(&buf[..n]);
    }
}

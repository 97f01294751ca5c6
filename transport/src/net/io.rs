//! Frames over a byte stream: a reader that feeds the sans-IO decoder from
//! a socket, and a helper that writes one encoded frame.

use std::io;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{encode_frame, DecodeError, Frame, FrameDecoder, FrameKind};

/// Largest single read; a big frame is read in several.
const READ_BYTES_MAX: usize = 1 << 20;

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading from the socket: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

impl ReadError {
    /// A short stable name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Io(_) => "io_error",
            ReadError::Decode(e) => e.kind(),
            ReadError::TimedOut(_) => "timed_out",
        }
    }
}

/// Reads whole frames from a stream.
pub struct FrameReader<S> {
    stream: S,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<S> {
    pub fn new(stream: S) -> Self {
        FrameReader { stream, decoder: FrameDecoder::new(), buf: vec![] }
    }

    /// A reader whose frames may not exceed `limit` bytes until `set_limit`.
    pub fn with_limit(stream: S, limit: usize) -> Self {
        FrameReader { stream, decoder: FrameDecoder::with_limit(limit), buf: vec![] }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.decoder.set_limit(limit);
    }

    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The next frame; `Ok(None)` when the peer closed between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let want = self.decoder.want().min(READ_BYTES_MAX);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let n = self.stream.read(&mut self.buf[..want]).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    /// The next frame within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Frame>, ReadError> {
        let timed_out = async {
            glommio::timer::sleep(limit).await;
            Err(ReadError::TimedOut(limit))
        };
        futures_lite::future::or(self.next(), timed_out).await
    }

    /// Encodes and writes one frame.
    pub async fn write_frame(&mut self, kind: FrameKind, parts: &[&[u8]]) -> io::Result<()> {
        let mut out = vec![];
        encode_frame(&mut out, kind, parts);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }
}

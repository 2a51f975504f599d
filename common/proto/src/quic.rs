//! Frames and blobs on QUIC streams (async twins of [`crate::frame`] and
//! [`crate::blob`], same bytes on the wire).

use crate::blob::{Assembly, BlobRef, CHUNK};
use crate::error::ProtoError;
use crate::frame::{header, parse_header, FrameKind, HEADER_LEN};
use bytes::BufMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn io(e: std::io::Error) -> ProtoError {
    ProtoError::Io(e.to_string())
}

/// Socket buffer asked for on every endpoint's UDP socket (the kernel caps
/// it at `net.core.rmem_max` / `wmem_max`): the default 208 KiB overflows
/// during bulk transfers on fast paths, and each dropped datagram costs a
/// loss-recovery round.
const SOCKET_BUFFER: usize = 4 << 20;

/// What a connection's datagrams cross, which decides their size.
///
/// quinn hands the kernel up to ten datagrams per segmentation-offload
/// (GSO) send and a send must fit one 64 KiB UDP buffer, so with offload
/// a datagram stays at most 6000 bytes (larger ones make whole batches
/// fail and discovery fall back to 1200 bytes). On loopback the path
/// carries 64 KiB datagrams: one large datagram per send, without
/// offload, is about twice as fast as batches of 6000-byte ones there
/// (0.5 vs 1.1 GB/s per connection on two cores, docs/PERFORMANCE.md).
/// Path-MTU discovery still only goes as far as the path carries: an
/// ordinary 1500-byte network stays at 1452 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Every peer is on this machine (127.0.0.0/8, ::1).
    Loopback,
    /// Anything else.
    Network,
}

impl Link {
    /// The link of an endpoint listening on `listen`: one bound to a
    /// loopback address only ever talks to this machine.
    pub fn of_listen(listen: SocketAddr) -> Link {
        if listen.ip().is_loopback() {
            Link::Loopback
        } else {
            Link::Network
        }
    }

    /// The link to peers at `hosts` (`host:port`, names unresolved):
    /// loopback only when every one is a loopback address or `localhost`
    /// (and there is at least one).
    pub fn to_hosts(hosts: &[String]) -> Link {
        let local = |h: &String| match h.parse::<SocketAddr>() {
            Ok(a) => a.ip().is_loopback(),
            Err(_) => h.rsplit_once(':').is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        };
        if !hosts.is_empty() && hosts.iter().all(local) {
            Link::Loopback
        } else {
            Link::Network
        }
    }

    /// The ceiling of path-MTU discovery for what this side sends.
    pub fn max_udp_payload(self) -> u16 {
        match self {
            Link::Loopback => 40_000,
            Link::Network => 6000,
        }
    }

    /// Whether quinn batches datagrams into one segmentation-offload send.
    pub fn segmentation_offload(self) -> bool {
        self == Link::Network
    }
}

/// A QUIC endpoint bound to `listen` (accepting connections with `server`
/// if given), with the socket buffers above. It accepts datagrams as large
/// as a loopback peer sends, whatever its own link: what each side sends
/// is decided by its transport settings ([`Link`]), and receiving large
/// datagrams costs nothing. Must be called inside a tokio runtime.
pub fn endpoint(listen: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, ProtoError> {
    let bind = |e: std::io::Error| ProtoError::Io(format!("binding UDP {listen}: {e}"));
    let socket = std::net::UdpSocket::bind(listen).map_err(bind)?;
    let tune = socket2::SockRef::from(&socket);
    // Best effort: a smaller buffer only costs throughput.
    let _ = tune.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = tune.set_send_buffer_size(SOCKET_BUFFER);
    let mut config = quinn::EndpointConfig::default();
    let payload = Link::Loopback.max_udp_payload();
    config.max_udp_payload_size(payload).map_err(|e| ProtoError::Io(format!("UDP payload limit {payload}: {e}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| ProtoError::Io("no async runtime for QUIC".into()))?;
    quinn::Endpoint::new(config, server, socket, runtime).map_err(bind)
}

/// Writes one message frame.
pub async fn send_message<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    what: &'static str,
    msg: &T,
    max: u32,
) -> Result<(), ProtoError> {
    let bytes = crate::frame::encode_message(what, msg, max)?;
    w.write_all(&bytes).await.map_err(io)
}

/// Reads one message frame (length checked before allocation).
pub async fn recv_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    what: &'static str,
    max: u32,
) -> Result<T, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await.map_err(|_| ProtoError::Truncated { needed: HEADER_LEN as u64, got: 0 })?;
    let (kind, len) = parse_header(&h, max)?;
    if kind != FrameKind::Message {
        return Err(ProtoError::UnexpectedKind { expected: "message", got: kind as u8 });
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.map_err(|_| ProtoError::Truncated { needed: len as u64, got: 0 })?;
    rmp_serde::from_slice(&payload).map_err(|e| ProtoError::Decode { what, msg: e.to_string() })
}

/// Writes a blob as chunk frames, straight from the caller's buffer.
pub async fn send_blob<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), ProtoError> {
    for chunk in bytes.chunks(CHUNK) {
        w.write_all(&header(FrameKind::BlobChunk, chunk.len() as u32)).await.map_err(io)?;
        w.write_all(chunk).await.map_err(io)?;
    }
    Ok(())
}

/// [`send_blob`] for a blob the caller gives up: its bytes are handed to
/// quinn as they are (chunk headers in between) instead of copied into the
/// stream's buffer. Same bytes on the wire.
pub async fn send_blob_owned(w: &mut quinn::SendStream, bytes: bytes::Bytes) -> Result<(), ProtoError> {
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + CHUNK).min(bytes.len());
        let head = bytes::Bytes::copy_from_slice(&header(FrameKind::BlobChunk, (end - at) as u32));
        w.write_all_chunks(&mut [head, bytes.slice(at..end)]).await.map_err(|e| ProtoError::Io(e.to_string()))?;
        at = end;
    }
    Ok(())
}

/// A stored blob as [`bytes::Bytes`] for [`send_blob_owned`], sharing
/// the allocation instead of copying it.
pub fn shared_bytes(blob: Arc<Vec<u8>>) -> bytes::Bytes {
    struct Shared(Arc<Vec<u8>>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    bytes::Bytes::from_owner(Shared(blob))
}

/// Reads the blob `blob` announced, with the same checks as
/// [`crate::blob::read_blob`].
pub async fn recv_blob<R: AsyncRead + Unpin>(r: &mut R, blob: &BlobRef, max_len: u64) -> Result<Vec<u8>, ProtoError> {
    let mut a = Assembly::new(blob, max_len)?;
    // A buffer handed back after an earlier blob, where one fits.
    let mut out = crate::recycle::take(a.total());
    while !a.done() {
        let range = next_chunk(r, &mut a).await?;
        // Straight into the reserved capacity: no zeroing first.
        read_chunk(r, &a, &mut out, range.clone()).await?;
        a.absorb(&out[range]);
    }
    a.finish()?;
    Ok(out)
}

/// [`recv_blob`] into `sink`, one chunk in memory at a time (a key set of
/// gigabytes goes to a file without being held whole). The digest is
/// checked after the last chunk: until this returns `Ok`, what `sink`
/// received is unverified and the caller must not use it.
pub async fn recv_blob_into<R, W>(r: &mut R, blob: &BlobRef, max_len: u64, sink: &mut W) -> Result<(), ProtoError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut a = Assembly::new(blob, max_len)?;
    let mut chunk = Vec::with_capacity(CHUNK.min(a.total()));
    while !a.done() {
        let range = next_chunk(r, &mut a).await?;
        let start = range.start;
        chunk.clear();
        read_chunk(r, &a, &mut chunk, 0..range.len()).await?;
        a.absorb(&chunk);
        sink.write_all(&chunk).await.map_err(|e| a.err(format!("storing the chunk at {start}: {e}")))?;
    }
    sink.flush().await.map_err(|e| a.err(format!("storing the last chunk: {e}")))?;
    a.finish()
}

/// Reads and checks the next chunk header: the range of the blob it fills.
async fn next_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    a: &mut Assembly<'_>,
) -> Result<std::ops::Range<usize>, ProtoError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).await.map_err(|_| a.ended())?;
    a.accept(&h)
}

/// Appends the chunk's bytes to `out` until it is `range.end` long.
async fn read_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    a: &Assembly<'_>,
    out: &mut Vec<u8>,
    range: std::ops::Range<usize>,
) -> Result<(), ProtoError> {
    while out.len() < range.end {
        let room = range.end - out.len();
        let read = r.read_buf(&mut out.limit(room)).await;
        let n = read.map_err(|e| a.err(format!("reading the chunk at {}: {e}", range.start)))?;
        if n == 0 {
            return Err(a.err(format!("stream ended inside a chunk at {}", range.start)));
        }
    }
    Ok(())
}

/// Sends `len` bytes read from `source` as chunk frames (the same bytes on
/// the wire as [`send_blob`]), one chunk in memory at a time, and returns
/// the BLAKE3 digest of what was sent: a caller streaming stored bytes
/// compares it with the digest it announced to learn that its copy is
/// damaged (the receiver refuses such a blob by its digest anyway).
pub async fn send_blob_from<W, R>(w: &mut W, source: &mut R, len: u64) -> Result<[u8; 32], ProtoError>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut hasher = blake3::Hasher::new();
    let mut chunk = Vec::with_capacity(CHUNK.min(usize::try_from(len).unwrap_or(CHUNK)));
    let mut sent = 0u64;
    while sent < len {
        let size = (CHUNK as u64).min(len - sent) as usize;
        chunk.clear();
        while chunk.len() < size {
            let room = size - chunk.len();
            if source.read_buf(&mut (&mut chunk).limit(room)).await.map_err(io)? == 0 {
                let got = sent + chunk.len() as u64;
                return Err(ProtoError::Io(format!("the source ended after {got} of {len} bytes")));
            }
        }
        hasher.update(&chunk);
        w.write_all(&header(FrameKind::BlobChunk, size as u32)).await.map_err(io)?;
        w.write_all(&chunk).await.map_err(io)?;
        sent += size as u64;
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::Link;

    #[test]
    fn only_all_loopback_peers_make_a_loopback_link() {
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(Link::to_hosts(&hosts(&["127.0.0.1:7000", "localhost:7001", "[::1]:7002"])), Link::Loopback);
        assert_eq!(Link::to_hosts(&hosts(&["127.0.0.1:7000", "10.0.0.7:7000"])), Link::Network);
        assert_eq!(Link::to_hosts(&hosts(&["coordinator-0.nexus:7000"])), Link::Network);
        assert_eq!(Link::to_hosts(&hosts(&["localhost"])), Link::Network, "no port: not an address");
        assert_eq!(Link::to_hosts(&[]), Link::Network);
        assert_eq!(Link::of_listen("127.0.0.1:0".parse().unwrap()), Link::Loopback);
        assert_eq!(Link::of_listen("0.0.0.0:7000".parse().unwrap()), Link::Network);
        assert!(Link::Network.segmentation_offload() && !Link::Loopback.segmentation_offload());
        // With offload, ten datagrams must fit one 64 KiB send.
        assert!(10 * Link::Network.max_udp_payload() as usize <= 65_535);
    }
}

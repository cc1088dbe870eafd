//! Response frames as a list of chunks, so that record sets reach the
//! socket without being copied into the response.
//!
//! kafka-protocol's encoders write into any [`ByteBufMut`]. [`FrameBuf`] is
//! one that knows the record sets the response carries:
//! - a consumer's record sets stay in their segment files: the response
//!   holds a [`placeholder`] of the right length in their place, and the
//!   encoder's write of it becomes a file chunk, sent with `sendfile(2)`
//!   from the page cache (one copy, in the kernel);
//! - record sets already in memory (`Bytes`) become chunks of their own,
//!   referenced rather than copied;
//! - the small fields around them go into ordinary buffers.
//!
//! The connection writes byte chunks with vectored writes (`writev`). For a
//! consumer fetching megabytes this removes two of the three copies of
//! every byte served that profiles showed (the encoder's memmove and the
//! read into a buffer).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::storage::FileRegion;

/// The largest record set sent from its file; larger ones (a batch above
/// 64 MiB, only with a raised `max.message.bytes`) are read into memory.
const PLACEHOLDER_BYTES: usize = 64 << 20;

/// `len` bytes standing in for a record set sent from its file. All of
/// them are slices of one zeroed allocation that nothing ever writes or
/// reads (the encoder only passes its address on to [`FrameBuf`]), so the
/// kernel never backs it with memory. `None` when `len` is too large.
pub fn placeholder(len: usize) -> Option<Bytes> {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    if len > PLACEHOLDER_BYTES {
        return None;
    }
    let zeros = ZEROS.get_or_init(|| Bytes::from(vec![0u8; PLACEHOLDER_BYTES]));
    Some(zeros.slice(..len))
}

fn is_placeholder(src: &[u8]) -> bool {
    let Some(zeros) = placeholder(0) else {
        return false;
    };
    let start = zeros.as_ptr() as usize;
    let at = src.as_ptr() as usize;
    start <= at && at + src.len() <= start + PLACEHOLDER_BYTES
}

/// Below this a slice is copied anyway: a chunk costs an `iovec` and a
/// reference count, which only pays for itself on record sets.
const ZERO_COPY_MIN_BYTES: usize = 4096;

/// Bytes of the small fields between two record sets; most responses fit
/// in the first one.
const FIELDS_CHUNK_BYTES: usize = 1024;

/// Collects an encoded frame; see the module docs.
pub struct FrameBuf<'a> {
    /// Slices of these are referenced, not copied.
    shared: &'a [Bytes],
    /// What the placeholders stand for, in the order the encoder meets them.
    regions: VecDeque<FileRegion>,
    /// Why the frame cannot be sent: a placeholder with no region of its
    /// length left for it, or a region that could not be read.
    error: Option<String>,
    done: Vec<Chunk>,
    done_len: usize,
    tail: BytesMut,
}

impl<'a> FrameBuf<'a> {
    pub fn new(shared: &'a [Bytes], regions: Vec<FileRegion>, capacity: usize) -> Self {
        FrameBuf {
            shared,
            regions: regions.into(),
            error: None,
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity.min(FIELDS_CHUNK_BYTES * 64)),
        }
    }

    /// The frame, in order; an error if the placeholders and the regions
    /// did not pair up one to one.
    pub fn finish(mut self) -> Result<Frame, String> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if !self.regions.is_empty() {
            return Err(format!(
                "{} file regions were not encoded",
                self.regions.len()
            ));
        }
        self.flush_tail();
        Ok(Frame::from_chunks(self.done))
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.done_len += chunk.len();
            self.done.push(Chunk::Bytes(chunk));
        }
    }

    fn push(&mut self, chunk: Chunk) {
        self.flush_tail();
        self.done_len += chunk.len();
        self.done.push(chunk);
    }

    fn shared_owner(&self, src: &[u8]) -> Option<&Bytes> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        self.shared.iter().find(|b| {
            let b_start = b.as_ptr() as usize;
            b_start <= start && end <= b_start + b.len()
        })
    }

    /// Folds every chunk back into `tail`, for the rare backwards seek the
    /// encoders of record batches use (message encoders never do).
    fn flatten(&mut self) {
        if self.done.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.done_len + self.tail.len());
        for chunk in self.done.drain(..) {
            match chunk {
                Chunk::Bytes(b) => all.extend_from_slice(&b),
                // Only record-batch encoders seek backwards, and they write
                // no placeholders; should one, the region is read.
                Chunk::File(region) => match region.read() {
                    Ok(bytes) => all.extend_from_slice(&bytes),
                    Err(e) => {
                        all.put_bytes(0, region.len);
                        self.error.get_or_insert(format!(
                            "segment {} could not be read: {e}",
                            region.segment
                        ));
                    }
                },
            }
        }
        all.extend_from_slice(&self.tail);
        self.tail = all;
        self.done_len = 0;
    }
}

// SAFETY: every method delegates to `tail`, a `BytesMut`, whose own
// `BufMut` implementation upholds the contract.
unsafe impl BufMut for FrameBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which
        // is `tail`'s.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.tail.capacity() == self.tail.len() {
            self.tail.reserve(FIELDS_CHUNK_BYTES);
        }
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !src.is_empty() && is_placeholder(src) {
            match self.regions.pop_front() {
                Some(region) if region.len == src.len() => self.push(Chunk::File(region)),
                _ => {
                    let len = src.len();
                    self.error
                        .get_or_insert(format!("a {len}-byte record set has no file region"));
                    self.tail.extend_from_slice(src);
                }
            }
            return;
        }
        if src.len() >= ZERO_COPY_MIN_BYTES {
            if let Some(owner) = self.shared_owner(src) {
                let chunk = owner.slice_ref(src);
                self.push(Chunk::Bytes(chunk));
                return;
            }
        }
        self.tail.extend_from_slice(src);
    }
}

impl ByteBufMut for FrameBuf<'_> {
    fn offset(&self) -> usize {
        self.done_len + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.done_len {
            self.flatten();
        }
        self.tail.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.done_len {
            self.flatten();
        }
        let base = self.done_len;
        &mut self.tail[r.start - base..r.end - base]
    }
}

/// One piece of a frame: bytes in memory, or batches in a segment file.
#[derive(Debug)]
enum Chunk {
    Bytes(Bytes),
    File(FileRegion),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(region) => region.len,
        }
    }
}

/// An encoded frame: chunks written in order, bytes with vectored writes
/// and file regions with `sendfile`.
#[derive(Debug, Default)]
pub struct Frame {
    chunks: VecDeque<Chunk>,
    remaining: usize,
}

/// Bytes chunks gathered into one `writev`.
const MAX_IOVECS: usize = 64;

impl Frame {
    fn from_chunks(chunks: Vec<Chunk>) -> Self {
        let remaining = chunks.iter().map(Chunk::len).sum();
        Frame {
            chunks: chunks.into_iter().filter(|c| c.len() > 0).collect(),
            remaining,
        }
    }

    /// No response at all (Produce with `acks=0`).
    pub fn empty() -> Self {
        Frame::default()
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The frame in one buffer, file regions read (tests and the client,
    /// which want `Bytes`).
    pub fn into_bytes(self) -> io::Result<Bytes> {
        let mut chunks = self.chunks;
        if chunks.len() == 1 {
            if let Some(Chunk::Bytes(b)) = chunks.front() {
                return Ok(b.clone());
            }
        }
        let mut all = BytesMut::with_capacity(self.remaining);
        for chunk in chunks.drain(..) {
            match chunk {
                Chunk::Bytes(b) => all.extend_from_slice(&b),
                Chunk::File(region) => all.extend_from_slice(&region.read()?),
            }
        }
        Ok(all.freeze())
    }

    /// Writes the whole frame to `stream`.
    pub async fn write_to(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while let Some(front) = self.chunks.front() {
            let written = match front {
                Chunk::Bytes(_) => {
                    let slices: Vec<IoSlice<'_>> = self
                        .chunks
                        .iter()
                        .map_while(|c| match c {
                            Chunk::Bytes(b) => Some(IoSlice::new(b)),
                            Chunk::File(_) => None,
                        })
                        .take(MAX_IOVECS)
                        .collect();
                    stream.write_vectored(&slices).await?
                }
                Chunk::File(region) => match send_file(stream, region).await {
                    Ok(n) => n,
                    // A file system without sendfile for this file: read it.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                        let bytes = region.read()?;
                        self.chunks[0] = Chunk::Bytes(bytes);
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        Ok(())
    }

    fn advance(&mut self, mut n: usize) {
        self.remaining = self.remaining.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let len = front.len();
            if n >= len {
                n -= len;
                self.chunks.pop_front();
                continue;
            }
            match front {
                Chunk::Bytes(b) => b.advance(n),
                Chunk::File(region) => {
                    region.position += n as u64;
                    region.len -= n;
                }
            }
            n = 0;
        }
    }
}

/// One `sendfile(2)` of `region` to the socket, once it is writable.
async fn send_file(stream: &TcpStream, region: &FileRegion) -> io::Result<usize> {
    let socket = stream.as_raw_fd();
    let file = region.file.as_raw_fd();
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut offset = region.position as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the
            // call (the stream and the region's `Arc<File>` are borrowed),
            // and `offset` is a valid pointer to a local.
            let n = unsafe { libc::sendfile(socket, file, &mut offset, region.len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            // The file is shorter than the index says (truncated after the
            // read was planned): close the connection rather than send a
            // frame shorter than its size prefix.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "segment {} ends before position {}",
                        region.segment, region.position
                    ),
                ))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use tokio::io::AsyncReadExt;

    fn fetch_response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions)])
    }

    fn plain(response: &FetchResponse, version: i16) -> Bytes {
        let mut plain = BytesMut::new();
        response.encode(&mut plain, version).unwrap();
        plain.freeze()
    }

    /// A file holding `contents`, and regions of it.
    fn file_with(contents: &[u8]) -> (tempfile::NamedTempFile, Arc<std::fs::File>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents).unwrap();
        f.flush().unwrap();
        let file = Arc::new(f.reopen().unwrap());
        (f, file)
    }

    fn region(file: &Arc<std::fs::File>, position: u64, len: usize) -> FileRegion {
        FileRegion {
            file: file.clone(),
            segment: 0,
            position,
            len,
            offset_count: 1,
        }
    }

    #[test]
    fn record_sets_are_referenced_and_the_bytes_match_a_plain_encoding() {
        let records: Vec<Bytes> = [10_000usize, 100, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect();
        let response = fetch_response(&records);
        for version in [4, 11, 12, 16] {
            let mut buf = FrameBuf::new(&records, Vec::new(), 0);
            response.encode(&mut buf, version).unwrap();
            let frame = buf.finish().unwrap();
            // The two large record sets are chunks of their own, pointing at
            // the same memory.
            let referenced = frame
                .chunks
                .iter()
                .filter(|c| match c {
                    Chunk::Bytes(b) => records.iter().any(|r| r.as_ptr() == b.as_ptr()),
                    Chunk::File(_) => false,
                })
                .count();
            assert_eq!(referenced, 2, "v{version}");
            assert_eq!(
                frame.into_bytes().unwrap(),
                plain(&response, version),
                "v{version}"
            );
        }
    }

    #[test]
    fn placeholders_become_the_file_regions_in_order() {
        let contents: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (_keep, file) = file_with(&contents);
        let regions = vec![region(&file, 10, 5_000), region(&file, 60_000, 30_000)];
        let in_memory = Bytes::from(vec![9u8; 8_000]);
        let real: Vec<Bytes> = vec![
            Bytes::copy_from_slice(&contents[10..5_010]),
            in_memory.clone(),
            Bytes::copy_from_slice(&contents[60_000..90_000]),
        ];
        let standing_in = vec![
            placeholder(5_000).unwrap(),
            in_memory.clone(),
            placeholder(30_000).unwrap(),
        ];
        for version in [4, 12, 16] {
            let response = fetch_response(&standing_in);
            let mut buf = FrameBuf::new(std::slice::from_ref(&in_memory), regions.clone(), 0);
            response.encode(&mut buf, version).unwrap();
            let frame = buf.finish().unwrap();
            let files = frame
                .chunks
                .iter()
                .filter(|c| matches!(c, Chunk::File(_)))
                .count();
            assert_eq!(files, 2, "v{version}");
            assert_eq!(
                frame.into_bytes().unwrap(),
                plain(&fetch_response(&real), version),
                "v{version}"
            );
        }
        // Regions that do not pair up with the placeholders are refused.
        let response = fetch_response(&[placeholder(5_000).unwrap()]);
        let mut buf = FrameBuf::new(&[], vec![region(&file, 0, 4_999)], 0);
        response.encode(&mut buf, 12).unwrap();
        assert!(buf.finish().is_err());
        let mut buf = FrameBuf::new(&[], regions, 0);
        response.encode(&mut buf, 12).unwrap();
        assert!(buf.finish().is_err());
        assert!(placeholder(PLACEHOLDER_BYTES + 1).is_none());
    }

    #[tokio::test]
    async fn a_frame_with_file_regions_goes_through_a_socket_whole() {
        let contents: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let (_keep, file) = file_with(&contents);
        let chunks = vec![
            Chunk::Bytes(Bytes::from_static(b"head")),
            Chunk::File(region(&file, 7, 2_500_000)),
            Chunk::Bytes(Bytes::from_static(b"mid")),
            Chunk::File(region(&file, 0, 3)),
            Chunk::Bytes(Bytes::from_static(b"tail")),
        ];
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&contents[7..2_500_007]);
        expected.extend_from_slice(b"mid");
        expected.extend_from_slice(&contents[..3]);
        expected.extend_from_slice(b"tail");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut frame = Frame::from_chunks(chunks);
        assert_eq!(frame.remaining, expected.len());
        frame.write_to(&mut stream).await.unwrap();
        assert!(frame.is_empty());
        drop(stream);
        assert!(reader.await.unwrap() == expected);

        // A region past the end of its file closes rather than sends short.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accepting = tokio::spawn(async move { listener.accept().await });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut short = Frame::from_chunks(vec![Chunk::File(region(&file, 2_999_990, 20))]);
        let e = short.write_to(&mut stream).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_backwards_seek_flattens_and_patches() {
        let shared = [Bytes::from(vec![7u8; 5000])];
        let mut buf = FrameBuf::new(&shared, Vec::new(), 0);
        buf.put_i32(0);
        buf.put_slice(&shared[0]);
        buf.put_u8(1);
        let at = 0..4;
        buf.range(at).copy_from_slice(&5001i32.to_be_bytes());
        let bytes = buf.finish().unwrap().into_bytes().unwrap();
        assert_eq!(&bytes[..4], &5001i32.to_be_bytes());
        assert_eq!(bytes.len(), 5005);
        assert_eq!(bytes[5004], 1);
    }
}

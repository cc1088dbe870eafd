//! Response frames as a list of byte chunks, so that record sets read from
//! segment files reach the socket without being copied into the response.
//!
//! kafka-protocol's encoders write into any [`ByteBufMut`]. [`FrameBuf`] is
//! one that knows the record sets (`Bytes`) the response carries: when the
//! encoder hands it a slice that lies inside one of them, it keeps a
//! reference-counted slice of that `Bytes` instead of copying it, and the
//! small fields around it go into ordinary buffers. The connection then
//! writes every chunk with one vectored write (`writev`). For a fetch of
//! several MiB this removes a memcpy of every byte served, which profiles
//! showed to be a fifth of the broker's time on consume.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

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
    done: Vec<Bytes>,
    done_len: usize,
    tail: BytesMut,
}

impl<'a> FrameBuf<'a> {
    pub fn new(shared: &'a [Bytes], capacity: usize) -> Self {
        FrameBuf {
            shared,
            done: Vec::new(),
            done_len: 0,
            tail: BytesMut::with_capacity(capacity.min(FIELDS_CHUNK_BYTES * 64)),
        }
    }

    /// The frame, in order.
    pub fn finish(mut self) -> Frame {
        self.flush_tail();
        Frame::from_chunks(self.done)
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.done_len += chunk.len();
            self.done.push(chunk);
        }
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
            all.extend_from_slice(&chunk);
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
        if src.len() >= ZERO_COPY_MIN_BYTES {
            if let Some(owner) = self.shared_owner(src) {
                let chunk = owner.slice_ref(src);
                self.flush_tail();
                self.done_len += chunk.len();
                self.done.push(chunk);
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

/// An encoded frame: chunks written in order with vectored writes. Also a
/// [`Buf`], so `AsyncWriteExt::write_all_buf` sends it.
#[derive(Debug, Default)]
pub struct Frame {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Frame {
    fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let remaining = chunks.iter().map(Bytes::len).sum();
        Frame {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
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

    /// The frame in one buffer (tests and the client, which want `Bytes`).
    pub fn into_bytes(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop_front().unwrap_or_default(),
            _ => self.copy_to_bytes(self.remaining),
        }
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        Frame::from_chunks(vec![bytes])
    }
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of a frame");
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if cnt < front.len() {
                front.advance(cnt);
                break;
            }
            cnt -= front.len();
            self.chunks.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

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

    #[test]
    fn record_sets_are_referenced_and_the_bytes_match_a_plain_encoding() {
        let records: Vec<Bytes> = [10_000usize, 100, 70_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect();
        let response = fetch_response(&records);
        for version in [4, 11, 12, 16] {
            let mut plain = BytesMut::new();
            response.encode(&mut plain, version).unwrap();

            let mut buf = FrameBuf::new(&records, 0);
            response.encode(&mut buf, version).unwrap();
            let frame = buf.finish();
            // The two large record sets are chunks of their own, pointing at
            // the same memory.
            let referenced = frame
                .chunks
                .iter()
                .filter(|c| records.iter().any(|r| r.as_ptr() == c.as_ptr()))
                .count();
            assert_eq!(referenced, 2, "v{version}");
            assert_eq!(frame.into_bytes(), plain.freeze(), "v{version}");
        }
    }

    #[test]
    fn partial_advances_walk_the_chunks() {
        let mut frame = Frame::from_chunks(vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defgh"),
        ]);
        assert_eq!(frame.remaining(), 8);
        frame.advance(2);
        assert_eq!(frame.chunk(), b"c");
        frame.advance(2);
        assert_eq!(frame.chunk(), b"efgh");
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(frame.chunks_vectored(&mut slices), 1);
        assert_eq!(frame.copy_to_bytes(4), Bytes::from_static(b"efgh"));
        assert!(frame.is_empty());
    }

    #[test]
    fn a_backwards_seek_flattens_and_patches() {
        let shared = [Bytes::from(vec![7u8; 5000])];
        let mut buf = FrameBuf::new(&shared, 0);
        buf.put_i32(0);
        buf.put_slice(&shared[0]);
        buf.put_u8(1);
        let at = 0..4;
        buf.range(at).copy_from_slice(&5001i32.to_be_bytes());
        let bytes = buf.finish().into_bytes();
        assert_eq!(&bytes[..4], &5001i32.to_be_bytes());
        assert_eq!(bytes.len(), 5005);
        assert_eq!(bytes[5004], 1);
    }
}

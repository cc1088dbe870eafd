//! Kafka RecordBatch v2 headers: parsing, validation and the few fields a
//! leader rewrites.
//!
//! fjord stores batches exactly as produced. The leader only writes the base
//! offset and the partition leader epoch, both outside the CRC, and for
//! LogAppendTime topics the timestamp type and max timestamp, after which it
//! recomputes the CRC (as Kafka's `LogValidator` does). Records inside a
//! batch are never decoded on the produce or fetch path.
//!
//! Layout (all big-endian):
//! ```text
//!  0 baseOffset i64        8 batchLength i32     12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (crc32c of bytes 21..)
//! 21 attributes i16       23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32     57 recordCount i32     61 records...
//! ```

/// Bytes before `batchLength`'s count starts: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The fixed header of a v2 batch.
pub const HEADER_BYTES: usize = 61;

const CRC_START: usize = 21;
const ATTRIBUTES: usize = 21;
const MAX_TIMESTAMP: usize = 35;
/// Attribute bit 3: the batch's timestamps are the broker's append time.
const LOG_APPEND_TIME_FLAG: i16 = 1 << 3;
const TRANSACTIONAL_FLAG: i16 = 1 << 4;
const CONTROL_FLAG: i16 = 1 << 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a header or than the declared length: Kafka's
    /// CorruptRecordException (CORRUPT_MESSAGE).
    #[error("truncated record batch: {0}")]
    Truncated(String),
    #[error("record batch length {0} is impossible")]
    BadLength(i32),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    /// Old message formats (magic 0/1) are not accepted on Produce v3+ (INVALID_RECORD).
    #[error("record batch magic {0} is not supported (only magic 2)")]
    BadMagic(i8),
    /// The header contradicts itself (INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// Larger than `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

/// The header fields fjord acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; the batch is `LOG_OVERHEAD + batch_length` long.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated(format!(
                "{} bytes, a batch needs at least {HEADER_BYTES}",
                buf.len()
            )));
        }
        let batch_length = i32_at(buf, 8);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        if buf.len() < 17 {
            return Err(BatchError::Truncated(format!(
                "{} bytes of header",
                buf.len()
            )));
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated(format!(
                "{} bytes of a {HEADER_BYTES}-byte header",
                buf.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length,
            partition_leader_epoch: i32_at(buf, 12),
            magic,
            crc: u32::from_be_bytes([buf[17], buf[18], buf[19], buf[20]]),
            attributes: i16::from_be_bytes([buf[21], buf[22]]),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16::from_be_bytes([buf[51], buf[52]]),
            base_sequence: i32_at(buf, 53),
            record_count: i32_at(buf, 57),
        })
    }

    /// The whole batch's size in bytes.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offsets the batch takes.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME_FLAG != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

/// The CRC Kafka computes over a batch: crc32c of everything from the attributes on.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_START..).unwrap_or(&[]))
}

/// Parses and checks one whole batch at the start of `buf`: header, length,
/// and CRC. Returns the header; the batch is `buf[..header.size()]`.
pub fn check_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let size = header.size();
    let Some(batch) = buf.get(..size) else {
        return Err(BatchError::Truncated(format!(
            "batch declares {size} bytes, {} present",
            buf.len()
        )));
    };
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Validates a produced `records` field: one or more whole v2 batches, each
/// within `max_batch_bytes`, with a record count that matches its offsets.
pub fn validate_produced(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Invalid("no record batch".into()));
    }
    let mut headers = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = check_batch(&records[pos..])?;
        if header.size() > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: header.size(),
                max: max_batch_bytes,
            });
        }
        if header.last_offset_delta < 0 || header.record_count != header.last_offset_delta + 1 {
            return Err(BatchError::Invalid(format!(
                "{} records but last offset delta {}",
                header.record_count, header.last_offset_delta
            )));
        }
        if header.is_control() {
            return Err(BatchError::Invalid(
                "clients may not produce control batches".into(),
            ));
        }
        super::records::validate_records(&records[pos..pos + header.size()], &header)?;
        pos += header.size();
        headers.push(header);
    }
    Ok(headers)
}

/// Writes the fields outside the CRC that the leader assigns.
pub fn assign_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as LogAppendTime with `now_ms` as its max timestamp and
/// recomputes the CRC; consumers then read every record's timestamp as `now_ms`.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let (header, records) = batch.split_at_mut(HEADER_BYTES);
    stamp_log_append_time_in_header(header, records, now_ms);
}

/// [`stamp_log_append_time`] for a batch whose `header` (its first
/// [`HEADER_BYTES`]) is held apart from the `records` after it.
pub fn stamp_log_append_time_in_header(header: &mut [u8], records: &[u8], now_ms: i64) {
    let attributes = i16::from_be_bytes([header[ATTRIBUTES], header[ATTRIBUTES + 1]]);
    header[ATTRIBUTES..ATTRIBUTES + 2]
        .copy_from_slice(&(attributes | LOG_APPEND_TIME_FLAG).to_be_bytes());
    header[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(compute_crc(header), records);
    header[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    /// A real batch as a Kafka client would produce it.
    pub fn batch(records: usize, timestamp: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder puts records in one batch only while offset
                // minus sequence stays constant.
                sequence: i as i32,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"1")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    #[test]
    fn a_client_batch_validates_and_its_header_reads_back() {
        let b = batch(5, 1_000, Compression::None);
        let headers = validate_produced(&b, 1 << 20).unwrap();
        assert_eq!(headers.len(), 1);
        let h = headers[0];
        assert_eq!(h.size(), b.len());
        assert_eq!((h.record_count, h.last_offset_delta), (5, 4));
        assert_eq!((h.base_timestamp, h.max_timestamp), (1_000, 1_004));
        // Two batches back to back are two headers.
        let mut two = b.clone();
        two.extend_from_slice(&batch(2, 5, Compression::Lz4));
        assert_eq!(validate_produced(&two, 1 << 20).unwrap().len(), 2);
    }

    #[test]
    fn corruption_is_reported_by_kind() {
        let b = batch(3, 0, Compression::Gzip);
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            validate_produced(&flipped, 1 << 20),
            Err(BatchError::BadCrc { .. })
        ));
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(
            validate_produced(&magic, 1 << 20),
            Err(BatchError::BadMagic(1))
        );
        for len in [0, 5, 20, 60, b.len() - 1] {
            assert!(
                validate_produced(&b[..len], 1 << 20).is_err(),
                "{len} bytes"
            );
        }
        let mut negative = b.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(
            validate_produced(&negative, 1 << 20),
            Err(BatchError::BadLength(-5))
        );
        assert!(matches!(
            validate_produced(&b, 10),
            Err(BatchError::TooLarge { .. })
        ));
    }

    #[test]
    fn assigned_fields_stay_outside_the_crc_and_log_append_time_recomputes_it() {
        let mut b = batch(4, 77, Compression::Snappy);
        assign_offset_and_epoch(&mut b, 1234, 9);
        let h = check_batch(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.last_offset()),
            (1234, 9, 1237)
        );

        stamp_log_append_time(&mut b, 5_000);
        let h = check_batch(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5_000);
        // A client decoding it reads every record as stamped by the broker
        // (and takes the batch's max timestamp as their time).
        let mut bytes = Bytes::from(b);
        let decoded = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert!(decoded
            .records
            .iter()
            .all(|r| r.timestamp_type == TimestampType::LogAppend));
        assert_eq!(decoded.records[3].offset, 1237);
    }
}

//! Record-level validation of a produced batch, as Kafka's `LogValidator`
//! does: a batch whose CRC is right can still hold records whose lengths
//! lie, and once stored every consumer would stop at it. Each record's
//! framing is walked (decompressing with the batch's codec, streaming and
//! capped so a small batch cannot expand without bound), its offset delta
//! must be its position, and the records must fill the batch exactly.
//!
//! Nothing is allocated per record: keys, values and headers are skipped.

use std::io::{self, BufRead, BufReader, Read};

use super::batch::{BatchError, BatchHeader, HEADER_BYTES};

/// Largest decompressed size of one batch's records. Kafka does not cap
/// it; fjord refuses a batch that expands past this (a "zip bomb").
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 << 20;

/// Kafka's compression codec ids (attributes bits 0-2).
const NONE: i16 = 0;
const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
const ZSTD: i16 = 4;

/// Checks every record of `batch` (a whole batch whose header is `header`).
pub fn validate_records(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    let body = batch.get(HEADER_BYTES..).unwrap_or(&[]);
    let count = header.record_count;
    match header.attributes & 0x07 {
        // In memory already: walked in place, nothing copied.
        NONE => walk(body, count),
        GZIP => walk(buffered(flate2::read::GzDecoder::new(body)), count),
        SNAPPY => walk(&snappy(body)?[..], count),
        LZ4 => {
            let decoder =
                lz4::Decoder::new(body).map_err(|e| BatchError::Truncated(format!("lz4: {e}")))?;
            walk(buffered(decoder), count)
        }
        ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(body)
                .map_err(|e| BatchError::Truncated(format!("zstd: {e}")))?;
            walk(buffered(decoder), count)
        }
        other => Err(BatchError::Invalid(format!(
            "unknown compression codec {other}"
        ))),
    }
}

/// Kafka's snappy is either one raw block or xerial framing (a magic
/// header, then length-prefixed raw blocks). Each raw block declares its
/// decompressed length, checked before anything is allocated.
fn snappy(body: &[u8]) -> Result<Vec<u8>, BatchError> {
    const MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const HEADER: usize = 16;
    let corrupt = |e: String| BatchError::Truncated(format!("snappy: {e}"));
    let mut blocks = Vec::new();
    if body.starts_with(MAGIC) && body.len() >= HEADER {
        let mut rest = &body[HEADER..];
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(corrupt("cut block length".into()));
            };
            let len = u32::from_be_bytes(*len) as usize;
            let Some(block) = tail.get(..len) else {
                return Err(corrupt(format!("block of {len} bytes cut short")));
            };
            blocks.push(block);
            rest = &tail[len..];
        }
    } else {
        blocks.push(body);
    }
    let mut out = Vec::new();
    for block in blocks {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if (out.len() + len) as u64 > MAX_DECOMPRESSED_BYTES {
            return Err(too_large());
        }
        let start = out.len();
        out.resize(start + len, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
    }
    Ok(out)
}

fn too_large() -> BatchError {
    BatchError::Invalid(format!(
        "records expand past {MAX_DECOMPRESSED_BYTES} bytes"
    ))
}

/// A decompressing reader, buffered so the walk reads it in blocks.
fn buffered(input: impl Read) -> impl BufRead {
    BufReader::with_capacity(16 * 1024, input)
}

/// Walks `count` records from `input`, which must end right after them.
fn walk(input: impl BufRead, count: i32) -> Result<(), BatchError> {
    let mut r = Records {
        input: input.take(MAX_DECOMPRESSED_BYTES + 1),
        read: 0,
    };
    for i in 0..count {
        let length = r.varint()?;
        if length < 0 {
            return Err(BatchError::Truncated(format!(
                "record {i} has length {length}"
            )));
        }
        let start = r.read;
        r.skip(1)?; // attributes
        r.varlong()?; // timestamp delta
        let offset_delta = r.varint()?;
        if i64::from(offset_delta) != i64::from(i) {
            return Err(BatchError::Invalid(format!(
                "record {i} has offset delta {offset_delta}"
            )));
        }
        r.bytes_field(true)?; // key
        r.bytes_field(true)?; // value
        let headers = r.varint()?;
        if headers < 0 {
            return Err(BatchError::Truncated(format!(
                "record {i} declares {headers} headers"
            )));
        }
        for _ in 0..headers {
            r.bytes_field(false)?; // header key
            r.bytes_field(true)?; // header value
        }
        if r.read - start != length as u64 {
            return Err(BatchError::Truncated(format!(
                "record {i} declares {length} bytes but holds {}",
                r.read - start
            )));
        }
    }
    let mut extra = [0u8; 1];
    match r.input.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) if r.read >= MAX_DECOMPRESSED_BYTES => Err(too_large()),
        Ok(_) => Err(BatchError::Invalid(format!(
            "bytes after the {count} records the batch declares"
        ))),
        Err(e) => Err(BatchError::Truncated(e.to_string())),
    }
}

struct Records<R> {
    input: R,
    /// Bytes consumed so far.
    read: u64,
}

impl<R: BufRead> Records<R> {
    fn byte(&mut self) -> Result<u8, BatchError> {
        let mut b = [0u8; 1];
        match self.input.read_exact(&mut b) {
            Ok(()) => {
                self.read += 1;
                Ok(b[0])
            }
            Err(e) => Err(self.cut(e)),
        }
    }

    fn cut(&self, e: io::Error) -> BatchError {
        if self.read > MAX_DECOMPRESSED_BYTES {
            too_large()
        } else {
            BatchError::Truncated(format!("records cut at byte {}: {e}", self.read))
        }
    }

    /// Skips `n` bytes where they lie in the reader's buffer, without
    /// copying them anywhere.
    fn skip(&mut self, n: u64) -> Result<(), BatchError> {
        let mut left = n;
        while left > 0 {
            let available = match self.input.fill_buf() {
                Ok(buf) => buf.len() as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.cut(e)),
            };
            if available == 0 {
                return Err(self.cut(io::ErrorKind::UnexpectedEof.into()));
            }
            let step = available.min(left);
            self.input.consume(step as usize);
            self.read += step;
            left -= step;
        }
        Ok(())
    }

    /// A zigzag varint of at most 5 bytes.
    fn varint(&mut self) -> Result<i32, BatchError> {
        let raw = self.unsigned(5)?;
        let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        i32::try_from(value).map_err(|_| BatchError::Truncated(format!("varint {value} overflows")))
    }

    /// A zigzag varlong of at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::Truncated("varint too long".into()))
    }

    /// A varint length and that many bytes; -1 is null where `nullable`.
    fn bytes_field(&mut self, nullable: bool) -> Result<(), BatchError> {
        let len = self.varint()?;
        match len {
            -1 if nullable => Ok(()),
            len if len >= 0 => self.skip(len as u64),
            len => Err(BatchError::Truncated(format!("field length {len}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{self, tests::batch};
    use kafka_protocol::records::Compression;

    #[test]
    fn client_batches_of_every_codec_pass() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(20, 1, codec);
            let h = batch::check_batch(&b).unwrap();
            assert_eq!(validate_records(&b, &h), Ok(()), "{codec:?}");
        }
    }

    /// Rewrites a batch's bytes after the header and fixes the CRC, as a
    /// client with a bug (or a hostile one) could send it.
    fn with_body(b: &[u8], body: &[u8], count: i32) -> Vec<u8> {
        let mut out = b[..HEADER_BYTES].to_vec();
        out.extend_from_slice(body);
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[57..61].copy_from_slice(&count.to_be_bytes());
        out[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        let crc = batch::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn check(b: &[u8]) -> Result<(), BatchError> {
        let h = batch::check_batch(b)?;
        validate_records(b, &h)
    }

    #[test]
    fn lying_records_are_refused_with_the_crc_intact() {
        let good = batch(3, 1, Compression::None);
        let body = &good[HEADER_BYTES..];
        // A negative first record length.
        let mut negative = body.to_vec();
        negative[0] = 0x01; // zigzag -1
        assert!(matches!(
            check(&with_body(&good, &negative, 3)),
            Err(BatchError::Truncated(_))
        ));
        // Two records where three are declared.
        let h = batch::check_batch(&good).unwrap();
        assert_eq!(h.record_count, 3);
        let first_len = (body[0] >> 1) as usize + 1;
        let second_len = (body[first_len] >> 1) as usize + 1;
        let two = &body[..first_len + second_len];
        assert!(check(&with_body(&good, two, 3)).is_err());
        // Trailing bytes after the declared records.
        let mut extra = body.to_vec();
        extra.push(0);
        assert!(matches!(
            check(&with_body(&good, &extra, 3)),
            Err(BatchError::Invalid(_))
        ));
        // Marked gzip but not compressed.
        let mut gzip = with_body(&good, body, 3);
        gzip[22] |= 1;
        let crc = batch::compute_crc(&gzip);
        gzip[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(check(&gzip).is_err());
        // Unknown codec.
        let mut codec = with_body(&good, body, 3);
        codec[22] |= 7;
        let crc = batch::compute_crc(&codec);
        codec[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(check(&codec), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn a_snappy_length_that_cannot_be_real_is_refused_before_allocating() {
        // A raw snappy block declaring 2^32-1 bytes.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(snappy(&bomb).is_err());
    }

    #[test]
    fn a_zip_bomb_stops_at_the_cap() {
        use std::io::Write;
        // One well-formed record whose value is more zeros than the cap.
        let value_len = MAX_DECOMPRESSED_BYTES as i64 + 1024;
        let zigzag = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
        let varint = |mut v: u64, out: &mut Vec<u8>| loop {
            if v < 0x80 {
                out.push(v as u8);
                break;
            }
            out.push((v as u8) | 0x80);
            v >>= 7;
        };
        let mut head = Vec::new();
        let mut fields = vec![0u8, 0, 0]; // attributes, timestamp delta, offset delta
        varint(zigzag(-1), &mut fields); // null key
        varint(zigzag(value_len), &mut fields);
        varint(zigzag(fields.len() as i64 + value_len + 1), &mut head);
        head.extend_from_slice(&fields);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&head).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..=(value_len >> 20) {
            encoder.write_all(&zeros).unwrap();
        }
        let compressed = encoder.finish().unwrap();
        assert!(
            compressed.len() < 2 << 20,
            "{} bytes compressed",
            compressed.len()
        );
        let result = walk(buffered(flate2::read::GzDecoder::new(&compressed[..])), 1);
        assert_eq!(result, Err(too_large()));
    }
}

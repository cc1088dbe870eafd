//! Framing, request and response headers, and the versions fjord serves.
//!
//! A Kafka frame is a 4-byte big-endian size and then that many bytes. The
//! request header's own version follows from the API key and API version
//! (flexible versions, KIP-482, add tagged fields), so those two fields are
//! peeked before the header is decoded. The response header version follows
//! from the same pair; ApiVersions always answers with header v0 so that a
//! client that asked with a version the broker does not know can still read
//! the answer (KIP-511). The same framing serves `crate::client`.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};

use super::frame::{Frame, FrameBuf};

/// Bytes of the size prefix in front of every frame.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// The APIs fjord serves and the versions ApiVersions advertises. Every entry
/// is decoded by `handlers::ServedRequest::decode` and answered by
/// `handlers::dispatch`; a test checks the first half of that promise.
pub const SUPPORTED_APIS: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Metadata, VersionRange { min: 0, max: 13 }),
    (ApiKey::ApiVersions, VersionRange { min: 0, max: 4 }),
    (ApiKey::DescribeQuorum, VersionRange { min: 0, max: 2 }),
    (ApiKey::DescribeCluster, VersionRange { min: 0, max: 2 }),
    (ApiKey::Produce, VersionRange { min: 3, max: 12 }),
    (ApiKey::Fetch, VersionRange { min: 4, max: 16 }),
    (ApiKey::ListOffsets, VersionRange { min: 1, max: 8 }),
    (ApiKey::DeleteRecords, VersionRange { min: 0, max: 2 }),
    (ApiKey::InitProducerId, VersionRange { min: 0, max: 5 }),
    (
        ApiKey::OffsetForLeaderEpoch,
        VersionRange { min: 2, max: 4 },
    ),
    (ApiKey::CreateTopics, VersionRange { min: 2, max: 7 }),
    (ApiKey::DeleteTopics, VersionRange { min: 1, max: 6 }),
    (ApiKey::CreatePartitions, VersionRange { min: 0, max: 3 }),
    (ApiKey::DescribeConfigs, VersionRange { min: 1, max: 4 }),
    (ApiKey::AlterConfigs, VersionRange { min: 0, max: 2 }),
    (
        ApiKey::IncrementalAlterConfigs,
        VersionRange { min: 0, max: 1 },
    ),
    // The group coordinator (crate::group).
    (ApiKey::FindCoordinator, VersionRange { min: 0, max: 4 }),
    (ApiKey::JoinGroup, VersionRange { min: 0, max: 9 }),
    (ApiKey::SyncGroup, VersionRange { min: 0, max: 5 }),
    (ApiKey::Heartbeat, VersionRange { min: 0, max: 4 }),
    (ApiKey::LeaveGroup, VersionRange { min: 0, max: 5 }),
    (ApiKey::OffsetCommit, VersionRange { min: 2, max: 9 }),
    (ApiKey::OffsetFetch, VersionRange { min: 1, max: 9 }),
    (ApiKey::ListGroups, VersionRange { min: 0, max: 5 }),
    (ApiKey::DescribeGroups, VersionRange { min: 0, max: 5 }),
    (ApiKey::DeleteGroups, VersionRange { min: 0, max: 2 }),
    (ApiKey::OffsetDelete, VersionRange { min: 0, max: 0 }),
];

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame size {size} is outside 0..={max}")]
    FrameSize { size: i32, max: i32 },
    #[error("malformed request header: {0}")]
    Header(String),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{} v{version} is not served", api_name(*.api))]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {} v{version} body: {reason}", api_name(*.api))]
    Body {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("malformed response header: {0}")]
    ResponseHeader(String),
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// The versions fjord serves for `api`, if it serves it at all.
pub fn supported_versions(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _)| *key == api)
        .map(|(_, range)| *range)
}

pub fn is_supported(api: ApiKey, version: i16) -> bool {
    supported_versions(api).is_some_and(|r| r.min <= version && version <= r.max)
}

/// Kafka's name for an API ("Metadata", "ApiVersions"), for logs and metric labels.
pub fn api_name(api: ApiKey) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        ApiKey::iter()
            .map(|key| {
                let name: &'static str = Box::leak(format!("{key:?}").into_boxed_str());
                (key as i16, name)
            })
            .collect()
    });
    names.get(&(api as i16)).copied().unwrap_or("Unknown")
}

/// Refuses a size prefix before any of the frame is buffered.
pub fn check_frame_size(size: i32, max: i32) -> Result<usize, CodecError> {
    usize::try_from(size)
        .ok()
        .filter(|_| size <= max)
        .ok_or(CodecError::FrameSize { size, max })
}

/// Takes one whole frame (without its size prefix) off the front of `buf`,
/// or returns `None` when more bytes are needed. A bad size prefix is an
/// error as soon as its four bytes are in.
pub fn parse_frame(buf: &mut BytesMut, max_size: i32) -> Result<Option<Bytes>, CodecError> {
    let Some(size) = peek_i32(buf, 0) else {
        return Ok(None);
    };
    let size = check_frame_size(size, max_size)?;
    let total = SIZE_PREFIX_BYTES + size;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Decodes the request header at the front of `frame`, leaving the body.
pub fn decode_request_header(frame: &mut Bytes) -> Result<(ApiKey, RequestHeader), CodecError> {
    let (Some(key), Some(version)) = (peek_i16(frame, 0), peek_i16(frame, 2)) else {
        return Err(CodecError::Header(format!(
            "{} bytes is too short for an API key and version",
            frame.len()
        )));
    };
    let api = ApiKey::try_from(key).map_err(|()| CodecError::UnknownApiKey(key))?;
    let header = RequestHeader::decode(frame, api.request_header_version(version))
        .map_err(|e| CodecError::Header(e.to_string()))?;
    Ok((api, header))
}

/// Decodes a response header (client side); `header_version` comes from the request sent.
pub fn decode_response_header(
    frame: &mut Bytes,
    header_version: i16,
) -> Result<ResponseHeader, CodecError> {
    ResponseHeader::decode(frame, header_version)
        .map_err(|e| CodecError::ResponseHeader(e.to_string()))
}

/// A whole response frame: size prefix, header and body in one buffer.
pub fn encode_response<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Result<Bytes, CodecError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    encode_bytes(&header, api.response_header_version(version), body, version)
        .map_err(encode_error(api))
}

/// A whole response frame whose slices of `shared` (the record sets it
/// carries) are referenced rather than copied, and whose placeholders
/// stand for `regions`, in order; see [`super::frame`].
pub fn encode_response_frame<R: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    body: &R,
    shared: &[Bytes],
    regions: Vec<crate::storage::FileRegion>,
) -> Result<Frame, CodecError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    encode_frame(&header, header_version, body, version, shared, regions).map_err(encode_error(api))
}

/// A whole request frame (client side) whose slices of `shared` (a
/// produce request's batches) are referenced rather than copied.
pub fn encode_request_frame<R: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    body: &R,
    shared: &[Bytes],
) -> Result<Frame, CodecError> {
    let version = header.request_api_version;
    let header_version = api.request_header_version(version);
    encode_frame(header, header_version, body, version, shared, Vec::new())
        .map_err(encode_error(api))
}

/// A whole request frame (client side).
pub fn encode_request<R: Encodable>(
    header: &RequestHeader,
    api: ApiKey,
    body: &R,
) -> Result<Bytes, CodecError> {
    let version = header.request_api_version;
    encode_bytes(header, api.request_header_version(version), body, version)
        .map_err(encode_error(api))
}

fn encode_error(api: ApiKey) -> impl FnOnce(String) -> CodecError {
    move |reason| CodecError::Encode {
        what: api_name(api),
        reason,
    }
}

/// A frame in one buffer.
fn encode_bytes<H: Encodable, B: Encodable>(
    header: &H,
    header_version: i16,
    body: &B,
    version: i16,
) -> Result<Bytes, String> {
    let size = frame_size(header, header_version, body, version)?;
    let mut buf = BytesMut::with_capacity(SIZE_PREFIX_BYTES + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// A frame in chunks, `shared` referenced and `regions` sent from files.
fn encode_frame<H: Encodable, B: Encodable>(
    header: &H,
    header_version: i16,
    body: &B,
    version: i16,
    shared: &[Bytes],
    regions: Vec<crate::storage::FileRegion>,
) -> Result<Frame, String> {
    let size = frame_size(header, header_version, body, version)?;
    let mut buf = FrameBuf::new(shared, regions, SIZE_PREFIX_BYTES + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| e.to_string())?;
    buf.finish()
}

/// Bytes after the size prefix; an error when they do not fit in it.
fn frame_size<H: Encodable, B: Encodable>(
    header: &H,
    header_version: i16,
    body: &B,
    version: i16,
) -> Result<usize, String> {
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(|e| e.to_string())?;
    i32::try_from(size).map_err(|_| format!("{size} bytes is too large a frame"))?;
    Ok(size)
}

fn peek_i16(buf: &[u8], at: usize) -> Option<i16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(i16::from_be_bytes(bytes.try_into().ok()?))
}

fn peek_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::protocol::StrBytes;

    const MAX: i32 = 1024;

    fn framed(size: i32, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(size);
        buf.put_slice(body);
        buf
    }

    #[test]
    fn a_negative_frame_size_is_refused() {
        let mut buf = framed(-1, b"");
        assert!(matches!(
            parse_frame(&mut buf, MAX),
            Err(CodecError::FrameSize { size: -1, .. })
        ));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_its_body_arrives() {
        let mut buf = framed(MAX + 1, b"");
        assert!(matches!(
            parse_frame(&mut buf, MAX),
            Err(CodecError::FrameSize { .. })
        ));
        assert!(
            buf.capacity() < MAX as usize,
            "nothing reserved for the body"
        );
    }

    #[test]
    fn a_frame_is_returned_only_when_whole() {
        let mut buf = framed(5, b"abc");
        assert!(parse_frame(&mut buf, MAX).unwrap().is_none());
        buf.put_slice(b"de");
        buf.put_slice(b"next");
        assert_eq!(&parse_frame(&mut buf, MAX).unwrap().unwrap()[..], b"abcde");
        assert_eq!(&buf[..], b"next");
        assert!(parse_frame(&mut BytesMut::from(&b"\0\0"[..]), MAX)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_truncated_header_is_an_error() {
        for len in 0..4 {
            let mut frame = Bytes::copy_from_slice(&[0, 3, 0, 1][..len]);
            assert!(matches!(
                decode_request_header(&mut frame),
                Err(CodecError::Header(_))
            ));
        }
        // Key and version present, correlation id cut short.
        let mut frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0]);
        assert!(matches!(
            decode_request_header(&mut frame),
            Err(CodecError::Header(_))
        ));
    }

    #[test]
    fn an_unknown_api_key_is_an_error() {
        let mut frame = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            decode_request_header(&mut frame),
            Err(CodecError::UnknownApiKey(0x7f00))
        ));
    }

    #[test]
    fn a_request_round_trips_through_the_frame() {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(12)
            .with_correlation_id(42)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let body = MetadataRequest::default().with_topics(None);
        let mut buf =
            BytesMut::from(&encode_request(&header, ApiKey::Metadata, &body).unwrap()[..]);
        let mut frame = parse_frame(&mut buf, MAX).unwrap().unwrap();
        let (api, decoded) = decode_request_header(&mut frame).unwrap();
        assert_eq!(api, ApiKey::Metadata);
        assert_eq!(decoded, header);
        assert_eq!(MetadataRequest::decode(&mut frame, 12).unwrap(), body);
    }

    #[test]
    fn the_table_stays_within_what_the_codec_library_knows() {
        for (api, range) in SUPPORTED_APIS {
            let known = api.valid_versions();
            assert!(known.min <= range.min && range.max <= known.max, "{api:?}");
            assert!(!range.is_empty(), "{api:?}");
        }
        assert_eq!(api_name(ApiKey::DescribeQuorum), "DescribeQuorum");
    }
}

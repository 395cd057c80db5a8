//! The one place bytes become messages: bincode 2 (serde) with explicit size limits,
//! and the frame layout every blobswarm stream uses.
//!
//! A frame is `header_len: u32 BE | payload_len: u32 BE | header | payload`. The header is
//! a bincode-encoded message; the payload carries raw chunk bytes so they are never copied
//! through serde. Both lengths are checked against [`MAX_HEADER`] / [`MAX_PAYLOAD`] before
//! anything is allocated, and bincode itself is capped at the same limit so a length field
//! inside a header cannot make it allocate much more than the frame it came in (serde
//! reserves at most 1 MiB for a list ahead of its elements). Lists with a
//! protocol cap are decoded through [`bounded_vec`], so the cap holds while decoding: a
//! list of small elements (an empty `Vec` is 1 byte on the wire and 24 in memory) cannot
//! make a peer hold many times the frame's size before validation would refuse it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::chunk_limits::MAX_CHUNK_SIZE;

/// Largest header: a chunk map of [`crate::chunk_limits::MAX_CHUNKS`] digests plus slack.
pub const MAX_HEADER: usize = 9 << 20;
/// Largest payload: one chunk.
pub const MAX_PAYLOAD: usize = MAX_CHUNK_SIZE as usize;
/// Largest request header: the biggest request is a full have-bitfield of
/// [`crate::chunk_limits::MAX_CHUNKS`] bits (32 KiB). Requests carry no payload, so an agent
/// serving many inbound streams holds at most this much per stream.
pub const MAX_REQUEST_HEADER: usize = 64 << 10;
/// Bytes of the fixed frame prefix.
pub const PREFIX_LEN: usize = 8;

type Limited = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_HEADER>,
>;

fn config() -> Limited {
    bincode::config::standard().with_limit::<MAX_HEADER>()
}

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A length prefix exceeds its limit; nothing was allocated.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which part of the frame.
        what: &'static str,
        /// Declared length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input ended before the message did.
    #[error("message truncated: {0}")]
    Truncated(String),
    /// The bytes are not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes were left over after the message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
    /// Encoding failed (a message larger than the limit).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `value` as a frame header, refusing anything above [`MAX_HEADER`].
///
/// # Errors
/// [`CodecError::Encode`] when the value does not fit the limit.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > MAX_HEADER {
        return Err(CodecError::TooLarge {
            what: "header",
            len: bytes.len(),
            limit: MAX_HEADER,
        });
    }
    Ok(bytes)
}

/// Encodes without a limit, for hashing values that were validated on construction.
pub(crate) fn encode_unbounded<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("encoding into a Vec cannot fail")
}

/// Decodes exactly one message from `bytes`; trailing bytes, truncation and oversized
/// length fields are errors, never panics or large allocations.
///
/// # Errors
/// [`CodecError`] naming what was wrong.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited::<T, MAX_HEADER>(bytes)
}

/// [`decode`] for small messages (gossip reports): bincode's limit is `LIMIT` instead of
/// [`MAX_HEADER`]. bincode allocates a string's declared length before it reads the
/// bytes, so under the general limit a 60-byte message could make the decoder allocate
/// 9 MiB; under this one it can claim at most `LIMIT` bytes in total.
///
/// # Errors
/// [`CodecError`] naming what was wrong.
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, CodecError> {
    if bytes.len() > LIMIT {
        return Err(CodecError::TooLarge {
            what: "header",
            len: bytes.len(),
            limit: LIMIT,
        });
    }
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => CodecError::Truncated(e.to_string()),
        bincode::error::DecodeError::LimitExceeded => CodecError::TooLarge {
            what: "decoded value",
            len: bytes.len(),
            limit: LIMIT,
        },
        other => CodecError::Malformed(other.to_string()),
    })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Builds the 8-byte frame prefix.
///
/// # Errors
/// [`CodecError::TooLarge`] when either part exceeds its limit.
pub fn frame_prefix(header_len: usize, payload_len: usize) -> Result<[u8; PREFIX_LEN], CodecError> {
    check_lengths(header_len, payload_len)?;
    let mut p = [0u8; PREFIX_LEN];
    p[..4].copy_from_slice(&(header_len as u32).to_be_bytes());
    p[4..].copy_from_slice(&(payload_len as u32).to_be_bytes());
    Ok(p)
}

/// Parses a request frame prefix: header at most [`MAX_REQUEST_HEADER`], no payload.
///
/// # Errors
/// [`CodecError::TooLarge`] when the request is larger than any valid request.
pub fn parse_request_prefix(prefix: [u8; PREFIX_LEN]) -> Result<usize, CodecError> {
    let (h, p) = parse_prefix(prefix)?;
    if h > MAX_REQUEST_HEADER {
        return Err(CodecError::TooLarge {
            what: "request header",
            len: h,
            limit: MAX_REQUEST_HEADER,
        });
    }
    if p != 0 {
        return Err(CodecError::TooLarge {
            what: "request payload",
            len: p,
            limit: 0,
        });
    }
    Ok(h)
}

/// Parses and bounds-checks a frame prefix; call before allocating for header or payload.
///
/// # Errors
/// [`CodecError::TooLarge`] when a declared length exceeds its limit.
pub fn parse_prefix(prefix: [u8; PREFIX_LEN]) -> Result<(usize, usize), CodecError> {
    let h = u32::from_be_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    let p = u32::from_be_bytes(prefix[4..].try_into().expect("4 bytes")) as usize;
    check_lengths(h, p)?;
    Ok((h, p))
}

fn check_lengths(header_len: usize, payload_len: usize) -> Result<(), CodecError> {
    if header_len > MAX_HEADER {
        return Err(CodecError::TooLarge {
            what: "header",
            len: header_len,
            limit: MAX_HEADER,
        });
    }
    if payload_len > MAX_PAYLOAD {
        return Err(CodecError::TooLarge {
            what: "payload",
            len: payload_len,
            limit: MAX_PAYLOAD,
        });
    }
    Ok(())
}

/// Encodes a whole frame (prefix, header, payload) into one buffer; used by tests and small messages.
///
/// # Errors
/// [`CodecError`] when the header cannot be encoded or a part is too large.
pub fn encode_frame<T: Serialize>(header: &T, payload: &[u8]) -> Result<Vec<u8>, CodecError> {
    let h = encode(header)?;
    let prefix = frame_prefix(h.len(), payload.len())?;
    let mut out = Vec::with_capacity(PREFIX_LEN + h.len() + payload.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a whole frame from one buffer, returning the header and the payload slice.
///
/// # Errors
/// [`CodecError`] on truncation, oversize, malformed header or trailing bytes.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), CodecError> {
    let prefix: [u8; PREFIX_LEN] = bytes
        .get(..PREFIX_LEN)
        .ok_or_else(|| {
            CodecError::Truncated(format!("frame of {} bytes has no prefix", bytes.len()))
        })?
        .try_into()
        .expect("8 bytes");
    let (h, p) = parse_prefix(prefix)?;
    let rest = &bytes[PREFIX_LEN..];
    if rest.len() < h + p {
        return Err(CodecError::Truncated(format!(
            "frame declares {} bytes, {} present",
            h + p,
            rest.len()
        )));
    }
    if rest.len() > h + p {
        return Err(CodecError::Trailing(rest.len() - h - p));
    }
    let header = decode(&rest[..h])?;
    Ok((header, &rest[h..]))
}

/// Deserializes a list of at most `N` elements for `#[serde(deserialize_with)]`: a longer
/// list is refused from its length prefix, before any element is decoded, and memory is
/// reserved for at most `N` elements. The encoding is that of a plain `Vec<T>`.
pub(crate) fn bounded_vec<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            if hint > N {
                return Err(serde::de::Error::invalid_length(hint, &self));
            }
            let mut out = Vec::with_capacity(hint);
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(serde::de::Error::invalid_length(N + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

//! The Confluent wire format of a record framed for a Schema Registry: the magic byte 0, the
//! writer schema's id (4 bytes, big-endian), then — for Protobuf only — the index path of the
//! message type within the schema's file, then the payload.
//!
//! The Protobuf index path is a zigzag varint count followed by that many zigzag varints; the
//! common path `[0]` (the file's first message) is written as the single byte 0.

use thiserror::Error;

/// The magic byte every framed record starts with.
pub const MAGIC: u8 = 0;

/// The deepest Protobuf index path read: a message nested this deep does not occur in practice,
/// and a hostile count must not size an allocation.
pub const MAX_MESSAGE_INDEXES: usize = 32;

/// A framed record, borrowed from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The writer schema's id in the registry.
    pub schema_id: u32,
    /// The bytes after the header.
    pub body: &'a [u8],
}

/// Why a payload is not a framed record (the record's fault).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("payload is {0} bytes, shorter than the 5-byte Schema Registry header")]
    TooShort(usize),
    #[error("payload starts with byte 0x{0:02x}, not the Schema Registry magic byte 0 (a record produced without the registry's serializer?)")]
    NoMagicByte(u8),
    #[error("the Protobuf message index path is cut short")]
    IndexesCutShort,
    #[error("the Protobuf message index path holds {0} indexes, more than {MAX_MESSAGE_INDEXES}")]
    TooManyIndexes(i64),
    #[error("the Protobuf message index path holds a negative index")]
    NegativeIndex,
}

/// Splits a payload into its schema id and the rest.
pub fn frame(payload: &[u8]) -> Result<Framed<'_>, WireError> {
    if payload.len() < 5 {
        return Err(WireError::TooShort(payload.len()));
    }
    if payload[0] != MAGIC {
        return Err(WireError::NoMagicByte(payload[0]));
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok(Framed {
        schema_id: id,
        body: &payload[5..],
    })
}

/// Reads the Protobuf message index path at the start of `body`: the path, and the message bytes
/// after it.
pub fn message_indexes(body: &[u8]) -> Result<(Vec<usize>, &[u8]), WireError> {
    let mut rest = body;
    let count = read_zigzag(&mut rest)?;
    if count == 0 {
        // The single byte 0: the first message type of the file.
        return Ok((vec![0], rest));
    }
    if !(1..=MAX_MESSAGE_INDEXES as i64).contains(&count) {
        return Err(WireError::TooManyIndexes(count));
    }
    let mut path = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = read_zigzag(&mut rest)?;
        path.push(usize::try_from(i).map_err(|_| WireError::NegativeIndex)?);
    }
    Ok((path, rest))
}

/// One zigzag-encoded varint (at most 10 bytes), advancing `rest` past it.
fn read_zigzag(rest: &mut &[u8]) -> Result<i64, WireError> {
    let mut value: u64 = 0;
    for (i, &b) in rest.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(WireError::IndexesCutShort)
}

/// The header of a framed record, for encoders (the demo, the tests): magic byte and id.
pub fn header(schema_id: u32) -> [u8; 5] {
    let id = schema_id.to_be_bytes();
    [MAGIC, id[0], id[1], id[2], id[3]]
}

/// The Protobuf index path as the serializer writes it.
pub fn encode_message_indexes(path: &[usize]) -> Vec<u8> {
    if path == [0] {
        return vec![0];
    }
    let mut out = Vec::new();
    for v in std::iter::once(path.len()).chain(path.iter().copied()) {
        let mut z = (v as u64) << 1;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_record_gives_its_id_and_body() {
        let mut p = header(0x0102_0304).to_vec();
        p.extend_from_slice(b"body");
        assert_eq!(
            frame(&p),
            Ok(Framed {
                schema_id: 0x0102_0304,
                body: b"body"
            })
        );
        assert_eq!(frame(&header(7)).unwrap().body, b"");
    }

    #[test]
    fn payloads_that_are_not_framed_say_why() {
        assert_eq!(frame(b"{\"a\""), Err(WireError::TooShort(4)));
        let err = frame(br#"{"UserID":"u1"}"#).unwrap_err();
        assert_eq!(err, WireError::NoMagicByte(b'{'));
        assert!(err.to_string().contains("0x7b"), "{err}");
    }

    #[test]
    fn message_index_paths_round_trip() {
        for path in [vec![0], vec![1], vec![0, 2], vec![3, 0, 70], vec![200]] {
            let mut body = encode_message_indexes(&path);
            body.extend_from_slice(b"msg");
            assert_eq!(
                message_indexes(&body),
                Ok((path.clone(), &b"msg"[..])),
                "{path:?}"
            );
        }
        // The serializers' shortcut for [0] is one byte.
        assert_eq!(encode_message_indexes(&[0]), [0]);
    }

    #[test]
    fn hostile_index_paths_are_refused_without_allocating() {
        // A count of 2^62 (zigzag), then nothing.
        let huge = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            message_indexes(&huge),
            Err(WireError::TooManyIndexes(_))
        ));
        assert_eq!(message_indexes(&[0x80]), Err(WireError::IndexesCutShort));
        assert_eq!(
            message_indexes(&[0x04, 0x02]),
            Err(WireError::IndexesCutShort)
        );
        // Count 1, index -1.
        assert_eq!(
            message_indexes(&[0x02, 0x01]),
            Err(WireError::NegativeIndex)
        );
        assert_eq!(message_indexes(&[0x01]), Err(WireError::TooManyIndexes(-1)));
    }
}

//! How event bodies are kept: compressed, losslessly.
//!
//! An audit entry's body is the JSON text that was hashed, and reads give
//! back exactly that text. On disk it is either
//!
//! - TEXT: the JSON itself (what a store written before compression, or
//!   by hand, holds), or
//! - a BLOB whose first byte names its encoding. Encoding 1 is a Zstandard
//!   frame, without its 4-byte magic number, compressed with the raw
//!   dictionary `body-v1.dict`: the JSON skeletons of toolgate's events,
//!   which every body shares.
//! - Encoding 2 is encoding 1 of the body with its hex packed first: each
//!   UUID in lower-case text with hyphens (`8-4-4-4-12` hex digits) is the
//!   byte 0xF9 and its 16 bytes, each other run of 64 lower-case hex
//!   digits (a fingerprint, a hash) the byte 0xF8 and its 32 bytes. Those
//!   two bytes never occur in UTF-8 text, so unpacking is unambiguous.
//!   Random hex does not compress well in bodies this small; its bytes
//!   take half the room.
//! - Encoding 3 is a body whose tail is kept once for all bodies that end
//!   with it, in the table `parts`: the byte 3, the part's id as a
//!   variable-length integer (7 bits a byte, low bits first, the high bit
//!   set on every byte but the last), then the rest of the body as in
//!   encoding 2 (without its byte). The body is the rest followed by the
//!   part's text. An approval request ends with its tool's description
//!   and JSON Schema, which are the same for every call of the tool (see
//!   [`shared_tail`]).
//!
//! An encoding, its dictionary included, never changes once released:
//! rows written with it must still read. A better dictionary is a new
//! encoding byte.

use std::cell::RefCell;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use toolgate_core::run::Event;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// Encoding 1's dictionary. Never edit it: add a new encoding instead.
const DICTIONARY_V1: &[u8] = include_bytes!("body-v1.dict");

/// The byte that starts a body of encoding 1.
const ZSTD_V1: u8 = 1;

/// The byte that starts a body of encoding 2.
const PACKED: u8 = 2;

/// The byte that starts a body of encoding 3.
const WITH_PART: u8 = 3;

/// In packed text: 32 bytes follow, written as 64 lower-case hex digits.
const HEX_64: u8 = 0xF8;

/// In packed text: 16 bytes follow, written as a UUID.
const UUID: u8 = 0xF9;

/// The shortest tail worth keeping once: shorter ones compress to a few
/// bytes against the dictionary anyway.
const MIN_PART: usize = 32;

/// Zstandard's level: 3 compresses these small bodies within a few bytes
/// of the highest levels, at a fraction of the time.
const LEVEL: i32 = 3;

/// Every Zstandard frame starts with these bytes; they are left out.
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest body decompressed, as a guard against a damaged frame that
/// claims a huge size.
const MAX_BODY: usize = 256 << 20;

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static DICTIONARY: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| EncoderDictionary::copy(DICTIONARY_V1, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static DICTIONARY: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICTIONARY.get_or_init(|| DecoderDictionary::copy(DICTIONARY_V1))
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A body as stored: encoding 2.
pub(crate) fn encode(json: &str) -> std::io::Result<Vec<u8>> {
    let mut stored = vec![PACKED];
    compress(&pack(json), &mut stored)?;
    Ok(stored)
}

/// `json` with its hex packed (see encoding 2).
fn pack(json: &str) -> Vec<u8> {
    let text = json.as_bytes();
    let mut packed = Vec::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        // Both packed forms start with a hex digit; most bytes are not one.
        if hex_digit(text[at]).is_none() {
            packed.push(text[at]);
            at += 1;
        } else if let Some(bytes) = text.get(at..at + 36).and_then(uuid) {
            packed.push(UUID);
            packed.extend_from_slice(&bytes);
            at += 36;
        } else if let Some(bytes) = text.get(at..at + 64).and_then(hex_bytes::<32>) {
            packed.push(HEX_64);
            packed.extend_from_slice(&bytes);
            at += 64;
        } else {
            packed.push(text[at]);
            at += 1;
        }
    }
    packed
}

/// Packed text as it was.
fn unpack(packed: &[u8]) -> Result<String, String> {
    let mut text = Vec::with_capacity(packed.len() * 2);
    let mut at = 0;
    while at < packed.len() {
        match packed[at] {
            UUID => {
                let bytes = packed
                    .get(at + 1..at + 17)
                    .ok_or("its packed text is cut short")?;
                for (index, byte) in bytes.iter().enumerate() {
                    if matches!(index, 4 | 6 | 8 | 10) {
                        text.push(b'-');
                    }
                    put_hex(&mut text, *byte);
                }
                at += 17;
            }
            HEX_64 => {
                let bytes = packed
                    .get(at + 1..at + 33)
                    .ok_or("its packed text is cut short")?;
                bytes.iter().for_each(|byte| put_hex(&mut text, *byte));
                at += 33;
            }
            byte => {
                text.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(text).map_err(|_| "it is not UTF-8 text".to_owned())
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut Vec<u8>, byte: u8) {
    out.push(HEX_DIGITS[usize::from(byte >> 4)]);
    out.push(HEX_DIGITS[usize::from(byte & 15)]);
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// The `N` bytes that `2 N` lower-case hex digits write.
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    (digits.len() == 2 * N).then_some(bytes)
}

/// The 16 bytes of a UUID in lower-case text with hyphens.
fn uuid(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&at| text[at] != b'-') {
        return None;
    }
    let mut digits = [0; 32];
    let mut next = 0;
    for &digit in text.iter().filter(|&&c| c != b'-') {
        *digits.get_mut(next)? = digit;
        next += 1;
    }
    hex_bytes::<16>(&digits[..next])
}

/// Appends the Zstandard frame of `text`, without its magic number, to
/// `out`.
fn compress(text: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    let frame = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(compressor) => compressor,
            None => cell.insert(Compressor::with_prepared_dictionary(encoder_dictionary())?),
        };
        compressor.compress(text)
    })?;
    let Some(rest) = frame.strip_prefix(&MAGIC) else {
        return Err(std::io::Error::other(
            "Zstandard made a frame without its magic number",
        ));
    };
    out.extend_from_slice(rest);
    Ok(())
}

/// A body's tail that is kept once in `parts`, for every body that ends
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The SHA-256 of [`Part::text`]: the part's key.
    pub(crate) hash: [u8; 32],
    /// The tail itself.
    pub(crate) text: String,
}

/// A body prepared for storing, before the writer knows the id of its
/// part, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// Stored as it is: encoding 2.
    Whole(Vec<u8>),
    /// Stored without its tail, `part`, as encoding 3: `frame` is the rest
    /// of the body's packed frame, without its magic number.
    Split { frame: Vec<u8>, part: Part },
}

impl Prepared {
    /// The body as stored, given the id of its part in `parts`.
    pub(crate) fn stored(
        &self,
        part_id: impl FnOnce(&Part) -> Result<i64, String>,
    ) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            Prepared::Whole(stored) => Ok(std::borrow::Cow::Borrowed(stored)),
            Prepared::Split { frame, part } => {
                let id = part_id(part)?;
                let id = u64::try_from(id).map_err(|_| format!("a part has the id {id}"))?;
                let mut stored = Vec::with_capacity(1 + 10 + frame.len());
                stored.push(WITH_PART);
                put_varint(&mut stored, id);
                stored.extend_from_slice(frame);
                Ok(std::borrow::Cow::Owned(stored))
            }
        }
    }
}

/// `json`, the JSON text of `event`, prepared for storing: split from its
/// shared tail if it has one, whole otherwise.
pub(crate) fn prepare(event: &Event, json: &str) -> std::io::Result<Prepared> {
    if let Some((start, part)) = shared_tail(event, json) {
        let mut frame = Vec::new();
        compress(&pack(&json[..start]), &mut frame)?;
        return Ok(Prepared::Split { frame, part });
    }
    encode(json).map(Prepared::Whole)
}

/// How many tools' shared tails each thread keeps.
const KEPT_TAILS: usize = 8;

thread_local! {
    /// The description and schema of the tools whose approval requests
    /// were prepared last on this thread, with their tails, most recent
    /// first.
    static TAILS: RefCell<Vec<(String, serde_json::Value, Option<Part>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Where the tail of `json` (`event` as JSON) that many bodies share
/// starts, and that tail: for an approval request, its tool's description
/// and schema, which serde writes last. `None` when the body does not end
/// as expected, or the tail is too short to be worth sharing.
pub(crate) fn shared_tail(event: &Event, json: &str) -> Option<(usize, Part)> {
    let Event::ApprovalRequested {
        description,
        schema,
        ..
    } = event
    else {
        return None;
    };
    // The tail, and its hash, are the same for every call of a tool: made
    // once for the tools seen last.
    let part = TAILS.with(|kept| {
        let mut kept = kept.borrow_mut();
        match kept
            .iter()
            .position(|(d, s, _)| d == description && s == schema)
        {
            Some(at) => kept[..=at].rotate_right(1),
            None => {
                kept.truncate(KEPT_TAILS - 1);
                let part = tail(description, schema).map(|text| Part {
                    hash: Sha256::digest(text.as_bytes()).into(),
                    text,
                });
                kept.insert(0, (description.clone(), schema.clone(), part));
            }
        }
        kept[0].2.clone()
    })?;
    (part.text.len() >= MIN_PART && json.len() > part.text.len() && json.ends_with(&part.text))
        .then(|| (json.len() - part.text.len(), part))
}

/// The text that the JSON of an approval request for a tool with
/// `description` and `schema` ends with.
fn tail(description: &str, schema: &serde_json::Value) -> Option<String> {
    let schema = serde_json::to_string(schema).ok()?;
    Some(if description.is_empty() {
        format!(",\"schema\":{schema}}}")
    } else {
        let description = serde_json::to_string(description).ok()?;
        format!(",\"description\":{description},\"schema\":{schema}}}")
    })
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A variable-length integer at the start of `bytes`, and what follows it.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((n, &bytes[index + 1..]));
        }
    }
    None
}

/// The JSON text of a stored BLOB body, `part` giving the text of a part
/// by its id; an error says why it cannot be read.
pub(crate) fn decode(
    stored: &[u8],
    part: impl FnOnce(i64) -> Result<String, String>,
) -> Result<String, String> {
    match stored.split_first() {
        Some((&ZSTD_V1, rest)) => {
            String::from_utf8(decompress(rest)?).map_err(|_| "it is not UTF-8 text".to_owned())
        }
        Some((&PACKED, rest)) => unpack(&decompress(rest)?),
        Some((&WITH_PART, rest)) => {
            let (id, rest) = take_varint(rest).ok_or("its part's id is damaged")?;
            let id = i64::try_from(id).map_err(|_| "its part's id is damaged".to_owned())?;
            let mut json = unpack(&decompress(rest)?)?;
            json.push_str(&part(id)?);
            Ok(json)
        }
        Some((encoding, _)) => Err(format!("it has the unknown encoding {encoding}")),
        None => Err("it is empty".to_owned()),
    }
}

/// What a frame without its magic number holds.
fn decompress(rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut frame = Vec::with_capacity(MAGIC.len() + rest.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(rest);
    let size = match zstd::zstd_safe::get_frame_content_size(&frame) {
        Ok(Some(size)) if size <= MAX_BODY as u64 => size as usize,
        Ok(Some(size)) => return Err(format!("it claims {size} bytes")),
        Ok(None) | Err(_) => return Err("its compressed frame is damaged".to_owned()),
    };
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match cell.as_mut() {
            Some(decompressor) => decompressor,
            None => cell.insert(
                Decompressor::with_prepared_dictionary(decoder_dictionary())
                    .map_err(|error| error.to_string())?,
            ),
        };
        decompressor
            .decompress(&frame, size)
            .map_err(|error| format!("its compressed frame is damaged ({error})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_part(id: i64) -> Result<String, String> {
        Err(format!("no part {id}"))
    }

    #[test]
    fn bodies_round_trip_and_shrink() {
        let bodies = [
            "",
            "{}",
            r#"{"type":"run_started","messages":[{"role":"human","content":"Email Bob"}]}"#,
            r#"{"type":"gate_verdict","call_id":"call-1","verdict":{"action":"ask","by":{"by":"rule","number":1,"name":"rule 1"}}}"#,
            "déjà vu ✓ \u{0}",
        ];
        for body in bodies {
            let stored = encode(body).unwrap();
            assert_eq!(stored[0], PACKED);
            assert_eq!(decode(&stored, no_part).unwrap(), body);
        }
        let verdict = bodies[3];
        assert!(encode(verdict).unwrap().len() < verdict.len() / 3);
        let big = "x".repeat(1 << 20);
        assert_eq!(decode(&encode(&big).unwrap(), no_part).unwrap(), big);
    }

    #[test]
    fn damaged_bodies_are_refused() {
        let stored = encode("{\"type\":\"run_completed\",\"answer\":\"42\"}").unwrap();
        assert!(decode(&stored[..stored.len() - 2], no_part).is_err());
        assert!(
            decode(&[9, 1, 2], no_part)
                .unwrap_err()
                .contains("unknown encoding 9")
        );
        assert!(decode(&[], no_part).is_err());
        assert!(decode(&[WITH_PART, 0x80], no_part).is_err());
    }

    #[test]
    fn hex_is_packed_losslessly() {
        let uuid = "01a20531-c4a8-7544-8923-6de83b929727";
        let hash = "b40078122873592076c82cd0b668ac188742d64ec40393cbbcc4b0daa0a17afc";
        let texts = [
            format!(r#"{{"approval_id":"{uuid}","fingerprint":"{hash}"}}"#),
            format!("{uuid}{uuid}{hash}{hash}"),
            format!("{hash}0"),
            hash[..63].to_owned(),
            hash.to_uppercase(),
            uuid.to_uppercase(),
            uuid.replace('-', "_"),
            format!("{}{}", &uuid[..35], "g"),
            "ä".repeat(40),
        ];
        for text in &texts {
            assert_eq!(unpack(&pack(text)).unwrap(), *text);
            assert_eq!(decode(&encode(text).unwrap(), no_part).unwrap(), *text);
        }
        assert_eq!(
            pack(&texts[0]).len(),
            texts[0].len() - (36 - 17) - (64 - 33)
        );
        assert_eq!(pack(&texts[4]).len(), 64);
        assert_eq!(pack(&texts[1]).len(), 2 * 17 + 2 * 33);
        assert!(unpack(&[b'"', HEX_64, 1, 2]).is_err());
        assert!(unpack(&[UUID]).is_err());
    }

    #[test]
    fn encoding_1_still_reads() {
        let body = r#"{"type":"run_completed","answer":"42"}"#;
        let mut stored = vec![ZSTD_V1];
        compress(body.as_bytes(), &mut stored).unwrap();
        assert_eq!(decode(&stored, no_part).unwrap(), body);
    }

    #[test]
    fn an_approval_request_keeps_its_tool_apart() {
        let event = |description: &str| Event::ApprovalRequested {
            call_id: "call-1".to_owned(),
            approval_id: "01a20531-c4a8-7544-8923-6de83b929727".to_owned(),
            fingerprint: serde_json::from_value(serde_json::json!(
                "b40078122873592076c82cd0b668ac188742d64ec40393cbbcc4b0daa0a17afc"
            ))
            .unwrap(),
            ask: Default::default(),
            requested_at: 1_795_383_477_415,
            expires_at: None,
            description: description.to_owned(),
            schema: serde_json::json!({
                "type": "object",
                "properties": {"to": {"type": "string", "format": "email"}},
                "required": ["to"],
            }),
        };
        for description in ["Sends an \"email\".", ""] {
            let event = event(description);
            let json = serde_json::to_string(&event).unwrap();
            let Prepared::Split { part, .. } = &prepare(&event, &json).unwrap() else {
                panic!("the schema should be kept apart");
            };
            assert!(json.ends_with(&part.text));
            let hash: [u8; 32] = Sha256::digest(part.text.as_bytes()).into();
            assert_eq!(part.hash, hash, "a part's key is the hash of its text");
            assert!(part.text.starts_with(if description.is_empty() {
                ",\"schema\":"
            } else {
                ",\"description\":"
            }));
            let prepared = prepare(&event, &json).unwrap();
            let stored = prepared.stored(|_| Ok(300)).unwrap();
            assert_eq!(stored[0], WITH_PART);
            let text = part.text.clone();
            let read = decode(&stored, |id| {
                assert_eq!(id, 300);
                Ok(text)
            });
            assert_eq!(read.unwrap(), json);
            assert!(decode(&stored, no_part).is_err());
            // A body that does not end as serde writes it is kept whole.
            let other = json.replace("\"schema\"", "\"schema\" ");
            assert!(matches!(
                prepare(&event, &other).unwrap(),
                Prepared::Whole(_)
            ));
        }
    }
}

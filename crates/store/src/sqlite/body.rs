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
//!
//! An encoding, its dictionary included, never changes once released:
//! rows written with it must still read. A better dictionary is a new
//! encoding byte.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// Encoding 1's dictionary. Never edit it: add a new encoding instead.
const DICTIONARY_V1: &[u8] = include_bytes!("body-v1.dict");

/// The byte that starts a body of encoding 1.
const ZSTD_V1: u8 = 1;

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

/// A body as stored: encoding 1.
pub(crate) fn encode(json: &str) -> std::io::Result<Vec<u8>> {
    let frame = COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match cell.as_mut() {
            Some(compressor) => compressor,
            None => cell.insert(Compressor::with_prepared_dictionary(encoder_dictionary())?),
        };
        compressor.compress(json.as_bytes())
    })?;
    let Some(rest) = frame.strip_prefix(&MAGIC) else {
        return Err(std::io::Error::other(
            "Zstandard made a frame without its magic number",
        ));
    };
    let mut stored = Vec::with_capacity(1 + rest.len());
    stored.push(ZSTD_V1);
    stored.extend_from_slice(rest);
    Ok(stored)
}

/// The JSON text of a stored BLOB body; an error says why it cannot be
/// read.
pub(crate) fn decode(stored: &[u8]) -> Result<String, String> {
    match stored.split_first() {
        Some((&ZSTD_V1, rest)) => {
            let mut frame = Vec::with_capacity(MAGIC.len() + rest.len());
            frame.extend_from_slice(&MAGIC);
            frame.extend_from_slice(rest);
            let size = match zstd::zstd_safe::get_frame_content_size(&frame) {
                Ok(Some(size)) if size <= MAX_BODY as u64 => size as usize,
                Ok(Some(size)) => return Err(format!("it claims {size} bytes")),
                Ok(None) | Err(_) => return Err("its compressed frame is damaged".to_owned()),
            };
            let bytes = DECOMPRESSOR.with(|cell| {
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
            })?;
            String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())
        }
        Some((encoding, _)) => Err(format!("it has the unknown encoding {encoding}")),
        None => Err("it is empty".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(stored[0], ZSTD_V1);
            assert_eq!(decode(&stored).unwrap(), body);
        }
        let verdict = bodies[3];
        assert!(encode(verdict).unwrap().len() < verdict.len() / 3);
        let big = "x".repeat(1 << 20);
        assert_eq!(decode(&encode(&big).unwrap()).unwrap(), big);
    }

    #[test]
    fn damaged_bodies_are_refused() {
        let stored = encode("{\"type\":\"run_completed\",\"answer\":\"42\"}").unwrap();
        assert!(decode(&stored[..stored.len() - 2]).is_err());
        assert!(
            decode(&[9, 1, 2])
                .unwrap_err()
                .contains("unknown encoding 9")
        );
        assert!(decode(&[]).is_err());
    }
}

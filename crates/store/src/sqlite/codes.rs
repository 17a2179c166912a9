//! Compact forms of the values every row repeats: event kinds, run and
//! approval statuses as small numbers, fingerprints as their 32 bytes, and the ids
//! of runs and approvals that are UUIDs (as toolgate makes them) as their
//! 16 bytes.
//!
//! A UUID's bytes sort as its lower-case text does, so listings ordered by
//! id stay in the same order; the one difference is among ids created in
//! the same millisecond where some are UUIDs and some are not: SQLite
//! sorts text before bytes.
//!
//! The numbers are part of the file format: a code, once given, keeps its
//! meaning. New kinds are stored as text until they get a code.

use rusqlite::types::{Value, ValueRef};
use toolgate_core::audit::{from_hex, hex};
use toolgate_core::run::ApprovalStatus;

/// Event kinds by code: the most frequent first, since SQLite keeps 0 and
/// 1 in no bytes at all; kinds added later take the next codes (rows
/// written before a kind had a code keep its text, which reads the same,
/// and no query picks entries by kind).
const KINDS: [&str; 17] = [
    "model_turn",
    "gate_verdict",
    "run_started",
    "approval_requested",
    "decision_recorded",
    "approval_expired",
    "tool_started",
    "tool_finished",
    "tool_in_doubt",
    "in_doubt_resolved",
    "run_completed",
    "run_failed",
    "grant_revoked",
    "call_requested",
    "call_withdrawn",
    "token_created",
    "token_revoked",
];

/// Approval statuses by code.
const APPROVAL_STATUSES: [ApprovalStatus; 6] = [
    ApprovalStatus::Pending,
    ApprovalStatus::Approved,
    ApprovalStatus::Edited,
    ApprovalStatus::Rejected,
    ApprovalStatus::Expired,
    ApprovalStatus::Cancelled,
];

/// Run statuses by code (see `toolgate_core::run::RunStatus::as_str`).
const RUN_STATUSES: [&str; 4] = ["running", "waiting", "completed", "failed"];

/// A run's status as stored: its code, or its text if it has none.
pub(crate) fn run_status_value(status: &str) -> Value {
    match RUN_STATUSES.iter().position(|known| *known == status) {
        Some(code) => Value::Integer(code as i64),
        None => Value::Text(status.to_owned()),
    }
}

/// A stored run status as text; `None` for a value toolgate does not
/// write.
pub(crate) fn run_status_text(stored: ValueRef<'_>) -> Option<String> {
    match stored {
        ValueRef::Integer(code) => usize::try_from(code)
            .ok()
            .and_then(|code| RUN_STATUSES.get(code))
            .map(|status| (*status).to_owned()),
        ValueRef::Text(text) => std::str::from_utf8(text).ok().map(str::to_owned),
        _ => None,
    }
}

/// An event kind as stored: its code, or its text if it has none.
pub(crate) fn kind_value(kind: &str) -> Value {
    match KINDS.iter().position(|known| *known == kind) {
        Some(code) => Value::Integer(code as i64),
        None => Value::Text(kind.to_owned()),
    }
}

/// A stored event kind as text; `None` for a value toolgate does not write.
pub(crate) fn kind_text(stored: ValueRef<'_>) -> Option<String> {
    match stored {
        ValueRef::Integer(code) => usize::try_from(code)
            .ok()
            .and_then(|code| KINDS.get(code))
            .map(|kind| (*kind).to_owned()),
        ValueRef::Text(text) => std::str::from_utf8(text).ok().map(str::to_owned),
        _ => None,
    }
}

/// An approval status as stored.
pub(crate) fn status_code(status: ApprovalStatus) -> i64 {
    APPROVAL_STATUSES
        .iter()
        .position(|known| *known == status)
        .expect("every status has a code") as i64
}

/// A stored approval status; `None` for a code toolgate does not write.
pub(crate) fn status(code: i64) -> Option<ApprovalStatus> {
    usize::try_from(code)
        .ok()
        .and_then(|code| APPROVAL_STATUSES.get(code))
        .copied()
}

/// A fingerprint as stored: its 32 bytes when it is lower-case hex of 32
/// bytes (as toolgate makes them), its text otherwise.
pub(crate) fn fingerprint_value(text: &str) -> Value {
    match from_hex::<32>(text) {
        Some(bytes) if hex(&bytes) == text => Value::Blob(bytes.to_vec()),
        _ => Value::Text(text.to_owned()),
    }
}

/// A stored fingerprint as text; `None` for a value toolgate does not
/// write.
pub(crate) fn fingerprint_text(stored: ValueRef<'_>) -> Option<String> {
    match stored {
        ValueRef::Blob(bytes) if bytes.len() == 32 => Some(hex(bytes)),
        ValueRef::Text(text) => std::str::from_utf8(text).ok().map(str::to_owned),
        _ => None,
    }
}

/// A run's or approval's id as stored: its 16 bytes when it is a UUID in
/// lower-case text with hyphens, its text otherwise.
pub(crate) fn id_value(id: &str) -> Value {
    match uuid_bytes(id) {
        Some(bytes) => Value::Blob(bytes.to_vec()),
        None => Value::Text(id.to_owned()),
    }
}

fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    // Every append looks up its run by id a few times on the writer
    // thread: one pass over the text, with no allocation (callgrind had
    // collecting and re-hexing the digits at 4% of the writer).
    let text = id.as_bytes();
    if text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut nibbles = 0;
    for (at, &c) in text.iter().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        // Lower-case only: upper-case ids stay text, so they read back as
        // they were written.
        let nibble = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bytes[nibbles / 2] |= nibble << if nibbles % 2 == 0 { 4 } else { 0 };
        nibbles += 1;
    }
    Some(bytes)
}

/// A stored id as text; `None` for a value toolgate does not write.
pub(crate) fn id_text(stored: ValueRef<'_>) -> Option<String> {
    match stored {
        ValueRef::Blob(bytes) if bytes.len() == 16 => {
            let digits = hex(bytes);
            Some(format!(
                "{}-{}-{}-{}-{}",
                &digits[..8],
                &digits[8..12],
                &digits[12..16],
                &digits[16..20],
                &digits[20..]
            ))
        }
        ValueRef::Text(text) => std::str::from_utf8(text).ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for kind in KINDS.iter().copied().chain(["from_the_future"]) {
            let value = kind_value(kind);
            assert_eq!(kind_text((&value).into()).as_deref(), Some(kind));
        }
        assert!(matches!(kind_value("run_started"), Value::Integer(2)));
        assert!(matches!(kind_value("call_requested"), Value::Integer(13)));
        // A kind stored as text before it had a code reads the same.
        assert_eq!(
            kind_text(ValueRef::Text(b"call_requested")).as_deref(),
            Some("call_requested")
        );
        for status in RUN_STATUSES.iter().copied().chain(["paused", ""]) {
            let value = run_status_value(status);
            assert_eq!(run_status_text((&value).into()).as_deref(), Some(status));
        }
        assert!(matches!(run_status_value("waiting"), Value::Integer(1)));
        for status in APPROVAL_STATUSES {
            assert_eq!(super::status(status_code(status)), Some(status));
        }
        assert_eq!(status_code(ApprovalStatus::Pending), 0);
        assert_eq!(super::status(99), None);
        let fingerprint = "b40078122873592076c82cd0b668ac188742d64ec40393cbbcc4b0daa0a17afc";
        for text in [fingerprint, &fingerprint.to_uppercase(), "short"] {
            let value = fingerprint_value(text);
            assert_eq!(fingerprint_text((&value).into()).as_deref(), Some(text));
        }
        assert!(matches!(fingerprint_value(fingerprint), Value::Blob(_)));
        let uuid = "01a20527-7965-7258-9a69-e90f45d2dd1a";
        for id in [
            uuid,
            &uuid.to_uppercase(),
            "01a205277965-7258-9a69-e90f45d2dd1a-",
            "run-1",
            "",
        ] {
            let value = id_value(id);
            assert_eq!(id_text((&value).into()).as_deref(), Some(id));
        }
        assert!(matches!(id_value(uuid), Value::Blob(ref b) if b.len() == 16));
        assert!(matches!(id_value(&uuid.to_uppercase()), Value::Text(_)));
    }
}

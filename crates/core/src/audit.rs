//! The audit log: every event, chained by hash to the one before it, with
//! people's decisions signed.
//!
//! Entry `n`'s hash covers its content and entry `n - 1`'s hash, so
//! changing, deleting or reordering any stored entry breaks every hash from
//! there on; [`Verifier`] names the first entry that does not check out.
//! Decisions (and the other acts of people: in-doubt resolutions, grant
//! revocations) are also signed with the store's Ed25519 key, so an entry
//! cannot be forged without that key even by someone who recomputes the
//! chain.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The kinds of entry that record an act of a person, and so are signed.
pub const SIGNED_KINDS: [&str; 5] = [
    "decision_recorded",
    "in_doubt_resolved",
    "grant_revoked",
    "token_created",
    "token_revoked",
];

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the log, from 1, with no gaps.
    pub seq: u64,
    /// When it was appended (Unix milliseconds).
    pub at: i64,
    /// The run it belongs to; `None` for entries about grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The event's `type` (`decision_recorded`, …).
    pub kind: String,
    /// The event, as JSON text, exactly as stored.
    pub body: String,
    /// SHA-256 over the previous entry's hash and this entry's content.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
    /// The store key's signature of `hash`, for signed kinds.
    #[serde(
        default,
        with = "hex_signature",
        skip_serializing_if = "Option::is_none"
    )]
    pub signature: Option<[u8; 64]>,
}

/// The hash of an entry with this content after an entry with hash `prev`
/// (all zeros for the first entry).
pub fn entry_hash(
    prev: &[u8; 32],
    seq: u64,
    at: i64,
    run_id: Option<&str>,
    kind: &str,
    body: &str,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"toolgate-audit-v1\0");
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(at.to_be_bytes());
    for part in [run_id.unwrap_or(""), kind, body] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    // A run id of "" and no run id must not hash alike.
    hasher.update([u8::from(run_id.is_some())]);
    hasher.finalize().into()
}

/// True when entries of this kind must be signed.
pub fn is_signed_kind(kind: &str) -> bool {
    SIGNED_KINDS.contains(&kind)
}

/// The store's signing key, from its 32 secret bytes.
#[derive(Clone)]
pub struct Signer32(SigningKey);

impl fmt::Debug for Signer32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer32")
            .field("public_key", &hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl Signer32 {
    /// A signer from the secret key's bytes.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Signer32(SigningKey::from_bytes(secret))
    }

    /// The public key that verifies this signer's signatures.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs an entry's hash.
    pub fn sign(&self, hash: &[u8; 32]) -> [u8; 64] {
        self.0.sign(hash).to_bytes()
    }
}

/// The first entry that does not check out, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq} {problem}")]
pub struct Broken {
    /// The entry's position (the one expected, where one is missing).
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// What a verification covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Verified {
    /// How many entries were checked.
    pub entries: u64,
    /// How many signatures were checked.
    pub signatures: u64,
}

/// Checks a log entry by entry, oldest first, without holding it all in
/// memory.
#[derive(Debug)]
pub struct Verifier {
    key: Result<VerifyingKey, String>,
    prev: [u8; 32],
    next_seq: u64,
    verified: Verified,
}

impl Verifier {
    /// A verifier for a log signed with `public_key`.
    pub fn new(public_key: &[u8; 32]) -> Self {
        Verifier {
            key: VerifyingKey::from_bytes(public_key).map_err(|error| error.to_string()),
            prev: [0; 32],
            next_seq: 1,
            verified: Verified::default(),
        }
    }

    /// Checks the next entry.
    ///
    /// # Errors
    ///
    /// The entry is not the next one (one was deleted or moved), its hash
    /// does not match its content or its predecessor (it or an earlier one
    /// was altered), or a signature is missing or wrong.
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), Broken> {
        let broken = |problem: String| Broken {
            seq: entry.seq,
            problem,
        };
        if entry.seq != self.next_seq {
            return Err(Broken {
                seq: self.next_seq,
                problem: if entry.seq > self.next_seq {
                    format!(
                        "is missing: the log goes on with entry {} (entries were deleted)",
                        entry.seq
                    )
                } else {
                    format!("is out of order: entry {} comes after it", entry.seq)
                },
            });
        }
        let expected = entry_hash(
            &self.prev,
            entry.seq,
            entry.at,
            entry.run_id.as_deref(),
            &entry.kind,
            &entry.body,
        );
        if expected != entry.hash {
            return Err(broken(
                "does not match its hash: it, or the order of the entries before it, was changed"
                    .to_owned(),
            ));
        }
        match (&entry.signature, is_signed_kind(&entry.kind)) {
            (None, true) => {
                return Err(broken(format!(
                    "records a {} but carries no signature",
                    entry.kind
                )));
            }
            (Some(signature), _) => {
                let key = self.key.as_ref().map_err(|error| {
                    broken(format!(
                        "cannot be checked: the public key is invalid ({error})"
                    ))
                })?;
                key.verify(&entry.hash, &Signature::from_bytes(signature))
                    .map_err(|_| {
                        broken("has a signature that the store's key did not make".to_owned())
                    })?;
                self.verified.signatures += 1;
            }
            (None, false) => {}
        }
        self.prev = entry.hash;
        self.next_seq += 1;
        self.verified.entries += 1;
        Ok(())
    }

    /// What was checked so far.
    pub fn verified(&self) -> Verified {
        self.verified
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    // On the store's hot path (ids, fingerprints, hashes): a table, not
    // `format!` per byte, which callgrind showed at a tenth of a cycle.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Bytes from hex, if it is hex of exactly `N` bytes.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

mod hex_signature {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<[u8; 64]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_str(&super::hex(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 64]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                super::from_hex(&text)
                    .ok_or_else(|| serde::de::Error::custom("expected 128 hex digits"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(signer: &Signer32, kinds: &[&str]) -> Vec<AuditEntry> {
        let mut prev = [0; 32];
        let mut entries = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let seq = i as u64 + 1;
            let body = format!(r#"{{"type":"{kind}","n":{seq}}}"#);
            let hash = entry_hash(&prev, seq, 1000 + seq as i64, Some("run-1"), kind, &body);
            entries.push(AuditEntry {
                seq,
                at: 1000 + seq as i64,
                run_id: Some("run-1".into()),
                kind: (*kind).to_owned(),
                body,
                hash,
                signature: is_signed_kind(kind).then(|| signer.sign(&hash)),
            });
            prev = hash;
        }
        entries
    }

    fn verify(entries: &[AuditEntry], key: &[u8; 32]) -> Result<Verified, Broken> {
        let mut verifier = Verifier::new(key);
        for entry in entries {
            verifier.check(entry)?;
        }
        Ok(verifier.verified())
    }

    fn setup() -> (Signer32, Vec<AuditEntry>) {
        let signer = Signer32::from_secret(&[7; 32]);
        let entries = log(
            &signer,
            &[
                "run_started",
                "model_turn",
                "approval_requested",
                "decision_recorded",
                "tool_started",
                "tool_finished",
            ],
        );
        (signer, entries)
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (signer, entries) = setup();
        assert_eq!(
            verify(&entries, &signer.public_key()),
            Ok(Verified {
                entries: 6,
                signatures: 1
            })
        );
    }

    #[test]
    fn a_changed_decision_is_named() {
        let (signer, mut entries) = setup();
        entries[3].body = entries[3].body.replace("\"n\":4", "\"n\":5");
        let broken = verify(&entries, &signer.public_key()).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert_eq!(
            broken.to_string(),
            "audit entry 4 does not match its hash: it, or the order of the entries before it, was changed"
        );
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let (signer, mut entries) = setup();
        entries.remove(2);
        let broken = verify(&entries, &signer.public_key()).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.problem.starts_with("is missing"), "{broken}");
    }

    #[test]
    fn reordered_entries_are_named_even_when_renumbered() {
        let (signer, mut entries) = setup();
        entries.swap(1, 2);
        assert_eq!(verify(&entries, &signer.public_key()).unwrap_err().seq, 2);
        // Renumbered to hide the swap: the hashes still give it away.
        entries[1].seq = 2;
        entries[2].seq = 3;
        assert_eq!(verify(&entries, &signer.public_key()).unwrap_err().seq, 2);
    }

    #[test]
    fn a_recomputed_chain_without_the_key_is_caught_by_the_signature() {
        let (signer, entries) = setup();
        let forger = Signer32::from_secret(&[9; 32]);
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        let forged = log(&forger, &kinds);
        let broken = verify(&forged, &signer.public_key()).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert_eq!(
            broken.problem,
            "has a signature that the store's key did not make"
        );
        let mut unsigned = entries.clone();
        unsigned[3].signature = None;
        assert_eq!(
            verify(&unsigned, &signer.public_key()).unwrap_err().problem,
            "records a decision_recorded but carries no signature"
        );
    }

    #[test]
    fn entries_round_trip_through_json_with_hex() {
        let (_, entries) = setup();
        let json = serde_json::to_string(&entries[3]).unwrap();
        assert!(json.contains(&format!("\"hash\":\"{}\"", hex(&entries[3].hash))));
        let back: AuditEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, entries[3]);
        assert_eq!(from_hex::<2>("0aff"), Some([10, 255]));
        assert_eq!(hex(&[0, 10, 255, 0x9c]), "000aff9c");
        assert_eq!(from_hex::<2>("0af"), None);
        assert_eq!(from_hex::<2>("zzzz"), None);
    }
}

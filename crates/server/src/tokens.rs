//! API tokens: made here, kept in the store only as the SHA-256 of their
//! secret, shown to their owner once.

use sha2::{Digest, Sha256};
use toolgate_core::Principal;
use toolgate_core::audit::hex;
use toolgate_core::store::TokenRecord;

/// What every token's secret starts with, so that one found in a log or a
/// repository is recognisable.
pub const TOKEN_PREFIX: &str = "tg_";

/// A new token: the record to store, and its secret, to give its owner.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// What the store keeps.
    pub record: TokenRecord,
    /// The secret: `tg_` and 64 hex digits. It is not kept anywhere.
    pub secret: String,
}

/// Makes a token for `principal`, made by `created_by` at `now`.
///
/// # Errors
///
/// A principal or group name toolgate does not accept.
pub fn issue_token(
    principal: Principal,
    created_by: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<IssuedToken, String> {
    check_name("principal name", &principal.name)?;
    for group in &principal.groups {
        check_name("group name", group)?;
    }
    // `rand::random` draws from the thread's CSPRNG, seeded by the
    // operating system.
    let secret = format!("{TOKEN_PREFIX}{}", hex(&rand::random::<[u8; 32]>()));
    let id = format!("tok_{}", hex(&rand::random::<[u8; 8]>()));
    Ok(IssuedToken {
        record: TokenRecord {
            id,
            principal,
            hash: secret_hash(&secret),
            created_at: now,
            created_by: created_by.to_owned(),
            expires_at,
            revoked_at: None,
        },
        secret,
    })
}

/// The SHA-256 a token's secret is stored and looked up as.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The web inbox's CSRF token for a session: derived from the secret, so
/// only someone who holds the secret (which the session cookie hides from
/// scripts) can know it.
pub(crate) fn csrf_token(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"toolgate-csrf-v1\0");
    hasher.update(secret.as_bytes());
    hex(&hasher.finalize())
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let fine = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "the {what} {name:?} is not one toolgate accepts: use 1 to 64 letters, digits and `. _ @ -`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::Role;

    #[test]
    fn tokens_are_random_and_stored_as_their_hash() {
        let alice = Principal::new("alice", Role::Approver).groups(["ops"]);
        let one = issue_token(alice.clone(), "admin", None, 5).unwrap();
        let two = issue_token(alice, "admin", None, 5).unwrap();
        assert_ne!(one.secret, two.secret);
        assert_ne!(one.record.id, two.record.id);
        assert!(one.secret.starts_with("tg_") && one.secret.len() == 67);
        assert_eq!(one.record.hash, secret_hash(&one.secret));
        assert!(!format!("{:?}", one.record).contains(&one.secret));
        assert_ne!(csrf_token(&one.secret), csrf_token(&two.secret));
    }

    #[test]
    fn names_are_checked() {
        let error = issue_token(Principal::new("al ice", Role::Agent), "x", None, 0).unwrap_err();
        assert!(error.contains("\"al ice\""), "{error}");
        let error = issue_token(
            Principal::new("alice", Role::Agent).groups(["<ops>"]),
            "x",
            None,
            0,
        )
        .unwrap_err();
        assert!(error.contains("group name"), "{error}");
        assert!(issue_token(Principal::new("", Role::Agent), "x", None, 0).is_err());
    }
}

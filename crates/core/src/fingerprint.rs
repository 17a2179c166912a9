//! Fingerprints bind a decision to the exact call it was made for.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The SHA-256 of the canonical JSON (RFC 8785) of a tool call's name, its
/// arguments and the tool's argument schema, as lower-case hex.
///
/// Two calls have the same fingerprint exactly when they call the same tool,
/// with the same schema, with equal arguments (key order and number spelling
/// do not matter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of a call of `name` with `args` against `schema`.
    pub fn of_call(name: &str, args: &Map<String, Value>, schema: &Value) -> Self {
        let document = json!({"name": name, "args": args, "schema": schema});
        // Canonicalisation only fails for numbers JSON cannot represent,
        // which a `serde_json::Value` cannot hold.
        let canonical = serde_json_canonicalizer::to_vec(&document)
            .expect("a serde_json::Value always canonicalises");
        let digest = Sha256::digest(&canonical);
        Fingerprint(crate::audit::hex(&digest))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn key_order_and_number_spelling_do_not_matter() {
        let schema = json!({"type": "object"});
        let a = Fingerprint::of_call("send_email", &args(json!({"a": 1, "b": 2.0})), &schema);
        let b = Fingerprint::of_call(
            "send_email",
            &args(serde_json::from_str(r#"{"b": 2, "a": 1.0}"#).unwrap()),
            &schema,
        );
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn name_args_and_schema_all_count() {
        let schema = json!({"type": "object"});
        let base = Fingerprint::of_call("t", &args(json!({"x": 1})), &schema);
        assert_ne!(
            base,
            Fingerprint::of_call("u", &args(json!({"x": 1})), &schema)
        );
        assert_ne!(
            base,
            Fingerprint::of_call("t", &args(json!({"x": 2})), &schema)
        );
        assert_ne!(
            base,
            Fingerprint::of_call(
                "t",
                &args(json!({"x": 1})),
                &json!({"type": "object", "required": ["x"]})
            )
        );
    }

    #[test]
    fn known_value() {
        // sha256 of {"args":{},"name":"t","schema":{}}
        let fingerprint = Fingerprint::of_call("t", &Map::new(), &json!({}));
        let expected = Sha256::digest(br#"{"args":{},"name":"t","schema":{}}"#);
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fingerprint.to_string(), expected);
    }
}

//! Fingerprints bind a decision to the exact call it was made for.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::recent::{Recent, with_recent};

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
        // The canonical JSON of {"name", "args", "schema"} is its members'
        // canonical JSON in key order (`args` < `name` < `schema`), so it is
        // hashed piece by piece, without building the document. A tool's
        // schema is the same call after call; its canonical JSON, by far
        // the largest piece, is kept (callgrind had this function at 4% of
        // a cycle).
        let mut hasher = Sha256::new();
        hasher.update(b"{\"args\":");
        hasher.update(canonical(args));
        hasher.update(b",\"name\":");
        hasher.update(canonical(&name));
        hasher.update(b",\"schema\":");
        with_canonical_schema(schema, |canonical| hasher.update(canonical));
        hasher.update(b"}");
        Fingerprint(crate::audit::hex(&hasher.finalize()))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8785 JSON of `value`.
fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Canonicalisation only fails for numbers JSON cannot represent, which
    // neither a `serde_json::Value` nor a string can hold.
    serde_json_canonicalizer::to_vec(value).expect("JSON values always canonicalise")
}

/// How many schemas' canonical JSON each thread keeps.
const KEPT_SCHEMAS: usize = 8;

thread_local! {
    /// The schemas fingerprinted last on this thread, with their canonical
    /// JSON.
    static SCHEMAS: Recent<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the canonical JSON of `schema`, made once for the
/// schemas seen last.
fn with_canonical_schema<R>(schema: &Value, f: impl FnOnce(&[u8]) -> R) -> R {
    with_recent(&SCHEMAS, KEPT_SCHEMAS, schema, canonical, |json| f(json))
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    /// The fingerprint as the canonical JSON of the whole document.
    fn whole(name: &str, args: &Map<String, Value>, schema: &Value) -> Fingerprint {
        let document = json!({"name": name, "args": args, "schema": schema});
        let canonical = serde_json_canonicalizer::to_vec(&document).unwrap();
        Fingerprint(crate::audit::hex(&Sha256::digest(&canonical)))
    }

    #[test]
    fn pieces_hash_as_the_whole_document() {
        let schemas = [
            json!({}),
            json!({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"enum": [1.0, "é\u{1f600}", null]}}}),
            json!({"required": ["x"], "type": "object"}),
        ];
        let calls = [
            ("t", json!({})),
            (
                "send_email",
                json!({"to": "bob@example.com", "n": 1e21, "z": [2.50, -0.0, {"y": true}]}),
            ),
            (
                "名前\u{7}\"",
                json!({"\u{e9}": "\u{1}\u{2028}", "e\u{301}": 3}),
            ),
        ];
        // More schemas than are kept, several times, so that the kept ones
        // are reused, moved and dropped.
        for round in 0..3 {
            for schema in schemas
                .iter()
                .chain(std::iter::repeat_n(&schemas[0], round))
            {
                for index in 0..KEPT_SCHEMAS + 2 {
                    let schema = if index < 2 {
                        schema.clone()
                    } else {
                        json!({"type": "object", "title": format!("schema {index}")})
                    };
                    for (name, args) in &calls {
                        let args = args.as_object().unwrap();
                        assert_eq!(
                            Fingerprint::of_call(name, args, &schema),
                            whole(name, args, &schema),
                            "{name} {args:?} {schema}"
                        );
                    }
                }
            }
        }
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

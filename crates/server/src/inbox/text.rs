//! Text from agents made safe to read: characters that hide or reorder
//! text shown as what they are, JSON pretty-printed, times in words.
//!
//! Escaping HTML is the templates' job (maud escapes every value); this is
//! about what a person sees. An argument like `"invoice\u{202E}txt.exe"`
//! would otherwise display reversed, and invisible "tag" characters can
//! smuggle instructions past a reader, so they are never shown raw.

use maud::{Markup, html};
use serde_json::{Map, Value};

/// Characters that change how the text around them reads without being
/// seen themselves: controls, zero-width characters, bidirectional
/// overrides and isolates, and the invisible tag characters.
pub(crate) fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    ) || (c.is_control() && c != '\n' && c != '\t')
}

/// Whether `text` has any character [`is_hidden`] hides.
pub(crate) fn has_hidden(text: &str) -> bool {
    text.chars().any(is_hidden)
}

/// Whether any string in `value` (keys included) has a hidden character.
pub(crate) fn value_has_hidden(value: &Value) -> bool {
    match value {
        Value::String(text) => has_hidden(text),
        Value::Array(items) => items.iter().any(value_has_hidden),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| has_hidden(k) || value_has_hidden(v)),
        _ => false,
    }
}

/// Replaces hidden characters in JSON text with `\uXXXX` escapes. They
/// can only occur inside strings, where the escape means the same
/// character: the text stays valid JSON for the same value.
fn escape_hidden_in_json(json: String) -> String {
    if !has_hidden(&json) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `value` indented, two spaces a level, hidden characters escaped.
pub(crate) fn pretty_json(value: &Value) -> String {
    escape_hidden_in_json(serde_json::to_string_pretty(value).unwrap_or_default())
}

/// `value` on one line, hidden characters escaped.
pub(crate) fn compact_json(value: &Value) -> String {
    escape_hidden_in_json(serde_json::to_string(value).unwrap_or_default())
}

/// `args` as pretty JSON: what the edit box starts with.
pub(crate) fn pretty_args(args: &Map<String, Value>) -> String {
    escape_hidden_in_json(serde_json::to_string_pretty(args).unwrap_or_default())
}

/// The most characters a one-line summary of arguments has.
const SUMMARY_CHARS: usize = 160;

/// `args` on one line, `key: value, …`, cut at [`SUMMARY_CHARS`].
pub(crate) fn summary(args: &Map<String, Value>) -> String {
    if args.is_empty() {
        return "(no arguments)".to_owned();
    }
    let mut line = String::new();
    for (key, value) in args {
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(key);
        line.push_str(": ");
        line.push_str(&serde_json::to_string(value).unwrap_or_default());
        if line.chars().count() > SUMMARY_CHARS {
            break;
        }
    }
    let line = escape_hidden_in_json(line);
    if line.chars().count() > SUMMARY_CHARS {
        let cut: String = line.chars().take(SUMMARY_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// Plain text with each hidden character shown as its code point, in a
/// marked span, so a reader sees that it is there and what it is.
pub(crate) fn visible(text: &str) -> Markup {
    if !has_hidden(text) {
        return html! { (text) };
    }
    let mut parts: Vec<Result<&str, char>> = Vec::new();
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if is_hidden(c) {
            if start < at {
                parts.push(Ok(&text[start..at]));
            }
            parts.push(Err(c));
            start = at + c.len_utf8();
        }
    }
    if start < text.len() {
        parts.push(Ok(&text[start..]));
    }
    html! {
        @for part in parts {
            @match part {
                Ok(text) => (text),
                Err(c) => span.hidden-char title="a hidden character" {
                    (format!("U+{:04X}", u32::from(c)))
                },
            }
        }
    }
}

/// How long ago `then` was at `now` (both Unix milliseconds), in words.
pub(crate) fn age(now: i64, then: i64) -> String {
    let seconds = now.saturating_sub(then) / 1000;
    match seconds {
        i64::MIN..=9 => "just now".to_owned(),
        10..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => format!("{} d ago", seconds / 86_400),
    }
}

/// How long until `then` at `now`, in words.
pub(crate) fn due(now: i64, then: i64) -> String {
    let seconds = then.saturating_sub(now) / 1000;
    match seconds {
        i64::MIN..=0 => "now".to_owned(),
        1..=59 => format!("in {seconds} s"),
        60..=3599 => format!("in {} min", seconds / 60),
        3600..=86_399 => format!("in {} h", seconds / 3600),
        _ => format!("in {} d", seconds / 86_400),
    }
}

/// An RFC 3339 time as people read it: `2026-11-22 20:30:00 UTC`.
pub(crate) fn readable_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(time) => format!("{} UTC", time.replacen('T', " ", 1)),
        None => rfc3339.to_owned(),
    }
}

/// `text` percent-encoded for a query string.
pub(crate) fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hidden_characters_are_escaped_and_the_json_means_the_same() {
        let value =
            json!({"file": "invoice\u{202E}txt.exe", "tag": "a\u{E0041}b", "zw": "x\u{200B}y"});
        let text = pretty_json(&value);
        assert!(text.contains("invoice\\u202etxt.exe"), "{text}");
        assert!(text.contains("a\\udb40\\udc41b"), "{text}");
        assert!(text.contains("x\\u200by"), "{text}");
        assert!(!has_hidden(&text));
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        assert!(value_has_hidden(&value));
        assert!(!value_has_hidden(&json!({"ok": ["plain", 1]})));
    }

    #[test]
    fn visible_marks_each_hidden_character() {
        let markup = visible("a\u{202E}b<c>").into_string();
        assert_eq!(
            markup,
            "a<span class=\"hidden-char\" title=\"a hidden character\">U+202E</span>b&lt;c&gt;"
        );
        assert_eq!(
            visible("plain & simple").into_string(),
            "plain &amp; simple"
        );
    }

    #[test]
    fn summaries_are_one_short_line() {
        let args = json!({"recipient": "sally@gmail.com", "n": 2})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(summary(&args), r#"recipient: "sally@gmail.com", n: 2"#);
        let long = json!({"x": "y".repeat(10_000)})
            .as_object()
            .unwrap()
            .clone();
        let line = summary(&long);
        assert_eq!(line.chars().count(), SUMMARY_CHARS);
        assert!(line.ends_with('…'));
        assert_eq!(summary(&Map::new()), "(no arguments)");
        let newline = json!({"m": "a\nb"}).as_object().unwrap().clone();
        assert_eq!(summary(&newline), r#"m: "a\nb""#);
    }

    #[test]
    fn ages_and_times_read_as_words() {
        assert_eq!(age(100_000, 95_000), "just now");
        assert_eq!(age(100_000, 40_000), "1 min ago");
        assert_eq!(age(100_000, 70_000), "30 s ago");
        assert_eq!(age(3_600_000 * 5, 0), "5 h ago");
        assert_eq!(due(0, 90_000), "in 1 min");
        assert_eq!(
            readable_time("2026-11-22T20:30:00Z"),
            "2026-11-22 20:30:00 UTC"
        );
        assert_eq!(query_escape("/inbox/a b?c=d&e"), "/inbox/a%20b%3Fc%3Dd%26e");
    }
}

//! JSON written exactly as Python's `json.dumps` writes it.
//!
//! The seed prints tool calls with `json.dumps(tool_call, indent=2)` and its
//! results with `json.dumps(...)`. Python's defaults differ from
//! `serde_json`'s: `", "` and `": "` separators, every character outside
//! printable ASCII escaped as `\uXXXX`, and floats written as `repr` writes
//! them (`1e+16`, `1e-05`). Keys keep their insertion order.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// `json.dumps(value, indent=2)`.
pub fn to_string_indented<T: Serialize + ?Sized>(value: &T) -> String {
    write_with(value, Python::Indented(PrettyFormatter::with_indent(b"  ")))
}

/// `json.dumps(value)`: one line, `", "` and `": "` separators.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    write_with(value, Python::Compact)
}

fn write_with<T: Serialize + ?Sized>(value: &T, formatter: Python) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("serialising into memory only fails for maps with non-string keys");
    String::from_utf8(out).expect("the formatter writes ASCII only")
}

enum Python {
    Compact,
    Indented(PrettyFormatter<'static>),
}

impl Formatter for Python {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(writer, f64::from(value))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already escaped quotes, backslashes and control
        // characters; Python also escapes DEL and everything past ASCII.
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            if (' '..='~').contains(&ch) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..index])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(b"["),
            Python::Indented(pretty) => pretty.begin_array(writer),
        }
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(b"]"),
            Python::Indented(pretty) => pretty.end_array(writer),
        }
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(if first { b"" } else { b", " }),
            Python::Indented(pretty) => pretty.begin_array_value(writer, first),
        }
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => Ok(()),
            Python::Indented(pretty) => pretty.end_array_value(writer),
        }
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(b"{"),
            Python::Indented(pretty) => pretty.begin_object(writer),
        }
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(b"}"),
            Python::Indented(pretty) => pretty.end_object(writer),
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match self {
            Python::Compact => writer.write_all(if first { b"" } else { b", " }),
            Python::Indented(pretty) => pretty.begin_object_key(writer, first),
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        match self {
            Python::Compact => Ok(()),
            Python::Indented(pretty) => pretty.end_object_value(writer),
        }
    }
}

/// Python's `repr(float)`: the shortest digits that read back to the same
/// float, in positional notation when the decimal exponent is in -4..16 and
/// in scientific notation (`1e+16`, `1.5e-07`) otherwise.
fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("the exponent is an integer");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    // `decimal_point` is where the point goes within `digits`.
    let decimal_point = exponent + 1;
    let body = if !(-3..=16).contains(&decimal_point) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exponent_sign}{:02}", exponent.abs())
    } else if decimal_point <= 0 {
        format!(
            "0.{}{digits}",
            "0".repeat(decimal_point.unsigned_abs() as usize)
        )
    } else {
        let point = decimal_point as usize;
        if point >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Every expected string below is what CPython 3.11's `json.dumps` prints
    // for the same value.

    #[test]
    fn indented_matches_python() {
        let value = json!({"name": "send_email", "args": {"recipient": "sally@gmail.com", "message": "What's up homie"}, "id": "toolu_014XccHFzBiVcc9GV1harV9U"});
        assert_eq!(
            to_string_indented(&value),
            "{\n  \"name\": \"send_email\",\n  \"args\": {\n    \"recipient\": \"sally@gmail.com\",\n    \"message\": \"What's up homie\"\n  },\n  \"id\": \"toolu_014XccHFzBiVcc9GV1harV9U\"\n}"
        );
        assert_eq!(
            to_string_indented(&json!({"a": {}, "b": [], "c": [1, [2]]})),
            "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": [\n    1,\n    [\n      2\n    ]\n  ]\n}"
        );
    }

    #[test]
    fn compact_matches_python() {
        let value = json!([{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "output": 10}]);
        assert_eq!(
            to_string(&value),
            r#"[{"name": "count_emails", "args": {"last_n_days": 5}, "id": "toolu_01WbD8XeMoQaRFtsZezfsHor", "output": 10}]"#
        );
        assert_eq!(
            to_string(&json!({"a": [], "b": {}, "c": null, "d": true})),
            r#"{"a": [], "b": {}, "c": null, "d": true}"#
        );
    }

    #[test]
    fn strings_escape_like_python() {
        assert_eq!(to_string(&json!("é")), r#""\u00e9""#);
        assert_eq!(to_string(&json!("😀")), r#""\ud83d\ude00""#);
        assert_eq!(to_string(&json!("a\u{7f}b")), r#""a\u007fb""#);
        assert_eq!(
            to_string(&json!("tab\tnl\ncr\r\u{1}\"\\/")),
            r#""tab\tnl\ncr\r\u0001\"\\/""#
        );
        assert_eq!(to_string(&json!("<script>")), r#""<script>""#);
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.125, "123456789.125"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e300, "1.2345e+300"),
            (-3.75, "-3.75"),
            (5e-324, "5e-324"),
        ];
        for (value, python) in cases {
            assert_eq!(float_repr(value), python, "repr({value:?})");
        }
        assert_eq!(to_string(&json!([1.0, 10, -1e16])), "[1.0, 10, -1e+16]");
    }
}

//! RFC 8785 (JSON Canonicalization Scheme) and the `args_sha256` of an
//! approval: the lowercase hex SHA-256 of the canonical JSON of a tool
//! call's arguments (contract section 9). The dashboard computes the same
//! hash of what it displayed (`static/canonical.js`), so an approval names
//! exactly the arguments a human saw.
//!
//! Canonical form: no whitespace; object members sorted by their names as
//! UTF-16 code units; strings escaped as ECMAScript's `JSON.stringify` does
//! (only `"`, `\` and control characters; `\b \t \n \f \r` by name, others
//! as `\u00xx`); numbers as IEEE 754 doubles written the way ECMAScript's
//! `Number.prototype.toString` writes them.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical JSON text of `value`.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// The lowercase hex SHA-256 of `canonical(value)`.
pub fn sha256_hex(value: &Value) -> String {
    let digest: [u8; 32] = Sha256::digest(canonical(value).as_bytes()).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A double as ECMAScript's `Number.prototype.toString` writes it: the
/// shortest digits that read back as the same double, in plain notation for
/// exponents from -6 to 20 and in exponent notation otherwise. JSON has no
/// NaN or infinity; they cannot come from parsed JSON and are written as
/// `null`, as `JSON.stringify` does.
fn number(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde±x`.
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // In ECMAScript's terms: the value is 0.DIGITS × 10^n.
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign_e = if e >= 0 { "+" } else { "-" };
        let mantissa = if k == 1 {
            digits.clone()
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        format!("{mantissa}e{sign_e}{}", e.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_are_sorted_by_utf16_and_compact() {
        // RFC 8785 section 3.2.3's example of sorting: "\u20ac" (€) sorts
        // before "\ud83d\ude00" (😀) by UTF-16 code units, though not by
        // code points.
        let value =
            json!({"\u{1F600}": 1, "\u{20AC}": 2, "b": [true, null], "a": {"z": "", "y": 1.5}});
        assert_eq!(
            canonical(&value),
            "{\"a\":{\"y\":1.5,\"z\":\"\"},\"b\":[true,null],\"\u{20AC}\":2,\"\u{1F600}\":1}"
        );
    }

    #[test]
    fn numbers_are_written_as_ecmascript_does() {
        // From RFC 8785 appendix B and ECMAScript's rules.
        let cases = [
            (json!(0), "0"),
            (json!(-0.0), "0"),
            (json!(1), "1"),
            (json!(-1), "-1"),
            (json!(1e21), "1e+21"),
            (json!(1e20), "100000000000000000000"),
            (json!(123456789012345680000.0), "123456789012345680000"),
            (json!(0.000001), "0.000001"),
            (json!(1e-7), "1e-7"),
            (json!(4.5), "4.5"),
            (json!(2e-3), "0.002"),
            (
                serde_json::from_str("333333333.33333329").unwrap(),
                "333333333.3333333",
            ),
            (json!(1.7976931348623157e308), "1.7976931348623157e+308"),
            (json!(5e-324), "5e-324"),
            (json!(9007199254740993_u64), "9007199254740992"),
            (json!(-1.5e-9), "-1.5e-9"),
        ];
        for (value, expected) in cases {
            assert_eq!(canonical(&value), expected, "{value}");
        }
    }

    #[test]
    fn strings_escape_only_what_json_stringify_escapes() {
        let value = json!("a\"b\\c\u{1}\n\u{7f}\u{2028}é/");
        assert_eq!(
            canonical(&value),
            "\"a\\\"b\\\\c\\u0001\\n\u{7f}\u{2028}é/\""
        );
    }

    #[test]
    fn the_hash_is_of_the_canonical_text() {
        let a = json!({"command": "ls -la", "timeout_secs": 5});
        let b: Value =
            serde_json::from_str(r#"{ "timeout_secs": 5.0, "command": "ls -la" }"#).unwrap();
        assert_eq!(sha256_hex(&a), sha256_hex(&b));
        assert_eq!(canonical(&a), r#"{"command":"ls -la","timeout_secs":5}"#);
        // `printf '%s' '{"command":"ls -la","timeout_secs":5}' | sha256sum`
        assert_eq!(
            sha256_hex(&a),
            "167c9aea9c766fb008cc5ee78afcdca0b7150192e0fd01580396cc2cd3259571"
        );
    }
}

//! RESP3 reply encoding: the types a connection gets after `HELLO 3`.
//!
//! RESP3 keeps every RESP2 type (simple strings, errors, integers, bulk
//! strings, arrays: see [`super::resp_proto`]) and adds typed replies so
//! clients need no per-command knowledge to decode them: a null, maps, sets,
//! doubles, booleans and verbatim strings. Push frames are not produced:
//! Cassio has no pub/sub or client tracking to push.
//!
//! Formats are those of the RESP3 specification
//! (<https://github.com/redis/redis-specifications/blob/master/protocol/RESP3.md>).

use bytes::BytesMut;

/// Appends the null reply (`_`), RESP3's one null for every type.
pub(crate) fn null(out: &mut BytesMut) {
    out.extend_from_slice(b"_\r\n");
}

/// Appends the header of a map of `n` key/value pairs; the `2 * n` replies
/// that follow alternate key, value.
pub(crate) fn map(out: &mut BytesMut, n: usize) {
    header(out, b'%', n);
}

/// Appends the header of a set of `n` elements.
pub(crate) fn set(out: &mut BytesMut, n: usize) {
    header(out, b'~', n);
}

/// Appends a boolean reply (`#t` / `#f`).
// No supported command answers a boolean in Redis 7; the reply type exists
// (and is tested) for the commands that will.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn boolean(out: &mut BytesMut, b: bool) {
    out.extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
}

/// Appends a double reply. Infinities and NaN use the spelling the
/// specification gives (`inf`, `-inf`, `nan`); finite values use the
/// shortest text that reads back as the same `f64`.
// No supported command answers a double in Redis 7; see `boolean`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn double(out: &mut BytesMut, d: f64) {
    out.extend_from_slice(b",");
    if d.is_nan() {
        out.extend_from_slice(b"nan");
    } else if d.is_infinite() {
        out.extend_from_slice(if d > 0.0 { b"inf" } else { b"-inf" });
    } else {
        // `Debug` switches to exponent notation for very large and very
        // small magnitudes (`1e300`), which the specification allows;
        // `Display` would spell out hundreds of digits.
        out.extend_from_slice(format!("{d:?}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a verbatim string: text a client may show as is, tagged with its
/// three-letter format (`txt` for plain text, `mkd` for markdown).
pub(crate) fn verbatim(out: &mut BytesMut, format: &[u8; 3], text: &[u8]) {
    // The length counts the `fmt:` prefix.
    header(out, b'=', text.len() + 4);
    out.extend_from_slice(format);
    out.extend_from_slice(b":");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// `<type><n>\r\n`.
fn header(out: &mut BytesMut, kind: u8, n: usize) {
    out.extend_from_slice(&[kind]);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn null_is_underscore() {
        assert_eq!(encoded(null), b"_\r\n");
    }

    #[test]
    fn aggregate_headers_carry_their_count() {
        assert_eq!(encoded(|o| map(o, 0)), b"%0\r\n");
        assert_eq!(encoded(|o| map(o, 7)), b"%7\r\n");
        assert_eq!(encoded(|o| set(o, 12)), b"~12\r\n");
    }

    #[test]
    fn booleans() {
        assert_eq!(encoded(|o| boolean(o, true)), b"#t\r\n");
        assert_eq!(encoded(|o| boolean(o, false)), b"#f\r\n");
    }

    #[test]
    fn doubles_round_trip_and_special_values_are_spelled_out() {
        assert_eq!(encoded(|o| double(o, 1.5)), b",1.5\r\n");
        assert_eq!(encoded(|o| double(o, -0.25)), b",-0.25\r\n");
        assert_eq!(encoded(|o| double(o, 3.0)), b",3.0\r\n");
        assert_eq!(encoded(|o| double(o, 1e300)), b",1e300\r\n");
        assert_eq!(encoded(|o| double(o, f64::INFINITY)), b",inf\r\n");
        assert_eq!(encoded(|o| double(o, f64::NEG_INFINITY)), b",-inf\r\n");
        assert_eq!(encoded(|o| double(o, f64::NAN)), b",nan\r\n");
        for d in [0.1, 1.0 / 3.0, 123_456.789e-12, f64::MAX, f64::MIN_POSITIVE] {
            let wire = encoded(|o| double(o, d));
            let text = std::str::from_utf8(&wire[1..wire.len() - 2]).unwrap_or_default();
            assert_eq!(text.parse::<f64>().ok(), Some(d), "{text}");
        }
    }

    #[test]
    fn verbatim_length_counts_the_format_prefix() {
        assert_eq!(
            encoded(|o| verbatim(o, b"txt", b"Some string")),
            b"=15\r\ntxt:Some string\r\n"
        );
        assert_eq!(encoded(|o| verbatim(o, b"mkd", b"")), b"=4\r\nmkd:\r\n");
        // Binary and CRLF inside are carried by the length, not escaped.
        assert_eq!(
            encoded(|o| verbatim(o, b"txt", b"a\r\nb")),
            b"=8\r\ntxt:a\r\nb\r\n"
        );
    }
}

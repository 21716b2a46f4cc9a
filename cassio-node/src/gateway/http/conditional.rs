//! Compare-and-set and increments over HTTP, for chain-replicated (craq)
//! keyspaces.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /kv/{key}` on a craq keyspace | the value with a strong `ETag: "<lowercase hex of the value's bytes>"` |
//! | `PUT /kv/{key}` with `If-Match: "<hex>"` | sets the body as the value if and only if the current value's bytes are that hex (compare-and-set, linearizable): 200 `{"ok":true,"swapped":true}` with the new value's `ETag`, or 412 `precondition_failed` |
//! | `PUT /kv/{key}` with `If-None-Match: *` | sets the value only if the key is absent: 200 as above, or 412 |
//! | `POST /incr/{key}?by=N` | adds `N` (default 1; negative subtracts) to the key's value read as a decimal `i64` (absent: 0): 200 `{"ok":true,"value":NEW}` |
//!
//! Also under `/ks/{keyspace}/...`. An `If-Match` that is not one quoted
//! hex string (a weak tag, `*`, a list) is 400 `bad_request`, as is
//! `If-None-Match` other than `*`, both headers at once, a `ttl`, or a
//! cell path. On a last-write-wins keyspace the node refuses them: 400
//! `invalid_op` (as it does an increment of a value that is no integer).
//! While a key's chain is changing (and for about 2 s after a node
//! starts) the answer is 503 `chain_changing` with `Retry-After: 1`:
//! nothing was done, retry.

use super::{error, request_error, Gateway, PROTOCOL};
use crate::gateway::{check_key, execute};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cassio_core::{ClientOp, ClientRequest, ClientResponse};
use serde_json::json;

/// The largest value given an entity tag: its hex doubles it, and HTTP
/// stacks refuse headers of more than a few KiB (hyper: 16 KiB in all), so
/// a longer one would make the whole answer unreadable. A larger value is
/// compare-and-set over RESP (`SET k v IFEQ old`) or the Rust client.
pub(super) const MAX_ETAG_VALUE: usize = 2048;

/// A value's strong entity tag: its bytes in lowercase hex, quoted; `None`
/// for a value over [`MAX_ETAG_VALUE`] bytes.
pub(super) fn etag(value: &[u8]) -> Option<HeaderValue> {
    if value.len() > MAX_ETAG_VALUE {
        return None;
    }
    let mut s = String::with_capacity(value.len() * 2 + 2);
    s.push('"');
    for b in value {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    // Hex digits and quotes are always a valid header value.
    HeaderValue::from_str(&s).ok()
}

/// The bytes of a quoted hex entity tag, or `None` if it is not one.
fn parse_tag(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix('"')?.strip_suffix('"')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

fn bad(message: impl std::fmt::Display) -> Box<Response> {
    Box::new(error(StatusCode::BAD_REQUEST, "bad_request", message))
}

/// The condition a write's headers set: `None` for none, `Some(None)` for
/// `If-None-Match: *`, `Some(Some(bytes))` for `If-Match: "<hex>"`.
#[allow(clippy::type_complexity)]
pub(super) fn parse(headers: &HeaderMap) -> Result<Option<Option<Bytes>>, Box<Response>> {
    let one = |name: header::HeaderName| -> Result<Option<&str>, Box<Response>> {
        let mut values = headers.get_all(&name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(bad(format!("give one {name} header")));
        }
        first
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| bad(format!("{name} is not ASCII")))
    };
    match (one(header::IF_MATCH)?, one(header::IF_NONE_MATCH)?) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("give If-Match or If-None-Match, not both")),
        (None, Some("*")) => Ok(Some(None)),
        (None, Some(other)) => Err(bad(format!(
            "If-None-Match supports only * (set only if absent), not {other:?}"
        ))),
        (Some(tag), None) => match parse_tag(tag) {
            Some(bytes) => Ok(Some(Some(Bytes::from(bytes)))),
            None => Err(bad(format!(
                "If-Match must be one strong entity tag, the quoted lowercase hex of the value (as GET's ETag), not {tag:?}"
            ))),
        },
    }
}

/// A `PUT` with a condition: compare-and-set of `key` in `keyspace`.
pub(super) async fn put(
    gw: &Gateway,
    uri: &Uri,
    keyspace: String,
    key: Bytes,
    expected: Option<Bytes>,
    new: Bytes,
    ttl: bool,
) -> Response {
    if !matches!(super::cells::ask(uri), Ok(None)) {
        return *bad("If-Match and If-None-Match apply to keys, not to cells");
    }
    if ttl {
        return *bad("a conditional write takes no ttl (craq keyspaces keep no expiries)");
    }
    let req = ClientRequest {
        keyspace,
        op: ClientOp::Cas {
            key,
            expected,
            new: new.clone(),
        },
        consistency: None,
    };
    match execute(&gw.handle, PROTOCOL, req).await {
        Ok(ClientResponse::Swapped(true)) => {
            let mut r = Json(json!({ "ok": true, "swapped": true })).into_response();
            if let Some(tag) = etag(&new) {
                r.headers_mut().insert(header::ETAG, tag);
            }
            r
        }
        Ok(ClientResponse::Swapped(false)) => error(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the key's current value does not match the condition; nothing was written",
        ),
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered a compare-and-set with something else",
        ),
        Err(e) => request_error(&e),
    }
}

/// The keyspace and raw key of an increment path: `/incr/{key}` or
/// `/ks/{keyspace}/incr/{key}`.
pub(super) fn incr_path(path: &str) -> Option<(String, &str)> {
    if let Some(raw) = path.strip_prefix("/incr/") {
        return Some((cassio_core::DEFAULT_KEYSPACE.to_string(), raw));
    }
    let (ks, raw) = path.strip_prefix("/ks/")?.split_once("/incr/")?;
    let ks = percent_encoding::percent_decode(ks.as_bytes())
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((ks, raw))
}

/// The `by` parameter of an increment (default 1).
fn by_param(uri: &Uri) -> Result<i64, Box<Response>> {
    let mut by = None;
    for pair in uri.query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "by" {
            if by.is_some() {
                return Err(bad("give by once"));
            }
            let text = percent_encoding::percent_decode(value.as_bytes()).decode_utf8_lossy();
            by = Some(text.parse::<i64>().map_err(|_| {
                bad(format!(
                    "by must be an integer in the range of i64, not {text:?}"
                ))
            })?);
        }
    }
    Ok(by.unwrap_or(1))
}

/// `POST /incr/{key}?by=N` (and under `/ks/{keyspace}`).
pub(super) async fn incr(gw: &Gateway, uri: &Uri) -> Response {
    let Some((keyspace, raw)) = incr_path(uri.path()) else {
        return *bad("keyspace names are UTF-8: /ks/{keyspace}/incr/{key}");
    };
    let key: Vec<u8> = percent_encoding::percent_decode(raw.as_bytes()).collect();
    if let Err(e) = check_key(&key) {
        return error(StatusCode::URI_TOO_LONG, "key_too_large", e);
    }
    let by = match by_param(uri) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let req = ClientRequest {
        keyspace,
        op: ClientOp::Incr {
            key: Bytes::from(key),
            by,
        },
        consistency: None,
    };
    match execute(&gw.handle, PROTOCOL, req).await {
        Ok(ClientResponse::Counter(n)) => Json(json!({ "ok": true, "value": n })).into_response(),
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered an increment with something else",
        ),
        Err(e) => request_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_malformed_ones_are_refused() {
        let t = etag(b"\x00ab\xff").unwrap();
        // A value too long for a header gets none (the answer stays
        // readable).
        assert!(etag(&vec![7u8; MAX_ETAG_VALUE + 1]).is_none());
        assert!(etag(&vec![7u8; MAX_ETAG_VALUE]).is_some());
        assert_eq!(t.to_str().ok(), Some("\"006162ff\""));
        assert_eq!(parse_tag("\"006162ff\""), Some(b"\x00ab\xff".to_vec()));
        assert_eq!(parse_tag("\"006162FF\""), Some(b"\x00ab\xff".to_vec()));
        assert_eq!(parse_tag("\"\""), Some(Vec::new()));
        for bad in [
            "006162",
            "\"abc\"",
            "W/\"00\"",
            "*",
            "\"zz\"",
            "\"",
            "\"00\", \"01\"",
        ] {
            assert_eq!(parse_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn headers_give_one_condition() {
        let mut h = HeaderMap::new();
        assert_eq!(parse(&h).ok(), Some(None));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(parse(&h).ok(), Some(Some(None)));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"76\""));
        assert!(parse(&h).is_err());
        h.remove(header::IF_NONE_MATCH);
        assert_eq!(parse(&h).ok(), Some(Some(Some(Bytes::from_static(b"v")))));
        h.insert(header::IF_MATCH, HeaderValue::from_static("v"));
        assert!(parse(&h).is_err());
    }

    #[test]
    fn increment_paths_and_amounts() {
        assert_eq!(incr_path("/incr/a%2Fb"), Some(("default".into(), "a%2Fb")));
        assert_eq!(incr_path("/ks/locks/incr/n"), Some(("locks".into(), "n")));
        assert_eq!(incr_path("/kv/n"), None);
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(by_param(&uri("/incr/n")).ok(), Some(1));
        assert_eq!(by_param(&uri("/incr/n?by=-5")).ok(), Some(-5));
        assert!(by_param(&uri("/incr/n?by=x")).is_err());
        assert!(by_param(&uri("/incr/n?by=1&by=2")).is_err());
    }
}

//! `GET /kv` and `GET /ks/{keyspace}/kv`: paged scans of a keyspace.
//!
//! | query | meaning |
//! | --- | --- |
//! | `prefix=P` | only keys that start with `P` |
//! | `after=K` | start after key `K` in scan order (token order, not key order) |
//! | `cursor=C` | continue where the page that returned `C` ended |
//! | `limit=N` | at most `N` entries (default [`DEFAULT_LIMIT`], at most [`cassio_core::scan::MAX_PAGE`]) |
//! | `consistency=L` | the level each token range is read at |
//!
//! Answer: 200 `{"entries": [{"key": K, "value": V}...], "count": N,
//! "cursor": C|null}`; a key or value that is not UTF-8 comes as
//! `key_base64` / `value_base64` (standard base64) instead. `cursor` is
//! `null` once the scan is complete. Entries come in token order (hash
//! order), as Cassandra's range reads do; a page may hold fewer than
//! `limit` entries (even none) and still have a cursor. A bad cursor or
//! limit is 400 `bad_request`.

use super::{error, request_error, Gateway, PROTOCOL};
use crate::gateway::execute;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use cassio_core::{ClientOp, ClientRequest, ClientResponse, Consistency, ScanCursor};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json_};

/// Entries per page when the query names no limit.
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// The query a scan understands.
#[derive(Debug, Deserialize)]
pub(super) struct ScanParams {
    prefix: Option<String>,
    after: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    consistency: Option<String>,
}

/// The keyspace a scan route reads (for the access check), if `path` is
/// one: `/kv` or `/ks/{keyspace}/kv`.
pub(super) fn scan_keyspace(path: &str) -> Option<String> {
    if path == "/kv" || path == "/kv/" {
        return Some(cassio_core::DEFAULT_KEYSPACE.to_string());
    }
    let rest = path.strip_prefix("/ks/")?;
    let ks = rest
        .strip_suffix("/kv")
        .or_else(|| rest.strip_suffix("/kv/"))?;
    let ks = percent_encoding::percent_decode_str(ks)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!ks.is_empty() && !ks.contains('/')).then_some(ks)
}

/// The cursor as a query-safe string.
pub(crate) fn encode_cursor(c: &ScanCursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.encode())
}

/// A cursor string from [`encode_cursor`], or why it is not one.
pub(crate) fn decode_cursor(s: &str) -> Result<ScanCursor, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "malformed scan cursor".to_string())?;
    ScanCursor::decode(&bytes).map_err(|e| e.to_string())
}

/// `GET /kv`.
pub(super) async fn scan_default(
    State(gw): State<Gateway>,
    params: Result<Query<ScanParams>, QueryRejection>,
) -> Response {
    scan(gw, cassio_core::DEFAULT_KEYSPACE.to_string(), params).await
}

/// `GET /ks/{keyspace}/kv`.
pub(super) async fn scan_keyspace_route(
    State(gw): State<Gateway>,
    Path(keyspace): Path<String>,
    params: Result<Query<ScanParams>, QueryRejection>,
) -> Response {
    scan(gw, keyspace, params).await
}

fn bad(message: impl std::fmt::Display) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A key or value as JSON: text when it is UTF-8, else base64.
fn put_bytes(obj: &mut Map<String, Json_>, name: &str, b: &Bytes) {
    match std::str::from_utf8(b) {
        Ok(s) => obj.insert(name.to_string(), Json_::String(s.to_string())),
        Err(_) => obj.insert(
            format!("{name}_base64"),
            Json_::String(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    };
}

async fn scan(
    gw: Gateway,
    keyspace: String,
    params: Result<Query<ScanParams>, QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > cassio_core::scan::MAX_PAGE {
        return bad(format!("limit must be 1..={}", cassio_core::scan::MAX_PAGE));
    }
    let from = match (&p.cursor, &p.after) {
        (Some(_), Some(_)) => return bad("give cursor or after, not both"),
        (Some(c), None) => match decode_cursor(c) {
            Ok(c) => c,
            Err(e) => return bad(e),
        },
        (None, Some(k)) => ScanCursor::after_key(Bytes::from(k.clone())),
        (None, None) => ScanCursor::start(),
    };
    let level = match p.consistency.as_deref().map(str::parse::<Consistency>) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => return bad(e),
    };
    let mut req =
        ClientRequest::scan(Bytes::from(p.prefix.unwrap_or_default()), limit).in_keyspace(keyspace);
    if let ClientOp::Scan { from: f, .. } = &mut req.op {
        *f = from;
    }
    req.consistency = level;
    match execute(&gw.handle, PROTOCOL, req).await {
        Ok(ClientResponse::Page { entries, next }) => {
            let list: Vec<Json_> = entries
                .iter()
                .map(|(k, v)| {
                    let mut o = Map::new();
                    put_bytes(&mut o, "key", k);
                    put_bytes(&mut o, "value", v);
                    Json_::Object(o)
                })
                .collect();
            Json(json!({
                "entries": list,
                "count": entries.len(),
                "cursor": next.as_ref().map(encode_cursor),
            }))
            .into_response()
        }
        Ok(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node answered a scan with something else",
        ),
        Err(e) => request_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_routes_name_their_keyspace() {
        assert_eq!(scan_keyspace("/kv").as_deref(), Some("default"));
        assert_eq!(scan_keyspace("/ks/users/kv").as_deref(), Some("users"));
        assert_eq!(scan_keyspace("/ks/users/kv/alice"), None);
        assert_eq!(scan_keyspace("/kv/alice"), None);
        assert_eq!(scan_keyspace("/ks//kv"), None);
    }

    #[test]
    fn cursors_survive_the_query_string_and_junk_is_refused() {
        let c = ScanCursor::after_key(Bytes::from_static(b"a/b?c"));
        let s = encode_cursor(&c);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_cursor(&s), Ok(c));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor("AAAAAAAAAAAAAAAAAAAAAAAA").is_err());
    }
}

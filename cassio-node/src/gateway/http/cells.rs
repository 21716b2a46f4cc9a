//! Rows of columns over HTTP, on the `/kv` routes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /kv/{row}/{column}` (or `/kv/{row}?column=C`) | 200 with the cell's bytes, or 404 |
//! | `PUT` or `POST /kv/{row}/{column}` (or `?column=C`) | stores the body in that column of the row; 200 `{"ok":true,"timestamp":...}` |
//! | `DELETE /kv/{row}/{column}` (or `?column=C`) | writes a tombstone for that cell only |
//! | `DELETE /kv/{row}?columns` | deletes the whole row: reads its cells (at most 10000), then writes a tombstone for each; 200 `{"ok":true,"deleted":N}`. A column written concurrently that the read did not see survives |
//! | `GET /kv/{row}?columns[&prefix=P][&from=A][&to=B][&limit=N]` | 200 `{"row", "columns": [{"column", "value"}...], "more"}`: the live cells in column order, by prefix or in `A..B` (`B` excluded), at most `N` (default 1000, at most 10000); `more` says the slice continues (resume with `from=` the last column plus a 0 byte, or a tighter range) |
//!
//! Also under `/ks/{keyspace}/kv/{row}`. The row is the path after `/kv/`
//! up to its first unencoded `/`, the column the rest, both
//! percent-decoded (so a row's or column's own slashes travel as `%2F`; a
//! plain key and a row may share a name, they are stored apart). The
//! `?column=` form names columns that are easier to pass as a query
//! parameter; naming a column both ways is 400. Values that are not UTF-8
//! come back as `value_base64`.

use super::{error, key_and_level, request_error, written, Gateway, KvParams, PROTOCOL};
use crate::gateway::execute;
use crate::gateway::rows::read_row_more;
use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use cassio_core::{ClientRequest, ClientResponse, RowSlice};
use serde::Deserialize;
use serde_json::json;

/// The most cells one row read answers.
const MAX_LIMIT: usize = 10_000;

/// The cell parameters of a `/kv` request; others are ignored.
#[derive(Debug, Deserialize)]
struct CellParams {
    column: Option<String>,
    columns: Option<String>,
    prefix: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// What a `/kv` request asks of a row, if anything.
pub(super) enum Ask {
    Cell(Bytes),
    Row(RowSlice, usize),
}

pub(super) fn ask(uri: &Uri) -> Result<Option<Ask>, Box<Response>> {
    let bad = |m: String| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", m));
    let path_column = super::keyspace_and_key(uri.path())
        .and_then(|(_, raw)| super::split_row_column(raw).1)
        .map(|c| Bytes::from(percent_encoding::percent_decode(c.as_bytes()).collect::<Vec<u8>>()));
    let Ok(Query(p)) = Query::<CellParams>::try_from_uri(uri) else {
        // Not UTF-8 or malformed: the key route's own parsing answers.
        return Ok(None);
    };
    if let Some(c) = path_column {
        if p.column.is_some() || p.columns.is_some() {
            return Err(bad(
                "name the column in the path or in ?column=, not both (a key's own slashes travel as %2F)"
                    .into(),
            ));
        }
        if c.is_empty() {
            return Err(bad(
                "empty column: /kv/{row}/{column} (a key's own slashes travel as %2F)".into(),
            ));
        }
        super::super::check_key(&c).map_err(bad)?;
        return Ok(Some(Ask::Cell(c)));
    }
    if let Some(c) = p.column {
        super::super::check_key(c.as_bytes()).map_err(bad)?;
        return Ok(Some(Ask::Cell(Bytes::from(c))));
    }
    if p.columns.is_none() {
        return Ok(None);
    }
    let limit = match p.limit {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| bad(format!("limit must be 1..={MAX_LIMIT}")))?,
    };
    let slice = match (p.prefix, p.from, p.to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(bad("give prefix= or from=/to=, not both".into()))
        }
        (Some(prefix), None, None) => RowSlice::Prefix(Bytes::from(prefix)),
        (None, None, None) => RowSlice::All,
        (None, from, to) => RowSlice::Range {
            from: from.map(Bytes::from),
            to: to.map(Bytes::from),
        },
    };
    Ok(Some(Ask::Row(slice, limit)))
}

fn text_or_base64(name: &str, b: &[u8]) -> (String, serde_json::Value) {
    match std::str::from_utf8(b) {
        Ok(s) => (name.to_string(), json!(s)),
        Err(_) => (
            format!("{name}_base64"),
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

/// `GET` on a row, if the query asks for one (`None`: a plain key read).
pub(super) async fn get(gw: &Gateway, uri: &Uri) -> Option<Response> {
    let ask = match ask(uri) {
        Ok(a) => a?,
        Err(r) => return Some(*r),
    };
    let (keyspace, row, level) = match key_and_level(uri, Query::<KvParams>::try_from_uri(uri)) {
        Ok(k) => k,
        Err(r) => return Some(*r),
    };
    Some(match ask {
        Ask::Cell(column) => {
            let mut req = ClientRequest::hget(row, column).in_keyspace(keyspace);
            req.consistency = level;
            match execute(&gw.handle, PROTOCOL, req).await {
                Ok(ClientResponse::Value(Some(v))) => {
                    ([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()
                }
                Ok(ClientResponse::Value(None)) => {
                    error(StatusCode::NOT_FOUND, "not_found", "cell not found")
                }
                Ok(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the node answered a cell read with something else",
                ),
                Err(e) => request_error(&e),
            }
        }
        Ask::Row(slice, limit) => {
            match read_row_more(
                &gw.handle,
                Some(PROTOCOL),
                &row,
                slice,
                limit,
                level,
                &keyspace,
            )
            .await
            {
                Ok((cells, more)) => {
                    let columns: Vec<serde_json::Value> = cells
                        .iter()
                        .map(|(c, v)| {
                            let (ck, cv) = text_or_base64("column", c);
                            let (vk, vv) = text_or_base64("value", v);
                            let mut m = serde_json::Map::new();
                            m.insert(ck, cv);
                            m.insert(vk, vv);
                            serde_json::Value::Object(m)
                        })
                        .collect();
                    let (rk, rv) = text_or_base64("row", &row);
                    let mut body = serde_json::Map::new();
                    body.insert(rk, rv);
                    body.insert("columns".into(), json!(columns));
                    body.insert("more".into(), json!(more));
                    Json(serde_json::Value::Object(body)).into_response()
                }
                Err(e) => request_error(&e),
            }
        }
    })
}

/// `PUT`/`POST` (`value: Some`) or `DELETE` (`None`) of one cell, if the
/// query names a column (`None`: a plain key write).
pub(super) async fn write(gw: &Gateway, uri: &Uri, value: Option<Bytes>) -> Option<Response> {
    let column = match ask(uri) {
        Ok(Some(Ask::Cell(c))) => c,
        Ok(Some(Ask::Row(..))) if value.is_none() => return Some(delete_row(gw, uri).await),
        Ok(Some(Ask::Row(..))) => {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a write names one cell: ?column=C",
            ))
        }
        Ok(None) => return None,
        Err(r) => return Some(*r),
    };
    let (keyspace, row, level) = match key_and_level(uri, Query::<KvParams>::try_from_uri(uri)) {
        Ok(k) => k,
        Err(r) => return Some(*r),
    };
    let mut req = match value {
        Some(v) => ClientRequest::hset(row, column, v),
        None => ClientRequest::hdel(row, column),
    }
    .in_keyspace(keyspace);
    req.consistency = level;
    Some(written(execute(&gw.handle, PROTOCOL, req).await))
}

/// `DELETE /kv/{row}?columns`: a tombstone for every cell the read saw.
async fn delete_row(gw: &Gateway, uri: &Uri) -> Response {
    let (keyspace, row, level) = match key_and_level(uri, Query::<KvParams>::try_from_uri(uri)) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let cells = match read_row_more(
        &gw.handle,
        Some(PROTOCOL),
        &row,
        RowSlice::All,
        MAX_LIMIT,
        level,
        &keyspace,
    )
    .await
    {
        Ok((cells, _)) => cells,
        Err(e) => return request_error(&e),
    };
    let done = futures_util::future::join_all(cells.iter().map(|(c, _)| {
        let mut req = ClientRequest::hdel(row.clone(), c.clone()).in_keyspace(keyspace.as_str());
        req.consistency = level;
        execute(&gw.handle, PROTOCOL, req)
    }))
    .await;
    if let Some(e) = done.into_iter().find_map(Result::err) {
        return request_error(&e);
    }
    Json(json!({ "ok": true, "deleted": cells.len() })).into_response()
}

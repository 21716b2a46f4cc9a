//! Redis hashes over RESP: a hash is a row, a field is a column (a cell).
//!
//! Every field carries its own timestamp, so two clients writing different
//! fields of one key concurrently both keep their writes (last write wins
//! per field, not per key). Commands that Redis answers from a snapshot of
//! the whole hash (`HGETALL`, `HKEYS`, `HVALS`, `HLEN`) read the row from
//! enough replicas for the level, merged field by field; `HSETNX` and the
//! counts `HSET` and `HDEL` answer are read-then-write, not atomic (two
//! concurrent `HSETNX` of one field may both answer 1; the later stamp
//! wins). A key may hold a string and a hash at once: they are stored
//! apart (`TYPE` answers `string` first).

use super::super::rows::read_row;
use super::{execute, request_error, IoKind, IoOp, Plan, Reply, PROTOCOL};
use crate::handle::{NodeHandle, RequestError};
use bytes::Bytes;
use cassio_core::{ClientRequest, ClientResponse, Consistency, RowSlice, MAX_ROW_PAGE};

/// The most fields one whole-hash command (`HGETALL`, `HKEYS`, `HVALS`,
/// `HLEN`) reads; a larger hash is read with `HSCAN`.
pub(super) const MAX_HASH_FIELDS: usize = 1_000_000;

/// A hash command, planned.
#[derive(Debug)]
pub(super) enum HashOp {
    /// `HSET key f v [f v ...]` (`nx`: `HSETNX`; `ok`: `HMSET`, answers OK).
    Set {
        row: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
        ok: bool,
    },
    /// `HGET key f`.
    Get { row: Bytes, field: Bytes },
    /// `HMGET key f [f ...]`.
    MGet { row: Bytes, fields: Vec<Bytes> },
    /// `HEXISTS key f`.
    Exists { row: Bytes, field: Bytes },
    /// `HDEL key f [f ...]`.
    Del { row: Bytes, fields: Vec<Bytes> },
    /// `HGETALL`, `HKEYS`, `HVALS`, `HLEN`.
    Whole { row: Bytes, what: Whole },
    /// `HSCAN key cursor [MATCH pattern] [COUNT n]`: the cursor counts the
    /// fields already returned.
    Scan {
        row: Bytes,
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
    },
    /// `TYPE key`.
    Type { key: Bytes },
}

/// Which part of a whole hash to answer.
#[derive(Clone, Copy, Debug)]
pub(super) enum Whole {
    All,
    Keys,
    Vals,
    Len,
}

impl HashOp {
    /// The key the op touches (for ordering pipelined commands).
    pub(super) fn key(&self) -> &Bytes {
        match self {
            HashOp::Set { row, .. }
            | HashOp::Get { row, .. }
            | HashOp::MGet { row, .. }
            | HashOp::Exists { row, .. }
            | HashOp::Del { row, .. }
            | HashOp::Whole { row, .. }
            | HashOp::Scan { row, .. } => row,
            HashOp::Type { key } => key,
        }
    }

    /// Whether the op writes.
    pub(super) fn writes(&self) -> bool {
        matches!(self, HashOp::Set { .. } | HashOp::Del { .. })
    }
}

/// Plans hash command `name` (upper case), or `None` if it is not one.
pub(super) fn plan(
    name: &str,
    mut args: Vec<Bytes>,
    consistency: Option<Consistency>,
    keyspace: std::sync::Arc<str>,
) -> Option<Plan> {
    let argc = args.len();
    let arity = |ok: bool| (!ok).then(|| super::wrong_arity(name));
    let refused = match name {
        "HSET" | "HMSET" => arity(argc >= 4 && argc % 2 == 0),
        "HSETNX" => arity(argc == 4),
        "HGET" | "HEXISTS" => arity(argc == 3),
        "HMGET" | "HDEL" => arity(argc >= 3),
        "HGETALL" | "HKEYS" | "HVALS" | "HLEN" | "TYPE" => arity(argc == 2),
        "HSCAN" => arity(argc >= 3 && argc % 2 == 1),
        _ => return None,
    };
    if let Some(p) = refused {
        return Some(p);
    }
    let rest = args.split_off(1);
    let mut it = rest.into_iter();
    let row = it.next().unwrap_or_default();
    let rest: Vec<Bytes> = it.collect();
    if let Err(p) = super::check_sizes(std::iter::once(&row).chain(keys_of(name, &rest)), []) {
        return Some(p);
    }
    let op = match name {
        "HSET" | "HMSET" | "HSETNX" => {
            // A field named twice: Redis keeps the last value. The writes
            // run concurrently, so only the last is sent.
            let mut seen = std::collections::HashSet::new();
            let mut pairs: Vec<(Bytes, Bytes)> = rest
                .chunks_exact(2)
                .rev()
                .filter(|c| seen.insert(c[0].clone()))
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            pairs.reverse();
            if let Err(p) = super::check_sizes([], pairs.iter().map(|(_, v)| v)) {
                return Some(p);
            }
            HashOp::Set {
                row,
                pairs,
                nx: name == "HSETNX",
                ok: name == "HMSET",
            }
        }
        "HGET" | "HEXISTS" => {
            let field = rest.into_iter().next().unwrap_or_default();
            if name == "HGET" {
                HashOp::Get { row, field }
            } else {
                HashOp::Exists { row, field }
            }
        }
        "HMGET" => HashOp::MGet { row, fields: rest },
        "HDEL" => {
            let mut fields = rest;
            let mut seen = std::collections::HashSet::new();
            fields.retain(|f| seen.insert(f.clone()));
            HashOp::Del { row, fields }
        }
        "HGETALL" => HashOp::Whole {
            row,
            what: Whole::All,
        },
        "HKEYS" => HashOp::Whole {
            row,
            what: Whole::Keys,
        },
        "HVALS" => HashOp::Whole {
            row,
            what: Whole::Vals,
        },
        "HLEN" => HashOp::Whole {
            row,
            what: Whole::Len,
        },
        "TYPE" => HashOp::Type { key: row },
        _ => match scan_args(row, &rest) {
            Ok(op) => op,
            Err(p) => return Some(p),
        },
    };
    Some(Plan::Io(IoOp {
        kind: IoKind::Hash(op),
        consistency,
        keyspace,
    }))
}

/// The field names among a command's arguments after the key (checked
/// against the key size limit).
fn keys_of<'a>(name: &str, rest: &'a [Bytes]) -> Vec<&'a Bytes> {
    match name {
        "HSET" | "HMSET" | "HSETNX" => rest.iter().step_by(2).collect(),
        "HSCAN" => Vec::new(),
        _ => rest.iter().collect(),
    }
}

fn scan_args(row: Bytes, rest: &[Bytes]) -> Result<HashOp, Plan> {
    let invalid = || super::err("ERR invalid cursor");
    let cursor = rest
        .first()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(invalid)?;
    let mut pattern = None;
    let mut count = 10usize;
    for opt in rest[1..].chunks_exact(2) {
        match super::name_of(&opt[0]).as_str() {
            "MATCH" => pattern = Some(opt[1].clone()),
            "COUNT" => {
                count = std::str::from_utf8(&opt[1])
                    .ok()
                    .and_then(|c| c.parse::<usize>().ok())
                    .filter(|&c| c >= 1)
                    .ok_or_else(|| super::err("ERR value is not an integer or out of range"))?;
            }
            "NOVALUES" => return Err(super::err("ERR HSCAN NOVALUES is not supported by Cassio")),
            _ => return Err(super::err("ERR syntax error")),
        }
    }
    Ok(HashOp::Scan {
        row,
        cursor,
        pattern,
        count: count.min(MAX_ROW_PAGE),
    })
}

/// Runs a planned hash command.
pub(super) async fn run(
    handle: &NodeHandle,
    op: &HashOp,
    c: Option<Consistency>,
    ks: &str,
) -> Reply {
    match run_inner(handle, op, c, ks).await {
        Ok(r) => r,
        Err(e) => request_error(&e),
    }
}

async fn run_inner(
    handle: &NodeHandle,
    op: &HashOp,
    c: Option<Consistency>,
    ks: &str,
) -> Result<Reply, RequestError> {
    use futures_util::future::join_all;
    let count = |n: usize| Reply::Int(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(match op {
        HashOp::Set { row, pairs, nx, ok } => {
            // Redis answers how many fields are new: read them first (not
            // atomic with the write; see the module doc).
            let before = if *ok {
                Vec::new()
            } else {
                join_all(pairs.iter().map(|(f, _)| hget(handle, row, f, c, ks))).await
            };
            let mut new = 0;
            for b in before {
                new += usize::from(b?.is_none());
            }
            if *nx && new == 0 {
                return Ok(count(0));
            }
            let done = join_all(
                pairs
                    .iter()
                    .map(|(f, v)| hset(handle, row.clone(), f.clone(), v.clone(), c, ks)),
            )
            .await;
            for d in done {
                d?;
            }
            if *ok {
                Reply::Simple("OK")
            } else {
                count(new)
            }
        }
        HashOp::Get { row, field } => Reply::Bulk(hget(handle, row, field, c, ks).await?),
        HashOp::Exists { row, field } => count(usize::from(
            hget(handle, row, field, c, ks).await?.is_some(),
        )),
        HashOp::MGet { row, fields } => {
            let got = join_all(fields.iter().map(|f| hget(handle, row, f, c, ks))).await;
            let mut items = Vec::with_capacity(got.len());
            for g in got {
                items.push(Reply::Bulk(g?));
            }
            Reply::Array(items)
        }
        HashOp::Del { row, fields } => {
            let got = join_all(fields.iter().map(|f| hget(handle, row, f, c, ks))).await;
            let mut present = Vec::new();
            for (g, f) in got.into_iter().zip(fields) {
                if g?.is_some() {
                    present.push(f);
                }
            }
            let done = join_all(present.iter().map(|f| {
                let mut req = ClientRequest::hdel(row.clone(), (*f).clone()).in_keyspace(ks);
                req.consistency = c;
                execute(handle, PROTOCOL, req)
            }))
            .await;
            for d in done {
                d?;
            }
            count(present.len())
        }
        HashOp::Whole { row, what } => {
            let cells =
                read_row(handle, PROTOCOL, row, RowSlice::All, MAX_HASH_FIELDS, c, ks).await?;
            match what {
                Whole::All => Reply::Map(
                    cells
                        .into_iter()
                        .map(|(f, v)| (Reply::Bulk(Some(f)), Reply::Bulk(Some(v))))
                        .collect(),
                ),
                Whole::Keys => Reply::Array(
                    cells
                        .into_iter()
                        .map(|(f, _)| Reply::Bulk(Some(f)))
                        .collect(),
                ),
                Whole::Vals => Reply::Array(
                    cells
                        .into_iter()
                        .map(|(_, v)| Reply::Bulk(Some(v)))
                        .collect(),
                ),
                Whole::Len => count(cells.len()),
            }
        }
        HashOp::Scan {
            row,
            cursor,
            pattern,
            count: n,
        } => {
            // The cursor is how many fields earlier calls returned: skip
            // them, answer the next `n`. Fields present for the whole scan
            // are returned once; a field deleted before the cursor shifts
            // the rest (one may be skipped), as Redis allows for a hash
            // that changes during a scan.
            let skip = usize::try_from(*cursor).unwrap_or(usize::MAX);
            let want = skip.saturating_add(*n).saturating_add(1);
            let cells = read_row(handle, PROTOCOL, row, RowSlice::All, want, c, ks).await?;
            let next = if cells.len() > skip + n {
                (skip + n).to_string()
            } else {
                "0".to_string()
            };
            let mut flat = Vec::new();
            for (f, v) in cells.into_iter().skip(skip).take(*n) {
                if pattern.as_ref().is_none_or(|p| glob_match(p, &f)) {
                    flat.push(Reply::Bulk(Some(f)));
                    flat.push(Reply::Bulk(Some(v)));
                }
            }
            Reply::Array(vec![
                Reply::Bulk(Some(Bytes::from(next))),
                Reply::Array(flat),
            ])
        }
        HashOp::Type { key } => {
            let mut req = ClientRequest::get(key.clone()).in_keyspace(ks);
            req.consistency = c;
            let string = matches!(
                execute(handle, PROTOCOL, req).await?,
                ClientResponse::Value(Some(_))
            );
            if string {
                Reply::Simple("string")
            } else if read_row(handle, PROTOCOL, key, RowSlice::All, 1, c, ks)
                .await?
                .is_empty()
            {
                Reply::Simple("none")
            } else {
                Reply::Simple("hash")
            }
        }
    })
}

/// Column `field` of row `row`.
pub(super) async fn hget(
    handle: &NodeHandle,
    row: &Bytes,
    field: &Bytes,
    c: Option<Consistency>,
    ks: &str,
) -> Result<Option<Bytes>, RequestError> {
    let mut req = ClientRequest::hget(row.clone(), field.clone()).in_keyspace(ks);
    req.consistency = c;
    match execute(handle, PROTOCOL, req).await? {
        ClientResponse::Value(v) => Ok(v),
        _ => Err(RequestError::BadRequest(
            "the node answered a field read with something else".into(),
        )),
    }
}

async fn hset(
    handle: &NodeHandle,
    row: Bytes,
    field: Bytes,
    value: Bytes,
    c: Option<Consistency>,
    ks: &str,
) -> Result<(), RequestError> {
    let mut req = ClientRequest::hset(row, field, value).in_keyspace(ks);
    req.consistency = c;
    execute(handle, PROTOCOL, req).await.map(|_| ())
}

/// Redis glob matching for `MATCH`: `*`, `?`, `[...]` (with `^` and ranges)
/// and `\` escapes.
pub(super) fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let (mut star_p, mut star_i) = (None::<usize>, 0usize);
    while i < s.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star_p = Some(p);
                star_i = i;
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class_match(pattern, p, s[i]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == s[i]).then_some(p + 2),
            Some(&b) => (b == s[i]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(np) => {
                p = np;
                i += 1;
            }
            None => match star_p {
                Some(sp) => {
                    p = sp + 1;
                    star_i += 1;
                    i = star_i;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// Matches byte `c` against the class starting at `pattern[p] == b'['`;
/// the index after the class if it matches.
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    while j < pattern.len() && pattern[j] != b']' {
        if pattern[j] == b'\\' && j + 1 < pattern.len() {
            hit |= pattern[j + 1] == c;
            j += 2;
        } else if j + 2 < pattern.len() && pattern[j + 1] == b'-' && pattern[j + 2] != b']' {
            let (a, b) = (
                pattern[j].min(pattern[j + 2]),
                pattern[j].max(pattern[j + 2]),
            );
            hit |= (a..=b).contains(&c);
            j += 3;
        } else {
            hit |= pattern[j] == c;
            j += 1;
        }
    }
    (hit != negate).then_some((j + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_as_in_redis() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"f*", b"field"));
        assert!(!glob_match(b"f*", b"name"));
        assert!(glob_match(b"f?eld", b"field"));
        assert!(glob_match(b"f[a-j]eld", b"field"));
        assert!(!glob_match(b"f[^a-j]eld", b"field"));
        assert!(glob_match(b"*ld", b"field"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"x"));
    }
}

//! RESP `SCAN`, `KEYS` and `DBSIZE` over the cluster's paged scans.
//!
//! - `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: the cursor is a
//!   decimal number, `0` to start and `0` again when the scan is complete,
//!   as in Redis; in between it is the ring token the next call starts at
//!   (pages end on token boundaries, see `cassio_core::scan`). Keys come in
//!   token (hash) order; `COUNT` (default 10, at most
//!   [`cassio_core::scan::MAX_PAGE`]) is how many keys a call examines, so
//!   a call may return fewer (even none) with a non-zero cursor, as Redis
//!   allows. `MATCH` uses Redis glob rules ([`glob_match`]); its literal
//!   prefix is sent to the cluster as a scan prefix. Scans list string
//!   keys only (a hash's fields are cells, read with `HSCAN`), so `TYPE
//!   string` changes nothing and any other type ends at once with no keys.
//!   No key present for the whole scan is missed or repeated.
//! - `KEYS pattern`: the whole scan, refused with an error pointing at
//!   `SCAN` once more than [`KEYS_MAX`] keys match.
//! - `DBSIZE`: an estimate. The scan's first [`DBSIZE_SAMPLE`] keys are
//!   counted from the start of the ring; if the scan ends within them the
//!   count is exact, otherwise it is extrapolated from the share of the
//!   token space those keys covered (tokens are a uniform hash, so the
//!   error is a few percent).

use super::{request_error, IoKind, Reply};
use crate::gateway::{execute, Protocol};
use crate::handle::{NodeHandle, RequestError};
use bytes::Bytes;
use cassio_core::{ClientOp, ClientRequest, ClientResponse, Consistency, ScanCursor, Token};

/// The most keys `KEYS` returns; past it, it refuses and points at `SCAN`.
pub(super) const KEYS_MAX: usize = 10_000;

/// How many keys `DBSIZE` counts before it extrapolates.
pub(super) const DBSIZE_SAMPLE: usize = 1_000;

/// `SCAN`'s `COUNT` when none is given (as Redis).
const DEFAULT_COUNT: usize = 10;

/// A planned scan command.
#[derive(Debug)]
pub(super) enum ScanKind {
    /// `SCAN`: from a token, with an optional pattern, `COUNT` keys.
    Scan {
        from: Token,
        pattern: Option<Bytes>,
        count: usize,
    },
    /// `KEYS pattern`.
    Keys(Bytes),
    /// `DBSIZE`.
    DbSize,
}

/// Plans `SCAN`, `KEYS` or `DBSIZE` (`args[0]` is the command), or the
/// error to answer.
pub(super) fn plan(name: &str, args: &[Bytes]) -> Result<IoKind, String> {
    match name {
        "SCAN" => {
            let cursor = args.get(1).ok_or_else(|| arity("scan"))?;
            let from = std::str::from_utf8(cursor)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or("ERR invalid cursor")?;
            let mut pattern = None;
            let mut count = DEFAULT_COUNT;
            let mut i = 2;
            while i < args.len() {
                let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
                let val = args.get(i + 1).ok_or("ERR syntax error")?;
                match opt.as_str() {
                    "MATCH" => pattern = Some(val.clone()),
                    "COUNT" => {
                        count = std::str::from_utf8(val)
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                            .filter(|&n| n >= 1)
                            .ok_or("ERR value is out of range, must be positive")?;
                    }
                    "TYPE" => {
                        if !val.eq_ignore_ascii_case(b"string") {
                            // Every Cassio key is a string: no key has
                            // another type, so the scan is complete at once.
                            return Ok(IoKind::Scan(ScanKind::Scan {
                                from: Token(u64::MAX),
                                pattern: Some(Bytes::new()),
                                count: 0,
                            }));
                        }
                    }
                    _ => return Err("ERR syntax error".into()),
                }
                i += 2;
            }
            Ok(IoKind::Scan(ScanKind::Scan {
                from: Token(from),
                pattern,
                count: count.min(cassio_core::scan::MAX_PAGE),
            }))
        }
        "KEYS" => {
            if args.len() != 2 {
                return Err(arity("keys"));
            }
            Ok(IoKind::Scan(ScanKind::Keys(args[1].clone())))
        }
        "DBSIZE" => {
            if args.len() != 1 {
                return Err(arity("dbsize"));
            }
            Ok(IoKind::Scan(ScanKind::DbSize))
        }
        _ => Err(format!("ERR unknown command '{name}'")),
    }
}

fn arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// One page of the cluster's scan.
async fn page(
    handle: &NodeHandle,
    ks: &str,
    c: Option<Consistency>,
    prefix: &Bytes,
    from: ScanCursor,
    limit: usize,
) -> Result<(Vec<(Bytes, Bytes)>, Option<ScanCursor>), RequestError> {
    let mut req = ClientRequest::scan(prefix.clone(), limit).in_keyspace(ks);
    if let ClientOp::Scan { from: f, .. } = &mut req.op {
        *f = from;
    }
    req.consistency = c;
    match execute(handle, Protocol::Resp, req).await? {
        ClientResponse::Page { entries, next } => Ok((entries, next)),
        _ => Err(RequestError::BadRequest(
            "the node answered a scan with something else".into(),
        )),
    }
}

/// The literal bytes a glob pattern's matches all start with.
fn literal_prefix(pattern: &[u8]) -> Bytes {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    Bytes::copy_from_slice(&pattern[..end])
}

/// Runs a planned scan command.
pub(super) async fn run(
    handle: &NodeHandle,
    kind: &ScanKind,
    ks: &str,
    c: Option<Consistency>,
) -> Reply {
    match kind {
        ScanKind::Scan {
            from,
            pattern,
            count,
        } => {
            if *count == 0 {
                return scan_reply(0, Vec::new());
            }
            let prefix = pattern.as_deref().map(literal_prefix).unwrap_or_default();
            let mut cursor = ScanCursor {
                token: *from,
                after: None,
            };
            let mut keys = Vec::new();
            // A page that ends inside a token (more keys on one 64-bit
            // token than COUNT: a hash collision) cannot be named by a
            // numeric cursor, so the next pages are fetched at once.
            loop {
                match page(handle, ks, c, &prefix, cursor, *count).await {
                    Ok((entries, next)) => {
                        keys.extend(
                            entries
                                .into_iter()
                                .map(|(k, _)| k)
                                .filter(|k| pattern.as_ref().is_none_or(|p| glob_match(p, k))),
                        );
                        match next {
                            None => return scan_reply(0, keys),
                            Some(n) if n.after.is_none() => return scan_reply(n.token.0, keys),
                            Some(n) => cursor = n,
                        }
                    }
                    Err(e) => return request_error(&e),
                }
            }
        }
        ScanKind::Keys(pattern) => {
            let prefix = literal_prefix(pattern);
            let mut cursor = ScanCursor::start();
            let mut keys = Vec::new();
            loop {
                let limit = cassio_core::scan::MAX_PAGE;
                match page(handle, ks, c, &prefix, cursor, limit).await {
                    Ok((entries, next)) => {
                        keys.extend(
                            entries
                                .into_iter()
                                .map(|(k, _)| k)
                                .filter(|k| glob_match(pattern, k)),
                        );
                        if keys.len() > KEYS_MAX {
                            return Reply::Error(format!(
                                "ERR KEYS matched more than {KEYS_MAX} keys; use SCAN with MATCH to page through them"
                            ));
                        }
                        match next {
                            None => {
                                return Reply::Array(
                                    keys.into_iter().map(|k| Reply::Bulk(Some(k))).collect(),
                                )
                            }
                            Some(n) => cursor = n,
                        }
                    }
                    Err(e) => return request_error(&e),
                }
            }
        }
        ScanKind::DbSize => {
            let mut cursor = ScanCursor::start();
            let mut n = 0usize;
            loop {
                let limit = DBSIZE_SAMPLE.saturating_sub(n).max(1);
                match page(handle, ks, c, &Bytes::new(), cursor, limit).await {
                    Ok((entries, next)) => {
                        n += entries.len();
                        match next {
                            None => return Reply::Int(i64::try_from(n).unwrap_or(i64::MAX)),
                            Some(next) if n >= DBSIZE_SAMPLE => {
                                return Reply::Int(extrapolate(n, next.token))
                            }
                            Some(next) => cursor = next,
                        }
                    }
                    Err(e) => return request_error(&e),
                }
            }
        }
    }
}

/// `n` keys lay before token `reached`: about `n / (reached / 2^64)` in all.
fn extrapolate(n: usize, reached: Token) -> i64 {
    let share = (reached.0 as f64 / u64::MAX as f64).max(f64::MIN_POSITIVE);
    let est = (n as f64 / share).round();
    if est >= i64::MAX as f64 {
        i64::MAX
    } else {
        est as i64
    }
}

fn scan_reply(cursor: u64, keys: Vec<Bytes>) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Some(Bytes::from(cursor.to_string()))),
        Reply::Array(keys.into_iter().map(|k| Reply::Bulk(Some(k))).collect()),
    ])
}

/// Redis's glob match (`stringmatchlen`): `*` any run of bytes, `?` one
/// byte, `[abc]`, `[^a]`, `[a-z]` a class, `\x` the byte `x`.
pub(crate) fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index, string index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // An unclosed `[` is a literal.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last `*` swallow one more byte.
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches byte `c` against the class starting at `pattern[at] == b'['`:
/// whether it matched and the index after the class, or `None` when the
/// class is not closed.
fn class(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = at + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let b = *pattern.get(j)?;
        if b == b']' && !first {
            break;
        }
        first = false;
        if b == b'\\' {
            let e = *pattern.get(j + 1)?;
            matched |= e == c;
            j += 2;
        } else if pattern.get(j + 1) == Some(&b'-')
            && pattern.get(j + 2).is_some_and(|&e| e != b']')
        {
            let (lo, hi) = (b.min(pattern[j + 2]), b.max(pattern[j + 2]));
            matched |= lo <= c && c <= hi;
            j += 3;
        } else {
            matched |= b == c;
            j += 1;
        }
    }
    Some((matched != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_redis_does() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "hllo"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("user:*:name", "user:42:name"),
            ("a\\*b", "a*b"),
            ("a[\\]]b", "a]b"),
            ("*a*b*", "xxaxxbxx"),
            ("[abc", "[abc"),
        ];
        for (p, s) in yes {
            assert!(
                glob_match(p.as_bytes(), s.as_bytes()),
                "{p} should match {s}"
            );
        }
        let no: &[(&str, &str)] = &[
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h[a-b]llo", "hcllo"),
            ("a\\*b", "axb"),
            ("user:*", "users"),
            ("*a*b", "xxbxxa"),
            ("", "x"),
        ];
        for (p, s) in no {
            assert!(
                !glob_match(p.as_bytes(), s.as_bytes()),
                "{p} should not match {s}"
            );
        }
        // Binary keys match byte by byte.
        assert!(glob_match(b"\xff*", b"\xff\x00\x01"));
    }

    #[test]
    fn the_literal_prefix_stops_at_the_first_special_byte() {
        assert_eq!(literal_prefix(b"user:*"), Bytes::from_static(b"user:"));
        assert_eq!(literal_prefix(b"a\\*b"), Bytes::from_static(b"a"));
        assert_eq!(literal_prefix(b"*"), Bytes::new());
        assert_eq!(literal_prefix(b"plain"), Bytes::from_static(b"plain"));
    }

    #[test]
    fn scan_arguments_are_checked() {
        let a =
            |v: &[&str]| -> Vec<Bytes> { v.iter().map(|s| Bytes::from(s.to_string())).collect() };
        assert!(plan("SCAN", &a(&["SCAN"])).is_err());
        assert!(plan("SCAN", &a(&["SCAN", "x"])).is_err());
        assert!(plan("SCAN", &a(&["SCAN", "0", "COUNT", "0"])).is_err());
        assert!(plan("SCAN", &a(&["SCAN", "0", "MATCH"])).is_err());
        assert!(plan("SCAN", &a(&["SCAN", "0", "BOGUS", "1"])).is_err());
        assert!(matches!(
            plan("SCAN", &a(&["SCAN", "123", "match", "k*", "count", "50"])),
            Ok(IoKind::Scan(ScanKind::Scan {
                from: Token(123),
                count: 50,
                ..
            }))
        ));
        assert!(matches!(
            plan("SCAN", &a(&["SCAN", "0", "TYPE", "hash"])),
            Ok(IoKind::Scan(ScanKind::Scan { count: 0, .. }))
        ));
        assert!(plan("KEYS", &a(&["KEYS"])).is_err());
        assert!(plan("DBSIZE", &a(&["DBSIZE", "x"])).is_err());
    }

    #[test]
    fn dbsize_extrapolates_from_the_token_share() {
        assert_eq!(extrapolate(1000, Token(u64::MAX / 4)), 4000);
        assert_eq!(extrapolate(1000, Token(u64::MAX)), 1000);
    }
}

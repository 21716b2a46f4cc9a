//! RESP expiry and conditional-write commands: `SET key value [NX|XX]
//! [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`, `SETEX`, `PSETEX`, `SETNX`,
//! `GETEX`, `GETDEL`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (each
//! with `NX|XX|GT|LT`), `TTL`, `PTTL`, `PERSIST`.
//!
//! An expiry is part of the stored version, in the cluster's HLC time (see
//! [`cassio_core::Versioned`]): every replica agrees when the value ends.
//! A relative expiry (`EX`, `EXPIRE`) counts from the write's timestamp;
//! an absolute one (`EXAT`, `EXPIREAT`) is Unix time, which HLC time follows.
//!
//! Honest semantics in last-write-wins keyspaces: everything here that
//! looks at the current value first (`NX`, `XX`, `GET`, `KEEPTTL`, `SETNX`,
//! `GETDEL`, `GETEX` with an option, `EXPIRE*`, `PERSIST`) is a read
//! followed by a write, each at the connection's consistency level, and is
//! **not atomic across concurrent writers**: two clients may both succeed
//! a `SETNX`, and an `EXPIRE` racing a `SET` of the same key may write the
//! value it read back over the newer one (with the new expiry). A plain
//! `SET ... EX` is a single write.
//!
//! On a chain-replicated (`craq`) keyspace, which keeps no expiries, `SET
//! k v NX` and `SETNX` are one atomic compare-and-set against absence;
//! `SET k v IFEQ old` (Valkey 8.1) sets only if the current value is `old`
//! (`+OK`, or nil when it is not), atomically, and is refused on a
//! last-write-wins keyspace; with `NX`/`XX` it is a syntax error, with
//! `GET` or an expiry refused. The other commands here are refused there.
//!
//! Replies are Redis's: `TTL`/`PTTL` answer -2 for a missing key and -1 for
//! one without expiry; `EXPIRE*`/`PERSIST` answer 1 or 0; a bad number is
//! `ERR value is not an integer or out of range`; a zero, negative or
//! overflowing time in `SET`/`SETEX`/`GETEX` is `ERR invalid expire time in
//! '<cmd>' command`. As in Redis, `EXPIRE` with a time already past deletes
//! the key.

use super::{err, execute, request_error, wrong_arity, IoKind, Plan, Reply, PROTOCOL};
use crate::handle::{NodeHandle, RequestError};
use bytes::Bytes;
use cassio_core::{ClientError, ClientOp, ClientRequest, ClientResponse, Consistency, Expiry};

/// Microseconds in a millisecond and a second.
const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;

/// When a write ends, as a command asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ttl {
    /// No expiry option: the value never ends (a plain `SET` drops any TTL).
    None,
    /// Keep the current value's expiry (`KEEPTTL`).
    Keep,
    /// Drop the expiry (`GETEX ... PERSIST`).
    Persist,
    /// An expiry.
    At(Expiry),
}

/// `NX|XX|GT|LT` of the `EXPIRE` family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExpireCond {
    Always,
    /// Only when the key has no expiry.
    Nx,
    /// Only when it has one.
    Xx,
    /// Only when the new expiry is later (no expiry counts as infinite).
    Gt,
    /// Only when the new expiry is earlier.
    Lt,
}

/// One parsed command's node work.
#[derive(Debug)]
pub(super) enum ExpiryOp {
    /// `SET` with options, `SETEX`, `PSETEX`, `SETNX`.
    Set {
        key: Bytes,
        value: Bytes,
        /// `Some(true)`: NX, `Some(false)`: XX.
        only_if_missing: Option<bool>,
        /// `GET`: answer the old value.
        get: bool,
        ttl: Ttl,
        /// `SETNX` answers 1/0 instead of OK/nil.
        int_reply: bool,
    },
    /// `SET key value IFEQ old` (Valkey 8.1): compare-and-set, craq
    /// keyspaces only.
    IfEq {
        key: Bytes,
        value: Bytes,
        expected: Bytes,
    },
    /// `GETEX key [option]`.
    GetEx { key: Bytes, ttl: Option<Ttl> },
    /// `GETDEL key`.
    GetDel { key: Bytes },
    /// `EXPIRE` family: a relative or absolute expiry, in micros; `None`:
    /// already past (delete the key).
    Expire {
        key: Bytes,
        expiry: Expiry,
        cond: ExpireCond,
    },
    /// `TTL` (`ms: false`) or `PTTL`.
    Ttl { key: Bytes, ms: bool },
    /// `PERSIST key`.
    Persist { key: Bytes },
}

impl ExpiryOp {
    /// The key the command addresses.
    pub(super) fn key(&self) -> &Bytes {
        match self {
            ExpiryOp::Set { key, .. }
            | ExpiryOp::IfEq { key, .. }
            | ExpiryOp::GetEx { key, .. }
            | ExpiryOp::GetDel { key }
            | ExpiryOp::Expire { key, .. }
            | ExpiryOp::Ttl { key, .. }
            | ExpiryOp::Persist { key } => key,
        }
    }

    /// True when the command may write (the user needs write access).
    pub(super) fn writes(&self) -> bool {
        !matches!(
            self,
            ExpiryOp::Ttl { .. } | ExpiryOp::GetEx { ttl: None, .. }
        )
    }
}

/// The commands this module answers (for `COMMAND` and the unknown-command
/// listing): name, arity, flags, first key, last key, step.
pub(super) const COMMANDS: &[super::CommandSpec] = &[
    ("setex", 4, &["write", "denyoom"], 1, 1, 1),
    ("psetex", 4, &["write", "denyoom"], 1, 1, 1),
    ("setnx", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("getex", -2, &["write", "fast"], 1, 1, 1),
    ("getdel", 2, &["write", "fast"], 1, 1, 1),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("expireat", -3, &["write", "fast"], 1, 1, 1),
    ("pexpireat", -3, &["write", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("persist", 2, &["write", "fast"], 1, 1, 1),
];

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn invalid_expire(cmd: &str) -> Plan {
    err(format!("ERR invalid expire time in '{cmd}' command"))
}

/// A Redis integer argument.
fn int_arg(a: &Bytes) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse::<i64>().ok()
}

/// The expiry of an `EX|PX|EXAT|PXAT n` option: `n` must be positive and
/// the result must fit (Redis refuses the same).
fn option_expiry(opt: &str, n: i64, cmd: &str) -> Result<Expiry, Plan> {
    if n <= 0 {
        return Err(invalid_expire(cmd));
    }
    let n = n.unsigned_abs();
    let micros = match opt {
        "EX" | "EXAT" => n.checked_mul(SEC),
        _ => n.checked_mul(MS),
    };
    // Redis keeps expiries in i64 milliseconds; past that is refused.
    let Some(micros) = micros.filter(|m| *m / MS <= i64::MAX as u64 / 2) else {
        return Err(invalid_expire(cmd));
    };
    Ok(match opt {
        "EX" | "PX" => Expiry::After(micros),
        _ => Expiry::At(micros),
    })
}

/// Plans the commands of this module; `None` for any other command (and
/// for a plain `SET key value`, which `resp.rs` handles itself).
pub(super) fn plan(name: &str, args: &[Bytes]) -> Option<Result<ExpiryOp, Plan>> {
    let argc = args.len();
    Some(match name {
        "SET" if argc > 3 => set(args),
        "SETEX" | "PSETEX" => {
            if argc != 4 {
                return Some(Err(wrong_arity(name)));
            }
            let lower = name.to_ascii_lowercase();
            let Some(n) = int_arg(&args[2]) else {
                return Some(Err(err(NOT_INTEGER)));
            };
            let opt = if name == "SETEX" { "EX" } else { "PX" };
            option_expiry(opt, n, &lower).map(|e| ExpiryOp::Set {
                key: args[1].clone(),
                value: args[3].clone(),
                only_if_missing: None,
                get: false,
                ttl: Ttl::At(e),
                int_reply: false,
            })
        }
        "SETNX" => {
            if argc != 3 {
                return Some(Err(wrong_arity(name)));
            }
            Ok(ExpiryOp::Set {
                key: args[1].clone(),
                value: args[2].clone(),
                only_if_missing: Some(true),
                get: false,
                ttl: Ttl::None,
                int_reply: true,
            })
        }
        "GETEX" => getex(args),
        "GETDEL" => {
            if argc != 2 {
                return Some(Err(wrong_arity(name)));
            }
            Ok(ExpiryOp::GetDel {
                key: args[1].clone(),
            })
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => expire(name, args),
        "TTL" | "PTTL" => {
            if argc != 2 {
                return Some(Err(wrong_arity(name)));
            }
            Ok(ExpiryOp::Ttl {
                key: args[1].clone(),
                ms: name == "PTTL",
            })
        }
        "PERSIST" => {
            if argc != 2 {
                return Some(Err(wrong_arity(name)));
            }
            Ok(ExpiryOp::Persist {
                key: args[1].clone(),
            })
        }
        _ => return None,
    })
}

/// `SET key value [NX|XX|IFEQ old] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`
/// (`IFEQ` alone: Cassio's compare-and-set takes no other option).
fn set(args: &[Bytes]) -> Result<ExpiryOp, Plan> {
    let mut if_eq: Option<Bytes> = None;
    let mut only_if_missing = None;
    let mut get = false;
    let mut ttl = Ttl::None;
    let mut i = 3;
    while i < args.len() {
        let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
        match opt.as_str() {
            "NX" | "XX" if only_if_missing.is_none() && if_eq.is_none() => {
                only_if_missing = Some(opt == "NX");
            }
            "IFEQ" if only_if_missing.is_none() && if_eq.is_none() => {
                let Some(old) = args.get(i + 1) else {
                    return Err(err(SYNTAX));
                };
                if_eq = Some(old.clone());
                i += 1;
            }
            "GET" if !get => get = true,
            "KEEPTTL" if ttl == Ttl::None => ttl = Ttl::Keep,
            "EX" | "PX" | "EXAT" | "PXAT" if ttl == Ttl::None => {
                let Some(n) = args.get(i + 1) else {
                    return Err(err(SYNTAX));
                };
                let Some(n) = int_arg(n) else {
                    return Err(err(NOT_INTEGER));
                };
                ttl = Ttl::At(option_expiry(&opt, n, "set")?);
                i += 1;
            }
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    if let Some(expected) = if_eq {
        if get || ttl != Ttl::None {
            return Err(err(
                "ERR SET ... IFEQ takes no GET, EX, PX, EXAT, PXAT or KEEPTTL in Cassio (a compare-and-set of the value alone)",
            ));
        }
        return Ok(ExpiryOp::IfEq {
            key: args[1].clone(),
            value: args[2].clone(),
            expected,
        });
    }
    Ok(ExpiryOp::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        only_if_missing,
        get,
        ttl,
        int_reply: false,
    })
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`.
fn getex(args: &[Bytes]) -> Result<ExpiryOp, Plan> {
    if args.len() < 2 {
        return Err(wrong_arity("GETEX"));
    }
    let key = args[1].clone();
    let opt = args
        .get(2)
        .map(|o| String::from_utf8_lossy(o).to_ascii_uppercase());
    let ttl = match (opt.as_deref(), args.len()) {
        (None, 2) => None,
        (Some("PERSIST"), 3) => Some(Ttl::Persist),
        (Some(o @ ("EX" | "PX" | "EXAT" | "PXAT")), 4) => {
            let Some(n) = int_arg(&args[3]) else {
                return Err(err(NOT_INTEGER));
            };
            Some(Ttl::At(option_expiry(o, n, "getex")?))
        }
        _ => return Err(err(SYNTAX)),
    };
    Ok(ExpiryOp::GetEx { key, ttl })
}

/// `EXPIRE|PEXPIRE|EXPIREAT|PEXPIREAT key n [NX|XX|GT|LT]`.
fn expire(name: &str, args: &[Bytes]) -> Result<ExpiryOp, Plan> {
    if args.len() < 3 {
        return Err(wrong_arity(name));
    }
    let Some(n) = int_arg(&args[2]) else {
        return Err(err(NOT_INTEGER));
    };
    let mut cond = ExpireCond::Always;
    for a in &args[3..] {
        let c = match String::from_utf8_lossy(a).to_ascii_uppercase().as_str() {
            "NX" => ExpireCond::Nx,
            "XX" => ExpireCond::Xx,
            "GT" => ExpireCond::Gt,
            "LT" => ExpireCond::Lt,
            other => {
                return Err(err(format!(
                    "ERR Unsupported option {}",
                    other.chars().take(64).collect::<String>()
                )))
            }
        };
        if cond != ExpireCond::Always && cond != c {
            return Err(err(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        cond = c;
    }
    let unit = if name.starts_with('P') { MS } else { SEC };
    let lower = name.to_ascii_lowercase();
    // A time already past is valid (it deletes the key); only overflow is
    // refused, as Redis does.
    let micros = i128::from(n) * i128::from(unit);
    if micros.unsigned_abs() > (i64::MAX as u128) {
        return Err(invalid_expire(&lower));
    }
    let expiry = if name.ends_with("AT") {
        Expiry::At(u64::try_from(micros).unwrap_or(0))
    } else if micros <= 0 {
        Expiry::At(0)
    } else {
        Expiry::After(u64::try_from(micros).unwrap_or(0))
    };
    Ok(ExpiryOp::Expire {
        key: args[1].clone(),
        expiry,
        cond,
    })
}

/// What a read of a key found, judged by the coordinator at its HLC time.
struct Entry {
    value: Option<Bytes>,
    expires: Option<u64>,
    now: u64,
}

struct Ctx<'a> {
    handle: &'a NodeHandle,
    c: Option<Consistency>,
    ks: &'a str,
}

impl Ctx<'_> {
    fn req(&self, op: ClientOp) -> ClientRequest {
        ClientRequest {
            keyspace: self.ks.to_string(),
            op,
            consistency: self.c,
        }
    }

    async fn entry(&self, key: &Bytes) -> Result<Entry, RequestError> {
        let op = ClientOp::GetEntry { key: key.clone() };
        match execute(self.handle, PROTOCOL, self.req(op)).await? {
            ClientResponse::Entry {
                value,
                expires,
                now_micros,
            } => Ok(Entry {
                expires: expires.filter(|_| value.is_some()),
                value,
                now: now_micros,
            }),
            other => Err(RequestError::BadRequest(format!(
                "the node answered a read with {other:?}"
            ))),
        }
    }

    /// Writes `value` ending at `expires` (`None`: never).
    async fn put(
        &self,
        key: &Bytes,
        value: &Bytes,
        expiry: Option<Expiry>,
    ) -> Result<(), RequestError> {
        let op = match expiry {
            None => ClientOp::Put {
                key: key.clone(),
                value: value.clone(),
            },
            Some(expiry) => ClientOp::PutExpiring {
                key: key.clone(),
                value: value.clone(),
                expiry,
            },
        };
        execute(self.handle, PROTOCOL, self.req(op))
            .await
            .map(|_| ())
    }

    /// Compare-and-set (craq keyspaces): whether `value` was set.
    async fn cas(
        &self,
        key: &Bytes,
        expected: Option<&Bytes>,
        value: &Bytes,
    ) -> Result<bool, RequestError> {
        let op = ClientOp::Cas {
            key: key.clone(),
            expected: expected.cloned(),
            new: value.clone(),
        };
        match execute(self.handle, PROTOCOL, self.req(op)).await? {
            ClientResponse::Swapped(s) => Ok(s),
            other => Err(RequestError::BadRequest(format!(
                "the node answered a compare-and-set with {other:?}"
            ))),
        }
    }

    async fn delete(&self, key: &Bytes) -> Result<(), RequestError> {
        let op = ClientOp::Delete { key: key.clone() };
        execute(self.handle, PROTOCOL, self.req(op))
            .await
            .map(|_| ())
    }
}

/// Runs one command of this module.
pub(super) async fn run(
    handle: &NodeHandle,
    op: &ExpiryOp,
    c: Option<Consistency>,
    ks: &str,
) -> Reply {
    let ctx = Ctx { handle, c, ks };
    match run_inner(&ctx, op).await {
        Ok(r) => r,
        Err(e) => request_error(&e),
    }
}

async fn run_inner(ctx: &Ctx<'_>, op: &ExpiryOp) -> Result<Reply, RequestError> {
    match op {
        ExpiryOp::Set {
            key,
            value,
            only_if_missing,
            get,
            ttl,
            int_reply,
        } => {
            let needs_read = only_if_missing.is_some() || *get || *ttl == Ttl::Keep;
            let old = if needs_read {
                match ctx.entry(key).await {
                    Ok(e) => Some(e),
                    // A craq keyspace refuses the entry read (it keeps no
                    // expiries), before sending anything: there a plain
                    // NX is one atomic compare-and-set against absence.
                    Err(RequestError::Client(ClientError::InvalidOp(_)))
                        if *only_if_missing == Some(true) && !*get && *ttl == Ttl::None =>
                    {
                        let set = ctx.cas(key, None, value).await?;
                        return Ok(match (int_reply, set) {
                            (true, s) => Reply::Int(i64::from(s)),
                            (false, true) => Reply::Simple("OK"),
                            (false, false) => Reply::Bulk(None),
                        });
                    }
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            let exists = old.as_ref().is_some_and(|e| e.value.is_some());
            let go = match only_if_missing {
                Some(true) => !exists,
                Some(false) => exists,
                None => true,
            };
            if go {
                let expiry = match ttl {
                    Ttl::None | Ttl::Persist => None,
                    Ttl::At(e) => Some(*e),
                    Ttl::Keep => old.as_ref().and_then(|e| e.expires).map(Expiry::At),
                };
                ctx.put(key, value, expiry).await?;
            }
            let old_value = old.and_then(|e| e.value);
            Ok(match (int_reply, get, go) {
                (true, _, go) => Reply::Int(i64::from(go)),
                (false, true, _) => Reply::Bulk(old_value),
                (false, false, true) => Reply::Simple("OK"),
                (false, false, false) => Reply::Bulk(None),
            })
        }
        ExpiryOp::IfEq {
            key,
            value,
            expected,
        } => Ok(if ctx.cas(key, Some(expected), value).await? {
            Reply::Simple("OK")
        } else {
            Reply::Bulk(None)
        }),
        ExpiryOp::GetEx { key, ttl } => {
            let e = ctx.entry(key).await?;
            if let (Some(v), Some(ttl)) = (&e.value, ttl) {
                match ttl {
                    Ttl::Persist if e.expires.is_some() => ctx.put(key, v, None).await?,
                    Ttl::At(x) => ctx.put(key, v, Some(*x)).await?,
                    _ => {}
                }
            }
            Ok(Reply::Bulk(e.value))
        }
        ExpiryOp::GetDel { key } => {
            let e = ctx.entry(key).await?;
            if e.value.is_some() {
                ctx.delete(key).await?;
            }
            Ok(Reply::Bulk(e.value))
        }
        ExpiryOp::Expire { key, expiry, cond } => {
            let e = ctx.entry(key).await?;
            let Some(v) = &e.value else {
                return Ok(Reply::Int(0));
            };
            // The new deadline as the coordinator's clock sees it now (for
            // the GT/LT comparison and the "already past" check).
            let new_at = expiry.resolve(e.now);
            let allowed = match cond {
                ExpireCond::Always => true,
                ExpireCond::Nx => e.expires.is_none(),
                ExpireCond::Xx => e.expires.is_some(),
                ExpireCond::Gt => e.expires.is_some_and(|cur| new_at > cur),
                ExpireCond::Lt => e.expires.is_none_or(|cur| new_at < cur),
            };
            if !allowed {
                return Ok(Reply::Int(0));
            }
            if new_at <= e.now {
                ctx.delete(key).await?;
            } else {
                ctx.put(key, v, Some(*expiry)).await?;
            }
            Ok(Reply::Int(1))
        }
        ExpiryOp::Ttl { key, ms } => {
            let e = ctx.entry(key).await?;
            Ok(Reply::Int(match (&e.value, e.expires) {
                (None, _) => -2,
                (Some(_), None) => -1,
                (Some(_), Some(at)) => {
                    let left_ms = at.saturating_sub(e.now).div_ceil(MS);
                    let n = if *ms {
                        left_ms
                    } else {
                        // Redis rounds the seconds left to the nearest.
                        (left_ms + 500) / 1000
                    };
                    i64::try_from(n).unwrap_or(i64::MAX)
                }
            }))
        }
        ExpiryOp::Persist { key } => {
            let e = ctx.entry(key).await?;
            match (&e.value, e.expires) {
                (Some(v), Some(_)) => {
                    ctx.put(key, v, None).await?;
                    Ok(Reply::Int(1))
                }
                _ => Ok(Reply::Int(0)),
            }
        }
    }
}

/// The node work of one of this module's commands, as `resp.rs` plans it.
pub(super) fn io_kind(op: ExpiryOp) -> IoKind {
    IoKind::Expiry(Box::new(op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn planned(s: &str) -> Result<ExpiryOp, String> {
        let a = args(s);
        let name = String::from_utf8_lossy(&a[0]).to_ascii_uppercase();
        match plan(&name, &a) {
            None => Err("not ours".into()),
            Some(Ok(op)) => Ok(op),
            Some(Err(Plan::Ready(Reply::Error(e)))) => Err(e),
            Some(Err(other)) => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn set_options_parse_as_redis_does() {
        let Ok(ExpiryOp::Set { ttl, .. }) = planned("SET k v EX 10") else {
            panic!("EX");
        };
        assert_eq!(ttl, Ttl::At(Expiry::After(10 * SEC)));
        let Ok(ExpiryOp::Set { ttl, .. }) = planned("SET k v pxat 1500") else {
            panic!("PXAT");
        };
        assert_eq!(ttl, Ttl::At(Expiry::At(1_500 * MS)));
        let Ok(ExpiryOp::Set {
            only_if_missing,
            get,
            ttl,
            ..
        }) = planned("SET k v XX GET KEEPTTL")
        else {
            panic!("XX GET KEEPTTL");
        };
        assert_eq!((only_if_missing, get, ttl), (Some(false), true, Ttl::Keep));
        assert_eq!(
            planned("SET k v EX ten").err().as_deref(),
            Some(NOT_INTEGER)
        );
        for bad in [
            "SET k v EX 0",
            "SET k v PX -5",
            "SET k v EX 9223372036854775807",
        ] {
            assert_eq!(
                planned(bad).err().as_deref(),
                Some("ERR invalid expire time in 'set' command"),
                "{bad}"
            );
        }
        for bad in [
            "SET k v EX 1 PX 1",
            "SET k v NX XX",
            "SET k v EX",
            "SET k v KEEPTTL EX 1",
            "SET k v WHAT",
        ] {
            assert_eq!(planned(bad).err().as_deref(), Some(SYNTAX), "{bad}");
        }
        assert_eq!(planned("SET k v").err().as_deref(), Some("not ours"));
        let Ok(ExpiryOp::IfEq { expected, .. }) = planned("SET k v ifeq old") else {
            panic!("IFEQ");
        };
        assert_eq!(&expected[..], b"old");
        for bad in ["SET k v IFEQ", "SET k v NX IFEQ a", "SET k v IFEQ a XX"] {
            assert_eq!(planned(bad).err().as_deref(), Some(SYNTAX), "{bad}");
        }
        assert!(planned("SET k v IFEQ a GET").is_err());
        assert!(planned("SET k v IFEQ a EX 5").is_err());
    }

    #[test]
    fn the_other_commands_check_their_arguments() {
        assert_eq!(
            planned("SETEX k 0 v").err().as_deref(),
            Some("ERR invalid expire time in 'setex' command")
        );
        assert_eq!(planned("PSETEX k x v").err().as_deref(), Some(NOT_INTEGER));
        assert_eq!(planned("EXPIRE k 1.5").err().as_deref(), Some(NOT_INTEGER));
        assert_eq!(
            planned("EXPIRE k 10 NX XX").err().as_deref(),
            Some("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        assert!(matches!(
            planned("EXPIRE k -1"),
            Ok(ExpiryOp::Expire {
                expiry: Expiry::At(0),
                ..
            })
        ));
        assert!(matches!(
            planned("PEXPIREAT k 5000"),
            Ok(ExpiryOp::Expire {
                expiry: Expiry::At(5_000_000),
                ..
            })
        ));
        assert_eq!(
            planned("GETEX k EX 0").err().as_deref(),
            Some("ERR invalid expire time in 'getex' command")
        );
        assert_eq!(planned("GETEX k PERSIST x").err().as_deref(), Some(SYNTAX));
        assert!(matches!(
            planned("TTL k"),
            Ok(ExpiryOp::Ttl { ms: false, .. })
        ));
        assert!(!planned("TTL k").expect("ttl").writes());
        assert!(planned("PERSIST k").expect("persist").writes());
    }
}

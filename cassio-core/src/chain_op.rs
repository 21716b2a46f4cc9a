//! What a write of a chain-replicated (CRAQ) keyspace does, decided at the
//! head against the key's newest version, dirty included (used by
//! [`crate::chain`]).
//!
//! The head orders a key's writes and the chain keeps that order, so a
//! compare-and-set or an increment decided against the newest version is
//! linearizable without locks elsewhere. The semantics are the register's
//! of `conformance::linearizability`, which judges the histories.

use crate::types::Value;
use serde::{Deserialize, Serialize};

/// A write a client asks of a CRAQ keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainOp {
    /// Set the value.
    Put(Value),
    /// Remove the value.
    Delete,
    /// Set `new` if and only if the current value is `expected` (`None`:
    /// only if absent).
    Cas {
        /// The value required.
        expected: Option<Value>,
        /// The value set if it matches.
        new: Value,
    },
    /// Add `delta` to the value read as a decimal `i64` (absent: 0).
    Incr(i64),
}

/// What the head answers the client, once the write (if any) committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainReply {
    /// The put or delete is done.
    Done,
    /// The compare-and-set swapped (`true`) or found another value.
    Swapped(bool),
    /// The increment's new value.
    Counter(i64),
}

/// Why the head refuses a write without changing anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ChainOpError {
    /// An increment of a value that is not a decimal `i64`.
    #[error("the value is not a decimal integer")]
    NotAnInteger,
    /// An increment past `i64`'s range.
    #[error("the increment overflows a 64-bit integer")]
    Overflow,
}

/// What the head does with a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The next version's value (`Some(None)`: a delete), or `None`: no
    /// new version (a compare-and-set that did not match).
    pub write: Option<Option<Value>>,
    /// The answer, given once the new version (if any) committed.
    pub reply: ChainReply,
}

fn decision(write: Option<Option<Value>>, reply: ChainReply) -> Decision {
    Decision { write, reply }
}

/// What `op` does to a key whose newest value is `current`.
pub fn decide(op: &ChainOp, current: Option<&Value>) -> Result<Decision, ChainOpError> {
    match op {
        ChainOp::Put(v) => Ok(decision(Some(Some(v.clone())), ChainReply::Done)),
        ChainOp::Delete => Ok(decision(Some(None), ChainReply::Done)),
        ChainOp::Cas { expected, new } => {
            if current == expected.as_ref() {
                Ok(decision(Some(Some(new.clone())), ChainReply::Swapped(true)))
            } else {
                Ok(decision(None, ChainReply::Swapped(false)))
            }
        }
        ChainOp::Incr(delta) => {
            let now = match current {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or(ChainOpError::NotAnInteger)?,
            };
            let next = now.checked_add(*delta).ok_or(ChainOpError::Overflow)?;
            Ok(decision(
                Some(Some(Value::from(next.to_string()))),
                ChainReply::Counter(next),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        Value::from(s.to_owned())
    }

    #[test]
    fn puts_and_deletes_always_write() {
        assert_eq!(
            decide(&ChainOp::Put(v("a")), Some(&v("b"))),
            Ok(decision(Some(Some(v("a"))), ChainReply::Done))
        );
        assert_eq!(
            decide(&ChainOp::Delete, None),
            Ok(decision(Some(None), ChainReply::Done))
        );
    }

    #[test]
    fn a_compare_and_set_writes_only_on_a_match() {
        let create = ChainOp::Cas {
            expected: None,
            new: v("x"),
        };
        assert_eq!(
            decide(&create, None),
            Ok(decision(Some(Some(v("x"))), ChainReply::Swapped(true)))
        );
        assert_eq!(
            decide(&create, Some(&v("x"))),
            Ok(decision(None, ChainReply::Swapped(false)))
        );
        let swap = ChainOp::Cas {
            expected: Some(v("x")),
            new: v("y"),
        };
        assert_eq!(
            decide(&swap, Some(&v("x"))),
            Ok(decision(Some(Some(v("y"))), ChainReply::Swapped(true)))
        );
        assert_eq!(
            decide(&swap, Some(&v("z"))),
            Ok(decision(None, ChainReply::Swapped(false)))
        );
        assert_eq!(
            decide(&swap, None),
            Ok(decision(None, ChainReply::Swapped(false)))
        );
    }

    #[test]
    fn increments_count_from_zero_and_refuse_what_is_not_an_integer() {
        assert_eq!(
            decide(&ChainOp::Incr(5), None),
            Ok(decision(Some(Some(v("5"))), ChainReply::Counter(5)))
        );
        assert_eq!(
            decide(&ChainOp::Incr(-7), Some(&v("5"))),
            Ok(decision(Some(Some(v("-2"))), ChainReply::Counter(-2)))
        );
        assert_eq!(
            decide(&ChainOp::Incr(1), Some(&v("abc"))),
            Err(ChainOpError::NotAnInteger)
        );
        assert_eq!(
            decide(&ChainOp::Incr(1), Some(&Value::from_static(&[0xff, 0x31]))),
            Err(ChainOpError::NotAnInteger)
        );
        assert_eq!(
            decide(&ChainOp::Incr(1), Some(&v(&i64::MAX.to_string()))),
            Err(ChainOpError::Overflow)
        );
    }
}

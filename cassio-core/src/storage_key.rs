//! The layout of keys in the store: a storage key is the keyspace's name,
//! the key's token and the key, so each keyspace's keys are contiguous and
//! in token order, and a token range is one contiguous range of storage
//! keys.

use crate::types::{Key, Token};
use bytes::{BufMut, BytesMut};

/// The key under which `key` of `keyspace` is stored: one length byte, the
/// keyspace name, the key's token (8 bytes, big-endian), then the key. Keys
/// of one keyspace are contiguous and in token order, as in Cassandra, so
/// a token range (an anti-entropy segment, a range that moves to a new
/// owner) is one contiguous range of storage keys.
pub fn storage_key(keyspace: &str, key: &[u8]) -> Key {
    let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8 + key.len());
    // Keyspace names are validated to 1..=255 bytes when the node is built.
    b.put_u8(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
    b.put_slice(keyspace.as_bytes());
    b.put_u64(Token::of(key).0);
    b.put_slice(key);
    b.freeze()
}

/// Splits a storage key into (keyspace, key), or `None` if malformed.
pub fn split_storage_key(skey: &[u8]) -> Option<(&str, &[u8])> {
    let (ks, _, key) = split_storage_key_token(skey)?;
    Some((ks, key))
}

/// Splits a storage key into (keyspace, token, key), or `None` if malformed.
pub fn split_storage_key_token(skey: &[u8]) -> Option<(&str, Token, &[u8])> {
    let (&len, rest) = skey.split_first()?;
    let len = usize::from(len);
    if rest.len() < len + 8 {
        return None;
    }
    let ks = std::str::from_utf8(&rest[..len]).ok()?;
    let mut t = [0u8; 8];
    t.copy_from_slice(&rest[len..len + 8]);
    Some((ks, Token(u64::from_be_bytes(t)), &rest[len + 8..]))
}

/// The storage-key bounds of the keys of `keyspace` whose tokens lie in
/// `first..=last`.
pub fn token_range_bounds(
    keyspace: &str,
    first: Token,
    last: Token,
) -> (std::ops::Bound<Key>, std::ops::Bound<Key>) {
    use std::ops::Bound;
    let prefix = |t: u64| {
        let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8);
        b.put_u8(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
        b.put_slice(keyspace.as_bytes());
        b.put_u64(t);
        b.freeze()
    };
    let start = Bound::Included(prefix(first.0));
    let end = match last.0.checked_add(1) {
        Some(next) => Bound::Excluded(prefix(next)),
        None => {
            // The end of the ring: the keyspace's keys end where the next
            // name of the same length begins (its last byte plus one; UTF-8
            // never holds 0xFF, so there is no carry).
            let mut b = BytesMut::with_capacity(1 + keyspace.len());
            b.put_u8(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
            b.put_slice(keyspace.as_bytes());
            if let Some(last) = b.last_mut() {
                *last = last.saturating_add(1);
            }
            Bound::Excluded(b.freeze())
        }
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::{Bound, RangeBounds};

    #[test]
    fn a_storage_key_splits_back_into_its_parts() {
        let skey = storage_key("users", b"alice");
        let (ks, token, key) = split_storage_key_token(&skey).expect("well formed");
        assert_eq!(ks, "users");
        assert_eq!(token, Token::of(b"alice"));
        assert_eq!(key, b"alice");
        assert_eq!(split_storage_key(&skey), Some(("users", &b"alice"[..])));
    }

    #[test]
    fn truncated_or_non_utf8_keys_are_malformed() {
        let skey = storage_key("users", b"alice");
        // Cut inside the token: too short for name + 8 bytes.
        assert_eq!(split_storage_key_token(&skey[..1 + 5 + 7]), None);
        assert_eq!(split_storage_key_token(&[]), None);
        assert_eq!(
            split_storage_key_token(&[1, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn keys_of_a_keyspace_sort_by_token() {
        let mut keys: Vec<Key> = (0u32..50)
            .map(|i| storage_key("ks", &i.to_be_bytes()))
            .collect();
        keys.sort();
        let tokens: Vec<Token> = keys
            .iter()
            .filter_map(|k| split_storage_key_token(k).map(|(_, t, _)| t))
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn token_range_bounds_hold_exactly_the_range_and_keyspace() {
        let keys: Vec<Key> = (0u32..200)
            .map(|i| storage_key("ks", &i.to_be_bytes()))
            .collect();
        let (first, last) = (Token(u64::MAX / 4), Token(u64::MAX / 2));
        let range = token_range_bounds("ks", first, last);
        for k in &keys {
            let (_, t, _) = split_storage_key_token(k).expect("well formed");
            assert_eq!(range.contains(k), first <= t && t <= last, "{t:?}");
        }
        // The last range of the ring ends where the keyspace ends: another
        // keyspace of the same name length is outside it.
        let tail = token_range_bounds("ks", Token(0), Token(u64::MAX));
        assert!(keys.iter().all(|k| tail.contains(k)));
        assert!(!tail.contains(&storage_key("kt", b"x")));
        assert!(matches!(tail.1, Bound::Excluded(_)));
    }
}

//! The layout of keys in the store: a storage key is the keyspace's name,
//! the key's token and the key, so each keyspace's keys are contiguous and
//! in token order, and a token range is one contiguous range of storage
//! keys.

use crate::types::{Key, Token};
use bytes::{BufMut, BytesMut};

/// Writes the keyspace part every storage key starts with: one length
/// byte, then the name (names are validated to 1..=255 bytes).
fn put_keyspace(b: &mut BytesMut, keyspace: &str) {
    b.put_u8(u8::try_from(keyspace.len()).unwrap_or(u8::MAX));
    b.put_slice(keyspace.as_bytes());
}

/// The prefix every storage key of `keyspace` starts with.
pub fn keyspace_prefix(keyspace: &str) -> Key {
    let mut b = BytesMut::with_capacity(1 + keyspace.len());
    put_keyspace(&mut b, keyspace);
    b.freeze()
}

/// The key under which `key` of `keyspace` is stored: one length byte, the
/// keyspace name, the key's token (8 bytes, big-endian), then the key. Keys
/// of one keyspace are contiguous and in token order, as in Cassandra, so
/// a token range (an anti-entropy segment, a range that moves to a new
/// owner) is one contiguous range of storage keys.
pub fn storage_key(keyspace: &str, key: &[u8]) -> Key {
    let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8 + key.len());
    put_keyspace(&mut b, keyspace);
    b.put_u64(Token::of(key).0);
    b.put_slice(key);
    b.freeze()
}

/// The storage key of the item of `keyspace` on token `token` whose bytes
/// after the token are `tail`: a plain key's tail is the key itself (and
/// `token` its hash), a cell's is its row and column ([`cell_storage_key`]).
/// A scan resumes after such a key, whichever kind it is.
pub fn item_storage_key(keyspace: &str, token: Token, tail: &[u8]) -> Key {
    let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8 + tail.len());
    put_keyspace(&mut b, keyspace);
    b.put_u64(token.0);
    b.put_slice(tail);
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
        put_keyspace(&mut b, keyspace);
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
            put_keyspace(&mut b, keyspace);
            if let Some(last) = b.last_mut() {
                *last = last.saturating_add(1);
            }
            Bound::Excluded(b.freeze())
        }
    };
    (start, end)
}

/// The bytes after the token of a cell's storage key: the row's length
/// (4 bytes, big-endian), the row, then the column. The row is
/// length-prefixed so the cells of one row share one prefix and sort by
/// column name.
fn cell_tail(row: &[u8], column: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(row.len()).ok()?;
    let mut t = Vec::with_capacity(4 + row.len() + column.len());
    t.extend_from_slice(&len.to_be_bytes());
    t.extend_from_slice(row);
    t.extend_from_slice(column);
    Some(t)
}

/// The key under which column `column` of row `row` of `keyspace` is
/// stored, or `None` if the pair cannot be stored (see below).
///
/// A cell is an ordinary stored item: one length byte, the keyspace name,
/// the *row's* token (so a row lives on one replica set, and anti-entropy,
/// hints and range movements, which read the token from the storage key,
/// carry cells like any other item), then the row (length-prefixed) and
/// the column, so a row's cells are one contiguous range sorted by column.
///
/// Why no plain key can ever share these bytes: a plain key `k` is stored
/// under token `Token::of(k)` followed by `k` itself, so a storage key
/// whose token differs from the hash of the bytes after it is never a
/// plain key. A cell whose tail happens to hash to the row's token (one
/// chance in 2^64 per cell) is refused instead of stored, so every stored
/// cell key has that property ([`classify`] uses it).
pub fn cell_storage_key(keyspace: &str, row: &[u8], column: &[u8]) -> Option<Key> {
    let token = Token::of(row);
    let tail = cell_tail(row, column)?;
    if Token::of(&tail) == token {
        return None;
    }
    let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8 + tail.len());
    put_keyspace(&mut b, keyspace);
    b.put_u64(token.0);
    b.put_slice(&tail);
    Some(b.freeze())
}

/// What a storage key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredItem<'a> {
    /// A plain key.
    Plain(&'a [u8]),
    /// Column `column` of row `row`.
    Cell {
        /// The row.
        row: &'a [u8],
        /// The column.
        column: &'a [u8],
    },
}

/// Splits a storage key into its keyspace and what it holds (a plain key
/// or a cell), or `None` if it is neither.
pub fn classify(skey: &[u8]) -> Option<(&str, StoredItem<'_>)> {
    let (ks, token, tail) = split_storage_key_token(skey)?;
    if Token::of(tail) == token {
        return Some((ks, StoredItem::Plain(tail)));
    }
    let (len, rest) = tail.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (row, column) = rest.split_at(len);
    (Token::of(row) == token).then_some((ks, StoredItem::Cell { row, column }))
}

/// The storage-key bounds of the cells of row `row` whose columns lie in
/// `from..` (or from the row's first column) up to `to` (exclusive;
/// `None`: the row's end). Plain keys hashing to the row's token may fall
/// inside (one chance in 2^64 each); readers keep only what [`classify`]
/// calls a cell of this row.
pub fn row_bounds(
    keyspace: &str,
    row: &[u8],
    from: Option<&[u8]>,
    to: Option<&[u8]>,
) -> Option<(Key, Key)> {
    let prefix = {
        let tail = cell_tail(row, b"")?;
        let mut b = BytesMut::with_capacity(1 + keyspace.len() + 8 + tail.len());
        put_keyspace(&mut b, keyspace);
        b.put_u64(Token::of(row).0);
        b.put_slice(&tail);
        b.freeze()
    };
    let with = |col: &[u8]| {
        let mut b = BytesMut::with_capacity(prefix.len() + col.len());
        b.put_slice(&prefix);
        b.put_slice(col);
        b.freeze()
    };
    let start = from.map_or_else(|| prefix.clone(), with);
    let end = match to {
        Some(to) => with(to),
        None => prefix_end(&prefix)?,
    };
    Some((start, end))
}

/// The bounds of the cells of `row` whose column starts with `prefix`.
pub fn row_prefix_bounds(keyspace: &str, row: &[u8], prefix: &[u8]) -> Option<(Key, Key)> {
    let (start, row_end) = row_bounds(keyspace, row, Some(prefix), None)?;
    // The first key after every column starting with `prefix`; an all-0xFF
    // prefix runs to the row's end.
    let end = prefix_end(&start)
        .filter(|e| *e < row_end)
        .unwrap_or(row_end);
    Some((start, end))
}

/// The smallest key greater than every key starting with `p`.
fn prefix_end(p: &[u8]) -> Option<Key> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < u8::MAX {
            v.push(last + 1);
            return Some(Key::from(v));
        }
    }
    None
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

    #[test]
    fn a_cell_key_classifies_back_into_row_and_column() {
        let k = cell_storage_key("users", b"alice", b"email").expect("storable");
        assert_eq!(
            classify(&k),
            Some((
                "users",
                StoredItem::Cell {
                    row: b"alice",
                    column: b"email"
                }
            ))
        );
        let (ks, token, _) = split_storage_key_token(&k).expect("well formed");
        assert_eq!((ks, token), ("users", Token::of(b"alice")));
        let plain = storage_key("users", b"alice");
        assert_eq!(
            classify(&plain),
            Some(("users", StoredItem::Plain(b"alice")))
        );
    }

    #[test]
    fn a_rows_cells_are_contiguous_and_sorted_by_column() {
        let cols: Vec<&[u8]> = vec![b"", b"a", b"a\x00", b"ab", b"b", b"\xff\xff"];
        let (start, end) = row_bounds("ks", b"r", None, None).expect("bounds");
        let mut keys: Vec<Key> = cols
            .iter()
            .map(|c| cell_storage_key("ks", b"r", c).expect("storable"))
            .collect();
        // Other rows and plain keys stay outside the row's range.
        let others = [
            cell_storage_key("ks", b"r\x00", b"a").expect("storable"),
            cell_storage_key("ks", b"s", b"a").expect("storable"),
            storage_key("ks", b"r"),
        ];
        for o in &others {
            assert!(!(start <= *o && *o < end), "{o:?}");
        }
        let sorted = {
            let mut k = keys.clone();
            k.sort();
            k
        };
        assert_eq!(keys, sorted, "column order is storage order");
        keys.retain(|k| start <= *k && *k < end);
        assert_eq!(keys.len(), cols.len());
        let (ps, pe) = row_prefix_bounds("ks", b"r", b"a").expect("bounds");
        let in_prefix: Vec<&[u8]> = cols
            .iter()
            .copied()
            .filter(|c| {
                let k = cell_storage_key("ks", b"r", c).expect("storable");
                ps <= k && k < pe
            })
            .collect();
        assert_eq!(in_prefix, vec![&b"a"[..], b"a\x00", b"ab"]);
    }

    proptest::proptest! {
        /// No cell key is ever a plain key's storage key, whatever the
        /// bytes (the construction argument is in `cell_storage_key`'s
        /// doc; this checks the encoder and the classifier agree).
        #[test]
        fn cells_never_collide_with_plain_keys(
            row in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            col in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
        ) {
            let cell = cell_storage_key("ks", &row, &col).expect("storable");
            // The plain key made of exactly the cell's tail bytes.
            let (_, _, tail) = split_storage_key_token(&cell).expect("well formed");
            proptest::prop_assert_ne!(&storage_key("ks", tail), &cell);
            proptest::prop_assert_ne!(&storage_key("ks", &plain), &cell);
            proptest::prop_assert_eq!(
                classify(&cell),
                Some(("ks", StoredItem::Cell { row: &row, column: &col }))
            );
            let plain_key = storage_key("ks", &plain);
            proptest::prop_assert_eq!(
                classify(&plain_key),
                Some(("ks", StoredItem::Plain(&plain)))
            );
        }
    }
}

//! Hostile input for the fuzz properties: valid encodings damaged the ways a broken or
//! malicious peer damages them (bytes flipped or replaced, integers overwritten with huge,
//! negative, zero or off-by-one values, truncation, insertion, deletion), or arbitrary bytes.
//! Structure-aware damage reaches the deep branches of a decoder that random bytes almost
//! never get past the first length check to see.

use proptest::prelude::*;
use proptest::sample::Index;

/// Values that break length and count fields: zero, -1 (NULL), negative, just below and
/// above small limits, and huge (a gibibyte, the largest `i32`).
pub fn hostile_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            -1,
            -2,
            1,
            3,
            4,
            5,
            7,
            8,
            i32::MIN,
            i32::MAX,
            1 << 30,
            10_001
        ]),
        -8i32..64,
        any::<i32>(),
    ]
}

/// The `i16` counterpart of [`hostile_i32`] (column, parameter and format counts).
pub fn hostile_i16() -> impl Strategy<Value = i16> {
    prop_oneof![
        prop::sample::select(vec![0, -1, 1, i16::MIN, i16::MAX]),
        -4i16..16,
        any::<i16>(),
    ]
}

/// One way of damaging a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace a byte (a random tag when it hits a tag).
    Set(Index, u8),
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite 4 bytes with a big-endian `i32` (a length, a count, a request code).
    Int32(Index, i32),
    /// Overwrite 2 bytes with a big-endian `i16`.
    Int16(Index, i16),
    /// Cut everything from here on.
    Truncate(Index),
    /// Insert bytes here.
    Insert(Index, Vec<u8>),
    /// Remove a byte.
    Remove(Index),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), hostile_i32()).prop_map(|(i, v)| Edit::Int32(i, v)),
        (any::<Index>(), hostile_i16()).prop_map(|(i, v)| Edit::Int16(i, v)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
    ]
}

/// Overwrites `bytes` at `i` (moved back so that they fit), if `data` can hold them.
fn overwrite(data: &mut [u8], i: &Index, bytes: &[u8]) {
    if let Some(room) = data.len().checked_sub(bytes.len()) {
        let at = i.index(room + 1);
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// Applies `edits` in order.
pub fn apply(data: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits {
        match e {
            Edit::Set(i, b) if !data.is_empty() => {
                let i = i.index(data.len());
                data[i] = *b;
            }
            Edit::Flip(i, bit) if !data.is_empty() => {
                let i = i.index(data.len());
                data[i] ^= 1 << bit;
            }
            Edit::Int32(i, v) => overwrite(data, i, &v.to_be_bytes()),
            Edit::Int16(i, v) => overwrite(data, i, &v.to_be_bytes()),
            Edit::Truncate(i) => data.truncate(i.index(data.len() + 1)),
            Edit::Insert(i, bytes) => {
                let at = i.index(data.len() + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(i) if !data.is_empty() => {
                data.remove(i.index(data.len()));
            }
            _ => {}
        }
    }
}

/// `valid` damaged by one to five edits (three times in four), or arbitrary bytes.
pub fn hostile(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (valid, prop::collection::vec(edit(), 1..6)).prop_map(|(mut v, edits)| {
            apply(&mut v, &edits);
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

//! The header map of a request: [`Headers`] (unique names in wire order, each with one or
//! more [`HeaderValue`]s), with the parse-time name index that keeps merging linear.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::json::JsonValue;
use crate::tnetstring;

/// A header value: one string, or several (a duplicated header, in arrival order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    /// A single value.
    One(Cow<'a, [u8]>),
    /// Several values (JSON array / tnetstring list).
    Many(Vec<Cow<'a, [u8]>>),
}

impl<'a> HeaderValue<'a> {
    /// The first value (empty for an empty list).
    pub fn first(&self) -> &[u8] {
        match self {
            HeaderValue::One(v) => v,
            HeaderValue::Many(vs) => vs.first().map_or(&[][..], |v| v),
        }
    }

    /// All values in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let (one, many): (Option<&[u8]>, &[Cow<'a, [u8]>]) = match self {
            HeaderValue::One(v) => (Some(v), &[]),
            HeaderValue::Many(vs) => (None, vs),
        };
        one.into_iter().chain(many.iter().map(|v| &**v))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            HeaderValue::One(_) => 1,
            HeaderValue::Many(vs) => vs.len(),
        }
    }

    /// True only for an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Detaches the value from the frame it borrows from.
    pub fn into_owned(self) -> HeaderValue<'static> {
        match self {
            HeaderValue::One(v) => HeaderValue::One(Cow::Owned(v.into_owned())),
            HeaderValue::Many(vs) => {
                HeaderValue::Many(vs.into_iter().map(|v| Cow::Owned(v.into_owned())).collect())
            }
        }
    }

    /// Adds one value after the ones present (a single value becomes a list).
    fn push(&mut self, value: Cow<'a, [u8]>) {
        match self {
            HeaderValue::One(v) => {
                let first = std::mem::take(v);
                *self = HeaderValue::Many(vec![first, value]);
            }
            HeaderValue::Many(vs) => vs.push(value),
        }
    }

    /// Adds every value of `other` after the ones present.
    fn extend(&mut self, other: HeaderValue<'a>) {
        match other {
            HeaderValue::One(v) => self.push(v),
            HeaderValue::Many(vs) => {
                for v in vs {
                    self.push(v);
                }
            }
        }
    }
}

impl<'a> From<JsonValue<'a>> for HeaderValue<'a> {
    /// A JSON string becomes one value, a JSON array a list.
    fn from(v: JsonValue<'a>) -> Self {
        match v {
            JsonValue::One(s) => HeaderValue::One(s),
            JsonValue::Many(s) => HeaderValue::Many(s),
        }
    }
}

/// Request headers: an ordered list of unique names, each with one or more values.
///
/// Lookups and merges scan the list while it is short; from [`Headers::INDEX_MIN`] names on,
/// a hash index of the names keeps them O(1), so building headers is linear in their count
/// however many distinct names a hostile frame carries.
#[derive(Clone, Default)]
pub struct Headers<'a> {
    /// `(name, value)` pairs in wire order, names unique.
    pub(super) entries: Vec<(Cow<'a, [u8]>, HeaderValue<'a>)>,
    /// Name -> position in `entries`, present once there are `INDEX_MIN` names or more.
    index: Option<HashMap<Vec<u8>, usize>>,
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, v)| (tnetstring::show(n), v)))
            .finish()
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Headers<'_> {}

#[cfg(test)]
thread_local! {
    /// Names compared by linear scans (the merge-cost counter of the unit tests).
    static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<'a> Headers<'a> {
    /// Number of distinct names from which lookups go through a hash index.
    pub const INDEX_MIN: usize = Dedup::CAP;

    /// No headers.
    pub fn new() -> Self {
        Headers {
            entries: Vec::new(),
            index: None,
        }
    }

    /// No headers, room for `n`.
    pub fn with_capacity(n: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(n),
            index: None,
        }
    }

    /// Position of `name` in `entries`.
    fn position(&self, name: &[u8]) -> Option<usize> {
        if let Some(index) = &self.index {
            return index.get(name).copied();
        }
        #[cfg(test)]
        SCANNED.with(|c| c.set(c.get() + self.entries.len()));
        self.entries.iter().position(|(n, _)| n.as_ref() == name)
    }

    /// Builds the name index once there are [`Headers::INDEX_MIN`] names.
    fn ensure_index(&mut self) {
        if self.index.is_none() && self.entries.len() >= Self::INDEX_MIN {
            let mut index = HashMap::with_capacity(2 * self.entries.len());
            for (j, (n, _)) in self.entries.iter().enumerate() {
                index.insert(n.to_vec(), j);
            }
            self.index = Some(index);
        }
    }

    /// Adds a new name at the end (the caller checked it is new), indexing it when due.
    fn push_new(&mut self, name: Cow<'a, [u8]>, value: HeaderValue<'a>) {
        if let Some(index) = &mut self.index {
            index.insert(name.to_vec(), self.entries.len());
        }
        self.entries.push((name, value));
        self.ensure_index();
    }

    /// The value of `name` (exact, case-sensitive match).
    pub fn get(&self, name: &[u8]) -> Option<&HeaderValue<'a>> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    /// The first value of `name`.
    pub fn get_one(&self, name: &[u8]) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::first)
    }

    /// Adds a value; an existing name becomes `Many`, keeping its first position.
    pub fn append(&mut self, name: impl Into<Cow<'a, [u8]>>, value: impl Into<Cow<'a, [u8]>>) {
        self.append_value(name.into(), HeaderValue::One(value.into()));
    }

    /// Adds a whole value (one or many); an existing name gets the values appended.
    pub fn append_value(&mut self, name: Cow<'a, [u8]>, value: HeaderValue<'a>) {
        match self.position(&name) {
            Some(i) => self.entries[i].1.extend(value),
            None => self.push_new(name, value),
        }
    }

    /// Sets `name` to a single value, replacing any values (position kept if present).
    pub fn set(&mut self, name: impl Into<Cow<'a, [u8]>>, value: impl Into<Cow<'a, [u8]>>) {
        let name = name.into();
        let value = HeaderValue::One(value.into());
        match self.position(&name) {
            Some(i) => self.entries[i].1 = value,
            None => self.push_new(name, value),
        }
    }

    /// Removes `name`, returning its value (O(names): the later positions move).
    pub fn remove(&mut self, name: &[u8]) -> Option<HeaderValue<'a>> {
        let i = self.position(name)?;
        let (_, value) = self.entries.remove(i);
        if let Some(index) = &mut self.index {
            index.remove(name);
            for p in index.values_mut() {
                if *p > i {
                    *p -= 1;
                }
            }
        }
        Some(value)
    }

    /// Appends a parsed pair, merging it into an earlier entry of the same name.
    /// `dedup` remembers name hashes so a new name costs no byte comparisons.
    #[inline]
    pub(super) fn push_parsed(
        &mut self,
        name: Cow<'a, [u8]>,
        value: HeaderValue<'a>,
        dedup: &mut Dedup,
    ) {
        if self.entries.len() >= Dedup::CAP {
            self.ensure_index();
            return self.append_value(name, value);
        }
        let hash = name_hash(&name);
        let bit = (hash >> 24) as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if dedup.bloom[word] & mask != 0 {
            let hashes = &dedup.hashes[..self.entries.len()];
            for (i, h) in hashes.iter().enumerate() {
                if *h == hash && self.entries[i].0 == name {
                    self.entries[i].1.extend(value);
                    return;
                }
            }
        }
        dedup.bloom[word] |= mask;
        dedup.hashes[self.entries.len()] = hash;
        self.entries.push((name, value));
    }

    /// `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &HeaderValue<'a>)> {
        self.entries.iter().map(|(n, v)| (n.as_ref(), v))
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Same names with the same values, in any name order (value order matters).
    ///
    /// Use this to compare headers across frames: Mongrel2 writes JSON keys in hash order.
    pub fn eq_ignoring_order(&self, other: &Headers<'_>) -> bool {
        self.len() == other.len()
            && self.iter().all(|(name, value)| {
                other
                    .get(name)
                    .is_some_and(|v| v.iter().eq(value.iter()) && v.len() == value.len())
            })
    }

    /// Detaches the headers from the frame they borrow from.
    pub fn into_owned(self) -> Headers<'static> {
        Headers {
            entries: self
                .entries
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), v.into_owned()))
                .collect(),
            index: self.index,
        }
    }
}

/// Constant-time hash of a header name (length, first and last 4 bytes).
#[inline]
fn name_hash(name: &[u8]) -> u32 {
    let len = name.len();
    let (a, b) = match (name.first_chunk::<4>(), name.last_chunk::<4>()) {
        (Some(first), Some(last)) => (u32::from_le_bytes(*first), u32::from_le_bytes(*last)),
        _ => (name.iter().fold(0u32, |x, &c| (x << 8) | u32::from(c)), 0),
    };
    (a.wrapping_mul(0x9E37_79B1) ^ b.rotate_left(16) ^ (len as u32)).wrapping_mul(0x85EB_CA6B)
}

/// Parse-time index of the names seen so far (Bloom filter + hash per entry).
pub(super) struct Dedup {
    /// One bit per name hash's top byte: a clear bit proves a name is new.
    bloom: [u64; 4],
    /// The name hash of each entry, by position.
    hashes: [u32; Dedup::CAP],
}

impl Dedup {
    /// Entries indexed; beyond this the plain linear merge is used.
    const CAP: usize = 128;

    /// An empty index.
    pub(super) fn new() -> Self {
        Dedup {
            bloom: [0; 4],
            hashes: [0; Dedup::CAP],
        }
    }
}

/// Typical header count of a request frame (client headers + Mongrel2's keys).
pub(super) const HEADERS_CAPACITY: usize = 24;

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::request::parse_request;
    use crate::request::test_support::{CASE09, json_frame, owned};

    /// A JSON frame with `n` distinct names `x-hI`, then a repeat of each name in `again`.
    fn many_headers_frame(n: usize, again: &[usize]) -> Vec<u8> {
        let mut h = b"{\"METHOD\":\"GET\"".to_vec();
        for i in (0..n).chain(again.iter().copied()) {
            h.extend_from_slice(format!(",\"x-h{i}\":\"v{i}\"").as_bytes());
        }
        h.push(b'}');
        json_frame(&h)
    }

    #[test]
    fn merging_many_distinct_names_is_linear() {
        const N: usize = 30_000;
        let again: Vec<usize> = vec![0, 1, 127, 128, 129, N - 1, N / 2];
        let frame = many_headers_frame(N, &again);
        SCANNED.with(|c| c.set(0));
        let req = parse_request(&frame).unwrap();
        let scanned = SCANNED.with(std::cell::Cell::get);
        // Linear scans only while the list is short: at most INDEX_MIN names, once.
        assert!(
            scanned <= Headers::INDEX_MIN,
            "{scanned} names compared in linear scans for {N} headers"
        );
        assert_eq!(req.headers.len(), N + 1);
        for &i in &again {
            let name = format!("x-h{i}");
            let v = req.headers.get(name.as_bytes()).unwrap();
            assert_eq!(
                v.iter().collect::<Vec<_>>(),
                [format!("v{i}").as_bytes(); 2]
            );
        }
        assert_eq!(req.headers.get_one(b"x-h4242"), Some(&b"v4242"[..]));
        assert_eq!(req.headers.get_one(b"x-h30000"), None);

        // Building headers by hand (append, set, remove) is indexed the same way.
        let mut h = Headers::new();
        SCANNED.with(|c| c.set(0));
        for i in 0..N {
            h.append(format!("n{i}").into_bytes(), b"1".to_vec());
        }
        for i in (0..N).step_by(1000) {
            h.append(format!("n{i}").into_bytes(), b"2".to_vec());
            h.set(format!("m{i}").into_bytes(), b"3".to_vec());
        }
        let scanned = SCANNED.with(std::cell::Cell::get);
        let small = Headers::INDEX_MIN * Headers::INDEX_MIN;
        assert!(scanned <= small, "{scanned} names compared for {N} appends");
        assert_eq!(h.len(), N + N / 1000);
        assert_eq!(h.get(b"n1000").unwrap().len(), 2);
        assert_eq!(
            h.remove(b"n5"),
            Some(HeaderValue::One(Cow::Owned(b"1".to_vec())))
        );
        assert_eq!(h.get(b"n5"), None);
        assert_eq!(h.get_one(b"n6"), Some(&b"1"[..]));
        assert_eq!(h.iter().nth(5).unwrap().0, b"n6");
        assert_eq!(h.get_one(b"m29000"), Some(&b"3"[..]));
    }

    #[test]
    fn repeated_key_in_a_frame_merges_into_one_name_so_names_stay_unique() {
        let frame = json_frame(br#"{"a":"1","bb":"x","a":["2","3"]}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers.get(b"a"), Some(&owned(&[b"1", b"2", b"3"])));
        let frame = b"s 1 /p 16:1:a,1:1,1:a,1:2,}0:,";
        let r = parse_request(frame).unwrap();
        assert_eq!(r.headers.get(b"a"), Some(&owned(&[b"1", b"2"])));
    }

    #[test]
    fn many_distinct_names_with_colliding_shapes_are_all_kept() {
        // Same length and last byte share a fingerprint bit: they must not be merged.
        let frame = json_frame(br#"{"ax":"1","bx":"2","cx":"3","ax":"4"}"#);
        let r = parse_request(&frame).unwrap();
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.headers.get_one(b"bx"), Some(&b"2"[..]));
        assert_eq!(r.headers.get(b"ax"), Some(&owned(&[b"1", b"4"])));
    }

    #[test]
    fn eq_ignoring_order_compares_names_and_value_lists_not_positions() {
        let mut a = Headers::new();
        a.append(&b"x"[..], &b"1"[..]);
        a.append(&b"y"[..], &b"2"[..]);
        a.append(&b"y"[..], &b"3"[..]);
        let mut b = Headers::new();
        b.append(&b"y"[..], &b"2"[..]);
        b.append(&b"y"[..], &b"3"[..]);
        b.append(&b"x"[..], &b"1"[..]);
        assert!(a.eq_ignoring_order(&b));
        assert_ne!(a, b);
        let mut c = Headers::new();
        c.append(&b"y"[..], &b"3"[..]);
        c.append(&b"y"[..], &b"2"[..]);
        c.append(&b"x"[..], &b"1"[..]);
        assert!(!a.eq_ignoring_order(&c), "value order matters");
    }

    #[test]
    fn headers_append_turns_repeat_into_many_keeping_first_position() {
        let mut h = Headers::new();
        h.append(&b"a"[..], &b"1"[..]);
        h.append(&b"b"[..], &b"2"[..]);
        h.append(&b"a"[..], &b"3"[..]);
        let names: Vec<&[u8]> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![&b"a"[..], b"b"]);
        assert_eq!(
            h.get(b"a").unwrap().iter().collect::<Vec<_>>(),
            vec![&b"1"[..], b"3"]
        );
        assert_eq!(h.len(), 2);
        assert_eq!(h.get_one(b"A"), None, "names are case-sensitive");
    }

    #[test]
    fn into_owned_detaches_headers_from_the_frame() {
        let frame = CASE09.to_vec();
        let owned = parse_request(&frame).unwrap().headers.into_owned();
        drop(frame);
        assert_eq!(owned.get_one(b"host"), Some(&b"localhost"[..]));
    }
}

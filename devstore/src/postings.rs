//! Per-index postings: for each keyword, numeric or date field of the index's mapping, which
//! searchable documents hold which value. `store` fills them at refresh (OpenSearch's visibility
//! rule: searchable only after a refresh) by walking each newly visible source once; `search` asks
//! them for the candidates of a query instead of parsing every document.
//!
//! Guarantee: [`Postings::candidates`] returns a *superset* of the documents the query matches
//! (never fewer), so a search that checks each candidate with [`Query::matches`] answers exactly as
//! a scan of every document would. Query forms it cannot narrow answer `None` (every document).
//!
//! The same walker validates a `_bulk` source (serde_json's own parser, so every document the
//! store accepted before is accepted, with the same error messages) without building a tree;
//! [`crate::scan`] takes the usual documents first, faster, and leaves the others to it.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::{BuildHasherDefault, Hasher},
    ops::Bound as RangeBound,
};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::{
    mapping::{FieldType, Fields},
    query::{Bound, Query, value_text},
};

/// FxHash (rustc's): a multiply-rotate hash, several times faster than SipHash on the short keys
/// here. Not collision resistant; acceptable for a dev store that trusts its clients.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut word = [0u8; 8];
        let rest = chunks.remainder();
        word[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(word));
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The dotted paths an index keeps postings for, as a tree of key segments (a document key with
/// dots in it walks several), each indexed path numbered.
#[derive(Debug)]
pub struct IndexedPaths {
    /// Node 0 is the document's top level.
    nodes: Vec<PathNode>,
    len: usize,
    /// Every (node, dotted key) pair that leads somewhere, hashed: one lookup per document key
    /// instead of a walk of the tree per segment.
    keys: KeyTable,
}

/// An open-addressed table from (node, key as written in a document) to the node it leads to: for
/// each node, the dotted paths of all its descendants (`process`, `process.serviceName`, ... at the
/// top). A key with dots reaches a descendant exactly when it is that descendant's dotted path
/// (segments never hold a dot), so a lookup answers what [`IndexedPaths::walk_child`] does.
#[derive(Debug, Default)]
struct KeyTable {
    /// Power-of-two sized, at most half full; `None` is an empty slot.
    slots: Vec<Option<KeySlot>>,
}

#[derive(Debug)]
struct KeySlot {
    hash: u64,
    node: usize,
    key: Box<str>,
    child: usize,
}

/// FxHash of a node and a key's bytes.
fn key_hash(node: usize, key: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write_usize(node);
    hasher.write(key.as_bytes());
    hasher.finish()
}

impl KeyTable {
    fn build(entries: Vec<(usize, String, usize)>) -> Self {
        let size = (entries.len() * 2).next_power_of_two().max(8);
        let mut slots: Vec<Option<KeySlot>> = (0..size).map(|_| None).collect();
        let mask = size - 1;
        for (node, key, child) in entries {
            let hash = key_hash(node, &key);
            // `hash as usize` keeps the low bits, which is all the mask looks at.
            let mut at = hash as usize & mask;
            while slots[at].is_some() {
                at = (at + 1) & mask;
            }
            slots[at] = Some(KeySlot { hash, node, key: key.into_boxed_str(), child });
        }
        Self { slots }
    }

    fn get(&self, node: usize, key: &str) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let hash = key_hash(node, key);
        let mut at = hash as usize & mask;
        // At most half full: an empty slot ends every probe.
        while let Some(slot) = &self.slots[at] {
            if slot.hash == hash && slot.node == node && *slot.key == *key {
                return Some(slot.child);
            }
            at = (at + 1) & mask;
        }
        None
    }
}

#[derive(Debug, Default)]
struct PathNode {
    /// By key segment. A list: a mapping level has a few keys, and a scan comparing lengths first
    /// beats hashing every key of every document.
    children: Vec<(Box<str>, usize)>,
    /// The same, hashed, for a level with many keys.
    many: FxMap<Box<str>, usize>,
    field: Option<usize>,
}

/// The most segments a key-table entry spans: a mapped path is usually a few segments (Jaeger's
/// deepest is `process.tags.key`), but a property name may hold any number of dots, and listing
/// every node's every descendant by its dotted path would take memory cubic in the depth (a
/// 2 000-segment name: gigabytes). Longer keys walk the tree.
const TABLE_DEPTH: usize = 8;

/// Children a level scans before it hashes.
const SCANNED_CHILDREN: usize = 16;

impl PathNode {
    fn get(&self, segment: &str) -> Option<usize> {
        if self.children.len() > SCANNED_CHILDREN {
            return self.many.get(segment).copied();
        }
        self.children.iter().find(|(key, _)| key.len() == segment.len() && **key == *segment).map(|&(_, child)| child)
    }

    fn insert(&mut self, segment: &str, child: usize) {
        self.children.push((segment.into(), child));
        self.many.insert(segment.into(), child);
    }
}

impl Default for IndexedPaths {
    fn default() -> Self {
        Self { nodes: vec![PathNode::default()], len: 0, keys: KeyTable::default() }
    }
}

impl IndexedPaths {
    /// The keyword and numeric (long, date, ...) fields of `mappings`.
    pub fn from_mappings(mappings: &Value) -> Self {
        let fields = Fields::from_mappings([mappings]);
        let mut out = IndexedPaths::default();
        let mut paths: Vec<&str> = fields
            .paths()
            .filter(|(_, ty)| matches!(ty, FieldType::Keyword | FieldType::Numeric | FieldType::Date { .. }))
            .map(|(path, _)| path)
            .collect();
        paths.sort_unstable();
        for path in paths {
            let mut node = 0;
            for segment in path.split('.') {
                node = match out.nodes[node].get(segment) {
                    Some(child) => child,
                    None => {
                        out.nodes.push(PathNode::default());
                        let child = out.nodes.len() - 1;
                        out.nodes[node].insert(segment, child);
                        child
                    }
                };
            }
            if out.nodes[node].field.is_none() {
                out.nodes[node].field = Some(out.len);
                out.len += 1;
            }
        }
        let mut entries = Vec::new();
        for node in 0..out.nodes.len() {
            out.descendants(node, node, "", 0, &mut entries);
        }
        out.keys = KeyTable::build(entries);
        out
    }

    /// Lists `(from, dotted path, descendant)` for every descendant of `at` below `from`, at most
    /// [`TABLE_DEPTH`] segments below it (`depth` is `at`'s).
    fn descendants(&self, from: usize, at: usize, prefix: &str, depth: usize, out: &mut Vec<(usize, String, usize)>) {
        if depth == TABLE_DEPTH {
            return;
        }
        for (segment, child) in &self.nodes[at].children {
            let path =
                if prefix.is_empty() && at == from { segment.to_string() } else { format!("{prefix}.{segment}") };
            out.push((from, path.clone(), *child));
            self.descendants(from, *child, &path, depth + 1, out);
        }
    }

    /// The node reached from `node` through the document key `key` (dots in it separate segments):
    /// from the key table, or for a key of more than [`TABLE_DEPTH`] segments (which the table
    /// does not hold) by walking the tree.
    pub(crate) fn child(&self, node: usize, key: &str) -> Option<usize> {
        match self.keys.get(node, key) {
            Some(child) => Some(child),
            // At least TABLE_DEPTH dots needs at least twice as many bytes.
            None if key.len() > 2 * TABLE_DEPTH && key.bytes().filter(|&b| b == b'.').count() >= TABLE_DEPTH => {
                self.walk_child(node, key)
            }
            None => None,
        }
    }

    /// [`Self::child`] by walking the tree segment by segment: what the key table must answer.
    pub(crate) fn walk_child(&self, node: usize, key: &str) -> Option<usize> {
        // A byte loop: keys are short, shorter than `memchr` takes to set up.
        if !key.bytes().any(|b| b == b'.') {
            return self.nodes.get(node)?.get(key);
        }
        key.split('.').try_fold(node, |at, segment| self.nodes.get(at)?.get(segment))
    }

    /// The field id of the path at `node`, if indexed.
    pub(crate) fn field(&self, node: usize) -> Option<usize> {
        self.nodes.get(node)?.field
    }

    /// The field id of the dotted `path`, if indexed.
    fn id(&self, path: &str) -> Option<usize> {
        self.child(0, path).and_then(|node| self.nodes[node].field)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One value met at an indexed path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Leaf<'a> {
    Num(f64),
    /// Strings, and `true` / `false` / `null` as the text a keyword query compares them by.
    Text(&'a str),
    /// An object where the mapping expects a value: the path cannot be narrowed any more.
    Object,
}

/// Walks `text` with serde_json's parser (as `serde_json::from_str::<Value>` would, same checks and
/// errors) without building a tree; calls `emit(path id, leaf)` for every value at a path of
/// `paths` (arrays are transparent, as in [`crate::query::resolve`]). Returns whether the top-level
/// value is an object.
pub fn walk<F: FnMut(usize, Leaf<'_>)>(
    text: &str,
    paths: Option<&IndexedPaths>,
    emit: F,
) -> Result<bool, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut walker = Walker { paths, emit, top_object: false };
    let at = paths.filter(|p| !p.is_empty()).map(|_| 0);
    Node { walker: &mut walker, at, top: true }.deserialize(&mut de)?;
    de.end()?;
    Ok(walker.top_object)
}

/// Validates a document as `serde_json::from_str::<Value>` would (same acceptance, same error),
/// without building the tree; whether its top level is an object. (serde_json's `IgnoredAny` is
/// faster but lets through lone surrogates, numbers out of `f64` range and nesting past the
/// recursion limit, which a `Value` refuses; pre-scanning for those cost what it saved.)
pub fn validate(text: &str) -> Result<bool, serde_json::Error> {
    match crate::scan::scan(text, None, |_, _| {}) {
        Some(object) => Ok(object),
        None => walk(text, None, |_, _| {}),
    }
}

/// The values a document holds at its index's indexed paths, taken while validating it (see
/// [`record`]) and kept with the unrefreshed document, so that refresh lists them without parsing
/// the source a second time.
#[derive(Debug, Clone, Default)]
pub struct Recorded(Box<[Rec]>);

#[derive(Debug, Clone)]
pub struct Rec {
    field: u32,
    value: RecValue,
}

#[derive(Debug, Clone)]
enum RecValue {
    Num(f64),
    /// A string as written in the source (no escapes): its byte range there.
    Span {
        start: u32,
        len: u32,
    },
    /// A string with escapes, unescaped.
    Owned(Box<str>),
    /// `true`, `false`, `null`.
    Static(&'static str),
    Object,
}

impl Recorded {
    /// The memory these values take while they wait for a refresh, in bytes.
    pub fn bytes(&self) -> u64 {
        let owned: usize = self
            .0
            .iter()
            .map(|rec| match &rec.value {
                RecValue::Owned(text) => text.len(),
                _ => 0,
            })
            .sum();
        (std::mem::size_of_val::<[Rec]>(&self.0) + owned) as u64
    }
}

/// [`validate`] (same acceptance, same errors) that also records the values at `paths` for
/// [`Postings::add_recorded`]; `scratch` is reused between documents. Whether the top level is
/// an object, and the values.
pub fn record(text: &str, paths: &IndexedPaths, scratch: &mut Vec<Rec>) -> Result<(bool, Recorded), serde_json::Error> {
    scratch.clear();
    // The scanner first; what it leaves (after recording part of it, maybe), serde_json's walk.
    let object = match crate::scan::scan(text, Some(paths), |id, leaf| {
        if let Some(value) = rec(text, id, leaf) {
            scratch.push(value);
        }
    }) {
        Some(object) => object,
        None => {
            scratch.clear();
            walk(text, Some(paths), |id, leaf| scratch.extend(rec(text, id, leaf)))?
        }
    };
    // One copy of the whole slice into an exactly sized list (`append` moves it as a block; a
    // `drain().collect()` moved it value by value), and the scratch keeps its room.
    let mut values = Vec::with_capacity(scratch.len());
    values.append(scratch);
    Ok((object, Recorded(values.into_boxed_slice())))
}

/// How [`record`] keeps `leaf`, met at path `id` of `text`.
fn rec(text: &str, id: usize, leaf: Leaf<'_>) -> Option<Rec> {
    let field = u32::try_from(id).ok()?;
    let value = match leaf {
        Leaf::Num(x) => RecValue::Num(x),
        Leaf::Object => RecValue::Object,
        Leaf::Text(s) => match s {
            "true" => RecValue::Static("true"),
            "false" => RecValue::Static("false"),
            "null" => RecValue::Static("null"),
            _ => {
                // An unescaped string is a slice of `text` itself (serde_json's and the scanner's
                // alike), an escaped one comes from their own buffer.
                let (base, at) = (text.as_ptr() as usize, s.as_ptr() as usize);
                match (u32::try_from(at.wrapping_sub(base)), u32::try_from(s.len())) {
                    (Ok(start), Ok(len)) if at >= base && at + s.len() <= base + text.len() => {
                        RecValue::Span { start, len }
                    }
                    _ => RecValue::Owned(s.into()),
                }
            }
        },
    };
    Some(Rec { field, value })
}

struct Walker<'p, F> {
    paths: Option<&'p IndexedPaths>,
    emit: F,
    top_object: bool,
}

impl<F: FnMut(usize, Leaf<'_>)> Walker<'_, F> {
    fn leaf(&mut self, at: Option<usize>, leaf: Leaf<'_>) {
        if let Some(id) = at.and_then(|node| self.paths?.nodes.get(node)?.field) {
            (self.emit)(id, leaf);
        }
    }
}

/// One value of the document; `at` is its path's node when that may lead to an indexed path.
struct Node<'w, 'p, F> {
    walker: &'w mut Walker<'p, F>,
    at: Option<usize>,
    top: bool,
}

impl<'de, F: FnMut(usize, Leaf<'_>)> DeserializeSeed<'de> for Node<'_, '_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(usize, Leaf<'_>)> Visitor<'de> for Node<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Text(if v { "true" } else { "false" }));
        Ok(())
    }
    #[allow(clippy::cast_precision_loss)] // as serde_json's `Value::as_f64`
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Num(v as f64));
        Ok(())
    }
    #[allow(clippy::cast_precision_loss)] // as serde_json's `Value::as_f64`
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Num(v as f64));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Num(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Text(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.walker.leaf(self.at, Leaf::Text("null"));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Node { walker: &mut *self.walker, at: self.at, top: false })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.top {
            self.walker.top_object = true;
        }
        self.walker.leaf(self.at, Leaf::Object);
        let paths = self.walker.paths;
        while let Some(child) = map.next_key_seed(Key { paths: self.at.and(paths), at: self.at })? {
            map.next_value_seed(Node { walker: &mut *self.walker, at: child, top: false })?;
        }
        Ok(())
    }
}

/// An object key, read as a string (so the same keys are refused as when building a `Value`); its
/// value's node, when the path is tracked and goes on.
struct Key<'p> {
    paths: Option<&'p IndexedPaths>,
    at: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(match (self.paths, self.at) {
            (Some(paths), Some(at)) => paths.child(at, v),
            _ => None,
        })
    }
}

/// An `f64` ordered by `total_cmp`, with `-0.0` folded into `0.0` (they compare equal as JSON
/// numbers do in queries). NaN never enters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Num(f64);

impl Num {
    fn new(x: f64) -> Option<Self> {
        (!x.is_nan()).then_some(Num(if x == 0.0 { 0.0 } else { x }))
    }
}
impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Num {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One field's postings: document positions (in the index's insertion order) by value.
#[derive(Debug, Default)]
struct FieldPostings {
    /// Values that are not numbers: strings that do not parse as one, `true`, `false`, `null`.
    texts: FxMap<Box<str>, List>,
    /// Numbers, and strings that parse as one (as `range` and `term` read both).
    nums: BTreeMap<Num, List>,
    /// Some document has an object here: no narrowing on this field.
    has_object: bool,
    /// Some string here is an RFC 3339 date, which `range` compares as an instant: no range
    /// narrowing on this field.
    has_date_text: bool,
}

impl FieldPostings {
    /// Lists the document at `pos` under `leaf`; the memory that took, in bytes.
    fn insert(&mut self, pos: u32, leaf: Leaf<'_>) -> u64 {
        let mut bytes = 0;
        let list = match leaf {
            Leaf::Object => {
                self.has_object = true;
                return 0;
            }
            Leaf::Num(x) => match Num::new(x) {
                Some(n) => self.nums.entry(n).or_insert_with(|| {
                    bytes += KEY_OVERHEAD_BYTES;
                    List::default()
                }),
                None => return bytes,
            },
            Leaf::Text(s) => match text_number(s) {
                Some(n) => self.nums.entry(n).or_insert_with(|| {
                    bytes += KEY_OVERHEAD_BYTES;
                    List::default()
                }),
                None => {
                    // As `query::date_millis` reads a string.
                    if !self.has_date_text && may_be_date(s) && chrono::DateTime::parse_from_rfc3339(s).is_ok() {
                        self.has_date_text = true;
                    }
                    // One hash for a known value; a new one is inserted with its first posting.
                    match self.texts.get_mut(s) {
                        Some(list) => list,
                        None => {
                            self.texts.insert(s.into(), List::One(pos));
                            return KEY_OVERHEAD_BYTES + s.len() as u64 + POSTING_BYTES;
                        }
                    }
                }
            },
        };
        // A document holding a value twice is listed once.
        if list.last() != Some(pos) {
            list.push(pos);
            bytes += POSTING_BYTES;
        }
        bytes
    }

    /// Takes `pos` off the list of `leaf`'s value, and the value off the field once no document
    /// holds it; the memory let go, as [`Self::insert`] counted it.
    fn remove(&mut self, pos: u32, leaf: Leaf<'_>) -> u64 {
        match leaf {
            Leaf::Object => 0,
            Leaf::Num(x) => Num::new(x).map_or(0, |n| self.remove_num(n, pos)),
            Leaf::Text(s) => match text_number(s) {
                Some(n) => self.remove_num(n, pos),
                None => {
                    let Some(list) = self.texts.get_mut(s) else { return 0 };
                    let mut freed = list.take(pos);
                    if list.is_empty() {
                        self.texts.remove(s);
                        freed += KEY_OVERHEAD_BYTES + s.len() as u64;
                    }
                    freed
                }
            },
        }
    }

    fn remove_num(&mut self, n: Num, pos: u32) -> u64 {
        let Some(list) = self.nums.get_mut(&n) else { return 0 };
        let mut freed = list.take(pos);
        if list.is_empty() {
            self.nums.remove(&n);
            freed += KEY_OVERHEAD_BYTES;
        }
        freed
    }
}

/// The documents holding one value, in the order they were listed (an overwritten document comes
/// back at the end; answers are sorted by [`union`]). Most values of a span (its ids, its start time)
/// are its own: one position is kept inline, without a list to allocate.
#[derive(Debug, Clone)]
enum List {
    One(u32),
    Many(Vec<u32>),
}

impl Default for List {
    fn default() -> Self {
        List::Many(Vec::new())
    }
}

impl List {
    fn as_slice(&self) -> &[u32] {
        match self {
            List::One(pos) => std::slice::from_ref(pos),
            List::Many(list) => list,
        }
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn last(&self) -> Option<u32> {
        self.as_slice().last().copied()
    }

    fn push(&mut self, pos: u32) {
        match self {
            List::One(first) => {
                // Room for a few more: a value held by two documents is often held by more, and
                // each doubling from two is a reallocation (four: the spare room stays near what
                // `POSTING_BYTES` counts for two).
                let mut list = Vec::with_capacity(4);
                list.extend([*first, pos]);
                *self = List::Many(list);
            }
            List::Many(list) if list.is_empty() => *self = List::One(pos),
            List::Many(list) => list.push(pos),
        }
    }

    /// Takes `pos` off; the memory let go.
    fn take(&mut self, pos: u32) -> u64 {
        let taken = match self {
            List::One(only) if *only == pos => {
                *self = List::Many(Vec::new());
                1
            }
            List::One(_) => 0,
            List::Many(list) => {
                let before = list.len();
                list.retain(|p| *p != pos);
                before - list.len()
            }
        };
        taken as u64 * POSTING_BYTES
    }
}

/// Rough memory of one new posting key (the map entry, the key, the list's header).
const KEY_OVERHEAD_BYTES: u64 = 64;
/// Rough memory of one posting (a `u32`, with the list's spare capacity).
const POSTING_BYTES: u64 = 6;

/// The postings of one index.
#[derive(Debug, Default)]
pub struct Postings {
    paths: IndexedPaths,
    fields: Vec<FieldPostings>,
    /// A position past `u32::MAX` was not listed: every query scans.
    overflowed: bool,
}

impl Postings {
    pub fn new(paths: IndexedPaths) -> Self {
        let fields = (0..paths.len()).map(|_| FieldPostings::default()).collect();
        Self { paths, fields, overflowed: false }
    }

    pub fn paths(&self) -> &IndexedPaths {
        &self.paths
    }

    /// Adds the values of `source` (already validated) for the document at `pos`, walking it; the
    /// memory the new postings take, in bytes.
    pub fn add(&mut self, pos: usize, source: &str) -> u64 {
        let Ok(pos) = u32::try_from(pos) else {
            self.overflowed = true;
            return 0;
        };
        let mut bytes = 0;
        let fields = &mut self.fields;
        // A walk over a validated source cannot fail.
        let _ = walk(source, Some(&self.paths), |id, leaf| {
            if let Some(field) = fields.get_mut(id) {
                bytes += field.insert(pos, leaf);
            }
        });
        bytes
    }

    /// Adds the values `recorded` (by [`record`] with these postings' paths) of `source`, the
    /// document at `pos`, without walking it again; the memory the new postings take, in bytes.
    pub fn add_recorded(&mut self, pos: usize, source: &str, recorded: &Recorded) -> u64 {
        let Ok(pos) = u32::try_from(pos) else {
            self.overflowed = true;
            return 0;
        };
        let mut bytes = 0;
        for rec in &recorded.0 {
            let Some(field) = self.fields.get_mut(rec.field as usize) else { continue };
            let leaf = match &rec.value {
                RecValue::Num(x) => Leaf::Num(*x),
                RecValue::Span { start, len } => {
                    let (start, len) = (*start as usize, *len as usize);
                    match source.get(start..start + len) {
                        Some(text) => Leaf::Text(text),
                        None => continue,
                    }
                }
                RecValue::Owned(text) => Leaf::Text(text),
                RecValue::Static(text) => Leaf::Text(text),
                RecValue::Object => Leaf::Object,
            };
            bytes += field.insert(pos, leaf);
        }
        bytes
    }

    /// Removes the document at `pos`, whose searchable source was `source`; the memory let go.
    pub fn remove(&mut self, pos: usize, source: &str) -> u64 {
        let Ok(pos) = u32::try_from(pos) else { return 0 };
        let fields = &mut self.fields;
        let mut freed = 0;
        let _ = walk(source, Some(&self.paths), |id, leaf| {
            if let Some(field) = fields.get_mut(id) {
                freed += field.remove(pos, leaf);
            }
        });
        freed
    }

    /// Positions (ascending, distinct) of a superset of the documents `query` matches, or `None`
    /// when it cannot narrow them.
    pub fn candidates(&self, query: &Query) -> Option<Vec<u32>> {
        if self.overflowed {
            return None;
        }
        self.narrow(query)
    }

    fn narrow(&self, query: &Query) -> Option<Vec<u32>> {
        match query {
            Query::Term { field, value } => self.term(field, value),
            Query::Terms { field, values } => {
                let mut lists = Vec::with_capacity(values.len());
                for value in values {
                    lists.push(self.term(field, value)?);
                }
                Some(union(lists))
            }
            Query::Range { field, bounds } => self.range(field, bounds),
            // The inner query's fields are full paths and it matches a part of the document: what
            // holds for the part holds for the whole.
            Query::Nested { query, .. } => self.narrow(query),
            Query::Bool { must, should, minimum_should_match, .. } => {
                let mut acc: Option<Vec<u32>> = None;
                for clause in must {
                    if let Some(set) = self.narrow(clause) {
                        acc = Some(match acc {
                            Some(a) => intersect(&a, &set),
                            None => set,
                        });
                    }
                }
                if *minimum_should_match >= 1 && !should.is_empty() {
                    let mut lists = Vec::with_capacity(should.len());
                    let mut narrowed = true;
                    for clause in should {
                        match self.narrow(clause) {
                            Some(set) => lists.push(set),
                            None => {
                                narrowed = false;
                                break;
                            }
                        }
                    }
                    if narrowed {
                        let set = union(lists);
                        acc = Some(match acc {
                            Some(a) => intersect(&a, &set),
                            None => set,
                        });
                    }
                }
                acc
            }
            Query::MatchAll | Query::Regexp { .. } | Query::Ids(_) | Query::Exists(_) => None,
        }
    }

    fn field(&self, path: &str) -> Option<&FieldPostings> {
        self.paths.id(path).and_then(|id| self.fields.get(id)).filter(|f| !f.has_object)
    }

    /// `term`: a document matches when one of its values equals `value` as numbers (both numbers)
    /// or as text (`query::loose_eq`). Numbers are found by value, text by text, and a text that
    /// reads as a number also among the numbers (a number's text reads back as that number).
    fn term(&self, path: &str, value: &Value) -> Option<Vec<u32>> {
        let field = self.field(path)?;
        let text = value_text(value);
        let number = match value {
            Value::Number(n) => n.as_f64(),
            _ => text.parse::<f64>().ok(),
        };
        let mut lists: Vec<Vec<u32>> = Vec::with_capacity(2);
        if let Some(list) = number.and_then(Num::new).and_then(|n| field.nums.get(&n)) {
            lists.push(list.as_slice().to_vec());
        }
        if let Some(list) = field.texts.get(text.as_str()) {
            lists.push(list.as_slice().to_vec());
        }
        Some(union(lists))
    }

    /// `range` with numeric bounds: the numbers (and numeric strings) between the loosest bounds.
    /// Other bounds, or a field holding date strings (compared as instants), are not narrowed;
    /// nor is a range without bounds (it matches any value).
    fn range(&self, path: &str, bounds: &[(Bound, Value)]) -> Option<Vec<u32>> {
        let field = self.field(path)?;
        if field.has_date_text || bounds.is_empty() {
            return None;
        }
        let (mut low, mut high) = (f64::NEG_INFINITY, f64::INFINITY);
        for (bound, limit) in bounds {
            let Value::Number(n) = limit else { return None };
            let x = n.as_f64()?;
            match bound {
                Bound::Gt | Bound::Gte => low = low.max(x),
                Bound::Lt | Bound::Lte => high = high.min(x),
            }
        }
        let (Some(low), Some(high)) = (Num::new(low), Num::new(high)) else { return None };
        if low > high {
            return Some(Vec::new());
        }
        let lists: Vec<Vec<u32>> = field
            .nums
            .range((RangeBound::Included(low), RangeBound::Included(high)))
            .map(|(_, list)| list.as_slice().to_vec())
            .collect();
        Some(union(lists))
    }
}

/// A string's number, as `query` reads one (`str::parse::<f64>`), NaN left out. The first byte
/// rules most strings out before parsing: a number, `inf`, `infinity` or `nan`, maybe signed; and
/// a decimal number holds nothing but digits, signs, a point and an exponent, which rules out the
/// hex ids that start with a digit (most of a span's values) without a parse.
fn text_number(s: &str) -> Option<Num> {
    let first = s.bytes().find(|b| !matches!(b, b'+' | b'-'))?;
    if first.is_ascii_digit() || first == b'.' {
        if !s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
            return None;
        }
    } else if !matches!(first, b'i' | b'I' | b'n' | b'N') {
        return None;
    }
    s.parse::<f64>().ok().and_then(Num::new)
}

/// Whether `s` can be an RFC 3339 date (`YYYY-MM-DDTHH:MM:SSZ` at the shortest), before parsing.
fn may_be_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[0].is_ascii_digit() && b[4] == b'-'
}

/// The sorted, distinct union of `lists`.
fn union(lists: Vec<Vec<u32>>) -> Vec<u32> {
    let mut lists = lists.into_iter();
    let Some(mut out) = lists.next() else { return Vec::new() };
    for list in lists {
        out.extend(list);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The intersection of two sorted, distinct lists.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn paths() -> IndexedPaths {
        IndexedPaths::from_mappings(&json!({"properties": {
            "traceID": {"type": "keyword"}, "n": {"type": "long"},
            "tags": {"type": "nested", "properties": {"key": {"type": "keyword"}, "value": {"type": "keyword"}}},
            "process": {"properties": {"serviceName": {"type": "keyword"}}}
        }}))
    }

    /// A mapping with a keyword field at each of `paths` (segments may repeat or be empty).
    fn mapping_of(paths: &[Vec<String>]) -> Value {
        let mut root = json!({});
        for path in paths {
            keyword_at(&mut root, path);
        }
        root
    }

    fn keyword_at(root: &mut Value, path: &[String]) -> Option<()> {
        let mut at = root;
        for segment in path {
            let object = at.as_object_mut()?;
            let properties = object.entry("properties").or_insert_with(|| json!({})).as_object_mut()?;
            at = properties.entry(segment.clone()).or_insert_with(|| json!({}));
        }
        at.as_object_mut()?.insert("type".into(), json!("keyword"));
        Some(())
    }

    proptest! {
        /// The key table answers as the walk of the path tree, for keys with and without dots,
        /// from every node.
        #[test]
        fn key_table_answers_as_the_tree_walk(
            mapped in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(vec!["a", "b", "ab", "", "tags", "key"]).prop_map(String::from), 1..4), 0..8),
            keys in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(vec!["a", "b", "ab", "", "tags", "key", "x"]), 1..4).prop_map(|s| s.join(".")), 1..12),
        ) {
            let indexed = IndexedPaths::from_mappings(&mapping_of(&mapped));
            for node in 0..indexed.nodes.len() {
                for key in &keys {
                    prop_assert_eq!(indexed.child(node, key), indexed.walk_child(node, key), "{} {:?}", node, key);
                }
            }
            let jaeger = paths();
            for key in ["process", "process.serviceName", "process.tags.key", "tags", "tags.value", "traceID", "process.x", "x.y"] {
                prop_assert_eq!(jaeger.child(0, key), jaeger.walk_child(0, key));
            }
        }
    }

    /// A property name of thousands of dotted segments: the key table holds at most
    /// [`TABLE_DEPTH`] segments per entry (linear in the depth, not cubic), and keys longer than
    /// that still find their node by walking.
    #[test]
    fn a_deep_dotted_mapping_keeps_the_key_table_linear_and_long_keys_walk() {
        let segments = 2_000;
        let name = vec!["x"; segments].join(".");
        let indexed = IndexedPaths::from_mappings(&json!({"properties": {name.clone(): {"type": "keyword"}}}));
        let entries = indexed.keys.slots.iter().flatten().count();
        assert!(entries <= TABLE_DEPTH * indexed.nodes.len(), "{entries} entries for {} nodes", indexed.nodes.len());
        assert_eq!(indexed.id(&name), Some(0));
        for depth in [1, TABLE_DEPTH - 1, TABLE_DEPTH, TABLE_DEPTH + 1, 50, segments, segments + 1] {
            let key = vec!["x"; depth].join(".");
            for node in [0, 1, segments / 2] {
                assert_eq!(indexed.child(node, &key), indexed.walk_child(node, &key), "node {node}, {depth} segments");
            }
        }
    }

    #[test]
    fn walk_emits_indexed_leaves_and_validates_like_value() {
        let p = paths();
        let mut seen = Vec::new();
        let text = r#"{"traceID":"a","x":{"traceID":"no"},"tags":[{"key":"k","value":1}],"process.serviceName":"s","n":[1,2.5]}"#;
        let object = walk(text, Some(&p), |id, leaf| seen.push((id, format!("{leaf:?}")))).expect("valid");
        assert!(object);
        assert_eq!(seen.len(), 6, "{seen:?}");
        for bad in [r#"{"a":1e400}"#, r#"{"a":"\ud800"}"#, "{\"a\":1} x", "{", r#"{"\ud800":1}"#] {
            let ours = walk(bad, None, |_, _| {}).expect_err("invalid").to_string();
            let theirs = serde_json::from_str::<Value>(bad).expect_err("invalid").to_string();
            assert_eq!(ours, theirs, "{bad}");
        }
        assert!(!walk("[1]", None, |_, _| {}).expect("valid"));
    }

    #[test]
    fn validate_accepts_and_refuses_as_value_does() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let long = format!("{{\"a\":{}}}", "9".repeat(400));
        let cases = [
            r#"{"a":1}"#.to_owned(),
            r#" {"a":[1,2.5,-3e2,"x\"y",null,true,{"b":{}}]} "#.to_owned(),
            "[1]".to_owned(),
            "5".to_owned(),
            r#""s""#.to_owned(),
            r#"{"a":1e400}"#.to_owned(),
            r#"{"a":-1E400}"#.to_owned(),
            r#"{"a":"\ud800"}"#.to_owned(),
            r#"{"\ud800":1}"#.to_owned(),
            r#"{"a":"\u00e9"}"#.to_owned(),
            r#"{"a":"x\\"}"#.to_owned(),
            r#"{"a":"9e9 [[[[","b":9e9}"#.to_owned(),
            format!("{{\"a\":\"{}\",\"b\":{}}}", "[".repeat(300), deep(200)),
            long,
            format!("{{\"a\":{}}}", deep(127)),
            format!("{{\"a\":{}}}", deep(200)),
            r#"{"a":01}"#.to_owned(),
            r#"{"a":1.}"#.to_owned(),
            "{\"a\":\"\u{1}\"}".to_owned(),
            r#"{"a":"\x"}"#.to_owned(),
            "{\"a\":1} x".to_owned(),
            "{".to_owned(),
            String::new(),
        ];
        for text in cases {
            let ours = validate(&text).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(&text).map(|v| v.is_object()).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn recorded_values_list_as_a_walk_does() {
        let p = paths();
        let texts = [
            r#"{"traceID":"a\"b","n":[1,"2",true,null],"tags":[{"key":"k\u00e9","value":{"x":1}}],"process.serviceName":"s"}"#,
            r#"{"traceID":["é","2026-11-30T00:00:00Z"],"x":{"traceID":"no"},"n":-0.0}"#,
        ];
        let (mut walked, mut recorded) = (Postings::new(paths()), Postings::new(paths()));
        let mut scratch = Vec::new();
        for (pos, text) in texts.iter().enumerate() {
            let (object, values) = record(text, &p, &mut scratch).expect("valid");
            assert!(object);
            assert!(values.bytes() > 0);
            assert_eq!(recorded.add_recorded(pos, text, &values), walked.add(pos, text));
        }
        assert_eq!(format!("{:?}", recorded.fields), format!("{:?}", walked.fields));
        let bad = r#"{"traceID":"\ud800"}"#;
        assert_eq!(
            record(bad, &p, &mut scratch).expect_err("invalid").to_string(),
            serde_json::from_str::<Value>(bad).expect_err("invalid").to_string()
        );
    }

    /// A value's list goes from one inline document to many and back to none as documents come and
    /// go, with the same answers and the memory given back as it was counted.
    #[test]
    fn values_held_by_one_then_many_documents() {
        let docs = [r#"{"traceID":"a"}"#, r#"{"traceID":"a","n":5}"#, r#"{"traceID":["b","b"],"n":[5,5]}"#];
        let mut postings = Postings::new(paths());
        let added: Vec<u64> = docs.iter().enumerate().map(|(pos, doc)| postings.add(pos, doc)).collect();
        let q = |postings: &Postings, v: Value| postings.candidates(&Query::parse(&v).expect("parses"));
        assert_eq!(q(&postings, json!({"term": {"traceID": "a"}})), Some(vec![0, 1]));
        assert_eq!(q(&postings, json!({"term": {"traceID": "b"}})), Some(vec![2]));
        assert_eq!(q(&postings, json!({"term": {"n": 5}})), Some(vec![1, 2]));
        assert_eq!(q(&postings, json!({"range": {"n": {"gte": 5}}})), Some(vec![1, 2]));
        // The value stays with document 1: only the posting is let go.
        assert_eq!(postings.remove(0, docs[0]), POSTING_BYTES);
        assert_eq!(q(&postings, json!({"term": {"traceID": "a"}})), Some(vec![1]));
        assert_eq!(postings.remove(2, docs[2]), added[2]);
        assert_eq!(q(&postings, json!({"term": {"traceID": "b"}})), Some(vec![]));
        assert_eq!(q(&postings, json!({"term": {"n": 5}})), Some(vec![1]));
        // Listed again (after document 1, as an overwritten document is) and answered in order.
        assert_eq!(postings.add(0, docs[0]), POSTING_BYTES);
        assert_eq!(q(&postings, json!({"term": {"traceID": "a"}})), Some(vec![0, 1]));
        assert_eq!(postings.remove(1, docs[1]), added[1]);
        assert_eq!(q(&postings, json!({"term": {"traceID": "a"}})), Some(vec![0]));
        assert_eq!(postings.remove(0, docs[0]), added[0]);
        assert!(postings.fields.iter().all(|f| f.texts.is_empty() && f.nums.is_empty()));
    }

    /// The shortcut in `text_number` never refuses a string `str::parse::<f64>` reads.
    #[test]
    fn text_numbers_read_as_parse_does() {
        for s in [
            "200",
            "-1.5e3",
            "+7",
            ".5",
            "5.",
            "1E-2",
            "inf",
            "-Infinity",
            "NaN",
            "nan",
            "3f2a",
            "1e5x",
            "0x10",
            "12 ",
            " 12",
            "1_000",
            "bfdc2990",
            "1796099656413040",
            "2026-12-01",
            "",
            "-",
            "e5",
        ] {
            let want = s.parse::<f64>().ok().and_then(Num::new);
            assert_eq!(text_number(s), want, "{s:?}");
        }
    }

    #[test]
    fn candidates_are_supersets() {
        let mut postings = Postings::new(paths());
        postings.add(0, r#"{"traceID":"a","n":200,"tags":[{"key":"http","value":"500"}]}"#);
        postings.add(1, r#"{"traceID":"b","n":"200","process":{"serviceName":"s"}}"#);
        postings.add(2, r#"{"traceID":["a","c"],"n":7}"#);
        let q = |v: Value| postings.candidates(&Query::parse(&v).expect("parses"));
        assert_eq!(q(json!({"term": {"traceID": "a"}})), Some(vec![0, 2]));
        assert_eq!(q(json!({"term": {"n": "200"}})), Some(vec![0, 1]));
        assert_eq!(q(json!({"term": {"n": 200.0}})), Some(vec![0, 1]));
        assert_eq!(q(json!({"term": {"tags.value": 500}})), Some(vec![0]));
        assert_eq!(q(json!({"range": {"n": {"gte": 100, "lt": 300}}})), Some(vec![0, 1]));
        assert_eq!(q(json!({"range": {"n": {"gt": 300, "lt": 100}}})), Some(vec![]));
        assert_eq!(
            q(json!({"bool": {"must": [{"term": {"traceID": "a"}}, {"range": {"n": {"lte": 10}}}]}})),
            Some(vec![2])
        );
        assert_eq!(q(json!({"term": {"unmapped": "a"}})), None);
        assert_eq!(q(json!({"regexp": {"traceID": "a"}})), None);
        postings.remove(2, r#"{"traceID":["a","c"],"n":7}"#);
        let q = |v: Value| postings.candidates(&Query::parse(&v).expect("parses"));
        assert_eq!(q(json!({"term": {"traceID": "a"}})), Some(vec![0]));
    }
}

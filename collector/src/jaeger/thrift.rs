//! `jaeger::thrift`: a bounded reader of Apache Thrift's BINARY and COMPACT protocols, written from
//! their specifications (thrift `doc/specs/thrift-binary-protocol.md` and
//! `thrift-compact-protocol.md`).
//!
//! Called by [`super`] (the Jaeger translation), which walks the structs it knows and hands every
//! field it does not know to [`Reader::skip`]. Guarantees: it never reads past its input and never
//! allocates: strings come back as slices of the input; every declared length and collection size
//! is checked against the bytes left before anyone can act on it (a list claiming 2^31 elements is
//! refused at its header, whatever its element type); nesting of structs and collections is
//! bounded by the depth given to [`Reader::new`]; and compact varints longer than their type allows
//! are refused.

/// What went wrong in the Thrift encoding itself: the input cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThriftError {
    /// The input ends before a value it started.
    #[error("truncated at byte {at}: {what} needs {need} more bytes, {left} left")]
    Truncated { at: usize, what: &'static str, need: usize, left: usize },
    /// A type code that the protocol does not define.
    #[error("unknown thrift type code {code} at byte {at}")]
    UnknownType { code: u8, at: usize },
    /// A length or collection size below zero.
    #[error("negative {what} ({size}) at byte {at}")]
    Negative { what: &'static str, size: i64, at: usize },
    /// A collection declares more elements than the bytes left could hold.
    #[error("{what} at byte {at} declares {size} elements, more than the {left} bytes left can hold")]
    SizeExceedsInput { what: &'static str, size: usize, left: usize, at: usize },
    /// A compact varint longer than its type allows.
    #[error("varint too long at byte {at}")]
    VarintTooLong { at: usize },
    /// Structs and collections nested deeper than allowed.
    #[error("thrift values nested deeper than {max} levels at byte {at}")]
    TooDeep { max: usize, at: usize },
    /// A message header that is not a Thrift message of this protocol.
    #[error("bad message header: {0}")]
    BadMessage(&'static str),
}

pub type Result<T, E = ThriftError> = std::result::Result<T, E>;

/// The wire protocol of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

/// The Thrift types, whatever their code in each protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    /// `string` and `binary`.
    Binary,
    Struct,
    Map,
    Set,
    List,
    Uuid,
}

impl Type {
    /// The type of a binary-protocol type code (fields and elements share codes).
    fn binary(code: u8) -> Option<Type> {
        Some(match code {
            2 => Type::Bool,
            3 => Type::I8,
            4 => Type::Double,
            6 => Type::I16,
            8 => Type::I32,
            10 => Type::I64,
            11 => Type::Binary,
            12 => Type::Struct,
            13 => Type::Map,
            14 => Type::Set,
            15 => Type::List,
            16 => Type::Uuid,
            _ => return None,
        })
    }

    /// The type of a compact-protocol code. Field headers use 1 and 2 for a boolean's value;
    /// element types use 2 for `bool`, but some writers (Java) write 1: both are read as `Bool`.
    fn compact(code: u8) -> Option<Type> {
        Some(match code {
            1 | 2 => Type::Bool,
            3 => Type::I8,
            4 => Type::I16,
            5 => Type::I32,
            6 => Type::I64,
            7 => Type::Double,
            8 => Type::Binary,
            9 => Type::List,
            10 => Type::Set,
            11 => Type::Map,
            12 => Type::Struct,
            13 => Type::Uuid,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes on the wire: what a collection's declared size
    /// is checked against.
    fn min_bytes(self, protocol: Protocol) -> usize {
        match (protocol, self) {
            (_, Type::Bool | Type::I8 | Type::Struct) => 1,
            (_, Type::Double) => 8,
            (_, Type::Uuid) => 16,
            (Protocol::Binary, Type::I16) => 2,
            (Protocol::Binary, Type::I32 | Type::Binary) => 4,
            (Protocol::Binary, Type::I64) => 8,
            (Protocol::Binary, Type::Map) => 6,
            (Protocol::Binary, Type::Set | Type::List) => 5,
            (
                Protocol::Compact,
                Type::I16 | Type::I32 | Type::I64 | Type::Binary | Type::Map | Type::Set | Type::List,
            ) => 1,
        }
    }
}

/// The message types of a message header.
pub const CALL: u8 = 1;
pub const ONEWAY: u8 = 4;

/// A message header: the method name (a slice of the input) and the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub name: &'a [u8],
    pub kind: u8,
}

/// Reads Thrift values from a byte slice, front to back.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    protocol: Protocol,
    /// The value of a compact boolean field, carried in its field header.
    pending_bool: Option<bool>,
    /// Structs and collections open now, and the most allowed.
    depth: usize,
    max_depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], protocol: Protocol, max_depth: usize) -> Self {
        Self { bytes, pos: 0, protocol, pending_bool: None, depth: 0, max_depth }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let left = self.left();
        if n > left {
            return Err(ThriftError::Truncated { at: self.pos, what, need: n, left });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// An unsigned LEB128 varint of at most `max_bytes` bytes.
    fn varint(&mut self, max_bytes: usize) -> Result<u64> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte("a varint")?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ThriftError::VarintTooLong { at: start })
    }

    fn zigzag(n: u64) -> i64 {
        ((n >> 1) as i64) ^ -((n & 1) as i64)
    }

    /// Counts one more level of nesting; [`Reader::leave`] undoes it.
    pub fn enter(&mut self) -> Result<()> {
        if self.depth >= self.max_depth {
            return Err(ThriftError::TooDeep { max: self.max_depth, at: self.pos });
        }
        self.depth += 1;
        Ok(())
    }

    pub fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A message header (strict or old binary encoding, or compact).
    pub fn message(&mut self) -> Result<Message<'a>> {
        match self.protocol {
            Protocol::Binary => {
                let first = i32::from_be_bytes(self.array("a message header")?);
                if first < 0 {
                    // Strict: version 1 in the high half, the type in the low byte.
                    let word = first as u32;
                    if word & 0xffff_0000 != 0x8001_0000 {
                        return Err(ThriftError::BadMessage("binary message version is not 1"));
                    }
                    let kind = (word & 0xff) as u8;
                    let name = self.binary()?;
                    let _seq = self.i32()?;
                    Ok(Message { name, kind })
                } else {
                    // Old encoding: the name's length comes first.
                    let name = self.take(first as usize, "a message name")?;
                    let kind = self.byte("a message type")?;
                    let _seq = self.i32()?;
                    Ok(Message { name, kind })
                }
            }
            Protocol::Compact => {
                if self.byte("a message header")? != 0x82 {
                    return Err(ThriftError::BadMessage("compact protocol id is not 0x82"));
                }
                let kv = self.byte("a message header")?;
                if kv & 0x1f != 1 {
                    return Err(ThriftError::BadMessage("compact message version is not 1"));
                }
                let _seq = self.varint(5)?;
                let name = self.binary()?;
                Ok(Message { name, kind: kv >> 5 })
            }
        }
    }

    /// The next field header of the struct being read, or `None` at its stop field. `last_id` is
    /// the previous field's id in this struct (compact field ids are deltas from it): start at 0.
    pub fn field(&mut self, last_id: &mut i16) -> Result<Option<(Type, i16)>> {
        let at = self.pos;
        let code = self.byte("a field header")?;
        if code == 0 {
            return Ok(None);
        }
        match self.protocol {
            Protocol::Binary => {
                let ty = Type::binary(code).ok_or(ThriftError::UnknownType { code, at })?;
                let id = i16::from_be_bytes(self.array("a field id")?);
                *last_id = id;
                Ok(Some((ty, id)))
            }
            Protocol::Compact => {
                let type_code = code & 0x0f;
                let ty = Type::compact(type_code).ok_or(ThriftError::UnknownType { code: type_code, at })?;
                let delta = code >> 4;
                let id = if delta == 0 {
                    Self::zigzag(self.varint(3)?) as i16
                } else {
                    last_id.wrapping_add(i16::from(delta))
                };
                *last_id = id;
                if ty == Type::Bool {
                    self.pending_bool = Some(type_code == 1);
                }
                Ok(Some((ty, id)))
            }
        }
    }

    pub fn bool(&mut self) -> Result<bool> {
        if let Some(value) = self.pending_bool.take() {
            return Ok(value);
        }
        Ok(self.byte("a bool")? == 1)
    }

    pub fn i8(&mut self) -> Result<i8> {
        self.pending_bool = None;
        Ok(self.byte("an i8")? as i8)
    }

    pub fn i16(&mut self) -> Result<i16> {
        self.pending_bool = None;
        match self.protocol {
            Protocol::Binary => Ok(i16::from_be_bytes(self.array("an i16")?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(3)?) as i16),
        }
    }

    pub fn i32(&mut self) -> Result<i32> {
        self.pending_bool = None;
        match self.protocol {
            Protocol::Binary => Ok(i32::from_be_bytes(self.array("an i32")?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(5)?) as i32),
        }
    }

    pub fn i64(&mut self) -> Result<i64> {
        self.pending_bool = None;
        match self.protocol {
            Protocol::Binary => Ok(i64::from_be_bytes(self.array("an i64")?)),
            Protocol::Compact => Ok(Self::zigzag(self.varint(10)?)),
        }
    }

    /// A double: big-endian in the binary protocol, little-endian in the compact one.
    pub fn double(&mut self) -> Result<f64> {
        self.pending_bool = None;
        let bytes = self.array::<8>("a double")?;
        Ok(match self.protocol {
            Protocol::Binary => f64::from_be_bytes(bytes),
            Protocol::Compact => f64::from_le_bytes(bytes),
        })
    }

    /// A `binary` or `string`, as a slice of the input.
    pub fn binary(&mut self) -> Result<&'a [u8]> {
        self.pending_bool = None;
        let at = self.pos;
        let len = match self.protocol {
            Protocol::Binary => i64::from(i32::from_be_bytes(self.array("a length")?)),
            Protocol::Compact => i64::from(self.varint(5)? as u32 as i32),
        };
        if len < 0 {
            return Err(ThriftError::Negative { what: "binary length", size: len, at });
        }
        self.take(len as usize, "a binary value")
    }

    fn size(&mut self, raw: i64, what: &'static str, at: usize) -> Result<usize> {
        if raw < 0 {
            return Err(ThriftError::Negative { what, size: raw, at });
        }
        Ok(raw as usize)
    }

    /// A list or set header: the element type and the number of elements, checked against the bytes
    /// left (each element takes at least its type's smallest encoding).
    pub fn list(&mut self) -> Result<(Type, usize)> {
        self.pending_bool = None;
        let at = self.pos;
        let (ty, size) = match self.protocol {
            Protocol::Binary => {
                let code = self.byte("a list header")?;
                let ty = Type::binary(code).ok_or(ThriftError::UnknownType { code, at })?;
                let raw = i64::from(i32::from_be_bytes(self.array("a list size")?));
                (ty, self.size(raw, "list size", at)?)
            }
            Protocol::Compact => {
                let header = self.byte("a list header")?;
                let code = header & 0x0f;
                let ty = Type::compact(code).ok_or(ThriftError::UnknownType { code, at })?;
                let short = usize::from(header >> 4);
                let size = if short == 15 {
                    let raw = i64::from(self.varint(5)? as u32 as i32);
                    self.size(raw, "list size", at)?
                } else {
                    short
                };
                (ty, size)
            }
        };
        self.check_size("a list", size, ty.min_bytes(self.protocol), at)?;
        Ok((ty, size))
    }

    /// A map header: key and value types and the number of entries, checked like a list's.
    pub fn map(&mut self) -> Result<(Type, Type, usize)> {
        self.pending_bool = None;
        let at = self.pos;
        let (key, value, size) = match self.protocol {
            Protocol::Binary => {
                let [k, v] = self.array::<2>("a map header")?;
                let key = Type::binary(k).ok_or(ThriftError::UnknownType { code: k, at })?;
                let value = Type::binary(v).ok_or(ThriftError::UnknownType { code: v, at })?;
                let raw = i64::from(i32::from_be_bytes(self.array("a map size")?));
                (key, value, self.size(raw, "map size", at)?)
            }
            Protocol::Compact => {
                let raw = i64::from(self.varint(5)? as u32 as i32);
                let size = self.size(raw, "map size", at)?;
                if size == 0 {
                    // An empty map has no type byte; its types do not matter.
                    return Ok((Type::I8, Type::I8, 0));
                }
                let kv = self.byte("a map header")?;
                let key = Type::compact(kv >> 4).ok_or(ThriftError::UnknownType { code: kv >> 4, at })?;
                let value = Type::compact(kv & 0x0f).ok_or(ThriftError::UnknownType { code: kv & 0x0f, at })?;
                (key, value, size)
            }
        };
        self.check_size("a map", size, key.min_bytes(self.protocol) + value.min_bytes(self.protocol), at)?;
        Ok((key, value, size))
    }

    fn check_size(&self, what: &'static str, size: usize, min_bytes: usize, at: usize) -> Result<()> {
        let left = self.left();
        if size > left / min_bytes {
            return Err(ThriftError::SizeExceedsInput { what, size, left, at });
        }
        Ok(())
    }

    /// Reads and drops one value of type `ty`, however it nests (up to the depth bound).
    pub fn skip(&mut self, ty: Type) -> Result<()> {
        match ty {
            Type::Bool => self.bool().map(drop),
            Type::I8 => self.i8().map(drop),
            Type::I16 => self.i16().map(drop),
            Type::I32 => self.i32().map(drop),
            Type::I64 => self.i64().map(drop),
            Type::Double => self.double().map(drop),
            Type::Binary => self.binary().map(drop),
            Type::Uuid => {
                self.pending_bool = None;
                self.take(16, "a uuid").map(drop)
            }
            Type::Struct => {
                self.enter()?;
                let mut last = 0;
                while let Some((ty, _)) = self.field(&mut last)? {
                    self.skip(ty)?;
                }
                self.leave();
                Ok(())
            }
            Type::List | Type::Set => {
                let (element, size) = self.list()?;
                self.skip_elements(element, size)
            }
            Type::Map => {
                let (key, value, size) = self.map()?;
                self.enter()?;
                for _ in 0..size {
                    self.skip(key)?;
                    self.skip(value)?;
                }
                self.leave();
                Ok(())
            }
        }
    }

    /// Reads and drops `size` elements of type `ty` (the rest of a list whose header was read).
    pub fn skip_elements(&mut self, ty: Type, size: usize) -> Result<()> {
        self.enter()?;
        for _ in 0..size {
            self.skip(ty)?;
        }
        self.leave();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_varints_and_zigzag() {
        // 50399 from the compact spec, then zigzag -1 and 1.
        let mut r = Reader::new(&[0xdf, 0x89, 0x03], Protocol::Compact, 8);
        assert_eq!(r.varint(5), Ok(50399));
        assert_eq!(Reader::zigzag(1), -1);
        assert_eq!(Reader::zigzag(2), 1);
        assert_eq!(Reader::zigzag(u64::MAX), i64::MIN);
        let mut r = Reader::new(&[0xff; 11], Protocol::Compact, 8);
        assert_eq!(r.i64(), Err(ThriftError::VarintTooLong { at: 0 }));
    }

    #[test]
    fn compact_doubles_are_little_endian_binary_big_endian() {
        let le = 1.5f64.to_le_bytes();
        assert_eq!(Reader::new(&le, Protocol::Compact, 8).double(), Ok(1.5));
        let be = 1.5f64.to_be_bytes();
        assert_eq!(Reader::new(&be, Protocol::Binary, 8).double(), Ok(1.5));
    }

    #[test]
    fn list_sizes_are_checked_against_the_bytes_left() {
        // Binary: list<i64> of 2^31-1 elements with 16 bytes left.
        let mut bytes = vec![10, 0x7f, 0xff, 0xff, 0xff];
        bytes.extend([0; 16]);
        let err = Reader::new(&bytes, Protocol::Binary, 8).list().unwrap_err();
        assert!(matches!(err, ThriftError::SizeExceedsInput { size: 0x7fff_ffff, left: 16, .. }), "{err}");
        // Exactly two i64 fit.
        let mut bytes = vec![10, 0, 0, 0, 2];
        bytes.extend([0; 16]);
        assert_eq!(Reader::new(&bytes, Protocol::Binary, 8).list(), Ok((Type::I64, 2)));
        // Negative size.
        let bytes = [12, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(Reader::new(&bytes, Protocol::Binary, 8).list(), Err(ThriftError::Negative { .. })));
        // Compact long form: 0xf9 = size follows, element type 9 (list).
        let bytes = [0xf9, 0xff, 0xff, 0xff, 0xff, 0x07, 0];
        assert!(matches!(Reader::new(&bytes, Protocol::Compact, 8).list(), Err(ThriftError::SizeExceedsInput { .. })));
        // Maps too: 3 entries of (i64, double) need 48 bytes.
        let bytes = [10, 4, 0, 0, 0, 3, 0, 0];
        assert!(matches!(Reader::new(&bytes, Protocol::Binary, 8).map(), Err(ThriftError::SizeExceedsInput { .. })));
    }

    #[test]
    fn binary_lengths_are_checked() {
        let bytes = [0x7f, 0xff, 0xff, 0xff, b'a'];
        assert!(matches!(Reader::new(&bytes, Protocol::Binary, 8).binary(), Err(ThriftError::Truncated { .. })));
        let bytes = [0x80, 0, 0, 0];
        assert!(matches!(Reader::new(&bytes, Protocol::Binary, 8).binary(), Err(ThriftError::Negative { .. })));
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(Reader::new(&bytes, Protocol::Compact, 8).binary(), Err(ThriftError::Negative { .. })));
    }

    #[test]
    fn skipping_is_bounded_by_depth() {
        // Binary: struct { 1: struct { 1: struct { ... } } } 100 deep.
        let mut bytes = Vec::new();
        for _ in 0..100 {
            bytes.extend([12, 0, 1]);
        }
        bytes.extend(std::iter::repeat_n(0, 101));
        let mut r = Reader::new(&bytes, Protocol::Binary, 16);
        assert!(matches!(r.skip(Type::Struct), Err(ThriftError::TooDeep { max: 16, .. })));
        let mut r = Reader::new(&bytes, Protocol::Binary, 128);
        assert_eq!(r.skip(Type::Struct), Ok(()));
        // Compact: lists of lists.
        let bytes = vec![0x19; 1000];
        let mut r = Reader::new(&bytes, Protocol::Compact, 16);
        assert!(matches!(r.skip(Type::List), Err(ThriftError::TooDeep { .. })));
    }

    #[test]
    fn message_headers() {
        // Strict binary: version 1, oneway, name "emitBatch", seq 7.
        let mut bytes = vec![0x80, 0x01, 0x00, 0x04, 0, 0, 0, 9];
        bytes.extend(b"emitBatch");
        bytes.extend([0, 0, 0, 7]);
        let m = Reader::new(&bytes, Protocol::Binary, 8).message();
        assert_eq!(m, Ok(Message { name: b"emitBatch", kind: ONEWAY }));
        // Old binary.
        let mut bytes = vec![0, 0, 0, 9];
        bytes.extend(b"emitBatch");
        bytes.extend([1, 0, 0, 0, 7]);
        assert_eq!(Reader::new(&bytes, Protocol::Binary, 8).message(), Ok(Message { name: b"emitBatch", kind: CALL }));
        // Compact: 0x82, type 4 << 5 | version 1, seq 7, name.
        let mut bytes = vec![0x82, 0x81, 7, 9];
        bytes.extend(b"emitBatch");
        assert_eq!(
            Reader::new(&bytes, Protocol::Compact, 8).message(),
            Ok(Message { name: b"emitBatch", kind: ONEWAY })
        );
        assert!(Reader::new(&[0x80, 0x02, 0, 1], Protocol::Binary, 8).message().is_err());
        assert!(Reader::new(&[0x83, 0x81], Protocol::Compact, 8).message().is_err());
    }
}

//! A byte count read from config as `900KiB`, `5MiB`, `1MB` or a plain integer.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A size in bytes. Parses binary (`KiB`, `MiB`, `GiB`) and decimal (`KB`, `MB`, `GB`) suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
    /// A size counted in memory (saturating where `usize` is wider than 64 bits).
    pub fn from_usize(n: usize) -> Self {
        Self(u64::try_from(n).unwrap_or(u64::MAX))
    }
    /// The size as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Why a byte size could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid byte size {0:?}: expected a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB)")]
pub struct ParseByteSizeError(String);

impl FromStr for ByteSize {
    type Err = ParseByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| ParseByteSizeError(s.to_owned()))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "kib" => 1 << 10,
            "mb" | "m" => 1_000_000,
            "mib" => 1 << 20,
            "gb" | "g" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return Err(ParseByteSizeError(s.to_owned())),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| ParseByteSizeError(s.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as 900KiB, 5MiB or 1000000")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a byte size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("900KiB".parse::<ByteSize>().ok(), Some(ByteSize(900 * 1024)));
        assert_eq!("5 MiB".parse::<ByteSize>().ok(), Some(ByteSize(5 << 20)));
        assert_eq!("1MB".parse::<ByteSize>().ok(), Some(ByteSize(1_000_000)));
        assert_eq!("42".parse::<ByteSize>().ok(), Some(ByteSize(42)));
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_the_largest_exact_unit() {
        assert_eq!(ByteSize::kib(900).to_string(), "900KiB");
        assert_eq!(ByteSize::mib(16).to_string(), "16MiB");
        assert_eq!(ByteSize(1_000_000).to_string(), "1000000B");
    }

    #[test]
    fn deserializes_from_numbers_and_strings() {
        let v: Vec<ByteSize> = serde_json::from_str(r#"[1024, "2KiB"]"#).expect("parses");
        assert_eq!(v, vec![ByteSize(1024), ByteSize(2048)]);
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
    }
}

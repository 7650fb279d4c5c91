//! Human-friendly units in config files: durations (`250ms`, `5s`, `1m`) and sizes (`32KiB`, `10MiB`).

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::time::Duration as StdDuration;

/// A duration written as a string with a unit (`250ms`, `5s`, `2m`, `1h`); a bare number is seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Builds from milliseconds; used for defaults.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    /// Builds from seconds; used for defaults.
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
    /// The standard-library value.
    pub const fn get(self) -> StdDuration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\" or \"1m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration(StdDuration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(|v| Duration(StdDuration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim())
                    .map(Duration)
                    .map_err(|e| E::custom(format!("invalid duration {v:?}: {e} (use e.g. \"250ms\", \"5s\", \"1m\")")))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A byte size written as `32KiB`, `10MiB`, `1MB` or a bare number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB; used for defaults.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    /// `n` MiB; used for defaults.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"32KiB\" or \"10MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|e| E::custom(format!("invalid size {v:?}: {e} (use e.g. \"32KiB\", \"10MiB\")")))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let d: Duration = serde_json::from_str("\"250ms\"").unwrap();
        assert_eq!(d.get(), StdDuration::from_millis(250));
        let d: Duration = serde_json::from_str("3").unwrap();
        assert_eq!(d.get(), StdDuration::from_secs(3));
        let b: ByteSize = serde_json::from_str("\"32KiB\"").unwrap();
        assert_eq!(b.bytes(), 32 * 1024);
        let b: ByteSize = serde_json::from_str("\"10MiB\"").unwrap();
        assert_eq!(b.bytes(), 10 * 1024 * 1024);
        assert!(serde_json::from_str::<Duration>("\"5 parsecs\"").is_err());
        assert!(serde_json::from_str::<ByteSize>("\"lots\"").is_err());
    }
}

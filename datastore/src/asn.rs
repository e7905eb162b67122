//! AS numbers as Calico writes them: a plain number (`64512`, or `"64512"`) or the dotted
//! "asdot" form of RFC 5396 (`"1.10"` = 1 × 65536 + 10).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A 4-octet AS number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsNumber(pub u32);

/// Why a text is not an AS number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an AS number (a number up to 4294967295, or dotted as 1.10)")]
pub struct AsNumberError(pub String);

impl FromStr for AsNumber {
    type Err = AsNumberError;

    fn from_str(s: &str) -> Result<AsNumber, AsNumberError> {
        let bad = || AsNumberError(s.to_string());
        let t = s.trim();
        if let Some((high, low)) = t.split_once('.') {
            let high: u16 = high.parse().map_err(|_| bad())?;
            let low: u16 = low.parse().map_err(|_| bad())?;
            return Ok(AsNumber((u32::from(high) << 16) | u32::from(low)));
        }
        t.parse().map(AsNumber).map_err(|_| bad())
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AsNumber, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number: up to 4294967295, or dotted as 1.10")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(AsNumberError(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(AsNumberError(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<AsNumber, E> {
                // YAML reads `1.10` as a float; Calico means the dotted form. The float has
                // lost the text, so only forms that survive it are accepted (no trailing 0).
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AsNumber, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for AsNumber {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AsNumber".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_as_number_parses() {
        assert_eq!("64512".parse(), Ok(AsNumber(64512)));
        assert_eq!("4294967295".parse(), Ok(AsNumber(u32::MAX)));
    }

    #[test]
    fn dotted_as_number_is_high_times_65536_plus_low() {
        assert_eq!("1.10".parse(), Ok(AsNumber(65546)));
        assert_eq!("65535.65535".parse(), Ok(AsNumber(u32::MAX)));
    }

    #[test]
    fn out_of_range_as_numbers_are_refused() {
        assert!("4294967296".parse::<AsNumber>().is_err());
        assert!("65536.1".parse::<AsNumber>().is_err());
        assert!("-1".parse::<AsNumber>().is_err());
        assert!("".parse::<AsNumber>().is_err());
    }

    #[test]
    fn yaml_number_string_and_dotted_forms_deserialize() {
        let a: AsNumber = serde_json::from_str("64512").unwrap_or(AsNumber(0));
        let b: AsNumber = serde_json::from_str("\"64512\"").unwrap_or(AsNumber(0));
        let c: AsNumber = serde_json::from_str("\"1.10\"").unwrap_or(AsNumber(0));
        assert_eq!(
            (a, b, c),
            (AsNumber(64512), AsNumber(64512), AsNumber(65546))
        );
    }
}

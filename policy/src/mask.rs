//! Desensitization (脱敏): the masks an agreement sets per column, applied to every value that
//! leaves the gateway.
//!
//! Masks are pure functions of the value (and, for `hash`, of the platform's secret key), so the
//! same value always masks the same way and masked data can still be joined on masked keys.
//! Masking works on characters, not bytes, so Chinese text is masked character by character.

use std::fmt;
use std::str::FromStr;

use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::catalog::FieldType;

/// One mask, as written in agreements: `redact`, `keep_first(n)`, `keep_last(n)`, `hash`,
/// `null`, `year_only`, `cn_id_card`, `cn_mobile`, `email`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Replaced by `***`.
    Redact,
    /// The first n characters kept, the rest replaced by `*`.
    KeepFirst(usize),
    /// The last n characters kept, the rest replaced by `*`.
    KeepLast(usize),
    /// Keyed HMAC-SHA256 of the value, lowercase hex.
    Hash,
    /// Always null.
    Null,
    /// A date or time reduced to its year (an integer).
    YearOnly,
    /// A resident ID-card number with the first 6 (region) and last 4 characters kept.
    CnIdCard,
    /// A mobile number with the first 3 and last 4 digits kept.
    CnMobile,
    /// An e-mail address with its first character and its domain kept.
    Email,
}

/// Why a mask cannot be used where it was asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("unknown mask `{0}`; masks are redact, keep_first(n), keep_last(n), hash, null, year_only, cn_id_card, cn_mobile, email")]
    Unknown(String),
    #[error("mask `{mask}` does not apply to a {field_type} column")]
    WrongType { mask: Mask, field_type: &'static str },
}

const REDACTED: &str = "***";

impl Mask {
    /// The type a column of `input` type has once masked, or why the mask does not fit it.
    pub fn output_type(self, input: FieldType) -> Result<FieldType, MaskError> {
        let wrong = || MaskError::WrongType { mask: self, field_type: input.name() };
        match self {
            Mask::Null => Ok(input),
            Mask::Hash | Mask::Redact => Ok(FieldType::String),
            Mask::YearOnly => match input {
                FieldType::Date | FieldType::Timestamp => Ok(FieldType::Int64),
                _ => Err(wrong()),
            },
            Mask::KeepFirst(_) | Mask::KeepLast(_) | Mask::CnIdCard | Mask::CnMobile | Mask::Email => match input {
                FieldType::String => Ok(FieldType::String),
                _ => Err(wrong()),
            },
        }
    }

    /// Masks one text value. `hash_key` is the platform's secret for [`Mask::Hash`]. Not for
    /// [`Mask::Null`] or [`Mask::YearOnly`], which do not produce text.
    pub fn apply_text(self, value: &str, hash_key: &[u8]) -> String {
        let mut out = String::with_capacity(value.len());
        self.write_text(value, hash_key, &mut out);
        out
    }

    /// [`Mask::apply_text`], appending to `out`: masking a column reuses one buffer.
    pub fn write_text(self, value: &str, hash_key: &[u8], out: &mut String) {
        match self {
            Mask::Redact => out.push_str(REDACTED),
            Mask::KeepFirst(n) => keep(value, n, 0, out),
            Mask::KeepLast(n) => keep(value, 0, n, out),
            Mask::CnIdCard => keep(value, 6, 4, out),
            Mask::CnMobile => keep(value, 3, 4, out),
            Mask::Email => match value.split_once('@') {
                Some((local, domain)) if !local.is_empty() => {
                    keep(local, 1, 0, out);
                    out.push('@');
                    out.push_str(domain);
                }
                _ => out.push_str(REDACTED),
            },
            Mask::Hash => {
                let mut mac =
                    hmac::Hmac::<sha2::Sha256>::new_from_slice(hash_key).expect("HMAC takes keys of any length");
                mac.update(value.as_bytes());
                for b in mac.finalize().into_bytes() {
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            }
            Mask::Null | Mask::YearOnly => unreachable!("{self} does not produce text"),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn stars(n: usize, out: &mut String) {
    const STARS: &str = "********************************";
    let mut left = n;
    while left > 0 {
        let k = left.min(STARS.len());
        out.push_str(&STARS[..k]);
        left -= k;
    }
}

/// Keeps the first `head` and last `tail` characters and stars the rest; a value too short to
/// hide anything is starred whole, so a mask never gives a value away.
fn keep(value: &str, head: usize, tail: usize, out: &mut String) {
    // ID-card numbers, mobiles and codes are ASCII: slice bytes instead of walking characters.
    if value.is_ascii() && value.len() > head + tail {
        out.push_str(&value[..head]);
        stars(value.len() - head - tail, out);
        out.push_str(&value[value.len() - tail..]);
        return;
    }
    let len = value.chars().count();
    if len <= head + tail {
        out.extend(std::iter::repeat_n('*', len.max(1)));
        return;
    }
    let mut chars = value.chars();
    out.extend(chars.by_ref().take(head));
    stars(len - head - tail, out);
    out.extend(chars.skip(len - head - tail));
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mask::Redact => f.write_str("redact"),
            Mask::KeepFirst(n) => write!(f, "keep_first({n})"),
            Mask::KeepLast(n) => write!(f, "keep_last({n})"),
            Mask::Hash => f.write_str("hash"),
            Mask::Null => f.write_str("null"),
            Mask::YearOnly => f.write_str("year_only"),
            Mask::CnIdCard => f.write_str("cn_id_card"),
            Mask::CnMobile => f.write_str("cn_mobile"),
            Mask::Email => f.write_str("email"),
        }
    }
}

impl FromStr for Mask {
    type Err = MaskError;

    fn from_str(s: &str) -> Result<Mask, MaskError> {
        let s = s.trim();
        let unknown = || MaskError::Unknown(s.to_owned());
        if let Some(arg) = s.strip_suffix(')') {
            let (name, n) = arg.split_once('(').ok_or_else(unknown)?;
            let n: usize = n.trim().parse().map_err(|_| unknown())?;
            return match name.trim() {
                "keep_first" => Ok(Mask::KeepFirst(n)),
                "keep_last" => Ok(Mask::KeepLast(n)),
                _ => Err(unknown()),
            };
        }
        match s {
            "redact" => Ok(Mask::Redact),
            "hash" => Ok(Mask::Hash),
            "null" => Ok(Mask::Null),
            "year_only" => Ok(Mask::YearOnly),
            "cn_id_card" => Ok(Mask::CnIdCard),
            "cn_mobile" => Ok(Mask::CnMobile),
            "email" => Ok(Mask::Email),
            _ => Err(unknown()),
        }
    }
}

impl Serialize for Mask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"platform secret";

    #[test]
    fn each_mask_gives_its_documented_output() {
        let cases = [
            (Mask::Redact, "王小明", "***"),
            (Mask::KeepFirst(1), "王小明", "王**"),
            (Mask::KeepLast(4), "13812345678", "*******5678"),
            (Mask::CnIdCard, "32070619870514123X", "320706********123X"),
            (Mask::CnMobile, "13812345678", "138****5678"),
            (Mask::Email, "alice@example.com", "a****@example.com"),
            (Mask::Email, "not an address", "***"),
            (Mask::KeepFirst(3), "ab", "**"),
            (Mask::CnMobile, "", "*"),
        ];
        for (mask, input, expected) in cases {
            assert_eq!(mask.apply_text(input, KEY), expected, "{mask} on {input}");
        }
    }

    #[test]
    fn hash_is_keyed_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            Mask::Hash.apply_text("what do ya want for nothing?", b"Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(Mask::Hash.apply_text("x", b"one key"), Mask::Hash.apply_text("x", b"another key"));
    }

    #[test]
    fn masks_parse_from_and_print_to_their_names() {
        for text in
            ["redact", "keep_first(2)", "keep_last(4)", "hash", "null", "year_only", "cn_id_card", "cn_mobile", "email"]
        {
            assert_eq!(text.parse::<Mask>().unwrap().to_string(), text);
        }
        for bad in ["keep_first", "keep_first(x)", "keep_middle(2)", "blur", ""] {
            assert!(bad.parse::<Mask>().is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_declare_the_type_they_produce() {
        assert_eq!(Mask::YearOnly.output_type(FieldType::Date), Ok(FieldType::Int64));
        assert_eq!(Mask::Null.output_type(FieldType::Float64), Ok(FieldType::Float64));
        assert_eq!(Mask::Hash.output_type(FieldType::Int64), Ok(FieldType::String));
        assert!(Mask::CnMobile.output_type(FieldType::Int64).is_err());
        assert!(Mask::YearOnly.output_type(FieldType::String).is_err());
    }
}

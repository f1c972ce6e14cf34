//! `resource.Quantity`: the wire form is a string (`250m`, `128Mi`, `1e3`); numbers are accepted
//! on input as Kubernetes does. Parsing into exact integer milli-units lives in this module.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as written by the user. `parse()` gives its exact value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(pub String);

impl Quantity {
    pub fn new(s: impl Into<String>) -> Self {
        Quantity(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_string())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity string or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- parsing and arithmetic

/// Why a quantity string is not valid (Kubernetes' `ErrFormatWrong` / `ErrNumeric` / `ErrSuffix`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Does not have the shape `<number><suffix>`.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The numeric part has no digits (`Mi`, `.`).
    #[error("unable to parse quantity's numeric part")]
    Numeric,
    /// The suffix is not one of the known ones (`12x`, `1i`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit the range kapsel computes with.
    #[error("quantity is too large")]
    Overflow,
}

/// How a quantity is written: Kubernetes' `resource.Format`. The canonical form keeps the family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantityFormat {
    /// `Ki`, `Mi`, `Gi`, … (powers of 1024).
    BinarySI,
    /// `n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`.
    #[default]
    DecimalSI,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

const NANO: i128 = 1_000_000_000;
/// Kubernetes caps binary quantities at `2^63-1` units.
const MAX_BINARY_NANOS: i128 = (i64::MAX as i128) * NANO;

/// The exact value of a quantity, in nano-units (Kubernetes' precision: anything finer is rounded
/// up to `1n`), plus the format it was written in. Ordered and compared by value only.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuantityValue {
    nanos: i128,
    format: QuantityFormat,
}

impl PartialEq for QuantityValue {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for QuantityValue {}
impl PartialOrd for QuantityValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QuantityValue {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}
impl std::hash::Hash for QuantityValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state)
    }
}

/// `a / b` rounded away from zero (Kubernetes' `inf.RoundUp`), `b > 0`.
fn div_round_up(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b == 0 {
        q
    } else if a > 0 {
        q + 1
    } else {
        q - 1
    }
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl QuantityValue {
    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Self {
        QuantityValue { nanos, format }
    }
    pub fn from_milli(milli: i64, format: QuantityFormat) -> Self {
        QuantityValue {
            nanos: milli as i128 * 1_000_000,
            format,
        }
    }
    pub fn from_units(units: i64, format: QuantityFormat) -> Self {
        QuantityValue {
            nanos: units as i128 * NANO,
            format,
        }
    }
    pub fn zero() -> Self {
        Self::default()
    }
    pub fn nanos(&self) -> i128 {
        self.nanos
    }
    pub fn format(&self) -> QuantityFormat {
        self.format
    }
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
    /// The value in milli-units, rounded up (away from zero) like `MilliValue()`.
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        i64::try_from(div_round_up(self.nanos, 1_000_000)).map_err(|_| QuantityError::Overflow)
    }
    /// The value in units, rounded up (away from zero) like `Value()`.
    pub fn value(&self) -> Result<i64, QuantityError> {
        i64::try_from(div_round_up(self.nanos, NANO)).map_err(|_| QuantityError::Overflow)
    }
    /// The value as a float (for ratios and scoring only).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }
    /// Sum; the format is the receiver's unless it is zero (as Kubernetes' `Add`).
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        Some(QuantityValue {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        })
    }
    /// Difference; the format is the receiver's unless it is zero.
    pub fn checked_sub(&self, other: &Self) -> Option<Self> {
        Some(QuantityValue {
            nanos: self.nanos.checked_sub(other.nanos)?,
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        })
    }
    /// Multiply by an integer (e.g. a replica count).
    pub fn checked_mul(&self, n: i64) -> Option<Self> {
        Some(QuantityValue {
            nanos: self.nanos.checked_mul(n as i128)?,
            format: self.format,
        })
    }
    pub fn neg(&self) -> Self {
        QuantityValue {
            nanos: -self.nanos,
            format: self.format,
        }
    }
    /// The canonical string as Kubernetes' `Quantity.String()` writes it.
    pub fn to_quantity(&self) -> Quantity {
        Quantity(self.canonical_string())
    }

    fn canonical_string(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == QuantityFormat::BinarySI
            && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            // Small values and values that are not whole units lose nothing as decimal.
            format = QuantityFormat::DecimalSI;
        }
        if format == QuantityFormat::BinarySI {
            let mut amount = self.nanos / NANO;
            let mut exp = 0usize;
            while amount % 1024 == 0 && exp < 6 {
                amount /= 1024;
                exp += 1;
            }
            if amount % 1024 != 0 || exp < 6 {
                const SUFFIX: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                return format!("{amount}{}", SUFFIX[exp]);
            }
            // Beyond Ei there is no binary suffix: fall back to exact decimal exponent form.
            format = QuantityFormat::DecimalExponent;
        }
        let mut mantissa = self.nanos;
        let mut exp: i32 = -9;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp += 1;
        }
        match exp.rem_euclid(3) {
            1 => {
                mantissa *= 10;
                exp -= 1;
            }
            2 => {
                mantissa *= 100;
                exp -= 2;
            }
            _ => {}
        }
        let si = match exp {
            -9 => Some("n"),
            -6 => Some("u"),
            -3 => Some("m"),
            0 => Some(""),
            3 => Some("k"),
            6 => Some("M"),
            9 => Some("G"),
            12 => Some("T"),
            15 => Some("P"),
            18 => Some("E"),
            _ => None,
        };
        match (format, si) {
            (QuantityFormat::DecimalSI, Some(s)) => format!("{mantissa}{s}"),
            _ if exp == 0 => format!("{mantissa}"),
            _ => format!("{mantissa}e{exp}"),
        }
    }
}

impl std::ops::Add for QuantityValue {
    type Output = QuantityValue;
    /// Saturating sum (use `checked_add` to detect overflow).
    fn add(self, rhs: Self) -> Self {
        self.checked_add(&rhs).unwrap_or(QuantityValue {
            nanos: if rhs.nanos > 0 { i128::MAX } else { i128::MIN },
            format: self.format,
        })
    }
}

impl std::ops::Sub for QuantityValue {
    type Output = QuantityValue;
    /// Saturating difference (use `checked_sub` to detect overflow).
    fn sub(self, rhs: Self) -> Self {
        self.checked_sub(&rhs).unwrap_or(QuantityValue {
            nanos: if rhs.nanos < 0 { i128::MAX } else { i128::MIN },
            format: self.format,
        })
    }
}

impl std::ops::AddAssign for QuantityValue {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl std::ops::SubAssign for QuantityValue {
    fn sub_assign(&mut self, rhs: Self) {
        *self = *self - rhs;
    }
}

impl std::iter::Sum for QuantityValue {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(QuantityValue::zero(), |a, b| a + b)
    }
}

impl fmt::Display for QuantityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical_string())
    }
}

/// Split `s` like Kubernetes' `parseQuantityString`: (positive, integer digits, fraction digits,
/// suffix). The integer digits have their leading zeros removed.
fn split_quantity(s: &str) -> Result<(bool, &str, &str, &str), QuantityError> {
    let b = s.as_bytes();
    let mut pos = 0;
    let mut positive = true;
    match b.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    let int_start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let int = &s[int_start..pos];
    let mut frac = "";
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let fs = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        frac = &s[fs..pos];
    }
    let suffix = &s[pos..];
    // The suffix: letters from "eEinumkKMGTP", an optional sign, then digits, to the end.
    let sb = suffix.as_bytes();
    let mut i = 0;
    while i < sb.len() && b"eEinumkKMGTP".contains(&sb[i]) {
        i += 1;
    }
    if i < sb.len() && (sb[i] == b'-' || sb[i] == b'+') {
        i += 1;
    }
    while i < sb.len() && sb[i].is_ascii_digit() {
        i += 1;
    }
    if i != sb.len() {
        return Err(QuantityError::Format);
    }
    if int.is_empty() && frac.is_empty() {
        return Err(QuantityError::Numeric);
    }
    Ok((positive, int.trim_start_matches('0'), frac, suffix))
}

/// (base, exponent, format) of a suffix, as Kubernetes' `suffixer.interpret`.
fn interpret_suffix(suffix: &str) -> Result<(u32, i64, QuantityFormat), QuantityError> {
    use QuantityFormat::*;
    let r = match suffix {
        "" => (10, 0, DecimalSI),
        "n" => (10, -9, DecimalSI),
        "u" => (10, -6, DecimalSI),
        "m" => (10, -3, DecimalSI),
        "k" => (10, 3, DecimalSI),
        "M" => (10, 6, DecimalSI),
        "G" => (10, 9, DecimalSI),
        "T" => (10, 12, DecimalSI),
        "P" => (10, 15, DecimalSI),
        "E" => (10, 18, DecimalSI),
        "Ki" => (2, 10, BinarySI),
        "Mi" => (2, 20, BinarySI),
        "Gi" => (2, 30, BinarySI),
        "Ti" => (2, 40, BinarySI),
        "Pi" => (2, 50, BinarySI),
        "Ei" => (2, 60, BinarySI),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e: i64 = s[1..].parse().map_err(|_| QuantityError::Suffix)?;
            if e.unsigned_abs() > i32::MAX as u64 {
                return Err(QuantityError::Suffix);
            }
            (10, e, DecimalExponent)
        }
        _ => return Err(QuantityError::Suffix),
    };
    Ok(r)
}

fn parse_digits(d: &str) -> Result<i128, QuantityError> {
    if d.is_empty() {
        return Ok(0);
    }
    d.parse::<i128>().map_err(|_| QuantityError::Overflow)
}

/// Parse a quantity string into its exact value (rounded up to nano precision, as Kubernetes).
pub fn parse_quantity(s: &str) -> Result<QuantityValue, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Format);
    }
    let (positive, int, frac, suffix) = split_quantity(s)?;
    let (base, exp, mut format) = interpret_suffix(suffix)?;
    // Significant digits D and the power of ten k such that value * 1e9 = D * 10^k * 2^b.
    let frac_trimmed = frac.trim_end_matches('0');
    let mut digits = format!("{int}{frac_trimmed}");
    let mut k: i64 = exp * i64::from(base == 10) + 9 - frac_trimmed.len() as i64;
    let digits_trim = digits.trim_start_matches('0').to_string();
    digits = digits_trim;
    let zeros = digits.len() - digits.trim_end_matches('0').len();
    digits.truncate(digits.len() - zeros);
    k += zeros as i64;
    let bin: u32 = if base == 2 { exp as u32 } else { 0 };
    let abs: i128 = if digits.is_empty() {
        0
    } else if k >= 0 {
        let d = parse_digits(&digits)?;
        let p = pow10(u32::try_from(k).map_err(|_| QuantityError::Overflow)?)
            .ok_or(QuantityError::Overflow)?;
        d.checked_mul(p)
            .and_then(|v| v.checked_mul(1i128 << bin))
            .ok_or(QuantityError::Overflow)?
    } else {
        let m = k.unsigned_abs() as usize;
        if bin == 0 {
            // Truncate the digits and round up if anything was cut off (it is non-zero:
            // trailing zeros were removed).
            if m >= digits.len() {
                1
            } else {
                parse_digits(&digits[..digits.len() - m])? + 1
            }
        } else {
            let num = parse_digits(&digits)?
                .checked_mul(1i128 << bin)
                .ok_or(QuantityError::Overflow)?;
            match pow10(m as u32) {
                Some(p) if m <= 38 => div_round_up(num, p),
                _ => 1,
            }
        }
    };
    let mut abs = abs;
    if format == QuantityFormat::BinarySI {
        if abs > MAX_BINARY_NANOS {
            abs = MAX_BINARY_NANOS;
        }
        if abs > 0 && abs < NANO {
            format = QuantityFormat::DecimalSI;
        }
    }
    Ok(QuantityValue {
        nanos: if positive { abs } else { -abs },
        format,
    })
}

impl Quantity {
    /// The exact value, or why the string is not a quantity.
    pub fn parse(&self) -> Result<QuantityValue, QuantityError> {
        parse_quantity(&self.0)
    }
    /// Value in milli-units, rounded up (`MilliValue()`): `250m` → 250, `1` → 1000.
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        self.parse()?.milli_value()
    }
    /// Value in units, rounded up (`Value()`): `128Mi` → 134217728, `250m` → 1.
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.parse()?.value()
    }
    pub fn format(&self) -> Result<QuantityFormat, QuantityError> {
        Ok(self.parse()?.format())
    }
    /// The canonical spelling (`1024Mi` → `1Gi`, `1.5` → `1500m`, `1000M` → `1G`).
    pub fn canonical(&self) -> Result<Quantity, QuantityError> {
        Ok(self.parse()?.to_quantity())
    }
    /// `1500` → `1500m`; `2000` → `2`.
    pub fn from_milli(milli: i64) -> Quantity {
        QuantityValue::from_milli(milli, QuantityFormat::DecimalSI).to_quantity()
    }
    /// A decimal quantity of whole units: `3` → `3`, `4000` → `4k`.
    pub fn from_value(units: i64) -> Quantity {
        QuantityValue::from_units(units, QuantityFormat::DecimalSI).to_quantity()
    }
    /// A binary quantity of bytes: `134217728` → `128Mi`.
    pub fn from_bytes(bytes: i64) -> Quantity {
        QuantityValue::from_units(bytes, QuantityFormat::BinarySI).to_quantity()
    }
    /// Compare by value (`1Gi` > `1G`, `1` == `1000m`).
    pub fn cmp_value(&self, other: &Quantity) -> Result<Ordering, QuantityError> {
        Ok(self.parse()?.cmp(&other.parse()?))
    }
    /// `self + other` in canonical form, keeping `self`'s suffix family.
    pub fn checked_add(&self, other: &Quantity) -> Result<Quantity, QuantityError> {
        Ok(self
            .parse()?
            .checked_add(&other.parse()?)
            .ok_or(QuantityError::Overflow)?
            .to_quantity())
    }
    /// `self - other` in canonical form, keeping `self`'s suffix family.
    pub fn checked_sub(&self, other: &Quantity) -> Result<Quantity, QuantityError> {
        Ok(self
            .parse()?
            .checked_sub(&other.parse()?)
            .ok_or(QuantityError::Overflow)?
            .to_quantity())
    }
    /// Whether the value is zero (false for invalid strings).
    pub fn is_zero(&self) -> bool {
        self.parse().is_ok_and(|v| v.is_zero())
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    /// A validated quantity, spelled as given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)?;
        Ok(Quantity(s.to_string()))
    }
}

impl From<QuantityValue> for Quantity {
    fn from(v: QuantityValue) -> Self {
        v.to_quantity()
    }
}

#[cfg(test)]
mod tests {
    use super::QuantityFormat::*;
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::new(s)
    }

    /// (input, value as mantissa × 10^exponent, format) — Kubernetes' `TestQuantityParse` table.
    #[test]
    fn parse_table() {
        let table: &[(&str, i128, i32, QuantityFormat)] = &[
            ("0", 0, 0, DecimalSI),
            ("0n", 0, 0, DecimalSI),
            ("0u", 0, 0, DecimalSI),
            ("0m", 0, 0, DecimalSI),
            ("0Ki", 0, 0, BinarySI),
            ("0k", 0, 0, DecimalSI),
            ("0Mi", 0, 0, BinarySI),
            ("0M", 0, 0, DecimalSI),
            ("0Gi", 0, 0, BinarySI),
            ("0G", 0, 0, DecimalSI),
            ("0Ti", 0, 0, BinarySI),
            ("0T", 0, 0, DecimalSI),
            ("1", 1, 0, DecimalSI),
            ("1Ki", 1024, 0, BinarySI),
            ("8Ki", 8 * 1024, 0, BinarySI),
            ("7Mi", 7 << 20, 0, BinarySI),
            ("6Gi", 6 << 30, 0, BinarySI),
            ("5Ti", 5 << 40, 0, BinarySI),
            ("4Pi", 4 << 50, 0, BinarySI),
            ("3Ei", 3 << 60, 0, BinarySI),
            ("10Ti", 10 << 40, 0, BinarySI),
            ("100Ti", 100 << 40, 0, BinarySI),
            ("5n", 5, -9, DecimalSI),
            ("4u", 4, -6, DecimalSI),
            ("3m", 3, -3, DecimalSI),
            ("9", 9, 0, DecimalSI),
            ("8k", 8, 3, DecimalSI),
            ("50k", 5, 4, DecimalSI),
            ("7M", 7, 6, DecimalSI),
            ("6G", 6, 9, DecimalSI),
            ("5T", 5, 12, DecimalSI),
            ("40T", 4, 13, DecimalSI),
            ("300T", 3, 14, DecimalSI),
            ("2P", 2, 15, DecimalSI),
            ("1E", 1, 18, DecimalSI),
            ("1E-3", 1, -3, DecimalExponent),
            ("1e3", 1, 3, DecimalExponent),
            ("1E6", 1, 6, DecimalExponent),
            ("1e9", 1, 9, DecimalExponent),
            ("1E12", 1, 12, DecimalExponent),
            ("1e15", 1, 15, DecimalExponent),
            ("1E18", 1, 18, DecimalExponent),
            ("1e14", 1, 14, DecimalExponent),
            ("1e13", 1, 13, DecimalExponent),
            ("100.035k", 100035, 0, DecimalSI),
            ("0.001", 1, -3, DecimalSI),
            ("0.0005k", 5, -1, DecimalSI),
            ("0.005", 5, -3, DecimalSI),
            ("0.05", 5, -2, DecimalSI),
            ("0.5", 5, -1, DecimalSI),
            ("0.00050k", 5, -1, DecimalSI),
            ("0.00500", 5, -3, DecimalSI),
            ("0.05000", 5, -2, DecimalSI),
            ("0.50000", 5, -1, DecimalSI),
            ("0.5e0", 5, -1, DecimalExponent),
            ("0.5e-1", 5, -2, DecimalExponent),
            ("0.5e-2", 5, -3, DecimalExponent),
            ("10.035M", 10035, 3, DecimalSI),
            ("1.2e3", 12, 2, DecimalExponent),
            ("1.3E+6", 13, 5, DecimalExponent),
            ("1.40e9", 14, 8, DecimalExponent),
            ("1.53E12", 153, 10, DecimalExponent),
            ("1.6e15", 16, 14, DecimalExponent),
            ("1.7E18", 17, 17, DecimalExponent),
            ("9.01", 901, -2, DecimalSI),
            ("8.1k", 81, 2, DecimalSI),
            ("7.123456M", 7123456, 0, DecimalSI),
            ("6.987654321G", 6987654321, 0, DecimalSI),
            ("5.444T", 5444, 9, DecimalSI),
            ("40.1T", 401, 11, DecimalSI),
            ("300.2T", 3002, 11, DecimalSI),
            ("2.5P", 25, 14, DecimalSI),
            ("1.01E", 101, 16, DecimalSI),
            // Things that saturate/round.
            ("3.001n", 4, -9, DecimalSI),
            ("1.1E-9", 2, -9, DecimalExponent),
            ("0.0000000001", 1, -9, DecimalSI),
            ("0.0000000005", 1, -9, DecimalSI),
            ("0.00000000050", 1, -9, DecimalSI),
            ("0.5e-9", 1, -9, DecimalExponent),
            ("0.9n", 1, -9, DecimalSI),
            ("0.00000012345", 124, -9, DecimalSI),
            ("0.00000012354", 124, -9, DecimalSI),
            ("9Ei", i64::MAX as i128, 0, BinarySI),
            ("9223372036854775807Ki", i64::MAX as i128, 0, BinarySI),
            ("12E", 12, 18, DecimalSI),
            // Fractional binary.
            ("100.035Ki", 10243584, -2, BinarySI),
            ("0.5Mi", 512 * 1024, 0, BinarySI),
            ("0.05Gi", 536870912, -1, BinarySI),
            ("0.025Ti", 274877906944, -1, BinarySI),
            // Things written by trolls.
            ("0.000000000001Ki", 2, -9, DecimalSI),
            (".001", 1, -3, DecimalSI),
            (".0001k", 100, -3, DecimalSI),
            ("1.", 1, 0, DecimalSI),
            ("1.G", 1, 9, DecimalSI),
        ];
        for &(input, mantissa, exp, format) in table {
            let nanos = if exp + 9 >= 0 {
                mantissa * 10i128.pow((exp + 9) as u32)
            } else {
                mantissa / 10i128.pow((-exp - 9) as u32)
            };
            for (prefix, sign) in [("", 1), ("+", 1), ("-", -1)] {
                let s = format!("{prefix}{input}");
                let v = parse_quantity(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
                assert_eq!(v.nanos(), sign * nanos, "{s}");
                assert_eq!(v.format(), format, "{s}");
            }
        }
    }

    #[test]
    fn invalid_quantities() {
        for s in [
            "",
            "1.1.M",
            "1+1.0M",
            "0.1mi",
            "0.1am",
            "aoeu",
            ".5i",
            "1i",
            "-3.01i",
            "-3.01e-",
            "1e4294967297",
            " 1",
            "1 ",
            "12x",
            "1.2.3",
            "Mi",
            "--1",
            "+-1",
            ".",
            "-.",
            "e3",
            "1e",
            "1K",
            "1kb",
            "1 Mi",
            "0x10",
            "1,5",
            "∞",
        ] {
            assert!(parse_quantity(s).is_err(), "{s:?} parsed");
            assert!(s.parse::<Quantity>().is_err(), "{s:?} parsed");
        }
        assert_eq!(parse_quantity("12x"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1i"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("Mi"), Err(QuantityError::Numeric));
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
        assert_eq!(parse_quantity("1e40"), Err(QuantityError::Overflow));
    }

    #[test]
    fn milli_and_value() {
        let table: &[(&str, i64, i64)] = &[
            ("250m", 250, 1),
            ("0.5", 500, 1),
            ("128Mi", 134217728000, 134217728),
            ("1G", 1_000_000_000_000, 1_000_000_000),
            ("1e3", 1_000_000, 1000),
            ("2Ki", 2_048_000, 2048),
            ("1.5Gi", 1_610_612_736_000, 1_610_612_736),
            ("100k", 100_000_000, 100_000),
            ("+1", 1000, 1),
            ("-1", -1000, -1),
            ("1n", 1, 1),
            ("0.1m", 1, 1),
            ("-0.1m", -1, -1),
            ("1001m", 1001, 2),
            ("-1001m", -1001, -2),
            ("0", 0, 0),
            ("4", 4000, 4),
            ("1.0001", 1001, 2),
        ];
        for &(s, milli, value) in table {
            assert_eq!(q(s).milli_value(), Ok(milli), "{s}");
            assert_eq!(q(s).value(), Ok(value), "{s}");
        }
        // Exabytes fit the value but not the milli-value in i64.
        assert_eq!(q("1Ei").value(), Ok(1 << 60));
        assert_eq!(q("1Ei").milli_value(), Err(QuantityError::Overflow));
        assert_eq!(q("9Ei").value(), Ok(i64::MAX));
        assert_eq!(q("bogus").value(), Err(QuantityError::Format));
    }

    /// Kubernetes' `TestQuantityString` and `TestQuantityParseEmit`.
    #[test]
    fn canonical_strings() {
        let table: &[(&str, &str)] = &[
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("300Mi", "300Mi"),
            ("307200Ki", "300Mi"),
            ("6Ki", "6Ki"),
            ("1025024Mi", "1001Gi"),
            ("1024Gi", "1Ti"),
            ("5000m", "5"),
            ("0.5", "500m"),
            ("1G", "1G"),
            ("1000M", "1G"),
            ("0.001T", "1G"),
            ("1000000k", "1G"),
            ("1000000000", "1G"),
            ("1m", "1m"),
            ("1000u", "1m"),
            ("80m", "80m"),
            ("1.08", "1080m"),
            ("1080000000n", "1080m"),
            ("300M", "300M"),
            ("1T", "1T"),
            ("1E", "1E"),
            ("1000E", "1e21"),
            ("5000E", "5e21"),
            ("1234567M", "1234567M"),
            ("3k", "3k"),
            ("1025", "1025"),
            ("0", "0"),
            ("0Gi", "0"),
            ("0.000m", "0"),
            ("1e9", "1e9"),
            (".001e12", "1e9"),
            ("1e-3", "1e-3"),
            ("0.001e0", "1e-3"),
            ("1e-9", "1e-9"),
            ("1000e-12", "1e-9"),
            ("80e-3", "80e-3"),
            ("300e6", "300e6"),
            ("1e12", "1e12"),
            ("1e3", "1e3"),
            ("3e3", "3e3"),
            ("00", "0"),
            ("1n", "1n"),
            ("80n", "80n"),
            ("1080n", "1080n"),
            ("1u", "1u"),
            ("80u", "80u"),
            ("1080u", "1080u"),
            ("1Ki", "1Ki"),
            ("1Mi", "1Mi"),
            (".001Ki", "1024m"),
            (".000001Ki", "1024u"),
            (".000000001Ki", "1024n"),
            (".000000000001Ki", "2n"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("0.5Ki", "512"),
            ("1.5Ki", "1536"),
            ("2000", "2k"),
            ("1.5", "1500m"),
            ("12e2", "1200"),
            ("1.2e3", "1200"),
            ("+1", "1"),
            ("100k", "100k"),
        ];
        for &(input, expect) in table {
            assert_eq!(q(input).canonical().unwrap().as_str(), expect, "{input}");
            if expect != "0" && !input.starts_with('+') {
                let neg = q(&format!("-{input}")).canonical().unwrap();
                assert_eq!(neg.as_str(), format!("-{expect}"), "-{input}");
            }
            // The canonical form is stable.
            assert_eq!(q(expect).canonical().unwrap().as_str(), expect);
        }
    }

    #[test]
    fn constructors() {
        assert_eq!(Quantity::from_milli(1500).as_str(), "1500m");
        assert_eq!(Quantity::from_milli(2000).as_str(), "2");
        assert_eq!(Quantity::from_milli(0).as_str(), "0");
        assert_eq!(Quantity::from_milli(-250).as_str(), "-250m");
        assert_eq!(Quantity::from_bytes(134217728).as_str(), "128Mi");
        assert_eq!(Quantity::from_bytes(1000).as_str(), "1k");
        assert_eq!(Quantity::from_bytes(1536).as_str(), "1536");
        assert_eq!(Quantity::from_bytes(1 << 30).as_str(), "1Gi");
        assert_eq!(Quantity::from_value(4000).as_str(), "4k");
        assert_eq!(Quantity::from_value(3).as_str(), "3");
    }

    #[test]
    fn comparison_and_arithmetic() {
        use std::cmp::Ordering::*;
        let table: &[(&str, &str, Ordering)] = &[
            ("0", "0", Equal),
            ("100m", "50m", Greater),
            ("50m", "100m", Less),
            ("10000T", "100Gi", Greater),
            ("1", "1000m", Equal),
            ("1Gi", "1G", Greater),
            ("1Ki", "1024", Equal),
            ("-1", "0", Less),
            ("1e3", "1k", Equal),
        ];
        for &(a, b, o) in table {
            assert_eq!(q(a).cmp_value(&q(b)), Ok(o), "{a} vs {b}");
            assert_eq!(q(b).cmp_value(&q(a)), Ok(o.reverse()), "{b} vs {a}");
        }
        assert_eq!(q("100m").checked_add(&q("0")).unwrap().as_str(), "100m");
        assert_eq!(q("0").checked_add(&q("1Gi")).unwrap().as_str(), "1Gi");
        assert_eq!(q("1Gi").checked_sub(&q("0")).unwrap().as_str(), "1Gi");
        assert_eq!(q("0").checked_sub(&q("1Gi")).unwrap().as_str(), "-1Gi");
        assert_eq!(
            q("1Gi").checked_add(&q("512Mi")).unwrap().as_str(),
            "1536Mi"
        );
        assert_eq!(q("250m").checked_add(&q("750m")).unwrap().as_str(), "1");
        assert_eq!(q("1").checked_sub(&q("1500m")).unwrap().as_str(), "-500m");
        assert!(q("1").checked_add(&q("x")).is_err());
        let total: QuantityValue = ["100m", "200m", "1"]
            .iter()
            .map(|s| q(s).parse().unwrap())
            .sum();
        assert_eq!(total.to_quantity().as_str(), "1300m");
        assert_eq!(total.milli_value(), Ok(1300));
        let mut v = q("1Gi").parse().unwrap();
        v -= q("1Mi").parse().unwrap();
        assert_eq!(v.to_string(), "1023Mi");
        assert_eq!(q("9.01").parse().unwrap().neg().to_string(), "-9010m");
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let v: Quantity = serde_json::from_str("\"128Mi\"").unwrap();
        assert_eq!(v.value(), Ok(134217728));
        let v: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(v.milli_value(), Ok(2000));
        let v: Quantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(v.milli_value(), Ok(500));
        assert_eq!(serde_json::to_string(&q("1Gi")).unwrap(), "\"1Gi\"");
    }
}

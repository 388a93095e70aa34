//! Kubernetes resource quantities: `500m`, `0.5`, `64Mi`, `1G`, `129e6`.
//!
//! # Design
//! The grammar and suffixes are apimachinery's (`pkg/api/resource`):
//! a signed decimal number (`1`, `1.5`, `.5`, `1.`), then a decimal SI
//! suffix (`n u m "" k M G T P E`), a binary one (`Ki Mi Gi Ti Pi Ei`) or a
//! decimal exponent (`e3`, `E-2`; a lone `E` is exa). The value is exact:
//! the digits are kept as an integer mantissa with a power of ten and a
//! power of two, never a float. Converting to a unit rounds up, as
//! `Quantity.Value()`/`MilliValue()` do, so `0.1m` of CPU is 1 millicore
//! and `0.5` bytes is 1 byte.
//!
//! # Limitations
//! Stricter than apimachinery where it would silently change a value:
//! a number without digits (`.`, `+`) is an error rather than zero, more
//! than 38 significant digits is an error rather than rounded, and a value
//! beyond `u64` in the target unit is an error rather than capped.

use std::fmt;

use crate::cgroups::MilliCpu;

#[cfg(test)]
mod tests;

/// The most significant digits a mantissa may have (`u128` holds 38).
const MAX_DIGITS: usize = 38;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("is empty")]
    Empty,
    #[error("has no digits before its suffix")]
    NoDigits,
    #[error("has an unknown suffix {0:?} (use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e6)")]
    Suffix(String),
    #[error("has more than {MAX_DIGITS} significant digits")]
    TooPrecise,
    #[error("must be greater than or equal to 0")]
    Negative,
    #[error("is too large")]
    TooLarge,
}

/// An exact quantity: `±mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses apimachinery's quantity syntax.
    ///
    /// # Errors
    /// [`QuantityError`] for anything apimachinery rejects, and for the
    /// stricter cases in the module's `# Limitations`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                pos += 1;
                true
            }
            Some(b'+') => {
                pos += 1;
                false
            }
            _ => false,
        };
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &text[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::NoDigits);
        }
        let (suffix_exp10, exp2) = suffix(&text[pos..])?;

        // Significant digits only: leading zeros carry nothing, trailing
        // ones move into the exponent.
        let all = format!("{int_digits}{frac_digits}");
        let significant = all.trim_start_matches('0');
        let trimmed = significant.trim_end_matches('0');
        let trailing = significant.len() - trimmed.len();
        if trimmed.len() > MAX_DIGITS {
            return Err(QuantityError::TooPrecise);
        }
        let mantissa = if trimmed.is_empty() {
            0
        } else {
            // At most 38 ASCII digits: always fits a u128.
            trimmed.parse::<u128>().map_err(|_| QuantityError::TooPrecise)?
        };
        let frac_len = i64::try_from(frac_digits.len()).map_err(|_| QuantityError::TooPrecise)?;
        let trailing = i64::try_from(trailing).map_err(|_| QuantityError::TooPrecise)?;
        let exp10 = i64::from(suffix_exp10) - frac_len + trailing;
        let exp10 = i32::try_from(exp10)
            .map_err(|_| if exp10 < 0 { QuantityError::TooPrecise } else { QuantityError::TooLarge })?;
        Ok(Self { negative: negative && mantissa != 0, mantissa, exp10, exp2 })
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// `ceil(self × 10^scale)` as a non-negative integer.
    ///
    /// # Errors
    /// [`QuantityError::Negative`] below zero, [`QuantityError::TooLarge`]
    /// beyond `u64`, [`QuantityError::TooPrecise`] when the digits and a
    /// binary suffix together overflow the exact computation.
    pub fn ceil_scaled(&self, scale: i32) -> Result<u64, QuantityError> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        if self.negative {
            return Err(QuantityError::Negative);
        }
        let numerator = 1u128.checked_shl(self.exp2).and_then(|p| self.mantissa.checked_mul(p)).ok_or(
            if self.exp10.saturating_add(scale) >= 0 { QuantityError::TooLarge } else { QuantityError::TooPrecise },
        )?;
        let exp = i64::from(self.exp10) + i64::from(scale);
        let value = if exp >= 0 {
            let pow = u32::try_from(exp).ok().and_then(|e| 10u128.checked_pow(e)).ok_or(QuantityError::TooLarge)?;
            numerator.checked_mul(pow).ok_or(QuantityError::TooLarge)?
        } else {
            match u32::try_from(-exp).ok().and_then(|e| 10u128.checked_pow(e)) {
                Some(divisor) => numerator.div_ceil(divisor),
                // 10^39 > u128::MAX ≥ numerator > 0: rounds up to one unit.
                None => 1,
            }
        };
        u64::try_from(value).map_err(|_| QuantityError::TooLarge)
    }
}

/// `(power of ten, power of two)` of a suffix.
fn suffix(s: &str) -> Result<(i32, u32), QuantityError> {
    let pair = match s {
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = s.strip_prefix(['e', 'E']).filter(|rest| !rest.is_empty());
            let digits = exponent.map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
            match (exponent, digits) {
                (Some(exponent), Some(digits)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    // Beyond ±i32 the value cannot be represented anyway.
                    let e = exponent.parse::<i32>().map_err(|_| {
                        if exponent.starts_with('-') { QuantityError::TooPrecise } else { QuantityError::TooLarge }
                    })?;
                    (e, 0)
                }
                _ => return Err(QuantityError::Suffix(s.to_owned())),
            }
        }
    };
    Ok(pair)
}

/// A CPU quantity in millicores, rounded up.
///
/// # Errors
/// As [`Quantity::parse`] and [`Quantity::ceil_scaled`].
pub fn parse_cpu(text: &str) -> Result<MilliCpu, QuantityError> {
    Quantity::parse(text)?.ceil_scaled(3).map(MilliCpu)
}

/// A memory (or any byte) quantity in bytes, rounded up.
///
/// # Errors
/// As [`Quantity::parse`] and [`Quantity::ceil_scaled`].
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    Quantity::parse(text)?.ceil_scaled(0)
}

/// The shortest exact spelling of millicores: `2` or `500m`.
pub fn format_cpu(cpu: MilliCpu) -> String {
    if cpu.0.is_multiple_of(1000) { (cpu.0 / 1000).to_string() } else { format!("{}m", cpu.0) }
}

/// An exact spelling of bytes: the largest binary suffix that divides
/// them, else the largest decimal one, else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    struct Bytes(u64);
    impl fmt::Display for Bytes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            const BINARY: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            const DECIMAL: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
            let n = self.0;
            if n == 0 {
                return write!(f, "0");
            }
            for (i, suffix) in BINARY.iter().enumerate().rev() {
                let unit = 1u64 << (10 * (i + 1));
                if n.is_multiple_of(unit) {
                    return write!(f, "{}{suffix}", n / unit);
                }
            }
            for (i, suffix) in DECIMAL.iter().enumerate().rev() {
                let unit = 1000u64.pow(u32::try_from(i + 1).map_err(|_| fmt::Error)?);
                if n.is_multiple_of(unit) {
                    return write!(f, "{}{suffix}", n / unit);
                }
            }
            write!(f, "{n}")
        }
    }
    Bytes(bytes).to_string()
}

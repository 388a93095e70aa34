//! Kubernetes resource quantities: `500m`, `0.5`, `64Mi`, `1G`, `129e6`.
//!
//! The grammar and suffixes are apimachinery's (`pkg/api/resource`): a
//! signed decimal number (`1`, `1.5`, `.5`, `1.`), then a decimal SI suffix
//! (`n u m "" k M G T P E`), a binary one (`Ki Mi Gi Ti Pi Ei`) or a decimal
//! exponent (`e3`, `E-2`; a lone `E` is exa). The value is exact: the digits
//! are kept as an integer mantissa with a power of ten and a power of two,
//! never a float. Converting to a unit rounds up, as `Quantity.Value()` and
//! `MilliValue()` do, so `0.1m` of CPU is 1 millicore and `0.5` bytes is 1
//! byte. The agent parses the same way (`agent/src/pod/quantity.rs`).
//!
//! Stricter than apimachinery where it would silently change a value: a
//! number without digits (`.`, `+`) is an error rather than zero, more than
//! 38 significant digits is an error rather than rounded, and a value beyond
//! `u64` in the target unit is an error rather than capped.

/// The most significant digits a mantissa may have (`u128` holds 38).
const MAX_DIGITS: usize = 38;

/// Why a quantity string was rejected. The messages complete
/// `Invalid value: "<quantity>": …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not apimachinery's syntax (its message).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Syntax,
    #[error("must have at most {MAX_DIGITS} significant digits")]
    TooPrecise,
    #[error("must be greater than or equal to 0")]
    Negative,
    #[error("is too large")]
    TooLarge,
}

/// An exact quantity: `±mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses apimachinery's quantity syntax.
    pub(crate) fn parse(text: &str) -> Result<Self, QuantityError> {
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
        while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let frac_start = pos;
            while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            frac_digits = &text[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::Syntax);
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
        // At most 38 ASCII digits always fit a u128.
        let mantissa =
            if trimmed.is_empty() { 0 } else { trimmed.parse::<u128>().map_err(|_| QuantityError::TooPrecise)? };
        let frac_len = i64::try_from(frac_digits.len()).map_err(|_| QuantityError::TooPrecise)?;
        let trailing = i64::try_from(trailing).map_err(|_| QuantityError::TooPrecise)?;
        let exp10 = i64::from(suffix_exp10) - frac_len + trailing;
        let exp10 = i32::try_from(exp10)
            .map_err(|_| if exp10 < 0 { QuantityError::TooPrecise } else { QuantityError::TooLarge })?;
        Ok(Self { negative: negative && mantissa != 0, mantissa, exp10, exp2 })
    }

    /// `ceil(self × 10^scale)` as a non-negative integer.
    pub(crate) fn ceil_scaled(&self, scale: i32) -> Result<u64, QuantityError> {
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
            let exponent = s.strip_prefix(['e', 'E']).filter(|rest| !rest.is_empty()).ok_or(QuantityError::Syntax)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Syntax);
            }
            // Beyond ±i32 the value cannot be represented anyway.
            let e = exponent.parse::<i32>().map_err(|_| {
                if exponent.starts_with('-') { QuantityError::TooPrecise } else { QuantityError::TooLarge }
            })?;
            (e, 0)
        }
    };
    Ok(pair)
}

/// A CPU quantity in millicores, rounded up: `"500m"` → 500, `"1"` →
/// 1000, `"0.5"` → 500.
///
/// # Errors
/// [`QuantityError`] for malformed, negative or too large quantities.
pub fn parse_cpu(text: &str) -> Result<u64, QuantityError> {
    Quantity::parse(text)?.ceil_scaled(3)
}

/// A memory (or any byte) quantity in bytes, rounded up: `"64Mi"` →
/// 67108864, `"1G"` → 10^9, `"129e6"` → 129000000.
///
/// # Errors
/// [`QuantityError`] for malformed, negative or too large quantities.
pub fn parse_memory(text: &str) -> Result<u64, QuantityError> {
    Quantity::parse(text)?.ceil_scaled(0)
}

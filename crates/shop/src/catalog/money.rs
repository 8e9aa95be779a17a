//! Exact money: an integer number of minor units (cents) and an ISO 4217 currency.

use std::fmt;

/// Currencies the shop accepts. All have two decimal places, so amounts in different
/// currencies share one scale and price filters compare like with like.
const SUPPORTED: &[&str] = &[
    "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF", "ILS", "INR", "MXN", "NOK",
    "NZD", "PLN", "RON", "SEK", "SGD", "TRY", "USD", "ZAR",
];
/// Decimal places of every supported currency.
pub const MINOR_DIGITS: u32 = 2;
/// The largest amount accepted: ten billion major units, far below `i64::MAX` minor units.
const MAX_MINOR: i64 = 10_000_000_000 * 100;

/// An ISO 4217 code from the supported list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let upper = raw.trim().to_ascii_uppercase();
        if !SUPPORTED.contains(&upper.as_str()) {
            return Err(format!("must be one of {}", SUPPORTED.join(", ")));
        }
        let mut code = [0u8; 3];
        code.copy_from_slice(upper.as_bytes());
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount with its currency, held exactly in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, String> {
        if !(0..=MAX_MINOR).contains(&minor) {
            return Err("is out of range".into());
        }
        Ok(Self { minor, currency })
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The decimal string of the API, e.g. `"12.99"`.
    pub fn amount_string(&self) -> String {
        format_minor(self.minor)
    }
}

/// Parses a decimal amount string (`"12"`, `"12.9"`, `"12.99"`) into minor units, exactly.
/// Floats never enter: the digits are read as integers.
pub fn parse_amount(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || (raw.contains('.') && fraction.is_empty()) {
        return Err("must be a non-negative decimal amount like 12.99".into());
    }
    if fraction.len() > MINOR_DIGITS as usize {
        return Err(format!("must have at most {MINOR_DIGITS} decimal places"));
    }
    let whole: i64 = whole.parse().map_err(|_| "is out of range".to_owned())?;
    let fraction_value: i64 =
        if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| "is out of range".to_owned())? };
    let scale = 10_i64.pow(MINOR_DIGITS - fraction.len() as u32);
    let minor = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(fraction_value * scale))
        .filter(|minor| *minor <= MAX_MINOR)
        .ok_or_else(|| "is out of range".to_owned())?;
    Ok(minor)
}

/// Minor units as the API's decimal string (`1299` → `"12.99"`).
pub fn format_minor(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_amounts_exactly() {
        assert_eq!(parse_amount("12.99"), Ok(1299));
        assert_eq!(parse_amount("12.9"), Ok(1290));
        assert_eq!(parse_amount("12"), Ok(1200));
        assert_eq!(parse_amount("0.01"), Ok(1));
        for bad in ["", "-1", "1.", ".5", "1.234", "1e3", "12,99", "abc", "99999999999999999999"] {
            assert!(parse_amount(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn currencies_are_normalised_and_restricted() {
        assert_eq!(Currency::parse("eur").map(|c| c.as_str().to_owned()), Ok("EUR".into()));
        assert!(Currency::parse("JPY").is_err(), "zero-decimal currencies are not supported");
        assert!(Currency::parse("XYZ").is_err());
    }

    proptest! {
        #[test]
        fn formatting_round_trips(minor in 0..MAX_MINOR) {
            prop_assert_eq!(parse_amount(&format_minor(minor)), Ok(minor));
        }
    }
}

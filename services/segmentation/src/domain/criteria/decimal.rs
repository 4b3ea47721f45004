//! Exact comparison of JSON numbers, as PostgreSQL compares `numeric` (`1` = `1.0` = `1e0`).
//! The evaluator compares numbers by the decimal text serde_json writes for them, which is the
//! text PostgreSQL stores in the jsonb, so both sides agree to the last digit.

use std::cmp::Ordering;

use serde_json::Number;

/// A finite decimal `±0.d₁d₂…dₙ × 10^exp` with no leading or trailing zero digits (zero has no
/// digits).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    pub(crate) fn of(n: &Number) -> Self {
        Self::parse(&n.to_string()).unwrap_or_default()
    }

    /// Parses JSON number syntax (`-12.5e-3`; also a leading `+`).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => {
                let e = &rest[i + 1..];
                let e = e.strip_prefix('+').unwrap_or(e);
                (&rest[..i], e.parse::<i64>().ok()?)
            }
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let mut point = i64::try_from(int.len()).ok()?.checked_add(exp)?;
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        point -= i64::try_from(leading).ok()?;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Self::default());
        }
        Some(Self {
            negative,
            digits,
            exp: point,
        })
    }

    fn sign(&self) -> i8 {
        match (self.digits.is_empty(), self.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.sign().cmp(&other.sign()) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        let magnitude = self
            .exp
            .cmp(&other.exp)
            .then_with(|| self.digits.cmp(&other.digits));
        match self.sign() {
            -1 => magnitude.reverse(),
            0 => Ordering::Equal,
            _ => magnitude,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn equal_forms() {
        for (a, b) in [
            ("1", "1.0"),
            ("1", "1e0"),
            ("100", "1e2"),
            ("100", "1E+2"),
            ("0.001", "1e-3"),
            ("0", "-0.0"),
            ("0", "0e10"),
            ("-2.50", "-2.5"),
            ("0012.300", "12.3"),
        ] {
            assert_eq!(d(a), d(b), "{a} = {b}");
        }
    }

    #[test]
    fn ordering() {
        let sorted = [
            "-1e20", "-100", "-2.5", "-2.25", "-1", "-0.5", "-1e-9", "0", "1e-9", "0.5", "0.51",
            "1", "1.000001", "2", "10", "99.9", "100", "1e20",
        ];
        for (i, a) in sorted.iter().enumerate() {
            for (j, b) in sorted.iter().enumerate() {
                assert_eq!(d(a).cmp(&d(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "-", ".", "1e", "abc", "1.2.3", "1e1.5", "--1"] {
            assert!(Decimal::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn of_json_numbers() {
        let n = |v: serde_json::Value| Decimal::of(v.as_number().unwrap());
        assert_eq!(n(serde_json::json!(1)), n(serde_json::json!(1.0)));
        assert!(n(serde_json::json!(0.1)) < n(serde_json::json!(0.2)));
        assert!(n(serde_json::json!(-3)) < n(serde_json::json!(u64::MAX)));
    }
}

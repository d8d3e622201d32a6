//! How rule values read in messages: short, stable numbers for people.
//! Formatting only; nothing here compares a value with a threshold.

/// A value for messages: at most six decimals, trailing zeros dropped.
pub(crate) fn short(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_at_most_six_decimals_without_trailing_zeros() {
        assert_eq!(short(0.05), "0.05");
        assert_eq!(short(0.000_250_000_1), "0.00025");
        assert_eq!(short(3.0), "3");
        assert_eq!(short(0.000_000_1), "0");
        assert_eq!(short(-2.5), "-2.5");
        assert_eq!(short(f64::NAN), "NaN");
        assert_eq!(short(f64::INFINITY), "inf");
    }
}

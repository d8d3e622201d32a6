//! Pure statistics for judging whether a new deployment's version is worse than the old
//! one, in the manner of Kayenta's judge: a pooled two-proportion z-test for error rates
//! and a Mann-Whitney U test for time-series points of a metric.
//!
//! Every function here is a pure computation over numbers it is given. This module must
//! never query a metrics source, read a clock, log, or decide what to do about a result:
//! it answers "how surprising is this difference", and the caller decides what is bad.

/// Standard normal cumulative distribution function, P(Z <= z).
///
/// Hart's double-precision algorithm 5666 (Computer Approximations, 1968) as published by
/// G. West, "Better approximations to cumulative normal functions" (Wilmott, 2005):
/// within 1e-15 absolutely (1e-8 relatively in the far tail) of scipy's `norm.cdf`, and
/// exactly 0.5 at 0, so a test showing no difference reports p = 0.5, not merely near it.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    #[rustfmt::skip]
    const NUMERATOR: [f64; 7] = [
        3.526_249_659_989_11e-2, 0.700_383_064_443_688, 6.373_962_203_531_65,
        33.912_866_078_383, 112.079_291_497_871, 221.213_596_169_931, 220.206_867_912_376,
    ];
    #[rustfmt::skip]
    const DENOMINATOR: [f64; 8] = [
        8.838_834_764_831_84e-2, 1.755_667_163_182_64, 16.064_177_579_207,
        86.780_732_202_946_1, 296.564_248_779_674, 637.333_633_378_831,
        793.826_512_519_948, 440.413_735_824_752,
    ];
    let x = z.abs();
    // The lower tail at -|z|; beyond 37 it underflows to 0 anyway.
    let tail = if x > 37.0 {
        0.0
    } else if x < 7.071_067_811_865_47 {
        let horner = |coefficients: &[f64]| coefficients.iter().fold(0.0, |acc, c| acc * x + c);
        (-x * x / 2.0).exp() * horner(&NUMERATOR) / horner(&DENOMINATOR)
    } else {
        // Far tail: a continued fraction, where the rational fit loses accuracy.
        let fraction = x + 1.0 / (x + 2.0 / (x + 3.0 / (x + 4.0 / (x + 0.65))));
        (-x * x / 2.0).exp() / fraction / 2.506_628_274_631
    };
    if z > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProportionTest {
    pub old_rate: f64,
    pub new_rate: f64,
    pub z: f64,
    /// one-sided p-value that the new rate is greater than the old
    pub p_value: f64,
}

/// Pooled two-proportion z-test, one-sided (H1: the new rate is greater than the old).
///
/// Counts are `f64` because Prometheus `increase()` answers non-integers. Returns `None`
/// only for input that cannot describe rates: a total that is not finite and positive, or
/// errors that are not finite, negative, or greater than their total. When the pooled
/// rate is 0 or 1 the variance is zero, but then both rates are necessarily equal (no
/// errors anywhere, or only errors), so that is reported as "no difference" (z = 0,
/// p = 0.5) rather than "cannot test": a clean old and new version must not look
/// inconclusive.
pub(crate) fn two_proportions(
    old_errors: f64,
    old_total: f64,
    new_errors: f64,
    new_total: f64,
) -> Option<ProportionTest> {
    let valid = |errors: f64, total: f64| {
        total.is_finite() && total > 0.0 && errors.is_finite() && (0.0..=total).contains(&errors)
    };
    if !valid(old_errors, old_total) || !valid(new_errors, new_total) {
        return None;
    }
    let (old_rate, new_rate) = (old_errors / old_total, new_errors / new_total);
    let pooled = (old_errors + new_errors) / (old_total + new_total);
    let variance = pooled * (1.0 - pooled) * (1.0 / old_total + 1.0 / new_total);
    let z = if variance > 0.0 {
        (new_rate - old_rate) / variance.sqrt()
    } else {
        0.0
    };
    Some(ProportionTest {
        old_rate,
        new_rate,
        z,
        p_value: normal_cdf(-z),
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RankTest {
    pub u: f64,
    pub z: f64,
    /// one-sided p-value that `new` tends to be larger than `old`
    pub p_value: f64,
    pub old_median: f64,
    pub new_median: f64,
}

/// Median of the finite values; the mean of the two middle ones for an even count.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    finite.sort_by(f64::total_cmp);
    let mid = finite.len() / 2;
    Some(if finite.len().is_multiple_of(2) {
        (finite[mid - 1] + finite[mid]) / 2.0
    } else {
        finite[mid]
    })
}

/// Mann-Whitney U test, one-sided (H1: `new` tends to be larger than `old`), as Kayenta's
/// MannWhitney judge applies to the baseline's and canary's points of one metric.
///
/// Non-finite values are ignored (a NaN from a division by zero in a query is no
/// evidence either way). `None` when either side has no finite value; callers enforce
/// their own minimum sample count. `u` counts pairs where new > old, ties counting 1/2.
/// The p-value uses the normal approximation with midranks, tie correction and a
/// continuity correction of 0.5, matching scipy's `mannwhitneyu(new, old,
/// alternative='greater', method='asymptotic')`. All-equal values (zero variance) give
/// z = 0, p = 0.5.
pub(crate) fn mann_whitney(old: &[f64], new: &[f64]) -> Option<RankTest> {
    let old: Vec<f64> = old.iter().copied().filter(|v| v.is_finite()).collect();
    let new: Vec<f64> = new.iter().copied().filter(|v| v.is_finite()).collect();
    let (old_median, new_median) = (median(&old)?, median(&new)?);
    let (n_old, n_new) = (old.len() as f64, new.len() as f64);

    // Tag each point with whether it is from `new`, then rank the pooled sample.
    let mut pooled: Vec<(f64, bool)> = old
        .iter()
        .map(|&v| (v, false))
        .chain(new.iter().map(|&v| (v, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut new_rank_sum, mut tie_term, mut i) = (0.0, 0.0, 0);
    while i < pooled.len() {
        let mut j = i;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks are 1-based; a tie group over positions i..j shares their mean rank.
        let midrank = (i + j + 1) as f64 / 2.0;
        new_rank_sum += midrank * pooled[i..j].iter().filter(|p| p.1).count() as f64;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }

    let u = new_rank_sum - n_new * (n_new + 1.0) / 2.0;
    let n = n_old + n_new;
    // (n^3 - sum of t^3) / (n(n-1)): exactly 0 when all values are equal and at least 3
    // otherwise, so comparing with 1 cannot mistake rounding for spread.
    let tie_corrected = (n + 1.0) - tie_term / (n * (n - 1.0));
    let z = if tie_corrected > 1.0 {
        (u - n_old * n_new / 2.0 - 0.5) / (n_old * n_new / 12.0 * tie_corrected).sqrt()
    } else {
        0.0
    };
    Some(RankTest {
        u,
        z,
        p_value: normal_cdf(-z),
        old_median,
        new_median,
    })
}

/// Mann-Whitney U test for a `below` condition (lower is worse, e.g. throughput): the
/// p-value is that `new` tends to be *smaller* than `old`. It runs [`mann_whitney`] on
/// negated values, so `u` and `z` are for the negated samples, but the medians reported
/// are the real ones so evidence reads in the metric's own units.
pub(crate) fn mann_whitney_lower(old: &[f64], new: &[f64]) -> Option<RankTest> {
    let negate = |values: &[f64]| values.iter().map(|v| -v).collect::<Vec<f64>>();
    let test = mann_whitney(&negate(old), &negate(new))?;
    Some(RankTest {
        old_median: median(old)?,
        new_median: median(new)?,
        ..test
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} != {expected} ± {tolerance}"
        );
    }

    // Reference values come from scipy 1.17.1: `scipy.stats.norm.cdf(z)`.
    #[test]
    fn normal_cdf_matches_scipy_at_zero_and_in_both_tails() {
        // Far tighter than the 1e-6 a judge needs: a mistyped coefficient shows up here.
        assert_eq!(normal_cdf(0.0), 0.5);
        close(normal_cdf(1.96), 0.9750021048517795, 1e-12);
        close(normal_cdf(-3.0), 0.0013498980316300933, 1e-12);
    }

    // Reference: pooled z by hand, p = `scipy.stats.norm.sf(z)` (z = 3.1943828249996993).
    #[test]
    fn tripled_error_rate_on_a_thousand_requests_is_significant() {
        let t = two_proportions(10.0, 1000.0, 30.0, 1000.0).unwrap();
        close(t.old_rate, 0.01, 1e-12);
        close(t.new_rate, 0.03, 1e-12);
        close(t.z, 3.1943828249996993, 1e-9);
        close(t.p_value, 0.0007006507904801069, 1e-4);
    }

    // Reference: pooled z by hand, p = `scipy.stats.norm.sf(z)` (z = 0.21937263577985758).
    #[test]
    fn one_extra_error_in_a_thousand_is_not_significant() {
        let t = two_proportions(10.0, 1000.0, 11.0, 1000.0).unwrap();
        close(t.z, 0.21937263577985758, 1e-9);
        close(t.p_value, 0.41317989218103496, 1e-4);
    }

    #[test]
    fn zero_or_invalid_totals_cannot_be_tested() {
        assert_eq!(two_proportions(0.0, 0.0, 1.0, 10.0), None);
        assert_eq!(two_proportions(1.0, 10.0, 0.0, 0.0), None);
        assert_eq!(two_proportions(1.0, f64::NAN, 1.0, 10.0), None);
        assert_eq!(two_proportions(-1.0, 10.0, 1.0, 10.0), None);
        assert_eq!(two_proportions(11.0, 10.0, 1.0, 10.0), None);
    }

    #[test]
    fn no_errors_anywhere_means_no_difference_rather_than_no_answer() {
        let t = two_proportions(0.0, 500.0, 0.0, 800.0).unwrap();
        assert_eq!((t.z, t.p_value), (0.0, 0.5));
    }

    const OLD_SHIFTED: [f64; 10] = [10.1, 9.8, 10.4, 10.0, 9.9, 10.2, 10.3, 9.7, 10.05, 10.15];
    const NEW_SHIFTED: [f64; 10] = [12.0, 11.8, 12.3, 11.9, 12.1, 12.2, 11.7, 12.4, 10.25, 12.05];

    // Reference values in the Mann-Whitney tests come from scipy 1.17.1:
    // `scipy.stats.mannwhitneyu(new, old, alternative='greater', method='asymptotic',
    // use_continuity=True)`; z is `scipy.stats.norm.isf(pvalue)`.
    #[test]
    fn clearly_shifted_samples_are_significant() {
        let t = mann_whitney(&OLD_SHIFTED, &NEW_SHIFTED).unwrap();
        assert_eq!(t.u, 98.0);
        close(t.z, 3.590662493587659, 1e-4);
        close(t.p_value, 0.00016491926038899677, 1e-4);
        close(t.old_median, 10.075, 1e-12);
        close(t.new_median, 12.025, 1e-12);
    }

    #[test]
    fn interleaved_samples_are_not_significant() {
        let old = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0];
        let new = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
        let t = mann_whitney(&old, &new).unwrap();
        assert_eq!(t.u, 21.0);
        close(t.p_value, 0.3444602779022303, 1e-4);
    }

    #[test]
    fn ties_take_midranks_and_shrink_the_variance() {
        let old = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0];
        let new = [2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0];
        let t = mann_whitney(&old, &new).unwrap();
        assert_eq!(t.u, 38.0);
        close(t.z, 1.716687340749231, 1e-4);
        close(t.p_value, 0.04301815719753675, 1e-4);
        assert_eq!((t.old_median, t.new_median), (3.0, 4.0));
    }

    #[test]
    fn all_equal_values_show_no_difference() {
        let t = mann_whitney(&[5.0, 5.0, 5.0], &[5.0, 5.0]).unwrap();
        assert_eq!((t.u, t.z, t.p_value), (3.0, 0.0, 0.5));
        // Large samples, where rounding in the tie correction must not pass for spread.
        let many = vec![0.1; 30_001];
        assert_eq!(mann_whitney(&many, &many).unwrap().p_value, 0.5);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut old = OLD_SHIFTED.to_vec();
        old.extend([f64::NAN, f64::INFINITY]);
        let mut new = NEW_SHIFTED.to_vec();
        new.push(f64::NEG_INFINITY);
        assert_eq!(
            mann_whitney(&old, &new),
            mann_whitney(&OLD_SHIFTED, &NEW_SHIFTED)
        );
        assert_eq!(mann_whitney(&[f64::NAN], &[1.0]), None);
        assert_eq!(median(&[3.0, f64::NAN, 1.0]), Some(2.0));
    }

    // Reference: the same scipy call on the negated samples.
    #[test]
    fn lower_direction_flags_a_drop_and_keeps_real_medians() {
        let t = mann_whitney_lower(&NEW_SHIFTED, &OLD_SHIFTED).unwrap();
        close(t.p_value, 0.00016491926038899677, 1e-4);
        assert_eq!((t.old_median, t.new_median), (12.025, 10.075));
        let rising = mann_whitney_lower(&OLD_SHIFTED, &NEW_SHIFTED).unwrap();
        close(rising.p_value, 0.9998769359360474, 1e-4);
    }
}

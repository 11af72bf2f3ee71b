//! Statistics for accept decisions and reports: pass@1, unbiased pass@k, pass^k, Wilson intervals,
//! the exact McNemar test and a seeded paired bootstrap over tasks.
//!
//! Everything here is a plain function of counts, so the gate's decisions can be re-derived from
//! stored outcomes bit for bit (`kiln evolve replay`). Small-n inference never uses a normal
//! approximation: intervals are Wilson's, the paired test is exact.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// z for a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// `n` choose `k` as a float (exact for the sizes used here; no overflow for n ≤ 1000).
pub fn binomial_coefficient(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// pass@1: the fraction of `n` attempts that succeeded (0 when there are none).
pub fn pass_at_1(successes: u64, attempts: u64) -> f64 {
    if attempts == 0 {
        return 0.0;
    }
    successes as f64 / attempts as f64
}

/// Unbiased pass@k (Chen et al. 2021): `1 − C(n−c, k) / C(n, k)`, the chance that at least one of
/// `k` attempts drawn without replacement from the `n` made succeeded. None when `k` is 0 or
/// larger than `n`.
pub fn pass_at_k(attempts: u64, successes: u64, k: u64) -> Option<f64> {
    if k == 0 || k > attempts || successes > attempts {
        return None;
    }
    if attempts - successes < k {
        return Some(1.0);
    }
    // The product form avoids huge binomials: C(n−c,k)/C(n,k) = Π_{i=n−c+1..n} (1 − k/i).
    let ratio = ((attempts - successes + 1)..=attempts)
        .fold(1.0, |acc, i| acc * (1.0 - k as f64 / i as f64));
    Some(1.0 - ratio)
}

/// pass^k (τ-bench): the chance that `k` attempts drawn without replacement all succeed,
/// `C(c, k) / C(n, k)`. None when `k` is 0 or larger than `n`.
pub fn pass_hat_k(attempts: u64, successes: u64, k: u64) -> Option<f64> {
    if k == 0 || k > attempts || successes > attempts {
        return None;
    }
    Some(binomial_coefficient(successes, k) / binomial_coefficient(attempts, k))
}

/// A closed interval of proportions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Wilson score interval for `successes` of `trials` at the given `z` (use [`Z_95`]); `[0, 1]`
/// when there are no trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> Interval {
    if trials == 0 {
        return Interval {
            low: 0.0,
            high: 1.0,
        };
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// Probability mass of `k` successes in `n` Bernoulli(`p`) trials.
pub fn binomial_pmf(n: u64, k: u64, p: f64) -> f64 {
    if k > n {
        return 0.0;
    }
    binomial_coefficient(n, k) * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32)
}

/// Exact two-sided McNemar test on the discordant pairs: `b` pairs where only the first side
/// succeeded, `c` where only the second did. Under the null each discordant pair goes either way
/// with probability ½, so the p-value is `min(1, 2·P[Bin(b+c, ½) ≤ min(b, c)])` (as
/// `scipy.stats.binomtest(b, b+c, 0.5)` and statsmodels' `mcnemar(exact=True)`).
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let tail: f64 = (0..=b.min(c)).map(|i| binomial_pmf(n, i, 0.5)).sum();
    (2.0 * tail).min(1.0)
}

/// Result of a paired bootstrap over tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapResult {
    /// Mean per-task difference (second minus first) on the observed tasks.
    pub mean_difference: f64,
    /// Percentile 95% interval of the resampled means.
    pub interval: Interval,
    /// Two-sided p-value: twice the smaller fraction of resampled means on either side of 0
    /// (at most 1).
    pub p_value: f64,
    pub resamples: usize,
    pub seed: u64,
}

/// Paired bootstrap over tasks: `differences[t]` is task t's second-minus-first pass rate; tasks
/// are resampled with replacement `resamples` times from a [`Rng`] seeded with `seed`.
/// Deterministic. None when there are no tasks or no resamples.
pub fn paired_bootstrap(
    differences: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<BootstrapResult> {
    if differences.is_empty() || resamples == 0 {
        return None;
    }
    let tasks = differences.len();
    let mean_difference = differences.iter().sum::<f64>() / tasks as f64;
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..tasks)
                .map(|_| differences[rng.below(tasks as u64) as usize])
                .sum::<f64>()
                / tasks as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at_or_below = means.iter().filter(|mean| **mean <= 0.0).count();
    let at_or_above = means.iter().filter(|mean| **mean >= 0.0).count();
    let p_value = (2.0 * at_or_below.min(at_or_above) as f64 / resamples as f64).min(1.0);
    Some(BootstrapResult {
        mean_difference,
        interval: Interval {
            low: percentile(&means, 0.025),
            high: percentile(&means, 0.975),
        },
        p_value,
        resamples,
        seed,
    })
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// pass@1, pass@k and pass^k over tasks with a Wilson interval on pass@1, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassSummary {
    pub tasks: usize,
    pub attempts_per_task: u64,
    pub k: u64,
    pub pass_at_1: f64,
    /// Wilson 95% interval on all attempts pooled.
    pub pass_at_1_interval: Interval,
    pub pass_at_k: f64,
    pub pass_hat_k: f64,
}

/// Summarizes per-task success counts, each out of `attempts` attempts. None when there are no
/// tasks or `k` is not in `1..=attempts`.
pub fn summarize(successes_per_task: &[u64], attempts: u64, k: u64) -> Option<PassSummary> {
    if successes_per_task.is_empty() || k == 0 || k > attempts {
        return None;
    }
    let tasks = successes_per_task.len();
    let total: u64 = successes_per_task.iter().sum();
    let mean = |f: &dyn Fn(u64) -> Option<f64>| -> Option<f64> {
        let values: Option<Vec<f64>> = successes_per_task.iter().map(|c| f(*c)).collect();
        Some(values?.iter().sum::<f64>() / tasks as f64)
    };
    Some(PassSummary {
        tasks,
        attempts_per_task: attempts,
        k,
        pass_at_1: pass_at_1(total, attempts * tasks as u64),
        pass_at_1_interval: wilson(total, attempts * tasks as u64, Z_95),
        pass_at_k: mean(&|c| pass_at_k(attempts, c, k))?,
        pass_hat_k: mean(&|c| pass_hat_k(attempts, c, k))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    // Expected values below were computed once in Python 3 with `math.comb`, the same formulas
    // as scipy.stats.binomtest(min(b,c), b+c, 0.5).pvalue (two-sided, p = 0.5 is symmetric) and
    // statsmodels.stats.proportion.proportion_confint(s, n, method="wilson"):
    //   mcnemar(b,c) = min(1, 2*sum(comb(b+c,i) for i in range(min(b,c)+1)) / 2**(b+c))
    //   wilson: p=s/n; d=1+z*z/n; c=(p+z*z/(2n))/d; h=z*sqrt(p(1-p)/n+z*z/(4n*n))/d
    #[test]
    fn mcnemar_matches_the_exact_binomial_reference() {
        let cases = [
            (10, 2, 0.03857421875),
            (5, 0, 0.0625),
            (7, 7, 1.0),
            (1, 9, 0.021484375),
            (20, 8, 0.03569813817739487),
            (0, 6, 0.03125),
            (0, 0, 1.0),
        ];
        for (b, c, expected) in cases {
            let p = mcnemar_exact(b, c);
            assert!(
                close(p, expected),
                "mcnemar({b}, {c}) = {p}, expected {expected}"
            );
            assert!(close(p, mcnemar_exact(c, b)), "the test is symmetric");
        }
    }

    #[test]
    fn wilson_matches_the_reference() {
        let cases = [
            (7, 10, 0.39677814746114537, 0.8922087325936989),
            (0, 10, 0.0, 0.2775327998628892),
            (10, 10, 0.7224672001371107, 1.0),
            (45, 100, 0.3561453797951198, 0.5475539700255787),
            (1, 3, 0.06149194472039621, 0.7923403991979522),
        ];
        for (s, n, low, high) in cases {
            let interval = wilson(s, n, Z_95);
            assert!((interval.low - low).abs() < 1e-9, "{s}/{n}: {interval:?}");
            assert!((interval.high - high).abs() < 1e-9, "{s}/{n}: {interval:?}");
        }
        assert_eq!(
            wilson(0, 0, Z_95),
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
    }

    #[test]
    fn pass_at_k_and_pass_hat_k_match_their_closed_forms() {
        // Python: 1 - comb(n-c,k)/comb(n,k) and comb(c,k)/comb(n,k).
        assert!(close(pass_at_k(10, 3, 2).unwrap(), 0.5333333333333333));
        assert!(close(pass_at_k(5, 1, 5).unwrap(), 1.0));
        assert!((pass_at_k(20, 5, 3).unwrap() - 0.6008771929824561).abs() < 1e-12);
        assert!(close(pass_at_k(4, 0, 2).unwrap(), 0.0));
        assert!((pass_hat_k(10, 7, 3).unwrap() - 0.2916666666666667).abs() < 1e-12);
        assert!(close(pass_hat_k(3, 3, 3).unwrap(), 1.0));
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_hat_k(3, 1, 0), None);
        // k = 1 is pass@1 for both.
        assert!(close(pass_at_k(8, 3, 1).unwrap(), pass_at_1(3, 8)));
        assert!(close(pass_hat_k(8, 3, 1).unwrap(), pass_at_1(3, 8)));
    }

    #[test]
    fn summary_pools_attempts_and_averages_per_task_estimators() {
        let summary = summarize(&[2, 0, 1], 2, 2).unwrap();
        assert!(close(summary.pass_at_1, 0.5));
        assert!(close(summary.pass_at_k, (1.0 + 0.0 + 1.0) / 3.0));
        assert!(close(summary.pass_hat_k, 1.0 / 3.0));
        assert_eq!(summary.pass_at_1_interval, wilson(3, 6, Z_95));
        assert_eq!(summarize(&[], 2, 1), None);
    }

    #[test]
    fn bootstrap_is_deterministic_and_finds_a_clear_shift() {
        let shifted: Vec<f64> = (0..30)
            .map(|i| if i % 3 == 0 { 0.0 } else { 0.5 })
            .collect();
        let first = paired_bootstrap(&shifted, 2000, 7).unwrap();
        let second = paired_bootstrap(&shifted, 2000, 7).unwrap();
        assert_eq!(first, second);
        assert!(close(first.mean_difference, 20.0 * 0.5 / 30.0));
        assert!(first.p_value < 0.01, "{first:?}");
        assert!(first.interval.low > 0.0 && first.interval.high <= 0.5);

        let balanced: Vec<f64> = (0..30)
            .map(|i| if i % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let null = paired_bootstrap(&balanced, 2000, 7).unwrap();
        assert!(null.p_value > 0.5, "{null:?}");
        assert!(null.interval.low < 0.0 && null.interval.high > 0.0);
        assert_eq!(paired_bootstrap(&[], 100, 1), None);
    }

    #[test]
    fn splitmix_is_reproducible_and_roughly_uniform() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let draws: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(draws, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut rng = Rng::new(1);
        let hits = (0..10_000).filter(|_| rng.bernoulli(0.3)).count();
        assert!((2_800..3_200).contains(&hits), "{hits}");
    }
}

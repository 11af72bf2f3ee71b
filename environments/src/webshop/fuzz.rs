//! thefuzz's `token_set_ratio`, as WebShop's reward calls it (`fuzz.token_set_ratio(a, b)` with
//! thefuzz's defaults `force_ascii=True, full_process=True`).
//!
//! thefuzz ≥ 0.20 delegates to rapidfuzz: both strings go through `full_process` (drop non-ASCII
//! characters, every non-alphanumeric character becomes a space, lowercase, trim), then rapidfuzz's
//! token-set ratio runs on the whitespace tokens and thefuzz rounds the float score with Python's
//! `round` (half to even). The similarity underneath is python-Levenshtein's `ratio`: the InDel
//! distance (insertions and deletions only, i.e. `len(a) + len(b) - 2·LCS`) normalised by the summed
//! lengths. `tests/webshop_reward.rs` checks 3,000 pairs against thefuzz 0.22.1. thefuzz 0.19.0 with
//! python-Levenshtein (WebShop's era) gives the same numbers on all of them except pairs containing
//! `_`, which its `\W`-based processing kept as a word character (`"a_b"` vs `"a b"`: 67, here 100).

use std::collections::BTreeSet;

/// thefuzz's `utils.full_process(s, force_ascii=True)`: non-ASCII characters removed, every other
/// non-alphanumeric character turned into a space, lowercased, surrounding whitespace trimmed.
pub fn full_process(text: &str) -> String {
    let processed: String = text
        .chars()
        .filter(char::is_ascii)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    processed.trim().to_string()
}

/// Length of the longest common subsequence of `a` and `b` (bytes; callers pass ASCII).
fn lcs_len(a: &[u8], b: &[u8]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    // One row of the classic DP table; `diagonal` carries the previous row's left neighbour.
    let mut row = vec![0usize; b.len() + 1];
    for &ca in a {
        let mut diagonal = 0;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == cb {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The InDel distance between `a` and `b`: insertions plus deletions turning one into the other.
pub fn indel_distance(a: &str, b: &str) -> usize {
    a.len() + b.len() - 2 * lcs_len(a.as_bytes(), b.as_bytes())
}

/// rapidfuzz's normalisation of a distance to a 0–100 similarity (`100 - 100·dist/lensum`).
fn norm_distance(distance: usize, lensum: usize) -> f64 {
    if lensum == 0 {
        return 100.0;
    }
    100.0 - 100.0 * distance as f64 / lensum as f64
}

/// python-Levenshtein's `ratio` scaled to 0–100 (unrounded): `100·(1 − InDel(a, b)/(|a| + |b|))`.
pub fn ratio(a: &str, b: &str) -> f64 {
    norm_distance(indel_distance(a, b), a.len() + b.len())
}

/// Python's `round(x)` for a non-negative score: halves go to the even neighbour.
fn round_half_even(value: f64) -> u32 {
    let floor = value.floor();
    let fraction = value - floor;
    let round_up = fraction > 0.5 || (fraction == 0.5 && floor % 2.0 != 0.0);
    let rounded = if round_up { floor + 1.0 } else { floor };
    rounded as u32
}

/// rapidfuzz's token-set ratio on already processed strings, unrounded.
fn token_set_ratio_raw(a: &str, b: &str) -> f64 {
    let tokens_a: BTreeSet<&str> = a.split_whitespace().collect();
    let tokens_b: BTreeSet<&str> = b.split_whitespace().collect();
    if tokens_a.is_empty() || tokens_b.is_empty() {
        return 0.0;
    }
    let intersection: Vec<&str> = tokens_a.intersection(&tokens_b).copied().collect();
    let diff_ab: Vec<&str> = tokens_a.difference(&tokens_b).copied().collect();
    let diff_ba: Vec<&str> = tokens_b.difference(&tokens_a).copied().collect();
    // One token set contains the other.
    if !intersection.is_empty() && (diff_ab.is_empty() || diff_ba.is_empty()) {
        return 100.0;
    }
    let diff_ab = diff_ab.join(" ");
    let diff_ba = diff_ba.join(" ");
    let sect_len = intersection.join(" ").len();
    let separator = usize::from(sect_len > 0);
    let sect_ab_len = sect_len + separator + diff_ab.len();
    let sect_ba_len = sect_len + separator + diff_ba.len();
    // "sect ab" vs "sect ba" share the prefix, so their distance is that of the differences.
    let result = norm_distance(
        indel_distance(&diff_ab, &diff_ba),
        sect_ab_len + sect_ba_len,
    );
    if sect_len == 0 {
        return result;
    }
    // "sect" vs "sect ab" differ only by the appended part.
    let sect_ab = norm_distance(separator + diff_ab.len(), sect_len + sect_ab_len);
    let sect_ba = norm_distance(separator + diff_ba.len(), sect_len + sect_ba_len);
    result.max(sect_ab).max(sect_ba)
}

/// thefuzz's `fuzz.token_set_ratio(a, b)`: an integer 0–100 (see the module docs).
pub fn token_set_ratio(a: &str, b: &str) -> u32 {
    let a = full_process(a);
    let b = full_process(b);
    round_half_even(token_set_ratio_raw(&a, &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_process_matches_thefuzz() {
        assert_eq!(
            full_process("  Navy-Blue, X_Large!  "),
            "navy blue  x large"
        );
        assert_eq!(full_process("Café Crème"), "caf crme");
        assert_eq!(full_process("___"), "");
    }

    #[test]
    fn ratio_is_the_indel_ratio() {
        assert_eq!(indel_distance("kitten", "sitting"), 5);
        assert!((ratio("kitten", "sitting") - 100.0 * 8.0 / 13.0).abs() < 1e-9);
        assert_eq!(ratio("", ""), 100.0);
        assert_eq!(ratio("abc", ""), 0.0);
    }

    #[test]
    fn python_rounding_goes_to_even() {
        assert_eq!(round_half_even(87.5), 88);
        assert_eq!(round_half_even(82.5), 82);
        assert_eq!(round_half_even(85.49), 85);
        assert_eq!(round_half_even(85.51), 86);
    }
}

//! Choosing the next token from logits, the log-probabilities recorded for training, and
//! text-level stop sequences.
//!
//! Recorded log-probabilities are those of the sampling policy: `log_softmax(logits / T)` at the
//! sampling temperature `T` (1 for greedy decoding), before top-p. The trainer divides its logits
//! by the same `T`, so its ratio to the behaviour policy starts at 1; training rollouts sample with
//! `top_p = 1`, where the recorded distribution is exactly the sampled one (TRL #4159, #6789).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tokenizer::TokenId;

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// 0 (or less): greedy, the highest logit (lowest id on ties).
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p`
    /// (1: all of them).
    pub top_p: f32,
    /// Seed of the sampler's random generator; `None` seeds from the OS. The same seed, prompt and
    /// settings give the same tokens, batched or not.
    pub seed: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
        }
    }
}

/// Picks tokens for one sequence.
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
    /// Reused buffer of (probability, id) pairs.
    scratch: Vec<(f32, TokenId)>,
}

impl Sampler {
    /// The temperature of the distribution this sampler's recorded log-probabilities describe.
    pub fn policy_temperature(&self) -> f32 {
        policy_temperature(self.config.temperature)
    }

    pub fn new(config: SamplingConfig) -> Sampler {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Sampler {
            config,
            rng,
            scratch: Vec::new(),
        }
    }

    /// The next token after `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> TokenId {
        if self.config.temperature <= 0.0 || !self.config.temperature.is_finite() {
            return argmax(logits);
        }
        let inverse_temperature = 1.0 / self.config.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.scratch.clear();
        self.scratch.extend(
            logits
                .iter()
                .enumerate()
                .map(|(id, &logit)| (((logit - max) * inverse_temperature).exp(), id as TokenId)),
        );
        let total: f32 = self.scratch.iter().map(|(p, _)| p).sum();
        let kept = nucleus(&mut self.scratch, total, self.config.top_p);
        let kept_total: f32 = kept.iter().map(|(p, _)| p).sum();
        let mut target = self.rng.r#gen::<f32>() * kept_total;
        for &(weight, id) in kept.iter() {
            if target < weight {
                return id;
            }
            target -= weight;
        }
        kept.last().map_or_else(|| argmax(logits), |&(_, id)| id)
    }
}

/// The smallest set of most likely entries whose weights reach `top_p` of `total` (all entries
/// when `top_p >= 1`), most likely first. Sorts only as much of `weights` as it needs.
fn nucleus(weights: &mut [(f32, TokenId)], total: f32, top_p: f32) -> &[(f32, TokenId)] {
    if top_p >= 1.0 || weights.is_empty() {
        return weights;
    }
    let by_weight =
        |a: &(f32, TokenId), b: &(f32, TokenId)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let goal = total * top_p.max(0.0);
    let mut considered = 64.min(weights.len());
    loop {
        if considered < weights.len() {
            weights.select_nth_unstable_by(considered - 1, by_weight);
        }
        let head = &mut weights[..considered];
        head.sort_unstable_by(by_weight);
        let mut cumulative = 0.0;
        for (index, (weight, _)) in head.iter().enumerate() {
            cumulative += weight;
            if cumulative >= goal {
                return &weights[..=index];
            }
        }
        if considered == weights.len() {
            return weights;
        }
        considered = (considered * 4).min(weights.len());
    }
}

/// The id of the highest logit (the lowest id among equal ones).
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (id, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = id;
        }
    }
    best as TokenId
}

/// `log_softmax(logits)[id]`, computed stably in f64.
pub fn log_probability(logits: &[f32], id: TokenId) -> f32 {
    log_probability_at(logits, id, 1.0)
}

/// `log_softmax(logits / temperature)` at `id`; a temperature that is not positive and finite
/// counts as 1 (the distribution greedy decoding describes).
pub fn log_probability_at(logits: &[f32], id: TokenId, temperature: f32) -> f32 {
    let inverse = f64::from(policy_temperature(temperature)).recip();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .map(|&logit| (f64::from(logit - max) * inverse).exp())
        .sum();
    (f64::from(logits[id as usize] - max) * inverse - sum.ln()) as f32
}

/// The temperature whose distribution recorded log-probabilities describe: the sampling
/// temperature, or 1 for greedy decoding.
pub fn policy_temperature(temperature: f32) -> f32 {
    if temperature > 0.0 && temperature.is_finite() {
        temperature
    } else {
        1.0
    }
}

/// Finds stop sequences in generated text as it grows token by token. Matching is on bytes, so a
/// stop sequence split across tokens (or inside a multi-byte character split across tokens) is
/// found as soon as its last byte arrives.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<Vec<u8>>,
    text: Vec<u8>,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops
                .iter()
                .filter(|stop| !stop.is_empty())
                .map(|stop| stop.as_bytes().to_vec())
                .collect(),
            text: Vec::new(),
        }
    }

    /// Appends a token's bytes; returns where the earliest stop sequence completed by them
    /// starts, if one is.
    pub fn push(&mut self, piece: &[u8]) -> Option<usize> {
        let before = self.text.len();
        self.text.extend_from_slice(piece);
        self.stops
            .iter()
            .filter_map(|stop| {
                let from = before.saturating_sub(stop.len() - 1);
                find(&self.text[from..], stop).map(|at| from + at)
            })
            .min()
    }

    /// All bytes pushed so far.
    pub fn bytes(&self) -> &[u8] {
        &self.text
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_probabilities_are_those_of_the_tempered_distribution() {
        let logits = [2.0f32, 0.5, -1.0, 0.0];
        for temperature in [0.3f32, 0.7, 1.0, 1.5] {
            let scaled: Vec<f64> = logits.iter().map(|&l| f64::from(l / temperature)).collect();
            let norm = scaled.iter().map(|v| v.exp()).sum::<f64>().ln();
            for (id, value) in scaled.iter().enumerate() {
                let expected = value - norm;
                let got = f64::from(log_probability_at(&logits, id as TokenId, temperature));
                assert!(
                    (got - expected).abs() < 1e-6,
                    "T {temperature}, id {id}: {got} vs {expected}"
                );
            }
        }
        // Greedy decoding records the temperature-1 distribution.
        assert_eq!(
            log_probability_at(&logits, 1, 0.0),
            log_probability(&logits, 1)
        );
        assert_eq!(policy_temperature(0.0), 1.0);
        assert_eq!(policy_temperature(0.7), 0.7);
    }

    use super::*;

    #[test]
    fn greedy_takes_the_highest_logit_and_the_lowest_id_on_ties() {
        let mut sampler = Sampler::new(SamplingConfig::default());
        assert_eq!(sampler.sample(&[0.1, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[3.0, 3.0]), 0);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 / 20.0).collect();
        let config = SamplingConfig {
            temperature: 1.0,
            top_p: 0.95,
            seed: Some(42),
        };
        let draw = |config| {
            let mut sampler = Sampler::new(config);
            (0..50).map(|_| sampler.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(config), draw(config));
        let other = draw(SamplingConfig {
            seed: Some(43),
            ..config
        });
        assert_ne!(draw(config), other);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities ∝ [8, 4, 2, 1, 1]: top_p 0.7 keeps ids 0 and 1 (8+4 = 12 ≥ 0.7·16).
        let logits: Vec<f32> = [8f32, 4.0, 2.0, 1.0, 1.0].iter().map(|p| p.ln()).collect();
        let mut sampler = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_p: 0.7,
            seed: Some(1),
        });
        let mut seen = [0; 5];
        for _ in 0..2000 {
            seen[sampler.sample(&logits) as usize] += 1;
        }
        assert_eq!(&seen[2..], &[0, 0, 0], "{seen:?}");
        // 8:4 within the nucleus.
        let ratio = f64::from(seen[0]) / f64::from(seen[1]);
        assert!((1.6..2.5).contains(&ratio), "{seen:?}");
    }

    #[test]
    fn nucleus_grows_past_its_first_guess() {
        // 500 equal weights: top_p 0.9 needs 450 of them, more than the first 64 considered.
        let mut weights: Vec<(f32, TokenId)> = (0..500).map(|id| (1.0, id)).collect();
        assert_eq!(nucleus(&mut weights, 500.0, 0.9).len(), 450);
    }

    #[test]
    fn log_probabilities_are_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        for id in 0..3 {
            let want = (logits[id].exp() / total).ln();
            assert!((log_probability(&logits, id as TokenId) - want).abs() < 1e-6);
        }
        let huge = [1000.0f32, 0.0];
        assert!(log_probability(&huge, 0).abs() < 1e-6);
        assert!(log_probability(&huge, 1) < -999.0);
    }

    #[test]
    fn stop_sequences_are_found_across_token_boundaries() {
        let mut matcher = StopMatcher::new(&["Observation:".to_string(), String::new()]);
        assert_eq!(matcher.push(b"Action: x\nObs"), None);
        assert_eq!(matcher.push(b"erv"), None);
        assert_eq!(matcher.push(b"ation: more"), Some(10));
        assert_eq!(&matcher.bytes()[..10], b"Action: x\n");
    }

    #[test]
    fn the_earliest_stop_wins() {
        let mut matcher = StopMatcher::new(&["END".to_string(), "D!".to_string()]);
        assert_eq!(matcher.push(b"the END!"), Some(4));
    }

    #[test]
    fn a_stop_inside_a_split_character_is_found_on_its_last_byte() {
        let stop = "é!".to_string();
        let bytes = stop.as_bytes();
        let mut matcher = StopMatcher::new(std::slice::from_ref(&stop));
        assert_eq!(matcher.push(&bytes[..1]), None);
        assert_eq!(matcher.push(&bytes[1..2]), None);
        assert_eq!(matcher.push(&bytes[2..]), Some(0));
    }
}

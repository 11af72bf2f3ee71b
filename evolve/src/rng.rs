//! A small seeded generator ([`kiln_protocol::rng::splitmix64`] with this crate's own `below`,
//! `unit` and purposes), so split draws and the rules evolver's choices are bit-for-bit
//! reproducible from `--seed` across dependency upgrades and platforms (only integer arithmetic;
//! no floating-point transcendental functions anywhere).

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one named purpose under `seed`: independent streams per purpose, so
    /// adding a draw for one purpose never shifts another's.
    pub fn for_purpose(seed: u64, purpose: &str) -> Self {
        Self::new(seed ^ fnv1a(purpose.as_bytes()))
    }

    pub fn next_u64(&mut self) -> u64 {
        kiln_protocol::rng::splitmix64(&mut self.state)
    }

    /// Uniform in `0..bound` (`bound > 0`), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// A uniform 53-bit fraction in [0, 1) as an integer numerator over 2^53, so comparisons
    /// stay exact.
    pub fn unit(&mut self) -> u64 {
        self.next_u64() >> 11
    }

    /// Uniform in `[0, 1)` (53 random bits), for simulations and bootstraps (decisions that must
    /// stay exact use [`Rng::unit`]).
    pub fn next_f64(&mut self) -> f64 {
        self.unit() as f64 / (1u64 << 53) as f64
    }

    /// A Bernoulli(`p`) draw.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.below(index as u64 + 1) as usize;
            items.swap(index, other);
        }
    }

    /// A draw from Beta(a, b) for integer a, b ≥ 1, as the a-th smallest of a + b − 1 uniforms
    /// (an order statistic: exact, and integer-only). Returned as a 53-bit numerator.
    pub fn beta(&mut self, a: u32, b: u32) -> u64 {
        let a = a.max(1);
        let b = b.max(1);
        let mut draws: Vec<u64> = (0..(a + b - 1)).map(|_| self.unit()).collect();
        draws.sort_unstable();
        draws[(a - 1) as usize]
    }
}

/// FNV-1a, for deriving stream seeds from names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_purposes_are_independent() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(7);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::for_purpose(7, "search").next_u64(),
            Rng::for_purpose(7, "gate").next_u64()
        );
    }

    #[test]
    fn shuffles_are_permutations_and_beta_means_follow_the_counts() {
        let mut rng = Rng::new(1);
        let mut items: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..50).collect::<Vec<_>>());
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        // Beta(9, 1) has mean 0.9, Beta(1, 9) mean 0.1.
        let scale = (1u64 << 53) as f64;
        let high: f64 = (0..400).map(|_| rng.beta(9, 1) as f64 / scale).sum::<f64>() / 400.0;
        let low: f64 = (0..400).map(|_| rng.beta(1, 9) as f64 / scale).sum::<f64>() / 400.0;
        assert!(high > 0.8 && low < 0.2, "high {high}, low {low}");
    }
}

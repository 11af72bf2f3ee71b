//! A small seeded generator (SplitMix64) so the synthetic catalog and goals are the same on every
//! machine and every Rust/crate version (no dependency on `rand`'s algorithm choices).

/// SplitMix64 ([`kiln_protocol::rng::splitmix64`]): fast, statistically fine for data
/// generation, fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator derived from this seed and a label, so independent streams stay stable when
    /// one of them changes how much it draws.
    pub fn derive(seed: u64, label: u64) -> Self {
        let mut mixer = Self::new(seed ^ label.wrapping_mul(kiln_protocol::rng::GAMMA));
        mixer.next_u64();
        mixer
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        kiln_protocol::rng::splitmix64(&mut self.state)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        debug_assert!(bound > 0);
        // Multiply-shift: negligible bias for the small bounds used here.
        (((self.next_u64() >> 32) * bound as u64) >> 32) as usize
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen item (`items` non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `count` distinct items of `items` (all of them if fewer), in a random order.
    pub fn sample<T: Clone>(&mut self, items: &[T], count: usize) -> Vec<T> {
        let mut indices: Vec<usize> = (0..items.len()).collect();
        self.shuffle(&mut indices);
        indices
            .into_iter()
            .take(count)
            .map(|index| items[index].clone())
            .collect()
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_stay_in_bounds() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut rng = Rng::derive(7, 3);
        for _ in 0..1000 {
            assert!(rng.below(5) < 5);
            let x = rng.range(2, 4);
            assert!((2..=4).contains(&x));
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}

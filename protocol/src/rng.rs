//! SplitMix64 (Steele, Lea, Flood 2014): the one generator step behind every seeded stream in Kiln
//! (generated tasks and catalogs, split draws, the rules evolver, script RNGs, sampled choices).
//! Integer-only and fixed here, so a seed gives the same stream on every machine, Rust version and
//! dependency upgrade; each user wraps it with its own `below`/`unit` (their outputs are pinned).

/// The SplitMix64 increment (the golden ratio in 64 bits).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Advances `state` by one step and returns the next 64 random bits.
///
/// ```
/// let mut state = 0;
/// assert_eq!(kiln_protocol::rng::splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
/// assert_eq!(state, kiln_protocol::rng::GAMMA);
/// ```
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_the_published_splitmix64() {
        // First outputs for seed 0 and 1234567 (the reference C implementation's values).
        let mut state = 0;
        let first: Vec<u64> = (0..3).map(|_| splitmix64(&mut state)).collect();
        assert_eq!(
            first,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
        let mut state = 1_234_567;
        assert_eq!(splitmix64(&mut state), 6_457_827_717_110_365_317);
    }
}

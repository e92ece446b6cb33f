//! Deterministic pseudo-random input for fuzz-style tests and benches (no external RNG crate).

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Random bytes of random length up to `len_max`.
    pub fn bytes(&mut self, len_max: usize) -> Vec<u8> {
        let len = self.below(len_max + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Copies `input` with a few bytes flipped and maybe truncated: hostile but plausible input.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..=self.below(4) {
            if v.is_empty() {
                break;
            }
            let i = self.below(v.len());
            v[i] = self.next_u64() as u8;
        }
        if self.below(3) == 0 {
            v.truncate(self.below(v.len() + 1));
        }
        v
    }
}

//! Tags, branches, Call-IDs and nonces from a seed: deterministic for tests, unguessable in
//! production (the driver seeds it from the OS). Nonces are MD5 of the secret seed and a
//! counter, so seeing many of them says nothing about the next.

use md5::{Digest, Md5};

pub struct Rng {
    seed: [u8; 16],
    state: u64,
    counter: u64,
}

impl Rng {
    pub fn new(seed: [u8; 16]) -> Rng {
        let state = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) ^ 0x9E37_79B9_7F4A_7C15;
        Rng { seed, state, counter: 0 }
    }

    /// splitmix64
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 16 hex digits (tags, branches).
    pub fn hex(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// 32 hex digits that reveal nothing about the seed or other nonces.
    pub fn nonce(&mut self) -> String {
        self.keyed().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A number that, like a nonce, says nothing about the next (tags and branches, which
    /// devices see, come from splitmix64 and would).
    pub fn secret_u64(&mut self) -> u64 {
        let digest = self.keyed();
        u64::from_le_bytes(digest[..8].try_into().expect("16 bytes"))
    }

    fn keyed(&mut self) -> [u8; 16] {
        self.counter += 1;
        let mut h = Md5::new();
        h.update(self.seed);
        h.update(self.counter.to_le_bytes());
        h.finalize().into()
    }
}

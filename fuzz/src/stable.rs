//! What every stable-Rust driver (`src/bin/*_stable.rs`) shares: a small random generator, the
//! mutations applied to well-formed inputs, and the `main` (a number of seconds of generated
//! inputs, or the replay of files). A driver keeps only its input generator:
//!
//! ```ignore
//! fn main() {
//!     tbgw_fuzz::stable::run("x", tbgw_fuzz::x, |rng| rng.mix(1, 2, mutated, 300));
//! }
//! ```

use std::time::{Duration, Instant};

/// xorshift64*: fast, good enough to pick inputs, and no dependency.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0, a fixed point of xorshift, is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Random bytes, fewer than `max_len` of them.
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        (0..self.below(max_len))
            .map(|_| self.next_u64() as u8)
            .collect()
    }

    /// `generate`'s input in `k` cases out of `n`, random bytes (fewer than `max_len`) in the
    /// others: the mix of well-formed and random inputs a driver feeds.
    pub fn mix(
        &mut self,
        k: usize,
        n: usize,
        generate: impl FnOnce(&mut Self) -> Vec<u8>,
        max_len: usize,
    ) -> Vec<u8> {
        if self.below(n) < k {
            generate(self)
        } else {
            self.bytes(max_len)
        }
    }

    /// In one case out of `one_in`, cuts `v` to a random length of at least `from` bytes (the
    /// ones a driver keeps, such as a selector byte). Returns whether it cut.
    pub fn cut(&mut self, v: &mut Vec<u8>, one_in: usize, from: usize) -> bool {
        if self.below(one_in) != 0 || v.len() <= from {
            return false;
        }
        let keep = from + self.below(v.len() - from + 1);
        v.truncate(keep);
        true
    }

    /// Flips fewer than `max` random bits of `v`, past its first `from` bytes.
    pub fn flip(&mut self, v: &mut [u8], from: usize, max: usize) {
        for _ in 0..self.below(max) {
            if v.len() > from {
                let i = from + self.below(v.len() - from);
                v[i] ^= 1 << self.below(8);
            }
        }
    }
}

/// What a target returns: nothing, or the size of what it decoded (then the inputs that
/// decoded are counted, and a replay shows the size).
pub trait Outcome {
    /// Whether the outcome is a size worth reporting.
    const SIZED: bool = false;

    fn size(&self) -> usize {
        0
    }
}

impl Outcome for () {}

impl Outcome for usize {
    const SIZED: bool = true;

    fn size(&self) -> usize {
        *self
    }
}

/// The `main` of a stable driver. With a number of seconds as the first argument: `generate`d
/// inputs through `target` until the time is up, then "`name`: N inputs in S s, no failure"
/// (a failure is a panic). Otherwise every argument is a file replayed through `target`.
pub fn run<R: Outcome>(
    name: &str,
    target: fn(&[u8]) -> R,
    mut generate: impl FnMut(&mut Rng) -> Vec<u8>,
) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(secs) = args.first().and_then(|a| a.parse::<u64>().ok()) {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
        let end = Instant::now() + Duration::from_secs(secs);
        let (mut runs, mut decoded) = (0u64, 0u64);
        while Instant::now() < end {
            for _ in 0..1000 {
                if target(&generate(&mut rng)).size() > 0 {
                    decoded += 1;
                }
                runs += 1;
            }
        }
        let decoded = if R::SIZED {
            format!(" ({decoded} decoded)")
        } else {
            String::new()
        };
        println!("{name}: {runs} inputs{decoded} in {secs} s, no failure");
        return;
    }
    for path in &args {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let size = target(&data);
        if R::SIZED {
            println!("{path}: ok ({})", size.size());
        } else {
            println!("{path}: ok");
        }
    }
}

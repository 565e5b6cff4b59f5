//! Dev-only helpers shared by the crates' integration tests: where the
//! committed fixtures are, a bounded mutation fuzzer, and a progress sink
//! that records what a job reported ([`RecordingProgress`]).
//!
//! The fuzzer is deliberately small: a fixed seed, a fixed number of inputs
//! and a wall-clock budget, so every CI run tries the same inputs (a failure
//! reproduces) and never outruns its share of the CI time. Each input is a
//! valid file with a few mutations of the kinds that break parsers: bit flips,
//! overwritten bytes (length fields become huge or zero), truncation,
//! duplicated and deleted spans.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod progress;

pub use progress::{PhaseRecord, ProgressEvent, RecordingProgress};

/// `tests/fixtures` at the workspace root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A committed fixture under `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

/// The small random-weight DINOv2 every test runs (a Hugging Face folder:
/// 3 blocks, width 128, 4 registers, 224 px), made by
/// `scripts/make_vit_fixtures.py`.
pub fn test_vit_dir() -> PathBuf {
    fixture("vit/reg")
}

/// `n` deterministic values in `[-scale, scale)` from `seed` (a 64-bit
/// LCG): test weights and inputs that are the same on every machine.
pub fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A case of the hostile-input corpus, `tests/fixtures/hostile/<rel>`
/// (made by `scripts/make_hostile_fixtures.py`).
pub fn hostile(rel: &str) -> PathBuf {
    fixtures_dir().join("hostile").join(rel)
}

/// What a bounded fuzz run did, for the test's assertion and log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuzzReport {
    /// Inputs tried.
    pub inputs: usize,
    /// Inputs the parser accepted (the rest were refused with an error).
    pub accepted: usize,
}

/// Feeds `max_inputs` mutations of `seeds` (valid files) to `parse`, or as many
/// as fit in `budget`, and returns how many were tried. `parse` returns whether
/// it accepted the input; a panic inside it fails the calling test with the
/// input's index and seed (rerun with the same arguments to reproduce).
///
/// Prints `fuzz <name>: N inputs, M accepted` so CI logs carry the figure.
pub fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    seed: u64,
    max_inputs: usize,
    budget: Duration,
    mut parse: impl FnMut(&[u8]) -> bool,
) -> FuzzReport {
    assert!(!seeds.is_empty(), "fuzz {name}: no seed inputs");
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut report = FuzzReport {
        inputs: 0,
        accepted: 0,
    };
    while report.inputs < max_inputs && start.elapsed() < budget {
        let base = &seeds[report.inputs % seeds.len()];
        let input = mutate(&mut rng, base);
        let index = report.inputs;
        let accepted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input)))
            .unwrap_or_else(|_| {
                panic!(
                    "fuzz {name}: input {index} (seed {seed}, {} bytes) panicked the parser",
                    input.len()
                )
            });
        report.inputs += 1;
        report.accepted += usize::from(accepted);
    }
    println!(
        "fuzz {name}: {} inputs, {} accepted, {:.1} s",
        report.inputs,
        report.accepted,
        start.elapsed().as_secs_f64()
    );
    report
}

/// One mutated copy of `base`: 1 to 4 mutations.
pub fn mutate(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    let mut data = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if data.is_empty() {
            data.push(rng.random());
            continue;
        }
        let len = data.len();
        let at = rng.random_range(0..len);
        match rng.random_range(0..7) {
            // Bit flip.
            0 => data[at] ^= 1 << rng.random_range(0..8),
            // Random byte.
            1 => data[at] = rng.random(),
            // An interesting value over up to 8 bytes: length fields become
            // huge, zero or negative.
            2 => {
                let value: u64 = match rng.random_range(0..5) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => u32::MAX as u64,
                    3 => 1 << rng.random_range(8..63),
                    _ => rng.random(),
                };
                let width = [1, 2, 4, 8][rng.random_range(0..4)];
                for (i, b) in value.to_le_bytes()[..width].iter().enumerate() {
                    if at + i < len {
                        data[at + i] = *b;
                    }
                }
            }
            // Truncation.
            3 => data.truncate(at),
            // Delete a span.
            4 => {
                let end = (at + rng.random_range(1..=64)).min(len);
                data.drain(at..end);
            }
            // Duplicate a span.
            5 => {
                let end = (at + rng.random_range(1..=64)).min(len);
                let span = data[at..end].to_vec();
                let to = rng.random_range(0..=data.len());
                data.splice(to..to, span);
            }
            // ASCII digits, for text formats (JSON headers, CSV, TOML).
            _ => {
                let digits = rng.random_range(1..=20);
                for i in 0..digits {
                    if at + i < len {
                        data[at + i] = b'0' + rng.random_range(0..10);
                    }
                }
            }
        }
    }
    data
}

/// [`fuzz`] for PNG parsers: every second input gets its chunk CRCs repaired
/// ([`fix_png_crcs`]), so mutations reach the header and pixel checks behind
/// the checksums as well as the checksum test itself.
pub fn fuzz_png(
    name: &str,
    seeds: &[Vec<u8>],
    seed: u64,
    max_inputs: usize,
    budget: Duration,
    mut parse: impl FnMut(&[u8]) -> bool,
) -> FuzzReport {
    let mut n = 0usize;
    fuzz(name, seeds, seed, max_inputs, budget, |b| {
        n += 1;
        if n.is_multiple_of(2) {
            parse(&fix_png_crcs(b))
        } else {
            parse(b)
        }
    })
}

/// Rewrites the CRC of every PNG chunk that fits in `data`, so a mutated PNG
/// gets past the decoder's checksum test to the parsing behind it (without
/// this nearly every mutation is refused at the first CRC).
pub fn fix_png_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 8;
    while at + 8 <= out.len() {
        let len = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        let Some(end) = (at + 8)
            .checked_add(len)
            .filter(|&e| e.checked_add(4).is_some_and(|e| e <= out.len()))
        else {
            break;
        };
        let crc = crc32(&out[at + 4..end]);
        out[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
    out
}

/// CRC-32 (IEEE), as PNG chunks use it (for tests that patch a PNG).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_inputs() {
        let base = b"{\"schema\": 1, \"d\": 768}".to_vec();
        let mut a = Vec::new();
        let mut b = Vec::new();
        fuzz(
            "a",
            std::slice::from_ref(&base),
            7,
            50,
            Duration::from_secs(5),
            |x| {
                a.push(x.to_vec());
                true
            },
        );
        fuzz("b", &[base], 7, 50, Duration::from_secs(5), |x| {
            b.push(x.to_vec());
            true
        });
        assert_eq!(a, b);
        assert!(a.iter().any(|x| x.len() != 24), "mutations change lengths");
    }

    #[test]
    fn png_crcs_are_repaired() {
        // IEND's CRC is fixed: AE 42 60 82.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\0\0\0\0".to_vec();
        png = fix_png_crcs(&png);
        assert_eq!(&png[16..], [0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    #[should_panic(expected = "panicked the parser")]
    fn a_panicking_parser_fails() {
        fuzz("p", &[vec![1, 2, 3]], 1, 10, Duration::from_secs(5), |_| {
            panic!("boom")
        });
    }
}

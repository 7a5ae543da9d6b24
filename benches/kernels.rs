//! Criterion benchmarks of the CPU kernels: a windowed delta rebuild of 8 MiB with about
//! 1% of it edited, compared with a plain copy of the same bytes, and BLAKE3 over 8 MiB.
//! Inputs are deterministic (xorshift), so runs compare like with like.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fsync_repl::delta::{delta_copy, DEFAULT_WINDOW};

const LEN: usize = 8 << 20;
/// One edit per segment; 328 bytes out of 32 KiB is about 1%.
const SEGMENT: usize = 32 << 10;
const EDIT: usize = 328;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// `base` with one overwrite, insertion or deletion of `EDIT` bytes per segment.
fn edited(base: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut new = Vec::with_capacity(base.len() + base.len() / 50);
    for seg in base.chunks(SEGMENT) {
        let at = rng.next() as usize % seg.len().saturating_sub(EDIT).max(1);
        let end = (at + EDIT).min(seg.len());
        new.extend_from_slice(&seg[..at]);
        match rng.next() % 3 {
            0 => {
                new.extend_from_slice(&rng.fill(end - at));
                new.extend_from_slice(&seg[end..]);
            }
            1 => {
                new.extend_from_slice(&rng.fill(EDIT));
                new.extend_from_slice(&seg[at..]);
            }
            _ => new.extend_from_slice(&seg[end..]),
        }
    }
    new
}

fn delta(c: &mut Criterion) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let base = rng.fill(LEN);
    let new = edited(&base, &mut rng);
    let mut out = Vec::with_capacity(new.len());

    let (stats, _) = delta_copy(&base, &new, &mut out, DEFAULT_WINDOW).expect("delta_copy");
    assert_eq!(out, new, "delta_copy must rebuild the new file");
    eprintln!(
        "delta of {} bytes: {} literal, {} matched",
        new.len(),
        stats.literal,
        stats.matched
    );

    let mut group = c.benchmark_group("delta_8MiB_1pct_edits");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(new.len() as u64));
    group.bench_function("delta_copy", |b| {
        b.iter(|| {
            out.clear();
            delta_copy(black_box(&base), black_box(&new), &mut out, DEFAULT_WINDOW)
                .expect("delta_copy")
        })
    });
    group.bench_function("plain_copy", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&new));
            black_box(out.len())
        })
    });
    group.finish();
}

fn hash(c: &mut Criterion) {
    let data = XorShift(0x2545_f491_4f6c_dd1d).fill(LEN);
    let mut group = c.benchmark_group("blake3_8MiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("blake3::hash", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    group.finish();
}

criterion_group!(kernels, delta, hash);
criterion_main!(kernels);

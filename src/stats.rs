//! Percentiles for latency figures (metrics topic, `profile`).

/// The `p`-quantile (0..1) of `values` by the nearest-rank rule on a sorted
/// copy; `T::default()` when empty. NaNs sort last.
pub fn percentile<T: Copy + Default + PartialOrd>(values: &[T], p: f64) -> T {
    if values.is_empty() {
        return T::default();
    }
    let mut v = values.to_vec();
    v.sort_unstable_by(|a, b| {
        a.partial_cmp(b).unwrap_or_else(|| {
            // Only NaN is unordered: put it after every number.
            if a.partial_cmp(a).is_none() {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Less
            }
        })
    });
    v[((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(percentile::<u64>(&[], 0.5), 0);
        assert_eq!(percentile(&[5u64, 1, 3], 0.5), 3);
        assert_eq!(percentile(&[5u64, 1, 3], 0.99), 5);
        assert_eq!(percentile(&[2.0f64, f64::NAN, 1.0], 0.0), 1.0);
        assert_eq!(percentile(&[2.0f64, f64::NAN, 1.0], 0.5), 2.0);
    }
}

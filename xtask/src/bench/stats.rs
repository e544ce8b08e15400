//! Summaries of the raw samples. Pure: unit-tested below.

/// Median and interquartile range of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub count: usize,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            median: quantile(&sorted, 0.5),
            p25: quantile(&sorted, 0.25),
            p75: quantile(&sorted, 0.75),
            count: sorted.len(),
        })
    }

    /// Half the interquartile range, as a percentage of the median: the table's spread.
    pub fn spread_percent(&self) -> f64 {
        if self.median == 0.0 { 0.0 } else { (self.p75 - self.p25) / 2.0 / self.median * 100.0 }
    }
}

/// Linear interpolation between the closest ranks of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// (traced - untraced) / (reference - untraced): how many times the reference's added
/// cost a tracer adds. None when the reference adds nothing measurable (a ratio over
/// noise means nothing).
pub fn added_cost_ratio(traced: f64, reference: f64, untraced: f64) -> Option<f64> {
    let reference_added = reference - untraced;
    if reference_added <= untraced * 0.005 {
        return None;
    }
    Some((traced - untraced) / reference_added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles_interpolate() {
        let summary = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(summary.median, 2.5);
        assert_eq!(summary.p25, 1.75);
        assert_eq!(summary.p75, 3.25);
        assert_eq!(summary.count, 4);
        assert!((summary.spread_percent() - 30.0).abs() < 1e-9);
        assert_eq!(Summary::of(&[7.0]).unwrap().median, 7.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratio_of_added_costs() {
        assert_eq!(added_cost_ratio(1300.0, 1200.0, 1000.0), Some(1.5));
        assert_eq!(added_cost_ratio(1000.0, 1200.0, 1000.0), Some(0.0));
        assert_eq!(added_cost_ratio(1300.0, 1001.0, 1000.0), None, "floor within noise");
    }
}

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
        if self.median == 0.0 { 0.0 } else { self.half_iqr() / self.median * 100.0 }
    }

    /// Half the interquartile range, in the samples' unit.
    pub fn half_iqr(&self) -> f64 {
        (self.p75 - self.p25) / 2.0
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

/// A figure computed from medians, with the range their spreads allow: each median may
/// be off by half its interquartile range, and the range takes the worst case on each
/// side. A target is decided only when all of the range is on one side of its limit:
/// on a noisy machine a ratio of two small differences can land anywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// A figure without noise (a count, a size).
    pub fn exact(value: f64) -> Self {
        Estimate { value, low: value, high: value }
    }

    /// `added_cost_ratio` with its range; `Err` names why there is no ratio: the reference's
    /// added cost is not larger than the spreads of its two medians (nor than 0.5 % of the
    /// untraced one).
    pub fn added_cost_ratio(
        traced: &Summary,
        reference: &Summary,
        untraced: &Summary,
    ) -> Result<Self, String> {
        let value = added_cost_ratio(traced.median, reference.median, untraced.median)
            .ok_or("adds less than 0.5 % here (a ratio over noise means nothing)")?;
        let (added, added_noise) = difference(traced, untraced);
        let (reference_added, reference_noise) = difference(reference, untraced);
        if reference_added - reference_noise <= 0.0 {
            return Err(format!(
                "adds {reference_added:.0} ns here, within the ±{reference_noise:.0} ns its two medians' spreads \
                 allow (a ratio over noise means nothing)"
            ));
        }
        Ok(Estimate {
            value,
            low: (added - added_noise) / (reference_added + reference_noise),
            high: (added + added_noise) / (reference_added - reference_noise),
        })
    }

    /// (traced - untraced) in % of untraced, with its range.
    pub fn added_percent(traced: &Summary, untraced: &Summary) -> Self {
        let (added, noise) = difference(traced, untraced);
        let percent = |ns: f64| ns / untraced.median * 100.0;
        Estimate { value: percent(added), low: percent(added - noise), high: percent(added + noise) }
    }
}

/// a - b and how far the spreads of the two medians may move it.
fn difference(a: &Summary, b: &Summary) -> (f64, f64) {
    (a.median - b.median, a.half_iqr() + b.half_iqr())
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

    fn around(median: f64, half_iqr: f64) -> Summary {
        Summary { median, p25: median - half_iqr, p75: median + half_iqr, count: 8 }
    }

    #[test]
    fn estimates_carry_the_spreads_of_their_medians() {
        let untraced = around(1000.0, 10.0);
        // Added 300 ± 30 over a reference's 200 ± 20.
        let ratio =
            Estimate::added_cost_ratio(&around(1300.0, 20.0), &around(1200.0, 10.0), &untraced).unwrap();
        assert_eq!(ratio.value, 1.5);
        assert!((ratio.low - 270.0 / 220.0).abs() < 1e-9 && (ratio.high - 330.0 / 180.0).abs() < 1e-9);
        // The reference's 30 ns are inside its medians' 40 ns of spread.
        let noise = Estimate::added_cost_ratio(&around(1300.0, 0.0), &around(1030.0, 30.0), &untraced);
        assert!(noise.unwrap_err().contains("within the ±40 ns"), "reference within noise");
        let percent = Estimate::added_percent(&around(1100.0, 10.0), &untraced);
        assert_eq!((percent.value, percent.low, percent.high), (10.0, 8.0, 12.0));
        assert_eq!(Estimate::exact(3.0), Estimate { value: 3.0, low: 3.0, high: 3.0 });
    }

    #[test]
    fn ratio_of_added_costs() {
        assert_eq!(added_cost_ratio(1300.0, 1200.0, 1000.0), Some(1.5));
        assert_eq!(added_cost_ratio(1000.0, 1200.0, 1000.0), Some(0.0));
        assert_eq!(added_cost_ratio(1300.0, 1001.0, 1000.0), None, "floor within noise");
    }
}

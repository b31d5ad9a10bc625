//! `simulated` source: a seeded multi-axis vibration sensor.
//!
//! A healthy machine hums at a low frequency; a failing bearing adds a
//! high-frequency rattle and periodic impacts. The values depend only on the
//! seed and the sample index, so a run is reproducible on any board.

use std::f64::consts::PI;

use serde::Deserialize;

use super::{now_ms, Pacer, Sample, Source, SourceError};
use crate::rng::Rng;

/// Which signal the simulated sensor produces.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SimMode {
    /// A healthy machine: a low-frequency hum with a little noise.
    Normal,
    /// A failing bearing: the hum plus high-frequency rattle and impacts.
    Fault,
    /// Normal and fault in turn.
    #[default]
    Alternate,
}

/// `[source] kind = "simulated"`: a seeded generator of a multi-channel
/// vibration signal.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Samples per second.
    #[serde(default = "default_rate")]
    pub rate_hz: f64,
    /// Number of channels (axes).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// `normal`, `fault`, or `alternate` (switching every `switch_every_s`).
    #[serde(default)]
    pub mode: SimMode,
    /// Seconds of simulated time per mode when `mode = "alternate"`.
    #[serde(default = "default_switch")]
    pub switch_every_s: f64,
    /// Seed: the same seed gives the same stream on every machine.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Pace samples in real time; `false` generates as fast as possible.
    #[serde(default = "default_true")]
    pub realtime: bool,
}

fn default_rate() -> f64 {
    100.0
}
fn default_channels() -> usize {
    3
}
fn default_switch() -> f64 {
    5.0
}
fn default_seed() -> u64 {
    42
}
fn default_true() -> bool {
    true
}

impl SimulatedConfig {
    /// Checks `[source]` of this kind.
    pub fn validate(&self, p: &mut crate::problem::Problems) {
        p.positive(self.rate_hz, "source.rate_hz", "samples per second");
        p.check(self.channels > 0, "source.channels", || {
            "expected at least 1 channel, found 0".into()
        });
        p.positive(self.switch_every_s, "source.switch_every_s", "seconds");
    }

    /// The source this config describes.
    pub fn open(&self) -> SimulatedSource {
        SimulatedSource::new(
            self.rate_hz,
            self.channels,
            self.mode,
            self.switch_every_s,
            self.seed,
            self.realtime,
        )
    }
}

/// The generator.
#[derive(Debug)]
pub struct SimulatedSource {
    rate_hz: f64,
    channels: usize,
    mode: SimMode,
    switch_every_s: f64,
    rng: Rng,
    pacer: Option<Pacer>,
    start_ms: u64,
    index: u64,
}

impl SimulatedSource {
    /// A sensor of `channels` axes sampled at `rate_hz`. With `realtime`
    /// false, samples come as fast as they are asked for, with timestamps
    /// still spaced at `rate_hz`.
    pub fn new(
        rate_hz: f64,
        channels: usize,
        mode: SimMode,
        switch_every_s: f64,
        seed: u64,
        realtime: bool,
    ) -> Self {
        SimulatedSource {
            rate_hz,
            channels,
            mode,
            switch_every_s,
            rng: Rng::new(seed),
            pacer: realtime.then(|| Pacer::new(rate_hz)),
            start_ms: now_ms(),
            index: 0,
        }
    }

    /// Whether sample `index` is drawn in fault mode.
    pub fn is_fault(&self, index: u64) -> bool {
        match self.mode {
            SimMode::Normal => false,
            SimMode::Fault => true,
            SimMode::Alternate => {
                let t = index as f64 / self.rate_hz;
                (t / self.switch_every_s) as u64 % 2 == 1
            }
        }
    }

    fn value(&mut self, channel: usize, t: f64, fault: bool) -> f32 {
        let c = channel as f64;
        let hum = (1.0 - 0.2 * c) * (2.0 * PI * (5.0 + c) * t + c).sin();
        let mut v = hum + 0.05 * self.rng.normal();
        if fault {
            let rattle = 0.5 * (2.0 * PI * (35.0 + c) * t).sin();
            // An impact every 0.2 s, ringing down over about 20 ms.
            let since_impact = t % 0.2;
            let impact = 1.5 * (-since_impact / 0.02).exp();
            v += rattle + impact + 0.05 * self.rng.normal();
        }
        v as f32
    }
}

impl Source for SimulatedSource {
    fn next_sample(&mut self) -> Result<Option<Sample>, SourceError> {
        if let Some(p) = &self.pacer {
            p.wait_for(self.index);
        }
        let i = self.index;
        self.index += 1;
        let t = i as f64 / self.rate_hz;
        let fault = self.is_fault(i);
        let values = (0..self.channels)
            .map(|c| self.value(c, t, fault))
            .collect();
        Ok(Some(Sample::new(
            self.start_ms + (t * 1000.0) as u64,
            values,
        )))
    }

    fn channels(&self) -> Option<usize> {
        Some(self.channels)
    }

    fn paced(&self) -> bool {
        self.pacer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(mode: SimMode, seed: u64, n: usize) -> Vec<Vec<f32>> {
        let mut s = SimulatedSource::new(100.0, 3, mode, 1.0, seed, false);
        (0..n)
            .map(|_| s.next_sample().unwrap().unwrap().values)
            .collect()
    }

    fn mean_abs_diff(xs: &[Vec<f32>]) -> f32 {
        let d: f32 = xs.windows(2).map(|w| (w[1][0] - w[0][0]).abs()).sum();
        d / (xs.len() - 1) as f32
    }

    #[test]
    fn seeded_and_reproducible() {
        assert_eq!(take(SimMode::Normal, 3, 50), take(SimMode::Normal, 3, 50));
        assert_ne!(take(SimMode::Normal, 3, 50), take(SimMode::Normal, 4, 50));
    }

    #[test]
    fn fault_mode_has_more_high_frequency_energy() {
        let normal = mean_abs_diff(&take(SimMode::Normal, 1, 500));
        let fault = mean_abs_diff(&take(SimMode::Fault, 1, 500));
        assert!(fault > 2.0 * normal, "normal {normal} fault {fault}");
    }

    #[test]
    fn alternate_switches_on_schedule() {
        let s = SimulatedSource::new(100.0, 1, SimMode::Alternate, 1.0, 0, false);
        assert!(!s.is_fault(0));
        assert!(!s.is_fault(99));
        assert!(s.is_fault(100));
        assert!(!s.is_fault(200));
    }
}

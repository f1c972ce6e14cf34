//! Restart backoff (pure): kubelet's exponential backoff per container.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The backoff of one container (by name) in one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The delay given last time (`None`: no failure yet, or reset).
    last: Option<Duration>,
}

impl Backoff {
    /// The delay before the next restart, after an instance that ran for `ran_for`: the initial
    /// delay, doubled for every quick failure in a row, capped at `max`; a container that ran
    /// at least `reset_after` starts over.
    pub fn next(&mut self, cfg: &BackoffConfig, ran_for: Duration) -> Duration {
        let d = match self.last {
            Some(prev) if ran_for < cfg.reset_after => (prev * 2).min(cfg.max),
            _ => cfg.initial.min(cfg.max),
        };
        self.last = Some(d);
        d
    }

    pub fn current(&self) -> Option<Duration> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_cap_and_resets_after_long_run() {
        let cfg = BackoffConfig::default();
        let mut b = Backoff::default();
        let quick = Duration::from_secs(1);
        let got: Vec<u64> = (0..8).map(|_| b.next(&cfg, quick).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.next(&cfg, Duration::from_secs(600)).as_secs(), 1);
        assert_eq!(b.next(&cfg, quick).as_secs(), 2);
    }

    #[test]
    fn kubernetes_values() {
        let cfg = BackoffConfig::kubernetes();
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..7)
            .map(|_| b.next(&cfg, Duration::ZERO).as_secs())
            .collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 300, 300]);
    }
}

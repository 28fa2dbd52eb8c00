//! Exponential backoff with jitter, for every reconnect loop: the connector supervisor, the
//! ThingsBoard client and the connectors' own reconnects.
//!
//! The base delay starts at `min` and is multiplied by `factor` (2 by default) after each
//! wait, up to `max`. Each wait adds a random jitter of up to `jitter` × the base delay
//! (30 % by default), so many gateways or connections that lost their peer at the same time
//! do not come back in lock step: a wait lies in `[base, base × (1 + jitter)]`.
//!
//! A connection that stays up is *healthy*: call [`Backoff::succeeded`] when it comes up; if
//! it then lasts at least the healthy period (60 s by default) before it fails, the next wait
//! starts from `min` again, while a peer that accepts and drops at once keeps the delay
//! growing. [`Backoff::reset`] starts from `min` at once.
//!
//! ```
//! use std::time::Duration;
//! use tbgw::backoff::Backoff;
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.0);
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! assert_eq!(b.next_delay(), Duration::from_millis(200));
//! assert_eq!(b.next_delay(), Duration::from_millis(400));
//! assert_eq!(b.next_delay(), Duration::from_millis(800));
//! assert_eq!(b.next_delay(), Duration::from_secs(1));
//! b.reset();
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! ```

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Exponential backoff state of one reconnect loop. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    healthy: Duration,
    /// The base delay of the next wait.
    current: Duration,
    /// Waits since the last reset.
    attempts: u32,
    /// When the connection last came up ([`Backoff::succeeded`]).
    up_since: Option<Instant>,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`, 30 % jitter, healthy after 60 s. A `max` below
    /// `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            factor: 2.0,
            jitter: 0.3,
            healthy: Duration::from_secs(60),
            current: min,
            attempts: 0,
            up_since: None,
        }
    }

    /// The multiplier applied to the base delay after each wait (values below 1, and NaN,
    /// count as 1: a constant delay).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor >= 1.0 { factor } else { 1.0 };
        self
    }

    /// The largest random part of a wait, as a fraction of its base delay (clamped to 0..=1;
    /// 0 turns jitter off).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// How long a connection must stay up ([`Backoff::succeeded`]) for the next failure to
    /// start from `min` again.
    pub fn with_healthy_after(mut self, healthy: Duration) -> Self {
        self.healthy = healthy;
        self
    }

    /// The connection is up. If it lasts the healthy period, the next [`Backoff::next_delay`]
    /// starts from `min` again.
    pub fn succeeded(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// Starts from `min` again at once.
    pub fn reset(&mut self) {
        self.current = self.min;
        self.attempts = 0;
        self.up_since = None;
    }

    /// Waits handed out since the last reset (by [`Backoff::next_delay`]).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt (base delay plus jitter); advances the base delay.
    pub fn next_delay(&mut self) -> Duration {
        if let Some(up) = self.up_since.take() {
            if up.elapsed() >= self.healthy {
                self.reset();
            }
        }
        let base = self.current.clamp(self.min, self.max);
        self.attempts = self.attempts.saturating_add(1);
        let next = base.as_secs_f64() * self.factor;
        self.current = if next.is_finite() && next < self.max.as_secs_f64() {
            Duration::from_secs_f64(next)
        } else {
            self.max
        };
        if self.jitter > 0.0 {
            base + base.mul_f64(fastrand::f64() * self.jitter)
        } else {
            base
        }
    }

    /// Sleeps for [`Backoff::next_delay`]; returns `false` at once when `cancel` fires first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_jitter_stays_within_its_fraction() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut bases = Vec::new();
        for _ in 0..6 {
            let d = b.next_delay();
            // Recover the base: the jittered delay lies in [base, 1.3 × base].
            let base = [1u64, 2, 4, 8]
                .into_iter()
                .map(Duration::from_secs)
                .find(|base| d >= *base && d <= base.mul_f64(1.3))
                .expect("delay within a base's jitter window");
            bases.push(base.as_secs());
        }
        assert_eq!(bases, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.attempts(), 6);
    }

    #[test]
    fn a_factor_keeps_its_meaning_and_bad_parameters_are_tamed() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
            .with_factor(3.0)
            .with_jitter(0.0);
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 300, 900, 2700]);
        let mut c = Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
            .with_factor(f64::NAN)
            .with_jitter(f64::NAN);
        assert_eq!(c.next_delay(), c.next_delay());
        let mut huge = Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
            .with_factor(1e300)
            .with_jitter(0.0);
        huge.next_delay();
        assert_eq!(huge.next_delay(), Duration::from_secs(60));
        let mut zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_connection_starts_from_the_minimum_and_a_short_one_does_not() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
            .with_jitter(0.0)
            .with_healthy_after(Duration::from_secs(60));
        b.next_delay();
        b.next_delay();
        b.succeeded();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.next_delay(), Duration::from_secs(4), "up only 5 s");
        b.succeeded();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(b.next_delay(), Duration::from_secs(1), "up 61 s: healthy");
        assert_eq!(b.attempts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_false_when_cancelled() {
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!b.wait(&cancel).await);
        assert!(b.wait(&CancellationToken::new()).await);
    }
}

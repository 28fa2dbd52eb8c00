//! Client-side rate limits (`messagesRateLimits`, `rateLimits`, `dpRateLimits`,
//! `deviceMessagesRateLimits`, `deviceRateLimits`, `deviceDpRateLimits`) and the ones ThingsBoard
//! announces in its session limits.
//!
//! A limit string is `"<count>:<seconds>,<count>:<seconds>,…"` (`;` also separates); empty or
//! `0:0` means unlimited; `DEFAULT_*_RATE_LIMIT` resolves by host as upstream (ThingsBoard Cloud
//! and demo hosts: `10:1,60:60` messages, `10:1,300:60` datapoints; others: unlimited). Every
//! capacity is scaled to 80 %, as upstream.
//!
//! Each window is a token bucket that refills continuously and may go into debt: a publish
//! goes out when every bucket of its kind has a token left and then takes what it costs, so a
//! publish larger than a whole window still goes out (alone) and the next one waits until the
//! debt is paid. Throttling never drops data: device data waits in storage (reads are gated,
//! and under a datapoint limit a read takes as many records as fit the smallest datapoint
//! window, judged by the most datapoints per record of the previous batch; the first read
//! takes one record); control messages (connects, RPC replies) are counted but never held
//! back. A disconnect with reason 150 or a PUBACK "quota exceeded" empties the device buckets
//! (pausing device data for about a window); the rejected publish is sent again after the
//! reconnect, as nothing is acknowledged to storage without its PUBACK.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// Share of every configured or announced capacity that is used (upstream's default).
const SHARE: f64 = 0.8;

/// One window: `capacity` tokens per `window`.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(count: u64, secs: u64, now: Instant) -> Bucket {
        let capacity = ((count as f64) * SHARE).floor().max(1.0);
        Bucket {
            capacity,
            per_sec: capacity / secs as f64,
            tokens: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.at = now;
    }

    /// How long until a token is available.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            // A window of up to `u64::MAX` seconds (from the config or the server's session
            // limits) can ask for more than a `Duration` holds: wait "forever" then.
            Duration::try_from_secs_f64((1.0 - self.tokens) / self.per_sec).unwrap_or(Duration::MAX)
        }
    }
}

/// A parsed limit: all its windows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limit {
    buckets: Vec<Bucket>,
}

/// Why a limit string is invalid.
fn bad(s: &str) -> String {
    format!("`{s}` is not a rate limit; expected `<count>:<seconds>` pairs separated by `,` (e.g. `10:1,300:60`)")
}

/// Parses a limit string (after `DEFAULT_*` resolution); `Ok(None)` is unlimited.
pub(crate) fn parse(s: &str, now: Instant) -> Result<Limit, String> {
    let mut buckets = Vec::new();
    for part in s.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
        let (c, w) = part.split_once(':').ok_or_else(|| bad(s))?;
        let c: u64 = c.trim().parse().map_err(|_| bad(s))?;
        let w: u64 = w.trim().parse().map_err(|_| bad(s))?;
        if c == 0 || w == 0 {
            continue;
        }
        buckets.push(Bucket::new(c, w, now));
    }
    Ok(Limit { buckets })
}

/// Resolves upstream's `DEFAULT_*` names for `host`.
pub(crate) fn resolve_default(value: &str, host: &str) -> String {
    let cloud = host == "thingsboard.cloud"
        || host == "demo.thingsboard.io"
        || (host.contains("tb") && host.contains("cloud"));
    match value.trim() {
        "DEFAULT_TELEMETRY_RATE_LIMIT" | "DEFAULT_MESSAGES_RATE_LIMIT" | "DEFAULT_RATE_LIMIT" => {
            if cloud {
                "10:1,60:60".into()
            } else {
                String::new()
            }
        }
        "DEFAULT_TELEMETRY_DP_RATE_LIMIT" => {
            if cloud {
                "10:1,300:60".into()
            } else {
                String::new()
            }
        }
        other => other.to_string(),
    }
}

/// Checks a configured limit string; the error names `thingsboard.<key>`.
pub fn validate(file: &std::path::Path, key: &str, value: &str) -> Result<(), ConfigError> {
    parse(&resolve_default(value, "localhost"), Instant::now())
        .map(|_| ())
        .map_err(|e| ConfigError::new(file, format!("thingsboard.{key}"), e))
}

impl Limit {
    fn is_unlimited(&self) -> bool {
        self.buckets.is_empty()
    }

    fn wait(&mut self, now: Instant) -> Duration {
        self.buckets
            .iter_mut()
            .map(|b| b.wait(now))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn take(&mut self, n: f64, now: Instant) {
        for b in &mut self.buckets {
            b.refill(now);
            b.tokens -= n;
        }
    }

    fn drain(&mut self, now: Instant) {
        for b in &mut self.buckets {
            b.refill(now);
            b.tokens = b.tokens.min(0.0);
        }
    }

    /// The smallest window capacity (most that one publish should carry).
    fn smallest(&self) -> Option<usize> {
        self.buckets.iter().map(|b| b.capacity as usize).min()
    }
}

/// The limits the client applies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    /// Devices' telemetry and attribute messages.
    pub device_telemetry: Limit,
    /// Devices' datapoints.
    pub device_datapoints: Limit,
    /// Devices' other gateway-API messages (connect, disconnect, RPC replies, requests).
    pub device_messages: Limit,
    /// The gateway device's own messages (statistics, logs, attributes).
    pub own_messages: Limit,
}

/// The six configured strings (`None`: unlimited).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitStrings {
    /// `messagesRateLimits`.
    pub messages: Option<String>,
    /// `rateLimits`.
    pub telemetry: Option<String>,
    /// `dpRateLimits`.
    pub datapoints: Option<String>,
    /// `deviceMessagesRateLimits`.
    pub device_messages: Option<String>,
    /// `deviceRateLimits`.
    pub device_telemetry: Option<String>,
    /// `deviceDpRateLimits`.
    pub device_datapoints: Option<String>,
}

fn lim(s: &Option<String>, host: &str, now: Instant) -> Limit {
    s.as_deref()
        .map(|v| parse(&resolve_default(v, host), now).unwrap_or_default())
        .unwrap_or_default()
}

impl Limits {
    /// From the configuration (validated at load; an invalid string here is unlimited).
    pub(crate) fn from_config(c: &LimitStrings, host: &str) -> Limits {
        let now = Instant::now();
        let mut own = lim(&c.messages, host, now);
        own.buckets.extend(lim(&c.telemetry, host, now).buckets);
        Limits {
            device_telemetry: lim(&c.device_telemetry, host, now),
            device_datapoints: lim(&c.device_datapoints, host, now),
            device_messages: lim(&c.device_messages, host, now),
            own_messages: own,
        }
    }

    /// Applies `getSessionLimits`' `rateLimits` (the gateway device) and `gatewayRateLimits`
    /// (devices behind it): `{messages, telemetryMessages, telemetryDataPoints}`.
    pub(crate) fn apply_session(&mut self, answer: &serde_json::Value) {
        let now = Instant::now();
        let get = |section: &str, key: &str| -> Option<Limit> {
            let s = answer.get(section)?.get(key)?.as_str()?;
            parse(s, now).ok()
        };
        if let Some(l) = get("gatewayRateLimits", "telemetryMessages") {
            self.device_telemetry = l;
        }
        if let Some(l) = get("gatewayRateLimits", "telemetryDataPoints") {
            self.device_datapoints = l;
        }
        if let Some(l) = get("gatewayRateLimits", "messages") {
            self.device_messages = l;
        }
        if let Some(mut l) = get("rateLimits", "messages") {
            if let Some(t) = get("rateLimits", "telemetryMessages") {
                l.buckets.extend(t.buckets);
            }
            self.own_messages = l;
        }
    }

    /// How long device data must wait before the next publish (zero: go).
    pub(crate) fn data_wait(&mut self, now: Instant) -> Duration {
        self.device_telemetry
            .wait(now)
            .max(self.device_datapoints.wait(now))
    }

    /// Most records to read for one batch so that its datapoints fit the smallest window
    /// (`None`: no datapoint limit).
    pub(crate) fn max_batch(&self) -> Option<usize> {
        self.device_datapoints.smallest()
    }

    /// Device data went out: `messages` publishes carrying `datapoints`.
    pub(crate) fn took_data(&mut self, messages: usize, datapoints: usize, now: Instant) {
        self.device_telemetry.take(messages as f64, now);
        self.device_datapoints.take(datapoints as f64, now);
    }

    /// A control message went out (never held back, but counted).
    pub(crate) fn took_control(&mut self, now: Instant) {
        self.device_messages.take(1.0, now);
    }

    /// A gateway-device message went out.
    pub(crate) fn took_own(&mut self, now: Instant) {
        self.own_messages.take(1.0, now);
    }

    /// ThingsBoard said the limit was hit (disconnect reason 150, PUBACK quota exceeded):
    /// pause device data until the windows refill.
    pub(crate) fn server_throttled(&mut self, now: Instant) {
        self.device_telemetry.drain(now);
        self.device_datapoints.drain(now);
        if self.device_telemetry.is_unlimited() && self.device_datapoints.is_unlimited() {
            // No limit known: back off one second.
            self.device_telemetry = parse("1:1", now).unwrap_or_default();
            self.device_telemetry.drain(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_parse_scale_to_80_percent_and_reject_garbage() {
        let now = Instant::now();
        let l = parse("10:1,300:60", now).expect("valid");
        assert_eq!(l.buckets.len(), 2);
        assert_eq!(l.buckets[0].capacity, 8.0);
        assert_eq!(l.buckets[1].capacity, 240.0);
        assert!(parse("0:0,", now).expect("unlimited").is_unlimited());
        assert!(parse("", now).expect("unlimited").is_unlimited());
        assert_eq!(parse("5:1;20:10", now).expect("`;`").buckets.len(), 2);
        for b in ["10", "a:1", "10:x", "10:1,oops"] {
            assert!(parse(b, now).is_err(), "{b}");
        }
        assert_eq!(
            resolve_default("DEFAULT_TELEMETRY_DP_RATE_LIMIT", "thingsboard.cloud"),
            "10:1,300:60"
        );
        assert_eq!(
            resolve_default("DEFAULT_MESSAGES_RATE_LIMIT", "mytb.cloud"),
            "10:1,60:60"
        );
        assert_eq!(
            resolve_default("DEFAULT_MESSAGES_RATE_LIMIT", "10.0.0.5"),
            ""
        );
        let e = validate(
            std::path::Path::new("tb_gateway.json"),
            "rateLimits",
            "ten:1",
        )
        .expect_err("invalid");
        assert!(e.to_string().contains("thingsboard.rateLimits"), "{e}");
    }

    #[test]
    fn buckets_refill_over_time_and_debt_delays_the_next_publish() {
        let t0 = Instant::now();
        let mut l = Limits::default();
        l.apply_session(&serde_json::json!({"gatewayRateLimits": {
            "telemetryMessages": "10:1", "telemetryDataPoints": "100:1"}}));
        assert_eq!(l.max_batch(), Some(80));
        assert_eq!(l.data_wait(t0), Duration::ZERO);
        // One publish of 160 datapoints, twice the window (80): it goes out, and the 80 of
        // debt take a second (80/s) to pay before the next one.
        l.took_data(1, 160, t0);
        let w = l.data_wait(t0);
        assert!(
            w > Duration::from_millis(1000) && w < Duration::from_millis(1100),
            "{w:?}"
        );
        assert_eq!(
            l.data_wait(t0 + Duration::from_millis(1100)),
            Duration::ZERO
        );
        // Server throttling pauses even an unlimited client.
        let mut u = Limits::default();
        u.server_throttled(t0);
        assert!(u.data_wait(t0) > Duration::ZERO);
        assert_eq!(u.data_wait(t0 + Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn a_window_longer_than_a_duration_holds_waits_without_panicking() {
        let t0 = Instant::now();
        let mut l = Limits::default();
        l.apply_session(&serde_json::json!({"gatewayRateLimits": {
            "telemetryMessages": "1:18446744073709551615"}}));
        l.took_data(1, 1, t0);
        l.took_data(1, 1, t0);
        assert_eq!(l.data_wait(t0), Duration::MAX);
    }
}

//! MQTT topic filters: matching a topic name against `+`, `#` and shared subscriptions.

/// The filter part of a shared subscription (`$share/<group>/<filter>`), or the filter itself.
pub fn strip_share(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

/// True when `topic` matches `filter` (MQTT rules: `+` one level, `#` the rest; topics starting
/// with `$` are not matched by a leading wildcard).
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = strip_share(filter);
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_the_mqtt_spec() {
        assert!(matches("sensor/+/data", "sensor/a/data"));
        assert!(!matches("sensor/+/data", "sensor/a/b/data"));
        assert!(matches("sensor/#", "sensor"));
        assert!(matches("sensor/#", "sensor/a/b"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("data/", "data/"));
        assert!(!matches("data/", "data"));
        assert!(matches("$share/g1/sensor/+", "sensor/x"));
        assert!(matches("$aws/things/x", "$aws/things/x"));
    }
}

//! MQTT topic filters: whether a topic name matches a filter with `+` and `#` wildcards, and
//! the filter part of a shared subscription. Used by the MQTT connector, the demo broker and
//! the ThingsBoard stand-in of the tests, so every part of tbgw matches topics the same way.

/// The filter part of a shared subscription (`$share/<group>/<filter>`), or the filter itself.
///
/// ```
/// assert_eq!(tbgw::topic::strip_share("$share/g1/sensor/+"), "sensor/+");
/// assert_eq!(tbgw::topic::strip_share("sensor/+"), "sensor/+");
/// ```
pub fn strip_share(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

/// True when `topic` matches `filter` under the MQTT rules: `+` matches one level, `#` the
/// rest (including the parent level: `a/#` matches `a`), and a filter starting with a
/// wildcard does not match a topic starting with `$`. A shared subscription
/// (`$share/<group>/<filter>`) is matched on its filter part; an exact topic is a filter that
/// matches only itself.
///
/// ```
/// use tbgw::topic::matches;
/// assert!(matches("sensor/+/data", "sensor/a/data"));
/// assert!(matches("sensor/#", "sensor"));
/// assert!(!matches("#", "$SYS/uptime"));
/// ```
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
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("sensor/+/data", "sensor/a/data"));
        assert!(!matches("sensor/+/data", "sensor/a/b/data"));
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+/+", "/a"));
        assert!(matches("a/+", "a/"));
        assert!(matches("sensor/#", "sensor"));
        assert!(matches("sensor/#", "sensor/a/b"));
        assert!(matches("#", "a/b"));
        assert!(matches("data/", "data/"));
        assert!(!matches("data/", "data"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_a_leading_wildcard() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$aws/things/x", "$aws/things/x"));
    }

    #[test]
    fn shared_subscriptions_match_on_their_filter() {
        assert_eq!(strip_share("$share/g1/sensor/+"), "sensor/+");
        assert_eq!(strip_share("$share/g1"), "g1");
        assert_eq!(strip_share("$sharex/a"), "$sharex/a");
        assert!(matches("$share/g1/sensor/+", "sensor/x"));
        assert!(!matches("$share/g1/sensor/+", "other/x"));
    }
}

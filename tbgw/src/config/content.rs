//! [`ConnectorConfig`]: the content of a connector file as a factory receives it.
//!
//! A connector file read from disk is kept as its JSON text and deserialized by the factory
//! straight into its typed configuration. No `serde_json::Value` tree of the whole file is
//! built on the way: for a Modbus file with 15,000 datapoints that tree alone took 11 MB of
//! heap (about 0.6 KB per datapoint object), more than everything the running gateway keeps.
//! Configurations given as a tree (remote configuration, YAML files, tests, embedding
//! applications) are kept as that tree; factories read both the same way.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{parse, ConfigError};

/// Keys every connector file may carry that the gateway handles, removed from what a
/// connector sees (see [`super::connector_spec`]).
pub(super) const STRIPPED_KEYS: &[&str] = &[
    "name",
    "id",
    "configVersion",
    "enableRemoteLogging",
    "logLevel",
];

/// The content of a connector's own configuration file, without the keys every connector file
/// may carry (`name`, `id`, `configVersion`, `logLevel`, `enableRemoteLogging`), which the
/// gateway handles.
///
/// Read it with [`deserialize`](Self::deserialize) into the connector's own serde types (errors
/// then name the file and the key path, unused keys are reported); [`value`](Self::value)
/// gives the JSON tree for code that wants one. Build one from a tree with `From<Value>`
/// (`json!({...}).into()`).
///
/// ```
/// use tbgw::config::ConnectorConfig;
///
/// #[derive(serde::Deserialize)]
/// struct Mine { host: String }
///
/// let config: ConnectorConfig = serde_json::json!({"host": "10.0.0.5", "extra": 1}).into();
/// let mut ignored = Vec::new();
/// let mine: Mine = config.deserialize("line.json".as_ref(), &mut ignored).unwrap();
/// assert_eq!(mine.host, "10.0.0.5");
/// assert_eq!(ignored, ["extra"]);
/// ```
#[derive(Clone)]
pub struct ConnectorConfig(Repr);

#[derive(Clone)]
enum Repr {
    /// A JSON tree, common keys already removed.
    Tree(Value),
    /// A connector file's JSON text, known to be one well-formed JSON object (checked by
    /// [`ConnectorConfig::from_json_text`]); common keys are skipped when it is read.
    Text(Arc<str>),
}

impl ConnectorConfig {
    /// Keeps a connector file's JSON text. Fails when the text is not well-formed JSON or not
    /// one JSON object (serde_json's error: a syntax error carries its line and column).
    pub fn from_json_text(text: impl Into<Arc<str>>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        pick_top_level(&text, &[])?;
        Ok(ConnectorConfig(Repr::Text(text)))
    }

    /// The content as a JSON tree: borrowed when the configuration is a tree, built from the
    /// text otherwise (a large file's tree is large: read typed configuration with
    /// [`deserialize`](Self::deserialize) instead).
    pub fn value(&self) -> Cow<'_, Value> {
        match &self.0 {
            Repr::Tree(v) => Cow::Borrowed(v),
            Repr::Text(text) => {
                // Invariant: `from_json_text` checked that the text is one JSON object.
                let mut v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                if let Some(obj) = v.as_object_mut() {
                    strip_common_keys(obj);
                }
                Cow::Owned(v)
            }
        }
    }

    /// Deserializes the whole content into `T`. On failure the error names `file`, the key path
    /// and serde's reason; keys of the content that `T` does not use are appended to `ignored`
    /// as key paths (`mapping[0].converter.extra`).
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        file: &Path,
        ignored: &mut Vec<String>,
    ) -> Result<T, ConfigError> {
        self.deserialize_seed(file, PhantomData::<T>, ignored)
    }

    /// [`deserialize`](Self::deserialize) with a serde [`DeserializeSeed`]: for a connector
    /// that reads a long list one entry at a time (validating and dropping each before the
    /// next is read) instead of holding all of it in typed form.
    pub fn deserialize_seed<S, V>(
        &self,
        file: &Path,
        seed: S,
        ignored: &mut Vec<String>,
    ) -> Result<V, ConfigError>
    where
        S: for<'de> DeserializeSeed<'de, Value = V>,
    {
        match &self.0 {
            Repr::Tree(v) => parse::from_deserializer_seed(file, "", v, seed, ignored),
            Repr::Text(text) => {
                let mut unused = Vec::new();
                let mut de = serde_json::Deserializer::from_str(text);
                let v = parse::from_deserializer_seed(file, "", &mut de, seed, &mut unused)?;
                de.end()
                    .map_err(|e| ConfigError::new(file, "", e.to_string()))?;
                ignored.extend(unused.into_iter().filter(|path| {
                    let top = path.split(['.', '[']).next().unwrap_or_default();
                    !STRIPPED_KEYS.contains(&top)
                }));
                Ok(v)
            }
        }
    }

    /// An object with only the top-level `keys` the content has (and their values), read
    /// without building the rest of the tree.
    pub fn top_level(&self, keys: &[&str]) -> Value {
        match &self.0 {
            Repr::Tree(v) => Value::Object(
                keys.iter()
                    .filter_map(|k| Some(((*k).to_string(), v.get(*k)?.clone())))
                    .collect(),
            ),
            // Invariant: `from_json_text` checked that the text is one JSON object.
            Repr::Text(text) => Value::Object(pick_top_level(text, keys).unwrap_or_default()),
        }
    }

    /// The content as a tree to change in place (the text, if kept as text, is turned into a
    /// tree first).
    pub fn value_mut(&mut self) -> &mut Value {
        if let Repr::Text(_) = self.0 {
            self.0 = Repr::Tree(self.value().into_owned());
        }
        match &mut self.0 {
            Repr::Tree(v) => v,
            // Unreachable: turned into a tree just above.
            Repr::Text(_) => unreachable!("text turned into a tree above"),
        }
    }

    /// The content as a tree, taking it out of `self` when it is one.
    pub fn into_value(self) -> Value {
        match self.0 {
            Repr::Tree(v) => v,
            Repr::Text(_) => self.value().into_owned(),
        }
    }
}

impl ConnectorConfig {
    /// The tree, when the configuration is one.
    pub(super) fn tree_mut(&mut self) -> Option<&mut Value> {
        match &mut self.0 {
            Repr::Tree(v) => Some(v),
            Repr::Text(_) => None,
        }
    }
}

/// Removes the keys every connector file may carry from a connector file's tree.
pub(super) fn strip_common_keys(obj: &mut Map<String, Value>) {
    for k in STRIPPED_KEYS {
        obj.remove(*k);
    }
}

impl From<Value> for ConnectorConfig {
    /// A configuration given as a tree, used as it is (common keys are removed by
    /// [`connector_spec`](super::connector_spec), not here).
    fn from(v: Value) -> Self {
        ConnectorConfig(Repr::Tree(v))
    }
}

impl PartialEq<Value> for ConnectorConfig {
    fn eq(&self, other: &Value) -> bool {
        *self.value() == *other
    }
}

impl fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Tree(v) => fmt::Debug::fmt(v, f),
            Repr::Text(t) => write!(f, "ConnectorConfig({} bytes of JSON text)", t.len()),
        }
    }
}

/// Reads the top-level object of `text`, keeping the values of `keys` only; the rest is
/// skipped without being built. Checks the whole text is one well-formed JSON object.
pub(super) fn pick_top_level(
    text: &str,
    keys: &[&str],
) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let picked = Pick { keys }.deserialize(&mut de)?;
    de.end()?;
    Ok(picked)
}

struct Pick<'k> {
    keys: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Map::new();
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if self.keys.contains(&k.as_ref()) {
                found.insert(k.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Conf {
        host: String,
        #[serde(default)]
        list: Vec<u16>,
    }

    const TEXT: &str = r#"{"name": "X", "logLevel": "INFO", "host": "h", "list": [1, 2],
        "reportStrategy": {"type": "ON_CHANGE"}, "extra": {"deep": 1}}"#;

    #[test]
    fn text_deserializes_like_the_tree_without_common_keys() {
        let text = ConnectorConfig::from_json_text(TEXT).unwrap();
        let mut ign = Vec::new();
        let c: Conf = text.deserialize(Path::new("f.json"), &mut ign).unwrap();
        assert_eq!(
            c,
            Conf {
                host: "h".into(),
                list: vec![1, 2]
            }
        );
        assert_eq!(ign, ["reportStrategy", "extra"]);
        let v = text.value();
        assert!(v.get("name").is_none() && v.get("logLevel").is_none());
        assert_eq!(v["host"], "h");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let text = ConnectorConfig::from_json_text(r#"{"host": "h", "list": [1, "x"]}"#).unwrap();
        let e = text
            .deserialize::<Conf>(Path::new("f.json"), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.json: list[1]: invalid type"), "{e}");
    }

    #[test]
    fn only_one_well_formed_object_is_accepted() {
        assert!(ConnectorConfig::from_json_text("[1]").is_err());
        assert!(ConnectorConfig::from_json_text(r#"{"a": 1"#).is_err());
        assert!(ConnectorConfig::from_json_text(r#"{"a": 1} {}"#).is_err());
        assert!(ConnectorConfig::from_json_text(r#"{"a": 1}"#).is_ok());
    }

    #[test]
    fn top_level_picks_keys_from_text_and_tree() {
        let text = ConnectorConfig::from_json_text(TEXT).unwrap();
        let want = json!({"reportStrategy": {"type": "ON_CHANGE"}, "host": "h"});
        assert_eq!(text.top_level(&["reportStrategy", "host", "absent"]), want);
        let tree: ConnectorConfig = text.value().into_owned().into();
        assert_eq!(tree.top_level(&["reportStrategy", "host", "absent"]), want);
        assert_eq!(tree, *text.value());
    }
}

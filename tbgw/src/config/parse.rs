//! Turning JSON values into typed configuration with precise errors and a list of ignored keys.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Deserializes `value` into `T`. On failure the error names `file`, the full key path
/// (`prefix` + the path inside `value`) and serde's reason. Keys present in `value` that `T`
/// does not use are appended to `ignored` as full key paths.
pub fn from_value<T: DeserializeOwned>(
    file: &Path,
    prefix: &str,
    value: &serde_json::Value,
    ignored: &mut Vec<String>,
) -> Result<T, ConfigError> {
    from_deserializer(file, prefix, value, ignored)
}

/// [`from_value`] for any serde deserializer, e.g. one reading JSON text
/// (`serde_json::Deserializer::from_str`) without building a tree of it first.
pub fn from_deserializer<'de, T, D>(
    file: &Path,
    prefix: &str,
    de: D,
    ignored: &mut Vec<String>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    from_deserializer_seed(file, prefix, de, std::marker::PhantomData::<T>, ignored)
}

/// [`from_deserializer`] with a [`DeserializeSeed`](serde::de::DeserializeSeed): for
/// configuration read in a streaming way (each entry of a long list handled and dropped as it
/// is read).
pub fn from_deserializer_seed<'de, S, D>(
    file: &Path,
    prefix: &str,
    de: D,
    seed: S,
    ignored: &mut Vec<String>,
) -> Result<S::Value, ConfigError>
where
    S: serde::de::DeserializeSeed<'de>,
    D: serde::Deserializer<'de>,
{
    let mut track = serde_path_to_error::Track::new();
    let mut unused = Vec::new();
    let de = serde_path_to_error::Deserializer::new(de, &mut track);
    let mut note = |path: serde_ignored::Path<'_>| {
        unused.push(join(prefix, &ignored_path(&path)));
    };
    let result = seed.deserialize(serde_ignored::Deserializer::new(de, &mut note));
    match result {
        Ok(v) => {
            ignored.extend(unused);
            Ok(v)
        }
        Err(e) => {
            let path = track.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(ConfigError::new(file, join(prefix, &path), e.to_string()))
        }
    }
}

/// An ignored key's path in the form error paths use (`mapping[0].converter.key`): list
/// indices in brackets and no segment for `Option` or newtype wrappers.
/// (`serde_ignored::Path`'s own `Display` would write `mapping.0.converter.deviceInfo.?.key`.)
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Joins a key prefix and a relative key path with a dot (no dot before `[`).
pub fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ if path.starts_with('[') => format!("{prefix}{path}"),
        _ => format!("{prefix}.{path}"),
    }
}

/// Reads a JSON (or, for `.yaml`/`.yml`, YAML) file into a JSON value.
pub fn read_file(file: &Path) -> Result<serde_json::Value, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::new(file, "", format!("cannot read file: {e}")))?;
    if is_yaml(file) {
        serde_norway::from_str(&text)
            .map_err(|e| ConfigError::new(file, "", format!("not valid YAML: {e}")))
    } else {
        serde_json::from_str(&text).map_err(|e| ConfigError::new(file, "", json_syntax_reason(&e)))
    }
}

/// Whether `file` is read as YAML (`.yaml` / `.yml`) rather than JSON.
pub(crate) fn is_yaml(file: &Path) -> bool {
    matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// The reason given for a file that is not JSON: where and why.
pub(crate) fn json_syntax_reason(e: &serde_json::Error) -> String {
    format!(
        "not valid JSON at line {} column {}: {e}",
        e.line(),
        e.column()
    )
}

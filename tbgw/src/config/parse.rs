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
    let mut track = serde_path_to_error::Track::new();
    let mut unused = Vec::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let result: Result<T, _> = serde_ignored::deserialize(de, |path| {
        unused.push(join(prefix, &ignored_path(&path)));
    });
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
    let is_yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    );
    if is_yaml {
        serde_norway::from_str(&text)
            .map_err(|e| ConfigError::new(file, "", format!("not valid YAML: {e}")))
    } else {
        serde_json::from_str(&text).map_err(|e| {
            ConfigError::new(
                file,
                "",
                format!(
                    "not valid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })
    }
}

//! The `storage` section of `tb_gateway.json`.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::storage::FullPolicy;

/// The `storage` section. Only the keys of the chosen `type` are read; upstream's sample mixes
/// keys of all types, and the others are reported as ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageConfig {
    /// `memory` (default), `file` or `sqlite`.
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Memory storage: most records held.
    #[serde(default = "default_max_records")]
    pub max_records_count: usize,
    /// Memory storage: records per read batch.
    #[serde(default = "default_read_records")]
    pub read_records_count: usize,
    /// tbgw extension: what happens when the storage is full: `block` (default: wait, which
    /// back-pressures the connectors), `drop_oldest` or `drop_newest` (upstream's behaviour).
    #[serde(default)]
    pub full_policy: FullPolicy,
}

fn default_type() -> String {
    "memory".into()
}
const fn default_max_records() -> usize {
    10_000
}
const fn default_read_records() -> usize {
    1000
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: default_type(),
            max_records_count: default_max_records(),
            read_records_count: default_read_records(),
            full_policy: FullPolicy::default(),
        }
    }
}

impl StorageConfig {
    /// Checks values serde cannot check.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        match self.kind.as_str() {
            "memory" => {}
            "file" | "sqlite" => {
                return Err(ConfigError::new(
                    file,
                    "storage.type",
                    format!(
                    "storage type `{}` is not available in this version of tbgw yet; use `memory`",
                    self.kind
                ),
                ))
            }
            other => {
                return Err(ConfigError::new(
                    file,
                    "storage.type",
                    format!("unknown storage type `{other}`; expected memory, file or sqlite"),
                ))
            }
        }
        if self.max_records_count == 0 {
            return Err(ConfigError::new(
                file,
                "storage.max_records_count",
                "must be at least 1",
            ));
        }
        if self.read_records_count == 0 {
            return Err(ConfigError::new(
                file,
                "storage.read_records_count",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

//! The `storage` section of `tb_gateway.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// What to do when a `put` finds the storage full (`storage.full_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Wait until ThingsBoard confirms older records and space frees up; the wait
    /// back-pressures the connectors (the MQTT connector stops acknowledging its broker).
    #[default]
    Block,
    /// Drop the oldest records to make room (keeps the most recent data).
    DropOldest,
    /// Reject the new records (upstream's behaviour).
    DropNewest,
}

/// The `storage` section, with upstream's keys for every type. Only the keys of the chosen
/// `type` are used; upstream's sample mixes keys of all types, and the others are reported as
/// ignored ([`StorageConfig::unused_keys`]).
#[derive(Debug, Clone, Deserialize)]
pub struct StorageConfig {
    /// `memory` (default), `file`, `sqlite` or `rocksdb` (tbgw extension).
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    /// Memory: most records held.
    #[serde(default = "default_max_records")]
    pub max_records_count: usize,
    /// Memory: records per read batch.
    #[serde(default = "default_read_records")]
    pub read_records_count: usize,
    /// File and RocksDB: the data folder (relative paths are taken relative to the config
    /// directory).
    pub data_folder_path: Option<String>,
    /// File: most segment files.
    pub max_file_count: Option<usize>,
    /// File: records per segment file.
    pub max_records_per_file: Option<usize>,
    /// File, SQLite and RocksDB: records per read batch.
    pub max_read_records_count: Option<usize>,
    /// File: group commit after this many records (upstream only flushed; tbgw fsyncs).
    pub max_records_between_fsync: Option<usize>,
    /// SQLite: the folder of `data.db`.
    pub data_file_path: Option<String>,
    /// SQLite: rows per insert transaction.
    pub writing_batch_size: Option<usize>,
    /// SQLite: hours between TTL sweeps.
    pub messages_ttl_check_in_hours: Option<f64>,
    /// Every durable type: records older than this many days are not sent (upstream's SQLite
    /// key; there it never deleted anything because of a unit bug).
    pub messages_ttl_in_days: Option<f64>,
    /// SQLite: size limit of one database file in MB.
    pub size_limit: Option<u64>,
    /// SQLite: number of database files upstream rotates through.
    pub max_db_amount: Option<u64>,
    /// SQLite: upstream's minutes between size checks. Accepted and not used (reported as
    /// ignored): tbgw checks the size on every insert.
    pub oversize_check_period: Option<f64>,
    /// tbgw extension: what happens when the storage is full: `block` (default: wait, which
    /// back-pressures the connectors), `drop_oldest` or `drop_newest` (upstream's behaviour).
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// tbgw extension, file storage: fsync at least this often while data is unsynced (ms).
    pub fsync_interval_ms: Option<u64>,
    /// tbgw extension, file and RocksDB storage: byte budget in MB.
    pub max_size_mb: Option<u64>,
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
            data_folder_path: None,
            max_file_count: None,
            max_records_per_file: None,
            max_read_records_count: None,
            max_records_between_fsync: None,
            data_file_path: None,
            writing_batch_size: None,
            messages_ttl_check_in_hours: None,
            messages_ttl_in_days: None,
            size_limit: None,
            max_db_amount: None,
            oversize_check_period: None,
            full_policy: FullPolicy::default(),
            fsync_interval_ms: None,
            max_size_mb: None,
        }
    }
}

/// Keys accepted (upstream's) but used by no storage type: reported as ignored.
const ACCEPTED_UNUSED: &[&str] = &["oversize_check_period"];

/// Keys each storage type uses.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "memory" => &[
            "type",
            "max_records_count",
            "read_records_count",
            "full_policy",
        ],
        "file" => &[
            "type",
            "data_folder_path",
            "max_file_count",
            "max_records_per_file",
            "max_read_records_count",
            "max_records_between_fsync",
            "messages_ttl_in_days",
            "full_policy",
            "fsync_interval_ms",
            "max_size_mb",
        ],
        "sqlite" => &[
            "type",
            "data_file_path",
            "max_read_records_count",
            "writing_batch_size",
            "messages_ttl_check_in_hours",
            "messages_ttl_in_days",
            "size_limit",
            "max_db_amount",
            "full_policy",
            "max_records_count",
        ],
        "rocksdb" => &[
            "type",
            "data_folder_path",
            "max_read_records_count",
            "max_records_count",
            "messages_ttl_in_days",
            "full_policy",
            "max_size_mb",
        ],
        _ => &[],
    }
}

/// The largest `messages_ttl_in_days` accepted (about 2,700 years): larger values would
/// overflow the millisecond arithmetic of the storages.
pub const MAX_TTL_DAYS: f64 = 1_000_000.0;

/// Storage types this build can create.
pub const STORAGE_TYPES: &[&str] = &["memory", "file", "sqlite", "rocksdb"];

impl StorageConfig {
    /// Checks values serde cannot check.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let key = |k: &str| format!("storage.{k}");
        if !STORAGE_TYPES.contains(&self.kind.as_str()) {
            return Err(ConfigError::new(
                file,
                key("type"),
                format!(
                    "unknown storage type `{}`; expected memory, file, sqlite or rocksdb",
                    self.kind
                ),
            ));
        }
        if self.kind == "sqlite" && !cfg!(feature = "sqlite") {
            return Err(ConfigError::new(
                file,
                key("type"),
                "this build of tbgw has no SQLite storage (feature `sqlite`)",
            ));
        }
        if self.kind == "rocksdb" && !cfg!(feature = "rocksdb") {
            return Err(ConfigError::new(
                file,
                key("type"),
                "this build of tbgw has no RocksDB storage (feature `rocksdb`)",
            ));
        }
        let positive: [(&str, Option<usize>); 7] = [
            ("max_records_count", Some(self.max_records_count)),
            ("read_records_count", Some(self.read_records_count)),
            ("max_file_count", self.max_file_count),
            ("max_records_per_file", self.max_records_per_file),
            ("max_read_records_count", self.max_read_records_count),
            ("max_records_between_fsync", self.max_records_between_fsync),
            ("writing_batch_size", self.writing_batch_size),
        ];
        for (k, v) in positive {
            if v == Some(0) && keys_of(&self.kind).contains(&k) {
                return Err(ConfigError::new(file, key(k), "must be at least 1"));
            }
        }
        if let Some(d) = self.messages_ttl_in_days {
            if !(d > 0.0 && d <= MAX_TTL_DAYS) {
                return Err(ConfigError::new(
                    file,
                    key("messages_ttl_in_days"),
                    format!("must be a positive number of days, at most {MAX_TTL_DAYS}"),
                ));
            }
        }
        if let Some(h) = self.messages_ttl_check_in_hours {
            if !(h > 0.0 && h <= MAX_TTL_DAYS * 24.0) {
                return Err(ConfigError::new(
                    file,
                    key("messages_ttl_check_in_hours"),
                    format!(
                        "must be a positive number of hours, at most {}",
                        MAX_TTL_DAYS * 24.0
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keys present in `raw` that the chosen type does not use (reported as ignored).
    pub fn unused_keys(&self, raw: Option<&serde_json::Value>) -> Vec<String> {
        let used = keys_of(&self.kind);
        raw.and_then(|v| v.as_object())
            .map(|m| {
                m.keys()
                    .filter(|k| !used.contains(&k.as_str()) && Self::known(k))
                    .map(|k| format!("storage.{k}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A key of any storage type (unknown keys are reported by the deserializer already),
    /// or one that is accepted and never used.
    fn known(k: &str) -> bool {
        ACCEPTED_UNUSED.contains(&k) || STORAGE_TYPES.iter().any(|t| keys_of(t).contains(&k))
    }

    /// The TTL, if configured. Values [`StorageConfig::validate`] rejects never panic here:
    /// a value that is not a positive number gives `None`, a larger one than
    /// `MAX_TTL_DAYS` is capped.
    pub fn ttl(&self) -> Option<Duration> {
        self.messages_ttl_in_days
            .filter(|d| *d > 0.0)
            .and_then(|d| Duration::try_from_secs_f64(d.min(MAX_TTL_DAYS) * 86_400.0).ok())
    }

    /// A storage folder from the config, relative to `config_dir` (default `./data/`).
    pub fn folder(config_dir: &Path, value: Option<&str>) -> PathBuf {
        let v = value.unwrap_or("./data/");
        let p = PathBuf::from(v);
        if p.is_absolute() {
            p
        } else {
            config_dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ttl(days: f64) -> StorageConfig {
        StorageConfig {
            kind: "file".into(),
            messages_ttl_in_days: Some(days),
            ..StorageConfig::default()
        }
    }

    #[test]
    fn a_huge_or_non_finite_ttl_is_a_config_error_and_never_panics() {
        let file = Path::new("tb_gateway.json");
        for days in [1e20, f64::INFINITY, f64::NAN, -1.0, 0.0, MAX_TTL_DAYS * 2.0] {
            let cfg = with_ttl(days);
            let err = cfg.validate(file).expect_err("must be rejected");
            assert_eq!(err.key, "storage.messages_ttl_in_days", "{days}");
            // Used without validation (e.g. by an embedding application): no panic.
            let ttl = cfg.ttl();
            assert!(ttl.is_none_or(|t| t <= Duration::from_secs(86_400_000_000)));
        }
        assert_eq!(
            with_ttl(MAX_TTL_DAYS).ttl(),
            Some(Duration::from_secs(86_400_000_000))
        );
        assert!(with_ttl(1.5).validate(file).is_ok());
    }

    #[test]
    fn a_huge_ttl_check_period_is_a_config_error() {
        let cfg = StorageConfig {
            kind: "file".into(),
            messages_ttl_check_in_hours: Some(1e300),
            ..StorageConfig::default()
        };
        let err = cfg
            .validate(Path::new("tb_gateway.json"))
            .expect_err("must be rejected");
        assert_eq!(err.key, "storage.messages_ttl_check_in_hours");
    }
}

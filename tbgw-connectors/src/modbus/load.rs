//! Reading a Modbus connector file into slave plans, one slave at a time.
//!
//! A large file (500 slaves × 30 datapoints) must not exist in memory all at once, neither as
//! a JSON tree (0.6 KB per datapoint object) nor in typed form (0.3 KB per datapoint): each
//! slave of `master.slaves[]` is deserialized, validated into its compact plan and dropped
//! before the next one is read.

use std::fmt;
use std::path::Path;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tbgw::config::{ConfigError, ConnectorConfig};

use super::codec::Framing;
use super::config::{SlaveConfig, SlaveServerConfig};
use super::plan::{self, SlavePlan};
use super::transport::Endpoint;

/// What the connector is built from: every slave's plan and the `slave` (server) section.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) slaves: Vec<(Endpoint, Framing, SlavePlan)>,
    pub(super) server: Option<SlaveServerConfig>,
}

/// Reads `config` (the content of `file`). Keys it does not use are appended to `ignored`.
pub(super) fn read(
    file: &Path,
    config: &ConnectorConfig,
    ignored: &mut Vec<String>,
) -> Result<Loaded, ConfigError> {
    let mut state = State {
        file,
        loaded: Loaded::default(),
        notes: Vec::new(),
        failed: None,
    };
    let read = config.deserialize_seed(file, Top(&mut state), ignored);
    // A plan that failed is the error to report, not the deserializer's stop it caused.
    if let Some(e) = state.failed {
        return Err(e);
    }
    read?;
    ignored.extend(state.notes);
    Ok(state.loaded)
}

struct State<'a> {
    file: &'a Path,
    loaded: Loaded,
    notes: Vec<String>,
    failed: Option<ConfigError>,
}

/// The file's top-level object.
struct Top<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Modbus connector configuration object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "master" => map.next_value_seed(Master(&mut *self.0))?,
                "slave" => self.0.loaded.server = map.next_value()?,
                // Read by the gateway's report service.
                "reportStrategy" | "sendDataOnlyOnChange" => {
                    map.next_value::<Option<serde_json::Value>>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `master`: an object whose `slaves` list is read one entry at a time.
struct Master<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Master<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Master<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a `slaves` list")
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "slaves" {
                map.next_value_seed(Slaves(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `master.slaves[]`: each entry planned and dropped before the next is read.
struct Slaves<'s, 'a>(&'s mut State<'a>);

impl<'de> DeserializeSeed<'de> for Slaves<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Slaves<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of slaves")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        let mut i = 0;
        while let Some(s) = seq.next_element::<SlaveConfig>()? {
            super::connector::note_ignored(i, &s, &mut state.notes);
            match plan::slave(state.file, i, &s) {
                Ok(p) => state.loaded.slaves.push(p),
                Err(e) => {
                    state.failed = Some(e);
                    return Err(serde::de::Error::custom("invalid slave"));
                }
            }
            i += 1;
        }
        Ok(())
    }
}

//! The gateway-level gRPC server of the connector API (the `grpc` section of
//! `tb_gateway.json`, feature `grpc`): its factory for `type: grpc` connectors, the keys of the
//! main file it reads, and starting the server beside the gateway. Without the feature, all
//! no-ops.

use std::path::Path;

use tbgw::config::{ConfigError, IgnoredKey, LoadedConfig};
use tbgw::connector::ConnectorFactory;
use tokio_util::sync::CancellationToken;

/// The gRPC part of one configuration.
#[derive(Debug, Default)]
pub struct Grpc {
    #[cfg(feature = "grpc")]
    factory: Option<tbgw_connectors::grpc::GrpcFactory>,
    #[cfg(feature = "grpc")]
    config: tbgw_connectors::grpc::GrpcMainConfig,
}

impl Grpc {
    /// Reads the main file's `grpc` section and `type: grpc` entries; `write_keys` saves
    /// generated `key: auto` keys (not for `tbgw check`).
    #[allow(unused_variables)]
    pub fn load(path: &Path, write_keys: bool) -> Result<Grpc, ConfigError> {
        #[cfg(feature = "grpc")]
        {
            let config = tbgw_connectors::grpc::GrpcMainConfig::from_main_file(path, write_keys)?;
            Ok(Grpc {
                factory: Some(tbgw_connectors::grpc::GrpcFactory::new(config.clone())),
                config,
            })
        }
        #[cfg(not(feature = "grpc"))]
        Ok(Grpc::default())
    }

    /// The factory of `type: grpc` connectors and those of the Python custom connectors
    /// (entries with a `class`), when compiled in.
    pub fn factories(&self) -> Vec<Box<dyn ConnectorFactory>> {
        #[allow(unused_mut)]
        let mut v: Vec<Box<dyn ConnectorFactory>> = Vec::new();
        #[cfg(feature = "grpc")]
        if let Some(f) = &self.factory {
            v.push(Box::new(f.clone()));
            // Python custom connectors (entries with a `class`): one factory per their types.
            for c in f.custom_factories() {
                v.push(Box::new(c));
            }
        }
        v
    }

    /// Removes the keys this module reads from the configuration's ignored keys (and every
    /// key of the files of out-of-process connectors, which get them as they are) and adds
    /// the `grpc` settings it does not act on.
    #[allow(unused_variables)]
    pub fn fix_ignored(&self, loaded: &mut LoadedConfig) {
        #[cfg(feature = "grpc")]
        {
            let file = loaded.file.clone();
            loaded.ignored.retain(|k| {
                let read_here = k.file == file && self.config.used_keys.contains(&k.key);
                let connectors_own = self.config.connector_files.contains(&k.file);
                !read_here && !connectors_own
            });
            loaded
                .ignored
                .extend(self.config.ignored_keys.iter().map(|key| IgnoredKey {
                    file: file.clone(),
                    key: key.clone(),
                }));
        }
        let _: Option<IgnoredKey> = None;
    }

    /// Starts the server when `grpc.enabled`; it stops with `stop`.
    #[allow(unused_variables)]
    pub async fn start(&self, stop: CancellationToken) -> Result<(), String> {
        #[cfg(feature = "grpc")]
        if let Some(f) = &self.factory {
            if let Some(server) = f.server().await {
                let server = server.map_err(|e| format!("gRPC server: {e}"))?;
                tokio::spawn(async move {
                    if let Err(e) = server.run(stop).await {
                        tracing::error!(error = %e, "The gRPC connector API server failed.");
                    }
                });
            }
        }
        Ok(())
    }
}

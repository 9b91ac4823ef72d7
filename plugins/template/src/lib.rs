//! `template`: a Tributary plugin that serves the packages listed in its own configuration. Copy
//! it to start a plugin: replace [`TemplatePlugin::new_source`] with reading your backend, keep the
//! rest. See docs/PLUGINS.md in the Tributary repository.
//!
//! Configuration (the `config` table of a `[[source]]`):
//! ```toml
//! config = { packages = [{ name = "nginx", version = "1.2.3", description = "Web server" }] }
//! ```

use serde::Deserialize;
use tributary_plugin_api::{
    config, export_plugin, Detail, Host, ListRequest, PackageSource, Plugin, PluginError, RString,
    Summary, Version,
};

/// The plugin: metadata and the constructor.
pub struct TemplatePlugin;

impl Plugin for TemplatePlugin {
    const NAME: &'static str = "template";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "Packages listed in the source configuration";

    type Source = TemplateSource;

    fn new_source(host: Host, config: &str) -> Result<TemplateSource, PluginError> {
        // `$` keys are the host's; errors name the key at fault.
        let config: Config = config::parse(Self::NAME, config)?;
        let mut items: Vec<Summary> = config
            .packages
            .into_iter()
            .map(Package::into_summary)
            .collect();
        // The order every source keeps: (name, identifier) as bytes.
        items.sort_by(Summary::key_cmp);
        if let Some(pair) = items
            .windows(2)
            .find(|w| w[0].identifier == w[1].identifier)
        {
            return Err(PluginError::invalid_config(format!(
                "template config: key `packages`: name {:?} appears twice",
                pair[0].name.as_str()
            )));
        }
        host.info(&format!("serving {} packages", items.len()));
        Ok(TemplateSource { items })
    }
}

export_plugin!(TemplatePlugin);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Package {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    deprecated: bool,
}

impl Package {
    fn into_summary(self) -> Summary {
        Summary {
            identifier: RString::from(self.name.as_str()),
            display_name: RString::from(self.name.as_str()),
            name: RString::from(self.name),
            latest_version: RString::from(self.version),
            short_description: RString::from(self.description),
            deprecated: self.deprecated,
            ..Summary::default()
        }
    }
}

/// One configured source.
pub struct TemplateSource {
    items: Vec<Summary>,
}

impl PackageSource for TemplateSource {
    fn list(&self, request: &ListRequest) -> Result<Vec<Summary>, PluginError> {
        // Seek, filter and limit exactly as the contract says.
        Ok(request.select(&self.items))
    }

    fn detail(&self, identifier: &str) -> Result<Detail, PluginError> {
        let summary = self
            .items
            .iter()
            .find(|s| s.identifier.as_str() == identifier)
            .cloned()
            .ok_or_else(|| PluginError::not_found(format!("no package {identifier:?}")))?;
        Ok(Detail {
            versions: vec![Version {
                version: summary.latest_version.clone(),
                ..Version::default()
            }]
            .into(),
            summary,
            ..Detail::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use tributary_plugin_api::conformance::{check, Options};

    use super::*;

    const CONFIG: &str = r#"{"packages": [
        {"name": "redis", "version": "7.2.0", "description": "Key-value store"},
        {"name": "nginx", "version": "1.25.1", "description": "Web server"},
        {"name": "legacy", "version": "0.1.0", "deprecated": true}
    ], "$base_dir": "/etc/tributary"}"#;

    #[test]
    fn conforms() {
        let source = TemplatePlugin::new_source(Host::detached("test", None), CONFIG).unwrap();
        let report = check(&source, &Options::default());
        assert!(report.passed(), "{report}");
        assert_eq!(report.items, 3);
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = TemplatePlugin::new_source(Host::detached("test", None), r#"{"packages": 1}"#)
            .err()
            .unwrap();
        assert!(
            e.message
                .starts_with("template config: key `packages`: invalid type"),
            "{e}"
        );
    }
}

//! The plugin's configuration, checked key by key so that every error names the key at fault.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tributary_plugin_api::{resolve_path, PluginError};

/// One configured repository: its name and the local `index.yaml` it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repository {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    repositories: Option<Value>,
    #[serde(rename = "$base_dir")]
    base_dir: Option<Value>,
}

fn invalid(message: impl std::fmt::Display) -> PluginError {
    PluginError::invalid_config(format!("helm config: {message}"))
}

/// Parses the JSON configuration into the list of repositories, paths resolved.
pub(crate) fn parse(config: &str) -> Result<Vec<Repository>, PluginError> {
    let config: Config = serde_json::from_str(config).map_err(invalid)?;
    let base_dir = match &config.base_dir {
        None | Some(Value::Null) => None,
        Some(Value::String(dir)) => Some(Path::new(dir.as_str())),
        Some(_) => return Err(invalid("$base_dir must be a string (a folder)")),
    };
    const SHAPE: &str = "a list of { name, url } tables, url a local index.yaml";
    let list = match config.repositories {
        None | Some(Value::Null) => {
            return Err(invalid(format_args!("repositories is missing ({SHAPE})")))
        }
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format_args!("repositories must be {SHAPE}"))),
    };
    if list.is_empty() {
        return Err(invalid(format_args!("repositories is empty; give {SHAPE}")));
    }

    let mut repositories: Vec<Repository> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let key = format!("repositories[{i}]");
        let Value::Object(table) = entry else {
            return Err(invalid(format_args!(
                "{key} must be a {{ name, url }} table"
            )));
        };
        if let Some(unknown) = table.keys().find(|k| *k != "name" && *k != "url") {
            return Err(invalid(format_args!(
                "{key}.{unknown} is not a known key (expected name and url)"
            )));
        }
        let name = string_field(table.get("name"), &key, "name")?;
        if name.contains('/') {
            return Err(invalid(format_args!(
                "{key}.name {name:?} must not contain '/' (it prefixes chart identifiers)"
            )));
        }
        if let Some(first) = repositories.iter().position(|r| r.name == name) {
            return Err(invalid(format_args!(
                "{key}.name {name:?} is already used by repositories[{first}]"
            )));
        }
        let url = string_field(table.get("url"), &key, "url")?;
        let path = local_path(url).ok_or_else(|| {
            invalid(format_args!(
                "{key}.url {url:?} of repository {name:?} is not supported: only local files \
                 are supported for now (a path or a file:// URL)"
            ))
        })?;
        if path.as_os_str().is_empty() {
            return Err(invalid(format_args!("{key}.url {url:?} names no file")));
        }
        repositories.push(Repository {
            name: name.to_owned(),
            path: resolve_path(base_dir, path),
        });
    }
    Ok(repositories)
}

fn string_field<'a>(
    value: Option<&'a Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, PluginError> {
    match value {
        None | Some(Value::Null) => Err(invalid(format_args!("{key}.{field} is missing"))),
        Some(Value::String(s)) if s.is_empty() => {
            Err(invalid(format_args!("{key}.{field} is empty")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format_args!("{key}.{field} must be a string"))),
    }
}

/// The local path a repository `url` names: a plain path or a `file://` URL. `None` for any other
/// scheme.
fn local_path(url: &str) -> Option<&Path> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(Path::new(rest));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let mut chars = scheme.chars();
        let is_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            return None;
        }
    }
    Some(Path::new(url))
}

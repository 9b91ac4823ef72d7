//! Parsing a source's JSON configuration into a typed struct (feature `config`, on by default).
//!
//! [`parse`] removes the host's keys (every key starting with `$`, see
//! [`crate::HOST_KEY_PREFIX`]) before deserializing, so a struct with
//! `#[serde(deny_unknown_fields)]` keeps working when a newer host adds a `$` key, and it reports
//! an error as an [`crate::ErrorKind::InvalidConfig`] naming the key at fault:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { path: String, #[serde(default)] limit: u32 }
//!
//! let ok: Config = tributary_plugin_api::config::parse("demo", r#"{"path":"a.json","$base_dir":"/etc"}"#).unwrap();
//! assert_eq!(ok.path, "a.json");
//! let e = tributary_plugin_api::config::parse::<Config>("demo", r#"{"path":"a","limit":"many"}"#).err().unwrap();
//! assert!(e.message.starts_with("demo config: key `limit`: invalid type"), "{}", e.message);
//! ```

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{PluginError, HOST_KEY_PREFIX};

/// Parses `json` (an object) into `T`, ignoring `$` keys. Errors are `invalid_config` and start
/// with `"{plugin} config: "`, then name the key when the fault lies in one.
pub fn parse<T: DeserializeOwned>(plugin: &str, json: &str) -> Result<T, PluginError> {
    let fail = |what: String| PluginError::invalid_config(format!("{plugin} config: {what}"));
    let value: Value =
        serde_json::from_str(json).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(fail("expected a JSON object".to_owned()));
    };
    parse_map(map).map_err(fail)
}

/// [`parse`] for an already-parsed object: `$` keys removed, errors naming the key (without the
/// plugin prefix).
pub fn parse_map<T: DeserializeOwned>(mut map: Map<String, Value>) -> Result<T, String> {
    map.retain(|k, _| !k.starts_with(HOST_KEY_PREFIX));
    // One top-level key per line, so that the line of a deserialization error names its key.
    let mut text = String::from("{\n");
    let mut lines: Vec<(usize, &str)> = Vec::with_capacity(map.len());
    let mut line = 2;
    for (i, (key, value)) in map.iter().enumerate() {
        let entry = format!(
            "{}: {}{}\n",
            Value::String(key.clone()),
            value,
            if i + 1 < map.len() { "," } else { "" }
        );
        lines.push((line, key.as_str()));
        line += entry.matches('\n').count();
        text.push_str(&entry);
    }
    text.push('}');
    serde_json::from_str(&text).map_err(|e| {
        let message = strip_position(&e.to_string());
        let names_a_key = message.contains("field `");
        match lines.iter().rev().find(|(start, _)| *start <= e.line()) {
            Some((_, key)) if !names_a_key => format!("key `{key}`: {message}"),
            _ => message,
        }
    })
}

/// The message without serde_json's " at line L column C" (meaningless for the text we made).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        path: String,
        #[serde(default)]
        limit: u32,
        #[serde(default)]
        nested: Option<Inner>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: u8,
    }

    fn err(json: &str) -> String {
        parse::<C>("demo", json).unwrap_err().message.to_string()
    }

    #[test]
    fn host_keys_are_ignored_and_faults_name_the_key() {
        let c: C = parse("demo", r#"{"path":"p","$base_dir":"/x","$future":1}"#).unwrap();
        assert_eq!((c.path.as_str(), c.limit), ("p", 0));
        assert_eq!(
            err(r#"{"path":"p","limit":"many"}"#),
            "demo config: key `limit`: invalid type: string \"many\", expected u32"
        );
        assert_eq!(
            err(r#"{"path":"p","nested":{"a":300}}"#),
            "demo config: key `nested`: invalid value: integer `300`, expected u8"
        );
        assert!(
            err(r#"{"path":"p","colour":1}"#).starts_with("demo config: unknown field `colour`"),
            "{}",
            err(r#"{"path":"p","colour":1}"#)
        );
        assert_eq!(err(r#"{"limit":1}"#), "demo config: missing field `path`");
        assert_eq!(err("[1]"), "demo config: expected a JSON object");
        assert!(err("{").starts_with("demo config: not valid JSON"));
        let e = parse::<C>("demo", "{").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidConfig);
    }
}

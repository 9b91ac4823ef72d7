//! Charts stored in an OCI registry (Docker Distribution, Harbor, Docker Hub, GHCR), read the way
//! Helm pushes them: one registry repository per chart, `<namespace>/<chart>`, one tag per version
//! (`+` in a version is `_` in its tag), each tag's manifest pointing at a config blob of media
//! type `application/vnd.cncf.helm.config.v1+json` that holds the chart's `Chart.yaml` as JSON.
//!
//! A refresh lists every chart's tags (`GET /v2/<name>/tags/list`, following `Link` pages), keeps
//! the semantic-version tags, and reads the manifest and config blob of the tags it has not seen
//! before: tags are cached with their manifest digest, configs by digest, so an unchanged registry
//! costs one request per chart (per page of tags). The charts are then written out as an index
//! document and parsed like any Helm index, so ranking, categories and `deprecated` are the same.
//!
//! Authentication follows the registry's `WWW-Authenticate` challenge: `Bearer realm=...` asks the
//! token service for a pull token (with the configured user name and password, or anonymously),
//! cached per scope until the registry refuses it; `Basic` sends the credentials themselves.
//! Credentials go to the registry's host and to the token realm it names, never along a redirect
//! to another host (blobs are often redirected to storage).

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use ureq::Agent;
use url::Url;

use crate::{
    config::{Credential, Remote},
    fetch::{describe, shown},
};

/// The media type of a Helm chart's config blob.
pub(crate) const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const MANIFEST_TYPES: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// The most bytes read for a manifest or a config blob.
const SMALL_LIMIT: u64 = 4 << 20;
/// The most bytes read for one page of a tag or repository list: 10,000 tags of 128 characters,
/// the longest the distribution spec allows, are 1.4 MB.
const LIST_LIMIT: u64 = 4 << 20;
const MAX_REDIRECTS: usize = 10;

/// Where the charts are: the registry (`index_url` of the [`Remote`]), a namespace, and the charts.
#[derive(Debug, Clone)]
pub(crate) struct OciTarget {
    /// The registry's address as configured, for chart references: `host[:port]`.
    pub registry: String,
    /// The namespace, without slashes at either end; may be empty.
    pub namespace: String,
    /// The charts; `None` to list the namespace through the registry's `_catalog`.
    pub charts: Option<Vec<String>>,
    /// The most tags listed for one chart (all its pages): a chart with more is refused, the
    /// other charts are served.
    pub max_tags_per_chart: usize,
    /// The most tags listed in one refresh, every chart together: past it the refresh fails.
    pub max_tags: usize,
    /// The most pages of tag (and catalog) lists followed in one refresh: past it the refresh
    /// fails.
    pub max_list_pages: usize,
}

/// What survives between refreshes.
#[derive(Default)]
pub(crate) struct Cache {
    /// `"<repository>:<tag>"` to its manifest digest.
    tags: HashMap<String, String>,
    /// A manifest digest to its index entry (`Null` for a manifest that is not a Helm chart).
    entries: HashMap<String, Value>,
    /// A token scope to its bearer token.
    tokens: HashMap<String, String>,
    /// Requests made by the last refresh.
    pub requests: usize,
    /// List pages read and tags listed by the refresh under way.
    pages: usize,
    tags_listed: usize,
}

/// A refresh's outcome: the index document, and the charts refused (each with its reason).
pub(crate) struct Refreshed {
    pub document: String,
    pub refused: Vec<String>,
}

/// Why a list stopped: the one chart is refused, or the whole refresh fails.
enum Stop {
    Chart(String),
    Refresh(String),
}

impl From<String> for Stop {
    fn from(error: String) -> Stop {
        Stop::Refresh(error)
    }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    link_next: Option<String>,
    digest: Option<String>,
    challenge: Option<String>,
}

/// Reads every chart of `target` and writes them out as an index document (JSON). A chart whose
/// tags are over `max_tags_per_chart` is left out and named in `refused`; past `max_tags` or
/// `max_list_pages` the refresh fails.
pub(crate) fn refresh(
    agent: &Agent,
    remote: &Remote,
    target: &OciTarget,
    max_charts: usize,
    cache: &mut Cache,
) -> Result<Refreshed, String> {
    cache.requests = 0;
    cache.pages = 0;
    cache.tags_listed = 0;
    let charts = match &target.charts {
        Some(charts) => charts.clone(),
        None => catalog(agent, remote, target, max_charts, cache)?,
    };
    let mut entries = Map::new();
    let mut refused = Vec::new();
    // What this refresh saw: the cache keeps nothing else, so that it cannot grow across refreshes.
    let mut seen_tags = HashMap::new();
    for chart in charts {
        let repository = if target.namespace.is_empty() {
            chart.clone()
        } else {
            format!("{}/{chart}", target.namespace)
        };
        let listed = match tags(agent, remote, target, cache, &repository) {
            Ok(tags) => tags,
            Err(Stop::Chart(reason)) => {
                refused.push(format!("chart {chart:?} refused: {reason}"));
                continue;
            }
            Err(Stop::Refresh(error)) => return Err(error),
        };
        let mut versions = Vec::new();
        for tag in listed {
            let version = tag.replace('_', "+");
            if semver::Version::parse(&version).is_err() {
                continue;
            }
            let key = format!("{repository}:{tag}");
            let digest = match cache.tags.get(&key) {
                Some(digest) => digest.clone(),
                None => manifest(agent, remote, cache, &repository, &tag)?,
            };
            seen_tags.insert(key, digest.clone());
            match cache.entries.get(&digest) {
                Some(Value::Object(entry)) => {
                    let mut entry = entry.clone();
                    entry.insert("version".into(), Value::String(version));
                    entry.insert(
                        "urls".into(),
                        json!([format!("oci://{}/{repository}:{tag}", target.registry)]),
                    );
                    versions.push(Value::Object(entry));
                }
                _ => continue,
            }
        }
        entries.insert(chart, Value::Array(versions));
    }
    cache
        .entries
        .retain(|digest, _| seen_tags.values().any(|d| d == digest));
    cache.tags = seen_tags;
    Ok(Refreshed {
        document: json!({ "apiVersion": "v1", "entries": entries }).to_string(),
        refused,
    })
}

/// The chart names under the namespace, from `GET /v2/_catalog` (not every registry offers it).
fn catalog(
    agent: &Agent,
    remote: &Remote,
    target: &OciTarget,
    max_charts: usize,
    cache: &mut Cache,
) -> Result<Vec<String>, String> {
    let prefix = if target.namespace.is_empty() {
        String::new()
    } else {
        format!("{}/", target.namespace)
    };
    let first = join(&remote.index_url, "v2/_catalog?n=1000")?;
    let mut charts = Vec::new();
    let listed = list_pages(
        agent,
        remote,
        target,
        cache,
        first,
        "registry:catalog:*",
        "repositories",
        |page: Vec<String>, _| {
            charts.extend(
                page.into_iter()
                    .filter_map(|r| r.strip_prefix(&prefix).map(str::to_owned))
                    .filter(|chart| !chart.is_empty() && !chart.contains('/')),
            );
            if charts.len() > max_charts {
                return Err(Stop::Refresh(format!(
                    "the registry's catalog lists more than max_charts ({max_charts}) charts \
                     under {prefix:?}"
                )));
            }
            Ok(())
        },
    );
    match listed {
        Ok(()) => {}
        Err(Stop::Chart(error) | Stop::Refresh(error)) => return Err(error),
    }
    charts.sort();
    charts.dedup();
    Ok(charts)
}

/// Every tag of `repository`, following `Link` pages, within the target's limits.
fn tags(
    agent: &Agent,
    remote: &Remote,
    target: &OciTarget,
    cache: &mut Cache,
    repository: &str,
) -> Result<Vec<String>, Stop> {
    let first = join(
        &remote.index_url,
        &format!("v2/{repository}/tags/list?n=1000"),
    )?;
    let mut all = Vec::new();
    list_pages(
        agent,
        remote,
        target,
        cache,
        first,
        &format!("repository:{repository}:pull"),
        "tags",
        |page, cache| {
            cache.tags_listed += page.len();
            all.extend(page);
            if all.len() > target.max_tags_per_chart {
                return Err(Stop::Chart(format!(
                    "more than max_tags_per_chart ({}) tags listed",
                    target.max_tags_per_chart
                )));
            }
            if cache.tags_listed > target.max_tags {
                return Err(Stop::Refresh(format!(
                    "more than max_tags ({}) tags listed in one refresh (at registry \
                     repository {repository:?})",
                    target.max_tags
                )));
            }
            Ok(())
        },
    )?;
    Ok(all)
}

/// Reads every page of a list, from `first` on, handing the strings of `field` of each page to
/// `take`; at most `max_list_pages` pages in one refresh.
#[allow(clippy::too_many_arguments)]
fn list_pages(
    agent: &Agent,
    remote: &Remote,
    target: &OciTarget,
    cache: &mut Cache,
    first: Url,
    scope: &str,
    field: &str,
    mut take: impl FnMut(Vec<String>, &mut Cache) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let mut url = first;
    loop {
        cache.pages += 1;
        if cache.pages > target.max_list_pages {
            return Err(Stop::Refresh(format!(
                "{}: more than max_list_pages ({}) list pages in one refresh",
                shown(&url),
                target.max_list_pages
            )));
        }
        let reply = get(
            agent,
            remote,
            cache,
            &url,
            "application/json",
            scope,
            LIST_LIMIT,
        )?;
        expect_ok(&reply, &url)?;
        let page: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("{}: not a JSON list: {e}", shown(&url)))?;
        match &page[field] {
            Value::Array(items) => take(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                cache,
            )?,
            Value::Null => {}
            _ => return Err(format!("{}: {field} is not a list", shown(&url)).into()),
        }
        match reply.link_next {
            Some(next) => {
                url = url
                    .join(&next)
                    .map_err(|e| format!("{}: bad Link {next:?}: {e}", shown(&url)))?;
            }
            None => return Ok(()),
        }
    }
}

/// Reads the manifest of `repository:tag` and, for a Helm chart, its config blob into the cache's
/// entries; returns the manifest digest.
fn manifest(
    agent: &Agent,
    remote: &Remote,
    cache: &mut Cache,
    repository: &str,
    tag: &str,
) -> Result<String, String> {
    let scope = format!("repository:{repository}:pull");
    let url = join(
        &remote.index_url,
        &format!("v2/{repository}/manifests/{tag}"),
    )?;
    let reply = get(
        agent,
        remote,
        cache,
        &url,
        MANIFEST_TYPES,
        &scope,
        SMALL_LIMIT,
    )?;
    expect_ok(&reply, &url)?;
    let digest = reply
        .digest
        .clone()
        .unwrap_or_else(|| format!("sha256:{:x}", Sha256::digest(&reply.body)));
    if cache.entries.contains_key(&digest) {
        return Ok(digest);
    }
    let manifest: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("{}: manifest is not JSON: {e}", shown(&url)))?;
    let config = &manifest["config"];
    if config["mediaType"].as_str() != Some(HELM_CONFIG) {
        cache.entries.insert(digest.clone(), Value::Null);
        return Ok(digest);
    }
    let config_digest = config["digest"]
        .as_str()
        .ok_or_else(|| format!("{}: manifest config has no digest", shown(&url)))?;
    let blob_url = join(
        &remote.index_url,
        &format!("v2/{repository}/blobs/{config_digest}"),
    )?;
    let blob = get(
        agent,
        remote,
        cache,
        &blob_url,
        HELM_CONFIG,
        &scope,
        SMALL_LIMIT,
    )?;
    expect_ok(&blob, &blob_url)?;
    if let Some(hex) = config_digest.strip_prefix("sha256:") {
        if format!("{:x}", Sha256::digest(&blob.body)) != hex {
            return Err(format!(
                "{}: config blob does not match its digest",
                shown(&blob_url)
            ));
        }
    }
    let mut entry = match serde_json::from_slice::<Value>(&blob.body) {
        Ok(Value::Object(entry)) => entry,
        _ => {
            return Err(format!(
                "{}: Helm config of {repository}:{tag} is not a JSON object",
                shown(&blob_url)
            ))
        }
    };
    entry.insert("digest".into(), Value::String(digest.clone()));
    if let Some(created) = manifest["annotations"]["org.opencontainers.image.created"].as_str() {
        entry.insert("created".into(), Value::String(created.to_owned()));
    }
    cache.entries.insert(digest.clone(), Value::Object(entry));
    Ok(digest)
}

fn join(base: &Url, path: &str) -> Result<Url, String> {
    base.join(path)
        .map_err(|e| format!("{}: cannot form {path}: {e}", shown(base)))
}

fn expect_ok(reply: &Reply, url: &Url) -> Result<(), String> {
    match reply.status {
        200 => Ok(()),
        401 | 403 => Err(format!(
            "{}: HTTP {} (check the registry's credentials)",
            shown(url),
            reply.status
        )),
        status => Err(format!("{}: HTTP {status}", shown(url))),
    }
}

/// A GET to the registry, answering one authentication challenge.
#[allow(clippy::too_many_arguments)]
fn get(
    agent: &Agent,
    remote: &Remote,
    cache: &mut Cache,
    url: &Url,
    accept: &str,
    scope: &str,
    limit: u64,
) -> Result<Reply, String> {
    let mut token = cache.tokens.get(scope).cloned();
    let mut answered = false;
    loop {
        let reply = send(agent, remote, url, accept, token.as_deref(), limit, cache)?;
        if reply.status != 401 || answered {
            return Ok(reply);
        }
        answered = true;
        let challenge = reply.challenge.unwrap_or_default();
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            // A Basic challenge: the configured credentials were sent already.
            return Ok(Reply {
                challenge: Some(challenge),
                ..reply
            });
        };
        let fresh = fetch_token(agent, remote, params, scope, cache)?;
        cache.tokens.insert(scope.to_owned(), fresh.clone());
        token = Some(fresh);
    }
}

/// The `key="value"` parameters of a challenge.
fn challenge_params(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

/// Asks the token service a challenge names for a token.
fn fetch_token(
    agent: &Agent,
    remote: &Remote,
    params: &str,
    scope: &str,
    cache: &mut Cache,
) -> Result<String, String> {
    let params = challenge_params(params);
    let realm = params.get("realm").ok_or_else(|| {
        format!(
            "{}: Bearer challenge without a realm",
            shown(&remote.index_url)
        )
    })?;
    let mut url = Url::parse(realm).map_err(|e| format!("token realm {realm:?}: {e}"))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = params.get("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", params.get("scope").map_or(scope, String::as_str));
    }
    let mut request = agent.get(url.as_str());
    for credential in &remote.credentials {
        if let Credential::Basic { .. } = credential {
            let (name, value) = credential.header()?;
            request = request.header(name, value);
        }
    }
    cache.requests += 1;
    let mut response = request
        .call()
        .map_err(|e| format!("token service {}", describe(&url, remote, e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!(
            "token service {}: HTTP {status}{}",
            shown(&url),
            if matches!(status, 401 | 403) {
                " (check the registry's credentials)"
            } else {
                ""
            }
        ));
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(SMALL_LIMIT)
        .read_to_vec()
        .map_err(|e| format!("token service {}", describe(&url, remote, e)))?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("token service {}: not JSON: {e}", shown(&url)))?;
    body["token"]
        .as_str()
        .or_else(|| body["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("token service {}: no token in the answer", shown(&url)))
}

/// One GET with redirects followed by hand: the token or the configured credentials go to the
/// registry's own host only.
fn send(
    agent: &Agent,
    remote: &Remote,
    first: &Url,
    accept: &str,
    token: Option<&str>,
    limit: u64,
    cache: &mut Cache,
) -> Result<Reply, String> {
    let mut url = first.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = agent.get(url.as_str()).header("Accept", accept);
        let own_host = url.host_str() == remote.index_url.host_str()
            && url.port_or_known_default() == remote.index_url.port_or_known_default();
        if own_host || remote.pass_credentials {
            match token {
                Some(token) => request = request.header("Authorization", format!("Bearer {token}")),
                None => {
                    for credential in &remote.credentials {
                        let (name, value) = credential.header()?;
                        request = request.header(name, value);
                    }
                }
            }
        }
        cache.requests += 1;
        let mut response = request.call().map_err(|e| describe(&url, remote, e))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location = header("location")
                .ok_or_else(|| format!("{}: HTTP {status} without a Location", shown(&url)))?;
            url = url
                .join(&location)
                .map_err(|e| format!("{}: bad Location: {e}", shown(&url)))?;
            continue;
        }
        let link_next = header("link").and_then(|link| next_link(&link));
        let digest = header("docker-content-digest");
        let challenge = header("www-authenticate");
        let body = if status == 200 {
            response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| describe(&url, remote, e))?
        } else {
            Vec::new()
        };
        return Ok(Reply {
            status,
            body,
            link_next,
            digest,
            challenge,
        });
    }
    Err(format!(
        "{}: more than {MAX_REDIRECTS} redirects",
        shown(first)
    ))
}

/// The target of the `rel="next"` link of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            matches!(
                p.trim().replace(' ', "").as_str(),
                "rel=\"next\"" | "rel=next"
            )
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links_parse() {
        let p = challenge_params(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:charts/a:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:charts/a:pull");
        assert_eq!(
            next_link(r#"</v2/charts/a/tags/list?n=2&last=1.0.1>; rel="next""#).as_deref(),
            Some("/v2/charts/a/tags/list?n=2&last=1.0.1")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
    }
}

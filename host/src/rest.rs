//! REST/JSON on the gRPC port: the same calls as the gRPC services, answered in the proto3 JSON
//! mapping (camelCase field names, enums by name, 64-bit integers as strings; see `tributary-proto`).
//!
//! | Path | Answers like |
//! |---|---|
//! | `GET /v1/packages` | `PackagesService.ListAvailablePackageSummaries` |
//! | `GET /v1/packages/{source}/{identifier}` | `PackagesService.GetAvailablePackageDetail` |
//! | `GET /v1/plugins` | `PluginsService.ListPlugins` |
//! | `GET /healthz` | liveness: 200 while the process serves |
//! | `GET /readyz` | readiness: the gRPC health's overall state (503 once shutting down) |
//! | `GET /v1/openapi.json` | the OpenAPI 3 document of these paths (`host/src/openapi.json`) |
//!
//! Each handler builds the RPC's request message and calls the same service code as gRPC (the
//! caller's identity from [`crate::auth`] travels as a request extension), so limits, filters,
//! page tokens and error messages are the RPC's own; a page's JSON is written from the plugins'
//! summaries ([`crate::page::JsonPage`]). Errors are JSON
//! `{"code": "INVALID_ARGUMENT", "status": 400, "message": "..."}` with the HTTP status of the
//! gRPC code ([`http_status`]); a bad query parameter is a 400 naming it.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Request, State},
    routing::get,
    Router,
};
use tonic::Code;
use tonic_health::pb::health_server::Health;
use tributary_proto::v1::{
    self as pb, packages_service_server::PackagesService, plugins_service_server::PluginsService,
};

use crate::{
    service::Catalog,
    status::{code_name, error_response, json},
};

/// The OpenAPI 3 document describing the REST paths.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
struct Rest {
    catalog: Arc<Catalog>,
    health: Arc<tonic_health::server::HealthService>,
}

/// The REST routes, answering from `catalog`; `/readyz` reads `health`.
pub fn routes(catalog: Arc<Catalog>, health: tonic_health::server::HealthReporter) -> Router {
    let state = Rest {
        catalog,
        health: Arc::new(tonic_health::server::HealthService::from_health_reporter(
            health,
        )),
    };
    // Every path takes GET (and HEAD) only; any other method is answered by `not_allowed`.
    Router::new()
        .route("/v1/packages", get(list_packages).fallback(not_allowed))
        .route(
            "/v1/packages/{source}/{*identifier}",
            get(package_detail).fallback(not_allowed),
        )
        .route("/v1/plugins", get(list_plugins).fallback(not_allowed))
        .route("/v1/openapi.json", get(openapi).fallback(not_allowed))
        .route("/healthz", get(healthz).fallback(not_allowed))
        .route("/readyz", get(readyz).fallback(not_allowed))
        .with_state(state)
}

/// A method other than GET or HEAD on a REST path: 405 with `Allow` and the JSON error.
async fn not_allowed(request: Request) -> http::Response<Body> {
    let body = serde_json::json!({
        "code": code_name(Code::Unimplemented),
        "status": 405,
        "message": format!(
            "method {} is not allowed on {} (allowed: GET, HEAD)",
            request.method(),
            request.uri().path()
        ),
    });
    let mut response = json(
        http::StatusCode::METHOD_NOT_ALLOWED,
        Code::Unimplemented,
        body.to_string().into_bytes(),
    );
    response.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET,HEAD"),
    );
    response
}

/// A message in the proto3 JSON mapping, or the RPC's error. The request's slot
/// ([`crate::idle::ResponseSlot`]) stays with the answer until it has been sent.
fn answer<T: serde::Serialize>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> http::Response<Body> {
    match result {
        Ok(mut response) => {
            let slot = response
                .extensions_mut()
                .remove::<crate::idle::ResponseSlot>();
            let mut answer = match serde_json::to_vec(response.get_ref()) {
                Ok(body) => json(http::StatusCode::OK, Code::Ok, body),
                Err(e) => error_response(&tonic::Status::internal(format!(
                    "encoding the answer as JSON: {e}"
                ))),
            };
            if let Some(slot) = slot {
                answer.extensions_mut().insert(slot);
            }
            answer
        }
        Err(status) => error_response(&status),
    }
}

/// A tonic request carrying the HTTP request's extensions (the caller's identity) and the
/// `grpc-timeout` header when a REST client sends one.
fn rpc_request<T>(http: &http::request::Parts, message: T) -> tonic::Request<T> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(timeout) = http.headers.get("grpc-timeout") {
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(timeout.as_bytes()) {
            metadata.insert("grpc-timeout", value);
        }
    }
    tonic::Request::from_parts(metadata, http.extensions.clone(), message)
}

fn bad_parameter(name: &str, problem: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("query parameter `{name}`: {problem}"))
}

/// Decodes one `application/x-www-form-urlencoded` name or value (`+` is a space, `%XX` a byte);
/// the bytes must be UTF-8 (`url::form_urlencoded` would put U+FFFD in their place silently).
fn form_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    // A `%` not followed by two hex digits stands for itself, as in browsers.
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|e| {
        format!(
            "not UTF-8 once percent-decoded (byte {} of {text:?})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// A boolean query parameter: `true`, `1` or nothing; `false` or `0`.
fn boolean(name: &str, value: &str) -> Result<bool, tonic::Status> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad_parameter(
            name,
            format!("not a boolean (true or false): {value:?}"),
        )),
    }
}

/// Reads the query string of `GET /v1/packages`; repeated fields may repeat (`categories=a&categories=b`).
pub fn parse_list_query(
    query: Option<&str>,
) -> Result<pb::ListAvailablePackageSummariesRequest, tonic::Status> {
    let mut request = pb::ListAvailablePackageSummariesRequest::default();
    let mut filter = pb::FilterOptions::default();
    let mut seen = std::collections::HashSet::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name)
            .map_err(|e| tonic::Status::invalid_argument(format!("a query parameter name: {e}")))?;
        let value = form_decode(value).map_err(|e| bad_parameter(&name, e))?;
        let name = std::borrow::Cow::<str>::Owned(name);
        let value = std::borrow::Cow::<str>::Owned(value);
        let single = |seen: &mut std::collections::HashSet<String>| {
            if seen.insert(name.to_string()) {
                Ok(())
            } else {
                Err(bad_parameter(&name, "given more than once"))
            }
        };
        match &*name {
            "page_size" | "pageSize" => {
                single(&mut seen)?;
                request.page_size = value
                    .parse()
                    .map_err(|_| bad_parameter(&name, format!("not an integer: {value:?}")))?;
            }
            "page_token" | "pageToken" => {
                single(&mut seen)?;
                request.page_token = value.into_owned();
            }
            "query" => {
                single(&mut seen)?;
                filter.query = value.into_owned();
            }
            "categories" => filter.categories.push(value.into_owned()),
            "repositories" => filter.repositories.push(value.into_owned()),
            "sources" => filter.sources.push(value.into_owned()),
            "include_deprecated" | "includeDeprecated" => {
                single(&mut seen)?;
                filter.include_deprecated = boolean(&name, &value)?;
            }
            "include_facets" | "includeFacets" => {
                single(&mut seen)?;
                request.include_facets = boolean(&name, &value)?;
            }
            "sort" => {
                single(&mut seen)?;
                request.sort = match &*value {
                    "name" | "SORT_ORDER_NAME" => pb::SortOrder::Name,
                    "relevance" | "SORT_ORDER_RELEVANCE" => pb::SortOrder::Relevance,
                    "updated" | "SORT_ORDER_UPDATED" => pb::SortOrder::Updated,
                    _ => {
                        return Err(bad_parameter(
                            &name,
                            format!("not a sort order (name, relevance or updated): {value:?}"),
                        ))
                    }
                } as i32;
            }
            _ => {
                return Err(bad_parameter(
                    &name,
                    "unknown (known: page_size, page_token, query, categories, repositories, \
                     sources, include_deprecated, sort, include_facets)",
                ))
            }
        }
    }
    request.filter = Some(filter);
    Ok(request)
}

async fn list_packages(State(rest): State<Rest>, request: Request) -> http::Response<Body> {
    let (parts, _) = request.into_parts();
    let message = match parse_list_query(parts.uri.query()) {
        Ok(message) => message,
        Err(status) => return error_response(&status),
    };
    // Written from the plugins' summaries (`crate::page::JsonPage`), not through the messages.
    answer(
        rest.catalog
            .list::<crate::page::JsonPage>(rpc_request(&parts, message))
            .await,
    )
}

async fn package_detail(
    State(rest): State<Rest>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    request: Request,
) -> http::Response<Body> {
    // A path whose percent-decoded segments are not UTF-8 is the client's error, in the API's shape.
    let Ok(Path((source, identifier))) = path else {
        return error_response(&tonic::Status::invalid_argument(format!(
            "the path {:?} is not UTF-8 once percent-decoded (the source and the identifier must be)",
            request.uri().path()
        )));
    };
    let (parts, _) = request.into_parts();
    if let Some(query) = parts.uri.query().filter(|q| !q.is_empty()) {
        let name = query.split(['=', '&']).next().unwrap_or(query);
        return error_response(&bad_parameter(name, "unknown (this path takes none)"));
    }
    let message = pb::GetAvailablePackageDetailRequest {
        available_package_ref: Some(pb::AvailablePackageReference { source, identifier }),
    };
    answer(
        rest.catalog
            .get_available_package_detail(rpc_request(&parts, message))
            .await,
    )
}

async fn list_plugins(State(rest): State<Rest>, request: Request) -> http::Response<Body> {
    let (parts, _) = request.into_parts();
    answer(
        rest.catalog
            .list_plugins(rpc_request(&parts, pb::ListPluginsRequest {}))
            .await,
    )
}

async fn openapi() -> http::Response<Body> {
    json(http::StatusCode::OK, Code::Ok, OPENAPI.as_bytes().to_vec())
}

async fn healthz() -> http::Response<Body> {
    json(
        http::StatusCode::OK,
        Code::Ok,
        br#"{"status":"SERVING"}"#.to_vec(),
    )
}

async fn readyz(State(rest): State<Rest>) -> http::Response<Body> {
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let status = rest
        .health
        .check(tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        }))
        .await
        .map(|r| r.into_inner().status())
        .unwrap_or(ServingStatus::Unknown);
    let (http, code) = match status {
        ServingStatus::Serving => (http::StatusCode::OK, Code::Ok),
        _ => (http::StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
    };
    json(
        http,
        code,
        serde_json::json!({ "status": status.as_str_name() })
            .to_string()
            .into_bytes(),
    )
}

/// Any other path: gRPC's UNIMPLEMENTED for gRPC callers, a JSON 404 otherwise.
pub async fn fallback(request: Request) -> http::Response<Body> {
    let grpc = crate::status::Framing::of(request.headers()).is_grpc();
    let path = request.uri().path();
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented(format!("unknown method {path}"))
            .into_http::<()>()
            .into_parts();
        return http::Response::from_parts(parts, Body::empty());
    }
    error_response(&tonic::Status::not_found(format!(
        "no such path: {} {path} (see /v1/openapi.json)",
        request.method()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_fill_the_request_and_name_the_bad_one() {
        let r = parse_list_query(Some(
            "page_size=5&query=ng&categories=a&categories=b%20c&sources=s1&include_deprecated=true",
        ))
        .unwrap();
        assert_eq!(r.page_size, 5);
        let f = r.filter.unwrap();
        assert_eq!(f.query, "ng");
        assert_eq!(f.categories, vec!["a", "b c"]);
        assert_eq!(f.sources, vec!["s1"]);
        assert!(f.include_deprecated);

        let e = parse_list_query(Some("page_size=ten")).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "query parameter `page_size`: not an integer: \"ten\""
        );
        let r = parse_list_query(Some("query=redis&sort=relevance&include_facets=true")).unwrap();
        assert_eq!(r.sort, pb::SortOrder::Relevance as i32);
        assert!(r.include_facets);
        let e = parse_list_query(Some("sort=stars")).unwrap_err();
        assert_eq!(
            e.message(),
            "query parameter `sort`: not a sort order (name, relevance or updated): \"stars\""
        );
        let e = parse_list_query(Some("colour=red")).unwrap_err();
        assert!(e.message().starts_with("query parameter `colour`: unknown"));
        let e = parse_list_query(Some("query=a&query=b")).unwrap_err();
        assert_eq!(e.message(), "query parameter `query`: given more than once");
        let e = parse_list_query(Some("query=%ff")).unwrap_err();
        assert_eq!(
            e.message(),
            "query parameter `query`: not UTF-8 once percent-decoded (byte 0 of \"%ff\")"
        );
        let r = parse_list_query(Some("query=caf%C3%A9+bar&categories=100%")).unwrap();
        assert_eq!(r.filter.as_ref().unwrap().query, "café bar");
        assert_eq!(r.filter.unwrap().categories, vec!["100%"]);
        let e = parse_list_query(Some("include_deprecated=maybe")).unwrap_err();
        assert!(e
            .message()
            .starts_with("query parameter `include_deprecated`"));
    }
}

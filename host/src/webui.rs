//! The catalog web page at `/`: static files embedded in the binary (`host/web/`), no build step.
//!
//! The page calls the server's REST API on the same origin: search (the query syntax in a hint
//! under the box, a query that does not parse named inline), a sort order (name, relevance while
//! there is a query, updated), source, repository and category filters with the count of each
//! value (`include_facets` on the request that starts a listing; the counts are kept while paging,
//! and partial counts name the sources left out), a range line ("21–40 of 1,234"), paging forward
//! and back with the page tokens, a package's detail with its versions, and failed sources shown
//! as a notice. Under `[auth]` it asks for a bearer token when the API answers 401 and keeps it for
//! the browser tab (`sessionStorage`).
//!
//! The files are served with a strict Content-Security-Policy (scripts, styles and API calls from
//! this origin only; package icons from anywhere over HTTPS), `nosniff`, no referrer, and
//! `no-cache` so that a new binary's page is picked up at once. `web_ui = false` in the config
//! leaves these routes out (`/` is then 404).

use axum::{body::Body, routing::get, Router};
use http::{header, HeaderValue};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON_SVG: &str = include_str!("../web/icon.svg");

/// The page's Content-Security-Policy: nothing inline, nothing from elsewhere but icons.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' https: data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The paths of the page's files; they need no credential (authentication lets them through).
pub const PATHS: [&str; 4] = ["/", "/assets/app.js", "/assets/app.css", "/assets/icon.svg"];

/// The routes serving the page.
pub fn routes() -> Router {
    Router::new()
        .route(
            PATHS[0],
            get(|| file(INDEX_HTML, "text/html; charset=utf-8")),
        )
        .route(
            PATHS[1],
            get(|| file(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(PATHS[2], get(|| file(APP_CSS, "text/css; charset=utf-8")))
        .route(PATHS[3], get(|| file(ICON_SVG, "image/svg+xml")))
}

/// Whether `path` is one of the page's files.
pub fn is_page_path(path: &str) -> bool {
    PATHS.contains(&path)
}

async fn file(body: &'static str, content_type: &'static str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response.extensions_mut().insert(tonic::Code::Ok);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_refers_only_to_files_that_are_served() {
        for reference in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
            assert!(INDEX_HTML.contains(reference), "{reference}");
            assert!(is_page_path(reference));
        }
        // Nothing inline: the policy would block it.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
        assert!(!INDEX_HTML.contains("onclick"));
    }

    #[test]
    fn the_page_sends_only_parameters_and_sorts_the_rest_api_accepts() {
        for (parameter, value) in [
            ("page_size", "5"),
            ("page_token", "t"),
            ("query", "redis"),
            ("sort", "relevance"),
            ("categories", "Database"),
            ("repositories", "stable"),
            ("sources", "one"),
            ("include_deprecated", "true"),
            ("include_facets", "true"),
        ] {
            assert!(
                APP_JS.contains(&format!("params.set(\"{parameter}\""))
                    || APP_JS.contains(&format!("params.append(\"{parameter}\"")),
                "{parameter}"
            );
            crate::rest::parse_list_query(Some(&format!("{parameter}={value}")))
                .unwrap_or_else(|e| panic!("{parameter}: {e:?}"));
        }
        // Each sort order the page offers is one the API takes.
        for sort in ["name", "relevance", "updated"] {
            assert!(
                INDEX_HTML.contains(&format!("<option value=\"{sort}\"")),
                "{sort}"
            );
            assert!(APP_JS.contains(&format!("\"{sort}\"")), "{sort}");
            crate::rest::parse_list_query(Some(&format!("sort={sort}&query=a"))).unwrap();
        }
    }
}

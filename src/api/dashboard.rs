//! The dashboard (contract section 7): the files under `static/`, compiled
//! into the binary so a single executable serves them offline, at `GET /`
//! (the page) and `GET /static/{file}` (its scripts, styles and icon).
//!
//! The files change with every build and are small, so browsers are told to
//! revalidate each time (`Cache-Control: no-cache`) and get a `304` when the
//! `ETag` still matches: a new binary never leaves a stale script running.
//!
//! The page is the one file with a setting in it: `GRAFANA_URL` fills its
//! `grafana-url` meta tag, from which the run view links traces to Grafana.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, AppState, resource};

/// One file of the dashboard, embedded at compile time.
struct Asset {
    /// The name under `/static/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A strong validator of `body`, computed at compile time.
    etag: &'static str,
}

/// Embeds `static/{name}` with its content type and its ETag.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../static/", $name)),
            etag: {
                const HEX: [u8; 18] = etag_of(include_bytes!(concat!("../../static/", $name)));
                match std::str::from_utf8(&HEX) {
                    Ok(text) => text,
                    Err(_) => panic!("an ETag is ASCII"),
                }
            },
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file the dashboard serves; `static/README.md` is for people and is
/// not served. A test checks that no other file of `static/` is forgotten.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("live.js", JAVASCRIPT),
    asset!("store.js", JAVASCRIPT),
    asset!("dom.js", JAVASCRIPT),
    asset!("format.js", JAVASCRIPT),
    asset!("runview.js", JAVASCRIPT),
    asset!("approval.js", JAVASCRIPT),
    asset!("session.js", JAVASCRIPT),
    asset!("canonical.js", JAVASCRIPT),
    asset!("instances.js", JAVASCRIPT),
    asset!("markdown.js", JAVASCRIPT),
    asset!("timeline.js", JAVASCRIPT),
    asset!("waterfall.js", JAVASCRIPT),
    asset!("operator.js", JAVASCRIPT),
    asset!("budget.js", JAVASCRIPT),
];

/// The page may load only its own files and talk only to its own origin
/// (which covers its WebSocket), so even a rendering bug that let server
/// text through as markup could not run a script or send data elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; object-src 'none'";

/// Mounts `GET /` and `GET /static/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // `HEAD` arrives as `GET` (see `api::access::guard`).
    cfg.service(resource("/", "GET, HEAD", vec![web::get().to(index)]))
        .service(resource(
            "/static/{file}",
            "GET, HEAD",
            vec![web::get().to(file)],
        ));
}

/// The meta tag of `index.html` that carries `GRAFANA_URL`, empty as shipped.
const GRAFANA_META: &str = r#"<meta name="grafana-url" content="">"#;

/// `GET /`
#[utoipa::path(
    get, path = "/", tag = "dashboard",
    summary = "The web dashboard",
    description = "The page signs in itself (`/#token=…` or its form).",
    responses(
        (status = 200, description = "The page", content_type = "text/html"),
        (status = 304, description = "Not modified since the `ETag` given"),
    )
)]
pub async fn index(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&req, "index.html")
}

/// `GET /static/{file}`
#[utoipa::path(
    get, path = "/static/{file}", tag = "dashboard",
    summary = "The dashboard's files",
    params(("file" = String, Path, description = "A file of the dashboard")),
    responses(
        (status = 200, description = "The file"),
        (status = 304, description = "Not modified since the `ETag` given"),
        (status = 404, description = "No such file (`not_found`)", body = super::openapi::ErrorBody),
    )
)]
pub async fn file(req: HttpRequest, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve(&req, &name)
}

/// The page with this server's `GRAFANA_URL` in its meta tag, and its ETag.
fn page_with_grafana(asset: &Asset, grafana_url: &str) -> (Vec<u8>, String) {
    let escaped = grafana_url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = String::from_utf8_lossy(asset.body).replacen(
        GRAFANA_META,
        &format!(r#"<meta name="grafana-url" content="{escaped}">"#),
        1,
    );
    let etag = etag_of(page.as_bytes());
    (
        page.into_bytes(),
        String::from_utf8_lossy(&etag).into_owned(),
    )
}

fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("the dashboard has no file `{name}`")))?;
    let grafana_url = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.settings.grafana_url.as_deref());
    // Only the page with a Grafana URL is built per request; every other
    // file is served from the binary without a copy.
    let (body, etag) = match grafana_url {
        Some(url) if asset.name == "index.html" => {
            let (page, etag) = page_with_grafana(asset, url);
            (Bytes::from(page), Cow::Owned(etag))
        }
        _ => (Bytes::from_static(asset.body), Cow::Borrowed(asset.etag)),
    };
    let not_modified = matches_etag(req, &etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag.as_ref()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if asset.content_type == HTML {
        response.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY));
    }
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .body(body))
}

/// Whether `If-None-Match` names this ETag (or is `*`).
fn matches_etag(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// A quoted 64-bit FNV-1a hash of `bytes` in hex: not cryptographic, only a
/// cheap compile-time fingerprint so an unchanged file is not sent again.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut digit = 0;
    while digit < 16 {
        out[1 + digit] = DIGITS[((hash >> (60 - 4 * digit)) & 0xf) as usize];
        digit += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::http::StatusCode;
    use actix_web::test as harness;

    async fn get(path: &str, if_none_match: Option<&str>) -> actix_web::dev::ServiceResponse {
        let app = harness::init_service(App::new().configure(configure)).await;
        let mut req = harness::TestRequest::get().uri(path);
        if let Some(tag) = if_none_match {
            req = req.insert_header((header::IF_NONE_MATCH, tag));
        }
        harness::call_service(&app, req.to_request()).await
    }

    fn header_of(response: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> String {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    #[actix_web::test]
    async fn the_page_and_its_files_have_their_content_types_and_are_revalidated() {
        for (path, content_type) in [
            ("/", HTML),
            ("/static/index.html", HTML),
            ("/static/app.js", JAVASCRIPT),
            ("/static/runview.js", JAVASCRIPT),
            ("/static/style.css", CSS),
            ("/static/favicon.svg", SVG),
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        }
        let page = get("/", None).await;
        assert!(header_of(&page, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let body = harness::read_body(page).await;
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("data-testid=\"run-list\"")
        );
    }

    #[actix_web::test]
    async fn an_unknown_file_is_a_404_with_the_api_error_body() {
        for path in [
            "/static/nope.js",
            "/static/README.md",
            "/static/..%2fCargo.toml",
        ] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            let body: serde_json::Value = harness::read_body_json(response).await;
            assert_eq!(body["error"]["code"], "not_found");
        }
    }

    #[actix_web::test]
    async fn a_matching_etag_gets_a_304_without_a_body() {
        let first = get("/static/app.js", None).await;
        let etag = header_of(&first, header::ETAG);
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = get("/static/app.js", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(harness::read_body(again).await.is_empty());
        let other = get("/static/app.js", Some("\"0000000000000000\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn other_methods_are_refused() {
        let app = harness::init_service(App::new().configure(configure)).await;
        let req = harness::TestRequest::post().uri("/").to_request();
        let response = harness::call_service(&app, req).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_page_carries_grafana_url_escaped_with_its_own_etag() {
        let page = &ASSETS[0];
        assert!(
            std::str::from_utf8(page.body)
                .unwrap()
                .contains(GRAFANA_META),
            "index.html keeps the empty grafana-url meta tag"
        );
        let (body, etag) = page_with_grafana(page, "https://grafana.example.com/a?b=1&c=\"x\"");
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(
            r#"<meta name="grafana-url" content="https://grafana.example.com/a?b=1&amp;c=&quot;x&quot;">"#
        ));
        assert_ne!(etag, page.etag, "a page with a link is a different page");
    }

    #[test]
    fn every_file_in_static_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == "README.md" {
                continue;
            }
            assert!(
                ASSETS.iter().any(|asset| asset.name == name),
                "static/{name} is not in ASSETS"
            );
        }
    }
}

//! The wiki over HTTP (axum): `GET /w/api.php` answers the MediaWiki API (JSON, HTTP 200 even for
//! API errors, as MediaWiki does), `GET /wiki/TITLE` serves an article page the way a modern
//! script-driven front end does: a shell whose text arrives only when its script runs, so a
//! client that fetches raw HTML sees the title and little else.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::api::{Params, Wiki};
use super::corpus::{Lookup, normalize_title};

/// The script the article shell loads: it renders the article from `action=parse`.
pub const APP_JS: &str = r#"(async () => {
  const root = document.getElementById("root");
  const title = root.dataset.title;
  const url = "/w/api.php?action=parse&prop=text&redirects=1&format=json&page=" + encodeURIComponent(title);
  const answer = await (await fetch(url)).json();
  root.innerHTML = answer.parse ? "<h1>" + answer.parse.title + "</h1>" + answer.parse.text["*"]
                                : "<p>" + answer.error.info + "</p>";
})();
"#;

/// The router of the service.
pub fn router(wiki: Arc<Wiki>) -> Router {
    Router::new()
        .route("/w/api.php", get(api))
        .route("/wiki/{*title}", get(article))
        .route("/static/app.js", get(app_js))
        .with_state(wiki)
}

/// Query parameters; a repeated key keeps its last value.
pub fn parse_query(query: &str) -> Params {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn api(
    State(wiki): State<Arc<Wiki>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_query(query.as_deref().unwrap_or(""));
    let answer = wiki.api(&params, &base_url(&headers));
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        answer.to_string(),
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The article shell of `title`: title, script, and a `noscript` line; no article text.
pub fn article_shell(title: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} - Kiln Wiki</title>\
         <script src=\"/static/app.js\" defer></script></head><body><div id=\"root\" data-title=\"{title}\">\
         <noscript>This site needs JavaScript to show articles.</noscript></div></body></html>"
    )
}

async fn article(State(wiki): State<Arc<Wiki>>, Path(title): Path<String>) -> Response {
    let title = normalize_title(&title);
    let status = match wiki.corpus().lookup(&title) {
        Lookup::Missing => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        article_shell(&title),
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

/// Serves `wiki` on `listener` until the task is dropped or the listener fails.
pub async fn serve(wiki: Arc<Wiki>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(wiki)).await
}

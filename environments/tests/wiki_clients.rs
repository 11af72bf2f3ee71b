//! Conformance of the local wiki service with the PyPI MediaWiki clients `wikipedia` 1.4.0 and
//! `wikipedia-api` 0.16.0 (installed by `ops/setup wiki-clients`), pointed at it: search, page
//! content, summary, links (with continuation past 500), sections, missing page, redirect and
//! disambiguation. `wikipedia` is pointed at the service through its module global `wikipedia.wikipedia.API_URL`;
//! `wikipedia-api` builds `https://{lang}.wikipedia.org/w/api.php` in
//! `BaseHTTPClient._build_url`, which the driver replaces with the service's URL.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use kiln_environments::wiki::server::{article_shell, serve};
use kiln_environments::wiki::{Corpus, Wiki};
use serde_json::{Value, json};

const DRIVER: &str = r#"
import json, sys
base = sys.argv[1] + "/w/api.php"
out = {}

import wikipedia
wikipedia.wikipedia.API_URL = base  # the package re-exports the module; its global is read there
out["search"] = wikipedia.search("mercury orbit")
page = wikipedia.page("Mercury (planet)", auto_suggest=False)
out["title"], out["url"], out["pageid"] = page.title, page.url, page.pageid
out["content"] = page.content
out["summary"] = wikipedia.summary("Mercury (planet)", auto_suggest=False)
out["summary_sentences"] = wikipedia.summary("Mercury (planet)", sentences=1, auto_suggest=False)
out["links"] = page.links
out["categories"] = page.categories
out["sections"] = page.sections
out["section_orbit"] = page.section("Orbit")
out["suggested"] = wikipedia.page("closest planet").title
out["redirected"] = wikipedia.page("Planet Mercury", auto_suggest=False).title
out["many_links"] = len(wikipedia.page("List of things", auto_suggest=False).links)
try:
    wikipedia.page("No such page", auto_suggest=False)
    out["missing"] = "no error"
except wikipedia.exceptions.PageError:
    out["missing"] = "PageError"
try:
    wikipedia.page("Mercury", auto_suggest=False)
    out["disambiguation"] = "no error"
except wikipedia.exceptions.DisambiguationError as error:
    out["disambiguation"] = error.options

import wikipediaapi
from wikipediaapi._http_client.base_http_client import BaseHTTPClient
BaseHTTPClient._build_url = staticmethod(lambda language: base)
wiki = wikipediaapi.Wikipedia(user_agent="kiln-conformance/1.0", language="en")
p = wiki.page("Mercury (planet)")
api = {}
api["exists"] = p.exists()
api["summary"] = p.summary
api["text"] = p.text
api["sections"] = [s.title for s in p.sections]
api["subsections"] = [s.title for s in p.sections[0].sections]
api["links"] = sorted(p.links.keys())
api["categories"] = sorted(p.categories.keys())
api["many_links"] = len(wiki.page("List of things").links)
api["missing_exists"] = wiki.page("No such page").exists()
results = wiki.search("mercury", limit=5)
api["search"] = list(results.pages.keys())
api["totalhits"] = results.totalhits
out["wikipediaapi"] = api
print(json.dumps(out))
"#;

fn python() -> Option<PathBuf> {
    let path = kiln_environments::default_data_dir().join("wiki-clients/venv/bin/python");
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "the PyPI wiki clients are missing at {} (run ops/setup wiki-clients)",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{message}");
    }
    eprintln!("skipping the wiki client conformance test: {message}");
    None
}

fn corpus() -> Corpus {
    let many: Vec<String> = (0..620).map(|i| format!("Thing {i:03}")).collect();
    Corpus::from_values(&[
        json!({
            "title": "Mercury (planet)",
            "text": "Mercury is the closest planet to the [[Sun]]. It is the smallest planet of the Solar System.\n\n== Orbit ==\nMercury orbits the Sun every 88 days.\n=== Perihelion ===\nIts orbit precesses.\n== Naming ==\nIt is named after the god [[Mercury (mythology)|Mercury]].",
            "links": ["Venus"],
            "categories": ["Planets"],
            "redirects": ["Planet Mercury"],
            "description": "Smallest planet"
        }),
        json!({"title": "Sun", "text": "The Sun is the star at the centre of the Solar System."}),
        json!({"title": "Venus", "text": "Venus is the second planet from the Sun."}),
        json!({
            "title": "Mercury",
            "text": "Mercury may refer to:\n* [[Mercury (planet)]], the closest planet to the Sun\n* [[Mercury (element)]], a chemical element\n* [[Mercury (mythology)]], a Roman god",
            "disambiguation": true
        }),
        json!({"title": "Mercury (element)", "text": "Mercury is a chemical element with symbol Hg."}),
        json!({"title": "List of things", "text": "A long list.", "links": many}),
    ])
    .unwrap()
}

#[test]
fn the_pypi_clients_read_the_local_wiki() {
    let Some(python) = python() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wiki = Arc::new(Wiki::new(corpus()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(serve(wiki, listener));
    let base = format!("http://{address}");

    let output = Command::new(python)
        .arg("-c")
        .arg(DRIVER)
        .arg(&base)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "driver failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(out["search"][0], "Mercury (planet)", "{out}");
    assert_eq!(out["title"], "Mercury (planet)");
    assert_eq!(out["pageid"], "1");
    assert_eq!(out["url"], format!("{base}/wiki/Mercury_(planet)"));
    let content = out["content"].as_str().unwrap();
    assert!(
        content.starts_with("Mercury is the closest planet to the Sun."),
        "{content}"
    );
    assert!(content.contains("\n\n== Orbit ==\nMercury orbits the Sun every 88 days."));
    assert!(content.contains("named after the god Mercury."));
    assert_eq!(
        out["summary"],
        "Mercury is the closest planet to the Sun. It is the smallest planet of the Solar System."
    );
    assert_eq!(
        out["summary_sentences"],
        "Mercury is the closest planet to the Sun."
    );
    assert_eq!(out["links"], json!(["Sun", "Mercury (mythology)", "Venus"]));
    assert_eq!(out["categories"], json!(["Planets"]));
    assert_eq!(out["sections"], json!(["Orbit", "Perihelion", "Naming"]));
    assert_eq!(
        out["section_orbit"],
        "Mercury orbits the Sun every 88 days."
    );
    assert_eq!(out["suggested"], "Mercury (planet)");
    assert_eq!(out["redirected"], "Mercury (planet)");
    assert_eq!(out["many_links"], 620);
    assert_eq!(out["missing"], "PageError");
    assert_eq!(
        out["disambiguation"],
        json!([
            "Mercury (planet)",
            "Mercury (element)",
            "Mercury (mythology)"
        ])
    );

    let api = &out["wikipediaapi"];
    assert_eq!(api["exists"], true, "{api}");
    assert_eq!(
        api["summary"],
        "Mercury is the closest planet to the Sun. It is the smallest planet of the Solar System."
    );
    assert!(
        api["text"]
            .as_str()
            .unwrap()
            .contains("Mercury orbits the Sun every 88 days.")
    );
    assert_eq!(api["sections"], json!(["Orbit", "Naming"]));
    assert_eq!(api["subsections"], json!(["Perihelion"]));
    assert_eq!(api["links"], json!(["Mercury (mythology)", "Sun", "Venus"]));
    assert_eq!(api["categories"], json!(["Category:Planets"]));
    assert_eq!(api["many_links"], 620);
    assert_eq!(api["missing_exists"], false);
    assert_eq!(api["totalhits"], 3);
    assert_eq!(api["search"][0], "Mercury");
}

#[test]
fn article_pages_hold_little_text_without_their_script() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wiki = Arc::new(Wiki::new(corpus()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(serve(wiki, listener));
    let (status, html) = get(&format!("http://{address}/wiki/Mercury_(planet)"), &runtime);
    assert_eq!(status, 200);
    assert_eq!(html, article_shell("Mercury (planet)"));
    assert!(!html.contains("closest planet"), "{html}");
    let (missing, _) = get(&format!("http://{address}/wiki/Nope"), &runtime);
    assert_eq!(missing, 404);
    let (_, api) = get(
        &format!(
            "http://{address}/w/api.php?action=query&prop=extracts&explaintext=1&titles=Mercury_(planet)&format=json"
        ),
        &runtime,
    );
    assert!(api.contains("closest planet"), "{api}");
}

/// GET `url` on `runtime`: (status, body).
fn get(url: &str, runtime: &tokio::runtime::Runtime) -> (u16, String) {
    runtime.block_on(async {
        let response = reqwest::get(url).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

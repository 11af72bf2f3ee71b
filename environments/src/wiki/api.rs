//! The MediaWiki Action API (`GET /w/api.php?…&format=json`) over a [`Corpus`], as plain functions
//! from query parameters to the JSON MediaWiki answers.
//!
//! Supported: `action=query` with `titles` / `pageids` (`|`-separated), `redirects`,
//! `formatversion=2`, `prop=extracts|info|pageprops|links|categories|revisions`, `list=search|random`;
//! `action=parse` (`prop=text|sections|links|categories|revid|displaytitle`); `action=opensearch`.
//! Missing pages (`"-1": {"missing": ""}`), invalid titles, `{"error": {"code", "info"}}` for bad
//! requests, warnings for unknown `prop`/`list` values, and continuation for `list=search`
//! (`sroffset`), `prop=links` (`plcontinue`) and `prop=categories` (`clcontinue`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use super::corpus::{Corpus, Lookup, Page, Redirect, invalid_reason, normalize_title, strip_links};
use super::search::{SearchIndex, snippet, tokens};

/// Query parameters (the last value of a repeated key wins, as in PHP).
pub type Params = BTreeMap<String, String>;

/// The most results one list or prop returns (`max` for clients without `apihighlimits`).
pub const MAX_LIMIT: usize = 500;

/// The timestamp of every page's one revision.
pub const TIMESTAMP: &str = "2024-01-01T00:00:00Z";

/// A corpus with its search index: what the service serves.
#[derive(Debug)]
pub struct Wiki {
    corpus: Corpus,
    index: SearchIndex,
    random_state: AtomicU64,
}

/// `{"error": {"code", "info"}}`.
pub fn api_error(code: &str, info: &str) -> Value {
    json!({"error": {"code": code, "info": info, "*": "See /w/api.php for API usage."}})
}

fn flag(params: &Params, name: &str) -> bool {
    // MediaWiki boolean parameters are true when present, whatever their value.
    params.contains_key(name)
}

fn values<'a>(params: &'a Params, name: &str) -> Vec<&'a str> {
    params
        .get(name)
        .map(|value| value.split('|').filter(|v| !v.is_empty()).collect())
        .unwrap_or_default()
}

/// A `*limit` parameter: `max` is [`MAX_LIMIT`]; absent is `default`; a bad value is an error.
fn limit(params: &Params, name: &str, default: usize) -> Result<usize, Value> {
    match params.get(name).map(String::as_str) {
        None => Ok(default),
        Some("max") => Ok(MAX_LIMIT),
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map(|value| value.clamp(1, MAX_LIMIT))
            .map_err(|_| {
                api_error(
                    "badinteger",
                    &format!("Invalid value \"{text}\" for integer parameter \"{name}\"."),
                )
            }),
    }
}

/// The URL of an article page.
pub fn article_url(base_url: &str, title: &str) -> String {
    format!("{base_url}/wiki/{}", encode_title(title))
}

/// A title as it appears in a URL path: spaces as `_`, reserved characters percent-encoded.
pub fn encode_title(title: &str) -> String {
    let mut out = String::new();
    for byte in title.replace(' ', "_").bytes() {
        if byte.is_ascii_alphanumeric() || b"_-.~()!,:'*".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The anchor of a heading, as MediaWiki makes it (spaces as `_`).
fn anchor(heading: &str) -> String {
    heading.replace(' ', "_")
}

/// Source text of one section (`[[…]]` links, `* ` items) as HTML.
fn source_html(source: &str) -> String {
    let mut html = String::new();
    let mut in_list = false;
    for block in source.split("\n\n") {
        for line in block.lines().filter(|line| !line.trim().is_empty()) {
            let (item, body) = match line.strip_prefix("* ") {
                Some(body) => (true, body),
                None => (false, line),
            };
            if item && !in_list {
                html.push_str("<ul>");
                in_list = true;
            } else if !item && in_list {
                html.push_str("</ul>");
                in_list = false;
            }
            let body = inline_html(body);
            if item {
                let _ = write!(html, "<li>{body}</li>");
            } else {
                let _ = write!(html, "<p>{body}</p>");
            }
        }
    }
    if in_list {
        html.push_str("</ul>");
    }
    html
}

fn inline_html(text: &str) -> String {
    let mut html = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let Some(length) = rest[start + 2..].find("]]") else {
            break;
        };
        html.push_str(&escape(&rest[..start]));
        let inner = &rest[start + 2..start + 2 + length];
        let (target, label) = inner.split_once('|').unwrap_or((inner, inner));
        let target = normalize_title(target);
        let _ = write!(
            html,
            "<a href=\"/wiki/{}\" title=\"{}\">{}</a>",
            encode_title(&target),
            escape(&target),
            escape(label)
        );
        rest = &rest[start + 2 + length + 2..];
    }
    html.push_str(&escape(rest));
    html
}

/// The parsed HTML of a page, as `action=parse` and `rvparse` return it.
pub fn page_html(page: &Page) -> String {
    let mut html = String::from("<div class=\"mw-parser-output\">");
    for section in &page.sections {
        if section.level > 1 {
            let _ = write!(
                html,
                "<h{level}><span class=\"mw-headline\" id=\"{id}\">{text}</span></h{level}>",
                level = section.level,
                id = escape(&anchor(&section.heading)),
                text = escape(&section.heading)
            );
        }
        html.push_str(&source_html(&section.source));
    }
    html.push_str("</div>");
    html
}

/// The first `count` sentences of `text` (a sentence ends at `.`, `!` or `?` before a space or
/// the end).
fn sentences(text: &str, count: usize) -> String {
    let mut end = 0;
    let mut found = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (position, (at, c)) in chars.iter().enumerate() {
        if matches!(c, '.' | '!' | '?') {
            let next = chars.get(position + 1).map(|(_, c)| *c);
            if next.is_none_or(char::is_whitespace) {
                found += 1;
                end = at + c.len_utf8();
                if found == count {
                    break;
                }
            }
        }
    }
    if found < count {
        return text.to_string();
    }
    text[..end].to_string()
}

/// `exchars`: at most `count` characters, cut at a word boundary, with `...` when cut.
fn characters(text: &str, count: usize) -> String {
    if text.chars().count() <= count {
        return text.to_string();
    }
    let cut: String = text.chars().take(count).collect();
    let at_word = match cut.rfind(char::is_whitespace) {
        Some(at) if at > 0 => cut[..at].to_string(),
        _ => cut,
    };
    format!("{}...", at_word.trim_end())
}

fn extract_of(page: &Page, params: &Params) -> String {
    let plain = flag(params, "explaintext");
    let intro = flag(params, "exintro");
    let section_format = params
        .get("exsectionformat")
        .map(String::as_str)
        .unwrap_or("wiki");
    let mut text = String::new();
    for section in &page.sections {
        if section.level > 1 {
            if intro {
                break;
            }
            if plain {
                match section_format {
                    "plain" => {
                        let _ = write!(text, "\n\n{}\n", section.heading);
                    }
                    _ => {
                        let marks = "=".repeat(section.level);
                        let _ = write!(text, "\n\n{marks} {} {marks}\n", section.heading);
                    }
                }
            } else {
                let _ = write!(
                    text,
                    "<h{l}><span id=\"{id}\">{h}</span></h{l}>",
                    l = section.level,
                    id = escape(&anchor(&section.heading)),
                    h = escape(&section.heading)
                );
            }
        }
        if plain {
            text.push_str(&section.text);
        } else {
            let paragraphs: String = section
                .text
                .split("\n\n")
                .filter(|p| !p.trim().is_empty())
                .map(|p| format!("<p>{}</p>", escape(p.trim())))
                .collect();
            text.push_str(&paragraphs);
        }
    }
    let text = text.trim_start().to_string();
    if let Some(count) = params
        .get("exsentences")
        .and_then(|n| n.parse::<usize>().ok())
    {
        return sentences(&text, count.clamp(1, 10));
    }
    if let Some(count) = params.get("exchars").and_then(|n| n.parse::<usize>().ok()) {
        return characters(&text, count.clamp(1, 1200));
    }
    text
}

/// What a requested title or id resolved to.
enum Resolved<'a> {
    Page(&'a Page),
    /// A redirect reported as itself (no `redirects` parameter).
    RedirectPage(&'a Redirect),
    Missing(String),
    MissingId(u64),
    Invalid(String, String),
}

struct Resolution<'a> {
    entries: Vec<Resolved<'a>>,
    normalized: Vec<Value>,
    redirects: Vec<Value>,
}

impl Wiki {
    pub fn new(corpus: Corpus) -> Self {
        let index = SearchIndex::build(&corpus);
        Self {
            corpus,
            index,
            random_state: AtomicU64::new(0x5EED),
        }
    }

    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// Answers one API request. `base_url` (`http://host:port`) makes `fullurl`s.
    pub fn api(&self, params: &Params, base_url: &str) -> Value {
        if let Some(format) = params.get("format").filter(|format| *format != "json") {
            return api_error(
                "badvalue",
                &format!(
                    "Unrecognized value for parameter \"format\": {format}. This service speaks json only."
                ),
            );
        }
        match params.get("action").map(String::as_str) {
            Some("query") => self.query(params, base_url),
            Some("parse") => self.parse(params),
            Some("opensearch") => self.opensearch(params, base_url),
            Some(other) => api_error(
                "badvalue",
                &format!("Unrecognized value for parameter \"action\": {other}."),
            ),
            None => api_error(
                "noaction",
                "The \"action\" parameter must be set (query, parse or opensearch).",
            ),
        }
    }

    fn resolve(&self, params: &Params) -> Resolution<'_> {
        let follow = flag(params, "redirects");
        let mut resolution = Resolution {
            entries: Vec::new(),
            normalized: Vec::new(),
            redirects: Vec::new(),
        };
        for title in values(params, "titles") {
            if let Some(reason) = invalid_reason(title) {
                resolution
                    .entries
                    .push(Resolved::Invalid(title.to_string(), reason));
                continue;
            }
            let normalized = normalize_title(title);
            if normalized != title {
                resolution
                    .normalized
                    .push(json!({"from": title, "to": normalized}));
            }
            let entry = match self.corpus.lookup(&normalized) {
                Lookup::Page(page) => Resolved::Page(page),
                Lookup::Redirect(redirect, page) if follow => {
                    resolution
                        .redirects
                        .push(json!({"from": redirect.title, "to": page.title}));
                    Resolved::Page(page)
                }
                Lookup::Redirect(redirect, _) => Resolved::RedirectPage(redirect),
                Lookup::Missing => Resolved::Missing(normalized),
            };
            resolution.entries.push(entry);
        }
        for id in values(params, "pageids") {
            let entry = match id
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|id| self.corpus.by_id(id))
            {
                Some(Lookup::Page(page)) => Resolved::Page(page),
                Some(Lookup::Redirect(redirect, page)) if follow => {
                    resolution
                        .redirects
                        .push(json!({"from": redirect.title, "to": page.title}));
                    Resolved::Page(page)
                }
                Some(Lookup::Redirect(redirect, _)) => Resolved::RedirectPage(redirect),
                _ => Resolved::MissingId(id.trim().parse().unwrap_or(0)),
            };
            resolution.entries.push(entry);
        }
        resolution
    }

    fn query(&self, params: &Params, base_url: &str) -> Value {
        let mut out = Map::new();
        let mut query = Map::new();
        let mut continuation = Map::new();
        let mut warnings: Vec<String> = Vec::new();
        let props = values(params, "prop");
        for prop in &props {
            if ![
                "extracts",
                "info",
                "pageprops",
                "links",
                "categories",
                "revisions",
            ]
            .contains(prop)
            {
                warnings.push(format!("Unrecognized value for parameter \"prop\": {prop}"));
            }
        }
        for list in values(params, "list") {
            let answered = match list {
                "search" => self.search(params, &mut query, &mut continuation),
                "random" => self.random(params, &mut query),
                other => {
                    warnings.push(format!(
                        "Unrecognized value for parameter \"list\": {other}"
                    ));
                    Ok(())
                }
            };
            if let Err(error) = answered {
                return error;
            }
        }
        if params.contains_key("titles") || params.contains_key("pageids") {
            let resolution = self.resolve(params);
            if !resolution.normalized.is_empty() {
                query.insert("normalized".into(), Value::Array(resolution.normalized));
            }
            if !resolution.redirects.is_empty() {
                query.insert("redirects".into(), Value::Array(resolution.redirects));
            }
            let mut pages = Map::new();
            let mut missing = 0i64;
            for entry in &resolution.entries {
                let (key, value) = match entry {
                    Resolved::Page(page) => {
                        let mut value =
                            json!({"pageid": page.pageid, "ns": 0, "title": page.title});
                        match self.page_props(page, &props, params, base_url, &mut continuation) {
                            Ok(extra) => merge(&mut value, extra),
                            Err(error) => return error,
                        }
                        (page.pageid.to_string(), value)
                    }
                    Resolved::RedirectPage(redirect) => {
                        let mut value = json!({"pageid": redirect.pageid, "ns": 0, "title": redirect.title, "redirect": ""});
                        if props.contains(&"extracts") {
                            value["extract"] = json!("");
                        }
                        if props.contains(&"info") && values(params, "inprop").contains(&"url") {
                            value["fullurl"] = json!(article_url(base_url, &redirect.title));
                        }
                        (redirect.pageid.to_string(), value)
                    }
                    Resolved::Missing(title) => {
                        missing -= 1;
                        let mut value = json!({"ns": 0, "title": title, "missing": ""});
                        if props.contains(&"info") && values(params, "inprop").contains(&"url") {
                            value["fullurl"] = json!(article_url(base_url, title));
                            value["editurl"] =
                                json!(format!("{}?action=edit", article_url(base_url, title)));
                        }
                        (missing.to_string(), value)
                    }
                    Resolved::MissingId(id) => {
                        missing -= 1;
                        (missing.to_string(), json!({"pageid": id, "missing": ""}))
                    }
                    Resolved::Invalid(title, reason) => {
                        missing -= 1;
                        (
                            missing.to_string(),
                            json!({"title": title, "invalidreason": reason, "invalid": ""}),
                        )
                    }
                };
                pages.entry(key).or_insert(value);
            }
            query.insert("pages".into(), Value::Object(pages));
        }
        if !warnings.is_empty() {
            out.insert(
                "warnings".into(),
                json!({"query": {"*": warnings.join("\n")}}),
            );
        }
        if continuation.is_empty() {
            out.insert("batchcomplete".into(), json!(""));
        } else {
            out.insert("continue".into(), Value::Object(continuation));
        }
        if !query.is_empty() {
            out.insert("query".into(), Value::Object(query));
        }
        let out = Value::Object(out);
        if params.get("formatversion").map(String::as_str) == Some("2") {
            return to_formatversion_2(out);
        }
        out
    }

    fn page_props(
        &self,
        page: &Page,
        props: &[&str],
        params: &Params,
        base_url: &str,
        continuation: &mut Map<String, Value>,
    ) -> Result<Value, Value> {
        let mut value = json!({});
        if props.contains(&"extracts") {
            value["extract"] = json!(extract_of(page, params));
        }
        if props.contains(&"info") {
            let inprop = values(params, "inprop");
            merge(
                &mut value,
                json!({
                    "contentmodel": "wikitext", "pagelanguage": "en", "pagelanguagehtmlcode": "en",
                    "pagelanguagedir": "ltr", "touched": TIMESTAMP, "lastrevid": page.revid(),
                    "length": page.size(),
                }),
            );
            if inprop.contains(&"url") {
                let url = article_url(base_url, &page.title);
                merge(
                    &mut value,
                    json!({
                        "fullurl": url, "editurl": format!("{url}?action=edit"), "canonicalurl": url,
                    }),
                );
            }
            if inprop.contains(&"displaytitle") {
                value["displaytitle"] = json!(page.title);
            }
        }
        if props.contains(&"pageprops") {
            let wanted = values(params, "ppprop");
            let mut pageprops = Map::new();
            if page.disambiguation && (wanted.is_empty() || wanted.contains(&"disambiguation")) {
                pageprops.insert("disambiguation".into(), json!(""));
            }
            if !page.description.is_empty()
                && (wanted.is_empty() || wanted.contains(&"wikibase-shortdesc"))
            {
                pageprops.insert("wikibase-shortdesc".into(), json!(page.description));
            }
            if !pageprops.is_empty() {
                value["pageprops"] = Value::Object(pageprops);
            }
        }
        if props.contains(&"links") {
            let namespaces = values(params, "plnamespace");
            let links: Vec<&String> = if namespaces.is_empty() || namespaces.contains(&"0") {
                page.links.iter().collect()
            } else {
                Vec::new()
            };
            let limit = limit(params, "pllimit", 10)?;
            let (batch, next) = continued(
                &links,
                page.pageid,
                params.get("plcontinue"),
                limit,
                |title| title.as_str(),
            )?;
            if !batch.is_empty() {
                value["links"] =
                    Value::Array(batch.iter().map(|t| json!({"ns": 0, "title": t})).collect());
            }
            if let Some(next) = next {
                continuation.insert(
                    "plcontinue".into(),
                    json!(format!("{}|0|{}", page.pageid, next)),
                );
                continuation.insert("continue".into(), json!("||"));
            }
        }
        if props.contains(&"categories") {
            let categories: Vec<&String> = page.categories.iter().collect();
            let limit = limit(params, "cllimit", 10)?;
            let cursor = params.get("clcontinue").map(|c| c.replacen('|', "|0|", 1));
            let (batch, next) = continued(&categories, page.pageid, cursor.as_ref(), limit, |c| {
                c.as_str()
            })?;
            if !batch.is_empty() {
                value["categories"] = Value::Array(
                    batch
                        .iter()
                        .map(|c| json!({"ns": 14, "title": format!("Category:{c}")}))
                        .collect(),
                );
            }
            if let Some(next) = next {
                continuation.insert(
                    "clcontinue".into(),
                    json!(format!("{}|{}", page.pageid, next)),
                );
                continuation.insert("continue".into(), json!("||"));
            }
        }
        if props.contains(&"revisions") {
            let rvprop = values(params, "rvprop");
            let rvprop = if rvprop.is_empty() {
                vec!["ids", "timestamp", "flags", "comment", "user"]
            } else {
                rvprop
            };
            let mut revision = json!({});
            if rvprop.contains(&"ids") {
                merge(&mut revision, json!({"revid": page.revid(), "parentid": 0}));
            }
            if rvprop.contains(&"timestamp") {
                revision["timestamp"] = json!(TIMESTAMP);
            }
            if rvprop.contains(&"user") {
                revision["user"] = json!("Kiln");
            }
            if rvprop.contains(&"comment") {
                revision["comment"] = json!("");
            }
            if rvprop.contains(&"content") {
                if flag(params, "rvparse") {
                    revision["*"] = json!(page_html(page));
                } else {
                    let source: Vec<String> = page
                        .sections
                        .iter()
                        .map(|s| {
                            if s.level > 1 {
                                let marks = "=".repeat(s.level);
                                format!("{marks} {} {marks}\n{}", s.heading, s.source)
                            } else {
                                s.source.clone()
                            }
                        })
                        .collect();
                    merge(
                        &mut revision,
                        json!({"contentformat": "text/x-wiki", "contentmodel": "wikitext", "*": source.join("\n")}),
                    );
                }
            }
            value["revisions"] = json!([revision]);
        }
        Ok(value)
    }

    fn search(
        &self,
        params: &Params,
        query: &mut Map<String, Value>,
        continuation: &mut Map<String, Value>,
    ) -> Result<(), Value> {
        let Some(text) = params.get("srsearch").filter(|q| !q.trim().is_empty()) else {
            return Err(api_error(
                "nosrsearch",
                "The \"srsearch\" parameter must be set.",
            ));
        };
        let limit = limit(params, "srlimit", 10)?;
        let offset: usize = match params.get("sroffset") {
            None => 0,
            Some(offset) => offset.trim().parse().map_err(|_| {
                api_error(
                    "badinteger",
                    &format!("Invalid value \"{offset}\" for integer parameter \"sroffset\"."),
                )
            })?,
        };
        let hits: Vec<&Page> = match params.get("srwhat").map(String::as_str) {
            Some("nearmatch") => match self.corpus.lookup(&normalize_title(text)) {
                Lookup::Page(page) | Lookup::Redirect(_, page) => vec![page],
                Lookup::Missing => Vec::new(),
            },
            Some("title") => {
                let wanted = tokens(text);
                self.index
                    .search(text)
                    .into_iter()
                    .map(|hit| &self.corpus.pages()[hit.page])
                    .filter(|page| tokens(&page.title).iter().any(|t| wanted.contains(t)))
                    .collect()
            }
            _ => self
                .index
                .search(text)
                .into_iter()
                .map(|hit| &self.corpus.pages()[hit.page])
                .collect(),
        };
        let srprop: Vec<&str> = match params.get("srprop") {
            None => vec!["size", "wordcount", "timestamp", "snippet"],
            Some(_) => values(params, "srprop"),
        };
        let results: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|page| {
                let mut result = json!({"ns": 0, "title": page.title, "pageid": page.pageid});
                if srprop.contains(&"size") {
                    result["size"] = json!(page.size());
                }
                if srprop.contains(&"wordcount") {
                    result["wordcount"] = json!(page.word_count());
                }
                if srprop.contains(&"snippet") {
                    result["snippet"] = json!(snippet(&page.plain_text(), text));
                }
                if srprop.contains(&"titlesnippet") {
                    result["titlesnippet"] = json!(snippet(&page.title, text));
                }
                if srprop.contains(&"timestamp") {
                    result["timestamp"] = json!(TIMESTAMP);
                }
                result
            })
            .collect();
        let srinfo: Vec<&str> = match params.get("srinfo") {
            None => vec!["totalhits", "suggestion"],
            Some(_) => values(params, "srinfo"),
        };
        if srinfo.contains(&"totalhits") {
            query.insert("searchinfo".into(), json!({"totalhits": hits.len()}));
        }
        query.insert("search".into(), Value::Array(results));
        if offset + limit < hits.len() {
            continuation.insert("sroffset".into(), json!(offset + limit));
            continuation.insert("continue".into(), json!("-||"));
        }
        Ok(())
    }

    fn random(&self, params: &Params, query: &mut Map<String, Value>) -> Result<(), Value> {
        let limit = limit(params, "rnlimit", 1)?;
        let namespaces = values(params, "rnnamespace");
        let pages = self.corpus.pages();
        if !(namespaces.is_empty() || namespaces.contains(&"0")) {
            query.insert("random".into(), json!([]));
            return Ok(());
        }
        let mut state = self
            .random_state
            .fetch_add(kiln_protocol::rng::GAMMA, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..pages.len()).collect();
        // Fisher–Yates with SplitMix64: a fresh draw per request, distinct pages within it.
        for end in (1..order.len()).rev() {
            let z = kiln_protocol::rng::splitmix64(&mut state);
            order.swap(end, (z % (end as u64 + 1)) as usize);
        }
        let random: Vec<Value> = order
            .iter()
            .take(limit)
            .map(|index| json!({"id": pages[*index].pageid, "ns": 0, "title": pages[*index].title}))
            .collect();
        query.insert("random".into(), Value::Array(random));
        Ok(())
    }

    fn parse(&self, params: &Params) -> Value {
        // `page` is MediaWiki's; `title`, `titles` and `pageids` are accepted too, as clients
        // (`wikipedia` 1.4.0's `sections`) send them.
        let requested = ["page", "title", "titles"]
            .iter()
            .find_map(|name| params.get(*name))
            .map(|value| value.split('|').next().unwrap_or("").to_string());
        let by_id = ["pageid", "pageids"]
            .iter()
            .find_map(|name| params.get(*name))
            .and_then(|id| id.split('|').next()?.trim().parse::<u64>().ok());
        let (page, redirect) = match (&requested, by_id) {
            (Some(title), _) => {
                if let Some(reason) = invalid_reason(title) {
                    return api_error("invalidtitle", &format!("Bad title \"{title}\": {reason}"));
                }
                match self.corpus.lookup(&normalize_title(title)) {
                    Lookup::Page(page) => (page, None),
                    Lookup::Redirect(redirect, page) if flag(params, "redirects") => {
                        (page, Some(redirect))
                    }
                    // Without `redirects`, a redirect page parses as itself: a pointer to its target.
                    Lookup::Redirect(_, page) => (page, None),
                    Lookup::Missing => {
                        return api_error("missingtitle", "The page you specified doesn't exist.");
                    }
                }
            }
            (None, Some(id)) => match self.corpus.by_id(id) {
                Some(Lookup::Page(page)) | Some(Lookup::Redirect(_, page)) => (page, None),
                _ => return api_error("nosuchpageid", &format!("There is no page with ID {id}.")),
            },
            (None, None) => {
                return api_error(
                    "missingparam",
                    "One of the parameters \"title\", \"page\" and \"pageid\" is required.",
                );
            }
        };
        let props = match params.get("prop") {
            None => vec![
                "text",
                "sections",
                "links",
                "categories",
                "revid",
                "displaytitle",
            ],
            Some(_) => values(params, "prop"),
        };
        let mut parse = json!({"title": page.title, "pageid": page.pageid});
        if let Some(redirect) = redirect {
            parse["redirects"] = json!([{"from": redirect.title, "to": page.title}]);
        }
        if props.contains(&"revid") {
            parse["revid"] = json!(page.revid());
        }
        if props.contains(&"displaytitle") {
            parse["displaytitle"] = json!(page.title);
        }
        if props.contains(&"text") {
            parse["text"] = json!({"*": page_html(page)});
        }
        if props.contains(&"sections") {
            let mut numbers: Vec<usize> = Vec::new();
            let sections: Vec<Value> = page
                .sections
                .iter()
                .filter(|s| s.level > 1)
                .enumerate()
                .map(|(index, section)| {
                    let depth = section.level - 1;
                    numbers.truncate(depth);
                    while numbers.len() < depth {
                        numbers.push(0);
                    }
                    numbers[depth - 1] += 1;
                    let number: Vec<String> = numbers.iter().map(|n| n.max(&1).to_string()).collect();
                    json!({
                        "toclevel": depth, "level": section.level.to_string(), "line": section.heading,
                        "number": number.join("."), "index": (index + 1).to_string(),
                        "fromtitle": encode_title(&page.title), "byteoffset": Value::Null,
                        "anchor": anchor(&section.heading),
                    })
                })
                .collect();
            parse["sections"] = Value::Array(sections);
        }
        if props.contains(&"links") {
            parse["links"] = Value::Array(
                page.links
                    .iter()
                    .map(|link| {
                        let mut value = json!({"ns": 0, "*": link});
                        if !matches!(self.corpus.lookup(link), Lookup::Missing) {
                            value["exists"] = json!("");
                        }
                        value
                    })
                    .collect(),
            );
        }
        if props.contains(&"categories") {
            parse["categories"] = Value::Array(
                page.categories
                    .iter()
                    .map(|c| json!({"sortkey": "", "*": anchor(c)}))
                    .collect(),
            );
        }
        json!({"parse": parse})
    }

    fn opensearch(&self, params: &Params, base_url: &str) -> Value {
        let Some(text) = params.get("search") else {
            return api_error("nosearch", "The \"search\" parameter must be set.");
        };
        let limit = match limit(params, "limit", 10) {
            Ok(limit) => limit,
            Err(error) => return error,
        };
        let prefix = normalize_title(text).to_lowercase();
        let mut titles: Vec<String> = Vec::new();
        let push = |title: &str, titles: &mut Vec<String>| {
            if titles.len() < limit && !titles.iter().any(|t| t == title) {
                titles.push(title.to_string());
            }
        };
        if !prefix.is_empty() {
            for page in self.corpus.pages() {
                if page.title.to_lowercase().starts_with(&prefix) {
                    push(&page.title, &mut titles);
                }
            }
            for page in self.corpus.pages() {
                if page
                    .redirects
                    .iter()
                    .any(|r| r.to_lowercase().starts_with(&prefix))
                {
                    push(&page.title, &mut titles);
                }
            }
            for hit in self.index.search(text) {
                push(&self.corpus.pages()[hit.page].title, &mut titles);
            }
        }
        let descriptions: Vec<String> = titles
            .iter()
            .map(|title| {
                self.corpus
                    .page(title)
                    .map(|p| p.description.clone())
                    .unwrap_or_default()
            })
            .collect();
        let urls: Vec<String> = titles
            .iter()
            .map(|title| article_url(base_url, title))
            .collect();
        json!([text, titles, descriptions, urls])
    }
}

/// One batch of a continued list: items after the cursor `pageid|0|item` (when it names this
/// page), at most `limit`, and the item the next batch starts at.
fn continued<'a, T>(
    items: &'a [T],
    pageid: u64,
    cursor: Option<&String>,
    limit: usize,
    name: impl Fn(&T) -> &str,
) -> Result<(Vec<&'a T>, Option<String>), Value> {
    let start = match cursor {
        None => 0,
        Some(cursor) => {
            let mut parts = cursor.splitn(3, '|');
            let id = parts.next().and_then(|id| id.parse::<u64>().ok());
            let _namespace = parts.next();
            let item = parts.next();
            match (id, item) {
                (Some(id), Some(item)) if id == pageid => items
                    .iter()
                    .position(|candidate| name(candidate) == item)
                    .unwrap_or(items.len()),
                (Some(id), Some(_)) if id > pageid => return Ok((Vec::new(), None)),
                (Some(_), Some(_)) => 0,
                _ => {
                    return Err(api_error(
                        "badcontinue",
                        "Invalid continue param. You should pass the original value returned by the previous query.",
                    ));
                }
            }
        }
    };
    let batch: Vec<&T> = items.iter().skip(start).take(limit).collect();
    let next = items.get(start + limit).map(|item| name(item).to_string());
    Ok((batch, next))
}

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(extra)) = (target, extra) {
        target.extend(extra);
    }
}

/// `formatversion=2`: `pages` is a list, and `""` flags are `true`.
fn to_formatversion_2(mut out: Value) -> Value {
    if let Some(object) = out
        .as_object_mut()
        .filter(|object| object.contains_key("batchcomplete"))
    {
        object.insert("batchcomplete".into(), json!(true));
    }
    let Some(pages) = out.pointer_mut("/query/pages") else {
        return out;
    };
    if let Value::Object(map) = pages {
        let list = std::mem::take(map)
            .into_iter()
            .map(|(_, mut page)| {
                if let Value::Object(fields) = &mut page {
                    for flag in ["missing", "invalid", "redirect"] {
                        if fields.contains_key(flag) {
                            fields.insert(flag.into(), json!(true));
                        }
                    }
                }
                page
            })
            .collect();
        *pages = Value::Array(list);
    }
    out
}

/// Plain text of `[[…]]` markup (re-exported for the HTML front end).
pub fn plain(source: &str) -> String {
    strip_links(source).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiki() -> Wiki {
        let corpus = Corpus::from_values(&[
            json!({"title": "Mercury (planet)", "text": "Mercury is the closest planet to the [[Sun]]. It is small.\n== Orbit ==\nIt orbits in 88 days.\n=== Period ===\nFast.", "redirects": ["Planet Mercury"], "categories": ["Planets", "Inner planets"], "links": ["Venus", "Earth", "Mars"], "description": "Planet"}),
            json!({"title": "Sun", "text": "The Sun is a star."}),
            json!({"title": "Mercury", "text": "Mercury may refer to:\n* [[Mercury (planet)]], the planet\n* [[Mercury (element)]], the element", "disambiguation": true}),
        ])
        .unwrap();
        Wiki::new(corpus)
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: &str = "http://wiki.test";

    #[test]
    fn extracts_follow_redirects_and_report_missing_pages() {
        let wiki = wiki();
        let answer = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "extracts"),
                ("explaintext", "1"),
                ("titles", "planet_Mercury|Nope"),
                ("redirects", "1"),
                ("format", "json"),
            ]),
            BASE,
        );
        assert_eq!(answer["batchcomplete"], "");
        assert_eq!(
            answer["query"]["normalized"],
            json!([{"from": "planet_Mercury", "to": "Planet Mercury"}])
        );
        assert_eq!(
            answer["query"]["redirects"],
            json!([{"from": "Planet Mercury", "to": "Mercury (planet)"}])
        );
        assert_eq!(
            answer["query"]["pages"]["1"]["extract"],
            "Mercury is the closest planet to the Sun. It is small.\n\n== Orbit ==\nIt orbits in 88 days.\n\n=== Period ===\nFast."
        );
        assert_eq!(
            answer["query"]["pages"]["-1"],
            json!({"ns": 0, "title": "Nope", "missing": ""})
        );
        let intro = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "extracts"),
                ("explaintext", ""),
                ("exsentences", "1"),
                ("titles", "Mercury (planet)"),
            ]),
            BASE,
        );
        assert_eq!(
            intro["query"]["pages"]["1"]["extract"],
            "Mercury is the closest planet to the Sun."
        );
        let v2 = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "extracts"),
                ("exintro", ""),
                ("explaintext", ""),
                ("titles", "Nope|Sun"),
                ("formatversion", "2"),
            ]),
            BASE,
        );
        assert_eq!(v2["query"]["pages"][0]["missing"], true);
        assert_eq!(v2["query"]["pages"][1]["extract"], "The Sun is a star.");
    }

    #[test]
    fn search_ranks_with_snippets_and_continues() {
        let wiki = wiki();
        let answer = wiki.api(
            &params(&[
                ("action", "query"),
                ("list", "search"),
                ("srsearch", "mercury"),
                ("srlimit", "1"),
            ]),
            BASE,
        );
        assert_eq!(answer["query"]["searchinfo"]["totalhits"], 2);
        let first = &answer["query"]["search"][0];
        assert_eq!(first["title"], "Mercury");
        assert!(
            first["snippet"]
                .as_str()
                .unwrap()
                .contains("<span class=\"searchmatch\">Mercury</span>")
        );
        assert_eq!(
            answer["continue"],
            json!({"sroffset": 1, "continue": "-||"})
        );
        let next = wiki.api(
            &params(&[
                ("action", "query"),
                ("list", "search"),
                ("srsearch", "mercury"),
                ("srlimit", "1"),
                ("sroffset", "1"),
            ]),
            BASE,
        );
        assert_eq!(next["query"]["search"][0]["title"], "Mercury (planet)");
        assert!(next.get("continue").is_none());
        let missing = wiki.api(&params(&[("action", "query"), ("list", "search")]), BASE);
        assert_eq!(missing["error"]["code"], "nosrsearch");
    }

    #[test]
    fn info_pageprops_links_and_categories_page_through_continuation() {
        let wiki = wiki();
        let info = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "info|pageprops"),
                ("inprop", "url"),
                ("ppprop", "disambiguation"),
                ("titles", "Mercury"),
            ]),
            BASE,
        );
        let page = &info["query"]["pages"]["3"];
        assert_eq!(page["fullurl"], "http://wiki.test/wiki/Mercury");
        assert_eq!(page["pageprops"], json!({"disambiguation": ""}));
        let mut links = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut request = params(&[
                ("action", "query"),
                ("prop", "links"),
                ("plnamespace", "0"),
                ("pllimit", "2"),
                ("titles", "Mercury (planet)"),
            ]);
            if let Some(cursor) = &cursor {
                request.insert("plcontinue".into(), cursor.clone());
            }
            let answer = wiki.api(&request, BASE);
            for link in answer["query"]["pages"]["1"]["links"].as_array().unwrap() {
                links.push(link["title"].as_str().unwrap().to_string());
            }
            match answer["continue"]["plcontinue"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        assert_eq!(links, ["Sun", "Venus", "Earth", "Mars"]);
        let categories = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "categories"),
                ("cllimit", "1"),
                ("titles", "Mercury (planet)"),
            ]),
            BASE,
        );
        assert_eq!(
            categories["query"]["pages"]["1"]["categories"],
            json!([{"ns": 14, "title": "Category:Planets"}])
        );
        assert_eq!(categories["continue"]["clcontinue"], "1|Inner planets");
        let bad = wiki.api(
            &params(&[
                ("action", "query"),
                ("prop", "links"),
                ("titles", "Sun"),
                ("plcontinue", "x"),
            ]),
            BASE,
        );
        assert_eq!(bad["error"]["code"], "badcontinue");
    }

    #[test]
    fn parse_opensearch_random_and_errors() {
        let wiki = wiki();
        let parsed = wiki.api(
            &params(&[
                ("action", "parse"),
                ("page", "Mercury"),
                ("prop", "text|sections"),
            ]),
            BASE,
        );
        let html = parsed["parse"]["text"]["*"].as_str().unwrap();
        assert!(html.contains("<li><a href=\"/wiki/Mercury_(planet)\" title=\"Mercury (planet)\">Mercury (planet)</a>, the planet</li>"), "{html}");
        let sections = wiki.api(
            &params(&[
                ("action", "parse"),
                ("page", "Mercury (planet)"),
                ("prop", "sections"),
            ]),
            BASE,
        );
        assert_eq!(sections["parse"]["sections"][1]["number"], "1.1");
        assert_eq!(sections["parse"]["sections"][0]["line"], "Orbit");
        let missing = wiki.api(&params(&[("action", "parse"), ("page", "Nope")]), BASE);
        assert_eq!(
            missing,
            api_error("missingtitle", "The page you specified doesn't exist.")
        );
        let open = wiki.api(
            &params(&[("action", "opensearch"), ("search", "merc")]),
            BASE,
        );
        assert_eq!(open[1], json!(["Mercury (planet)", "Mercury"]));
        assert_eq!(open[3][0], "http://wiki.test/wiki/Mercury_(planet)");
        let random = wiki.api(
            &params(&[
                ("action", "query"),
                ("list", "random"),
                ("rnlimit", "3"),
                ("rnnamespace", "0"),
            ]),
            BASE,
        );
        let mut ids: Vec<u64> = random["query"]["random"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            wiki.api(&params(&[("action", "edit")]), BASE)["error"]["code"],
            "badvalue"
        );
        let warned = wiki.api(
            &params(&[("action", "query"), ("prop", "images"), ("titles", "Sun")]),
            BASE,
        );
        assert!(
            warned["warnings"]["query"]["*"]
                .as_str()
                .unwrap()
                .contains("images")
        );
    }
}

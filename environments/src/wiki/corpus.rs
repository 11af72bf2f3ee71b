//! The pages a local wiki serves.
//!
//! **Corpus format**: JSON lines, one page per line (a file, or a folder holding `pages.jsonl`):
//! `{"title": "Mercury (planet)", "text": "…", "links": ["Sun"], "categories": ["Planets"],
//! "redirects": ["Planet Mercury"], "disambiguation": false, "description": "…"}`. Only `title`
//! and `text` are required. In `text`, a line `== Heading ==` starts a section (`=== … ===` one
//! level down), a line starting `* ` is a list item, and `[[Target]]` / `[[Target|label]]` is a
//! link (shown as its label; its target joins `links`). Page ids are 1-based line order among the
//! pages; each redirect gets its own id after them.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::{EnvError, EnvErrorKind};

#[derive(Debug, Clone, Deserialize)]
struct PageRecord {
    title: String,
    text: String,
    #[serde(default)]
    links: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    redirects: Vec<String>,
    #[serde(default)]
    disambiguation: bool,
    #[serde(default)]
    description: Option<String>,
}

/// One section of a page: heading level 1 is the lead (no heading), 2 is `==`, 3 is `===`, …
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub level: usize,
    pub heading: String,
    /// Plain text (links shown as their labels).
    pub text: String,
    /// The section's source lines (with `[[…]]` and `* ` markup), for HTML rendering.
    pub source: String,
}

/// One article.
#[derive(Debug, Clone)]
pub struct Page {
    pub pageid: u64,
    pub title: String,
    pub sections: Vec<Section>,
    /// Linked titles, in first-seen order, without duplicates.
    pub links: Vec<String>,
    /// Category names without the `Category:` prefix.
    pub categories: Vec<String>,
    pub disambiguation: bool,
    pub description: String,
    /// Titles that redirect here.
    pub redirects: Vec<String>,
}

impl Page {
    /// The whole plain text (sections joined as MediaWiki's plain extracts join them).
    pub fn plain_text(&self) -> String {
        let mut text = String::new();
        for section in &self.sections {
            if section.level > 1 {
                let marks = "=".repeat(section.level);
                text.push_str(&format!("\n\n{marks} {} {marks}\n", section.heading));
            }
            text.push_str(&section.text);
        }
        text.trim_start().to_string()
    }

    pub fn lead(&self) -> &str {
        self.sections.first().map(|s| s.text.as_str()).unwrap_or("")
    }

    pub fn word_count(&self) -> usize {
        self.sections
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum()
    }

    pub fn size(&self) -> usize {
        self.sections.iter().map(|s| s.source.len()).sum()
    }

    /// The revision id: stable per page (the corpus has one revision of each).
    pub fn revid(&self) -> u64 {
        1_000_000 + self.pageid
    }
}

/// A redirect title and its target, with the redirect's own page id.
#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub pageid: u64,
    pub title: String,
    pub target: String,
}

/// Where a title leads.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    Page(&'a Page),
    Redirect(&'a Redirect, &'a Page),
    Missing,
}

/// All pages, indexed by title, id and redirect.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pages: Vec<Page>,
    redirects: Vec<Redirect>,
    by_title: HashMap<String, usize>,
    by_redirect: HashMap<String, usize>,
}

fn data_error(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Data, message)
}

/// MediaWiki's title normalization: `_` is a space, runs of spaces collapse, the ends are trimmed,
/// the first letter is upper case.
pub fn normalize_title(title: &str) -> String {
    let spaced = title.replace('_', " ");
    let joined = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = joined.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why a title is invalid (`None` if valid): empty, or with a character MediaWiki forbids.
pub fn invalid_reason(title: &str) -> Option<String> {
    if normalize_title(title).is_empty() {
        return Some(
            "The requested page title is empty or contains only the name of a namespace."
                .to_string(),
        );
    }
    title
        .chars()
        .find(|c| "#<>[]|{}".contains(*c) || c.is_control())
        .map(|c| format!("The requested page title contains invalid characters: \"{c}\"."))
}

/// Splits `[[Target|label]]` markup: the plain text and the link targets, in order.
pub fn strip_links(source: &str) -> (String, Vec<String>) {
    let mut plain = String::with_capacity(source.len());
    let mut targets = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("[[") {
        let Some(length) = rest[start + 2..].find("]]") else {
            break;
        };
        plain.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + 2 + length];
        let (target, label) = inner.split_once('|').unwrap_or((inner, inner));
        plain.push_str(label);
        targets.push(normalize_title(target));
        rest = &rest[start + 2 + length + 2..];
    }
    plain.push_str(rest);
    (plain, targets)
}

/// The heading of a `== Heading ==` line and its level, if the line is one.
fn heading_of(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim();
    let level = trimmed.chars().take_while(|c| *c == '=').count();
    if !(2..=6).contains(&level)
        || !trimmed.ends_with(&"=".repeat(level))
        || trimmed.len() <= 2 * level
    {
        return None;
    }
    let heading = trimmed[level..trimmed.len() - level].trim();
    (!heading.is_empty()).then(|| (level, heading.to_string()))
}

fn sections_of(text: &str) -> (Vec<Section>, Vec<String>) {
    let mut sections = vec![Section {
        level: 1,
        heading: String::new(),
        text: String::new(),
        source: String::new(),
    }];
    for line in text.lines() {
        if let Some((level, heading)) = heading_of(line) {
            sections.push(Section {
                level,
                heading,
                text: String::new(),
                source: String::new(),
            });
            continue;
        }
        let current = sections.last_mut().expect("the lead is always there");
        current.source.push_str(line);
        current.source.push('\n');
    }
    let mut links = Vec::new();
    for section in &mut sections {
        section.source = section.source.trim().to_string();
        let (plain, targets) = strip_links(&section.source);
        section.text = plain
            .lines()
            .map(|line| line.strip_prefix("* ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        links.extend(targets);
    }
    (sections, links)
}

impl Corpus {
    /// Reads a corpus (see the module docs); a bad line is an error naming file and line.
    pub fn load(path: &Path) -> Result<Self, EnvError> {
        let file = if path.is_dir() {
            path.join("pages.jsonl")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|error| {
            data_error(format!(
                "cannot read the wiki corpus {}: {error} (expected JSON lines of pages, or a folder with pages.jsonl)",
                file.display()
            ))
        })?;
        let mut records = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: PageRecord = serde_json::from_str(line).map_err(|error| {
                data_error(format!(
                    "{} line {}: {error} (expected {{\"title\", \"text\", …}})",
                    file.display(),
                    index + 1
                ))
            })?;
            records.push(record);
        }
        Self::from_records(records)
            .map_err(|message| data_error(format!("{}: {message}", file.display())))
    }

    /// A corpus from JSON values (tests, generators).
    pub fn from_values(values: &[serde_json::Value]) -> Result<Self, EnvError> {
        let records = values
            .iter()
            .map(|value| serde_json::from_value::<PageRecord>(value.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| data_error(format!("bad wiki page: {error}")))?;
        Self::from_records(records).map_err(data_error)
    }

    fn from_records(records: Vec<PageRecord>) -> Result<Self, String> {
        let mut corpus = Corpus::default();
        for record in records {
            let title = normalize_title(&record.title);
            if let Some(reason) = invalid_reason(&record.title) {
                return Err(format!("page title {:?}: {reason}", record.title));
            }
            if corpus.by_title.contains_key(&title) {
                return Err(format!("two pages are titled {title:?}"));
            }
            let (sections, mut links) = sections_of(&record.text);
            links.extend(record.links.iter().map(|link| normalize_title(link)));
            let mut seen = std::collections::HashSet::new();
            links.retain(|link| !link.is_empty() && seen.insert(link.clone()));
            let index = corpus.pages.len();
            corpus.by_title.insert(title.clone(), index);
            corpus.pages.push(Page {
                pageid: index as u64 + 1,
                title,
                sections,
                links,
                categories: record
                    .categories
                    .iter()
                    .map(|c| normalize_title(c.strip_prefix("Category:").unwrap_or(c)))
                    .collect(),
                disambiguation: record.disambiguation,
                description: record.description.unwrap_or_default(),
                redirects: record
                    .redirects
                    .iter()
                    .map(|r| normalize_title(r))
                    .collect(),
            });
        }
        let mut next_id = corpus.pages.len() as u64 + 1;
        for index in 0..corpus.pages.len() {
            for from in corpus.pages[index].redirects.clone() {
                if corpus.by_title.contains_key(&from) || corpus.by_redirect.contains_key(&from) {
                    return Err(format!(
                        "redirect {from:?} is also a page or another redirect"
                    ));
                }
                corpus
                    .by_redirect
                    .insert(from.clone(), corpus.redirects.len());
                corpus.redirects.push(Redirect {
                    pageid: next_id,
                    title: from,
                    target: corpus.pages[index].title.clone(),
                });
                next_id += 1;
            }
        }
        if corpus.pages.is_empty() {
            return Err("the corpus has no pages".to_string());
        }
        Ok(corpus)
    }

    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// The page with this exact (normalized) title.
    pub fn page(&self, title: &str) -> Option<&Page> {
        self.by_title.get(title).map(|index| &self.pages[*index])
    }

    /// A page or redirect by id.
    pub fn by_id(&self, pageid: u64) -> Option<Lookup<'_>> {
        let pages = self.pages.len() as u64;
        if (1..=pages).contains(&pageid) {
            return Some(Lookup::Page(&self.pages[pageid as usize - 1]));
        }
        let redirect = self
            .redirects
            .get(pageid.checked_sub(pages + 1)? as usize)?;
        Some(Lookup::Redirect(redirect, self.page(&redirect.target)?))
    }

    /// Where a normalized title leads.
    pub fn lookup(&self, title: &str) -> Lookup<'_> {
        if let Some(page) = self.page(title) {
            return Lookup::Page(page);
        }
        match self.by_redirect.get(title) {
            Some(index) => {
                let redirect = &self.redirects[*index];
                match self.page(&redirect.target) {
                    Some(page) => Lookup::Redirect(redirect, page),
                    None => Lookup::Missing,
                }
            }
            None => Lookup::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pages_parse_sections_links_and_redirects() {
        let corpus = Corpus::from_values(&[
            json!({"title": "mercury_(planet)", "text": "Mercury is the [[Sun|sun]]'s closest planet.\n== Orbit ==\nIt orbits in 88 days.\n=== Details ===\n* fast", "redirects": ["Planet Mercury"], "categories": ["Category:Planets"]}),
            json!({"title": "Sun", "text": "A star.", "links": ["Mercury (planet)"]}),
        ])
        .unwrap();
        let mercury = corpus.page("Mercury (planet)").unwrap();
        assert_eq!(mercury.pageid, 1);
        assert_eq!(mercury.links, ["Sun"]);
        assert_eq!(mercury.categories, ["Planets"]);
        assert_eq!(mercury.lead(), "Mercury is the sun's closest planet.");
        assert_eq!(
            mercury.plain_text(),
            "Mercury is the sun's closest planet.\n\n== Orbit ==\nIt orbits in 88 days.\n\n=== Details ===\nfast"
        );
        match corpus.lookup("Planet Mercury") {
            Lookup::Redirect(redirect, page) => {
                assert_eq!(
                    (redirect.pageid, page.title.as_str()),
                    (3, "Mercury (planet)")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(corpus.by_id(3), Some(Lookup::Redirect(..))));
        assert!(matches!(corpus.lookup("Venus"), Lookup::Missing));
        assert_eq!(normalize_title("  the_sun  is "), "The sun is");
        assert!(invalid_reason("a|b").is_some() && invalid_reason("").is_some());
    }

    #[test]
    fn bad_corpora_are_errors_naming_the_problem() {
        let duplicate = Corpus::from_values(&[
            json!({"title": "A", "text": ""}),
            json!({"title": "a", "text": ""}),
        ]);
        assert!(duplicate.unwrap_err().to_string().contains("two pages"));
        let missing = Corpus::from_values(&[json!({"title": "A"})]);
        assert!(missing.unwrap_err().to_string().contains("text"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pages.jsonl"),
            "{\"title\": \"A\", \"text\": \"x\"}\nnope\n",
        )
        .unwrap();
        let error = Corpus::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}

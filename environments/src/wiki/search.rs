//! BM25 full-text search over a [`Corpus`], with MediaWiki-style snippets.
//!
//! Documents are a page's title (counted [`TITLE_WEIGHT`] times, so a title match ranks first, as
//! CirrusSearch's title boost does) plus its plain text. Tokens are lowercase alphanumeric runs.
//! k1 = 1.2, b = 0.75 (Robertson's defaults).

use std::collections::HashMap;

use super::corpus::Corpus;

const K1: f64 = 1.2;
const B: f64 = 0.75;
/// How many times the title's tokens count.
pub const TITLE_WEIGHT: usize = 5;
/// Words of context a snippet shows.
const SNIPPET_WORDS: usize = 24;

/// Lowercase alphanumeric tokens of `text`.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The index: per term, the pages holding it and how often.
#[derive(Debug, Clone, Default)]
pub struct SearchIndex {
    postings: HashMap<String, Vec<(usize, u32)>>,
    lengths: Vec<u32>,
    average_length: f64,
}

/// One hit: the page's index in the corpus and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub page: usize,
    pub score: f64,
}

impl SearchIndex {
    pub fn build(corpus: &Corpus) -> Self {
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(corpus.pages().len());
        for (index, page) in corpus.pages().iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let title = tokens(&page.title);
            for _ in 0..TITLE_WEIGHT {
                for token in &title {
                    *counts.entry(token.clone()).or_default() += 1;
                }
            }
            for token in tokens(&page.plain_text()) {
                *counts.entry(token).or_default() += 1;
            }
            lengths.push(counts.values().sum());
            for (term, count) in counts {
                postings.entry(term).or_default().push((index, count));
            }
        }
        let average_length =
            lengths.iter().map(|l| f64::from(*l)).sum::<f64>() / lengths.len().max(1) as f64;
        Self {
            postings,
            lengths,
            average_length,
        }
    }

    /// Pages matching any query term, best first (ties by corpus order).
    pub fn search(&self, query: &str) -> Vec<Hit> {
        let documents = self.lengths.len() as f64;
        let mut scores: HashMap<usize, f64> = HashMap::new();
        let mut terms = tokens(query);
        terms.sort();
        terms.dedup();
        for term in &terms {
            let Some(postings) = self.postings.get(term) else {
                continue;
            };
            let frequency = postings.len() as f64;
            let idf = ((documents - frequency + 0.5) / (frequency + 0.5) + 1.0).ln();
            for (page, count) in postings {
                let count = f64::from(*count);
                let length = f64::from(self.lengths[*page]);
                let norm = K1 * (1.0 - B + B * length / self.average_length.max(1.0));
                *scores.entry(*page).or_default() += idf * count * (K1 + 1.0) / (count + norm);
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .map(|(page, score)| Hit { page, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.page.cmp(&b.page)));
        hits
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A snippet of `text` around the first query term, matches wrapped in
/// `<span class="searchmatch">…</span>` (HTML-escaped otherwise).
pub fn snippet(text: &str, query: &str) -> String {
    let terms = tokens(query);
    let words: Vec<&str> = text.split_whitespace().collect();
    let matches = |word: &str| tokens(word).iter().any(|token| terms.contains(token));
    let first = words.iter().position(|word| matches(word)).unwrap_or(0);
    let start = first.saturating_sub(SNIPPET_WORDS / 3);
    let end = (start + SNIPPET_WORDS).min(words.len());
    words[start..end]
        .iter()
        .map(|word| {
            if matches(word) {
                format!("<span class=\"searchmatch\">{}</span>", escape_html(word))
            } else {
                escape_html(word)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn titles_rank_first_and_rare_terms_weigh_more() {
        let corpus = Corpus::from_values(&[
            json!({"title": "Sun", "text": "The Sun is the star at the centre of the Solar System."}),
            json!({"title": "Mercury (planet)", "text": "Mercury is the closest planet to the Sun. Mercury is small."}),
            json!({"title": "Venus", "text": "Venus is the second planet from the Sun."}),
        ])
        .unwrap();
        let index = SearchIndex::build(&corpus);
        let hits = index.search("mercury planet");
        assert_eq!(hits[0].page, 1);
        assert_eq!(hits.len(), 2);
        assert!(hits[0].score > hits[1].score);
        assert_eq!(index.search("Sun")[0].page, 0);
        assert!(index.search("jupiter").is_empty());
        assert_eq!(
            snippet("Mercury is the closest planet <to> the Sun.", "planet"),
            "Mercury is the closest <span class=\"searchmatch\">planet</span> &lt;to&gt; the Sun."
        );
    }
}

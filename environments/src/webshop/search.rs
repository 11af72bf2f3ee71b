//! BM25 search over the catalog, as WebShop's search engine ranks (it used a Lucene/pyserini index
//! over each product's lowercased title, description, first bullet point and option text).
//!
//! Tokens are lowercase alphanumeric runs (no stemming, no stop words). Scoring is Okapi BM25 with
//! k1 = 1.5, b = 0.75 and Lucene's non-negative idf `ln(1 + (N − df + 0.5)/(df + 0.5))`; a query
//! token counts once per occurrence in the query. Only documents matching at least one token are
//! returned, best first, ties by catalog order, at most [`MAX_RESULTS`].

use std::collections::HashMap;

use super::products::Product;

/// WebShop returns at most 50 results.
pub const MAX_RESULTS: usize = 50;
/// BM25 term-frequency saturation.
pub const K1: f32 = 1.5;
/// BM25 length normalisation.
pub const B: f32 = 0.75;

/// An inverted index over the products' search text.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    /// Token → (document, term frequency), documents ascending.
    postings: HashMap<String, Vec<(u32, u32)>>,
    doc_lengths: Vec<f32>,
    average_length: f32,
}

/// Lowercase alphanumeric tokens of `text`.
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty())
        .map(str::to_lowercase)
}

/// The text a product is indexed under: title, description, first bullet, option values.
pub fn document_text(product: &Product) -> String {
    let mut parts = vec![product.name.as_str(), product.description.as_str()];
    if let Some(first) = product.bullet_points.first() {
        parts.push(first);
    }
    parts.extend(product.option_values());
    parts.join(" ").to_lowercase()
}

impl SearchIndex {
    /// Indexes every product's [`document_text`]; document ids are catalog indices.
    pub fn build(products: &[Product]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut doc_lengths = Vec::with_capacity(products.len());
        for (doc, product) in products.iter().enumerate() {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut length = 0u32;
            for token in tokenize(&document_text(product)) {
                *counts.entry(token).or_default() += 1;
                length += 1;
            }
            doc_lengths.push(length as f32);
            for (token, count) in counts {
                postings.entry(token).or_default().push((doc as u32, count));
            }
        }
        for list in postings.values_mut() {
            list.sort_unstable();
        }
        let average_length = if doc_lengths.is_empty() {
            1.0
        } else {
            doc_lengths.iter().sum::<f32>() / doc_lengths.len() as f32
        };
        Self {
            postings,
            doc_lengths,
            average_length,
        }
    }

    /// Product indices for `keywords`, best first, at most [`MAX_RESULTS`].
    pub fn search(&self, keywords: &str) -> Vec<usize> {
        let documents = self.doc_lengths.len() as f32;
        let mut scores = vec![0f32; self.doc_lengths.len()];
        let mut matched = vec![false; self.doc_lengths.len()];
        for token in tokenize(keywords) {
            let Some(list) = self.postings.get(&token) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (documents - df + 0.5) / (df + 0.5)).ln();
            for &(doc, tf) in list {
                let doc = doc as usize;
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * self.doc_lengths[doc] / self.average_length);
                scores[doc] += idf * tf * (K1 + 1.0) / (tf + norm);
                matched[doc] = true;
            }
        }
        let mut hits: Vec<usize> = (0..scores.len()).filter(|&doc| matched[doc]).collect();
        let ranking = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        // Common words match most of the catalog: select the top 50 before sorting them.
        if hits.len() > MAX_RESULTS {
            hits.select_nth_unstable_by(MAX_RESULTS - 1, ranking);
            hits.truncate(MAX_RESULTS);
        }
        hits.sort_unstable_by(ranking);
        hits
    }
}

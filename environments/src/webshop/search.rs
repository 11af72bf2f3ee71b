//! BM25 search over the catalog, ranked as WebShop's search engine ranks.
//!
//! WebShop indexes each product with pyserini 0.17.0 (Anserini 0.14.3, Lucene 8.11) and searches
//! with `LuceneSearcher.search(keywords, k=50)`, all defaults. This module reproduces that:
//!
//! - **Document text** ([`document_text`]): `search_engine/convert_product_file_format.py`'s
//!   `contents`: title, description, first bullet point and `"name: v1, v2, and name2: …"` option
//!   text, joined by spaces and lowercased.
//! - **Analyzer** ([`analyze`]): Anserini's `DefaultEnglishAnalyzer`, which is Lucene's English
//!   chain: `StandardTokenizer` (UAX #29 word boundaries, tokens of at most 255 characters),
//!   `EnglishPossessiveFilter` (drops a trailing `'s`), `LowerCaseFilter`, `StopFilter` with
//!   Lucene's 33 English stop words, `PorterStemFilter` ([`super::porter`]).
//! - **Query**: Anserini's bag of words: each distinct analyzed term once, boosted by how often it
//!   occurs in the query.
//! - **Scoring**: Lucene 8's `BM25Similarity` with Anserini's k1 = 0.9, b = 0.4, in `f32` as
//!   Lucene computes it: idf = ln(1 + (N − n + 0.5)/(n + 0.5)), document lengths stored lossily
//!   in one byte (`SmallFloat.intToByte4`: exact below 24, then 4 significant bits), the average
//!   length exact; a term scores `w − w / (1 + tf / norm)` (`w` = boost × idf); a document's
//!   terms are summed in `f64` and rounded to `f32`, as Lucene's disjunction scorers do.
//! - **Order**: score descending, ties by ASIN ascending (Anserini sorts by score, then by the
//!   document id string); at most [`MAX_RESULTS`] hits, only documents matching some term.
//!
//! `environments/tests/webshop_search.rs` runs Anserini 0.14.3 itself (`ops/setup anserini`) on
//! the standard catalog and compares analyzed tokens and rankings in the same test.
//!
//! Known difference: word boundaries follow the Unicode version of the `unicode-segmentation`
//! crate (Lucene 8 uses Unicode 9 rules and also emits emoji as tokens, which Kiln drops); text
//! in ASCII and Latin scripts, which the synthetic catalog is, segments identically.

use std::collections::HashMap;

use unicode_segmentation::UnicodeSegmentation;

use super::porter;
use super::products::Product;

/// WebShop returns at most 50 results (`SEARCH_RETURN_N`).
pub const MAX_RESULTS: usize = 50;
/// BM25 term-frequency saturation: Anserini's default.
pub const K1: f32 = 0.9;
/// BM25 length normalisation: Anserini's default.
pub const B: f32 = 0.4;
/// `StandardTokenizer`'s default maximum token length; longer words are split into pieces.
pub const MAX_TOKEN_LENGTH: usize = 255;

/// Lucene's `EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`.
pub const ENGLISH_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The terms Lucene's English analyzer makes of `text`, in order.
pub fn analyze(text: &str) -> Vec<String> {
    standard_tokens(text)
        .map(strip_possessive)
        .map(lowercase)
        .filter(|token| !ENGLISH_STOP_WORDS.contains(&token.as_str()))
        .map(|token| porter::stem(&token))
        .collect()
}

/// `StandardTokenizer`: UAX #29 word segments that contain a letter or digit, split every
/// [`MAX_TOKEN_LENGTH`] characters.
fn standard_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split_word_bounds()
        .filter(|segment| segment.chars().any(char::is_alphanumeric))
        .flat_map(split_long)
}

fn split_long(token: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = token;
    while let Some((cut, _)) = rest.char_indices().nth(MAX_TOKEN_LENGTH) {
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces.push(rest);
    pieces
}

/// `EnglishPossessiveFilter`: a trailing `'s` (any of three apostrophes, `s` in either case).
fn strip_possessive(token: &str) -> &str {
    for apostrophe in ['\'', '\u{2019}', '\u{FF07}'] {
        for s in ['s', 'S'] {
            if let Some(stripped) = token
                .strip_suffix(s)
                .and_then(|rest| rest.strip_suffix(apostrophe))
            {
                return stripped;
            }
        }
    }
    token
}

/// `LowerCaseFilter`: Java's per-code-point `Character.toLowerCase` (a one-to-one mapping).
fn lowercase(token: &str) -> String {
    token
        .chars()
        .map(|ch| {
            let mut lower = ch.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(single), None) => single,
                // Only U+0130 lowercases to two characters; Java's simple mapping gives `i`.
                _ => 'i',
            }
        })
        .collect()
}

/// The text WebShop indexes for a product: title, description, first bullet point and option
/// text (`"color: red, blue, and size: small"`), joined by spaces and lowercased.
pub fn document_text(product: &Product) -> String {
    let options = product
        .options
        .iter()
        .map(|(name, values)| format!("{name}: {}", values.join(", ")))
        .collect::<Vec<_>>()
        .join(", and ");
    let first_bullet = product.bullet_points.first().map_or("", String::as_str);
    [
        product.name.as_str(),
        product.description.as_str(),
        first_bullet,
        options.as_str(),
    ]
    .join(" ")
    .to_lowercase()
}

/// Values below this are stored exactly by [`encode_length`] (Lucene's `NUM_FREE_VALUES`).
const EXACT_LENGTHS: u32 = 24;

/// Lucene's `SmallFloat.intToByte4`: a document length in one byte, exact below 24, then a
/// float-like code with 4 significant bits (order-preserving, rounding down).
pub fn encode_length(length: u32) -> u8 {
    if length < EXACT_LENGTHS {
        return length as u8;
    }
    let value = u64::from(length - EXACT_LENGTHS);
    let bits = 64 - value.leading_zeros();
    let code = if bits < 4 {
        value as u32
    } else {
        let shift = bits - 4;
        (((value >> shift) as u32) & 0x07) | ((shift + 1) << 3)
    };
    (EXACT_LENGTHS + code).min(255) as u8
}

/// Lucene's `SmallFloat.byte4ToInt`: the length a byte from [`encode_length`] stands for.
pub fn decode_length(byte: u8) -> u32 {
    let code = u32::from(byte);
    if code < EXACT_LENGTHS {
        return code;
    }
    let code = code - EXACT_LENGTHS;
    let bits = code & 0x07;
    let decoded = match (code >> 3).checked_sub(1) {
        None => u64::from(bits),
        Some(shift) => u64::from(bits | 0x08) << shift,
    };
    EXACT_LENGTHS + decoded as u32
}

/// Lucene's BM25 idf, computed in `f64` and rounded to `f32` as `BM25Similarity.idf` does.
pub fn idf(document_frequency: u64, documents: u64) -> f32 {
    let n = document_frequency as f64;
    (1.0 + (documents as f64 - n + 0.5) / (n + 0.5)).ln() as f32
}

/// `1 / (k1 × (1 − b + b × length / avgdl))` for every norm byte: Lucene's per-query cache.
pub fn norm_inverse_table(average_length: f32) -> [f32; 256] {
    std::array::from_fn(|byte| {
        let length = decode_length(byte as u8) as f32;
        1.0 / (K1 * ((1.0 - B) + B * length / average_length))
    })
}

/// One term's BM25 score in a document, as `BM25Scorer.score` computes it.
pub fn term_score(weight: f32, term_frequency: u32, norm_inverse: f32) -> f32 {
    weight - weight / (1.0 + term_frequency as f32 * norm_inverse)
}

/// A hit: catalog index and Lucene's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub product: usize,
    pub score: f32,
}

/// An inverted index over the products' search text.
#[derive(Debug, Clone)]
pub struct SearchIndex {
    /// Term → (document, term frequency), documents ascending.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Each document's length as Lucene stores it (see [`encode_length`]).
    norms: Vec<u8>,
    /// ASINs, for Anserini's tie break.
    ids: Vec<String>,
    /// Lucene's `sumTotalTermFreq / docCount`, rounded to `f32`.
    average_length: f32,
}

impl SearchIndex {
    /// Indexes every product's [`document_text`]; document ids are catalog indices.
    pub fn build(products: &[Product]) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut norms = Vec::with_capacity(products.len());
        let mut total_terms = 0u64;
        for (doc, product) in products.iter().enumerate() {
            let terms = analyze(&document_text(product));
            total_terms += terms.len() as u64;
            norms.push(encode_length(terms.len() as u32));
            let mut counts: HashMap<String, u32> = HashMap::new();
            for term in terms {
                *counts.entry(term).or_default() += 1;
            }
            for (term, count) in counts {
                postings.entry(term).or_default().push((doc as u32, count));
            }
        }
        for list in postings.values_mut() {
            list.sort_unstable();
        }
        let average_length = if products.is_empty() {
            1.0
        } else {
            (total_terms as f64 / products.len() as f64) as f32
        };
        Self {
            postings,
            norms,
            ids: products
                .iter()
                .map(|product| product.asin.clone())
                .collect(),
            average_length,
        }
    }

    /// Product indices for `keywords`, best first, at most [`MAX_RESULTS`].
    pub fn search(&self, keywords: &str) -> Vec<usize> {
        self.search_scored(keywords)
            .into_iter()
            .map(|hit| hit.product)
            .collect()
    }

    /// The hits for `keywords` with their scores, best first, at most [`MAX_RESULTS`].
    pub fn search_scored(&self, keywords: &str) -> Vec<Hit> {
        let documents = self.norms.len();
        let norm_inverse = norm_inverse_table(self.average_length);
        let mut sums = vec![0f64; documents];
        let mut matched = vec![false; documents];
        for (term, boost) in query_terms(keywords) {
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            let weight = boost as f32 * idf(list.len() as u64, documents as u64);
            for &(doc, frequency) in list {
                let doc = doc as usize;
                let norm = norm_inverse[usize::from(self.norms[doc])];
                sums[doc] += f64::from(term_score(weight, frequency, norm));
                matched[doc] = true;
            }
        }
        let mut hits: Vec<Hit> = (0..documents)
            .filter(|&doc| matched[doc])
            .map(|doc| Hit {
                product: doc,
                score: sums[doc] as f32,
            })
            .collect();
        let ranking = |a: &Hit, b: &Hit| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| self.ids[a.product].cmp(&self.ids[b.product]))
        };
        // Common words match most of the catalog: select the top 50 before sorting them.
        if hits.len() > MAX_RESULTS {
            hits.select_nth_unstable_by(MAX_RESULTS - 1, ranking);
            hits.truncate(MAX_RESULTS);
        }
        hits.sort_unstable_by(ranking);
        hits
    }
}

/// Anserini's bag-of-words query: each distinct term with the number of times it occurs.
pub fn query_terms(keywords: &str) -> Vec<(String, u32)> {
    let mut terms: Vec<(String, u32)> = Vec::new();
    for term in analyze(keywords) {
        match terms.iter_mut().find(|(seen, _)| *seen == term) {
            Some((_, count)) => *count += 1,
            None => terms.push((term, 1)),
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_analyzer_splits_drops_stop_words_possessives_and_stems() {
        assert_eq!(
            analyze("The Men's Running-Shoes, 8.5 and U.S.A. sizes; don't WAIT!"),
            [
                "men", "run", "shoe", "8.5", "u.s.a", "size", "don't", "wait"
            ]
        );
        assert!(analyze("the and of it is").is_empty());
        assert!(analyze("!!! --- ...").is_empty());
    }

    #[test]
    fn long_words_are_split_as_standard_tokenizer_does() {
        let word = "x".repeat(600);
        let lengths: Vec<usize> = standard_tokens(&word).map(str::len).collect();
        assert_eq!(lengths, [255, 255, 90]);
    }

    #[test]
    fn lengths_are_encoded_as_lucene_small_floats() {
        // Exact below 24, then order-preserving and rounding down.
        for length in 0..24 {
            assert_eq!(decode_length(encode_length(length)), length);
        }
        let mut previous = 0;
        for length in 0..100_000u32 {
            let decoded = decode_length(encode_length(length));
            assert!(decoded <= length, "{length} decodes to {decoded}");
            assert!(decoded >= previous);
            previous = decoded;
        }
        // Values from Lucene's SmallFloat: 24 + 8 = 32 is exact, 24 + 17 falls to 24 + 16.
        assert_eq!(decode_length(encode_length(32)), 32);
        assert_eq!(decode_length(encode_length(41)), 40);
        assert_eq!(encode_length(u32::MAX >> 1), 255);
        for byte in 0..=255u8 {
            assert_eq!(encode_length(decode_length(byte)), byte);
        }
    }

    #[test]
    fn repeated_query_words_are_one_boosted_term() {
        assert_eq!(
            query_terms("red red shoes the shoe"),
            [("red".to_string(), 2), ("shoe".to_string(), 2)]
        );
    }
}

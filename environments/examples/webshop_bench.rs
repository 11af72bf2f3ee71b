//! WebShop-format environment throughput on the standard synthetic catalog (no model):
//!
//! - **expert steps/s**: every goal's expert plan through [`WebShopEnvironment::step_text`] (action
//!   parsing, page transition, page text, available actions and `info`, the reward at purchase);
//! - **search queries/s**: BM25 over the catalog's inverted index, one query per goal instruction
//!   and per product title, against a baseline measured in the same run: the straightforward
//!   BM25 that scans every document's token list per query (same scores, no index).
//!
//! ```text
//! cargo run --release -p kiln-environments --example webshop_bench -- [--repeat N]
//! ```
//!
//! Prints `key=value` lines; `search_speedup` is indexed/naive queries per second (> 1: the index
//! is faster). Numbers on a shared machine move with its load; compare only within one run.

use std::collections::HashMap;
use std::time::Instant;

use kiln_environments::webshop::search::{
    MAX_RESULTS, analyze, document_text, encode_length, idf, norm_inverse_table, query_terms,
    term_score,
};
use kiln_environments::webshop::{Shop, WebShopEnvironment, WebShopOptions, oracle_actions};

fn main() {
    let mut repeat = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeat" => {
                repeat = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|value| *value > 0)
                    .unwrap_or_else(|| usage());
            }
            _ => usage(),
        }
    }

    let started = Instant::now();
    let shop = Shop::standard();
    println!(
        "catalog products={} goals={} generate_s={:.3} (synthetic catalog)",
        shop.products().len(),
        shop.goals().len(),
        started.elapsed().as_secs_f64()
    );

    // Expert episodes through the environment's step function.
    let plans: Vec<Vec<String>> = (0..shop.goals().len())
        .map(|goal| oracle_actions(&shop, goal).expect("every goal has an expert plan"))
        .collect();
    let mut env = WebShopEnvironment::new(shop.clone(), WebShopOptions { max_steps: 100 });
    let mut best_steps_per_s = 0f64;
    let mut steps = 0usize;
    let mut reward_sum = 0.0;
    for _ in 0..repeat {
        let started = Instant::now();
        steps = 0;
        reward_sum = 0.0;
        for (goal, plan) in plans.iter().enumerate() {
            env.start(goal).expect("goal exists");
            for action in plan {
                let result = env.step_text(action).expect("episode running");
                steps += 1;
                if result.done {
                    reward_sum += result.info["reward"].as_f64().unwrap_or(0.0);
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        best_steps_per_s = best_steps_per_s.max(steps as f64 / elapsed);
    }
    println!(
        "expert episodes={} steps={} score={:.1} steps_per_s={:.0} episodes_per_s={:.0}",
        plans.len(),
        steps,
        100.0 * reward_sum / plans.len() as f64,
        best_steps_per_s,
        best_steps_per_s * plans.len() as f64 / steps as f64
    );

    // Search: the index against a per-query scan of every document.
    let queries: Vec<String> = shop
        .goals()
        .iter()
        .map(|goal| goal.instruction_text.to_lowercase())
        .chain(
            shop.products()
                .iter()
                .map(|product| product.name.to_lowercase()),
        )
        .collect();
    // The naive scan is ~100× slower: it runs on every 7th query, and the index is timed on the
    // same subset for the ratio.
    let naive = NaiveBm25::new(&shop);
    let subset: Vec<&String> = queries.iter().step_by(7).collect();
    let mut indexed_qps = 0f64;
    let mut subset_qps = 0f64;
    let mut naive_qps = 0f64;
    for _ in 0..repeat {
        let started = Instant::now();
        let hits: usize = queries.iter().map(|query| shop.search(query).len()).sum();
        indexed_qps = indexed_qps.max(queries.len() as f64 / started.elapsed().as_secs_f64());
        assert!(hits > 0);
        let started = Instant::now();
        let indexed_hits: usize = subset.iter().map(|query| shop.search(query).len()).sum();
        subset_qps = subset_qps.max(subset.len() as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let naive_hits: usize = subset.iter().map(|query| naive.search(query).len()).sum();
        naive_qps = naive_qps.max(subset.len() as f64 / started.elapsed().as_secs_f64());
        assert_eq!(
            indexed_hits, naive_hits,
            "both searches return as many hits"
        );
    }
    let agree = subset
        .iter()
        .filter(|query| shop.search(query) == naive.search(query))
        .count();
    println!(
        "search queries={} indexed_qps={:.0} | same-run baseline on {} queries: indexed_qps={:.0} naive_scan_qps={:.0} search_speedup={:.1} same_ranking={}/{}",
        queries.len(),
        indexed_qps,
        subset.len(),
        subset_qps,
        naive_qps,
        subset_qps / naive_qps,
        agree,
        subset.len()
    );
}

fn usage() -> ! {
    eprintln!("usage: webshop_bench [--repeat N]");
    std::process::exit(2);
}

/// The baseline: every document kept as its term list, scored term by term for each query with
/// the same Lucene BM25 formulas (so the same ranking), without an inverted index.
struct NaiveBm25 {
    documents: Vec<Vec<String>>,
    ids: Vec<String>,
    document_frequency: HashMap<String, usize>,
    average_length: f32,
}

impl NaiveBm25 {
    fn new(shop: &Shop) -> Self {
        let documents: Vec<Vec<String>> = shop
            .products()
            .iter()
            .map(|product| analyze(&document_text(product)))
            .collect();
        let mut document_frequency = HashMap::new();
        for document in &documents {
            let mut seen: Vec<&String> = document.iter().collect();
            seen.sort();
            seen.dedup();
            for token in seen {
                *document_frequency.entry(token.clone()).or_insert(0) += 1;
            }
        }
        let total: usize = documents.iter().map(Vec::len).sum();
        let average_length = (total as f64 / documents.len() as f64) as f32;
        Self {
            documents,
            ids: shop.products().iter().map(|p| p.asin.clone()).collect(),
            document_frequency,
            average_length,
        }
    }

    fn search(&self, keywords: &str) -> Vec<usize> {
        let terms = query_terms(keywords);
        let n = self.documents.len() as u64;
        let norm_inverse = norm_inverse_table(self.average_length);
        let mut scored: Vec<(usize, f32)> = Vec::new();
        for (doc, document) in self.documents.iter().enumerate() {
            let mut score = 0f64;
            let mut matched = false;
            for (term, boost) in &terms {
                let tf = document.iter().filter(|word| *word == term).count() as u32;
                if tf == 0 {
                    continue;
                }
                matched = true;
                let weight = *boost as f32 * idf(self.document_frequency[term] as u64, n);
                let norm = norm_inverse[usize::from(encode_length(document.len() as u32))];
                score += f64::from(term_score(weight, tf, norm));
            }
            if matched {
                scored.push((doc, score as f32));
            }
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(self.ids[a.0].cmp(&self.ids[b.0])));
        scored.truncate(MAX_RESULTS);
        scored.into_iter().map(|(doc, _)| doc).collect()
    }
}

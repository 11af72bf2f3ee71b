//! WebShop search ranks as WebShop's own search engine, checked against that engine in the same
//! test: Anserini 0.14.3 (Lucene 8.11, the jar inside pyserini 0.17.0, which WebShop pins) indexes
//! the standard synthetic catalog exactly as WebShop's `run_indexing.sh` does and answers a few
//! hundred queries through `SimpleSearcher.search(query, 50)` (what pyserini's `LuceneSearcher`
//! calls); `tests/support/WebShopSearch.java` drives it. Kiln's analyzer must produce the same
//! terms for every document and query, and Kiln's search the same hits in the same order with
//! the same scores.
//!
//! Needs `ops/setup anserini` and Java 11+ with its compiler (a JDK). Without them the test fails
//! when `CI=true` and is skipped with a notice otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_environments::default_data_dir;
use kiln_environments::webshop::Shop;
use kiln_environments::webshop::search::{MAX_RESULTS, analyze, document_text};

const JAR: &str = "reference/anserini/anserini-0.14.3-fatjar.jar";

/// The Anserini jar, or `None` (after a notice) when it or Java is missing outside CI.
fn anserini_jar() -> Option<PathBuf> {
    let jar = default_data_dir().join(JAR);
    let java = Command::new("java").arg("-version").output();
    let problem = match (&java, jar.is_file()) {
        (Ok(output), true) if output.status.success() => return Some(jar),
        (Ok(output), true) => format!(
            "`java -version` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        (Err(error), _) => format!("java is not runnable ({error}); install a Java 11+ JDK"),
        (_, false) => format!("{} is missing: run `ops/setup anserini`", jar.display()),
    };
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("the WebShop search reference is required in CI: {problem}");
    }
    eprintln!("skipping the comparison with WebShop's search engine: {problem}");
    None
}

/// A line of a text file: no newline or carriage return inside.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Words that walk through every rule of Porter's algorithm, plus possessives, stop words,
/// case, apostrophes and non-ASCII letters.
const WORDS: &[&str] = &[
    "abatements",
    "abbreviations",
    "ability",
    "absolutely",
    "acceptance",
    "accordingly",
    "activated",
    "adjustment",
    "agreement",
    "allowance",
    "analogous",
    "ancestries",
    "anxiously",
    "apologizing",
    "applicable",
    "archaeology",
    "argument",
    "bleed",
    "callousness",
    "caresses",
    "charitable",
    "communism",
    "compatibility",
    "conditionally",
    "considerately",
    "controllers",
    "conveniently",
    "crying",
    "decisiveness",
    "defensible",
    "dependent",
    "digitizer",
    "doing",
    "effective",
    "emotionality",
    "engineering",
    "fabulously",
    "falling",
    "filing",
    "formality",
    "formalize",
    "formative",
    "generously",
    "gyroscopic",
    "happily",
    "hesitancy",
    "hopeful",
    "hoping",
    "irritant",
    "knitted",
    "lying",
    "lovelier",
    "motoring",
    "multiplicity",
    "national",
    "operational",
    "owed",
    "plastered",
    "pottery",
    "radically",
    "readily",
    "relational",
    "sensitivities",
    "sizing",
    "skies",
    "spied",
    "stylish",
    "tanned",
    "tying",
    "useful",
    "valuation",
    "vietnamization",
    "waterproofing",
    "sky",
    "syzygy",
    "eed",
    "ied",
    "ion",
    "aed",
    "ated",
    "ing",
    "ies",
    "sses",
    "agreed",
    "feed",
    "hopping",
    "hissing",
    "fizzed",
    "failing",
    "filing",
    "conflated",
    "troubled",
    "sized",
    "predication",
    "electriciti",
    "hopefulness",
    "goodness",
    "revival",
    "allowance",
    "inference",
    "airliner",
    "gyroscopic",
    "adjustable",
    "defensible",
    "irritant",
    "replacement",
    "adjustment",
    "dependent",
    "adoption",
    "homologou",
    "communism",
    "activate",
    "angulariti",
    "homologous",
    "effective",
    "bowdlerize",
    "probate",
    "rate",
    "cease",
    "controll",
    "roll",
    "generalizations",
    "oscillators",
    "logically",
    "Men's",
    "WOMEN’S",
    "kid＇s",
    "boss's",
    "its",
    "it's",
    "o'neill's",
    "rock'n'roll",
    "don't",
    "The",
    "AND",
    "Into",
    "Such",
    "ZÜRICH",
    "naïve",
    "café",
    "résumé",
    "Straße",
    "İstanbul",
    "ΣΟΦΊΑ",
    "x",
    "xs",
    "is",
    "as",
    "us",
    "yes",
    "ys",
    "y",
];

/// Queries: goal instructions and titles (what agents and the expert type), product types,
/// attributes, option values, and hand-written edge cases of tokenization and scoring.
fn queries(shop: &Shop) -> Vec<String> {
    let mut queries: Vec<String> = Vec::new();
    queries.extend(
        shop.goals()
            .iter()
            .step_by(13)
            .map(|goal| goal.instruction_text.to_lowercase()),
    );
    queries.extend(
        shop.products()
            .iter()
            .step_by(15)
            .map(|product| product.name.to_lowercase()),
    );
    let mut phrases = BTreeSet::new();
    for product in shop.products() {
        phrases.insert(product.query.clone());
        phrases.extend(product.attributes.iter().cloned());
        phrases.extend(product.option_values().map(str::to_string));
    }
    queries.extend(phrases);
    for edge in [
        "men's running shoes",
        "women’s hiking boots size 8.5",
        "x-large navy-blue hoodie",
        "the and of",
        "",
        "!!! ???",
        "shoes shoes shoes",
        "red red running shoe",
        "u.s.a. e.g. 3.5oz 1,000 12:30",
        "wi-fi usb_c mp3 4k",
        "don't stop-believing",
        "KESTREL Leather BOOTS",
        "machine-washable moisture-wicking",
        "café naïve résumé",
        "gift box travel pouch storage bag value pack",
        "cheap cheaper cheapest",
        "running runner runs ran",
        "hoodies hoody hood",
        "organic green tea 100 bags",
        "price lower than 50.00 dollars",
        "i need a pair of waterproof hiking boots for men, and price lower than 90.00 dollars",
        "zzzz-not-a-word qqq",
        "t-shirt tee crew neck",
        "a",
        "black white navy blue light grey burgundy olive green royal blue beige",
    ] {
        queries.push(edge.to_string());
    }
    queries.iter().map(|query| one_line(query)).collect()
}

struct Reference {
    /// Terms per line of the texts file.
    terms: Vec<Vec<String>>,
    /// (ASIN, score) per query, best first.
    hits: Vec<Vec<(String, f32)>>,
}

fn run_anserini(
    jar: &Path,
    documents: &[(String, String)],
    texts: &[String],
    queries: &[String],
) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    let jsonl: String = documents
        .iter()
        .map(|(id, contents)| {
            serde_json::json!({ "id": id, "contents": contents }).to_string() + "\n"
        })
        .collect();
    std::fs::write(docs.join("documents.jsonl"), jsonl).unwrap();
    std::fs::write(dir.path().join("texts.txt"), texts.join("\n") + "\n").unwrap();
    std::fs::write(dir.path().join("queries.txt"), queries.join("\n") + "\n").unwrap();
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/WebShopSearch.java");
    let out = dir.path().join("out.tsv");
    let output = Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(&program)
        .arg(&docs)
        .arg(dir.path().join("index"))
        .arg(dir.path().join("texts.txt"))
        .arg(dir.path().join("queries.txt"))
        .arg(&out)
        .arg(MAX_RESULTS.to_string())
        .output()
        .expect("run java");
    assert!(
        output.status.success(),
        "Anserini failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut reference = Reference {
        terms: vec![Vec::new(); texts.len()],
        hits: vec![Vec::new(); queries.len()],
    };
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["A", index, terms] => {
                reference.terms[index.parse::<usize>().unwrap()] =
                    terms.split_whitespace().map(str::to_string).collect();
            }
            ["S", query, rank, docid, score] => {
                let hits = &mut reference.hits[query.parse::<usize>().unwrap()];
                assert_eq!(hits.len(), rank.parse::<usize>().unwrap(), "{line}");
                hits.push((docid.to_string(), score.parse().unwrap()));
            }
            _ => panic!("unexpected line from WebShopSearch.java: {line:?}"),
        }
    }
    reference
}

#[test]
fn search_ranks_as_webshops_anserini_index() {
    let Some(jar) = anserini_jar() else {
        return;
    };
    let shop = Shop::standard();
    let documents: Vec<(String, String)> = shop
        .products()
        .iter()
        .map(|product| (product.asin.clone(), one_line(&document_text(product))))
        .collect();
    let queries = queries(&shop);
    assert!(queries.len() >= 300, "{} queries", queries.len());
    let texts: Vec<String> = documents
        .iter()
        .map(|(_, contents)| contents.clone())
        .chain(queries.iter().cloned())
        .chain(WORDS.iter().map(|word| word.to_string()))
        .collect();
    let reference = run_anserini(&jar, &documents, &texts, &queries);

    // The analyzer: every document, query and word.
    let term_mismatches: Vec<String> = texts
        .iter()
        .zip(&reference.terms)
        .filter_map(|(text, expected)| {
            let ours = analyze(text);
            (&ours != expected)
                .then(|| format!("{text:?}\n  anserini: {expected:?}\n  kiln:     {ours:?}"))
        })
        .collect();
    assert!(
        term_mismatches.is_empty(),
        "{} of {} texts analyze differently; first ones:\n{}",
        term_mismatches.len(),
        texts.len(),
        term_mismatches[..term_mismatches.len().min(8)].join("\n")
    );

    // The ranking: same hits, same order, same scores (Anserini rounds scores to 1e-4 and lowers
    // tied ones by 1e-6 per tie, which keeps its order).
    let index = shop.search_index();
    let mut ranking_mismatches = Vec::new();
    let mut hits_compared = 0;
    let mut ties_broken_by_asin = 0;
    for (query, expected) in queries.iter().zip(&reference.hits) {
        let ours: Vec<(String, f32)> = index
            .search_scored(query)
            .into_iter()
            .map(|hit| (shop.product(hit.product).asin.clone(), hit.score))
            .collect();
        hits_compared += ours.len();
        ties_broken_by_asin += ours
            .windows(2)
            .filter(|pair| pair[0].1 == pair[1].1)
            .count();
        let same_ids = ours
            .iter()
            .map(|(id, _)| id)
            .eq(expected.iter().map(|(id, _)| id));
        let same_scores = ours
            .iter()
            .zip(expected)
            .all(|((_, a), (_, b))| (a - b).abs() <= 1e-4 + 1e-6 * MAX_RESULTS as f32);
        if !same_ids || !same_scores {
            ranking_mismatches.push(format!(
                "{query:?}\n  anserini: {:?}\n  kiln:     {:?}",
                &expected[..expected.len().min(12)],
                &ours[..ours.len().min(12)]
            ));
        }
    }
    println!(
        "{} queries, {hits_compared} hits, {ties_broken_by_asin} adjacent exact ties ordered by ASIN, {} differ",
        queries.len(),
        ranking_mismatches.len()
    );
    assert!(
        ranking_mismatches.is_empty(),
        "{} of {} queries rank differently; first ones:\n{}",
        ranking_mismatches.len(),
        queries.len(),
        ranking_mismatches[..ranking_mismatches.len().min(5)].join("\n")
    );
    // The comparison covered full result pages and exact ties (Lucene's one-byte lengths make
    // many), so the tie break was exercised too.
    assert!(hits_compared > 100 * queries.len() / 10);
    assert!(ties_broken_by_asin > 0);
}

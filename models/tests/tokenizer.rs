//! SmolLM2's GGUF file, tokenizer and chat template, on the real model file that `ops/setup model`
//! installs under `$KILN_HOME/models/` (the tests fail, saying so, when it is missing).
//!
//! References, all independent of Kiln's code:
//! - token ids recorded from llama.cpp (llama-cpp-python 0.3.36, `Llama(vocab_only=True)`);
//! - llama.cpp itself on a generated corpus of 1,000+ strings, when its Python bindings are
//!   installed (`ops/setup llama-cpp`); set `KILN_REQUIRE_LLAMA_CPP=1` to make their absence fail;
//! - Python's `jinja2` rendering the model's chat template the way `transformers` does;
//! - header facts read with a separate Python GGUF reader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use kiln_models::local::gguf::{GgmlType, GgufFile};
use kiln_models::local::{
    GgufErrorKind, LocalModelErrorKind, LocalModelFiles, TokenType, Tokenizer, kiln_home,
    smollm2_path,
};
use kiln_protocol::Message;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn model_path() -> PathBuf {
    let path = smollm2_path(&kiln_home());
    assert!(
        path.is_file(),
        "{} is missing: run `ops/setup model` (or set KILN_HOME to the cache that has it)",
        path.display()
    );
    path
}

fn model() -> &'static LocalModelFiles {
    static FILES: OnceLock<LocalModelFiles> = OnceLock::new();
    FILES.get_or_init(|| LocalModelFiles::load(&model_path()).expect("SmolLM2 loads"))
}

fn tokenizer() -> &'static Tokenizer {
    &model().tokenizer
}

// ---------------------------------------------------------------------------------------------
// The corpus: deterministic, varied, 1,000+ strings.
// ---------------------------------------------------------------------------------------------

/// Hand-picked edge cases: empty and whitespace-only text, contractions, chat markup and partial
/// markup, scripts, emoji sequences, combining marks, odd whitespace and control characters.
const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    "\t",
    " \t \n ",
    "\r\n",
    "a",
    "'s",
    "'",
    "''",
    "don't stop, we'll see; they're here, I've, I'm, he'd",
    "DON'T I'LL WE'RE",
    "Hello, we can use",
    "Hello world! 123",
    "  multiple   spaces",
    "Café déjà vu.",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "<|im_start",
    "im_start|>",
    "<|im_end|",
    "< |im_start| >",
    "<|IM_START|>",
    "<|im_start|><|im_start|>",
    "x<|endoftext|>y",
    "<repo_name>kiln<file_sep>src/main.rs<reponame>",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<issue_start>bug<issue_comment>fixed<issue_closed>",
    "<gh_stars>100<filename>a.py<jupyter_text><jupyter_script>",
    "\u{feff}byte order mark",
    "\u{0}\u{1}\u{7}\u{8}\u{1b}[31mred\u{1b}[0m",
    "\u{1c}\u{1d}\u{1e}\u{1f}",
    "a\u{85}b",
    "a\u{a0}b",
    "a\u{2028}b\u{2029}c",
    "\u{3000}full width space",
    "a\u{200b}b\u{200c}c\u{200d}d",
    "e\u{301}e\u{300}\u{302}",
    "Z\u{364}\u{311}\u{313}a\u{308}\u{356}l\u{36e}g\u{30c}o\u{319}",
    "👨\u{200d}👩\u{200d}👧\u{200d}👦 family",
    "🇫🇷🇯🇵🇺🇸",
    "👍🏽👍🏿",
    "😀😃😄😁😆😅😂🤣",
    "日本語のテキストです。",
    "中文文本，标点符号。",
    "한국어 텍스트입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "ภาษาไทย",
    "Ελληνικά κείμενα",
    "Русский текст",
    "ｆｕｌｌｗｉｄｔｈ　１２３",
    "x² + y³ = z⁴",
    "½ ¾ ⅓",
    "Ⅻ ⅻ ↉",
    "٣٤٥ ۶۷ ४२",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "\u{e000}\u{f8ff}",
    "\u{378}\u{379}",
    "\u{10ffff}",
    "\u{fffd}",
    "a\u{ad}b",
    "ǅungla ǈ",
    "ʰʲʷ ˢ",
    "3.14159e-10",
    "1,234,567.89",
    "0xDEADBEEF",
    "2024-06-01T12:34:56Z",
    "+1 (555) 123-4567",
    "$100.00 €50 £20 ¥1000",
    "    indented code",
    "\t\tdouble tab",
    "trailing spaces   ",
    "line1\nline2\r\nline3\rline4",
    "fn main() {\n    println!(\"Hello, world!\");\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "SELECT * FROM users WHERE id = 42;",
    "https://example.com/path?query=1&b=2#frag",
    "user@example.com",
    "C:\\Windows\\System32",
    "a...b---c___d===e",
    "!!!???...",
    "((()))[[[]]]{{{}}}",
    "<div class=\"x\">&amp;&lt;</div>",
];

fn corpus() -> &'static [String] {
    static CORPUS: OnceLock<Vec<String>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0x6b69_6c6e);
        let mut corpus: Vec<String> = EDGE_CASES.iter().map(|s| s.to_string()).collect();
        let generators: [fn(&mut StdRng) -> String; 8] = [
            code,
            numbers,
            unicode_text,
            whitespace,
            chat_markup,
            prose,
            random_code_points,
            mixture,
        ];
        for i in 0..1_200 {
            corpus.push(generators[i % generators.len()](&mut rng));
        }
        corpus
    })
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "token",
    "harness",
    "kiln",
    "agent",
    "run",
    "worker",
    "Hello",
    "World",
    "don't",
    "it's",
    "we're",
    "I'll",
    "they've",
    "QUICK",
    "brown",
    "fox",
    "jumps",
    "über",
    "naïve",
    "café",
    "résumé",
    "Straße",
    "coöperate",
    "façade",
    "piñata",
    "smörgåsbord",
];

const SYMBOLS: &[&str] = &[
    ".", ",", "!", "?", ";", ":", "-", "--", "...", "(", ")", "[", "]", "{", "}", "\"", "'", "`",
    "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "~", "_", "->", "=>",
    "::", "//", "/*", "*/", "<=", ">=", "!=", "==", "&&", "||",
];

const SPECIAL: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<file_sep>",
    "<jupyter_code>",
    "<repo_name>",
    "<reponame>",
    "<empty_output>",
];

const SCRIPTS: &[&str] = &[
    "日本語",
    "テキスト",
    "漢字かな",
    "中文",
    "汉字",
    "한국어",
    "글자",
    "العربية",
    "עברית",
    "हिन्दी",
    "বাংলা",
    "தமிழ்",
    "ไทย",
    "ລາວ",
    "ქართული",
    "Հայերեն",
    "Ελληνικά",
    "Кириллица",
    "Ѣѣ",
    "ትግርኛ",
    "ᠮᠣᠩᠭᠣᠯ",
    "ᚠᚢᚦ",
    "𐌰𐌱𐌲",
    "ꦗꦮ",
    "🙂",
    "🚀",
    "❤\u{fe0f}",
    "✓",
    "⚙\u{fe0f}",
    "🧑\u{200d}💻",
    "🏳\u{fe0f}\u{200d}🌈",
    "∑∫∂√∞",
    "≤≥≠",
    "→⇒↔",
    "°C",
    "µs",
    "Å",
    "ﬁ",
    "Ǆ",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items.choose(rng).expect("non-empty")
}

fn identifier(rng: &mut StdRng) -> String {
    let parts = [
        "get", "set", "user", "id", "count", "max", "tmp", "buf", "x", "Token", "HTTP",
    ];
    let n = rng.gen_range(1..=3);
    let joiner = *["_", "", ""].choose(rng).unwrap();
    (0..n)
        .map(|_| pick(rng, &parts).to_string())
        .collect::<Vec<_>>()
        .join(joiner)
}

fn number(rng: &mut StdRng) -> String {
    match rng.gen_range(0..7) {
        0 => rng.gen_range(0..10).to_string(),
        1 => rng.gen_range(0..100_000u64).to_string(),
        2 => format!("{:.3}", rng.gen_range(-1000.0..1000.0f64)),
        3 => format!("{:e}", rng.gen_range(1e-12..1e12f64)),
        4 => format!("0x{:X}", rng.r#gen::<u32>()),
        5 => format!(
            "{},{:03},{:03}",
            rng.gen_range(1..999),
            rng.gen_range(0..999),
            rng.gen_range(0..999)
        ),
        _ => format!("{}%", rng.gen_range(0..100)),
    }
}

fn indent(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.3) {
        "\t".repeat(rng.gen_range(0..3))
    } else {
        " ".repeat(rng.gen_range(0..9))
    }
}

fn code(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..6) {
        text.push_str(&indent(rng));
        let line = match rng.gen_range(0..6) {
            0 => format!("let {} = {};", identifier(rng), number(rng)),
            1 => format!(
                "def {}({}, {}):",
                identifier(rng),
                identifier(rng),
                identifier(rng)
            ),
            2 => format!(
                "if ({} {} {}) {{",
                identifier(rng),
                pick(rng, &["<", ">=", "==", "!="]),
                number(rng)
            ),
            3 => format!(
                "{}.{}(\"{}\")",
                identifier(rng),
                identifier(rng),
                pick(rng, WORDS)
            ),
            4 => format!("// {} {}", pick(rng, WORDS), pick(rng, WORDS)),
            _ => format!(
                "{{\"{}\": [{}, {}]}}",
                identifier(rng),
                number(rng),
                number(rng)
            ),
        };
        text.push_str(&line);
        text.push_str(pick(rng, &["\n", "\n", "\r\n", "\n\n"]));
    }
    text
}

fn numbers(rng: &mut StdRng) -> String {
    (0..rng.gen_range(1..8))
        .map(|_| number(rng))
        .collect::<Vec<_>>()
        .join(pick(rng, &[" ", ", ", "+", "\n", "", " x "]))
}

fn unicode_text(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..6) {
        text.push_str(pick(rng, SCRIPTS));
        if rng.gen_bool(0.3) {
            // A combining mark or two after the word.
            for _ in 0..rng.gen_range(1..3) {
                text.push(char::from_u32(rng.gen_range(0x300..0x370)).unwrap());
            }
        }
        text.push_str(pick(
            rng,
            &[" ", "", "、", "。", ", ", "\u{3000}", "\u{a0}"],
        ));
    }
    text
}

/// Spaces, and characters that are whitespace in some definitions only (U+001C–U+001F, U+0085,
/// U+200B, U+FEFF, …): the pre-tokenizer must classify each exactly as llama.cpp does.
const SPACES: &[char] = &[
    ' ', ' ', ' ', ' ', '\t', '\n', '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1e}', '\u{1f}',
    '\u{85}', '\u{a0}', '\u{1680}', '\u{180e}', '\u{2000}', '\u{2003}', '\u{2009}', '\u{200a}',
    '\u{200b}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{feff}',
];

fn whitespace(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..8) {
        let run: String = (0..rng.gen_range(1..7))
            .map(|_| *SPACES.choose(rng).unwrap())
            .collect();
        text.push_str(&run);
        if rng.gen_bool(0.7) {
            text.push_str(pick(
                rng,
                &["a", "word", "1", "!", "é", "日", "'s", "(", "x1"],
            ));
        }
    }
    text
}

fn chat_markup(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..4) {
        let role = pick(rng, &["system", "user", "assistant", "tool"]);
        text.push_str(&format!("<|im_start|>{role}\n"));
        text.push_str(&prose(rng));
        if rng.gen_bool(0.2) {
            text.push_str(pick(rng, SPECIAL));
        }
        if rng.gen_bool(0.2) {
            // A damaged marker must be tokenized as text.
            text.push_str(pick(
                rng,
                &["<|im_end", "|im_end|>", "<|im_end |>", "<<|im_end|>>"],
            ));
        }
        text.push_str("<|im_end|>");
        text.push_str(pick(rng, &["\n", "", "\n\n"]));
    }
    text
}

fn prose(rng: &mut StdRng) -> String {
    let mut text = String::new();
    for i in 0..rng.gen_range(1..15) {
        if i > 0 {
            text.push_str(pick(rng, &[" ", " ", " ", "  ", "\n", ", ", ". "]));
        }
        match rng.gen_range(0..10) {
            0 => text.push_str(&number(rng)),
            1 => text.push_str(pick(rng, SYMBOLS)),
            2 => text.push_str(&pick(rng, WORDS).to_uppercase()),
            _ => text.push_str(pick(rng, WORDS)),
        }
    }
    text
}

/// Random code points from every plane region that matters (ASCII, Latin, CJK, emoji,
/// private use, unassigned, controls), glued together.
fn random_code_points(rng: &mut StdRng) -> String {
    let ranges = [
        0x0..0x80u32,
        0x80..0x250,
        0x300..0x370,
        0x370..0x530,
        0x590..0x700,
        0x900..0xe80,
        0x1100..0x1200,
        0x2000..0x2070,
        0x2070..0x2200,
        0x3000..0x3100,
        0x4e00..0x9fff,
        0xac00..0xd7a4,
        0xe000..0xe100,
        0xfe00..0xff00,
        0xff00..0xfff0,
        0x1_0000..0x1_0100,
        0x1_d400..0x1_d800,
        0x1_f300..0x1_fa00,
        0x2_0000..0x2_0100,
        0xe_0000..0xe_0080,
    ];
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..24) {
        let range = ranges.choose(rng).unwrap().clone();
        if let Some(c) = char::from_u32(rng.gen_range(range)) {
            text.push(c);
        }
    }
    text
}

fn mixture(rng: &mut StdRng) -> String {
    let parts: [fn(&mut StdRng) -> String; 7] = [
        code,
        numbers,
        unicode_text,
        whitespace,
        chat_markup,
        prose,
        random_code_points,
    ];
    (0..rng.gen_range(2..5))
        .map(|_| parts.choose(rng).unwrap()(rng))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GGUF header of the real file.
// ---------------------------------------------------------------------------------------------

#[test]
fn smollm2_header_matches_an_independent_reader() {
    let file = &model().gguf;
    // Values read with a separate Python GGUF reader from the same file.
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.keys().count(), 33);
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f64("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(file.data_offset(), 1_785_664);
    let embeddings = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embeddings.dims, [576, 49152]);
    assert_eq!(embeddings.ggml_type, GgmlType::Q8_0);
    let type_counts: Vec<usize> = [GgmlType::Q4_1, GgmlType::F32, GgmlType::Q8_0]
        .iter()
        .map(|&t| file.tensors().iter().filter(|x| x.ggml_type == t).count())
        .collect();
    assert_eq!(type_counts, [210, 61, 1]);
    // The last tensor ends exactly at the end of the file.
    let end = file
        .tensors()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.byte_size().unwrap())
        .max()
        .unwrap();
    assert_eq!(end, file.file_len());
}

#[test]
fn a_truncated_model_file_is_reported_as_corrupt() {
    let path = model_path();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = model().gguf.data_offset() as usize;
    // Cut inside the vocabulary: the metadata itself is incomplete.
    let error =
        GgufFile::parse(&bytes[..header_len / 2], (header_len / 2) as u64, &path).unwrap_err();
    assert_eq!(error.kind(), GgufErrorKind::Corrupt);
    // Cut inside the tensor data: the header reads, but the last tensor does not fit.
    let short = bytes.len() as u64 - 1000;
    let error = GgufFile::parse(&bytes[..], short, &path).unwrap_err();
    assert_eq!(error.kind(), GgufErrorKind::Corrupt);
    assert!(error.to_string().contains("output_norm.weight"), "{error}");
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn another_architecture_is_refused_by_name() {
    let path = model_path();
    let mut bytes = std::fs::read(&path).unwrap();
    // Patch the value of `general.architecture` ("llama") into "mamba", same length.
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    assert_eq!(&bytes[at..at + 5], b"llama");
    bytes[at..at + 5].copy_from_slice(b"mamba");
    let dir = tempfile::tempdir().unwrap();
    let patched = dir.path().join("mamba.gguf");
    std::fs::write(&patched, &bytes).unwrap();
    let error = LocalModelFiles::load(&patched).unwrap_err();
    assert_eq!(
        error.kind(),
        LocalModelErrorKind::ModelFile(GgufErrorKind::UnsupportedArchitecture)
    );
    assert!(error.to_string().contains("`mamba`"), "{error}");
}

#[test]
fn a_file_that_is_not_gguf_or_missing_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("model.gguf");
    std::fs::write(&zip, b"PK\x03\x04 this is a zip, not a model").unwrap();
    let error = LocalModelFiles::load(&zip).unwrap_err();
    assert_eq!(
        error.kind(),
        LocalModelErrorKind::ModelFile(GgufErrorKind::NotGguf)
    );
    assert!(error.to_string().contains("model.gguf"), "{error}");

    let missing = dir.path().join("absent.gguf");
    let error = LocalModelFiles::load(&missing).unwrap_err();
    assert_eq!(
        error.kind(),
        LocalModelErrorKind::ModelFile(GgufErrorKind::Missing)
    );
    assert!(error.to_string().contains("absent.gguf"), "{error}");
    assert!(error.to_string().contains("ops/setup model"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Tokenizer on the real vocabulary.
// ---------------------------------------------------------------------------------------------

#[test]
fn vocabulary_and_special_tokens_are_read_from_the_file() {
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.bos_id(), Some(1));
    assert_eq!(tokenizer.eos_id(), Some(2));
    assert_eq!(tokenizer.padding_id(), Some(2));
    assert_eq!(tokenizer.unknown_id(), Some(0));
    assert_eq!(tokenizer.token_text(1), Some("<|im_start|>"));
    assert_eq!(tokenizer.token_type(1), Some(TokenType::Control));
    assert_eq!(tokenizer.token_type(17), Some(TokenType::Normal));
    assert_eq!(tokenizer.end_of_generation_ids(), [0, 2]);
}

#[test]
fn corpus_is_large_and_varied() {
    let corpus = corpus();
    assert!(corpus.len() >= 1_000, "{}", corpus.len());
    let distinct: BTreeSet<&String> = corpus.iter().collect();
    assert!(distinct.len() >= 1_000, "{} distinct", distinct.len());
    let has = |f: fn(&str) -> bool| corpus.iter().filter(|s| f(s)).count();
    assert!(has(|s| s.contains("<|im_start|>")) >= 100);
    assert!(has(|s| s.chars().any(|c| c.is_ascii_digit())) >= 300);
    assert!(has(|s| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))) >= 50);
    assert!(has(|s| s.chars().any(|c| ('\u{1f300}'..='\u{1faff}').contains(&c))) >= 50);
    assert!(has(|s| s.chars().any(|c| ('\u{300}'..='\u{36f}').contains(&c))) >= 50);
    assert!(has(|s| s.contains("  ") || s.contains("\t")) >= 200);
}

#[test]
fn encode_then_decode_is_the_identity_on_the_corpus() {
    let tokenizer = tokenizer();
    let representable: Vec<&String> = corpus()
        .iter()
        .filter(|t| tokenizer.round_trips(t))
        .collect();
    // Only strings with the few bytes SmolLM2 has no token for (U+0004, U+001D, …) are left out;
    // the llama.cpp comparison covers those.
    assert!(
        representable.len() >= 1_000,
        "{} representable strings",
        representable.len()
    );
    for text in representable {
        for parse_special in [true, false] {
            let ids = tokenizer.encode(text, false, parse_special);
            assert_eq!(
                &tokenizer.decode(&ids),
                text,
                "round trip of {text:?} (parse_special: {parse_special}) through {ids:?}"
            );
        }
    }
}

#[test]
fn bytes_without_a_token_are_dropped_as_llama_cpp_drops_them() {
    let tokenizer = tokenizer();
    // Checked against the file with an independent reader: these GPT-2 alphabet characters are
    // not in SmolLM2's vocabulary.
    assert_eq!(
        tokenizer.bytes_without_token(),
        [
            0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2, 0xf5, 0xf6, 0xf7, 0xf8,
            0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff
        ]
    );
    let ids = tokenizer.encode("a\u{4}b\u{1d}c", false, true);
    assert_eq!(tokenizer.decode(&ids), "abc");
    assert!(!tokenizer.round_trips("a\u{4}b"));
}

#[test]
fn parse_special_turns_markup_into_single_control_tokens() {
    let tokenizer = tokenizer();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tokenizer.encode(text, false, true);
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    assert_eq!(parsed.iter().filter(|&&id| id <= 16).count(), 2);
    let literal = tokenizer.encode(text, false, false);
    assert!(literal.iter().all(|&id| id > 16), "{literal:?}");
    assert_eq!(tokenizer.decode_with(&parsed, false), "user\nHi");
}

/// Token ids recorded from llama.cpp (llama-cpp-python 0.3.36, `Llama(vocab_only=True)`,
/// `tokenize(text, add_bos=False, special=True)`) for SmolLM2-135M-Instruct.Q4_1.gguf.
const LLAMA_CPP_IDS: &[(&str, &[u32])] = &[
    ("Hello, we can use", &[19556, 28, 392, 416, 722]),
    ("Hello world! 123", &[19556, 905, 17, 216, 33, 34, 35]),
    ("  multiple   spaces", &[216, 2701, 256, 5600]),
    ("\n", &[198]),
    ("\n\n", &[1116]),
    (
        "don't stop, we'll see; they're here",
        &[12420, 982, 2853, 28, 392, 3060, 963, 43, 502, 2316, 1535],
    ),
    ("DON'T I'LL", &[52, 2154, 23, 68, 339, 23, 16421]),
    (
        "3.14159e-10 and 1,234,567",
        &[
            35, 30, 33, 36, 33, 37, 41, 85, 29, 33, 32, 284, 216, 33, 28, 34, 35, 36, 28, 37, 38,
            39,
        ],
    ),
    (
        "x² + y³ = ½",
        &[104, 19133, 1232, 329, 39050, 446, 216, 16738],
    ),
    (
        "٣٤٥ ४२",
        &[164, 113, 164, 114, 164, 115, 216, 9310, 120, 9310, 118],
    ),
    (
        "fn main() {\n    println!(\"hi\");\n}\n",
        &[
            7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 1470, 6004, 21646, 198, 109, 198,
        ],
    ),
    (
        "def f(x):\n\treturn x ** 2\n",
        &[
            1604, 275, 24, 104, 727, 198, 197, 5406, 1792, 1903, 216, 34, 198,
        ],
    ),
    (
        "{\"key\": [1, 2, 3]}",
        &[39428, 2393, 1799, 933, 33, 28, 216, 34, 28, 216, 35, 28852],
    ),
    (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        &[1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198],
    ),
    ("<|im_start|><|im_end|><|endoftext|>", &[1, 2, 0]),
    ("<|im_end|", &[44, 108, 306, 79, 486, 108]),
    (
        "<jupyter_code>print(1)<empty_output>",
        &[13, 3272, 24, 33, 25, 16],
    ),
    (
        "日本語のテキスト",
        &[
            23274, 115, 40993, 179, 120, 248, 26453, 11100, 224, 10391, 251, 10391, 134, 11100, 226,
        ],
    ),
    (
        "中文文本，标点。",
        &[28589, 29184, 29184, 40993, 12831, 46781, 44083, 19076],
    ),
    (
        "한국어 텍스트",
        &[
            33085, 246, 181, 130, 251, 183, 240, 129, 48138, 223, 231, 183, 228, 114, 184, 228, 133,
        ],
    ),
    (
        "مرحبا بالعالم",
        &[
            21706, 20602, 44626, 31462, 10805, 45726, 22208, 34966, 22208, 21706,
        ],
    ),
    ("नमस्ते", &[30658, 35090, 38770, 16525, 26293, 30581]),
    (
        "Café déjà vu.",
        &[51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
    ),
    (
        "e\u{301} Z\u{364}a\u{308}",
        &[85, 151, 219, 1777, 152, 114, 81, 151, 226],
    ),
    (
        "👨\u{200d}👩\u{200d}👧 🇫🇷 👍🏽",
        &[
            10813, 235, 118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117, 15107, 225, 121,
            10813, 225, 132, 15107, 235, 231, 10813, 233, 138,
        ],
    ),
    (
        "a\u{a0}b\u{3000}c\u{2028}d",
        &[81, 15442, 82, 12109, 218, 83, 321, 118, 84],
    ),
    ("\u{feff}bom", &[186, 136, 140, 82, 300]),
    // U+001D has no token: llama.cpp drops it.
    ("\u{1c}\u{1d}\u{1e}\u{1f}", &[213, 214, 215]),
    ("a\u{4}b", &[81, 82]),
    ("tab\t\tend   ", &[15999, 197, 197, 486, 333]),
    ("\r\n\r\n", &[18682]),
    (
        "𝔘𝔫𝔦 \u{e000}",
        &[
            23159, 238, 242, 23159, 238, 121, 23159, 238, 116, 216, 185, 218, 218,
        ],
    ),
];

#[test]
fn known_tokenizations_match_llama_cpp() {
    let tokenizer = tokenizer();
    assert!(!LLAMA_CPP_IDS.is_empty());
    for (text, expected) in LLAMA_CPP_IDS {
        assert_eq!(&tokenizer.encode(text, false, true), expected, "{text:?}");
    }
}

/// The Python interpreter of `ops/setup llama-cpp`'s venv, when llama.cpp is installed there.
fn llama_cpp_python() -> Option<PathBuf> {
    let root = kiln_home().join("llama-cpp");
    let python = root.join("venv/bin/python");
    let installed = std::fs::read_dir(&root).ok()?.flatten().any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .starts_with(".installed-")
    });
    (installed && python.is_file()).then_some(python)
}

/// Tokenizes every corpus string with llama.cpp (with and without `parse_special`) and
/// detokenizes Kiln's ids with it; one JSON object per line.
const LLAMA_CPP_SCRIPT: &str = r#"
import json, sys
from llama_cpp import Llama
model_path, corpus_path, ours_path = sys.argv[1:4]
llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
corpus = json.load(open(corpus_path, encoding="utf-8"))
ours = json.load(open(ours_path, encoding="utf-8"))
out = []
for text, our_ids in zip(corpus, ours):
    data = text.encode("utf-8")
    out.append({
        "special": llm.tokenize(data, add_bos=False, special=True),
        "plain": llm.tokenize(data, add_bos=False, special=False),
        "with_bos": llm.tokenize(data, add_bos=True, special=True),
        "detok": list(llm.detokenize(our_ids, special=True)),
    })
json.dump(out, sys.stdout)
"#;

#[test]
fn token_ids_equal_llama_cpp_on_the_whole_corpus() {
    let Some(python) = llama_cpp_python() else {
        let message = "llama.cpp's Python bindings are not installed (`ops/setup llama-cpp`): \
                       the corpus comparison with llama.cpp did not run";
        if std::env::var_os("KILN_REQUIRE_LLAMA_CPP").is_some() {
            panic!("{message}");
        }
        eprintln!("warning: {message}");
        return;
    };
    let tokenizer = tokenizer();
    let corpus = corpus();
    let ours: Vec<Vec<u32>> = corpus
        .iter()
        .map(|t| tokenizer.encode(t, false, true))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = dir.path().join("corpus.json");
    let ours_path = dir.path().join("ours.json");
    std::fs::write(&corpus_path, serde_json::to_vec(corpus).unwrap()).unwrap();
    std::fs::write(&ours_path, serde_json::to_vec(&ours).unwrap()).unwrap();
    let output = Command::new(&python)
        .arg("-c")
        .arg(LLAMA_CPP_SCRIPT)
        .arg(model_path())
        .arg(&corpus_path)
        .arg(&ours_path)
        .output()
        .expect("llama-cpp python runs");
    assert!(
        output.status.success(),
        "llama.cpp script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reference.len(), corpus.len());
    let ids = |value: &serde_json::Value, key: &str| -> Vec<u32> {
        serde_json::from_value(value[key].clone()).unwrap()
    };
    let mut mismatches = Vec::new();
    for ((text, our_ids), reference) in corpus.iter().zip(&ours).zip(&reference) {
        let checks = [
            ("special", our_ids.clone(), ids(reference, "special")),
            (
                "plain",
                tokenizer.encode(text, false, false),
                ids(reference, "plain"),
            ),
            (
                "with_bos",
                tokenizer.encode(text, true, true),
                ids(reference, "with_bos"),
            ),
        ];
        for (what, ours, theirs) in checks {
            if ours != theirs {
                mismatches.push(format!(
                    "{what} {text:?}\n  kiln:      {ours:?}\n  llama.cpp: {theirs:?}"
                ));
            }
        }
        let detokenized: Vec<u8> = serde_json::from_value(reference["detok"].clone()).unwrap();
        let ours: Vec<u8> = our_ids
            .iter()
            .flat_map(|&id| tokenizer.token_to_piece(id, true).unwrap().to_vec())
            .collect();
        if detokenized != ours {
            mismatches.push(format!(
                "detokenizing {our_ids:?} ({text:?})\n  kiln:      {ours:?}\n  llama.cpp: {detokenized:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} strings differ from llama.cpp:\n{}",
        mismatches.len(),
        corpus.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

/// Not a timed assertion: prints encode throughput so a run can report it
/// (`cargo test --release -p kiln-models --test tokenizer -- --nocapture throughput`).
#[test]
fn encode_throughput_is_reported() {
    let tokenizer = tokenizer();
    let text: String = corpus().join("\n");
    let fresh = Tokenizer::from_gguf(&model().gguf).unwrap();
    let start = Instant::now();
    let cold = fresh.encode(&text, false, true);
    let cold_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let warm = fresh.encode(&text, false, true);
    let warm_secs = start.elapsed().as_secs_f64();
    assert_eq!(cold, warm);
    assert_eq!(cold, tokenizer.encode(&text, false, true));
    let mb = text.len() as f64 / 1e6;
    eprintln!(
        "encode throughput: {:.2} MB of text, {} tokens; cold cache {:.1} MB/s ({:.0} tokens/s), \
         warm cache {:.1} MB/s ({:.0} tokens/s)",
        mb,
        cold.len(),
        mb / cold_secs,
        cold.len() as f64 / cold_secs,
        mb / warm_secs,
        warm.len() as f64 / warm_secs,
    );
}

// ---------------------------------------------------------------------------------------------
// Chat template.
// ---------------------------------------------------------------------------------------------

fn conversations() -> Vec<Vec<Message>> {
    vec![
        vec![],
        vec![Message::user("What is 2+2?")],
        vec![Message::system("You are terse."), Message::user("Hi")],
        vec![
            Message::user("Book a flight to 東京 🛫"),
            Message::assistant("Which date?"),
            Message::user("June 3rd, 2025\n\n  (morning)"),
        ],
        vec![
            Message::system("Use tools."),
            Message::user("Weather in Paris?"),
            Message::assistant("{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}"),
        ],
    ]
}

/// The model's template rendered by Python's jinja2 with `transformers`' settings.
const JINJA_SCRIPT: &str = r#"
import json, sys, jinja2
template, conversations = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
compiled = env.from_string(template)
out = [[compiled.render(messages=c, add_generation_prompt=g, bos_token="<|im_start|>", eos_token="<|im_end|>")
        for g in (False, True)] for c in conversations]
json.dump(out, sys.stdout)
"#;

#[test]
fn chat_template_renders_like_jinja2_and_transformers() {
    let template = &model().chat_template;
    let conversations = conversations();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conversations.json");
    std::fs::write(&path, serde_json::to_vec(&conversations).unwrap()).unwrap();
    let output = Command::new("python3")
        .arg("-c")
        .arg(JINJA_SCRIPT)
        .arg(template.source())
        .arg(&path)
        .output()
        .expect("python3 is installed (ops/test requires it)");
    assert!(
        output.status.success(),
        "python3 with jinja2 is needed as the reference renderer: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<Vec<String>> = serde_json::from_slice(&output.stdout).unwrap();
    for (conversation, expected) in conversations.iter().zip(reference) {
        for (generation_prompt, expected) in [false, true].into_iter().zip(expected) {
            let rendered = template.render(conversation, generation_prompt).unwrap();
            assert_eq!(rendered, expected, "{conversation:?}");
        }
    }
}

#[test]
fn chat_prompt_uses_the_default_system_prompt_and_tokenizes_markup_as_control_tokens() {
    let files = model();
    let prompt = files
        .chat_template
        .render(&[Message::user("Hi")], true)
        .unwrap();
    assert!(
        prompt.starts_with(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        ),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    let ids = files.tokenizer.encode(&prompt, false, true);
    let markers: Vec<u32> = ids.iter().copied().filter(|&id| id <= 2).collect();
    assert_eq!(markers, [1, 2, 1, 2, 1]);
    assert_eq!(files.tokenizer.decode(&ids), prompt);
}

#[test]
fn model_loads_from_a_local_spec_path() {
    let path = model_path();
    let spec = path.to_str().unwrap();
    let files = LocalModelFiles::load_spec(spec).unwrap();
    assert_eq!(files.tokenizer.vocab_size(), 49152);
    assert_eq!(
        Path::new(files.gguf.path()),
        path.as_path(),
        "the spec's path is the file that was read"
    );
}

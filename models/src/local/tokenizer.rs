//! Byte-level BPE tokenizer built from a GGUF file's vocabulary, the way llama.cpp builds it.
//!
//! Kiln does not use candle's `Tokenizer::from_gguf`: it adds a prefix space that SmolLM2 does not
//! use, so prompts would be tokenized differently from how the model was trained. This tokenizer
//! reads `tokenizer.ggml.{tokens,token_type,merges,pre,…}` and reproduces llama.cpp's
//! `llama_tokenize`:
//!
//! 1. special tokens (control, user-defined, unknown types) are cut out of the text first, longest
//!    first, when `parse_special` is on (user-defined ones always);
//! 2. each remaining span is split into words by the file's pre-tokenizer ([`PreTokenizer`]);
//! 3. each word's UTF-8 bytes are mapped to GPT-2's printable byte alphabet and merged by BPE,
//!    lowest merge rank first, leftmost first among equal ranks.
//!
//! No prefix space is added and no normalization is applied, so decoding the ids gives back the
//! exact input text, except bytes the vocabulary has no token for (SmolLM2 lacks 21: six ASCII
//! control characters and UTF-8 lead bytes that valid text rarely or never uses), which llama.cpp
//! drops and so does this tokenizer (see [`Tokenizer::bytes_without_token`]).
//!
//! Partial: only byte-level BPE vocabularies (`tokenizer.ggml.model = gpt2`) with the GPT-2 or
//! StarCoder pre-tokenizers are implemented; SentencePiece vocabularies (Llama 2) and other
//! pre-tokenizers (Llama 3's `llama-bpe`, Qwen2, …) are refused with
//! [`TokenizerErrorKind::Unsupported`]. Per-model `lstrip`/`rstrip` token attributes that
//! llama.cpp sets by model name (Phi-3, Jina) are not applied.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;

use super::gguf::{GgufError, GgufFile};
pub use super::pre_tokenizer::PreTokenizer;

/// A token id, as in the model's embedding table.
pub type TokenId = u32;

/// What kind of problem a [`TokenizerError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerErrorKind {
    /// A tokenizer metadata key is missing or mistyped (see the wrapped GGUF error).
    Metadata,
    /// The vocabulary uses a tokenizer model or pre-tokenizer Kiln does not implement.
    Unsupported,
    /// The vocabulary contradicts itself (duplicate tokens, mismatched lengths, missing bytes).
    InvalidVocabulary,
}

/// Why a tokenizer could not be built from a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Metadata(#[from] GgufError),
    #[error("{path}: {what} is not supported by Kiln's tokenizer ({supported})")]
    Unsupported {
        path: String,
        what: String,
        supported: &'static str,
    },
    #[error("{path}: invalid tokenizer vocabulary: {detail}")]
    InvalidVocabulary { path: String, detail: String },
}

impl TokenizerError {
    pub fn kind(&self) -> TokenizerErrorKind {
        match self {
            TokenizerError::Metadata(_) => TokenizerErrorKind::Metadata,
            TokenizerError::Unsupported { .. } => TokenizerErrorKind::Unsupported,
            TokenizerError::InvalidVocabulary { .. } => TokenizerErrorKind::InvalidVocabulary,
        }
    }
}

/// A token's type, from `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_gguf(value: i32) -> TokenType {
        match value {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens matched as a whole in text before pre-tokenization.
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// Token texts llama.cpp treats as end of generation whatever their declared type.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// How many distinct words the encode cache keeps before it is cleared.
const WORD_CACHE_CAPACITY: usize = 1 << 16;

/// Words longer than this (bytes) are not cached: long whitespace runs or minified blobs would
/// fill the cache with entries that never repeat.
const WORD_CACHE_MAX_WORD_LEN: usize = 64;

/// A byte-level BPE tokenizer for one GGUF vocabulary. Cheap to share across threads.
pub struct Tokenizer {
    /// Token texts as stored in the file (GPT-2 byte alphabet for normal tokens).
    tokens: Vec<String>,
    token_types: Vec<TokenType>,
    /// What each token decodes to, as bytes (special tokens: their text).
    pieces: Vec<Vec<u8>>,
    token_ids: HashMap<String, TokenId>,
    /// `(left, right) -> (rank, merged)`.
    merges: HashMap<(TokenId, TokenId), (u32, TokenId)>,
    /// The token of each single byte; `None` for bytes the vocabulary cannot represent (SmolLM2
    /// lacks 21, such as U+0004 and UTF-8 lead bytes 0xF1/0xF2), which are dropped as in llama.cpp.
    byte_tokens: [Option<TokenId>; 256],
    /// Special tokens in the order llama.cpp matches them: longest text first.
    special_tokens: Vec<TokenId>,
    end_of_generation: HashSet<TokenId>,
    pre_tokenizer: PreTokenizer,
    bos: Option<TokenId>,
    eos: Option<TokenId>,
    unknown: Option<TokenId>,
    padding: Option<TokenId>,
    add_bos: bool,
    add_eos: bool,
    word_cache: Mutex<HashMap<Box<str>, Box<[TokenId]>>>,
}

impl Tokenizer {
    /// Builds the tokenizer described by `file`'s `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let path = file.path().display().to_string();
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported {
                path,
                what: format!("tokenizer model `{model}`"),
                supported: "only byte-level BPE, `gpt2`",
            });
        }
        let pre_name = match file.get("tokenizer.ggml.pre") {
            Some(_) => file.get_str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let Some(pre_tokenizer) = PreTokenizer::from_gguf_name(pre_name) else {
            return Err(TokenizerError::Unsupported {
                path,
                what: format!("pre-tokenizer `{pre_name}`"),
                supported: "smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, \
                            gpt-2, mpt, olmo, phi-2",
            });
        };
        let tokens = file.get_string_array("tokenizer.ggml.tokens")?.to_vec();
        let token_types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file.get_i32_array("tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        let merges = file.get_string_array("tokenizer.ggml.merges")?;
        let vocabulary = Vocabulary {
            tokens,
            token_types,
            merges: merges.to_vec(),
            pre_tokenizer,
            bos: optional_id(file, "tokenizer.ggml.bos_token_id")?,
            eos: optional_id(file, "tokenizer.ggml.eos_token_id")?,
            unknown: optional_id(file, "tokenizer.ggml.unknown_token_id")?,
            padding: optional_id(file, "tokenizer.ggml.padding_token_id")?,
            add_bos: optional_bool(file, "tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            add_eos: optional_bool(file, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        };
        Tokenizer::from_vocabulary(vocabulary).map_err(|detail| TokenizerError::InvalidVocabulary {
            path: path.clone(),
            detail,
        })
    }

    /// Builds a tokenizer from vocabulary parts; the error says what is inconsistent.
    pub fn from_vocabulary(vocabulary: Vocabulary) -> Result<Tokenizer, String> {
        let Vocabulary {
            mut tokens,
            token_types,
            merges,
            pre_tokenizer,
            bos,
            eos,
            unknown,
            padding,
            add_bos,
            add_eos,
        } = vocabulary;
        if token_types.len() < tokens.len() {
            return Err(format!(
                "{} token types for {} tokens",
                token_types.len(),
                tokens.len()
            ));
        }
        let mut token_types: Vec<TokenType> = token_types[..tokens.len()]
            .iter()
            .map(|&t| TokenType::from_gguf(t))
            .collect();
        let token_ids = index_tokens(&mut tokens)?;
        let end_of_generation = mark_end_of_generation(&tokens, &mut token_types, eos);
        let byte_tokens = byte_tokens(&token_ids)?;
        let merges = index_merges(&merges, &token_ids);
        let reverse_alphabet: HashMap<char, u8> = byte_alphabet()
            .iter()
            .enumerate()
            .map(|(byte, &c)| (c, byte as u8))
            .collect();
        let pieces = tokens
            .iter()
            .zip(&token_types)
            .map(|(text, &token_type)| piece_bytes(text, token_type, &reverse_alphabet))
            .collect();
        let special_tokens = special_tokens_by_length(&tokens, &token_types);
        let checked = |id: Option<u32>, name: &str| -> Option<TokenId> {
            let id = id?;
            if (id as usize) < tokens.len() {
                return Some(id);
            }
            tracing::warn!(
                token = name,
                id,
                vocab = tokens.len(),
                "special token id out of vocabulary, ignored"
            );
            None
        };
        let (bos, eos) = (checked(bos, "bos"), checked(eos, "eos"));
        if add_bos && bos.is_none() {
            return Err("add_bos_token is true but there is no valid bos_token_id".to_string());
        }
        if add_eos && eos.is_none() {
            return Err("add_eos_token is true but there is no valid eos_token_id".to_string());
        }
        Ok(Tokenizer {
            unknown: checked(unknown, "unknown"),
            padding: checked(padding, "padding"),
            tokens,
            token_types,
            pieces,
            token_ids,
            merges,
            byte_tokens,
            special_tokens,
            end_of_generation,
            pre_tokenizer,
            bos,
            eos,
            add_bos,
            add_eos,
            word_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Token ids of `text`. `add_special` adds the BOS/EOS tokens the vocabulary asks for
    /// (`tokenizer.ggml.add_{bos,eos}_token`; SmolLM2 asks for none). `parse_special` matches
    /// control tokens such as `<|im_start|>` written in the text; without it they are tokenized
    /// as plain text (user-defined tokens are matched either way, as in llama.cpp).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<TokenId> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        for fragment in self.split_special(text, parse_special) {
            match fragment {
                Fragment::Special(id) => ids.push(id),
                Fragment::Text(span) => self.encode_span(span, &mut ids),
            }
        }
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        ids
    }

    /// The text of `ids`, special tokens included (so `decode(encode(t, _, true)) == t`).
    /// Bytes that do not form valid UTF-8 (a generation cut inside a character) become U+FFFD.
    pub fn decode(&self, ids: &[TokenId]) -> String {
        self.decode_with(ids, true)
    }

    /// Like [`Tokenizer::decode`]; `render_special: false` drops control tokens (what a chat
    /// reply shows without `<|im_end|>`).
    pub fn decode_with(&self, ids: &[TokenId], render_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.token_to_piece(id, render_special) {
                Some(piece) => bytes.extend_from_slice(piece),
                None => bytes.extend_from_slice("\u{FFFD}".as_bytes()),
            }
        }
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
        }
    }

    /// The bytes token `id` stands for (not always whole UTF-8 characters), `None` for an id
    /// outside the vocabulary. Control and unknown tokens are empty unless `render_special`;
    /// unused and undefined tokens are always empty, as in llama.cpp.
    pub fn token_to_piece(&self, id: TokenId, render_special: bool) -> Option<&[u8]> {
        let index = id as usize;
        let piece = self.pieces.get(index)?;
        let hidden = matches!(
            self.token_types[index],
            TokenType::Control | TokenType::Unknown
        ) && !render_special;
        Some(if hidden { &[] } else { piece })
    }

    /// The token's text as stored in the vocabulary (GPT-2 byte alphabet for normal tokens).
    pub fn token_text(&self, id: TokenId) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token given its vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.token_ids.get(text).copied()
    }

    pub fn token_type(&self, id: TokenId) -> Option<TokenType> {
        self.token_types.get(id as usize).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre_tokenizer
    }

    pub fn bos_id(&self) -> Option<TokenId> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<TokenId> {
        self.eos
    }

    pub fn unknown_id(&self) -> Option<TokenId> {
        self.unknown
    }

    pub fn padding_id(&self) -> Option<TokenId> {
        self.padding
    }

    /// Bytes the vocabulary has no token for. Text containing them does not round-trip: llama.cpp
    /// (and so Kiln) drops them when encoding.
    pub fn bytes_without_token(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&byte| self.byte_tokens[byte as usize].is_none())
            .collect()
    }

    /// Whether `decode(encode(text, _, _)) == text`: every byte of `text` has a token.
    pub fn round_trips(&self, text: &str) -> bool {
        text.bytes()
            .all(|byte| self.byte_tokens[byte as usize].is_some())
    }

    /// Whether generation stops at `id` (EOS, and tokens such as `<|im_end|>`, `<|endoftext|>`).
    pub fn is_end_of_generation(&self, id: TokenId) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// All end-of-generation tokens, sorted.
    pub fn end_of_generation_ids(&self) -> Vec<TokenId> {
        let mut ids: Vec<TokenId> = self.end_of_generation.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Cuts special tokens out of `text` the way llama.cpp does: for each special token, longest
    /// first, every occurrence in every remaining text fragment is split out.
    fn split_special<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(text)];
        for &id in &self.special_tokens {
            let token_type = self.token_types[id as usize];
            if !parse_special && token_type != TokenType::UserDefined {
                continue;
            }
            let special = self.tokens[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(special)))
            {
                continue;
            }
            fragments = fragments
                .into_iter()
                .flat_map(|fragment| split_fragment(fragment, special, id))
                .collect();
        }
        fragments
    }

    fn encode_span(&self, span: &str, ids: &mut Vec<TokenId>) {
        for range in self.pre_tokenizer.split(span) {
            self.encode_word(&span[range], ids);
        }
    }

    fn encode_word(&self, word: &str, ids: &mut Vec<TokenId>) {
        let cacheable = word.len() <= WORD_CACHE_MAX_WORD_LEN;
        if cacheable {
            let cache = self.word_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cached) = cache.get(word) {
                ids.extend_from_slice(cached);
                return;
            }
        }
        let start = ids.len();
        self.merge_word(word.as_bytes(), ids);
        if cacheable {
            let mut cache = self.word_cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= WORD_CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(word.into(), ids[start..].into());
        }
    }

    /// BPE over one word: start from one token per byte, then repeatedly apply the lowest-ranked
    /// merge among adjacent pairs (leftmost on ties) until none applies.
    fn merge_word(&self, word: &[u8], ids: &mut Vec<TokenId>) {
        if word.len() == 1 {
            ids.extend(self.byte_tokens[word[0] as usize]);
            return;
        }
        let mut symbols: Vec<Symbol> = word
            .iter()
            .enumerate()
            .map(|(index, &byte)| Symbol {
                id: self.byte_tokens[byte as usize],
                prev: index.checked_sub(1),
                next: (index + 1 < word.len()).then_some(index + 1),
                merged_away: false,
            })
            .collect();
        let mut queue = BinaryHeap::with_capacity(word.len());
        for left in 0..word.len() - 1 {
            self.push_pair(&mut queue, &symbols, left, left + 1);
        }
        while let Some(Reverse(pair)) = queue.pop() {
            let (left, right) = (pair.left, pair.right);
            let stale = symbols[left].merged_away
                || symbols[right].merged_away
                || symbols[left].id != Some(pair.left_id)
                || symbols[right].id != Some(pair.right_id);
            if stale {
                continue;
            }
            symbols[left].id = Some(pair.merged);
            symbols[left].next = symbols[right].next;
            symbols[right].merged_away = true;
            if let Some(next) = symbols[right].next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = symbols[left].prev {
                self.push_pair(&mut queue, &symbols, prev, left);
            }
            if let Some(next) = symbols[left].next {
                self.push_pair(&mut queue, &symbols, left, next);
            }
        }
        let mut cursor = Some(0);
        while let Some(index) = cursor {
            ids.extend(symbols[index].id);
            cursor = symbols[index].next;
        }
    }

    fn push_pair(
        &self,
        queue: &mut BinaryHeap<Reverse<Pair>>,
        symbols: &[Symbol],
        left: usize,
        right: usize,
    ) {
        let (Some(left_id), Some(right_id)) = (symbols[left].id, symbols[right].id) else {
            return;
        };
        let key = (left_id, right_id);
        let Some(&(rank, merged)) = self.merges.get(&key) else {
            return;
        };
        queue.push(Reverse(Pair {
            rank,
            left,
            right,
            left_id: key.0,
            right_id: key.1,
            merged,
        }));
    }
}

/// A summary: the vocabulary itself is 50k entries.
impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("pre_tokenizer", &self.pre_tokenizer)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

/// The parts of a byte-level BPE vocabulary, as read from a GGUF file.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` values (1 normal, 3 control, 4 user-defined, …).
    pub token_types: Vec<i32>,
    /// `"left right"` pairs, highest priority first.
    pub merges: Vec<String>,
    pub pre_tokenizer: PreTokenizer,
    pub bos: Option<TokenId>,
    pub eos: Option<TokenId>,
    pub unknown: Option<TokenId>,
    pub padding: Option<TokenId>,
    pub add_bos: bool,
    pub add_eos: bool,
}

/// A piece of input: a special token cut out of the text, or text still to tokenize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'t> {
    Special(TokenId),
    Text(&'t str),
}

fn split_fragment<'t>(fragment: Fragment<'t>, special: &str, id: TokenId) -> Vec<Fragment<'t>> {
    let Fragment::Text(text) = fragment else {
        return vec![fragment];
    };
    let mut parts = Vec::new();
    let mut rest_start = 0;
    for (start, matched) in text.match_indices(special) {
        if start > rest_start {
            parts.push(Fragment::Text(&text[rest_start..start]));
        }
        parts.push(Fragment::Special(id));
        rest_start = start + matched.len();
    }
    if rest_start < text.len() {
        parts.push(Fragment::Text(&text[rest_start..]));
    }
    parts
}

/// One symbol of a word during BPE; merged symbols stay in place, flagged. `id` is `None` for a
/// byte without a token: it never merges and is left out of the output.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: Option<TokenId>,
    prev: Option<usize>,
    next: Option<usize>,
    merged_away: bool,
}

/// A candidate merge. Ordered by rank, then position, so the heap pops what llama.cpp would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    left_id: TokenId,
    right_id: TokenId,
    merged: TokenId,
}

fn optional_id(file: &GgufFile, key: &str) -> Result<Option<TokenId>, GgufError> {
    match file.get(key) {
        Some(_) => file.get_u32(key).map(Some),
        None => Ok(None),
    }
}

fn optional_bool(file: &GgufFile, key: &str) -> Result<Option<bool>, GgufError> {
    match file.get(key) {
        Some(_) => file.get_bool(key).map(Some),
        None => Ok(None),
    }
}

/// Text → id, refusing duplicates; empty tokens get llama.cpp's `[EMPTY_<id>]` placeholder.
fn index_tokens(tokens: &mut [String]) -> Result<HashMap<String, TokenId>, String> {
    let mut ids = HashMap::with_capacity(tokens.len());
    for (id, token) in tokens.iter_mut().enumerate() {
        if token.is_empty() {
            *token = format!("[EMPTY_{id}]");
        }
        if let Some(first) = ids.insert(token.clone(), id as TokenId) {
            return Err(format!(
                "token {token:?} appears twice (ids {first} and {id})"
            ));
        }
    }
    Ok(ids)
}

/// The end-of-generation set: EOS plus tokens whose text marks an end; those are made control
/// tokens if the file says otherwise, as llama.cpp does.
fn mark_end_of_generation(
    tokens: &[String],
    token_types: &mut [TokenType],
    eos: Option<TokenId>,
) -> HashSet<TokenId> {
    let mut ids: HashSet<TokenId> = eos
        .filter(|&id| (id as usize) < tokens.len())
        .into_iter()
        .collect();
    for (id, text) in tokens.iter().enumerate() {
        if !END_OF_GENERATION_TEXTS.contains(&text.as_str()) {
            continue;
        }
        ids.insert(id as TokenId);
        if token_types[id] != TokenType::Control {
            tracing::debug!(token = %text, id, "end-of-generation token marked as control");
            token_types[id] = TokenType::Control;
        }
    }
    ids
}

/// The token of each byte's GPT-2 alphabet character. Every printable ASCII byte must have one
/// (otherwise this is not a byte-level vocabulary); other bytes may lack one and are then dropped
/// from the output, as llama.cpp drops them.
fn byte_tokens(token_ids: &HashMap<String, TokenId>) -> Result<[Option<TokenId>; 256], String> {
    let alphabet = byte_alphabet();
    let mut tokens = [None; 256];
    for (byte, token) in tokens.iter_mut().enumerate() {
        *token = token_ids.get(alphabet[byte].to_string().as_str()).copied();
    }
    if let Some(byte) = (b'!'..=b'~').find(|&b| tokens[b as usize].is_none()) {
        return Err(format!(
            "no token for the byte {:?}: this is not a byte-level BPE vocabulary",
            byte as char
        ));
    }
    let missing: Vec<String> = (0..=255u8)
        .filter(|&b| tokens[b as usize].is_none())
        .map(|b| format!("0x{b:02x}"))
        .collect();
    if !missing.is_empty() {
        tracing::debug!(
            bytes = %missing.join(" "),
            "bytes without a token are dropped when encoding"
        );
    }
    Ok(tokens)
}

/// `(left, right) -> (rank, merged)` over token ids. Merges whose parts or result are not tokens
/// are skipped: they cannot occur when merging tokens (llama.cpp would only differ on
/// vocabularies whose merges produce non-tokens).
fn index_merges(
    merges: &[String],
    token_ids: &HashMap<String, TokenId>,
) -> HashMap<(TokenId, TokenId), (u32, TokenId)> {
    let mut index = HashMap::with_capacity(merges.len());
    let mut skipped = 0usize;
    for (rank, merge) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte.
        let split = merge
            .bytes()
            .skip(1)
            .position(|byte| byte == b' ')
            .map(|p| p + 1);
        let Some(split) = split else {
            skipped += 1;
            continue;
        };
        let (left, right) = (&merge[..split], &merge[split + 1..]);
        let merged = format!("{left}{right}");
        let (Some(&l), Some(&r), Some(&m)) = (
            token_ids.get(left),
            token_ids.get(right),
            token_ids.get(&merged),
        ) else {
            skipped += 1;
            continue;
        };
        // The first (highest-priority) occurrence of a pair wins, like llama.cpp's `emplace`.
        index.entry((l, r)).or_insert((rank as u32, m));
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            total = merges.len(),
            "bpe merges skipped: malformed or not made of tokens"
        );
    }
    index
}

/// What a token decodes to: normal tokens map back from the GPT-2 alphabet to bytes; special and
/// user-defined tokens are their text; byte tokens (`<0xAB>`) their byte; unused ones nothing.
fn piece_bytes(text: &str, token_type: TokenType, reverse: &HashMap<char, u8>) -> Vec<u8> {
    match token_type {
        TokenType::Normal => decode_byte_alphabet(text, reverse),
        TokenType::Control | TokenType::Unknown | TokenType::UserDefined => {
            text.as_bytes().to_vec()
        }
        TokenType::Byte => parse_byte_token(text)
            .map(|byte| vec![byte])
            .unwrap_or_default(),
        TokenType::Unused | TokenType::Undefined => Vec::new(),
    }
}

fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte alphabet: printable bytes stand for themselves, the other 68 are shifted to
/// U+0100 and up, in byte order.
fn byte_alphabet() -> [char; 256] {
    let mut alphabet = ['\0'; 256];
    let mut shifted = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        alphabet[byte as usize] = if printable {
            char::from(byte)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("U+0100..U+0143 are chars")
        };
    }
    alphabet
}

/// Maps a normal token's text back to bytes. A character outside the alphabet (not produced by
/// byte-level BPE) is kept as its own UTF-8 bytes.
fn decode_byte_alphabet(text: &str, reverse: &HashMap<char, u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match reverse.get(&c) {
            Some(&byte) => bytes.push(byte),
            None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    bytes
}

/// Control, user-defined and unknown tokens, longest text first (ties: lower id first).
fn special_tokens_by_length(tokens: &[String], token_types: &[TokenType]) -> Vec<TokenId> {
    let mut special: Vec<TokenId> = (0..tokens.len() as TokenId)
        .filter(|&id| token_types[id as usize].is_special())
        .collect();
    special.sort_by_key(|&id| (Reverse(tokens[id as usize].len()), id));
    special
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary in the GPT-2 alphabet: all 256 byte tokens, a few merges, two control
    /// tokens and one user-defined token.
    fn toy() -> Tokenizer {
        let alphabet = byte_alphabet();
        let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2",
        ];
        for merge in merges {
            tokens.push(merge.replace(' ', ""));
        }
        tokens.push("<|im_start|>".to_string());
        tokens.push("<|im_end|>".to_string());
        tokens.push("<tool>".to_string());
        let mut token_types = vec![1; tokens.len()];
        let n = token_types.len();
        token_types[n - 3] = 3;
        token_types[n - 2] = 3;
        token_types[n - 1] = 4;
        Tokenizer::from_vocabulary(Vocabulary {
            tokens,
            token_types,
            merges: merges.iter().map(|m| m.to_string()).collect(),
            pre_tokenizer: PreTokenizer::StarCoder,
            bos: Some(n as u32 - 3),
            eos: Some(n as u32 - 2),
            unknown: None,
            padding: None,
            add_bos: false,
            add_eos: false,
        })
        .unwrap()
    }

    fn texts(tokenizer: &Tokenizer, ids: &[TokenId]) -> Vec<String> {
        ids.iter()
            .map(|&id| tokenizer.token_text(id).unwrap().to_string())
            .collect()
    }

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let alphabet = byte_alphabet();
        assert_eq!(alphabet[b' ' as usize], 'Ġ');
        assert_eq!(alphabet[b'\n' as usize], 'Ċ');
        assert_eq!(alphabet[b'a' as usize], 'a');
        assert_eq!(alphabet[0], 'Ā');
        assert_eq!(alphabet[0xad], 'Ń');
        let distinct: HashSet<char> = alphabet.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn merges_apply_by_rank_within_words() {
        let tokenizer = toy();
        let ids = tokenizer.encode("hello world", false, false);
        assert_eq!(texts(&tokenizer, &ids), ["hello", "Ġworld"]);
        let ids = tokenizer.encode("hellhello", false, false);
        assert_eq!(texts(&tokenizer, &ids), ["hell", "hello"]);
    }

    #[test]
    fn digits_are_never_merged_across() {
        let tokenizer = toy();
        // "1 2" is a merge, but the StarCoder pre-tokenizer puts each digit in its own word.
        let ids = tokenizer.encode("12", false, false);
        assert_eq!(texts(&tokenizer, &ids), ["1", "2"]);
    }

    #[test]
    fn control_tokens_need_parse_special_and_user_defined_do_not() {
        let tokenizer = toy();
        let text = "<|im_start|>hello<tool>";
        let parsed = tokenizer.encode(text, false, true);
        assert_eq!(
            texts(&tokenizer, &parsed),
            ["<|im_start|>", "hello", "<tool>"]
        );
        let literal = tokenizer.encode(text, false, false);
        assert_eq!(literal.first(), tokenizer.token_id("<").as_ref());
        assert_eq!(literal.last(), tokenizer.token_id("<tool>").as_ref());
        assert_eq!(tokenizer.decode(&parsed), text);
        assert_eq!(tokenizer.decode(&literal), text);
    }

    #[test]
    fn decode_with_hides_control_tokens_only_when_asked() {
        let tokenizer = toy();
        let ids = tokenizer.encode("hello<|im_end|>", false, true);
        assert_eq!(tokenizer.decode(&ids), "hello<|im_end|>");
        assert_eq!(tokenizer.decode_with(&ids, false), "hello");
        assert!(tokenizer.is_end_of_generation(*ids.last().unwrap()));
    }

    #[test]
    fn multibyte_characters_round_trip_through_byte_tokens() {
        let tokenizer = toy();
        for text in ["é", "日本", "😀 x", "\u{0}\u{7f}\t\r\n"] {
            let ids = tokenizer.encode(text, false, true);
            assert_eq!(ids.len(), text.len(), "{text:?}: one token per byte");
            assert_eq!(tokenizer.decode(&ids), text);
        }
    }

    #[test]
    fn bytes_without_a_token_are_dropped_like_llama_cpp_does() {
        let mut vocabulary = toy_vocabulary();
        vocabulary.tokens[4] = "unused-4".to_string();
        let tokenizer = Tokenizer::from_vocabulary(vocabulary).unwrap();
        assert_eq!(tokenizer.bytes_without_token(), [4]);
        assert!(!tokenizer.round_trips("a\u{4}b"));
        assert!(tokenizer.round_trips("ab"));
        let ids = tokenizer.encode("he\u{4}he", false, false);
        assert_eq!(texts(&tokenizer, &ids), ["he", "he"]);
        assert_eq!(tokenizer.decode(&ids), "hehe");
    }

    #[test]
    fn partial_utf8_decodes_to_replacement_and_bad_ids_to_replacement() {
        let tokenizer = toy();
        let ids = tokenizer.encode("é", false, false);
        assert_eq!(tokenizer.decode(&ids[..1]), "\u{FFFD}");
        assert_eq!(tokenizer.token_to_piece(99_999, true), None);
        assert_eq!(tokenizer.decode(&[99_999]), "\u{FFFD}");
    }

    #[test]
    fn add_special_follows_the_vocabulary_flags() {
        let tokenizer = toy();
        assert_eq!(tokenizer.encode("hello", true, false).len(), 1);
        let mut vocabulary = toy_vocabulary();
        vocabulary.add_bos = true;
        let with_bos = Tokenizer::from_vocabulary(vocabulary).unwrap();
        let ids = with_bos.encode("hello", true, false);
        assert_eq!(ids[0], with_bos.bos_id().unwrap());
        assert_eq!(
            with_bos.encode("", true, false),
            [with_bos.bos_id().unwrap()]
        );
        assert!(with_bos.encode("", false, false).is_empty());
    }

    fn toy_vocabulary() -> Vocabulary {
        let tokenizer = toy();
        Vocabulary {
            tokens: tokenizer.tokens.clone(),
            token_types: tokenizer
                .token_types
                .iter()
                .map(|t| match t {
                    TokenType::Control => 3,
                    TokenType::UserDefined => 4,
                    _ => 1,
                })
                .collect(),
            merges: vec!["h e".to_string()],
            pre_tokenizer: PreTokenizer::Gpt2,
            bos: tokenizer.bos,
            eos: tokenizer.eos,
            unknown: None,
            padding: None,
            add_bos: false,
            add_eos: false,
        }
    }

    #[test]
    fn inconsistent_vocabularies_are_refused() {
        let mut duplicate = toy_vocabulary();
        duplicate.tokens.push("hello".to_string());
        duplicate.tokens.push("hello".to_string());
        duplicate.token_types.extend([1, 1]);
        let error = Tokenizer::from_vocabulary(duplicate).unwrap_err();
        assert!(error.contains("appears twice"), "{error}");

        let mut missing_byte = toy_vocabulary();
        missing_byte.tokens[b'a' as usize] = "not-a".to_string();
        let error = Tokenizer::from_vocabulary(missing_byte).unwrap_err();
        assert!(error.contains("'a'"), "{error}");

        let mut no_bos = toy_vocabulary();
        no_bos.add_bos = true;
        no_bos.bos = Some(1 << 30);
        let error = Tokenizer::from_vocabulary(no_bos).unwrap_err();
        assert!(error.contains("bos_token_id"), "{error}");

        let mut short_types = toy_vocabulary();
        short_types.token_types.truncate(10);
        assert!(Tokenizer::from_vocabulary(short_types).is_err());
    }

    #[test]
    fn longer_special_tokens_are_cut_first() {
        let mut vocabulary = toy_vocabulary();
        for (text, token_type) in [("<a>", 3), ("a><b", 3)] {
            vocabulary.tokens.push(text.to_string());
            vocabulary.token_types.push(token_type);
        }
        let tokenizer = Tokenizer::from_vocabulary(vocabulary).unwrap();
        // llama.cpp cuts the longer "a><b" first, although "<a>" starts earlier.
        let ids = tokenizer.encode("<a><b>", false, true);
        assert_eq!(texts(&tokenizer, &ids), ["<", "a><b", ">"]);
    }
}

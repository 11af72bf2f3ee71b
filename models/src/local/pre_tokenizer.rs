//! Pre-tokenization: how text is cut into words before byte-level BPE merges each word.
//!
//! This follows llama.cpp (`llama-vocab.cpp`, `unicode.cpp`) rather than Hugging Face's
//! `tokenizers`, because token ids must equal llama.cpp's for the same GGUF file. llama.cpp picks
//! a list of regexes from the file's `tokenizer.ggml.pre`; for the two families implemented here
//! they are:
//!
//! - GPT-2 (`gpt-2`, `mpt`, `olmo`, `phi-2`):
//!   `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`, which llama.cpp runs
//!   with a hand-written matcher that also ends a whitespace run no other branch takes (`|\s+`).
//! - StarCoder (`smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`,
//!   `minerva-7b`): first `\p{N}`, so every number character is its own word (digits split one
//!   by one), then the GPT-2 regex inside each remaining span.
//!
//! Character classes are Unicode general categories (`\p{L}`: L*, `\p{N}`: N*) and the
//! White_Space property (`\s`), as in llama.cpp's generated tables. The matcher below mirrors
//! llama.cpp's hand-written GPT-2 matcher branch for branch, including its one-space lookahead.

use std::ops::Range;

use unicode_general_category::{GeneralCategory, get_general_category};

/// The pre-tokenizers Kiln implements, chosen from `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// The GPT-2 regex alone.
    Gpt2,
    /// Every `\p{N}` character alone, then the GPT-2 regex (SmolLM2, StarCoder).
    StarCoder,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` value, when Kiln implements it.
    pub fn from_gguf_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Some(PreTokenizer::StarCoder),
            "gpt-2" | "mpt" | "olmo" | "phi-2" => Some(PreTokenizer::Gpt2),
            _ => None,
        }
    }

    /// Byte ranges of the words of `text`, in order, covering it entirely.
    pub fn split(self, text: &str) -> Vec<Range<usize>> {
        let mut words = Vec::with_capacity(text.len() / 3 + 1);
        match self {
            PreTokenizer::Gpt2 => split_gpt2(text, 0, &mut words),
            PreTokenizer::StarCoder => split_numbers_then_gpt2(text, &mut words),
        }
        words
    }
}

/// The classes the GPT-2 regex distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharClass {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\s` (the White_Space property)
    Whitespace,
    /// Anything else (`[^\s\p{L}\p{N}]`), unassigned code points included.
    Other,
}

/// The class of `c`; ASCII is answered without a table lookup.
pub fn char_class(c: char) -> CharClass {
    if c.is_ascii() {
        return ascii_class(c as u8);
    }
    if c.is_whitespace() {
        return CharClass::Whitespace;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => CharClass::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => CharClass::Number,
        _ => CharClass::Other,
    }
}

fn ascii_class(b: u8) -> CharClass {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => CharClass::Letter,
        b'0'..=b'9' => CharClass::Number,
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => CharClass::Whitespace,
        _ => CharClass::Other,
    }
}

/// `\p{N}` first: each number character becomes a word; the spans between go through GPT-2.
fn split_numbers_then_gpt2(text: &str, words: &mut Vec<Range<usize>>) {
    let mut span_start = 0;
    for (offset, c) in text.char_indices() {
        if char_class(c) != CharClass::Number {
            continue;
        }
        if span_start < offset {
            split_gpt2(&text[span_start..offset], span_start, words);
        }
        let end = offset + c.len_utf8();
        words.push(offset..end);
        span_start = end;
    }
    if span_start < text.len() {
        split_gpt2(&text[span_start..], span_start, words);
    }
}

/// One character of a span, with what the matcher needs to know about it.
#[derive(Clone, Copy)]
struct Char {
    offset: usize,
    value: char,
    class: CharClass,
}

/// The GPT-2 regex over `span` (which starts at byte `base` of the whole text), as llama.cpp's
/// hand-written matcher runs it. The regex never looks outside its span.
fn split_gpt2(span: &str, base: usize, words: &mut Vec<Range<usize>>) {
    let chars: Vec<Char> = span
        .char_indices()
        .map(|(offset, value)| Char {
            offset: base + offset,
            value,
            class: char_class(value),
        })
        .collect();
    let end_of_span = base + span.len();
    let byte_at = |pos: usize| chars.get(pos).map_or(end_of_span, |c| c.offset);
    let class_at = |pos: usize| chars.get(pos).map(|c| c.class);

    let mut pos = 0;
    while pos < chars.len() {
        let start = pos;
        pos = match_gpt2_word(&chars, pos, &class_at);
        words.push(byte_at(start)..byte_at(pos));
    }
}

/// Where the word starting at `pos` ends (exclusive, in characters).
fn match_gpt2_word(
    chars: &[Char],
    pos: usize,
    class_at: &impl Fn(usize) -> Option<CharClass>,
) -> usize {
    let current = chars[pos].value;
    if let Some(end) = match_contraction(chars, pos) {
        return end;
    }
    // ` ?X+`: a leading space joins the run of the class that follows it.
    let leading_space = current == ' ';
    let class = if leading_space {
        class_at(pos + 1)
    } else {
        Some(chars[pos].class)
    };
    if let Some(class @ (CharClass::Letter | CharClass::Number | CharClass::Other)) = class {
        let mut end = pos + usize::from(leading_space);
        while class_at(end) == Some(class) {
            end += 1;
        }
        return end;
    }
    let whitespace = (pos..chars.len())
        .take_while(|&p| chars[p].class == CharClass::Whitespace)
        .count();
    // `\s+(?!\S)`: a run followed by a non-space leaves its last character to the next word.
    if whitespace > 1 && pos + whitespace < chars.len() {
        return pos + whitespace - 1;
    }
    // `\s+`, or a lone character nothing matched.
    pos + whitespace.max(1)
}

/// `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive, as in GPT-2).
fn match_contraction(chars: &[Char], pos: usize) -> Option<usize> {
    if chars[pos].value != '\'' {
        return None;
    }
    let next = chars.get(pos + 1)?.value;
    if matches!(next, 's' | 't' | 'm' | 'd') {
        return Some(pos + 2);
    }
    let after = chars.get(pos + 2)?.value;
    match (next, after) {
        ('r', 'e') | ('v', 'e') | ('l', 'l') => Some(pos + 3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text)
            .into_iter()
            .map(|range| &text[range])
            .collect()
    }

    #[test]
    fn gpt2_attaches_one_space_to_the_following_word() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello world, it's 2024!"),
            ["Hello", " world", ",", " it", "'s", " 2024", "!"]
        );
    }

    #[test]
    fn whitespace_runs_leave_their_last_space_to_the_next_word() {
        assert_eq!(words(PreTokenizer::Gpt2, "a   b"), ["a", "  ", " b"]);
        assert_eq!(words(PreTokenizer::Gpt2, "a \tb"), ["a", " ", "\t", "b"]);
        assert_eq!(
            words(PreTokenizer::Gpt2, "x\n\n  y  "),
            ["x", "\n\n ", " y", "  "]
        );
        assert_eq!(words(PreTokenizer::Gpt2, "  "), ["  "]);
    }

    #[test]
    fn starcoder_splits_every_digit_and_keeps_the_space_before_it_apart() {
        assert_eq!(
            words(PreTokenizer::StarCoder, "Hello world! 123"),
            ["Hello", " world", "!", " ", "1", "2", "3"]
        );
        assert_eq!(
            words(PreTokenizer::StarCoder, "x=3.14e-10"),
            ["x", "=", "3", ".", "1", "4", "e", "-", "1", "0"]
        );
        // Non-ASCII numbers are `\p{N}` too: Arabic-Indic digits, superscripts, Roman numerals.
        assert_eq!(words(PreTokenizer::StarCoder, "٣٤²Ⅻ"), ["٣", "٤", "²", "Ⅻ"]);
    }

    #[test]
    fn contractions_are_case_sensitive_and_need_their_letters() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "we'll I'M '"),
            ["we", "'ll", " I", "'", "M", " '"]
        );
    }

    #[test]
    fn letters_are_general_category_letters_not_alphabetic() {
        // U+0301 (combining acute, Mn) is alphabetic-adjacent but not `\p{L}`.
        assert_eq!(
            words(PreTokenizer::Gpt2, "e\u{301}t"),
            ["e", "\u{301}", "t"]
        );
        assert_eq!(
            words(PreTokenizer::Gpt2, "日本語 テキスト"),
            ["日本語", " テキスト"]
        );
        assert_eq!(char_class('\u{3000}'), CharClass::Whitespace);
        assert_eq!(char_class('😀'), CharClass::Other);
    }

    #[test]
    fn words_cover_the_text_exactly() {
        let text = "fn main() {\n    println!(\"{}\", 42);\n}\t\u{a0}ü 😀😀 ''s";
        for pre in [PreTokenizer::Gpt2, PreTokenizer::StarCoder] {
            let joined: String = words(pre, text).concat();
            assert_eq!(joined, text);
            assert!(words(pre, text).iter().all(|w| !w.is_empty()));
        }
    }

    #[test]
    fn gguf_names_map_to_llama_cpp_families() {
        assert_eq!(
            PreTokenizer::from_gguf_name("smollm"),
            Some(PreTokenizer::StarCoder)
        );
        assert_eq!(
            PreTokenizer::from_gguf_name("gpt-2"),
            Some(PreTokenizer::Gpt2)
        );
        assert_eq!(PreTokenizer::from_gguf_name("llama-bpe"), None);
    }
}

//! The Porter stemmer as Lucene's `PorterStemFilter` applies it (Lucene's `PorterStemmer`, derived
//! from Martin Porter's Release 3 Java code): the 1980 algorithm with Porter's own later changes
//! (`-bli` → `-ble` instead of `-abli` → `-able`, and `-logi` → `-log`), words of at most two
//! characters left alone.
//!
//! Lucene stems Java `char`s (UTF-16 code units), so this does too: a word's length and letters
//! are counted the same way for every input, including characters outside the BMP.

/// The stem of `word` (expected lowercase, as the analyzer lowercases before stemming).
pub fn stem(word: &str) -> String {
    if word.is_ascii() && word.len() <= 2 {
        return word.to_string();
    }
    let mut stemmer = Stemmer {
        b: word.encode_utf16().collect(),
        j: 0,
        k: 0,
    };
    let end = stemmer.run();
    String::from_utf16_lossy(&stemmer.b[..end])
}

/// The working state: `b` holds the word, `k` the index of its last kept unit, `j` the end of the
/// stem before a matched suffix (Lucene's fields of the same names; `k0` is always 0 here).
struct Stemmer {
    b: Vec<u16>,
    j: isize,
    k: isize,
}

const fn unit(ch: char) -> u16 {
    ch as u16
}

impl Stemmer {
    /// Runs the six steps; returns the stem's length.
    fn run(&mut self) -> usize {
        self.k = self.b.len() as isize - 1;
        if self.k > 1 {
            self.step1();
            self.step2();
            self.step3();
            self.step4();
            self.step5();
            self.step6();
        }
        (self.k + 1) as usize
    }

    fn at(&self, index: isize) -> u16 {
        self.b[index as usize]
    }

    /// Whether the unit at `index` is a consonant (`y` is one at the start or after a vowel).
    fn cons(&self, index: isize) -> bool {
        match self.at(index) {
            c if c == unit('a') || c == unit('e') || c == unit('i') || c == unit('o') => false,
            c if c == unit('u') => false,
            c if c == unit('y') => index == 0 || !self.cons(index - 1),
            _ => true,
        }
    }

    /// The number of consonant sequences between 0 and `j` (`[C](VC){m}[V]`).
    fn m(&self) -> usize {
        let mut n = 0;
        let mut i = 0;
        loop {
            if i > self.j {
                return n;
            }
            if !self.cons(i) {
                break;
            }
            i += 1;
        }
        i += 1;
        loop {
            loop {
                if i > self.j {
                    return n;
                }
                if self.cons(i) {
                    break;
                }
                i += 1;
            }
            i += 1;
            n += 1;
            loop {
                if i > self.j {
                    return n;
                }
                if !self.cons(i) {
                    break;
                }
                i += 1;
            }
            i += 1;
        }
    }

    /// Whether 0..=j contains a vowel.
    fn vowel_in_stem(&self) -> bool {
        (0..=self.j).any(|i| !self.cons(i))
    }

    /// Whether `j` and `j - 1` hold the same consonant.
    fn double_consonant(&self, j: isize) -> bool {
        j >= 1 && self.at(j) == self.at(j - 1) && self.cons(j)
    }

    /// Whether `i - 2, i - 1, i` is consonant–vowel–consonant and the last is not w, x or y.
    fn cvc(&self, i: isize) -> bool {
        if i < 2 || !self.cons(i) || self.cons(i - 1) || !self.cons(i - 2) {
            return false;
        }
        let ch = self.at(i);
        ch != unit('w') && ch != unit('x') && ch != unit('y')
    }

    /// Whether 0..=k ends with `suffix`; if so, `j` is set to the unit before it.
    fn ends(&mut self, suffix: &str) -> bool {
        let length = suffix.len() as isize;
        let start = self.k - length + 1;
        if start < 0 {
            return false;
        }
        let matches = suffix
            .bytes()
            .enumerate()
            .all(|(offset, byte)| self.at(start + offset as isize) == u16::from(byte));
        if matches {
            self.j = self.k - length;
        }
        matches
    }

    /// Replaces j+1..=k with `replacement`.
    fn set_to(&mut self, replacement: &str) {
        let start = (self.j + 1) as usize;
        self.b.truncate(start);
        self.b.extend(replacement.bytes().map(u16::from));
        self.k = self.j + replacement.len() as isize;
    }

    /// [`Self::set_to`] when the stem has a positive measure.
    fn r(&mut self, replacement: &str) {
        if self.m() > 0 {
            self.set_to(replacement);
        }
    }

    /// Plurals and -ed or -ing.
    fn step1(&mut self) {
        if self.at(self.k) == unit('s') {
            if self.ends("sses") {
                self.k -= 2;
            } else if self.ends("ies") {
                self.set_to("i");
            } else if self.at(self.k - 1) != unit('s') {
                self.k -= 1;
            }
        }
        if self.ends("eed") {
            if self.m() > 0 {
                self.k -= 1;
            }
        } else if (self.ends("ed") || self.ends("ing")) && self.vowel_in_stem() {
            self.k = self.j;
            if self.ends("at") {
                self.set_to("ate");
            } else if self.ends("bl") {
                self.set_to("ble");
            } else if self.ends("iz") {
                self.set_to("ize");
            } else if self.double_consonant(self.k) {
                let ch = self.at(self.k);
                self.k -= 1;
                if ch == unit('l') || ch == unit('s') || ch == unit('z') {
                    self.k += 1;
                }
            } else if self.m() == 1 && self.cvc(self.k) {
                self.set_to("e");
            }
        }
    }

    /// Terminal y to i when the stem has another vowel.
    fn step2(&mut self) {
        if self.ends("y") && self.vowel_in_stem() {
            let k = self.k as usize;
            self.b[k] = unit('i');
        }
    }

    /// Double suffixes to single ones (-ization → -ize …).
    fn step3(&mut self) {
        if self.k == 0 {
            return;
        }
        let rules: &[(&str, &str)] = match char::from_u32(u32::from(self.at(self.k - 1))) {
            Some('a') => &[("ational", "ate"), ("tional", "tion")],
            Some('c') => &[("enci", "ence"), ("anci", "ance")],
            Some('e') => &[("izer", "ize")],
            Some('l') => &[
                ("bli", "ble"),
                ("alli", "al"),
                ("entli", "ent"),
                ("eli", "e"),
                ("ousli", "ous"),
            ],
            Some('o') => &[("ization", "ize"), ("ation", "ate"), ("ator", "ate")],
            Some('s') => &[
                ("alism", "al"),
                ("iveness", "ive"),
                ("fulness", "ful"),
                ("ousness", "ous"),
            ],
            Some('t') => &[("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")],
            Some('g') => &[("logi", "log")],
            _ => &[],
        };
        self.first_rule(rules);
    }

    /// -ic-, -full, -ness …
    fn step4(&mut self) {
        let rules: &[(&str, &str)] = match char::from_u32(u32::from(self.at(self.k))) {
            Some('e') => &[("icate", "ic"), ("ative", ""), ("alize", "al")],
            Some('i') => &[("iciti", "ic")],
            Some('l') => &[("ical", "ic"), ("ful", "")],
            Some('s') => &[("ness", "")],
            _ => &[],
        };
        self.first_rule(rules);
    }

    /// Applies the first rule whose suffix matches (and only that one, as Lucene's `break`s do).
    fn first_rule(&mut self, rules: &[(&str, &str)]) {
        for (suffix, replacement) in rules {
            if self.ends(suffix) {
                self.r(replacement);
                return;
            }
        }
    }

    /// -ant, -ence … in context `<c>vcvc<v>`.
    fn step5(&mut self) {
        if self.k == 0 {
            return;
        }
        let matched = match char::from_u32(u32::from(self.at(self.k - 1))) {
            Some('a') => self.ends("al"),
            Some('c') => self.ends("ance") || self.ends("ence"),
            Some('e') => self.ends("er"),
            Some('i') => self.ends("ic"),
            Some('l') => self.ends("able") || self.ends("ible"),
            Some('n') => {
                self.ends("ant") || self.ends("ement") || self.ends("ment") || self.ends("ent")
            }
            Some('o') => {
                (self.ends("ion")
                    && self.j >= 0
                    && (self.at(self.j) == unit('s') || self.at(self.j) == unit('t')))
                    || self.ends("ou")
            }
            Some('s') => self.ends("ism"),
            Some('t') => self.ends("ate") || self.ends("iti"),
            Some('u') => self.ends("ous"),
            Some('v') => self.ends("ive"),
            Some('z') => self.ends("ize"),
            _ => false,
        };
        if matched && self.m() > 1 {
            self.k = self.j;
        }
    }

    /// A final -e when m > 1 (or m = 1 and not cvc), and -ll → -l when m > 1.
    fn step6(&mut self) {
        self.j = self.k;
        if self.at(self.k) == unit('e') {
            let measure = self.m();
            if measure > 1 || (measure == 1 && !self.cvc(self.k - 1)) {
                self.k -= 1;
            }
        }
        if self.at(self.k) == unit('l') && self.double_consonant(self.k) && self.m() > 1 {
            self.k -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn stems_the_examples_in_porters_paper_and_lucenes_comments() {
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "ti"),
            ("caress", "caress"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("disabled", "disabl"),
            ("matting", "mat"),
            ("mating", "mate"),
            ("meeting", "meet"),
            ("milling", "mill"),
            ("messing", "mess"),
            ("meetings", "meet"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("conditional", "condit"),
            ("rational", "ration"),
            ("generalization", "gener"),
            ("oscillators", "oscil"),
            ("sensibility", "sensibl"),
            ("hopefulness", "hope"),
            ("triplicate", "triplic"),
            ("electrical", "electr"),
            ("adjustable", "adjust"),
            ("controlling", "control"),
            ("rolling", "roll"),
            ("probate", "probat"),
            ("rate", "rate"),
            ("cease", "ceas"),
            // Porter's changes after the paper, which Lucene keeps.
            ("archaeology", "archaeolog"),
            ("possibly", "possibl"),
            // Short words and non-letters are left alone or only lose suffixes.
            ("is", "is"),
            ("as", "as"),
            ("8.5", "8.5"),
            ("x-large", "x-larg"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}

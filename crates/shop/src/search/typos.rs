//! Typo tolerance with Meilisearch's published rules, over an `fst` of the index vocabulary:
//! words of 1–4 letters match exactly, 5–8 letters allow one typo, 9 and more two; a swap of
//! adjacent letters is one typo; a typo on the first letter counts as two.

use std::sync::OnceLock;

use fst::{Automaton, IntoStreamer as _, Streamer as _};
use levenshtein_automata::{DFA, Distance, LevenshteinAutomatonBuilder, SINK_STATE};

/// How many typos a word of a given length may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypoRules {
    /// Words of at least this many letters may have one typo (Meilisearch: 5).
    pub one_typo_min_len: usize,
    /// Words of at least this many letters may have two (Meilisearch: 9).
    pub two_typos_min_len: usize,
}

impl Default for TypoRules {
    fn default() -> Self {
        Self { one_typo_min_len: 5, two_typos_min_len: 9 }
    }
}

impl TypoRules {
    /// The typos allowed in a (folded) word.
    pub fn allowed(&self, word: &str) -> u8 {
        let letters = word.chars().count();
        if letters >= self.two_typos_min_len {
            2
        } else if letters >= self.one_typo_min_len {
            1
        } else {
            0
        }
    }
}

/// A word of the vocabulary close to a query word, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub word: String,
    pub typos: u8,
    /// How many documents hold the word: the more, the likelier the correction.
    pub documents: u64,
}

/// The distinct folded words of the catalog with the number of documents holding each.
#[derive(Clone)]
pub struct Vocabulary {
    words: fst::Map<Vec<u8>>,
}

impl Vocabulary {
    /// From `(word, documents)` pairs in any order; repeated words keep their largest count.
    pub fn new(mut entries: Vec<(String, u64)>) -> Self {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        // Sorted, deduplicated keys are all a builder needs: it cannot fail on them.
        let words = fst::Map::from_iter(entries).unwrap_or_default();
        Self { words }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Documents holding exactly `word`.
    pub fn documents(&self, word: &str) -> Option<u64> {
        self.words.get(word)
    }

    /// The words within the allowed typos of `word` (not `word` itself), fewest typos first,
    /// then the most common; at most `limit`.
    pub fn corrections(&self, word: &str, rules: &TypoRules, limit: usize) -> Vec<Correction> {
        let allowed = rules.allowed(word);
        if allowed == 0 || limit == 0 {
            return Vec::new();
        }
        let dfa = automaton_builder(allowed).build_dfa(word);
        let first = word.chars().next();
        let mut stream = self.words.search(ByteDfa(&dfa)).into_stream();
        let mut found = Vec::new();
        while let Some((candidate, documents)) = stream.next() {
            let Ok(candidate) = std::str::from_utf8(candidate) else { continue };
            if candidate == word {
                continue;
            }
            let Distance::Exact(distance) = dfa.eval(candidate) else { continue };
            let typos = distance + u8::from(candidate.chars().next() != first);
            if typos <= allowed {
                found.push(Correction { word: candidate.to_owned(), typos, documents });
            }
        }
        found.sort_by(|a, b| a.typos.cmp(&b.typos).then(b.documents.cmp(&a.documents)).then(a.word.cmp(&b.word)));
        found.truncate(limit);
        found
    }

    /// The words starting with `prefix` (itself included), most common first; at most `limit`.
    pub fn completions(&self, prefix: &str, limit: usize) -> Vec<(String, u64)> {
        let mut stream = self.words.search(fst::automaton::Str::new(prefix).starts_with()).into_stream();
        let mut found = Vec::new();
        while let Some((word, documents)) = stream.next() {
            if let Ok(word) = std::str::from_utf8(word) {
                found.push((word.to_owned(), documents));
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.len().cmp(&b.0.len())).then(a.0.cmp(&b.0)));
        found.truncate(limit);
        found
    }
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary").field("words", &self.words.len()).finish()
    }
}

/// Damerau–Levenshtein automaton builders (transposition costs one), built once: building one
/// takes milliseconds, a DFA from it microseconds.
fn automaton_builder(distance: u8) -> &'static LevenshteinAutomatonBuilder {
    static ONE: OnceLock<LevenshteinAutomatonBuilder> = OnceLock::new();
    static TWO: OnceLock<LevenshteinAutomatonBuilder> = OnceLock::new();
    match distance {
        1 => ONE.get_or_init(|| LevenshteinAutomatonBuilder::new(1, true)),
        _ => TWO.get_or_init(|| LevenshteinAutomatonBuilder::new(2, true)),
    }
}

/// A Levenshtein DFA walked over the fst's bytes.
struct ByteDfa<'a>(&'a DFA);

impl Automaton for ByteDfa<'_> {
    type State = u32;

    fn start(&self) -> u32 {
        self.0.initial_state()
    }

    fn is_match(&self, state: &u32) -> bool {
        matches!(self.0.distance(*state), Distance::Exact(_))
    }

    fn can_match(&self, state: &u32) -> bool {
        *state != SINK_STATE
    }

    fn accept(&self, state: &u32, byte: u8) -> u32 {
        self.0.transition(*state, byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary(words: &[(&str, u64)]) -> Vocabulary {
        Vocabulary::new(words.iter().map(|(word, count)| ((*word).to_owned(), *count)).collect())
    }

    fn corrected(vocabulary: &Vocabulary, word: &str) -> Vec<(String, u8)> {
        vocabulary
            .corrections(word, &TypoRules::default(), 10)
            .into_iter()
            .map(|correction| (correction.word, correction.typos))
            .collect()
    }

    #[test]
    fn typo_allowance_follows_word_length() {
        let rules = TypoRules::default();
        assert_eq!([rules.allowed("lapt"), rules.allowed("lapto"), rules.allowed("notebook")], [0, 1, 1]);
        assert_eq!([rules.allowed("notebooks"), rules.allowed("café")], [2, 0]);
    }

    #[test]
    fn words_of_four_letters_must_match_exactly() {
        let words = vocabulary(&[("desk", 3), ("disk", 1)]);
        assert!(corrected(&words, "dusk").is_empty());
    }

    #[test]
    fn five_to_eight_letters_allow_one_typo_not_two() {
        let words = vocabulary(&[("laptop", 5), ("mouse", 2), ("keyboard", 1)]);
        assert_eq!(corrected(&words, "labtop"), [("laptop".to_owned(), 1)]);
        assert_eq!(corrected(&words, "mousr"), [("mouse".to_owned(), 1)]);
        assert_eq!(corrected(&words, "keybored"), Vec::<(String, u8)>::new(), "two typos in eight letters");
        assert_eq!(corrected(&words, "keybard"), [("keyboard".to_owned(), 1)]);
    }

    #[test]
    fn nine_letters_and_more_allow_two_typos() {
        let words = vocabulary(&[("headphones", 4)]);
        assert_eq!(corrected(&words, "headphnez"), [("headphones".to_owned(), 2)]);
        assert!(corrected(&words, "hedphnes").is_empty(), "eight letters allow one typo");
    }

    #[test]
    fn a_swap_of_adjacent_letters_is_one_typo() {
        let words = vocabulary(&[("laptop", 5)]);
        assert_eq!(corrected(&words, "lpatop"), [("laptop".to_owned(), 1)]);
    }

    #[test]
    fn a_typo_on_the_first_letter_counts_as_two() {
        let words = vocabulary(&[("laptop", 5), ("headphones", 1)]);
        assert!(corrected(&words, "kaptop").is_empty());
        assert_eq!(corrected(&words, "beadphones"), [("headphones".to_owned(), 2)]);
    }

    #[test]
    fn corrections_prefer_fewer_typos_then_more_documents() {
        let words = vocabulary(&[("cables", 1), ("tables", 9), ("cable", 4)]);
        let found = corrected(&words, "cabled");
        assert_eq!(found[0], ("cable".to_owned(), 1));
        assert_eq!(found[1], ("cables".to_owned(), 1));
    }

    #[test]
    fn completions_are_most_common_first() {
        let words = vocabulary(&[("lamp", 2), ("laptop", 9), ("lapel", 1), ("mouse", 5)]);
        let found: Vec<String> = words.completions("la", 2).into_iter().map(|(word, _)| word).collect();
        assert_eq!(found, ["laptop", "lamp"]);
        assert!(words.completions("zz", 5).is_empty());
        assert_eq!(words.documents("mouse"), Some(5));
    }
}

//! Text analysis shared by the index and the queries: case and diacritics folding, word
//! splitting and stemming, so that what is indexed and what is asked for agree on both backends.

use std::fmt;
use std::sync::Arc;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization as _;
use unicode_normalization::char::is_combining_mark;

/// Bumped when the analysis below changes in a way that needs every document analysed again.
const ANALYSIS_VERSION: u32 = 1;

/// The language whose stemming rules the index uses (`none`: no stemming).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    None,
    Danish,
    Dutch,
    #[default]
    English,
    Finnish,
    French,
    German,
    Hungarian,
    Italian,
    Norwegian,
    Portuguese,
    Romanian,
    Russian,
    Spanish,
    Swedish,
    Turkish,
}

const LANGUAGES: [(Language, &str); 16] = [
    (Language::None, "none"),
    (Language::Danish, "danish"),
    (Language::Dutch, "dutch"),
    (Language::English, "english"),
    (Language::Finnish, "finnish"),
    (Language::French, "french"),
    (Language::German, "german"),
    (Language::Hungarian, "hungarian"),
    (Language::Italian, "italian"),
    (Language::Norwegian, "norwegian"),
    (Language::Portuguese, "portuguese"),
    (Language::Romanian, "romanian"),
    (Language::Russian, "russian"),
    (Language::Spanish, "spanish"),
    (Language::Swedish, "swedish"),
    (Language::Turkish, "turkish"),
];

impl Language {
    pub fn parse(raw: &str) -> Result<Self, String> {
        LANGUAGES.iter().find(|(_, name)| *name == raw).map(|(language, _)| *language).ok_or_else(|| {
            let names: Vec<&str> = LANGUAGES.iter().map(|(_, name)| *name).collect();
            format!("must be one of {}", names.join(", "))
        })
    }

    pub fn as_str(self) -> &'static str {
        LANGUAGES.iter().find(|(language, _)| *language == self).map_or("none", |(_, name)| name)
    }

    fn algorithm(self) -> Option<Algorithm> {
        Some(match self {
            Self::None => return None,
            Self::Danish => Algorithm::Danish,
            Self::Dutch => Algorithm::Dutch,
            Self::English => Algorithm::English,
            Self::Finnish => Algorithm::Finnish,
            Self::French => Algorithm::French,
            Self::German => Algorithm::German,
            Self::Hungarian => Algorithm::Hungarian,
            Self::Italian => Algorithm::Italian,
            Self::Norwegian => Algorithm::Norwegian,
            Self::Portuguese => Algorithm::Portuguese,
            Self::Romanian => Algorithm::Romanian,
            Self::Russian => Algorithm::Russian,
            Self::Spanish => Algorithm::Spanish,
            Self::Swedish => Algorithm::Swedish,
            Self::Turkish => Algorithm::Turkish,
        })
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One word of a text: where it is (byte offsets into the text) and its folded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub start: usize,
    pub end: usize,
    /// Lowercase, without diacritics (`Café` → `cafe`).
    pub folded: String,
}

/// Splits text into words, folds and stems them. Cheap to clone.
#[derive(Clone)]
pub struct Analyzer {
    language: Language,
    stemmer: Option<Arc<Stemmer>>,
}

impl Analyzer {
    pub fn new(language: Language) -> Self {
        Self { language, stemmer: language.algorithm().map(|algorithm| Arc::new(Stemmer::create(algorithm))) }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// Names the analysis: an index built with another signature must be rebuilt.
    pub fn signature(&self) -> String {
        format!("v{ANALYSIS_VERSION}:{}", self.language)
    }

    /// The stem of a folded word, as the index holds it.
    pub fn stem(&self, folded: &str) -> String {
        match &self.stemmer {
            Some(stemmer) => stemmer.stem(folded).into_owned(),
            None => folded.to_owned(),
        }
    }

    /// The indexed form of a text: its stems, each with a space on either side, so that
    /// `" laptop "` is found in it by plain substring search as well as by the full-text index.
    pub fn document(&self, text: &str) -> String {
        let mut document = String::from(" ");
        for word in words(text) {
            document.push_str(&self.stem(&word.folded));
            document.push(' ');
        }
        document
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new(Language::default())
    }
}

impl fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analyzer").field("language", &self.language).finish()
    }
}

/// The words of `text`: runs of letters and digits; everything else separates them (which is
/// why no character of a query can ever act as search syntax).
pub fn words(text: &str) -> impl Iterator<Item = Word> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while chars.peek().is_some_and(|(_, c)| !c.is_alphanumeric()) {
            chars.next();
        }
        let (start, _) = *chars.peek()?;
        let mut end = start;
        while let Some(&(index, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = index + c.len_utf8();
            chars.next();
        }
        let folded = fold(&text[start..end]);
        Some(Word { start, end, folded })
    })
    .filter(|word| !word.folded.is_empty())
}

/// Lowercase without diacritics: compatibility decomposition, combining marks dropped.
pub fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The folded words of `text` without repeats, in first-seen order.
pub fn distinct_words(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    words(text).map(|word| word.folded).filter(|word| seen.insert(word.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_diacritics_and_splits_on_everything_else() {
        let found: Vec<String> = words("Café-Crème au LAIT, 2×\"NEAR\" (x:y)*").map(|word| word.folded).collect();
        assert_eq!(found, ["cafe", "creme", "au", "lait", "2", "near", "x", "y"]);
    }

    #[test]
    fn word_offsets_point_into_the_original_text() {
        let text = "Ünïcode laptops";
        let found: Vec<Word> = words(text).collect();
        assert_eq!(&text[found[0].start..found[0].end], "Ünïcode");
        assert_eq!(&text[found[1].start..found[1].end], "laptops");
    }

    #[test]
    fn documents_hold_stems_between_spaces() {
        let analyzer = Analyzer::new(Language::English);
        assert_eq!(analyzer.document("Gaming Laptops & batteries"), " game laptop batteri ");
        assert_eq!(Analyzer::new(Language::None).document("Laptops"), " laptops ");
        assert_eq!(analyzer.document("  ***  "), " ");
    }

    #[test]
    fn languages_parse_by_name() {
        assert_eq!(Language::parse("french"), Ok(Language::French));
        assert!(Language::parse("klingon").unwrap_err().contains("english"));
        assert_eq!(Analyzer::new(Language::German).signature(), "v1:german");
    }

    proptest::proptest! {
        /// Whatever a shopper types (FTS operators, quotes, NUL, emoji), what reaches the
        /// index is words of letters and digits only: nothing can act as query syntax.
        #[test]
        fn any_text_yields_only_letters_and_digits(text in "\\PC*") {
            let analyzer = Analyzer::new(Language::English);
            for word in words(&text) {
                proptest::prop_assert!(word.folded.chars().all(char::is_alphanumeric));
                proptest::prop_assert!(text.is_char_boundary(word.start) && text.is_char_boundary(word.end));
            }
            let document = analyzer.document(&text);
            proptest::prop_assert!(document.chars().all(|c| c == ' ' || c.is_alphanumeric()));
        }
    }
}

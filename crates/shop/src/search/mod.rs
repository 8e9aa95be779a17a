//! Product search's domain half: the text analysis both the index and the queries use, and
//! the typo tolerance that corrects query words against the index vocabulary before the
//! database's full-text index is asked.

mod analyzer;
mod typos;

pub use analyzer::{Analyzer, Language, Word, distinct_words, fold, words};
pub use typos::{Correction, TypoRules, Vocabulary};

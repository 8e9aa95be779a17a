//! Highlighted snippets of search hits: the text HTML-escaped, the words that matched the query
//! wrapped in `<mark>`, long descriptions cut to a window around the first match.

use std::collections::HashSet;

use super::{Analyzer, words};

/// Characters of description a snippet shows, about.
const SNIPPET_CHARS: usize = 160;

/// `text` escaped for HTML, every word whose stem is in `stems` marked.
pub fn highlight(analyzer: &Analyzer, text: &str, stems: &HashSet<String>) -> String {
    marked(analyzer, text, 0, text.len(), stems)
}

/// About [`SNIPPET_CHARS`] characters of `text` around its first matched word (from the
/// start when none matched), escaped and marked, with `…` where it was cut.
pub fn snippet(analyzer: &Analyzer, text: &str, stems: &HashSet<String>) -> String {
    if text.chars().count() <= SNIPPET_CHARS {
        return highlight(analyzer, text, stems);
    }
    let all: Vec<_> = words(text).collect();
    let first_match = all.iter().position(|word| stems.contains(&analyzer.stem(&word.folded))).unwrap_or(0);
    // Start a few words before the match, on a word boundary.
    let start_word = first_match.saturating_sub(4);
    let start = if start_word == 0 { 0 } else { all.get(start_word).map_or(0, |word| word.start) };
    let mut end = text.len();
    let mut chars = 0;
    for (offset, c) in text[start..].char_indices() {
        chars += 1;
        if chars > SNIPPET_CHARS && !c.is_alphanumeric() {
            end = start + offset;
            break;
        }
    }
    let mut snippet = String::new();
    if start > 0 {
        snippet.push('…');
    }
    snippet.push_str(&marked(analyzer, text, start, end, stems));
    if end < text.len() {
        snippet.push('…');
    }
    snippet
}

fn marked(analyzer: &Analyzer, text: &str, start: usize, end: usize, stems: &HashSet<String>) -> String {
    let mut out = String::with_capacity(end - start + 16);
    let mut at = start;
    for word in words(&text[start..end]) {
        let (word_start, word_end) = (start + word.start, start + word.end);
        if stems.contains(&analyzer.stem(&word.folded)) {
            escape_into(&mut out, &text[at..word_start]);
            out.push_str("<mark>");
            escape_into(&mut out, &text[word_start..word_end]);
            out.push_str("</mark>");
            at = word_end;
        }
    }
    escape_into(&mut out, &text[at..end]);
    out
}

/// Escapes the five characters HTML gives meaning to.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems(list: &[&str]) -> HashSet<String> {
        list.iter().map(|stem| (*stem).to_owned()).collect()
    }

    #[test]
    fn marks_matched_words_and_escapes_the_rest() {
        let analyzer = Analyzer::default();
        let marked = highlight(&analyzer, "<b>Gaming</b> Laptops & \"bags\"", &stems(&["laptop", "bag"]));
        assert_eq!(marked, "&lt;b&gt;Gaming&lt;/b&gt; <mark>Laptops</mark> &amp; &quot;<mark>bags</mark>&quot;");
    }

    #[test]
    fn long_text_is_cut_around_the_first_match() {
        let analyzer = Analyzer::default();
        let text = format!("{} the laptop {}", "filler words ".repeat(40), "more text ".repeat(40));
        let snippet = snippet(&analyzer, &text, &stems(&["laptop"]));
        assert!(snippet.starts_with('…') && snippet.ends_with('…'), "{snippet}");
        assert!(snippet.contains("<mark>laptop</mark>"), "{snippet}");
        assert!(snippet.chars().count() < 200, "{snippet}");
        let unmatched = super::snippet(&analyzer, &text, &stems(&["nothing"]));
        assert!(unmatched.starts_with("filler") && unmatched.ends_with('…'), "{unmatched}");
    }

    proptest::proptest! {
        /// No text, however hostile, comes out with markup other than ours.
        #[test]
        fn output_has_no_markup_but_marks(text in "\\PC*") {
            let analyzer = Analyzer::default();
            let words: Vec<String> = words(&text).map(|word| analyzer.stem(&word.folded)).collect();
            let out = snippet(&analyzer, &text, &words.into_iter().collect());
            let stripped = out.replace("<mark>", "").replace("</mark>", "");
            proptest::prop_assert!(!stripped.contains('<') && !stripped.contains('>') && !stripped.contains('"'));
        }
    }
}

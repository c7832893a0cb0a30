//! Citations in model output become links, as the reference's `normalize_citations` makes
//! them, including when the text arrives in deltas that cut a citation.

mod support;

use ossa_tools::citations::{Annotation, CitationStream, normalize_citations};
use serde_json::Value;

fn stack_of(case: &Value) -> Vec<String> {
    let steps = case["steps"].as_array().cloned().unwrap_or_default();
    steps
        .last()
        .and_then(|s| s["page_stack"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|u| u.as_str().unwrap_or_default().to_string())
        .collect()
}

fn annotations_of(value: &Value) -> Vec<Annotation> {
    value
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            assert_eq!(a["type"], "url_citation");
            Annotation {
                start_index: a["start_index"].as_u64().unwrap_or_default() as usize,
                end_index: a["end_index"].as_u64().unwrap_or_default() as usize,
                title: a["title"].as_str().unwrap_or_default().into(),
                url: a["url"].as_str().unwrap_or_default().into(),
            }
        })
        .collect()
}

/// Every recorded `normalize_citations` call (repository cases and `OSSA_BROWSER_CASES`).
#[test]
fn recorded_citations_match_the_reference() {
    let (mut passed, mut failed) = (0, 0);
    for path in support::all_case_files() {
        let case = support::load_json(&path);
        let stack = stack_of(&case);
        for c in case["citations"].as_array().cloned().unwrap_or_default() {
            let input = c["input"].as_str().unwrap_or_default();
            let shown = normalize_citations(input, &stack, false);
            let hidden = normalize_citations(input, &stack, true);
            let ok = shown.text == c["output"].as_str().unwrap_or_default()
                && shown.annotations == annotations_of(&c["annotations"])
                && Some(shown.has_partial_citations) == c["has_partial_citations"].as_bool()
                && hidden.text == c["output_hide_partial"].as_str().unwrap_or_default()
                && hidden.annotations == annotations_of(&c["annotations_hide_partial"]);
            if ok {
                passed += 1;
            } else {
                failed += 1;
                eprintln!(
                    "FAILED {} {input:?}: got {shown:?} / {hidden:?}",
                    path.display()
                );
            }
        }
    }
    eprintln!("{passed} passed, {failed} failed");
    assert!(passed > 0);
    assert_eq!(failed, 0);
}

fn pages() -> Vec<String> {
    vec![
        String::new(),
        "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html".into(),
        "https://docs.python.org/3/glossary.html#term-iterator".into(),
    ]
}

#[test]
fn citations_become_links_with_code_point_offsets() {
    let text = "Owner rules 【1†L12-L15】, iterators 【2†L3】, search 【0†L4】, unknown 【9†L1】 and 【01†L1】.";
    let n = normalize_citations(text, &pages(), false);
    assert_eq!(
        n.text,
        "Owner rules  ([doc.rust-lang.org](https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html)) , iterators  \
         ([docs.python.org](https://docs.python.org/3/glossary.html#term-iterator)) , search 【0†L4】, unknown 【9†L1】 and 【01†L1】."
    );
    let chars: Vec<char> = n.text.chars().collect();
    for a in &n.annotations {
        let span: String = chars[a.start_index..a.end_index].iter().collect();
        assert_eq!(span, format!(" ([{}]({})) ", a.title, a.url));
    }
    assert_eq!(n.annotations.len(), 2);
    assert!(!n.has_partial_citations);
}

/// Any split of the text into deltas gives the same text and annotations as one call.
#[test]
fn streaming_holds_back_citations_cut_across_deltas() {
    let text = "Ownership 【1†L12-L15】 is strict; see 【2†What is an iterator?†docs.python.org】 and 【0†L2】. 【x】 stays.";
    let whole = normalize_citations(text, &pages(), false);
    let chars: Vec<char> = text.chars().collect();
    for step in 1..=7 {
        let mut stream = CitationStream::new(pages());
        let mut out = String::new();
        let mut annotations = Vec::new();
        for piece in chars.chunks(step) {
            let chunk = stream.push(&piece.iter().collect::<String>());
            out.push_str(&chunk.text);
            annotations.extend(chunk.annotations);
        }
        let last = stream.finish();
        out.push_str(&last.text);
        annotations.extend(last.annotations);
        assert_eq!(out, whole.text, "delta size {step}");
        assert_eq!(annotations, whole.annotations, "delta size {step}");
    }
}

#[test]
fn streaming_releases_text_that_is_not_a_citation() {
    let mut stream = CitationStream::new(pages());
    assert_eq!(stream.push("a 【1†L").text, "a ");
    assert_eq!(
        stream.push("2】 b").text,
        " ([doc.rust-lang.org](https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html))  b"
    );
    // A lone bracket followed by text that cannot continue a citation is shown at once.
    assert_eq!(stream.push(" 【note】 c").text, " 【note】 c");
    assert_eq!(stream.push(" end 【2").text, " end ");
    assert_eq!(stream.finish().text, "【2");
}

#[test]
fn partial_citation_at_the_end_can_be_hidden() {
    let n = normalize_citations("Done 【1†L2", &pages(), true);
    assert_eq!(n.text, "Done ");
    assert!(n.has_partial_citations);
    let n = normalize_citations("Done 【1\n", &pages(), false);
    assert!(n.has_partial_citations);
    assert_eq!(
        normalize_citations("Done 【1\n", &pages(), true).text,
        "Done \n"
    );
}

//! Property tests: ossa's encoders against tiktoken-rs 0.12.1's `o200k_harmony` on generated
//! text (many scripts, code, whitespace runs, numbers, emoji, special-token text, long pieces),
//! and decoding of arbitrary ids.
//!
//! The one documented difference: openai-harmony (the truth for gpt-oss) defines
//! `<|reserved_201088|>` as id 201088, tiktoken-rs does not define it. Where that text appears,
//! the expectation is tiktoken-rs's encoding of the text around it with 201088 in between.

mod tokenizer_support;

use std::collections::HashSet;

use ossa_engine::tokenizer::AllowedSpecial;
use proptest::prelude::*;
use tokenizer_support::*;

const WORDS: &[&str] = &[
    "hello",
    "World",
    "don't",
    "it's",
    "THEY'LL",
    "we've",
    "I'm",
    "you'd",
    "snake_case",
    "CamelCase",
    "HTTPServer",
    "naïve",
    "Straße",
    "ĞÜŞÇÖ",
    "ışık",
    "Москва",
    "ПРИВЕТ",
    "ελληνικά",
    "ΑΘΗΝΑ",
    "日本語",
    "カタカナ",
    "ひらがな",
    "中文",
    "机器学习",
    "한국어",
    "안녕하세요",
    "مرحبا",
    "العربية",
    "שלום",
    "עברית",
    "हिंदी",
    "प्रधानमंत्री",
    "ज़रूरी",
    "বাংলায়",
    "தமிழ்",
    "สวัสดีชาวโลก",
    "Việt",
    "Nguyễn",
    "ñandú",
    "e\u{301}",
    "a\u{308}\u{304}",
    "🎉",
    "👍🏽",
    "👨\u{200d}👩\u{200d}👧",
    "🇮🇳",
    "1️⃣",
    "❤️\u{200d}🔥",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Ⅻ",
    "½",
    "²",
];

const CODE: &[&str] = &[
    "fn main() {\n    println!(\"{}\", x);\n}\n",
    "def f(a, b=None):\n\treturn a // 2\n",
    "if (x <= 10 && y != 0) { return x->y; }",
    "<div class=\"x\"><span id='a'>b</span></div>",
    "SELECT * FROM t WHERE id = 42;",
    "const HTTPServer = (parse_json) => parse_json.map(x => x * 2);",
    "https://example.com/path?q=1&x=2#frag",
    "    // comment with trailing spaces   \n",
    "{\"location\":\"San Francisco, CA\",\"format\":\"celsius\"}",
    "/usr/local/bin/",
    "a/b//c///\n",
];

const SPECIALS: &[&str] = &[
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|endofprompt|>",
    "<|reserved_200000|>",
    "<|reserved_200013|>",
    "<|reserved_200500|>",
    "<|reserved_201087|>",
    "<|reserved_201088|>",
    "<|reserved_201089|>",
    "<|refusal|>",
    "<|untrusted|>",
    "<|sta",
    "rt|>",
    "<|",
    "|>",
    "<||>",
];

const SPACES: &[char] = &[
    ' ', ' ', ' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{a0}', '\u{1680}',
    '\u{2000}', '\u{2009}', '\u{200a}', '\u{200b}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}',
    '\u{3000}', '\u{feff}',
];

fn whitespace_run() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SPACES), 1..12).prop_map(|v| v.into_iter().collect())
}

fn number() -> impl Strategy<Value = String> {
    let digit_sets: &[&[char]] = &[
        &['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
        &['٠', '١', '٢', '٣', '٤', '٥', '٦', '٧', '٨', '٩'],
        &['०', '१', '२', '३', '४', '५', '६', '७', '८', '९'],
        &['０', '１', '２', '３', '９'],
        &['¹', '²', '³', '¼', 'Ⅻ'],
    ];
    (
        prop::sample::select(digit_sets.to_vec()),
        1..14usize,
        prop::option::of(prop::sample::select(vec![".", ",", "e-", "%", "px"])),
    )
        .prop_flat_map(|(set, len, suffix)| {
            prop::collection::vec(prop::sample::select(set.to_vec()), len)
                .prop_map(move |d| d.into_iter().collect::<String>() + suffix.unwrap_or(""))
        })
}

/// One fragment of generated text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(WORDS).prop_map(str::to_string),
        2 => prop::sample::select(CODE).prop_map(str::to_string),
        3 => whitespace_run(),
        2 => number(),
        2 => prop::sample::select(SPECIALS).prop_map(str::to_string),
        2 => "[!-/:-@\\[-`{-~]{1,6}",
        2 => "\\PC{1,8}",
        1 => any::<String>().prop_map(|s| s.chars().take(10).collect()),
        1 => "'(s|t|re|ve|m|ll|d|S|T|RE|VE|M|LL|D)",
        // Long single pieces: exercise the heap merge (> 128 bytes).
        1 => ("[a-zA-Z=\\-ß日]{1,3}", 40..200usize).prop_map(|(unit, n)| unit.repeat(n)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|parts| parts.concat())
}

/// tiktoken-rs's encoding with every special token allowed, with openai-harmony's 201088.
fn tiktoken_with_harmony_specials(text: &str) -> Vec<u32> {
    let reserved = "<|reserved_201088|>";
    let mut out = Vec::new();
    for (i, part) in text.split(reserved).enumerate() {
        if i > 0 {
            out.push(201_088);
        }
        out.extend(tiktoken().encode_with_special_tokens(part));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn builtin_matches_tiktoken(text in text()) {
        let ours = builtin();
        let ordinary = ours.encode_ordinary(&text).unwrap();
        prop_assert_eq!(&ordinary, &tiktoken().encode_ordinary(&text));
        prop_assert_eq!(ours.encode(&text, AllowedSpecial::All).unwrap(), tiktoken_with_harmony_specials(&text));
        prop_assert_eq!(ours.decode(&ordinary).unwrap(), text.clone());
        let some = ["<|end|>", "<|reserved_200500|>"];
        let allowed: HashSet<&str> = some.into_iter().collect();
        prop_assert_eq!(ours.encode(&text, AllowedSpecial::Only(&some)).unwrap(), tiktoken().encode(&text, &allowed).unwrap().0);
    }

    #[test]
    fn huggingface_backend_matches_tiktoken(text in text()) {
        let ours = from_file_huggingface();
        prop_assert_eq!(ours.encode_ordinary(&text).unwrap(), tiktoken().encode_ordinary(&text));
        prop_assert_eq!(ours.encode(&text, AllowedSpecial::All).unwrap(), tiktoken_with_harmony_specials(&text));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_matches_tiktoken(ids in prop::collection::vec(prop_oneof![
        8 => 0u32..199_998,
        2 => 199_998u32..201_088,
        1 => prop::sample::select(vec![200_006u32, 200_007, 200_008, 200_005, 200_012, 200_002]),
    ], 0..64)) {
        let ours = builtin().decode_bytes(&ids).unwrap();
        prop_assert_eq!(&ours, &tiktoken().decode_bytes(&ids).unwrap());
        prop_assert_eq!(from_file_auto().decode_bytes(&ids).unwrap(), ours);
    }
}

#[test]
fn reserved_201088_is_openai_harmonys() {
    // tiktoken-rs cannot decode it; openai-harmony (and ossa) can.
    assert!(tiktoken().decode_bytes(&[201_088]).is_err());
    assert_eq!(builtin().decode(&[201_088]).unwrap(), "<|reserved_201088|>");
    assert_eq!(
        builtin().encode("<|reserved_201088|>", true).unwrap(),
        vec![201_088]
    );
}

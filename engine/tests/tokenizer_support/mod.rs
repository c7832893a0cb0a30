//! Shared by the tokenizer tests: fixture paths, case files, the three tokenizers under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ossa_engine::tokenizer::{EncoderPreference, Tokenizer};
use serde::Deserialize;

pub use ossa_test_support::fixtures;

pub fn tokenizer_json() -> PathBuf {
    fixtures().join("tokenizer/tokenizer.json")
}

#[derive(Debug, Deserialize)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub text: String,
    pub ids: Vec<u32>,
    pub ordinary_ids: Vec<u32>,
}

pub fn read_cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file: CaseFile = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not a case file: {e}", path.display()));
    file.cases
}

/// The repository's cases, then those of `OSSA_TOKENIZER_CASES` when it names a file.
pub fn all_case_files() -> Vec<PathBuf> {
    let mut files = vec![fixtures().join("tokenizer/cases.json")];
    if let Some(extra) = std::env::var_os("OSSA_TOKENIZER_CASES").filter(|v| !v.is_empty()) {
        files.push(PathBuf::from(extra));
    }
    files
}

pub fn builtin() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::o200k_harmony().expect("built-in o200k_harmony"))
}

pub fn from_file_auto() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(&tokenizer_json()).expect("fixture tokenizer.json"))
}

pub fn from_file_huggingface() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_file_with(&tokenizer_json(), EncoderPreference::HuggingFace)
            .expect("fixture tokenizer.json")
    })
}

pub fn tiktoken() -> &'static tiktoken_rs::CoreBPE {
    static T: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    T.get_or_init(|| tiktoken_rs::o200k_harmony().expect("tiktoken-rs o200k_harmony"))
}

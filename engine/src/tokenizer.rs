//! The o200k_harmony tokenizer (being written).

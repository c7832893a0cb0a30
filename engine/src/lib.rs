//! ossa-engine: gpt-oss inference in-process: tokenizer, checkpoint loading, forward pass,
//! generation. Knows nothing of harmony or tools.

pub mod tokenizer;

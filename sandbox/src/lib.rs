//! ossa-sandbox: model-written Python inside WebAssembly.

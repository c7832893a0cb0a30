//! The key/value cache, and the token sequence it holds, so a new request can reuse the
//! longest common prefix.
//!
//! Every layer keeps all positions, sliding-window layers included, so the cache can be cut
//! back to any prefix; sliding layers only *read* their window.

/// Element type of the cache: f32 for f32 compute, bf16 for bf16 compute (half the memory).
pub trait KvElem: Copy + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl KvElem for f32 {
    #[inline]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElem for half::bf16 {
    #[inline]
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// Keys and values of one layer, `[position, kv_head, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerKv<E> {
    pub keys: Vec<E>,
    pub values: Vec<E>,
}

#[derive(Debug, Clone)]
pub(crate) enum LayerStore {
    F32(LayerKv<f32>),
    Bf16(LayerKv<half::bf16>),
}

impl LayerStore {
    fn truncate(&mut self, elems: usize) {
        match self {
            LayerStore::F32(l) => {
                l.keys.truncate(elems);
                l.values.truncate(elems);
            }
            LayerStore::Bf16(l) => {
                l.keys.truncate(elems);
                l.values.truncate(elems);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            LayerStore::F32(l) => (l.keys.capacity() + l.values.capacity()) * 4,
            LayerStore::Bf16(l) => (l.keys.capacity() + l.values.capacity()) * 2,
        }
    }
}

/// The cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerStore>,
    tokens: Vec<u32>,
    /// Elements per position per layer (`kv_heads · head_dim`).
    stride: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers of `stride` elements per position.
    pub(crate) fn new(layers: usize, stride: usize, bf16: bool) -> KvCache {
        let store = || {
            if bf16 {
                LayerStore::Bf16(LayerKv::default())
            } else {
                LayerStore::F32(LayerKv::default())
            }
        };
        KvCache {
            layers: (0..layers).map(|_| store()).collect(),
            tokens: Vec::new(),
            stride,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens whose keys and values are cached, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Drops every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(len);
        for layer in &mut self.layers {
            layer.truncate(len * self.stride);
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Bytes held by the cache buffers.
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(LayerStore::bytes).sum()
    }

    /// Length of the common prefix of the cached tokens and `tokens`.
    pub fn common_prefix(&self, tokens: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    }

    pub(crate) fn push_tokens(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }
}

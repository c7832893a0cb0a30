//! The key/value cache, and the token sequence it holds, so a new request can reuse the
//! longest common prefix.
//!
//! Every layer keeps all positions, sliding-window layers included, so the cache can be cut
//! back to any prefix; sliding layers only *read* their window.

use std::ops::Range;

/// Element type of the cache: f32 for f32 compute, bf16 for bf16 compute (half the memory).
pub trait KvElem: Copy + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
    /// Appends the element's little-endian bytes (`size_of::<Self>()` of them).
    fn write_le(self, out: &mut Vec<u8>);
    /// The element whose little-endian bytes start `bytes`.
    fn read_le(bytes: &[u8]) -> Self;
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
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
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
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }
    fn read_le(b: &[u8]) -> Self {
        half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Keys and values of one layer, `[position, kv_head, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerKv<E> {
    pub keys: Vec<E>,
    pub values: Vec<E>,
}

impl<E: KvElem> LayerKv<E> {
    const ELEM_BYTES: usize = std::mem::size_of::<E>();

    fn truncate(&mut self, elems: usize) {
        self.keys.truncate(elems);
        self.values.truncate(elems);
    }

    fn reserve(&mut self, elems: usize) {
        self.keys.reserve(elems);
        self.values.reserve(elems);
    }

    fn bytes(&self) -> usize {
        (self.keys.capacity() + self.values.capacity()) * Self::ELEM_BYTES
    }

    fn elem_bytes(&self) -> usize {
        Self::ELEM_BYTES
    }

    fn append_le_bytes(&self, range: Range<usize>, out: &mut Vec<u8>) {
        for part in [&self.keys[range.clone()], &self.values[range]] {
            for &v in part {
                v.write_le(out);
            }
        }
    }

    fn extend_from_le_bytes(&mut self, keys: &[u8], values: &[u8]) {
        let n = Self::ELEM_BYTES;
        self.keys.extend(keys.chunks_exact(n).map(E::read_le));
        self.values.extend(values.chunks_exact(n).map(E::read_le));
    }
}

#[derive(Debug, Clone)]
pub(crate) enum LayerStore {
    F32(LayerKv<f32>),
    Bf16(LayerKv<half::bf16>),
}

/// `$body` with `$layer` bound to the store's [`LayerKv`], whichever element type it holds.
macro_rules! with_layer {
    ($store:expr, $layer:ident => $body:expr) => {
        match $store {
            LayerStore::F32($layer) => $body,
            LayerStore::Bf16($layer) => $body,
        }
    };
}

impl LayerStore {
    fn truncate(&mut self, elems: usize) {
        with_layer!(self, l => l.truncate(elems))
    }

    fn bytes(&self) -> usize {
        with_layer!(self, l => l.bytes())
    }

    fn elem_bytes(&self) -> usize {
        with_layer!(self, l => l.elem_bytes())
    }

    /// Appends the keys, then the values, of elements `range` as little-endian bytes.
    fn append_le_bytes(&self, range: Range<usize>, out: &mut Vec<u8>) {
        with_layer!(self, l => l.append_le_bytes(range, out))
    }

    fn reserve(&mut self, elems: usize) {
        with_layer!(self, l => l.reserve(elems))
    }

    /// Appends keys and values given as little-endian bytes of this store's element type.
    fn extend_from_le_bytes(&mut self, keys: &[u8], values: &[u8]) {
        with_layer!(self, l => l.extend_from_le_bytes(keys, values))
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

    /// Drops every position from `len` on. The layers are cut even when the tokens are
    /// shorter: a forward call that panicked may have appended keys and values without their
    /// tokens.
    pub fn truncate(&mut self, len: usize) {
        let len = len.min(self.tokens.len());
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

    /// Makes room for `positions` more positions in every layer at once, rather than growing
    /// (and copying) the buffers block by block.
    pub(crate) fn reserve(&mut self, positions: usize) {
        for layer in &mut self.layers {
            layer.reserve(positions * self.stride);
        }
    }

    pub(crate) fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Elements per position per layer, in keys and again in values.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// Bytes of one stored element: 4 (f32) or 2 (bf16).
    pub(crate) fn elem_bytes(&self) -> usize {
        self.layers.first().map_or(4, LayerStore::elem_bytes)
    }

    /// Appends layer `layer`'s keys, then its values, of `positions` as little-endian bytes:
    /// what the prompt cache writes to disk.
    pub(crate) fn append_le_bytes(&self, layer: usize, positions: Range<usize>, out: &mut Vec<u8>) {
        let range = positions.start * self.stride..positions.end * self.stride;
        self.layers[layer].append_le_bytes(range, out);
    }

    /// Appends positions read back from disk: their tokens, and per layer the keys and values
    /// as [`KvCache::append_le_bytes`] wrote them (`tokens.len() · stride` elements each).
    pub(crate) fn extend_from_le_bytes(&mut self, tokens: &[u32], layers: &[(&[u8], &[u8])]) {
        let bytes = tokens.len() * self.stride * self.elem_bytes();
        assert!(
            layers.len() == self.layers.len()
                && layers
                    .iter()
                    .all(|(k, v)| k.len() == bytes && v.len() == bytes),
            "KV bytes do not match the cache's shape"
        );
        for (store, (keys, values)) in self.layers.iter_mut().zip(layers) {
            store.extend_from_le_bytes(keys, values);
        }
        self.tokens.extend_from_slice(tokens);
    }
}

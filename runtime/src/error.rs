use crate::format::FormatError;

/// Errors of the runtime. Each carries the sizes involved, so a caller can say what was
/// wrong without the runtime formatting strings (it has no allocator to do so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("embedding dimension is zero")]
    ZeroDim,
    #[error("buffer `{what}` has {got} elements, expected {expected}")]
    BufferSize {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("buffer `{what}` has {got} elements, not a multiple of the dimension {dim}")]
    NotMultiple {
        what: &'static str,
        got: usize,
        dim: usize,
    },
    #[error("no labels to score")]
    NoLabels,
    #[error("image is {width}x{height}: a side is zero")]
    EmptyImage { width: usize, height: usize },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("arena of {got} bytes is too small: the model needs {need}")]
    ArenaTooSmall { need: usize, got: usize },
    #[error("the artifact has no {tower} tower")]
    NoTower { tower: &'static str },
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    TokenId { id: u32, vocab: usize },
}

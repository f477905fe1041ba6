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
}

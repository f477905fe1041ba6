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
    #[error("the artifact has no {what} graph")]
    NoGraph { what: &'static str },
    #[error("the {graph} graph takes {expected} {what}, got {got}")]
    PortCount {
        graph: &'static str,
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("input `{name}` holds {expected} values, not {got}")]
    InputType {
        name: &'static str,
        got: &'static str,
        expected: &'static str,
    },
    #[error("the cache holds {capacity} positions; this step needs {need}")]
    CacheFull { need: usize, capacity: usize },
    #[error("position {position} is past the model's {positions} positions")]
    PositionOutOfRange { position: usize, positions: usize },
    /// A backend's device failed (a driver call, a launch): the backend keeps the details.
    #[error("the {backend} backend failed: {what}")]
    Device {
        backend: &'static str,
        what: &'static str,
    },
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    TokenId { id: u32, vocab: usize },
}

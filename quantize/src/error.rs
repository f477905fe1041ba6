use std::path::PathBuf;

/// Errors of the host side. Each names the file, text or tower it is about, so the CLI
/// can print it as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] vlm_models::siglip::ConfigError),
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot load the ONNX model: {msg}", path.display())]
    Onnx { path: PathBuf, msg: String },
    /// An ONNX tower that cannot be lowered to the runtime's ops; `node` is the first node
    /// that could not be (name and op type), or "(model)" for the graph as a whole.
    #[error("{}: cannot import node {node}: {msg}", path.display())]
    Import {
        path: PathBuf,
        node: String,
        msg: String,
    },
    #[error("{}: cannot load the tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("the model folder ships no tokenizer (config.json names none)")]
    NoTokenizer,
    #[error("cannot tokenize {text:?}: {msg}")]
    Tokenize { text: String, msg: String },
    /// Reading or preparing an input image.
    #[error(transparent)]
    Host(#[from] vlm_host::Error),
    #[error("no labels given")]
    NoLabels,
    #[error("{tower} tower: {msg}")]
    Inference { tower: &'static str, msg: String },
    // Not `source`: the message already includes it, and a source would repeat it in
    // the CLI's error chain.
    #[error("{what}: {error}")]
    Runtime {
        what: &'static str,
        error: vlm_runtime::Error,
    },
    #[error("{}: {msg}", path.display())]
    EvalData { path: PathBuf, msg: String },
    #[error("{}: not a usable artifact: {error}", path.display())]
    BadArtifact {
        path: PathBuf,
        error: vlm_runtime::FormatError,
    },
    /// A Hugging Face model folder's weights or config.json that cannot be used: a
    /// missing tensor, a wrong shape, an unknown architecture…
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("cannot write the artifact: {0}")]
    Artifact(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }
}

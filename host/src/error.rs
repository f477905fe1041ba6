use std::path::PathBuf;

/// Errors of reading and preparing inputs; each names the file it is about, so a CLI
/// prints it as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an image (unrecognised or unsupported format)", path.display())]
    NotImage { path: PathBuf },
    #[error("{}: unsupported image: {msg}", path.display())]
    UnsupportedImage { path: PathBuf, msg: String },
    #[error("{}: image too large: {msg}", path.display())]
    ImageTooLarge { path: PathBuf, msg: String },
    #[error("{}: corrupt or unreadable image: {msg}", path.display())]
    CorruptImage { path: PathBuf, msg: String },
    #[error(transparent)]
    Config(#[from] vlm_models::siglip::ConfigError),
    #[error("{}: cannot load the tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("the model ships no tokenizer")]
    NoTokenizer,
    #[error("the artifact has no text tower (made for a device, `vlm quantize --target`): it classifies against its stored labels only; leave out --labels")]
    NoTextTower,
    #[error("cannot tokenize {text:?}: {msg}")]
    Tokenize { text: String, msg: String },
    #[error("no labels given")]
    NoLabels,
    #[error("{}: {msg}", path.display())]
    EvalData { path: PathBuf, msg: String },
    #[error("{}: not a usable artifact: {error}", path.display())]
    BadArtifact {
        path: PathBuf,
        error: vlm_runtime::FormatError,
    },
    #[error("{}: not a usable SigLIP artifact: {error}", path.display())]
    BadMeta {
        path: PathBuf,
        error: vlm_models::siglip::MetaError,
    },
    #[error("{}: not a usable captioner: {error}", path.display())]
    BadCaptioner {
        path: PathBuf,
        error: vlm_models::captioner::MetaError,
    },
    #[error("captioning: {0}")]
    Generate(vlm_models::generate::GenerateError),
    /// A device backend could not be made for a run (the device's own words).
    #[error("{0}")]
    Device(String),
    // Not `source`: the message already includes it, and a source would repeat it in
    // the CLI's error chain.
    #[error("{what}: {error}")]
    Runtime {
        what: &'static str,
        error: vlm_runtime::Error,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound { path }
        } else {
            Error::Io { path, source }
        }
    }
}

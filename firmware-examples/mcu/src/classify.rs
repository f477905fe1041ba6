//! Zero-shot classification of camera frames against the label embeddings an artifact in
//! flash stores: the artifact is validated once, in place; every frame runs the image
//! tower over the caller's arena and scores against the stored labels. No allocation.

use vlm_models::siglip::Meta;
use vlm_runtime::model::Labels;
use vlm_runtime::preprocess::Normalize;
use vlm_runtime::score::score_into;
use vlm_runtime::{Error, Model, Scorer, Session};

/// The largest label set and embedding the examples' fixed buffers hold.
pub const MAX_LABELS: usize = 32;
pub const MAX_DIM: usize = 1024;

/// Why a frame was not classified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassifyError {
    Runtime(Error),
    /// The artifact is not a SigLIP classifier with stored labels.
    NotAClassifier(&'static str),
    /// The model wants more than the fixed buffers hold.
    TooLarge(&'static str),
}

impl From<Error> for ClassifyError {
    fn from(e: Error) -> Self {
        ClassifyError::Runtime(e)
    }
}

/// One frame's result: every label's probability (sigmoid, independent), the best one,
/// and the embedding's bits hashed, to compare runs across CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub probs: [f32; MAX_LABELS],
    pub labels: usize,
    pub best: usize,
    pub embedding_hash: u64,
}

impl Scores {
    pub fn probability(&self, label: usize) -> f32 {
        self.probs[label]
    }
}

pub struct Classifier<'m> {
    model: Model<'m>,
    meta: Meta,
}

impl<'m> Classifier<'m> {
    /// Validates `artifact` (in flash: nothing is copied) and reads its settings.
    pub fn new(artifact: &'m [u8]) -> Result<Self, ClassifyError> {
        let model = Model::from_bytes(artifact).map_err(Error::Format)?;
        let meta = Meta::from_model(&model)
            .map_err(|_| ClassifyError::NotAClassifier("no SigLIP metadata"))?;
        let labels = model
            .labels()
            .ok_or(ClassifyError::NotAClassifier("no stored labels"))?;
        if labels.count == 0 {
            return Err(ClassifyError::NotAClassifier("no stored labels"));
        }
        if labels.count > MAX_LABELS {
            return Err(ClassifyError::TooLarge("labels"));
        }
        if meta.embed_dim > MAX_DIM {
            return Err(ClassifyError::TooLarge("embedding"));
        }
        if meta.channels != 3 {
            return Err(ClassifyError::NotAClassifier("not an RGB model"));
        }
        Ok(Classifier { model, meta })
    }

    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    /// Bytes of arena a frame needs.
    pub fn arena_size(&self) -> usize {
        self.model.arena_size()
    }

    /// The frame size the model takes: width, height (RGB888).
    pub fn frame_size(&self) -> (usize, usize) {
        (self.meta.width, self.meta.height)
    }

    pub fn labels(&self) -> &Labels<'m> {
        // Checked present in `new`.
        self.model.labels().expect("checked in new")
    }

    pub fn scorer(&self) -> Scorer {
        self.meta.scorer()
    }

    pub fn normalize(&self) -> Normalize {
        self.meta.normalize()
    }

    /// Classifies one RGB888 frame at the model's size. `pixels` (3 × width × height
    /// floats) and `arena` are the caller's; `embedding` gets the image embedding.
    pub fn classify(
        &self,
        rgb: &[u8],
        pixels: &mut [f32],
        arena: &mut [u8],
        embedding: &mut [f32],
    ) -> Result<Scores, ClassifyError> {
        let (w, h) = self.frame_size();
        let dim = self.meta.embed_dim;
        let embedding = embedding
            .get_mut(..dim)
            .ok_or(ClassifyError::TooLarge("embedding"))?;
        self.normalize().rgb8_to_chw(rgb, w, h, pixels)?;
        let mut session = Session::new(&self.model, arena)?;
        session.encode_image(pixels, embedding)?;
        let labels = self.labels();
        let mut probs = [0.0f32; MAX_LABELS];
        score_into(
            &self.scorer(),
            embedding,
            labels.embeddings,
            &mut probs[..labels.count],
        )?;
        // The first of equal probabilities wins, as `rank_into` orders them.
        let best = (0..labels.count).fold(0, |b, i| if probs[i] > probs[b] { i } else { b });
        Ok(Scores {
            probs,
            labels: labels.count,
            best,
            embedding_hash: crate::fnv1a_bits(embedding),
        })
    }
}

//! Caption generation on the runtime, with no allocation: the image through the image
//! encoder and projector, the prompt's input embeddings (image embeddings where the image
//! tokens stand) through the prefill graph chunk by chunk, then one decoder step per
//! token. Every buffer — the arena with the KV cache, the logits, the embeddings — is the
//! caller's, sized before the first token ([`Generator::arena_bytes`],
//! [`Generator::work_floats`]).

use vlm_runtime::kernels::Isa;
use vlm_runtime::{Backend, Cpu, Error as RuntimeError, Input, Model, Role, Session};

use crate::captioner::Meta;

/// Why a caption could not be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the prompt has {found} image tokens; the model places {expected} per image")]
    ImageTokens { found: usize, expected: usize },
    #[error(
        "the prompt ({prompt} tokens) and {new} new tokens exceed the model's context of {context}"
    )]
    TooLong {
        prompt: usize,
        new: usize,
        context: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    TokenId { id: u32, vocab: usize },
    #[error("no image was encoded before a prompt with image tokens")]
    NoImage,
    #[error("the prompt ({prompt} tokens) must go through the model in one run of at most {rows}")]
    PrefixTooLong { prompt: usize, rows: usize },
    #[error("{beams} beams asked for; at most {max}")]
    TooManyBeams { beams: usize, max: usize },
    #[error("the work buffer holds {got} floats; {need} are needed")]
    WorkTooSmall { need: usize, got: usize },
}

struct Graphs {
    image: usize,
    projector: usize,
    embed: usize,
    prefill: usize,
    step: usize,
}

/// The caller's float buffers, carved once.
struct Work<'w> {
    features: &'w mut [f32],
    image: &'w mut [f32],
    chunk: &'w mut [f32],
    logits: &'w mut [f32],
}

/// One captioning session over a caller's arena and work buffer.
pub struct Generator<'m, 'a, B: Backend = Cpu> {
    session: Session<'m, 'a, B>,
    meta: Meta,
    graphs: Graphs,
    work: Work<'a>,
    features_len: usize,
    has_image: bool,
    position: usize,
}

fn graph(model: &Model, role: Role) -> Result<usize, GenerateError> {
    model
        .graph_index(role)
        .ok_or(GenerateError::Runtime(RuntimeError::NoGraph {
            what: role.name(),
        }))
}

fn output_len(model: &Model, g: usize) -> usize {
    model
        .graph_at(g)
        .and_then(|g| g.outputs().next())
        .map_or(0, |p| p.len())
}

impl<'m, 'a> Generator<'m, 'a, Cpu> {
    /// A generator on chosen kernels (`Isa::detect()` for the best this CPU has).
    pub fn new(
        model: &Model<'m>,
        meta: Meta,
        arena: &'a mut [u8],
        work: &'a mut [f32],
        isa: Isa,
    ) -> Result<Self, GenerateError> {
        Self::with_backend(model, meta, arena, work, Cpu::new(isa))
    }
}

impl<'m, 'a, B: Backend> Generator<'m, 'a, B> {
    /// Arena bytes a generator on `threads` threads needs (KV cache included): each
    /// thread its own attention scratch, or attention runs on fewer.
    pub fn arena_bytes(model: &Model, threads: usize) -> usize {
        model.arena_size_for_threads(threads)
    }

    /// Floats of work buffer a generator needs: the vision features, the image
    /// embeddings, one prefill chunk of input embeddings and the logits.
    pub fn work_floats(model: &Model, meta: &Meta) -> usize {
        let features = model
            .graph_index(Role::ImageEncoder)
            .map_or(0, |g| output_len(model, g));
        features
            .saturating_add(meta.image_tokens.saturating_mul(meta.hidden))
            .saturating_add(meta.prefill_rows.saturating_mul(meta.hidden))
            .saturating_add(meta.vocab_size)
    }

    pub fn with_backend(
        model: &Model<'m>,
        meta: Meta,
        arena: &'a mut [u8],
        work: &'a mut [f32],
        backend: B,
    ) -> Result<Self, GenerateError> {
        let graphs = Graphs {
            image: graph(model, Role::ImageEncoder)?,
            projector: graph(model, Role::Projector)?,
            embed: graph(model, Role::TokenEmbedding)?,
            prefill: graph(model, Role::Prefill)?,
            step: graph(model, Role::Decoder)?,
        };
        let need = Self::work_floats(model, &meta);
        if work.len() < need {
            return Err(GenerateError::WorkTooSmall {
                need,
                got: work.len(),
            });
        }
        let features_len = output_len(model, graphs.image);
        let (features, rest) = work.split_at_mut(features_len);
        let (image, rest) = rest.split_at_mut(meta.image_tokens * meta.hidden);
        let (chunk, rest) = rest.split_at_mut(meta.prefill_rows * meta.hidden);
        let logits = &mut rest[..meta.vocab_size];
        Ok(Self {
            session: Session::with_backend(model, arena, backend)?,
            meta,
            graphs,
            work: Work {
                features,
                image,
                chunk,
                logits,
            },
            features_len,
            has_image: false,
            position: 0,
        })
    }

    pub fn session_mut(&mut self) -> &mut Session<'m, 'a, B> {
        &mut self.session
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The vision features of the last image (what the projector read).
    pub fn features(&self) -> &[f32] {
        &self.work.features[..self.features_len]
    }

    /// The image embeddings of the last image (`image_tokens × hidden`).
    pub fn image_embeddings(&self) -> &[f32] {
        self.work.image
    }

    /// The logits of the last prefill or step.
    pub fn logits(&self) -> &[f32] {
        self.work.logits
    }

    /// Runs the image encoder and projector on `[C, H, W]` pixels.
    pub fn encode_image(&mut self, pixels: &[f32]) -> Result<(), GenerateError> {
        self.session.run(
            self.graphs.image,
            &[Input::F32(pixels)],
            &mut [&mut *self.work.features],
            None,
        )?;
        self.session.run(
            self.graphs.projector,
            &[Input::F32(self.work.features)],
            &mut [&mut *self.work.image],
            None,
        )?;
        self.has_image = true;
        Ok(())
    }

    fn check_id(&self, id: u32) -> Result<(), GenerateError> {
        if id as usize >= self.meta.vocab_size {
            return Err(GenerateError::TokenId {
                id,
                vocab: self.meta.vocab_size,
            });
        }
        Ok(())
    }

    /// Checks a prompt before anything runs: its image tokens, its ids, and that it fits
    /// the context with `new_tokens` more.
    pub fn check_prompt(&self, ids: &[u32], new_tokens: usize) -> Result<(), GenerateError> {
        if ids.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        for &id in ids {
            self.check_id(id)?;
        }
        let found = ids.iter().filter(|&&i| i == self.meta.image_token).count();
        if found != 0 && found != self.meta.image_tokens {
            return Err(GenerateError::ImageTokens {
                found,
                expected: self.meta.image_tokens,
            });
        }
        if found != 0 && !self.has_image {
            return Err(GenerateError::NoImage);
        }
        if ids.len().saturating_add(new_tokens) > self.meta.context {
            return Err(GenerateError::TooLong {
                prompt: ids.len(),
                new: new_tokens,
                context: self.meta.context,
            });
        }
        Ok(())
    }

    /// Starts a new sequence with `ids` (the image's embeddings stand in for its image
    /// tokens, in order); the logits of the next token are then [`Generator::logits`].
    /// The prompt goes through the prefill graph in runs of up to `prefill_rows`
    /// embeddings; a family whose prompt attends both ways (PaliGemma's prefix) needs it
    /// in one run.
    pub fn prefill(&mut self, ids: &[u32], new_tokens: usize) -> Result<&[f32], GenerateError> {
        self.check_prompt(ids, new_tokens)?;
        let (c, d) = (self.meta.prefill_rows, self.meta.hidden);
        if self.meta.arch.prefix_attends_both_ways() && ids.len() > c {
            return Err(GenerateError::PrefixTooLong {
                prompt: ids.len(),
                rows: c,
            });
        }
        self.session.reset_state()?;
        self.position = 0;
        let mut image_row = 0;
        for chunk in ids.chunks(c) {
            for (r, &id) in chunk.iter().enumerate() {
                self.embed_into(id, &mut image_row, r)?;
            }
            let n = chunk.len();
            self.session.run_rows(
                self.graphs.prefill,
                Some(n),
                &[Input::F32(&self.work.chunk[..n * d])],
                &mut [&mut *self.work.logits],
                None,
            )?;
            self.position += n;
        }
        Ok(self.work.logits)
    }

    /// One token on: its logits for the next.
    pub fn step(&mut self, id: u32) -> Result<&[f32], GenerateError> {
        self.check_id(id)?;
        if self.position >= self.meta.context {
            return Err(GenerateError::TooLong {
                prompt: self.position,
                new: 1,
                context: self.meta.context,
            });
        }
        let mut none = usize::MAX;
        self.embed_into(id, &mut none, 0)?;
        self.run_step()?;
        Ok(self.work.logits)
    }

    fn run_step(&mut self) -> Result<(), GenerateError> {
        let d = self.meta.hidden;
        self.session.run(
            self.graphs.step,
            &[Input::F32(&self.work.chunk[..d])],
            &mut [&mut *self.work.logits],
            None,
        )?;
        self.position += 1;
        Ok(())
    }

    /// Row `r` of the chunk: the next image embedding for an image token (while
    /// `image_row` counts them), else the token's embedding.
    fn embed_into(
        &mut self,
        id: u32,
        image_row: &mut usize,
        r: usize,
    ) -> Result<(), GenerateError> {
        let d = self.meta.hidden;
        let dst = &mut self.work.chunk[r * d..(r + 1) * d];
        if id == self.meta.image_token && *image_row < self.meta.image_tokens {
            dst.copy_from_slice(&self.work.image[*image_row * d..(*image_row + 1) * d]);
            *image_row += 1;
            return Ok(());
        }
        self.session
            .run(self.graphs.embed, &[Input::U32(&[id])], &mut [dst], None)?;
        Ok(())
    }
}

impl<'m, 'a, B: Backend> Generator<'m, 'a, B> {
    /// Bytes of the state region (KV caches and position), for [`beam`]'s snapshots.
    pub fn state_bytes(&self) -> usize {
        self.session.model().state_bytes()
    }

    /// Makes this generator continue where `other` (same model) stands: its cache,
    /// position and logits.
    fn take_state(
        &mut self,
        state: &[u8],
        position: usize,
        logits: &[f32],
    ) -> Result<(), GenerateError> {
        self.session.set_state(state)?;
        self.position = position;
        self.work.logits.copy_from_slice(logits);
        Ok(())
    }
}

/// How to pick tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// New tokens at most (a stop token ends sooner).
    pub max_tokens: usize,
    /// Hugging Face's repetition penalty (1: none): the logit of every token already in
    /// the sequence, prompt included, is divided by it when positive, multiplied when
    /// negative.
    pub repetition_penalty: f32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_tokens: 32,
            repetition_penalty: 1.0,
        }
    }
}

/// The index of the largest logit, the first on ties (as `argmax`); NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding after [`Generator::prefill`]: each token the argmax of the (penalised)
/// logits, shown to `on_token` (which returns `false` to stop) and written to `out`,
/// until a stop token (not written), `max_tokens` or `out` is full. `seen` marks the
/// tokens already in the sequence for the repetition penalty (`vocab_size` entries, the
/// prompt's set by the caller, or empty with no penalty). Returns the tokens written.
pub fn greedy<B: Backend>(
    g: &mut Generator<'_, '_, B>,
    opts: &Options,
    seen: &mut [bool],
    out: &mut [u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<usize, GenerateError> {
    let penalty = opts.repetition_penalty;
    let use_penalty = penalty != 1.0 && seen.len() >= g.meta.vocab_size;
    let mut n = 0;
    while n < opts.max_tokens.min(out.len()) {
        let id = {
            let logits = &mut *g.work.logits;
            if use_penalty {
                for (l, &s) in logits.iter_mut().zip(seen.iter()) {
                    if s {
                        *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
                    }
                }
            }
            argmax(logits)
        };
        if g.meta.is_stop(id) {
            break;
        }
        out[n] = id;
        n += 1;
        if use_penalty {
            seen[id as usize] = true;
        }
        if !on_token(id) || n == opts.max_tokens.min(out.len()) {
            break;
        }
        g.step(id)?;
    }
    Ok(n)
}

/// Natural-log probabilities of `logits` into `out` (max-shifted, so no overflow).
fn log_softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for &l in logits {
        sum += libm::exp((l - max) as f64);
    }
    let log_z = max as f64 + libm::log(sum);
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l as f64 - log_z) as f32;
    }
}

/// The caller's memory for a beam search of `n` beams of up to `max_tokens` tokens.
pub struct BeamWork<'w> {
    /// `n × state_bytes`: each beam's cache while the next step's beams are chosen.
    pub states: &'w mut [u8],
    /// `n × vocab`: each beam's log-probabilities, then its logits to hand on.
    pub scores: &'w mut [f32],
    /// `2 × n × max_tokens`: the beams' tokens, and the next step's.
    pub tokens: &'w mut [u32],
}

impl BeamWork<'_> {
    /// `(state bytes, floats, tokens)` a search needs.
    pub fn sizes<B: Backend>(
        g: &Generator<'_, '_, B>,
        beams: usize,
        max_tokens: usize,
    ) -> (usize, usize, usize) {
        (
            beams * g.state_bytes(),
            beams * g.meta.vocab_size,
            2 * beams * max_tokens,
        )
    }
}

/// Beam search of `gens.len()` beams after `gens[0]`'s [`Generator::prefill`] (the
/// others are generators of the same model, each on its own arena), step for step as
/// Hugging Face's `generate(num_beams=n)` with its defaults (length penalty 1, early
/// stopping off), so the same model gives the same caption:
/// - each step keeps the `max(2, 1 + stops) × n` continuations of highest total
///   log-probability (f32 sums, as torch adds them); the best `n` not ending in a stop
///   token go on, each beam's cache copied from its parent's;
/// - a continuation among the best `n` that ends in a stop token (or reaches
///   `max_tokens`) is a finished caption, scored by its total over its length (stop token
///   counted); the best `n` finished are kept;
/// - the search ends once `n` are finished and the best live beam's total over its
///   current length is no better than the worst of them (Hugging Face's heuristic, not
///   a bound: a longer caption could still have scored higher), or at `max_tokens`.
///
/// Writes the best finished caption to `out` (stop token not written) and returns its
/// length.
pub fn beam<B: Backend>(
    gens: &mut [Generator<'_, '_, B>],
    opts: &Options,
    work: BeamWork<'_>,
    out: &mut [u32],
) -> Result<usize, GenerateError> {
    let n = gens.len();
    let max = opts.max_tokens.min(out.len());
    if n == 0 || max == 0 {
        return Ok(0);
    }
    if n > MAX_BEAMS {
        return Err(GenerateError::TooManyBeams {
            beams: n,
            max: MAX_BEAMS,
        });
    }
    let vocab = gens[0].meta.vocab_size;
    let sb = gens[0].state_bytes();
    let (need_s, need_f, need_t) = BeamWork::sizes(&gens[0], n, max);
    if work.states.len() < need_s || work.scores.len() < need_f || work.tokens.len() < need_t {
        return Err(GenerateError::WorkTooSmall {
            need: need_f,
            got: work.scores.len(),
        });
    }
    let stops = gens[0].meta.stops.iter().flatten().count();
    // Candidates kept per step: enough that `n` remain after the stop tokens among them.
    let keep = (2.max(1 + stops) * n).min(vocab);
    let (toks, next_toks) = work.tokens.split_at_mut(n * max);
    // Live beams: (total log-probability, generator index); one at first.
    let mut live = [(0.0f32, 0usize); MAX_BEAMS];
    let mut n_live = 1;
    // The best `n` finished captions' scores, best first.
    let mut finished = [f32::NEG_INFINITY; MAX_BEAMS];
    let mut n_fin = 0;
    let mut best_len = 0;
    let mut len = 0;
    loop {
        // Each live beam's best `keep` continuations hold the best `keep` of all.
        let mut cand = [(f32::NEG_INFINITY, 0usize, 0u32); MAX_CANDIDATES];
        let mut n_cand = 0;
        for (b, &(total, gi)) in live[..n_live].iter().enumerate() {
            let lp = &mut work.scores[b * vocab..(b + 1) * vocab];
            log_softmax(gens[gi].logits(), lp);
            for _ in 0..keep {
                let t = argmax(lp);
                cand[n_cand] = (total + lp[t as usize], b, t);
                lp[t as usize] = f32::NEG_INFINITY;
                n_cand += 1;
            }
        }
        // Equal totals in beam order, then token order (no_std has no stable sort).
        cand[..n_cand]
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let cand = &cand[..n_cand.min(keep)];
        let at_max = len + 1 == max;
        let ends = |t: u32| at_max || gens[0].meta.is_stop(t);
        // Finished captions: only among the best `n`.
        for &(s, b, t) in cand.iter().take(n) {
            if !ends(t) {
                continue;
            }
            let score = s / (len + 1) as f32;
            if n_fin == n && score <= finished[n - 1] {
                continue;
            }
            let at = finished[..n_fin]
                .iter()
                .take_while(|&&f| f >= score)
                .count();
            let last = n_fin.min(n - 1);
            finished.copy_within(at..last, at + 1);
            finished[at] = score;
            n_fin = (n_fin + 1).min(n);
            if at == 0 {
                let parent = live[b].1;
                out[..len].copy_from_slice(&toks[parent * max..parent * max + len]);
                best_len = len;
                if !gens[0].meta.is_stop(t) {
                    out[len] = t;
                    best_len = len + 1;
                }
            }
        }
        if at_max {
            return Ok(best_len);
        }
        // Next beams: the best `n` continuations that go on.
        let mut next = [(0.0f32, 0usize, 0u32); MAX_BEAMS];
        let mut n_next = 0;
        for &(s, b, t) in cand {
            if n_next < n && !ends(t) {
                next[n_next] = (s, b, t);
                n_next += 1;
            }
        }
        len += 1;
        if n_next == 0 {
            return Ok(best_len);
        }
        // Hugging Face's stopping heuristic: the best live beam at its current length.
        if n_fin == n && next[0].0 / len as f32 <= finished[n - 1] {
            return Ok(best_len);
        }
        // Snapshot the parents, then give each new beam its parent's cache and tokens.
        for (b, &(_, gi)) in live[..n_live].iter().enumerate() {
            work.states[b * sb..(b + 1) * sb].copy_from_slice(gens[gi].session.state()?);
            let lp = &mut work.scores[b * vocab..(b + 1) * vocab];
            lp.copy_from_slice(gens[gi].logits());
        }
        for (i, &(_, b, t)) in next[..n_next].iter().enumerate() {
            let parent = live[b].1;
            next_toks[i * max..i * max + len - 1]
                .copy_from_slice(&toks[parent * max..parent * max + len - 1]);
            next_toks[i * max + len - 1] = t;
        }
        let position = gens[live[0].1].position;
        for (i, &(s, b, _)) in next[..n_next].iter().enumerate() {
            let (state, logits) = (
                &work.states[b * sb..(b + 1) * sb],
                &work.scores[b * vocab..(b + 1) * vocab],
            );
            gens[i].take_state(state, position, logits)?;
            live[i] = (s, i);
        }
        n_live = n_next;
        toks[..n_live * max].copy_from_slice(&next_toks[..n_live * max]);
        for (i, gen) in gens.iter_mut().enumerate().take(n_live) {
            gen.step(toks[i * max + len - 1])?;
        }
    }
}

/// Continuations a beam-search step may hold: every beam's best
/// `max(2, 1 + MAX_STOPS) × MAX_BEAMS`.
const MAX_CANDIDATES: usize = MAX_BEAMS * MAX_BEAMS * (1 + crate::captioner::MAX_STOPS);

/// Beams a search may keep.
pub const MAX_BEAMS: usize = 8;

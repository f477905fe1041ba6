//! The word sink and source every op's encoding goes through: the writer calls
//! `Op::encode`, the reader `Op::decode`, so both sides share one definition.

use crate::format::FormatError;

/// The largest encoded op, in words.
pub const MAX_OP_WORDS: usize = 40;

/// A fixed-capacity word sink, so encoding needs no allocator.
pub struct Words {
    buf: [u32; MAX_OP_WORDS],
    len: usize,
}

impl Words {
    pub(crate) fn new() -> Self {
        Self {
            buf: [0; MAX_OP_WORDS],
            len: 0,
        }
    }

    /// Panics past [`MAX_OP_WORDS`]: an op's encoding is fixed by its code, so that is
    /// a bug in this crate, never a property of a file.
    pub(crate) fn push(&mut self, w: u32) {
        self.buf[self.len] = w;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.buf[..self.len]
    }
}

/// Reads words off the front of an op's encoding.
pub struct Reader<'a> {
    words: &'a [u32],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(words: &'a [u32]) -> Self {
        Self { words, pos: 0 }
    }

    pub(crate) fn next(&mut self) -> Result<u32, FormatError> {
        let w = *self
            .words
            .get(self.pos)
            .ok_or(FormatError::Truncated { what: "op record" })?;
        self.pos += 1;
        Ok(w)
    }

    pub(crate) fn f32(&mut self) -> Result<f32, FormatError> {
        Ok(f32::from_bits(self.next()?))
    }
}

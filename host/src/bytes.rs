//! Artifact bytes in memory the runtime can read in place: 64-byte aligned copies, memory
//! maps, and the demo artifact compiled into the binary.

use std::path::Path;

use crate::{Error, Result};

/// Bytes with 64-byte alignment (a `Vec<u8>` guarantees none), as the reader wants them.
#[derive(Clone)]
pub struct AlignedBytes {
    words: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        Self {
            words: vec![[0u64; 8]; len.div_ceil(64)],
            len,
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_bytes_mut().copy_from_slice(bytes);
        b
    }

    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<[u64; 8], u8>(&self.words)[..self.len]
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<[u64; 8], u8>(&mut self.words)[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a file straight into aligned memory.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len).map_err(|_| {
            Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::OutOfMemory, "file too large"),
            )
        })?;
        let mut b = Self::zeroed(len);
        f.read_exact(b.as_bytes_mut())
            .map_err(|e| Error::io(path, e))?;
        // A file that grew while being read would be cut short here: refuse it.
        if f.read(&mut [0u8; 1]).map_err(|e| Error::io(path, e))? != 0 {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file changed while read"),
            ));
        }
        Ok(b)
    }
}

#[cfg(feature = "model")]
/// Where a model's bytes live: read into aligned memory, mapped from a file (the pages
/// are shared with the page cache and loaded as touched), or compiled into the binary.
pub enum ModelBytes {
    Aligned(AlignedBytes),
    Mapped(memmap2::Mmap),
    Static(&'static [u8]),
}

#[cfg(feature = "model")]
impl ModelBytes {
    /// Maps `path` where the OS allows it, else reads it into aligned memory.
    ///
    /// A map sees the file as it is on disk: were another process to truncate or rewrite
    /// it while mapped, reads could fault or change. `vlm` writes artifacts by renaming a
    /// finished temporary file over the old one, which leaves existing maps intact.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process; see above for the
        // one way another process could change it under us.
        let map = unsafe { memmap2::Mmap::map(&file) };
        match map {
            // An empty file cannot be mapped; a map's address is page-aligned.
            Ok(m) if !m.is_empty() => Ok(ModelBytes::Mapped(m)),
            _ => Ok(ModelBytes::Aligned(AlignedBytes::read(path)?)),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ModelBytes::Aligned(b) => b.as_bytes(),
            ModelBytes::Mapped(m) => m,
            ModelBytes::Static(b) => b,
        }
    }
}

//! One memory-mapped safetensors file and the zero-copy tensor views borrowed from it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};

use crate::dtype::{cast_slice, CastError, Element};
use crate::header::{Header, TensorInfo};
use crate::{Dtype, LoadError};

/// A safetensors file mapped read-only, with its validated header.
///
/// Truncation: on Linux, touching a mapped page past the end of a file that shrank after
/// mapping raises SIGBUS. The header is read with `pread` (never through the mapping);
/// materialization reads with `pread` by default ([`crate::SourceRead::Pread`]), where a shrunk
/// file is a short read; and the file length is re-checked with `fstat` before each view is
/// handed out and before each mapped chunk is copied. So a truncation that has already happened
/// becomes [`LoadError::Truncated`]. A truncation racing with a read of a view already handed out
/// cannot be caught without a process-wide signal handler, which this crate deliberately does
/// not install: do not rewrite checkpoint files in place while they are in use (writers here
/// replace files by rename, which leaves existing mappings intact).
#[derive(Debug)]
pub struct SafeTensorsFile {
    path: PathBuf,
    file: File,
    map: Mmap,
    header: Header,
}

impl SafeTensorsFile {
    /// Opens, maps and validates `path`. Costs O(header): no tensor data is read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|e| LoadError::io(&path, "open", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| LoadError::io(&path, "stat", e))?
            .len();
        if file_len < 8 {
            return Err(LoadError::TooShort {
                path,
                len: file_len,
            });
        }
        let mut prefix = [0u8; 8];
        file.read_exact_at(&mut prefix, 0)
            .map_err(|e| LoadError::io(&path, "read the header length of", e))?;
        let json_len = Header::json_len(&path, prefix, file_len)?;
        let mut json = vec![0u8; json_len];
        file.read_exact_at(&mut json, 8)
            .map_err(|e| LoadError::io(&path, "read the header of", e))?;
        let header = Header::from_json(&path, &json, file_len)?;
        // SAFETY: the mapping is read-only and private to this struct; see the type-level note on
        // truncation for the one hazard a file mapping carries and how it is contained.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(file_len as usize)
                .map(&file)
        }
        .map_err(|e| LoadError::io(&path, "memory-map", e))?;
        Ok(SafeTensorsFile {
            path,
            file,
            map,
            header,
        })
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Length of the mapped file in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the file holds no tensor data.
    pub fn is_empty(&self) -> bool {
        self.header.data_len() == 0
    }

    /// Fails with [`LoadError::Truncated`] if the file is now shorter than when it was mapped.
    pub fn check_length(&self, tensor: Option<&str>) -> Result<(), LoadError> {
        let actual = self
            .file
            .metadata()
            .map_err(|e| LoadError::io(&self.path, "stat", e))?
            .len();
        let expected = self.map.len() as u64;
        if actual < expected {
            return Err(LoadError::Truncated {
                path: self.path.clone(),
                tensor: tensor.map(str::to_owned),
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// A zero-copy view of the tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, LoadError> {
        let info = self
            .header
            .get(name)
            .ok_or_else(|| LoadError::TensorNotFound {
                path: self.path.clone(),
                tensor: name.to_owned(),
            })?;
        self.check_length(Some(name))?;
        Ok(self.view_unchecked(info))
    }

    /// Views of every tensor in data order. The file length is checked once, up front.
    pub fn tensors(&self) -> Result<impl ExactSizeIterator<Item = TensorView<'_>>, LoadError> {
        self.check_length(None)?;
        Ok(self.header.tensors().iter().map(|i| self.view_unchecked(i)))
    }

    fn view_unchecked<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let (begin, end) = self.data_range(info);
        TensorView {
            file: &self.path,
            info,
            data: &self.map[begin..end],
        }
    }

    /// Absolute byte range of `info`'s data in the mapping.
    pub(crate) fn data_range(&self, info: &TensorInfo) -> (usize, usize) {
        let start = self.header.data_start();
        (start + info.data_offsets.0, start + info.data_offsets.1)
    }

    pub(crate) fn map(&self) -> &Mmap {
        &self.map
    }

    pub(crate) fn raw_file(&self) -> &File {
        &self.file
    }

    /// Hints that the data will be read front to back (larger readahead, early reclaim).
    pub fn advise_sequential(&self) -> Result<(), LoadError> {
        self.map
            .advise(Advice::Sequential)
            .map_err(|e| LoadError::io(&self.path, "madvise(SEQUENTIAL)", e))
    }

    /// Starts asynchronous readahead of the whole data section so that first use does not
    /// stall on cold pages. Returns immediately.
    pub fn prefetch(&self) -> Result<(), LoadError> {
        let start = self.header.data_start();
        self.map
            .advise_range(Advice::WillNeed, start, self.map.len() - start)
            .map_err(|e| LoadError::io(&self.path, "madvise(WILLNEED)", e))
    }

    /// Fraction (0..=1) of this file's pages currently in the page cache, from `mincore`.
    /// Costs one byte of scratch per 4 KiB page; touches no data.
    pub fn page_cache_residency(&self) -> Result<f64, LoadError> {
        crate::sys::resident_fraction(self.map.as_ptr(), self.map.len())
            .map_err(|e| LoadError::io(&self.path, "mincore", e))
    }
}

/// A zero-copy view of one tensor: metadata plus its bytes, borrowed from the mapping.
/// Bytes are little-endian, row-major.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    file: &'a Path,
    info: &'a TensorInfo,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Tensor name as written in the header.
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    /// Element type.
    pub fn dtype(&self) -> Dtype {
        self.info.dtype
    }

    /// Dimensions, outermost first; empty for a scalar.
    pub fn shape(&self) -> &'a [usize] {
        &self.info.shape
    }

    /// The raw little-endian bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.info.num_elements()
    }

    /// The file this tensor lives in.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// The header entry.
    pub fn info(&self) -> &'a TensorInfo {
        self.info
    }

    /// The data as `&[T]` in place. Fails when `T` does not match the dtype or when the data
    /// is not aligned for `T` in the file (the format does not guarantee alignment).
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], LoadError> {
        cast_slice(self.dtype(), self.data)
            .map_err(|e| cast_error::<T>(e, self.file, self.name(), self.dtype()))
    }
}

pub(crate) fn cast_error<T>(e: CastError, path: &Path, tensor: &str, dtype: Dtype) -> LoadError {
    match e {
        CastError::WrongDtype => LoadError::DtypeMismatch {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
            dtype,
            requested: std::any::type_name::<T>(),
        },
        CastError::Misaligned => LoadError::Misaligned {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
            dtype,
        },
        CastError::BigEndianHost => LoadError::BigEndianHost {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
        },
    }
}

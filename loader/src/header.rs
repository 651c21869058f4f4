//! Parsing and validating the JSON header of one safetensors file.
//!
//! Layout: `u64` little-endian header length `n`, `n` bytes of JSON, then the data section. Every
//! tensor's `data_offsets` are relative to the data section; together they must tile it exactly.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::error::ExpectedBytes;
use crate::{Dtype, LoadError};

/// Largest header accepted, in bytes (the reference implementation uses the same bound).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

const METADATA_KEY: &str = "__metadata__";

/// One tensor's entry in a validated header. Offsets are relative to the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` within the data section.
    pub data_offsets: (usize, usize),
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size in bytes of the tensor's data.
    pub fn byte_len(&self) -> usize {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// A validated header: tensors in data order, a name index, and the free-form metadata.
#[derive(Debug, Clone)]
pub struct Header {
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    /// Absolute file offset of the data section (8 + header length).
    data_start: usize,
    /// Length of the data section in bytes.
    data_len: usize,
}

impl Header {
    /// Reads the 8-byte length prefix of a file of `file_len` bytes and checks it against the
    /// file size and [`MAX_HEADER_LEN`]. Returns the JSON length.
    pub fn json_len(path: &Path, prefix: [u8; 8], file_len: u64) -> Result<usize, LoadError> {
        let header_len = u64::from_le_bytes(prefix);
        if header_len > MAX_HEADER_LEN {
            return Err(LoadError::HeaderTooLarge {
                path: path.to_owned(),
                header_len,
                limit: MAX_HEADER_LEN,
            });
        }
        let available = file_len.saturating_sub(8);
        if header_len > available {
            return Err(LoadError::HeaderPastEof {
                path: path.to_owned(),
                header_len,
                available,
            });
        }
        // Bounded by MAX_HEADER_LEN, so it fits any usize of 32 bits or more.
        Ok(header_len as usize)
    }

    /// Parses and validates a whole file image (`bytes` is the complete file).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Header, LoadError> {
        let file_len = bytes.len() as u64;
        let prefix: [u8; 8] =
            bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or(LoadError::TooShort {
                    path: path.to_owned(),
                    len: file_len,
                })?;
        let n = Self::json_len(path, prefix, file_len)?;
        Self::from_json(path, &bytes[8..8 + n], file_len)
    }

    /// Validates the header JSON of a file of `file_len` bytes (JSON length = `json.len()`).
    pub fn from_json(path: &Path, json: &[u8], file_len: u64) -> Result<Header, LoadError> {
        let raw: RawHeader =
            serde_json::from_slice(json).map_err(|e| LoadError::InvalidHeader {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let data_start = 8 + json.len();
        let data_len = usize::try_from(file_len - data_start as u64).map_err(|_| {
            LoadError::InvalidHeader {
                path: path.to_owned(),
                message: "data section larger than the address space".into(),
            }
        })?;
        validate(path.to_owned(), raw, data_start, data_len)
    }

    /// Tensors in data-section order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The `__metadata__` string map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Absolute file offset where the data section starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Length of the data section in bytes.
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// File length in bytes this header describes.
    pub fn file_len(&self) -> usize {
        self.data_start + self.data_len
    }
}

fn validate(
    path: PathBuf,
    raw: RawHeader,
    data_start: usize,
    data_len: usize,
) -> Result<Header, LoadError> {
    let mut metadata = BTreeMap::new();
    if let Some(entries) = raw.metadata {
        for (k, v) in entries {
            if metadata.insert(k.clone(), v).is_some() {
                return Err(LoadError::DuplicateMetadataKey { path, key: k });
            }
        }
    }
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    let mut by_name = HashMap::with_capacity(raw.tensors.len());
    for (name, entry) in raw.tensors {
        if by_name.contains_key(&name) {
            return Err(LoadError::DuplicateTensor { path, tensor: name });
        }
        let info = validate_entry(&path, name, entry, data_len)?;
        by_name.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }
    // Sort by (begin, end) so zero-sized tensors sit before the tensor that shares their offset.
    tensors.sort_by_key(|t| t.data_offsets);
    let mut cursor = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        let (begin, end) = t.data_offsets;
        if begin < cursor {
            // cursor > 0 here, so a previous tensor exists; it is the one ending at cursor.
            let prev = &tensors[i - 1];
            return Err(LoadError::OverlappingData {
                path,
                tensor: t.name.clone(),
                begin: begin as u64,
                previous: prev.name.clone(),
                previous_end: prev.data_offsets.1 as u64,
            });
        }
        if begin > cursor {
            return Err(LoadError::NonContiguousData {
                path,
                tensor: t.name.clone(),
                begin: begin as u64,
                expected: cursor as u64,
            });
        }
        cursor = end;
    }
    if cursor != data_len {
        return Err(LoadError::DataLengthMismatch {
            path,
            covered: cursor as u64,
            data_len: data_len as u64,
        });
    }
    for (i, t) in tensors.iter().enumerate() {
        by_name.insert(t.name.clone(), i);
    }
    Ok(Header {
        tensors,
        by_name,
        metadata,
        data_start,
        data_len,
    })
}

fn validate_entry(
    path: &Path,
    name: String,
    entry: RawEntry,
    data_len: usize,
) -> Result<TensorInfo, LoadError> {
    let dtype: Dtype = match entry.dtype.parse() {
        Ok(d) => d,
        Err(_) => {
            return Err(LoadError::UnknownDtype {
                path: path.to_owned(),
                tensor: name,
                dtype: entry.dtype,
            })
        }
    };
    let [begin, end] = entry.data_offsets;
    if begin > end || end > data_len as u64 {
        return Err(LoadError::OffsetsOutOfBounds {
            path: path.to_owned(),
            tensor: name,
            begin,
            end,
            data_len: data_len as u64,
        });
    }
    let expected = entry
        .shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
    let actual = end - begin;
    if expected != Some(actual) {
        return Err(LoadError::ShapeMismatch {
            path: path.to_owned(),
            tensor: name,
            shape: entry.shape,
            dtype,
            expected: expected.map_or(ExpectedBytes::Overflow, ExpectedBytes::Bytes),
            actual,
        });
    }
    // The product fits in `actual <= data_len`, so every dimension fits in usize.
    let shape = entry.shape.iter().map(|&d| d as usize).collect();
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        data_offsets: (begin as usize, end as usize),
    })
}

/// The header as written, before validation. Entries keep their order and duplicates so that
/// validation can name the duplicate instead of silently keeping the last one.
struct RawHeader {
    tensors: Vec<(String, RawEntry)>,
    metadata: Option<Vec<(String, String)>>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawHeaderVisitor)
    }
}

struct RawHeaderVisitor;

impl<'de> Visitor<'de> for RawHeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut tensors = Vec::new();
        let mut metadata = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == METADATA_KEY {
                if metadata.is_some() {
                    return Err(de::Error::custom("`__metadata__` appears twice"));
                }
                metadata = Some(map.next_value::<OrderedPairs<String>>()?.0);
            } else {
                let entry = map
                    .next_value::<RawEntry>()
                    .map_err(|e| de::Error::custom(format_args!("tensor `{key}`: {e}")))?;
                tensors.push((key, entry));
            }
        }
        Ok(RawHeader { tensors, metadata })
    }
}

/// A JSON object read as key/value pairs in order, duplicates kept.
pub(crate) struct OrderedPairs<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedPairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = OrderedPairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    pairs.push((k, v));
                }
                Ok(OrderedPairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

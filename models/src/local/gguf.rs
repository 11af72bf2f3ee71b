//! A small, safe reader for GGUF (versions 2 and 3) headers: metadata key/values and tensor infos.
//!
//! Only the front of the file is read (header, metadata, tensor infos), through a buffered reader,
//! so opening a model costs a few megabytes of memory whatever its size. Tensor data is not read;
//! the reader only checks that every tensor lies inside the file, which catches a truncated
//! download before inference tries to map it.
//!
//! Every length read from the file is checked against the bytes left before anything is allocated,
//! so a corrupt file gets a [`GgufError::Corrupt`], never a huge allocation or a panic.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Tensor data alignment when `general.alignment` is absent (the GGUF default).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The only architecture the embedded backend implements (`general.architecture`).
pub const SUPPORTED_ARCHITECTURE: &str = "llama";

/// Most dimensions a ggml tensor can have.
const MAX_DIMS: u32 = 4;

/// What kind of problem a [`GgufError`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufErrorKind {
    /// The file does not exist.
    Missing,
    /// The file exists but could not be read.
    Io,
    /// The file does not start with the GGUF magic.
    NotGguf,
    /// A GGUF version this reader does not handle.
    UnsupportedVersion,
    /// The file ends early or holds impossible values.
    Corrupt,
    /// `general.architecture` is not one Kiln can run.
    UnsupportedArchitecture,
    /// A metadata key the caller needs is absent or has another type.
    Metadata,
}

/// Why a GGUF file could not be read. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error(
        "model file {} does not exist: run `ops/setup model` to install the default model, \
         or give the path of an existing GGUF file",
        path.display()
    )]
    Missing { path: PathBuf },
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not a GGUF file: it starts with {found:02x?}, expected the magic `GGUF`",
        path.display()
    )]
    NotGguf { path: PathBuf, found: Vec<u8> },
    #[error(
        "{}: GGUF version {version} is not supported (this reader handles versions 2 and 3)",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{} is truncated or corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{}: architecture `{found}` is not supported (Kiln's embedded backend runs `{SUPPORTED_ARCHITECTURE}` models)",
        path.display()
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error("{}: metadata key `{key}` {problem}", path.display())]
    Metadata {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl GgufError {
    pub fn kind(&self) -> GgufErrorKind {
        match self {
            GgufError::Missing { .. } => GgufErrorKind::Missing,
            GgufError::Io { .. } => GgufErrorKind::Io,
            GgufError::NotGguf { .. } => GgufErrorKind::NotGguf,
            GgufError::UnsupportedVersion { .. } => GgufErrorKind::UnsupportedVersion,
            GgufError::Corrupt { .. } => GgufErrorKind::Corrupt,
            GgufError::UnsupportedArchitecture { .. } => GgufErrorKind::UnsupportedArchitecture,
            GgufError::Metadata { .. } => GgufErrorKind::Metadata,
        }
    }
}

/// The type of a metadata value, as numbered in the GGUF format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl GgufValueType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// Fewest bytes one value of this type occupies (a string is at least its length prefix).
    fn min_size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            // element type (4) + count (8)
            Self::Array => 12,
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Array => "array",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
        };
        f.write_str(name)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(GgufArray),
}

impl GgufValue {
    pub fn value_type(&self) -> GgufValueType {
        match self {
            Self::U8(_) => GgufValueType::U8,
            Self::I8(_) => GgufValueType::I8,
            Self::U16(_) => GgufValueType::U16,
            Self::I16(_) => GgufValueType::I16,
            Self::U32(_) => GgufValueType::U32,
            Self::I32(_) => GgufValueType::I32,
            Self::U64(_) => GgufValueType::U64,
            Self::I64(_) => GgufValueType::I64,
            Self::F32(_) => GgufValueType::F32,
            Self::F64(_) => GgufValueType::F64,
            Self::Bool(_) => GgufValueType::Bool,
            Self::String(_) => GgufValueType::String,
            Self::Array(_) => GgufValueType::Array,
        }
    }

    /// The value as an unsigned integer, for any integer type holding a non-negative value (writers
    /// disagree on which integer type a token id or a length gets).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            Self::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A metadata array, stored by element type so a 50k-entry vocabulary is one `Vec<String>`.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<GgufArray>),
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn element_type(&self) -> GgufValueType {
        match self {
            Self::U8(_) => GgufValueType::U8,
            Self::I8(_) => GgufValueType::I8,
            Self::U16(_) => GgufValueType::U16,
            Self::I16(_) => GgufValueType::I16,
            Self::U32(_) => GgufValueType::U32,
            Self::I32(_) => GgufValueType::I32,
            Self::U64(_) => GgufValueType::U64,
            Self::I64(_) => GgufValueType::I64,
            Self::F32(_) => GgufValueType::F32,
            Self::F64(_) => GgufValueType::F64,
            Self::Bool(_) => GgufValueType::Bool,
            Self::String(_) => GgufValueType::String,
            Self::Array(_) => GgufValueType::Array,
        }
    }
}

/// A ggml tensor element type, by its GGUF number. Unknown numbers are kept (newer quantizations
/// appear often); only their byte size is then unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q8_1: GgmlType = GgmlType(9);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const Q8_K: GgmlType = GgmlType(15);
    pub const I8: GgmlType = GgmlType(24);
    pub const I16: GgmlType = GgmlType(25);
    pub const I32: GgmlType = GgmlType(26);
    pub const I64: GgmlType = GgmlType(27);
    pub const F64: GgmlType = GgmlType(28);
    pub const BF16: GgmlType = GgmlType(30);

    /// `(elements per block, bytes per block)`, for the types whose layout this reader knows.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q8_1 => (32, 36),
            Self::Q2_K => (256, 84),
            Self::Q3_K => (256, 110),
            Self::Q4_K => (256, 144),
            Self::Q5_K => (256, 176),
            Self::Q6_K => (256, 210),
            Self::Q8_K => (256, 292),
            Self::I8 => (1, 1),
            Self::I16 => (1, 2),
            Self::I32 => (1, 4),
            Self::I64 | Self::F64 => (1, 8),
            _ => return None,
        })
    }

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q8_1 => "Q8_1",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
            Self::I8 => "I8",
            Self::I16 => "I16",
            Self::I32 => "I32",
            Self::I64 => "I64",
            Self::F64 => "F64",
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ggml type {}", self.0),
        }
    }
}

/// Where one tensor is and what it holds. `offset` is relative to [`GgufFile::data_offset`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub offset: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of tensor data, when the type's layout is known.
    pub fn byte_size(&self) -> Option<u64> {
        let (block, bytes) = self.ggml_type.block_layout()?;
        Some(self.element_count() / block * bytes)
    }
}

/// A GGUF file's header: metadata and tensor infos, without tensor data.
#[derive(Clone)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: HashMap<String, GgufValue>,
    /// Metadata keys in file order (the map loses it).
    key_order: Vec<String>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
    file_len: u64,
}

impl GgufFile {
    /// Reads the header of the GGUF file at `path`: metadata and tensor infos, not tensor data.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = File::open(path).map_err(|source| open_error(path, source))?;
        let file_len = file
            .metadata()
            .map_err(|source| GgufError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        // 1 MiB buffer: a vocabulary is hundreds of thousands of small reads.
        let reader = BufReader::with_capacity(1 << 20, file);
        Self::parse(reader, file_len, path)
    }

    /// Like [`GgufFile::open`], then checks `general.architecture` is `llama`, the only one the
    /// embedded backend runs.
    pub fn open_llama(path: &Path) -> Result<GgufFile, GgufError> {
        let file = Self::open(path)?;
        file.require_architecture(SUPPORTED_ARCHITECTURE)?;
        Ok(file)
    }

    /// Parses a GGUF header from `reader`, which yields a file of `file_len` bytes; `path` only
    /// names the source in errors.
    pub fn parse(reader: impl Read, file_len: u64, path: &Path) -> Result<GgufFile, GgufError> {
        let mut input = Input {
            reader,
            pos: 0,
            len: file_len,
            path,
        };
        let header = read_header(&mut input)?;
        let mut metadata = HashMap::with_capacity(header.kv_count as usize);
        let mut key_order = Vec::with_capacity(header.kv_count as usize);
        for _ in 0..header.kv_count {
            let key = input.read_string("a metadata key")?;
            let value = read_value(&mut input, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(input.corrupt(format!("metadata key `{key}` appears twice")));
            }
            key_order.push(key);
        }
        let mut tensors = Vec::with_capacity(header.tensor_count as usize);
        for _ in 0..header.tensor_count {
            tensors.push(read_tensor_info(&mut input)?);
        }
        let alignment = alignment_of(&metadata, path)?;
        let data_offset = input.pos.next_multiple_of(alignment);
        let file = GgufFile {
            path: path.to_path_buf(),
            version: header.version,
            metadata,
            key_order,
            tensors,
            data_offset,
            file_len,
        };
        file.check_tensor_bounds(alignment)?;
        tracing::debug!(
            path = %path.display(),
            version = file.version,
            keys = file.key_order.len(),
            tensors = file.tensors.len(),
            "read gguf header"
        );
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.key_order.iter().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|tensor| tensor.name == name)
    }

    /// Absolute file offset where tensor data starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }

    /// Fails with [`GgufError::UnsupportedArchitecture`] unless `general.architecture` is
    /// `expected`.
    pub fn require_architecture(&self, expected: &str) -> Result<(), GgufError> {
        let found = self.architecture()?;
        if found == expected {
            return Ok(());
        }
        Err(GgufError::UnsupportedArchitecture {
            path: self.path.clone(),
            found: found.to_string(),
        })
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", value))
    }

    /// An integer value that fits in `u32` (token ids, counts).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let value = self.require(key)?;
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.wrong_type(key, "an unsigned 32-bit integer", value))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let value = self.require(key)?;
        value
            .as_bool()
            .ok_or_else(|| self.wrong_type(key, "a bool", value))
    }

    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let value = self.require(key)?;
        value
            .as_f64()
            .ok_or_else(|| self.wrong_type(key, "a float", value))
    }

    pub fn get_string_array(&self, key: &str) -> Result<&[String], GgufError> {
        let value = self.require(key)?;
        match value.as_array() {
            Some(GgufArray::String(items)) => Ok(items),
            _ => Err(self.wrong_type(key, "an array of strings", value)),
        }
    }

    /// An integer array as `i32` values (token types are `i32` in llama.cpp's files, but other
    /// writers use other integer widths).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let value = self.require(key)?;
        let converted = match value.as_array() {
            Some(GgufArray::I32(items)) => Some(items.clone()),
            Some(GgufArray::U8(items)) => Some(items.iter().map(|&v| v.into()).collect()),
            Some(GgufArray::I8(items)) => Some(items.iter().map(|&v| v.into()).collect()),
            Some(GgufArray::U16(items)) => Some(items.iter().map(|&v| v.into()).collect()),
            Some(GgufArray::I16(items)) => Some(items.iter().map(|&v| v.into()).collect()),
            Some(GgufArray::U32(items)) => items.iter().map(|&v| i32::try_from(v).ok()).collect(),
            _ => None,
        };
        converted.ok_or_else(|| self.wrong_type(key, "an array of 32-bit integers", value))
    }

    fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            problem: "is missing".to_string(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &GgufValue) -> GgufError {
        let found = match found {
            GgufValue::Array(items) => format!("an array of {}", items.element_type()),
            other => other.value_type().to_string(),
        };
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            problem: format!("should be {expected}, found {found}"),
        }
    }

    fn check_tensor_bounds(&self, alignment: u64) -> Result<(), GgufError> {
        for tensor in &self.tensors {
            if tensor.offset % alignment != 0 {
                return Err(self.corrupt(format!(
                    "tensor `{}` starts at offset {}, which is not a multiple of the alignment {alignment}",
                    tensor.name, tensor.offset
                )));
            }
            let Some(size) = tensor.byte_size() else {
                continue;
            };
            let end = self
                .data_offset
                .checked_add(tensor.offset)
                .and_then(|start| start.checked_add(size));
            if end.is_none_or(|end| end > self.file_len) {
                return Err(self.corrupt(format!(
                    "tensor `{}` ({} bytes at data offset {}) extends past the end of the file \
                     ({} bytes); the file is probably truncated",
                    tensor.name, size, tensor.offset, self.file_len
                )));
            }
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// A summary: the metadata holds whole vocabularies.
impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("keys", &self.key_order.len())
            .field("tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("file_len", &self.file_len)
            .finish_non_exhaustive()
    }
}

fn open_error(path: &Path, source: std::io::Error) -> GgufError {
    if source.kind() == std::io::ErrorKind::NotFound {
        return GgufError::Missing {
            path: path.to_path_buf(),
        };
    }
    GgufError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn alignment_of(metadata: &HashMap<String, GgufValue>, path: &Path) -> Result<u64, GgufError> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64() {
        Some(alignment) if alignment.is_power_of_two() => Ok(alignment),
        _ => Err(GgufError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("`general.alignment` is {value:?}, expected a power of two"),
        }),
    }
}

struct Header {
    version: u32,
    tensor_count: u64,
    kv_count: u64,
}

fn read_header<R: Read>(input: &mut Input<'_, R>) -> Result<Header, GgufError> {
    let mut magic = [0u8; 4];
    let available = input.len.min(4) as usize;
    input.read_exact(&mut magic[..available], "the magic")?;
    if available < 4 || magic != GGUF_MAGIC {
        return Err(GgufError::NotGguf {
            path: input.path.to_path_buf(),
            found: magic[..available].to_vec(),
        });
    }
    let version = input.read_u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: input.path.to_path_buf(),
            version,
        });
    }
    let tensor_count = input.read_u64("the tensor count")?;
    let kv_count = input.read_u64("the metadata count")?;
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at least
    // 8 + 4 + 4 + 8: counts beyond that cannot fit in the file.
    input.check_room(kv_count, 13, "metadata entries")?;
    input.check_room(tensor_count, 24, "tensor infos")?;
    Ok(Header {
        version,
        tensor_count,
        kv_count,
    })
}

fn read_value<R: Read>(input: &mut Input<'_, R>, key: &str) -> Result<GgufValue, GgufError> {
    let value_type = read_value_type(input, key)?;
    read_typed_value(input, key, value_type)
}

fn read_value_type<R: Read>(
    input: &mut Input<'_, R>,
    key: &str,
) -> Result<GgufValueType, GgufError> {
    let id = input.read_u32("a value type")?;
    GgufValueType::from_id(id)
        .ok_or_else(|| input.corrupt(format!("metadata key `{key}` has unknown value type {id}")))
}

fn read_typed_value<R: Read>(
    input: &mut Input<'_, R>,
    key: &str,
    value_type: GgufValueType,
) -> Result<GgufValue, GgufError> {
    let what = "a metadata value";
    Ok(match value_type {
        GgufValueType::U8 => GgufValue::U8(input.read_u8(what)?),
        GgufValueType::I8 => GgufValue::I8(input.read_u8(what)? as i8),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(input.read_array(what)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(input.read_array(what)?)),
        GgufValueType::U32 => GgufValue::U32(input.read_u32(what)?),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(input.read_array(what)?)),
        GgufValueType::U64 => GgufValue::U64(input.read_u64(what)?),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(input.read_array(what)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(input.read_array(what)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(input.read_array(what)?)),
        GgufValueType::Bool => GgufValue::Bool(read_bool(input, key)?),
        GgufValueType::String => GgufValue::String(input.read_string(what)?),
        GgufValueType::Array => GgufValue::Array(read_array(input, key, 0)?),
    })
}

fn read_bool<R: Read>(input: &mut Input<'_, R>, key: &str) -> Result<bool, GgufError> {
    match input.read_u8("a bool")? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(input.corrupt(format!(
            "metadata key `{key}` holds bool byte {other}, expected 0 or 1"
        ))),
    }
}

/// Nested arrays deeper than this are refused (no real file nests at all; this bounds recursion).
const MAX_ARRAY_NESTING: usize = 8;

fn read_array<R: Read>(
    input: &mut Input<'_, R>,
    key: &str,
    depth: usize,
) -> Result<GgufArray, GgufError> {
    if depth >= MAX_ARRAY_NESTING {
        return Err(input.corrupt(format!(
            "metadata key `{key}` nests arrays more than {MAX_ARRAY_NESTING} deep"
        )));
    }
    let element_type = read_value_type(input, key)?;
    let count = input.read_u64("an array length")?;
    input.check_room(count, element_type.min_size(), "array elements")?;
    let count = count as usize;
    let what = "an array element";
    Ok(match element_type {
        GgufValueType::U8 => GgufArray::U8(input.read_vec(count, what)?),
        GgufValueType::I8 => GgufArray::I8(
            input
                .read_vec(count, what)?
                .into_iter()
                .map(|b| b as i8)
                .collect(),
        ),
        GgufValueType::U16 => GgufArray::U16(read_numbers(input, count, u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(read_numbers(input, count, i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(read_numbers(input, count, u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(read_numbers(input, count, i32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(read_numbers(input, count, u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(read_numbers(input, count, i64::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(read_numbers(input, count, f32::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(read_numbers(input, count, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(read_bool(input, key)?);
            }
            GgufArray::Bool(items)
        }
        GgufValueType::String => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(input.read_string(what)?);
            }
            GgufArray::String(items)
        }
        GgufValueType::Array => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(read_array(input, key, depth + 1)?);
            }
            GgufArray::Array(items)
        }
    })
}

/// Reads `count` fixed-size little-endian numbers in one read.
fn read_numbers<R: Read, T, const N: usize>(
    input: &mut Input<'_, R>,
    count: usize,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let bytes = input.read_vec(count * N, "array elements")?;
    Ok(bytes
        .chunks_exact(N)
        .map(|chunk| decode(chunk.try_into().expect("chunks_exact yields N bytes")))
        .collect())
}

fn read_tensor_info<R: Read>(input: &mut Input<'_, R>) -> Result<TensorInfo, GgufError> {
    let name = input.read_string("a tensor name")?;
    let n_dims = input.read_u32("a tensor's dimension count")?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(input.corrupt(format!(
            "tensor `{name}` has {n_dims} dimensions, expected 1 to {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(input.read_u64("a tensor dimension")?);
    }
    if dims
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .is_none()
    {
        return Err(input.corrupt(format!(
            "tensor `{name}` has dimensions {dims:?}, whose product overflows"
        )));
    }
    let ggml_type = GgmlType(input.read_u32("a tensor type")?);
    let block = ggml_type.block_layout().map_or(1, |(block, _)| block);
    if dims[0] % block != 0 {
        return Err(input.corrupt(format!(
            "tensor `{name}` of type {ggml_type} has a first dimension of {}, not a multiple of its block size {block}",
            dims[0]
        )));
    }
    let offset = input.read_u64("a tensor offset")?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
    })
}

/// A reader that knows its position and the file's length, so every read and every length can be
/// checked against what is left.
struct Input<'a, R> {
    reader: R,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read> Input<'_, R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Fails unless `count` items of at least `min_size` bytes each can fit in what is left.
    fn check_room(&self, count: u64, min_size: u64, what: &str) -> Result<(), GgufError> {
        let needed = count.checked_mul(min_size);
        if needed.is_some_and(|needed| needed <= self.remaining()) {
            return Ok(());
        }
        Err(self.corrupt(format!(
            "{count} {what} cannot fit in the {} bytes left at offset {}",
            self.remaining(),
            self.pos
        )))
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        if (buf.len() as u64) > self.remaining() {
            return Err(self.truncated(what));
        }
        self.reader.read_exact(buf).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated(what)
            } else {
                GgufError::Io {
                    path: self.path.to_path_buf(),
                    source,
                }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn read_array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf, what)?;
        Ok(buf)
    }

    fn read_vec(&mut self, len: usize, what: &str) -> Result<Vec<u8>, GgufError> {
        if len as u64 > self.remaining() {
            return Err(self.truncated(what));
        }
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf, what)?;
        Ok(buf)
    }

    fn read_u8(&mut self, what: &str) -> Result<u8, GgufError> {
        Ok(self.read_array::<1>(what)?[0])
    }

    fn read_u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.read_array(what)?))
    }

    fn read_u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.read_array(what)?))
    }

    fn read_string(&mut self, what: &str) -> Result<String, GgufError> {
        let start = self.pos;
        let len = self.read_u64(what)?;
        if len > self.remaining() {
            return Err(self.corrupt(format!(
                "{what} at offset {start} claims {len} bytes, but only {} are left",
                self.remaining()
            )));
        }
        let bytes = self.read_vec(len as usize, what)?;
        String::from_utf8(bytes)
            .map_err(|_| self.corrupt(format!("{what} at offset {start} is not valid UTF-8")))
    }

    fn truncated(&self, what: &str) -> GgufError {
        self.corrupt(format!(
            "the file ends at byte {} while reading {what} at offset {}",
            self.len, self.pos
        ))
    }

    fn corrupt(&self, detail: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds GGUF bytes by hand, so the tests exercise the format, not a second implementation.
    #[derive(Default)]
    struct Builder {
        kvs: Vec<u8>,
        kv_count: u64,
        tensors: Vec<u8>,
        tensor_count: u64,
    }

    fn string_bytes(text: &str) -> Vec<u8> {
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    impl Builder {
        fn kv(mut self, key: &str, type_id: u32, payload: &[u8]) -> Self {
            self.kvs.extend(string_bytes(key));
            self.kvs.extend(type_id.to_le_bytes());
            self.kvs.extend_from_slice(payload);
            self.kv_count += 1;
            self
        }

        fn string(self, key: &str, value: &str) -> Self {
            self.kv(key, 8, &string_bytes(value))
        }

        fn string_array(self, key: &str, values: &[&str]) -> Self {
            let mut payload = 8u32.to_le_bytes().to_vec();
            payload.extend((values.len() as u64).to_le_bytes());
            for value in values {
                payload.extend(string_bytes(value));
            }
            self.kv(key, 9, &payload)
        }

        fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
            self.tensors.extend(string_bytes(name));
            self.tensors.extend((dims.len() as u32).to_le_bytes());
            for dim in dims {
                self.tensors.extend(dim.to_le_bytes());
            }
            self.tensors.extend(ggml_type.to_le_bytes());
            self.tensors.extend(offset.to_le_bytes());
            self.tensor_count += 1;
            self
        }

        /// The file bytes with `data_len` bytes of (zero) tensor data after the aligned header.
        fn build(&self, version: u32, data_len: usize) -> Vec<u8> {
            let mut out = GGUF_MAGIC.to_vec();
            out.extend(version.to_le_bytes());
            out.extend(self.tensor_count.to_le_bytes());
            out.extend(self.kv_count.to_le_bytes());
            out.extend_from_slice(&self.kvs);
            out.extend_from_slice(&self.tensors);
            let aligned = out.len().next_multiple_of(DEFAULT_ALIGNMENT as usize);
            out.resize(aligned + data_len, 0);
            out
        }
    }

    fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        GgufFile::parse(bytes, bytes.len() as u64, Path::new("test.gguf"))
    }

    fn sample() -> Builder {
        Builder::default()
            .string("general.architecture", "llama")
            .kv("llama.block_count", 4, &30u32.to_le_bytes())
            .kv("llama.rope.freq_base", 6, &100000f32.to_le_bytes())
            .kv("tokenizer.ggml.add_bos_token", 7, &[0])
            .kv("big", 10, &u64::MAX.to_le_bytes())
            .kv("neg", 11, &(-5i64).to_le_bytes())
            .string_array("tokenizer.ggml.tokens", &["<s>", "a", "Ġb", "日本"])
            .tensor("token_embd.weight", &[64, 2], 0, 0)
            .tensor("blk.0.attn_q.weight", &[64, 4], 3, 512)
    }

    #[test]
    fn reads_every_metadata_type_and_tensor_infos() {
        // F32 [64, 2] = 512 bytes at 0; Q4_1 [64, 4] = 8 blocks of 20 bytes = 160 bytes at 512.
        let bytes = sample().build(3, 512 + 160);
        let file = parse(&bytes).unwrap();
        assert_eq!(file.version(), 3);
        assert_eq!(file.architecture().unwrap(), "llama");
        assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(file.get_f64("llama.rope.freq_base").unwrap(), 100000.0);
        assert!(!file.get_bool("tokenizer.ggml.add_bos_token").unwrap());
        assert_eq!(file.get("big").unwrap().as_u64(), Some(u64::MAX));
        assert_eq!(file.get("neg"), Some(&GgufValue::I64(-5)));
        assert_eq!(
            file.get_string_array("tokenizer.ggml.tokens").unwrap(),
            ["<s>", "a", "Ġb", "日本"]
        );
        assert_eq!(
            file.keys().collect::<Vec<_>>()[..2],
            ["general.architecture", "llama.block_count"]
        );
        let q = file.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.dims, [64, 4]);
        assert_eq!(q.ggml_type, GgmlType::Q4_1);
        assert_eq!(q.byte_size(), Some(160));
        assert_eq!(file.data_offset() % DEFAULT_ALIGNMENT, 0);
        assert_eq!(file.data_offset() + 512 + 160, bytes.len() as u64);
    }

    #[test]
    fn version_2_is_read_like_version_3() {
        let bytes = sample().build(2, 512 + 160);
        assert_eq!(parse(&bytes).unwrap().version(), 2);
    }

    #[test]
    fn bad_magic_is_not_gguf() {
        let mut bytes = sample().build(3, 672);
        bytes[..4].copy_from_slice(b"PK\x03\x04");
        let error = parse(&bytes).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::NotGguf);
        assert!(error.to_string().contains("test.gguf"), "{error}");
        assert_eq!(parse(b"GG").unwrap_err().kind(), GgufErrorKind::NotGguf);
    }

    #[test]
    fn version_1_and_big_endian_files_are_unsupported() {
        let error = parse(&sample().build(1, 672)).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::UnsupportedVersion);
        assert!(error.to_string().contains("version 1"), "{error}");
        // A big-endian v3 file reads as version 0x03000000 here.
        let error = parse(&sample().build(3u32.swap_bytes(), 672)).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::UnsupportedVersion);
    }

    #[test]
    fn every_truncation_of_the_header_is_corrupt_not_a_panic() {
        let bytes = sample().build(3, 672);
        let header_len = bytes.len() - 672;
        for cut in 4..header_len {
            let error = parse(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(
                    error.kind(),
                    GgufErrorKind::Corrupt | GgufErrorKind::UnsupportedVersion
                ),
                "cut at {cut}: {error}"
            );
        }
    }

    #[test]
    fn truncated_tensor_data_is_corrupt_and_names_the_tensor() {
        let bytes = sample().build(3, 512 + 100);
        let error = parse(&bytes).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Corrupt);
        assert!(error.to_string().contains("blk.0.attn_q.weight"), "{error}");
        assert!(error.to_string().contains("truncated"), "{error}");
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        let builder = Builder::default().kv("k", 8, &u64::MAX.to_le_bytes());
        assert_eq!(
            parse(&builder.build(3, 0)).unwrap_err().kind(),
            GgufErrorKind::Corrupt
        );
        let mut array = 8u32.to_le_bytes().to_vec();
        array.extend((1u64 << 60).to_le_bytes());
        let builder = Builder::default().kv("k", 9, &array);
        assert_eq!(
            parse(&builder.build(3, 0)).unwrap_err().kind(),
            GgufErrorKind::Corrupt
        );
        let mut bytes = GGUF_MAGIC.to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        assert_eq!(parse(&bytes).unwrap_err().kind(), GgufErrorKind::Corrupt);
    }

    #[test]
    fn unknown_value_type_and_bad_bool_are_corrupt() {
        let error = parse(&Builder::default().kv("k", 13, &[0; 8]).build(3, 0)).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Corrupt);
        assert!(
            error.to_string().contains("unknown value type 13"),
            "{error}"
        );
        let error = parse(&Builder::default().kv("k", 7, &[2]).build(3, 0)).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Corrupt);
    }

    #[test]
    fn invalid_utf8_strings_are_corrupt() {
        let mut payload = 2u64.to_le_bytes().to_vec();
        payload.extend([0xff, 0xfe]);
        let error = parse(&Builder::default().kv("k", 8, &payload).build(3, 0)).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Corrupt);
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }

    #[test]
    fn misaligned_or_overflowing_tensors_are_corrupt() {
        let misaligned = Builder::default().tensor("t", &[8], 0, 4).build(3, 64);
        assert_eq!(
            parse(&misaligned).unwrap_err().kind(),
            GgufErrorKind::Corrupt
        );
        let overflow = Builder::default()
            .tensor("t", &[u64::MAX, 2], 0, 0)
            .build(3, 64);
        assert_eq!(parse(&overflow).unwrap_err().kind(), GgufErrorKind::Corrupt);
        let five_dims = Builder::default()
            .tensor("t", &[1, 1, 1, 1, 1], 0, 0)
            .build(3, 64);
        assert_eq!(
            parse(&five_dims).unwrap_err().kind(),
            GgufErrorKind::Corrupt
        );
        let partial_block = Builder::default().tensor("t", &[31], 3, 0).build(3, 64);
        assert_eq!(
            parse(&partial_block).unwrap_err().kind(),
            GgufErrorKind::Corrupt
        );
    }

    #[test]
    fn unknown_tensor_types_are_kept_without_a_size() {
        let bytes = Builder::default().tensor("t", &[256], 99, 0).build(3, 0);
        let file = parse(&bytes).unwrap();
        assert_eq!(file.tensors()[0].ggml_type, GgmlType(99));
        assert_eq!(file.tensors()[0].byte_size(), None);
    }

    #[test]
    fn wrong_architecture_names_what_was_found() {
        let bytes = Builder::default()
            .string("general.architecture", "qwen2")
            .build(3, 0);
        let file = parse(&bytes).unwrap();
        let error = file.require_architecture("llama").unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::UnsupportedArchitecture);
        assert!(error.to_string().contains("`qwen2`"), "{error}");
    }

    #[test]
    fn typed_getters_report_missing_keys_and_wrong_types() {
        let file = parse(&sample().build(3, 672)).unwrap();
        let error = file.get_str("general.name").unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Metadata);
        assert!(error.to_string().contains("is missing"), "{error}");
        let error = file.get_u32("general.architecture").unwrap_err();
        assert!(error.to_string().contains("found string"), "{error}");
        let error = file.get_u32("neg").unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Metadata);
        let error = file.get_string_array("llama.block_count").unwrap_err();
        assert!(error.to_string().contains("an array of strings"), "{error}");
    }

    #[test]
    fn missing_file_names_the_path_and_the_setup_command() {
        let error = GgufFile::open(Path::new("/nonexistent/kiln/model.gguf")).unwrap_err();
        assert_eq!(error.kind(), GgufErrorKind::Missing);
        let message = error.to_string();
        assert!(
            message.contains("/nonexistent/kiln/model.gguf"),
            "{message}"
        );
        assert!(message.contains("ops/setup model"), "{message}");
    }
}

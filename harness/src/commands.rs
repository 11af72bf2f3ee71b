//! What `kiln harness validate|show|diff FILE…` prints, as library functions (the CLI only
//! formats and sets the exit code).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::diff::{HarnessDiff, diff};
use crate::error::HarnessError;
use crate::harness::Harness;

/// A harness file that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidReport {
    pub file: PathBuf,
    pub name: String,
    pub hash: String,
    pub processors: usize,
}

impl fmt::Display for ValidReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OK {}: harness `{}` {} ({} processors)",
            self.file.display(),
            self.name,
            self.hash,
            self.processors
        )
    }
}

/// `validate`: the hash of a valid file, or the error naming file, position, processor and field.
pub fn validate_file(path: &Path) -> Result<ValidReport, HarnessError> {
    let harness = Harness::load(path)?;
    Ok(ValidReport {
        file: path.to_path_buf(),
        name: harness.name().to_string(),
        hash: harness.hash().to_string(),
        processors: harness.processors().len(),
    })
}

/// `show`: the canonical TOML, headed by the name and hash as comments.
pub fn show_file(path: &Path) -> Result<String, HarnessError> {
    let harness = Harness::load(path)?;
    show(&harness)
}

/// The canonical TOML of a harness headed by its hash.
pub fn show(harness: &Harness) -> Result<String, HarnessError> {
    Ok(format!(
        "# harness `{}`\n# hash {}\n{}",
        harness.name(),
        harness.hash(),
        harness.canonical_toml()?
    ))
}

/// `diff`: processor-level differences from `before` to `after`.
pub fn diff_files(before: &Path, after: &Path) -> Result<HarnessDiff, HarnessError> {
    Ok(diff(&Harness::load(before)?, &Harness::load(after)?))
}

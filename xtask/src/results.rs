//! The results file the guest writes and the host reads.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "results.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub passed: bool,
    /// The error chain when failed.
    pub detail: String,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Results {
    /// `uname -r` in the guest.
    pub kernel: String,
    pub outcomes: Vec<Outcome>,
}

impl Results {
    pub fn counts(&self) -> (usize, usize) {
        let passed = self.outcomes.iter().filter(|o| o.passed).count();
        (passed, self.outcomes.len() - passed)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
    }
}

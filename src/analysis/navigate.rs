//! Go to definition, references and rename.

use super::{SourceFile, World};
use std::ops::Range;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct Location {
    /// None: this file.
    pub path: Option<PathBuf>,
    pub range: Range<usize>,
}

pub fn definition(file: &SourceFile, offset: usize, world: &dyn World) -> Vec<Location> {
    let _ = (file, offset, world);
    Vec::new()
}

/// Every occurrence of the local at `offset`, including its declaration.
pub fn references(file: &SourceFile, offset: usize) -> Vec<Range<usize>> {
    let _ = (file, offset);
    Vec::new()
}

/// The ranges to rewrite to rename the local at `offset`; None when it is not a local.
pub fn rename(file: &SourceFile, offset: usize) -> Option<Vec<Range<usize>>> {
    let _ = (file, offset);
    None
}

//! Hover text at a byte offset.

use super::{SourceFile, World};
use std::ops::Range;

#[derive(Clone, Debug, PartialEq)]
pub struct Hover {
    pub range: Range<usize>,
    pub markdown: String,
}

pub fn hover(file: &SourceFile, offset: usize, world: &dyn World) -> Option<Hover> {
    let _ = (file, offset, world);
    None
}

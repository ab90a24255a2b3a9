//! Signature help inside a call's parentheses.

use super::{SourceFile, World};
use std::ops::Range;

#[derive(Clone, Debug, PartialEq)]
pub struct SignatureHelp {
    pub label: String,
    /// Each parameter's byte range in `label`.
    pub params: Vec<Range<usize>>,
    pub active_param: usize,
    pub documentation: Option<String>,
}

pub fn signature_help(file: &SourceFile, offset: usize, world: &dyn World) -> Option<SignatureHelp> {
    let _ = (file, offset, world);
    None
}

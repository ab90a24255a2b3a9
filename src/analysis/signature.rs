//! Signature help inside a call's parentheses: the standard library's signatures, user functions
//! (with their `---` docs) and live functions with known parameters; the active parameter is the
//! number of commas before the cursor (one more for a `:` call of a function taking `self`).

use super::model::{Call, Target, Value};
use super::resolve::{function, Resolver};
use super::{stdlib, SourceFile, World};
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
    let call = innermost_call(file, offset)?;
    let commas = call.commas.iter().filter(|&&c| c < offset).count();
    let r = Resolver { file, world };
    let (mut help, takes_self) = describe_callee(&r, call)?;
    help.active_param = commas + usize::from(call.method && takes_self);
    Some(help)
}

/// The innermost call whose parentheses contain `offset`.
fn innermost_call(file: &SourceFile, offset: usize) -> Option<&Call> {
    let text = file.text().as_bytes();
    file.model
        .calls
        .iter()
        .filter(|c| text.get(c.args.start) == Some(&b'('))
        .filter(|c| {
            let closed = c.args.end > c.args.start + 1 && text.get(c.args.end - 1) == Some(&b')');
            c.args.start < offset && (offset < c.args.end || (!closed && offset <= c.args.end))
        })
        .max_by_key(|c| c.args.start)
}

/// The help for a callee and whether its first parameter is an explicit `self` (for `:` calls).
fn describe_callee(r: &Resolver, call: &Call) -> Option<(SignatureHelp, bool)> {
    let Value::Path(target, path) = &call.callee else { return None };
    if let Target::Global(g) = target {
        let name = if path.is_empty() { g.clone() } else { format!("{g}.{}", path.join(".")) };
        if let Some(sig) = stdlib::signature(&name) {
            return Some((std_help(sig, &name), false));
        }
    }
    let (origin, value) = r.settle(None, call.callee.clone(), 0);
    if let Value::Function(fid) = value {
        let f = function(r.file, &origin, fid);
        let name =
            f.name.clone().unwrap_or_else(|| path.last().cloned().unwrap_or_else(|| "function".into()));
        let mut params = f.params.clone();
        if f.vararg {
            params.push("...".into());
        }
        let takes_self = !f.is_method && params.first().is_some_and(|p| p == "self");
        return Some((build(&name, &params, f.doc.clone()), takes_self));
    }
    if call.method && !path.is_empty() {
        let (_, owner) = r.settle(None, Value::Path(target.clone(), path[..path.len() - 1].to_vec()), 0);
        let name = format!("string.{}", path.last()?);
        if owner == Value::Str {
            return stdlib::signature(&name).map(|sig| (std_help(sig, &name), true));
        }
    }
    let Target::Global(g) = target else { return None };
    let live = r.live(g, path)?;
    let params = live.params.as_ref()?;
    let name = if path.is_empty() { g.clone() } else { format!("{g}.{}", path.join(".")) };
    Some((build(&name, params, None), params.first().is_some_and(|p| p == "self")))
}

fn std_help(sig: &str, name: &str) -> SignatureHelp {
    SignatureHelp {
        label: sig.to_string(),
        params: stdlib::signature_params(sig),
        active_param: 0,
        documentation: stdlib::doc(name).map(|d| d.split_once('\n').map_or("", |x| x.1).trim().to_string()),
    }
}

fn build(name: &str, params: &[String], doc: Option<String>) -> SignatureHelp {
    let mut label = format!("{name}(");
    let mut ranges = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            label.push_str(", ");
        }
        ranges.push(label.len()..label.len() + p.len());
        label.push_str(p);
    }
    label.push(')');
    SignatureHelp { label, params: ranges, active_param: 0, documentation: doc }
}

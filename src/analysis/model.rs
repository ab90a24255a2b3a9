//! What the parser learns about a file: declarations, name uses, functions, tables and field
//! definitions, all with byte ranges. Features (diagnostics, completion, ...) read only this.

use std::ops::Range;

pub type LocalId = usize;
pub type FuncId = usize;
pub type TableId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    Local,
    /// `local function f`: visible in its own body.
    LocalFunction,
    Param,
    /// The implicit `self` of `function t:m()`.
    SelfParam,
    ForVar,
}

#[derive(Clone, Debug)]
pub struct Local {
    pub name: String,
    pub decl: Range<usize>,
    pub kind: LocalKind,
    /// `const` or `close` when declared with an attribute.
    pub attrib: Option<String>,
    /// Where the name can be used: from after its declaration to the end of its block.
    pub visible: Range<usize>,
    /// What the declaration assigned (for hover, completion of fields, go to definition).
    pub value: Value,
    /// Reads, ignoring those from inside its own body for a recursive local function.
    pub reads: u32,
    /// Assignments after the declaration.
    pub writes: u32,
    /// Field stores through it (`x.f = v`).
    pub mutations: u32,
    /// Declared with no value (`local x`, or `b` in `local a, b = 1`).
    pub empty: bool,
    /// The name's range in the last assignment of a function literal to it (`function f() end`
    /// after `local f`): luacheck reports such a forward-declared function as an unused function.
    pub fn_assign: Option<Range<usize>>,
    /// The value comes after the first value of a multiple assignment from a call (`local a, b = f()`).
    pub secondary: bool,
}

/// The inferred value of an expression, as far as a single pass sees.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Unknown,
    Nil,
    Boolean,
    Number,
    Str,
    Table(TableId),
    Function(FuncId),
    /// `require("name")`.
    Require(String),
    /// The value of another name: a local or a global, with a field path (`a.b.c`).
    Path(Target, Vec<String>),
    /// The result of calling a path (`string.format(...)` is a string only if we knew; kept unknown).
    Call,
}

/// What a name in the text refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Local(LocalId),
    Global(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Decl,
    Read,
    Write,
    /// The base of an indexed assignment (`x.f = v`, `x[k] = v`, `function x.f()`).
    Mutate,
}

/// One occurrence of a name in code.
#[derive(Clone, Debug)]
pub struct NameUse {
    pub range: Range<usize>,
    pub target: Target,
    pub access: Access,
}

#[derive(Clone, Debug, Default)]
pub struct Function {
    /// `f`, `M.f`, `M:f` when declared with a name.
    pub name: Option<String>,
    pub params: Vec<String>,
    pub vararg: bool,
    pub is_method: bool,
    /// From `function` to `end`.
    pub range: Range<usize>,
    /// The name's range in the declaration, or the `function` keyword.
    pub selection: Range<usize>,
    /// `---` comment lines just above the declaration, without the dashes.
    pub doc: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub range: Range<usize>,
    pub fields: Vec<Field>,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub range: Range<usize>,
    pub value: Value,
}

/// `base.path.name = value` or `function base.path:name()`, with `base` a local or global.
#[derive(Clone, Debug)]
pub struct FieldStore {
    pub base: Target,
    pub path: Vec<String>,
    pub field: Field,
    pub is_method: bool,
}

/// `base.a.b` read in code (for go to definition on fields).
#[derive(Clone, Debug)]
pub struct FieldUse {
    pub base: Target,
    pub path: Vec<String>,
    pub range: Range<usize>,
}

/// A call's parentheses, for signature help.
#[derive(Clone, Debug)]
pub struct Call {
    pub callee: Value,
    pub method: bool,
    /// From `(` to `)` (or the end of the text when unclosed).
    pub args: Range<usize>,
    /// Offsets of the top-level commas between arguments.
    pub commas: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub locals: Vec<Local>,
    pub uses: Vec<NameUse>,
    pub functions: Vec<Function>,
    pub tables: Vec<Table>,
    pub stores: Vec<FieldStore>,
    pub field_uses: Vec<FieldUse>,
    pub calls: Vec<Call>,
    /// Assignments to globals: name, the name's range, the value.
    pub global_values: Vec<(String, Range<usize>, Value)>,
    /// What the chunk returns at top level (`return M`).
    pub returns: Option<Value>,
    /// Top-level local declarations and function statements, in order (for document symbols).
    pub top_level: Vec<TopItem>,
    pub first_error: Option<Range<usize>>,
    /// Every comment's range (doc comments, luacheck inline options).
    pub comments: Vec<Range<usize>>,
    /// Every string literal's range, quotes included (unfinished ones run to where they stop).
    pub strings: Vec<Range<usize>>,
}

#[derive(Clone, Debug)]
pub enum TopItem {
    Local(LocalId),
    Function(FuncId),
}

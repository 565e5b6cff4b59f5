//! The part of Python's pickle format that `torch.save` writes, read as data.
//!
//! A `torch.save` archive's `data.pkl` is a pickle program that rebuilds a
//! state dict (or one tensor): dicts, tuples, a few callables such as
//! `torch._utils._rebuild_tensor_v2`, and persistent ids that name a storage
//! entry of the archive. This module runs that program on a small stack
//! machine that never calls anything: every callable it knows becomes a data
//! value (a dict, a [`TensorRecord`]), every other one an opaque value.
//!
//! It exists, rather than burn-store's pickle reader, because that reader
//! hides where a tensor's bytes are (the storage key and offset live inside
//! a closure), so the file could not be checked before data was read, and
//! its loader zero-fills a storage shorter than the tensor's shape. Here the
//! result is the list of tensors with their storage key, offset, shape and
//! strides, which the archive layer checks against the zip entries.
//!
//! Hostile programs are bounded: every length is checked against the bytes
//! that are left before anything is allocated, values are shared (`Rc`), so
//! memo reuse cannot multiply memory, and the stack, the memo, copy-on-write
//! work and the final walk each have a fixed budget.

use std::collections::HashMap;
use std::rc::Rc;

/// Element types of torch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl TorchDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Whether the elements are floating point.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }

    /// The dtype of a storage class such as `torch.FloatStorage`.
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
}

impl std::fmt::Display for TorchDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F64 => "float64",
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::I16 => "int16",
            Self::I8 => "int8",
            Self::U8 => "uint8",
            Self::Bool => "bool",
        })
    }
}

/// One tensor as the pickle describes it: which storage holds its elements
/// and where. Nothing here has been checked against the archive yet.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRecord {
    /// The storage key: the entry `<archive>/data/<key>` holds its bytes.
    pub storage: String,
    /// `Err(class name)` for storage types this reader cannot decode.
    pub dtype: Result<TorchDtype, String>,
    /// Elements the storage declares.
    pub storage_numel: u64,
    /// First element of the tensor in its storage.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// In elements, one per dimension.
    pub stride: Vec<u64>,
}

/// A storage reference, the persistent id `('storage', cls, key, location, numel)`.
#[derive(Debug)]
struct Storage {
    key: String,
    dtype: Result<TorchDtype, String>,
    numel: u64,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    /// Python's bools are ints too.
    Int(i64),
    /// Floats never locate a tensor: their value is not kept.
    Float,
    Str(Rc<str>),
    /// Bytes objects: their contents never matter to a state dict.
    Bytes,
    /// A `module.name` reference (GLOBAL / STACK_GLOBAL).
    Global(Rc<(String, String)>),
    Tuple(Rc<Items<Value>>),
    List(Rc<Items<Value>>),
    /// Keys in insertion order; a later duplicate wins, as in Python.
    Dict(Rc<Items<(Value, Value)>>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRecord>),
    /// The result of a callable this reader does not model (a set, a numpy
    /// scalar, an optimizer class, ...): kept as a placeholder, never called.
    Opaque,
}

/// A container's values and how deeply values nest inside it.
#[derive(Debug, Clone)]
struct Items<T> {
    /// 1 + the deepest nesting of its values: bounded by [`MAX_NESTING`],
    /// since dropping a value recurses once per level.
    depth: usize,
    items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self {
            depth: 1,
            items: Vec::new(),
        }
    }
}

impl Value {
    /// Nesting depth: 0 for scalars, 1 + the deepest value for containers.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(c) | Value::List(c) => c.depth,
            Value::Dict(c) => c.depth,
            _ => 0,
        }
    }
}

/// Deepest nesting of values (real state dicts: under 10).
const MAX_NESTING: usize = 256;

/// Most values the stack may hold at once; `torch.save`'s pickler batches
/// dict items by 1,000, so real files stay far below.
const MAX_STACK: usize = 1 << 20;
/// Most memo entries; a state dict uses about ten per tensor.
const MAX_MEMO: usize = 1 << 22;
/// Most values copied by copy-on-write appends (a list shared through the
/// memo and then grown), which would otherwise be quadratic.
const MAX_COPY_WORK: usize = 1 << 26;
/// Deepest nesting of dicts walked for tensors, and of rebuild calls.
const MAX_DEPTH: usize = 64;
/// Most values visited while collecting the tensors of the result.
const MAX_WALK: usize = 1 << 24;

/// Runs a `data.pkl` program and returns its tensors: the entries of a
/// (possibly nested) dict, named by their keys joined with `.`, or one
/// tensor under the empty name when the pickle is a bare tensor.
pub fn read_tensors(bytes: &[u8]) -> Result<Vec<(String, TensorRecord)>, String> {
    let root = Machine::new(bytes).run()?;
    let mut out = Vec::new();
    match &root {
        Value::Tensor(t) => out.push((String::new(), (**t).clone())),
        Value::Dict(_) => {
            let mut budget = MAX_WALK;
            collect(&root, "", 0, &mut budget, &mut out)?;
        }
        _ => {
            return Err(
                "the pickle holds neither a tensor nor a dict of tensors (not a torch.save \
                 of a state dict or tensor)"
                    .into(),
            );
        }
    }
    Ok(out)
}

fn collect(
    value: &Value,
    prefix: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<(String, TensorRecord)>,
) -> Result<(), String> {
    let Value::Dict(items) = value else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(format!("dicts nested deeper than {MAX_DEPTH} levels"));
    }
    for (key, value) in &items.items {
        *budget = budget
            .checked_sub(1)
            .ok_or("the pickle's dicts hold too many values to walk")?;
        // Non-string keys (an optimizer's integer ids) name no tensor.
        let Value::Str(key) = key else { continue };
        let name = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Tensor(t) => out.push((name, (**t).clone())),
            Value::Dict(_) => collect(value, &name, depth + 1, budget, out)?,
            _ => {}
        }
    }
    Ok(())
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    copy_work: usize,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            copy_work: 0,
        }
    }

    fn err(&self, message: impl std::fmt::Display) -> String {
        format!("pickle byte {}: {message}", self.pos)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!(
                "a field of {n} bytes runs past the end of the pickle ({left} bytes left)"
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A newline-terminated text argument, without the newline.
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.bytes[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("a text argument has no terminating newline"));
        };
        let line = &rest[..end];
        self.pos += end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        std::str::from_utf8(line).map_err(|_| self.err("a text argument is not UTF-8"))
    }

    fn push(&mut self, value: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("more than {MAX_STACK} values on the stack")));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, String> {
        // A value below the last mark belongs to an enclosing frame.
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(self.err("pop across a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err("pop from an empty stack"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(at))
    }

    fn top(&self) -> Result<&Value, String> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(self.err("the top of the stack is a MARK"));
        }
        self.stack
            .last()
            .ok_or_else(|| self.err("the stack is empty"))
    }

    fn memo_put(&mut self, index: u32) -> Result<(), String> {
        let value = self.top()?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(self.err(format!("more than {MAX_MEMO} memo entries")));
        }
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), String> {
        let value = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.err(format!("memo entry {index} was never stored")))?;
        self.push(value)
    }

    /// A container of `items`, refused when it would nest too deeply.
    fn seq(&self, items: Vec<Value>) -> Result<Rc<Items<Value>>, String> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        self.check_depth(depth)?;
        Ok(Rc::new(Items { depth, items }))
    }

    fn check_depth(&self, depth: usize) -> Result<(), String> {
        if depth > MAX_NESTING {
            return Err(self.err(format!("values nested deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    /// Counts the copy a shared container's growth costs.
    fn charge_copy<T>(&mut self, container: &Rc<Items<T>>) -> Result<(), String> {
        if Rc::strong_count(container) > 1 {
            self.copy_work = self.copy_work.saturating_add(container.items.len());
            if self.copy_work > MAX_COPY_WORK {
                return Err(self.err("the pickle re-copies shared containers too often"));
            }
        }
        Ok(())
    }

    /// Adds key/value pairs to the dict on top of the stack.
    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        self.check_depth(depth)?;
        let dict = match self.stack.last_mut() {
            // Taken out so the stack's reference does not count as a share.
            Some(Value::Dict(dict)) => std::mem::take(dict),
            // Python would call the object's __setitem__; a placeholder has none.
            Some(Value::Opaque) => return Ok(()),
            _ => return Err(self.err("SETITEM(S) on a value that is not a dict")),
        };
        let mut dict = dict;
        self.charge_copy(&dict)?;
        let inner = Rc::make_mut(&mut dict);
        inner.depth = inner.depth.max(depth);
        let mut iter = items.into_iter();
        while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
            inner.items.push((k, v));
        }
        if let Some(Value::Dict(slot)) = self.stack.last_mut() {
            *slot = dict;
        }
        Ok(())
    }

    /// Appends to the list on top of the stack.
    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        self.check_depth(depth)?;
        let list = match self.stack.last_mut() {
            Some(Value::List(list)) => std::mem::take(list),
            Some(Value::Opaque) => return Ok(()),
            _ => return Err(self.err("APPEND(S) on a value that is not a list")),
        };
        let mut list = list;
        self.charge_copy(&list)?;
        let inner = Rc::make_mut(&mut list);
        inner.depth = inner.depth.max(depth);
        inner.items.extend(items);
        if let Some(Value::List(slot)) = self.stack.last_mut() {
            *slot = list;
        }
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                // PROTO
                0x80 => {
                    let version = self.u8()?;
                    if version > 5 {
                        return Err(self.err(format!("pickle protocol {version} (at most 5)")));
                    }
                }
                // FRAME: only a read-ahead hint.
                0x95 => {
                    self.u64()?;
                }
                // STOP
                b'.' => {
                    let root = self.pop()?;
                    return Ok(root);
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return Err(self.err("too many MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                // POP: the top value, or an empty frame's MARK.
                b'0' => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Int(1))?,
                0x89 => self.push(Value::Int(0))?,
                // BININT, BININT1, BININT2
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                // LONG1, LONG4: two's complement, little-endian.
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8()?)
                    } else {
                        u64::from(self.u32()?)
                    };
                    let digits = self.take(n)?;
                    let v = long_value(digits).ok_or_else(|| {
                        self.err(format!("an integer of {n} bytes does not fit in 64 bits"))
                    })?;
                    self.push(Value::Int(v))?;
                }
                // INT: text, also the protocol-0 booleans 00 / 01.
                b'I' => {
                    let text = self.line()?;
                    let v = match text {
                        "00" => Value::Int(0),
                        "01" => Value::Int(1),
                        t => Value::Int(
                            t.parse()
                                .map_err(|_| self.err(format!("INT `{t}` is not an integer")))?,
                        ),
                    };
                    self.push(v)?;
                }
                // LONG: text with an optional L suffix.
                b'L' => {
                    let text = self.line()?;
                    let v = text
                        .trim_end_matches('L')
                        .parse()
                        .map_err(|_| self.err(format!("LONG `{text}` is not a 64-bit integer")))?;
                    self.push(Value::Int(v))?;
                }
                // BINFLOAT (big-endian), FLOAT (text)
                b'G' => {
                    self.array::<8>()?;
                    self.push(Value::Float)?;
                }
                b'F' => {
                    let text = self.line()?;
                    text.parse::<f64>()
                        .map_err(|_| self.err(format!("FLOAT `{text}` is not a number")))?;
                    self.push(Value::Float)?;
                }
                // Unicode strings: SHORT_BINUNICODE, BINUNICODE, BINUNICODE8.
                0x8c | b'X' | 0x8d => {
                    let n = match op {
                        0x8c => u64::from(self.u8()?),
                        b'X' => u64::from(self.u32()?),
                        _ => self.u64()?,
                    };
                    let raw = self.take(n)?;
                    let s = std::str::from_utf8(raw)
                        .map_err(|_| self.err("a unicode string is not UTF-8"))?;
                    self.push(Value::Str(s.into()))?;
                }
                // Byte strings (SHORT_BINSTRING, BINSTRING): Python 2 `str`,
                // read as text so keys from old files still name tensors.
                b'U' | b'T' => {
                    let n = if op == b'U' {
                        u64::from(self.u8()?)
                    } else {
                        u64::from(self.u32()?)
                    };
                    let raw = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(raw).into()))?;
                }
                // Text strings of protocol 0: STRING (quoted), UNICODE (raw).
                b'S' | b'V' => {
                    let text = self.line()?;
                    let text = text.trim_matches(|c| c == '\'' || c == '"');
                    self.push(Value::Str(text.into()))?;
                }
                // Bytes: SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8.
                b'C' | b'B' | 0x8e | 0x96 => {
                    let n = match op {
                        b'C' => u64::from(self.u8()?),
                        b'B' => u64::from(self.u32()?),
                        _ => self.u64()?,
                    };
                    self.take(n)?;
                    self.push(Value::Bytes)?;
                }
                b')' => self.push(Value::Tuple(Rc::default()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    let tuple = self.seq(items)?;
                    self.push(Value::Tuple(tuple))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let tuple = self.seq(items)?;
                    self.push(Value::Tuple(tuple))?;
                }
                b']' => self.push(Value::List(Rc::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    let list = self.seq(items)?;
                    self.push(Value::List(list))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.push(Value::Dict(Rc::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Rc::default()))?;
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                // Sets: EMPTY_SET, ADDITEMS, FROZENSET. Never part of a
                // state dict's tensors; kept as placeholders.
                0x8f => self.push(Value::Opaque)?,
                0x90 => {
                    self.pop_mark()?;
                    self.top()?;
                }
                0x91 => {
                    self.pop_mark()?;
                    self.push(Value::Opaque)?;
                }
                // GLOBAL, STACK_GLOBAL
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(Rc::new((module, name))))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    self.push(Value::Global(Rc::new((
                        module.to_string(),
                        name.to_string(),
                    ))))?;
                }
                // REDUCE, NEWOBJ, NEWOBJ_EX
                b'R' | 0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.apply(&callable, &args, 0)?;
                    self.push(value)?;
                }
                // INST, OBJ (protocol 0 instances): placeholders.
                b'i' => {
                    self.line()?;
                    self.line()?;
                    self.pop_mark()?;
                    self.push(Value::Opaque)?;
                }
                b'o' => {
                    self.pop_mark()?;
                    self.push(Value::Opaque)?;
                }
                // BUILD sets an object's attributes (an OrderedDict's
                // `_metadata`): they are not items, so the object is unchanged.
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.storage(&pid)?;
                    self.push(Value::Storage(Rc::new(storage)))?;
                }
                b'P' => {
                    return Err(self
                        .err("a text persistent id (PERSID): not a torch.save storage reference"));
                }
                // Memo: BINPUT, LONG_BINPUT, PUT, MEMOIZE, BINGET, LONG_BINGET, GET.
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u32::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let text = self.line()?;
                    let i = text
                        .parse()
                        .map_err(|_| self.err(format!("PUT index `{text}` is not a number")))?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| self.err("memo index overflow"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u32::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'g' => {
                    let text = self.line()?;
                    let i = text
                        .parse()
                        .map_err(|_| self.err(format!("GET index `{text}` is not a number")))?;
                    self.memo_get(i)?;
                }
                other => {
                    self.pos -= 1;
                    return Err(
                        self.err(format!("opcode 0x{other:02x} is not one torch.save writes"))
                    );
                }
            }
        }
    }

    /// The value a call of `callable(*args)` stands for.
    fn apply(&self, callable: &Value, args: &Value, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("rebuild calls nested too deeply"));
        }
        let Value::Global(global) = callable else {
            return Ok(Value::Opaque);
        };
        let args: &[Value] = match args {
            Value::Tuple(t) => &t.items,
            _ => &[],
        };
        match (global.0.as_str(), global.1.as_str()) {
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                // OrderedDict([(key, value), ...]) or OrderedDict().
                let mut dict = Items::default();
                if let Some(Value::List(pairs) | Value::Tuple(pairs)) = args.first() {
                    // The pairs are already nested inside `pairs`: no deeper.
                    dict.depth = pairs.depth;
                    for pair in &pairs.items {
                        if let Value::List(kv) | Value::Tuple(kv) = pair
                            && let [k, v] = &kv.items[..]
                        {
                            dict.items.push((k.clone(), v.clone()));
                        }
                    }
                }
                Ok(Value::Dict(Rc::new(dict)))
            }
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => self.rebuild(args),
            // A Parameter is its data tensor.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Ok(args.first().cloned().unwrap_or(Value::Opaque))
            }
            // Tensor subclasses: (func, type, func_args, state).
            ("torch._tensor", "_rebuild_from_type_v2") => match args {
                [func, _, func_args, ..] => self.apply(func, func_args, depth + 1),
                _ => Err(self.err("_rebuild_from_type_v2 needs (func, type, args, state)")),
            },
            _ => Ok(Value::Opaque),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild(&self, args: &[Value]) -> Result<Value, String> {
        let [storage, offset, size, stride, ..] = args else {
            return Err(self.err(format!(
                "a tensor rebuild has {} arguments, expected (storage, offset, size, stride, ...)",
                args.len()
            )));
        };
        let Value::Storage(storage) = storage else {
            return Err(self.err("a tensor's storage is not a storage reference"));
        };
        let offset = match offset {
            Value::Int(v) => u64::try_from(*v)
                .map_err(|_| self.err(format!("a tensor's storage offset is {v}")))?,
            _ => return Err(self.err("a tensor's storage offset is not an integer")),
        };
        let shape = self.dims(size, "size")?;
        let stride = self.dims(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.err(format!(
                "a tensor has {} sizes but {} strides",
                shape.len(),
                stride.len()
            )));
        }
        Ok(Value::Tensor(Rc::new(TensorRecord {
            storage: storage.key.clone(),
            dtype: storage.dtype.clone(),
            storage_numel: storage.numel,
            offset,
            shape,
            stride,
        })))
    }

    fn dims(&self, value: &Value, what: &str) -> Result<Vec<u64>, String> {
        let Value::Tuple(items) = value else {
            return Err(self.err(format!("a tensor's {what} is not a tuple")));
        };
        items
            .items
            .iter()
            .map(|v| match v {
                Value::Int(i) => {
                    u64::try_from(*i).map_err(|_| self.err(format!("a tensor's {what} holds {i}")))
                }
                _ => Err(self.err(format!("a tensor's {what} holds a non-integer"))),
            })
            .collect()
    }

    /// `('storage', storage_class, key, location, numel)`.
    fn storage(&self, pid: &Value) -> Result<Storage, String> {
        let bad = || self.err("a persistent id that is not a torch storage reference");
        let Value::Tuple(items) = pid else {
            return Err(bad());
        };
        let [Value::Str(tag), class, key, _location, numel, ..] = &items.items[..] else {
            return Err(bad());
        };
        if &**tag != "storage" {
            return Err(bad());
        }
        let dtype = match class {
            Value::Global(g) => TorchDtype::from_storage_class(&g.1).ok_or_else(|| g.1.clone()),
            _ => return Err(bad()),
        };
        let key = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            _ => return Err(bad()),
        };
        let numel = match numel {
            Value::Int(n) => u64::try_from(*n)
                .map_err(|_| self.err(format!("a storage declares {n} elements")))?,
            _ => return Err(bad()),
        };
        Ok(Storage { key, dtype, numel })
    }
}

/// A LONG1/LONG4 payload as an i64, `None` when it needs more than 64 bits.
fn long_value(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() {
        return Some(0);
    }
    let negative = digits[digits.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Bytes past the eighth must be pure sign extension.
    if digits.len() > 8 {
        let (low, high) = digits.split_at(8);
        if high.iter().any(|&b| b != fill) || (low[7] & 0x80 != 0) != negative {
            return None;
        }
    }
    let mut le = [fill; 8];
    for (d, s) in le.iter_mut().zip(digits) {
        *d = *s;
    }
    Some(i64::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pickle torch.save writes for `{"w": tensor of shape [2, 3]}`
    /// (protocol 2, as `pickletools.dis` shows it), built by hand.
    fn state_dict_pickle(shape: &[u8], numel: u8) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'w'];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
        p.extend([b'(', b'(', b'X', 7, 0, 0, 0]);
        p.extend(b"storage");
        p.extend(b"ctorch\nFloatStorage\n");
        p.extend([b'X', 1, 0, 0, 0, b'0', b'X', 3, 0, 0, 0]);
        p.extend(b"cpu");
        p.extend([b'K', numel, b't', b'Q', b'K', 0, b'(']);
        for &d in shape {
            p.extend([b'K', d]);
        }
        p.push(b't');
        p.extend([b'(', b'K', 3, b'K', 1, b't', 0x89]);
        p.extend(b"ccollections\nOrderedDict\n");
        p.extend([b')', b'R', b't', b'R', b'u', b'.']);
        p
    }

    #[test]
    fn reads_a_state_dict_entry() {
        let tensors = read_tensors(&state_dict_pickle(&[2, 3], 6)).unwrap();
        assert_eq!(tensors.len(), 1);
        let (name, t) = &tensors[0];
        assert_eq!(name, "w");
        assert_eq!(t.storage, "0");
        assert_eq!(t.dtype, Ok(TorchDtype::F32));
        assert_eq!((t.storage_numel, t.offset), (6, 0));
        assert_eq!(
            (t.shape.clone(), t.stride.clone()),
            (vec![2, 3], vec![3, 1])
        );
    }

    #[test]
    fn hostile_programs_are_errors() {
        // A string length far beyond the data.
        let mut p = vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff];
        p.extend(b"abc");
        assert!(read_tensors(&p).unwrap_err().contains("past the end"));
        // Popping an empty stack, a memo entry never stored, an odd SETITEMS.
        assert!(read_tensors(b"\x80\x02.").is_err());
        assert!(
            read_tensors(b"\x80\x02h\x05.")
                .unwrap_err()
                .contains("memo")
        );
        assert!(read_tensors(b"}(K\x01u.").unwrap_err().contains("odd"));
        // Unknown opcodes and truncation.
        assert!(read_tensors(b"\x80\x02\xff").unwrap_err().contains("0xff"));
        assert!(read_tensors(&state_dict_pickle(&[2, 3], 6)[..40]).is_err());
        // A root that is not a dict of tensors.
        assert!(read_tensors(b"K\x01.").unwrap_err().contains("neither"));
    }

    #[test]
    fn memo_reuse_does_not_multiply_memory() {
        // L = []; then 30,000 times: M = memo copy of L; M.append(1); memo = M.
        // Each append copies the shared list once (n^2 / 2 copies in all):
        // the budget stops the run long before that adds up.
        let mut p = vec![b']', b'q', 0];
        for _ in 0..30_000 {
            p.extend([b'h', 0, b'K', 1, b'a', b'q', 0, b'0']);
        }
        p.push(b'.');
        assert!(read_tensors(&p).unwrap_err().contains("re-copies"));
        // L.append(L) through the memo nests instead, and is refused for that.
        let mut p = vec![b']', b'q', 0];
        for _ in 0..1_000 {
            p.extend([b'h', 0, b'a', b'q', 0]);
        }
        p.push(b'.');
        assert!(read_tensors(&p).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        // 1,000,000 nested 1-tuples would recurse that deep when dropped.
        let mut p = vec![b'K', 0];
        p.extend(std::iter::repeat_n(0x85, 1_000_000));
        p.push(b'.');
        assert!(read_tensors(&p).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn long_values() {
        assert_eq!(long_value(&[]), Some(0));
        assert_eq!(long_value(&[0xff]), Some(-1));
        assert_eq!(long_value(&[0x00, 0x01]), Some(256));
        assert_eq!(long_value(&[0xff; 9]), Some(-1));
        assert_eq!(long_value(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}

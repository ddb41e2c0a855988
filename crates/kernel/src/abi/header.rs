//! A reader for the C headers the Rust side mirrors (tests only): `abi.h` and `trace.h`,
//! and the enums of `linux/bpf.h` ([`crate::links`]). It computes what the C compiler
//! would, for the little C those headers use: `#define NAME number`, and structs of
//! fixed-size integer fields, arrays and structs defined before them, laid out with the C
//! rules (each field at a multiple of its alignment, the size a multiple of the largest).
//! Anything else inside a struct is an error, so that the reader cannot skip a field.
//!
//! Hand-written because a C parser crate (or bindgen and libclang) would be a large build
//! dependency for the few lines a test needs; the BPF build itself (`build.rs`, clang)
//! checks the same structs with `_Static_assert`.

use std::collections::BTreeMap;

/// A struct as the compiler lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub size: usize,
    pub align: usize,
    /// (name, offset, size) in declaration order.
    pub fields: Vec<(String, usize, usize)>,
}

/// What a header defines.
#[derive(Debug, Default)]
pub struct Header {
    /// `#define NAME number` (a define without a value, an include guard, is left out).
    pub defines: BTreeMap<String, i128>,
    pub structs: BTreeMap<String, Layout>,
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An integer literal as these headers write them: `32`, `0x1f`, `(-1)`, `256u`.
fn number(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        return number(inner);
    }
    if let Some(neg) = s.strip_prefix('-') {
        return number(neg).map(|v| -v);
    }
    let s = s.trim_end_matches(['u', 'U', 'l', 'L']);
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i128::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn primitive(ty: &str) -> Option<usize> {
    Some(match ty {
        "__u8" | "__s8" | "char" | "unsigned char" => 1,
        "__u16" | "__s16" => 2,
        "__u32" | "__s32" | "int" | "unsigned int" => 4,
        "__u64" | "__s64" => 8,
        _ => return None,
    })
}

/// Reads `text`. Errors name the line the reader did not understand.
pub fn parse(text: &str) -> Result<Header, String> {
    let text = strip_comments(text);
    let mut h = Header::default();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(def) = line.strip_prefix("#define") {
            let mut it = def.trim().splitn(2, char::is_whitespace);
            let name = it.next().unwrap_or_default();
            let value = it.next().unwrap_or_default().trim();
            if value.is_empty() || name.contains('(') {
                continue;
            }
            let v = number(value).ok_or_else(|| format!("#define {name}: `{value}`"))?;
            h.defines.insert(name.to_string(), v);
        } else if let Some(name) = line
            .strip_prefix("struct ")
            .and_then(|l| l.strip_suffix('{'))
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let mut body = Vec::new();
            for l in lines.by_ref() {
                if l.starts_with("};") {
                    break;
                }
                if !l.is_empty() {
                    body.push(l);
                }
            }
            let layout = lay_out(&h, &body).map_err(|e| format!("struct {name}: {e}"))?;
            h.structs.insert(name.to_string(), layout);
        }
    }
    Ok(h)
}

/// The layout of a struct whose body (one declaration a line) is `body`.
fn lay_out(h: &Header, body: &[&str]) -> Result<Layout, String> {
    let mut l = Layout {
        size: 0,
        align: 1,
        fields: Vec::new(),
    };
    for decl in body {
        let decl = decl
            .strip_suffix(';')
            .ok_or_else(|| format!("`{decl}`: not one declaration"))?;
        // The type is every word before the first declarator.
        let words: Vec<&str> = decl.split_whitespace().collect();
        let n_type = if words.first() == Some(&"struct") || words.first() == Some(&"unsigned") {
            2
        } else {
            1
        };
        let ty = words.get(..n_type).map(|w| w.join(" ")).unwrap_or_default();
        let (size, align) = match ty.strip_prefix("struct ") {
            Some(s) => h
                .structs
                .get(s)
                .map(|s| (s.size, s.align))
                .ok_or_else(|| format!("`{decl}`: struct {s} not defined before"))?,
            None => primitive(&ty)
                .map(|s| (s, s))
                .ok_or_else(|| format!("`{decl}`: unknown type `{ty}`"))?,
        };
        let declarators = words[n_type..].join(" ");
        for d in declarators.split(',').map(str::trim) {
            let (name, count) = match d.split_once('[') {
                Some((name, dim)) => {
                    let dim = dim
                        .strip_suffix(']')
                        .ok_or_else(|| format!("`{d}`: one dimension only"))?
                        .trim();
                    let n = number(dim)
                        .or_else(|| h.defines.get(dim).copied())
                        .ok_or_else(|| format!("`{d}`: dimension `{dim}`"))?;
                    (name.trim(), n as usize)
                }
                None => (d, 1),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`{decl}`: declarator `{d}`"));
            }
            let offset = l.size.next_multiple_of(align);
            l.fields.push((name.to_string(), offset, size * count));
            l.size = offset + size * count;
            l.align = l.align.max(align);
        }
    }
    l.size = l.size.next_multiple_of(l.align);
    Ok(l)
}

/// The names of a C enum of `h`, in order, without aliases (`BPF_PROG_RUN =
/// BPF_PROG_TEST_RUN,` is not a value of its own): index = value.
pub fn enum_names<'a>(h: &'a str, name: &str) -> Vec<&'a str> {
    let start = h.find(&format!("enum {name} {{")).expect(name);
    let body = &h[start..start + h[start..].find("};").expect("end")];
    body.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("BPF_") && !l.contains('='))
        .filter_map(|l| l.trim_end_matches(',').split_whitespace().next())
        .collect()
}

/// The size of the field a projection returns (for [`layout!`]).
pub fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// The layout of Rust struct `$t` as [`Layout`], by its fields in order; `field = "c"`
/// where the C name differs (a keyword in Rust: `ty = "type"`).
macro_rules! layout {
    ($t:ty { $($f:ident $(= $c:literal)?),* $(,)? }) => {
        $crate::abi::header::Layout {
            size: std::mem::size_of::<$t>(),
            align: std::mem::align_of::<$t>(),
            fields: vec![$((
                layout!(@name $f $($c)?).to_string(),
                std::mem::offset_of!($t, $f),
                $crate::abi::header::field_size(|x: &$t| &x.$f),
            )),*],
        }
    };
    (@name $f:ident $c:literal) => { $c };
    (@name $f:ident) => { stringify!($f) };
}
pub(crate) use layout;

/// Every difference between a header and its Rust mirror, one line each: constants by name
/// (both ways), structs by size and by each field's name, offset and size. Alignment is not
/// compared: a `__u32 x[4]` may be `[u8; 16]` on the Rust side.
pub fn differences(
    h: &Header,
    constants: &[(&str, i128)],
    structs: &[(&str, Layout)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v) in &h.defines {
        match constants.iter().find(|(n, _)| n == name) {
            None => out.push(format!("#define {name} {v}: no Rust mirror")),
            Some((_, r)) if r != v => out.push(format!("{name}: header {v}, Rust {r}")),
            Some(_) => {}
        }
    }
    for (name, v) in constants {
        if !h.defines.contains_key(*name) {
            out.push(format!("{name} = {v} in Rust: not in the header"));
        }
    }
    for (name, c) in &h.structs {
        let Some((_, r)) = structs.iter().find(|(n, _)| n == name) else {
            out.push(format!("struct {name}: no Rust mirror"));
            continue;
        };
        if c.size != r.size {
            out.push(format!(
                "struct {name}: size {} in the header, {} in Rust",
                c.size, r.size
            ));
        }
        if c.fields != r.fields {
            out.push(format!(
                "struct {name}: fields (name, offset, size) {:?} in the header, {:?} in Rust",
                c.fields, r.fields
            ));
        }
    }
    for (name, _) in structs {
        if !h.structs.contains_key(*name) {
            out.push(format!("struct {name} in Rust: not in the header"));
        }
    }
    out
}

#[test]
fn the_reader_lays_out_as_c_does() {
    let h = parse(
        "#define N 3 // three\n#define GUARD\n#define NEG (-1)\nstruct a {\n\t__u8 x; /* pad */\n\t__u32 y, z[N];\n\t__u16 w;\n};\nstruct b {\n\t__u8 c;\n\tstruct a inner;\n\t__u64 d;\n};\n",
    )
    .expect("parse");
    assert_eq!(h.defines.get("N"), Some(&3));
    assert_eq!(h.defines.get("NEG"), Some(&-1));
    assert!(!h.defines.contains_key("GUARD"));
    let a = &h.structs["a"];
    let f = |n: &str, o, s| (n.to_string(), o, s);
    assert_eq!(
        a.fields,
        vec![f("x", 0, 1), f("y", 4, 4), f("z", 8, 12), f("w", 20, 2)]
    );
    assert_eq!((a.size, a.align), (24, 4));
    let b = &h.structs["b"];
    assert_eq!(
        b.fields,
        vec![f("c", 0, 1), f("inner", 4, 24), f("d", 32, 8)]
    );
    assert_eq!(b.size, 40);
    assert!(parse("struct c {\n\tfloat x;\n};\n").is_err());
    assert!(parse("#define X 1 + 2\n").is_err());
}

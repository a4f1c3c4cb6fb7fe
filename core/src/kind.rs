//! The three kinds of function, told apart by a module's exports. A module built for the
//! original engine is one of:
//! - a WASI command (`_start`): args go in as argv, the result comes out on stdout;
//! - a string-ABI function: exports `memory`, the global `__heap_base` and
//!   `name(ptr: i32, len: i32) -> (ptr: i32, len: i32)`; the args JSON is written at
//!   `__heap_base` and the result read from the returned span;
//! - a numeric export such as `gcd(i32, i32) -> i32`: args are passed by value.

use std::fmt;

use wasmtime::{ExternType, FuncType, Module, ValType};

use crate::error::LoadError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Command,
    StringAbi,
    Numeric,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Command => "wasi-command",
            Kind::StringAbi => "string-abi",
            Kind::Numeric => "numeric",
        })
    }
}

/// What to run: the kind and the export that is called.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub export: String,
    pub ty: FuncType,
}

/// Finds the entry point. `wasi` is the deploy's `wasi_cap` (`None`: decide from the module);
/// `export` the name of the export to call for the non-WASI kinds.
pub fn detect(module: &Module, wasi: Option<bool>, export: &str) -> Result<Entry, LoadError> {
    let func = |name: &str| match module.get_export(name) {
        Some(ExternType::Func(ty)) => Some(ty),
        _ => None,
    };
    let command = || -> Result<Entry, LoadError> {
        let ty = func("_start").ok_or_else(|| {
            LoadError::Kind(format!(
                "a WASI command must export `_start`; the module exports {}",
                export_list(module)
            ))
        })?;
        if ty.params().len() != 0 || ty.results().len() != 0 {
            return Err(LoadError::Kind(format!(
                "`_start` must take and return nothing, it is {}",
                signature(&ty)
            )));
        }
        Ok(Entry {
            kind: Kind::Command,
            export: "_start".into(),
            ty,
        })
    };
    if wasi == Some(true) {
        return command();
    }
    let Some(ty) = func(export) else {
        if wasi.is_none() && func("_start").is_some() {
            return command();
        }
        let hint = if func("_start").is_some() {
            " (it exports `_start`: deploy it as a WASI command, wasi_cap true)"
        } else {
            ""
        };
        return Err(LoadError::Kind(format!(
            "module has no function export `{export}`{hint}; it exports {}",
            export_list(module)
        )));
    };
    let params: Vec<ValType> = ty.params().collect();
    let results: Vec<ValType> = ty.results().collect();
    let is_i32 = |v: &ValType| matches!(v, ValType::I32);
    let string_shaped =
        params.len() == 2 && results.len() == 2 && params.iter().chain(&results).all(is_i32);
    let has_memory = matches!(module.get_export("memory"), Some(ExternType::Memory(_)));
    let has_heap_base = matches!(
        module.get_export("__heap_base"),
        Some(ExternType::Global(g)) if matches!(g.content(), ValType::I32)
    );
    let kind = if string_shaped && has_memory && has_heap_base {
        Kind::StringAbi
    } else if params.iter().chain(&results).all(is_number) {
        Kind::Numeric
    } else {
        return Err(LoadError::Kind(format!(
            "export `{export}` is {}; expected (i32, i32) -> (i32, i32) with exported `memory` \
             and `__heap_base` (string ABI), or numeric parameters and results (i32, i64, f32, f64)",
            signature(&ty)
        )));
    };
    Ok(Entry {
        kind,
        export: export.to_string(),
        ty,
    })
}

pub fn is_number(v: &ValType) -> bool {
    matches!(v, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64)
}

/// `(i32, i32) -> i32`, as people write it.
pub fn signature(ty: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = ValType>| {
        it.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    let params = list(&mut ty.params());
    let results: Vec<ValType> = ty.results().collect();
    match results.len() {
        0 => format!("({params}) -> ()"),
        1 => format!("({params}) -> {}", results[0]),
        _ => format!("({params}) -> ({})", list(&mut results.into_iter())),
    }
}

fn export_list(module: &Module) -> String {
    let names: Vec<String> = module
        .exports()
        .filter(|e| matches!(e.ty(), ExternType::Func(_)))
        .map(|e| format!("`{}`", e.name()))
        .collect();
    if names.is_empty() {
        "no functions".into()
    } else {
        names.join(", ")
    }
}

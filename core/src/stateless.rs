//! Modules with no state at all, whose instances can serve call after call.
//!
//! A fresh instance per call exists so that nothing one call leaves behind (memory, globals,
//! tables, WASI state, GC objects) reaches the next. A module with none of those — no
//! imports, no memory, no table, no mutable global, no tags and only function types — has
//! nothing to leave behind: every call of one instance starts from the same state as a call of
//! a new one. For such a module (a numeric function like `gcd`), building and tearing down an
//! instance is most of a call's cost, so its instances are kept and reused, each re-armed with
//! the call's own deadline, fuel and interrupt check.

use std::sync::Mutex;

use wasmparser::{CompositeInnerType, Encoding, Parser, Payload};
use wasmtime::{Func, Instance, Store, TypedFunc};

use crate::function::CallState;

/// Idle instances kept per function: enough for the calls that run at once on a small node,
/// few enough that kept instances do not crowd the pool.
const KEEP_IDLE: usize = 4;

/// Whether `wasm` is a core module with no state (see the module docs). Anything the parser
/// does not know to be harmless makes it stateful.
pub(crate) fn is_stateless(wasm: &[u8]) -> bool {
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else {
            return false;
        };
        let stateless = match payload {
            Payload::Version { encoding, .. } => encoding == Encoding::Module,
            Payload::ImportSection(r) => r.count() == 0,
            Payload::MemorySection(r) => r.count() == 0,
            Payload::TableSection(r) => r.count() == 0,
            Payload::TagSection(r) => r.count() == 0,
            Payload::GlobalSection(r) => r
                .into_iter()
                .all(|g| g.is_ok_and(|g| !g.ty.mutable && !g.ty.shared)),
            Payload::TypeSection(r) => r.into_iter().all(|group| {
                group.is_ok_and(|g| {
                    g.types()
                        .all(|t| matches!(t.composite_type.inner, CompositeInnerType::Func(_)))
                })
            }),
            Payload::DataSection(r) => r.count() == 0,
            Payload::ElementSection(r) => r.count() == 0,
            Payload::FunctionSection(_)
            | Payload::ExportSection(_)
            | Payload::StartSection { .. }
            | Payload::CodeSectionStart { .. }
            | Payload::CodeSectionEntry(_)
            | Payload::CustomSection(_)
            | Payload::DataCountSection { .. }
            | Payload::End(_) => true,
            _ => false,
        };
        if !stateless {
            return false;
        }
    }
    true
}

/// An instance kept for reuse, with its entry point.
pub(crate) struct Warm {
    pub(crate) store: Store<CallState>,
    pub(crate) func: Func,
    /// The entry as `(i32, i32) -> i32`, if it has that shape (a typed call is cheaper).
    pub(crate) typed: Option<TypedFunc<(i32, i32), i32>>,
    #[allow(
        dead_code,
        reason = "kept with its store; the entry is all a call needs"
    )]
    pub(crate) instance: Instance,
}

/// The idle instances of one stateless function.
#[derive(Default)]
pub(crate) struct WarmPool {
    idle: Mutex<Vec<Warm>>,
}

impl WarmPool {
    pub(crate) fn take(&self) -> Option<Warm> {
        self.idle.lock().unwrap().pop()
    }

    /// Keeps `warm` for a later call, unless enough are kept already.
    pub(crate) fn put(&self, warm: Warm) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < KEEP_IDLE {
            idle.push(warm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn only_modules_without_any_state_are_stateless() {
        let pure = r#"(module (global i32 (i32.const 7))
            (func (export "f") (param i32) (result i32) (i32.add (local.get 0) (global.get 0))))"#;
        assert!(is_stateless(&wat(pure)));
        for stateful in [
            r#"(module (memory 1) (func (export "f")))"#,
            r#"(module (global (mut i32) (i32.const 0)) (func (export "f")))"#,
            r#"(module (table 1 funcref) (func (export "f")))"#,
            r#"(module (import "env" "g" (func)) (func (export "f")))"#,
            r#"(module (type (struct)) (func (export "f")))"#,
            r#"(module (tag) (func (export "f")))"#,
            r#"(component)"#,
        ] {
            assert!(!is_stateless(&wat(stateful)), "{stateful}");
        }
        assert!(!is_stateless(b"not wasm"));
    }
}

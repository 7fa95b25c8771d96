//! The arguments of a raw tracepoint as the running kernel declares them.
//!
//! Every tracepoint `foo` has a `typedef void (*btf_trace_foo)(void *__data, ARGS...)` in the
//! kernel's BTF: the prototype a raw tracepoint program receives, after `__data`. Arguments
//! there are unnamed, so callers recognise a version of a tracepoint by its argument count and
//! types.

use btf_rs::{Parameter, Type};

use super::{Btf, BtfError, MAX_TYPE_DEPTH};

/// One tracepoint argument, described as far as telling versions apart needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamType {
    /// An integer or enum of this many bytes.
    Integer(u32),
    /// A pointer to the named struct (`struct kmem_cache *` → `"kmem_cache"`).
    StructPointer(String),
    /// Any other pointer (`void *`, `const char *`, a pointer to a typedef'd scalar).
    Pointer,
    /// Anything else.
    Other,
}

impl Btf {
    /// The arguments `tracepoint`'s raw tracepoint programs receive, in order (without
    /// `__data`). `Ok(None)` when this kernel has no such tracepoint.
    pub fn raw_tracepoint_params(
        &self,
        tracepoint: &str,
    ) -> Result<Option<Vec<ParamType>>, BtfError> {
        let path = &format!("btf_trace_{tracepoint}");
        let typedef = self
            .types_named(path, path)?
            .into_iter()
            .find(|ty| matches!(ty, Type::Typedef(_)));
        let Some(typedef) = typedef else {
            return Ok(None);
        };
        let pointer = self.strip_qualifiers(typedef, path)?;
        let Type::Ptr(target) = &pointer else {
            return Err(self.not_a_prototype(path, &pointer));
        };
        let proto = self.strip_qualifiers(self.chained(target, path)?, path)?;
        let Type::FuncProto(proto) = &proto else {
            return Err(self.not_a_prototype(path, &proto));
        };
        // The first parameter is `void *__data`, the probe's private data.
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|param| self.param_type(param, path))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Whether the kernel has a function of this name (a `FUNC` in its BTF): fentry attaches
    /// only to those.
    pub fn has_function(&self, name: &str) -> bool {
        self.types_named(name, name)
            .is_ok_and(|types| types.iter().any(|ty| matches!(ty, Type::Func(_))))
    }

    /// How many arguments `tracepoint` passes to its raw tracepoint programs, or `None` when
    /// this kernel has no such tracepoint (or describes it in a way this reader cannot follow).
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Option<u32> {
        let params = self.raw_tracepoint_params(tracepoint).ok()??;
        u32::try_from(params.len()).ok()
    }

    fn param_type(&self, param: &Parameter, path: &str) -> Result<ParamType, BtfError> {
        let integer = |bytes: usize| ParamType::Integer(u32::try_from(bytes).unwrap_or(u32::MAX));
        Ok(
            match self.strip_qualifiers(self.chained(param, path)?, path)? {
                Type::Int(int) => integer(int.size()),
                Type::Enum(e) => integer(e.size()),
                Type::Enum64(e) => integer(e.size()),
                Type::Ptr(pointer) => {
                    let mut target = self.chained(&pointer, path)?;
                    // Look through qualifiers only (`const struct kmem_cache *`), not typedefs of
                    // scalars, which stay plain pointers.
                    for _ in 0..MAX_TYPE_DEPTH {
                        match target {
                            Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                                target = self.chained_of(&target, path)?;
                            }
                            _ => break,
                        }
                    }
                    match &target {
                        Type::Struct(s) => {
                            ParamType::StructPointer(self.name_of(s).unwrap_or_default())
                        }
                        Type::Fwd(f) => {
                            ParamType::StructPointer(self.name_of(f).unwrap_or_default())
                        }
                        _ => ParamType::Pointer,
                    }
                }
                _ => ParamType::Other,
            },
        )
    }

    fn not_a_prototype(&self, path: &str, found: &Type) -> BtfError {
        BtfError::UnexpectedLayout {
            path: path.to_owned(),
            found: self.describe(found),
            expected: "a pointer to a function prototype".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::kernel_btf;
    use super::*;

    #[test]
    fn running_kernel_kmalloc_starts_with_call_site_and_pointer() {
        let Some(btf) = kernel_btf() else { return };
        let params = btf
            .raw_tracepoint_params("kmalloc")
            .unwrap()
            .expect("the kmalloc tracepoint exists");
        assert_eq!(params[0], ParamType::Integer(8), "{params:?}");
        assert_eq!(params[1], ParamType::Pointer, "{params:?}");
        assert!(params.len() >= 5, "{params:?}");
    }

    #[test]
    fn running_kernel_page_alloc_takes_a_page() {
        let Some(btf) = kernel_btf() else { return };
        let params = btf.raw_tracepoint_params("mm_page_alloc").unwrap().unwrap();
        assert_eq!(params[0], ParamType::StructPointer("page".into()));
        assert_eq!(params[1], ParamType::Integer(4));
    }

    #[test]
    fn an_unknown_tracepoint_is_none() {
        let Some(btf) = kernel_btf() else { return };
        assert_eq!(
            btf.raw_tracepoint_params("no_such_tracepoint").unwrap(),
            None
        );
    }
}

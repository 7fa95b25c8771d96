//! The arguments of a raw tracepoint as the running kernel declares them.
//!
//! Every tracepoint `foo` has a `typedef void (*btf_trace_foo)(void *__data, ARGS...)` in the
//! kernel's BTF: the prototype a raw tracepoint program receives, after `__data`. Arguments
//! there are unnamed, so callers recognise a version of a tracepoint by its argument count and
//! types.

use super::{Btf, BtfError, Kind, MAX_TYPE_DEPTH};

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
        let typedef_name = format!("btf_trace_{tracepoint}");
        let Some(typedef) = self.types.iter().position(|ty| {
            matches!(ty.kind, Kind::Typedef(_))
                && super::name_at(&self.strings, ty.name_off) == typedef_name.as_bytes()
        }) else {
            return Ok(None);
        };
        let path = &typedef_name;
        let pointer = self.strip_qualifiers(typedef as u32, path)?;
        let Kind::Pointer { target } = self.kind(pointer, path)? else {
            return Err(self.not_a_prototype(path, pointer));
        };
        let proto = self.strip_qualifiers(target, path)?;
        let Kind::FunctionProto(params) = self.kind(proto, path)? else {
            return Err(self.not_a_prototype(path, proto));
        };
        let own = self
            .members
            .get(params.first_member..)
            .unwrap_or_default()
            .iter()
            .take(params.member_count);
        // The first parameter is `void *__data`, the probe's private data.
        own.skip(1)
            .map(|param| self.param_type(param.type_id, path))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// How many arguments `tracepoint` passes to its raw tracepoint programs, or `None` when
    /// this kernel has no such tracepoint (or describes it in a way this reader cannot follow).
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Option<u32> {
        let params = self.raw_tracepoint_params(tracepoint).ok()??;
        u32::try_from(params.len()).ok()
    }

    fn param_type(&self, id: u32, path: &str) -> Result<ParamType, BtfError> {
        let id = self.strip_qualifiers(id, path)?;
        Ok(match self.kind(id, path)? {
            Kind::Int { size, .. } | Kind::Enum { size } | Kind::Enum64 { size } => {
                ParamType::Integer(size)
            }
            Kind::Pointer { target } => {
                let mut target = target;
                // Look through qualifiers only (`const struct kmem_cache *`), not typedefs of
                // scalars, which stay plain pointers.
                for _ in 0..MAX_TYPE_DEPTH {
                    match self.kind(target, path)? {
                        Kind::Const(next) | Kind::Volatile(next) | Kind::TypeTag(next) => {
                            target = next;
                        }
                        _ => break,
                    }
                }
                match self.kind(target, path)? {
                    Kind::Struct(_) | Kind::Forward => ParamType::StructPointer(self.name(target)),
                    _ => ParamType::Pointer,
                }
            }
            _ => ParamType::Other,
        })
    }

    fn not_a_prototype(&self, path: &str, id: u32) -> BtfError {
        BtfError::UnexpectedLayout {
            path: path.to_owned(),
            found: self.describe(id),
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

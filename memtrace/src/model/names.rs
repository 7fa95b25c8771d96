//! Shared region names: every mapping of `libc.so.6` or of one memfd points at one string, so
//! mapping a file, splitting or forking a region never allocates.

use std::collections::HashSet;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    known: HashSet<Arc<str>>,
}

impl Names {
    pub(crate) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.known.get(name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.known.insert(name.clone());
        name
    }
}

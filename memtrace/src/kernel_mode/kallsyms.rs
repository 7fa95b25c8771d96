//! Naming kernel addresses from `/proc/kallsyms`: `alloc_pipe_info+0x4d`, with the module for
//! module code.
//!
//! Hand-written: the format is one `ADDRESS TYPE NAME [MODULE]` line per symbol, and what is
//! needed is only a sorted table of text symbols to search.

use std::path::Path;

/// The kernel's text symbols, sorted by address.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    symbols: Vec<Symbol>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Symbol {
    address: u64,
    name: String,
    module: String,
}

/// An address named: the function and the offset into it, and its module ("" for the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolName {
    pub function: String,
    pub module: String,
}

impl KernelSymbols {
    pub const PATH: &'static str = "/proc/kallsyms";

    /// Reads `/proc/kallsyms`. Addresses read as 0 when `kptr_restrict` hides them from us;
    /// then nothing can be named, which [`Self::is_empty`] tells.
    pub fn load() -> std::io::Result<Self> {
        Self::load_from(Path::new(Self::PATH))
    }

    pub fn load_from(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<Symbol> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                // Text symbols only (t/T, and w/W weak ones): call sites are in code.
                if address == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                    return None;
                }
                let module = fields
                    .next()
                    .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned())
                    .unwrap_or_default();
                Some(Symbol {
                    address,
                    name: name.to_owned(),
                    module,
                })
            })
            .collect();
        symbols.sort_by_key(|symbol| symbol.address);
        Self { symbols }
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol an address falls in. Addresses past the last symbol of a region (module
    /// data, gaps) still get the nearest symbol below: kallsyms has no sizes, and a call site
    /// is always code.
    pub fn name(&self, address: u64) -> Option<SymbolName> {
        let index = self
            .symbols
            .partition_point(|symbol| symbol.address <= address)
            .checked_sub(1)?;
        let symbol = &self.symbols[index];
        Some(SymbolName {
            function: format!("{}+{:#x}", symbol.name, address - symbol.address),
            module: symbol.module.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81234500 t alloc_pipe_info
ffffffff81234600 T create_pipe_files
ffffffff82000000 D some_data
ffffffffc0100000 t loop_add\t[loop]
0000000000000000 T hidden
";

    #[test]
    fn an_address_is_named_by_the_symbol_below_it() {
        let symbols = KernelSymbols::parse(SAMPLE);
        assert_eq!(
            symbols.name(0xffff_ffff_8123_454d),
            Some(SymbolName {
                function: "alloc_pipe_info+0x4d".into(),
                module: String::new(),
            })
        );
        assert_eq!(
            symbols.name(0xffff_ffff_8123_4600).unwrap().function,
            "create_pipe_files+0x0"
        );
    }

    #[test]
    fn module_code_names_its_module() {
        let symbols = KernelSymbols::parse(SAMPLE);
        let name = symbols.name(0xffff_ffff_c010_0010).unwrap();
        assert_eq!(name.function, "loop_add+0x10");
        assert_eq!(name.module, "loop");
    }

    #[test]
    fn data_and_hidden_symbols_are_left_out() {
        let symbols = KernelSymbols::parse(SAMPLE);
        // 0xffffffff82000010 is past some_data, a data symbol: named by the code below it.
        assert!(symbols
            .name(0xffff_ffff_8200_0010)
            .unwrap()
            .function
            .starts_with("create_pipe_files+"));
        assert_eq!(symbols.name(0x10), None);
        assert!(KernelSymbols::parse("0000000000000000 T hidden\n").is_empty());
    }

    #[test]
    fn the_running_kernel_names_its_own_functions() {
        let Ok(symbols) = KernelSymbols::load() else {
            return;
        };
        if symbols.is_empty() {
            return; // kptr_restrict hides addresses from this user
        }
        assert!(symbols.symbols.iter().any(|s| s.name == "alloc_pipe_info"));
    }
}

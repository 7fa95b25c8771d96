//! One frame of an ia32 walk by DWARF CFI.
//!
//! framehop unwinds x86_64 and arm64 only. gimli (which framehop and addr2line build on)
//! finds a 32-bit module's FDE and evaluates its CFI into a row of rules for any
//! architecture; what it leaves to its user, and what is written here, is applying that row
//! to i386's registers: the CFA from `esp` or `ebp`, the return address and the caller's
//! `ebp` read from the captured stack. Only `ebp` is followed among the callee-saved
//! registers: it is the only one a CFA is computed from outside hand-written code, and the
//! frame-pointer step (for code without CFI) needs it.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, Encoding, EndianSlice, EvaluationResult,
    LittleEndian, Location, RegisterRule, UnwindContext, UnwindExpression, UnwindSection, Value,
    X86,
};

use super::{unwind_sections::CfiSections, ModuleMap, StackSample};

const WORD: u64 = 4;

/// The registers an ia32 walk keeps, as 32-bit values.
#[derive(Clone, Copy, Debug)]
pub(super) struct Regs {
    pub ip: u64,
    pub sp: u64,
    /// `None` once no rule told where the caller's value is.
    pub bp: Option<u64>,
}

/// Where one step led.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The caller's frame: its return address (now `regs.ip`).
    Caller(u64),
    /// This frame has no caller (`_start`, whose CFI leaves the return address undefined).
    Outermost,
    /// The frame could not be unwound: a rule needed stack bytes beyond the capture, or one
    /// this unwinder does not evaluate (a DWARF expression: PLT entries, signal frames).
    Lost,
}

/// Reusable state of gimli's CFI evaluation, so a step allocates nothing.
pub(super) type Context = UnwindContext<usize>;

/// Unwinds the frame at `lookup` (the ip for the innermost frame, a return address minus one
/// for the others) by the CFI of its module, `base_avma` being where the module's SVMA 0
/// lies. `None` when the module has no CFI for that address: the caller then tries frame
/// pointers.
pub(super) fn step(
    cfi: &CfiSections<'_>,
    base_avma: u64,
    lookup: u64,
    regs: &mut Regs,
    sample: &StackSample,
    context: &mut Context,
) -> Option<Step> {
    let svma = lookup.checked_sub(base_avma)?;
    let mut eh_frame = EhFrame::new(&cfi.eh_frame.data, LittleEndian);
    eh_frame.set_address_size(WORD as u8);
    let mut bases = BaseAddresses::default().set_eh_frame(cfi.eh_frame.svma.start);
    if let Some(text) = cfi.text_svma {
        bases = bases.set_text(text);
    }
    if let Some(got) = cfi.got_svma {
        bases = bases.set_got(got);
    }
    let fde = match cfi.eh_frame_hdr {
        Some(hdr) => {
            let bases = bases.clone().set_eh_frame_hdr(hdr.svma.start);
            let parsed = EhFrameHdr::new(&hdr.data, LittleEndian)
                .parse(&bases, WORD as u8)
                .ok()?;
            match parsed.table() {
                Some(table) => table
                    .fde_for_address(&eh_frame, &bases, svma, EhFrame::cie_from_offset)
                    .ok()?,
                None => eh_frame
                    .fde_for_address(&bases, svma, EhFrame::cie_from_offset)
                    .ok()?,
            }
        }
        None => eh_frame
            .fde_for_address(&bases, svma, EhFrame::cie_from_offset)
            .ok()?,
    };
    let row = fde
        .unwind_info_for_address(&eh_frame, &bases, context, svma)
        .ok()?;
    let encoding = fde.cie().encoding();
    let evaluate = |expression: &UnwindExpression<usize>, initial: Option<u64>, regs: &Regs| {
        evaluate(&eh_frame, encoding, expression, initial, regs, sample)
    };
    Some(apply(
        row.cfa(),
        row.register(X86::RA),
        row.register(X86::EBP),
        regs,
        sample,
        &evaluate,
    ))
}

/// What a DWARF expression of the CFI computes, with `initial` pushed first (the CFA, for a
/// register's rule); `None` when it needs what the walk does not have (another register,
/// memory beyond the captured stack). gcc gives ia32 functions that realign their stack
/// (every `main`) a CFA expression: `*(ebp - 4)`.
fn evaluate(
    eh_frame: &EhFrame<EndianSlice<'_, LittleEndian>>,
    encoding: Encoding,
    expression: &UnwindExpression<usize>,
    initial: Option<u64>,
    regs: &Regs,
    sample: &StackSample,
) -> Option<u64> {
    let mut evaluation = expression.get(eh_frame).ok()?.evaluation(encoding);
    if let Some(initial) = initial {
        evaluation.set_initial_value(initial);
    }
    let mut result = evaluation.evaluate().ok()?;
    loop {
        result = match result {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresRegister { register, .. } => {
                let value = match register {
                    X86::ESP => regs.sp,
                    X86::EBP => regs.bp?,
                    _ => return None,
                };
                evaluation
                    .resume_with_register(Value::Generic(value))
                    .ok()?
            }
            EvaluationResult::RequiresMemory { address, size, .. } if u64::from(size) == WORD => {
                let value = sample.read_word::<4>(address & 0xffff_ffff)?;
                evaluation.resume_with_memory(Value::Generic(value)).ok()?
            }
            _ => return None,
        };
    }
    match evaluation.as_result() {
        [piece] => match piece.location {
            Location::Address { address } => Some(address & 0xffff_ffff),
            Location::Value {
                value: Value::Generic(value),
            } => Some(value & 0xffff_ffff),
            _ => None,
        },
        _ => None,
    }
}

/// Evaluates a DWARF expression of the row being applied.
type Evaluate<'a> = dyn Fn(&UnwindExpression<usize>, Option<u64>, &Regs) -> Option<u64> + 'a;

/// Applies one row's rules to `regs`. A register without a rule (`None`) keeps its value:
/// only the return address always has one (every CIE gives it).
fn apply(
    cfa: &CfaRule<usize>,
    return_address: Option<RegisterRule<usize>>,
    frame_pointer: Option<RegisterRule<usize>>,
    regs: &mut Regs,
    sample: &StackSample,
    evaluate: &Evaluate<'_>,
) -> Step {
    let cfa = match *cfa {
        CfaRule::RegisterAndOffset { register, offset } => {
            let base = match register {
                X86::ESP => Some(regs.sp),
                X86::EBP => regs.bp,
                _ => None,
            };
            match base {
                Some(base) => base.wrapping_add_signed(offset) & 0xffff_ffff,
                None => return Step::Lost,
            }
        }
        CfaRule::Expression(ref expression) => match evaluate(expression, None, regs) {
            Some(cfa) => cfa,
            None => return Step::Lost,
        },
    };
    let read = |offset: i64| sample.read_word::<4>(cfa.wrapping_add_signed(offset));
    let caller_ip = match return_address {
        Some(RegisterRule::Offset(offset)) => match read(offset) {
            Some(ip) => ip,
            None => return Step::Lost,
        },
        Some(RegisterRule::Undefined) => return Step::Outermost,
        Some(RegisterRule::Expression(expression)) => {
            match evaluate(&expression, Some(cfa), regs).and_then(|at| sample.read_word::<4>(at)) {
                Some(ip) => ip,
                None => return Step::Lost,
            }
        }
        _ => return Step::Lost,
    };
    let caller_bp = match frame_pointer {
        Some(RegisterRule::Offset(offset)) => read(offset),
        Some(RegisterRule::ValOffset(offset)) => {
            Some(cfa.wrapping_add_signed(offset) & 0xffff_ffff)
        }
        None | Some(RegisterRule::SameValue) => regs.bp,
        Some(RegisterRule::Expression(expression)) => {
            evaluate(&expression, Some(cfa), regs).and_then(|at| sample.read_word::<4>(at))
        }
        Some(RegisterRule::ValExpression(expression)) => evaluate(&expression, Some(cfa), regs),
        _ => None,
    };
    finish(regs, cfa, caller_ip, caller_bp)
}

/// The innermost frame of a syscall made through the vDSO's `__kernel_vsyscall`, for when
/// the vDSO itself could not be read (its process was gone before memtrace looked: most
/// short-lived programs). The kernel fixes this frame: `__kernel_vsyscall` pushes `ecx`,
/// `edx` and `ebp` before `sysenter`/`syscall`/`int 0x80`, the kernel's fast-syscall entry
/// reads the sixth argument from that very stack slot, and it returns to the vDSO's landing
/// pad (which pops them and returns), where the sample's ip is. So the caller's `ebp` is at
/// `esp`, its return address at `esp + 12`: the vDSO's own CFI says the same there.
pub(super) fn kernel_vsyscall_step(regs: &mut Regs, sample: &StackSample) -> Step {
    apply(
        &CfaRule::RegisterAndOffset {
            register: X86::ESP,
            offset: 4 * WORD as i64,
        },
        Some(RegisterRule::Offset(-(WORD as i64))),
        Some(RegisterRule::Offset(-4 * WORD as i64)),
        regs,
        sample,
        &|_, _, _| None,
    )
}

/// The step by frame pointer, for code without CFI: `ebp` points at `[caller's ebp, return
/// address]` in code built with frame pointers.
pub(super) fn frame_pointer_step(
    regs: &mut Regs,
    sample: &StackSample,
    modules: &dyn ModuleMap,
) -> Step {
    let Some(bp) = regs
        .bp
        .filter(|&bp| bp >= regs.sp && bp.is_multiple_of(WORD))
    else {
        return Step::Lost;
    };
    let (Some(caller_bp), Some(caller_ip)) =
        (sample.read_word::<4>(bp), sample.read_word::<4>(bp + WORD))
    else {
        return Step::Lost;
    };
    // Any two words can look like a record: only one whose return address follows a call in
    // mapped code is taken for one.
    let in_code = caller_ip
        .checked_sub(1)
        .and_then(|call| modules.mapping_at(call))
        .is_some_and(|mapping| mapping.executable);
    if !in_code {
        return Step::Lost;
    }
    finish(regs, bp + 2 * WORD, caller_ip, Some(caller_bp))
}

/// Moves `regs` to the caller, whose stack pointer is the CFA; a caller whose stack is not
/// above this frame's is no caller (a corrupt rule or record would loop).
fn finish(regs: &mut Regs, cfa: u64, caller_ip: u64, caller_bp: Option<u64>) -> Step {
    if cfa <= regs.sp {
        return Step::Lost;
    }
    if caller_ip == 0 {
        return Step::Outermost;
    }
    *regs = Regs {
        ip: caller_ip,
        sp: cfa,
        bp: caller_bp,
    };
    Step::Caller(caller_ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::StackAbi;

    const SP: u64 = 0xffff_d000;

    fn sample(words: &[u32]) -> StackSample {
        StackSample {
            abi: StackAbi::I386,
            ip: 0xf7fc_4559,
            sp: SP,
            bp: 0,
            stack: words.iter().flat_map(|word| word.to_le_bytes()).collect(),
        }
    }

    /// `__kernel_vsyscall` after its three pushes: CFA = esp + 16, return address at CFA - 4,
    /// the caller's ebp saved at CFA - 16.
    #[test]
    fn a_row_moves_the_registers_to_the_caller() {
        let stack = sample(&[0xffff_d100, 0x2, 0x3, 0x5655_6123, 0x0]);
        let mut regs = Regs {
            ip: stack.ip,
            sp: SP,
            bp: Some(0),
        };
        let step = apply(
            &CfaRule::RegisterAndOffset {
                register: X86::ESP,
                offset: 16,
            },
            Some(RegisterRule::Offset(-4)),
            Some(RegisterRule::Offset(-16)),
            &mut regs,
            &stack,
            &|_, _, _| None,
        );
        assert_eq!(step, Step::Caller(0x5655_6123));
        assert_eq!(regs.sp, SP + 16);
        assert_eq!(regs.bp, Some(0xffff_d100));
    }

    #[test]
    fn the_vsyscall_frame_is_the_kernels() {
        let stack = sample(&[0xffff_d100, 0x2, 0x3, 0x5655_6123, 0x0]);
        let mut regs = Regs {
            ip: stack.ip,
            sp: SP,
            bp: Some(0),
        };
        assert_eq!(
            kernel_vsyscall_step(&mut regs, &stack),
            Step::Caller(0x5655_6123)
        );
        assert_eq!((regs.sp, regs.bp), (SP + 16, Some(0xffff_d100)));
    }

    /// gcc's CFA for an ia32 `main` that realigns its stack: `DW_OP_breg5 -4; DW_OP_deref`.
    #[test]
    fn a_cfa_expression_reads_the_saved_stack_pointer() {
        let section = [0x75, 0x7c, 0x06];
        let eh_frame = EhFrame::new(&section, LittleEndian);
        let encoding = Encoding {
            address_size: 4,
            format: gimli::Format::Dwarf32,
            version: 1,
        };
        let expression = UnwindExpression {
            offset: 0,
            length: section.len(),
        };
        let stack = sample(&[0, 0xffff_d0f0, 0]);
        let regs = Regs {
            ip: stack.ip,
            sp: SP,
            bp: Some(SP + 8),
        };
        let cfa = evaluate(&eh_frame, encoding, &expression, None, &regs, &stack);
        assert_eq!(cfa, Some(0xffff_d0f0));
        let without_ebp = Regs { bp: None, ..regs };
        assert_eq!(
            evaluate(&eh_frame, encoding, &expression, None, &without_ebp, &stack),
            None
        );
    }

    #[test]
    fn an_undefined_return_address_is_the_outermost_frame() {
        let stack = sample(&[0, 0]);
        let mut regs = Regs {
            ip: stack.ip,
            sp: SP,
            bp: Some(0),
        };
        let step = apply(
            &CfaRule::RegisterAndOffset {
                register: X86::ESP,
                offset: 4,
            },
            Some(RegisterRule::Undefined),
            Some(RegisterRule::SameValue),
            &mut regs,
            &stack,
            &|_, _, _| None,
        );
        assert_eq!(step, Step::Outermost);
    }

    #[test]
    fn a_return_address_beyond_the_capture_loses_the_walk() {
        let stack = sample(&[0, 0]);
        let mut regs = Regs {
            ip: stack.ip,
            sp: SP,
            bp: None,
        };
        let step = apply(
            &CfaRule::RegisterAndOffset {
                register: X86::ESP,
                offset: 0x100,
            },
            Some(RegisterRule::Offset(-4)),
            Some(RegisterRule::SameValue),
            &mut regs,
            &stack,
            &|_, _, _| None,
        );
        assert_eq!(step, Step::Lost);
        let by_ebp = apply(
            &CfaRule::RegisterAndOffset {
                register: X86::EBP,
                offset: 8,
            },
            Some(RegisterRule::Offset(-4)),
            Some(RegisterRule::Offset(-8)),
            &mut regs,
            &stack,
            &|_, _, _| None,
        );
        assert_eq!(by_ebp, Step::Lost, "ebp is unknown");
    }
}

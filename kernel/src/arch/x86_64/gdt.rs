//! Global descriptor table and task state segment.
//!
//! Layout (fixed, because `syscall`/`sysret` derive selectors from STAR by position):
//! null, kernel code, kernel data, user data, user code, TSS. The TSS carries three
//! interrupt stacks (double fault, NMI, machine check) so those handlers run on a known-good
//! stack even when the kernel stack has overflowed, and RSP0, the stack the CPU switches to
//! when an interrupt arrives in ring 3.

use core::cell::UnsafeCell;
use core::ptr::addr_of;
use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot for the double-fault handler.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot for the NMI handler.
pub const NMI_IST: u16 = 1;
/// IST slot for the machine-check handler.
pub const MACHINE_CHECK_IST: u16 = 2;

const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_BYTES]);

static mut IST_STACKS: [Stack; 3] = [const { Stack([0; IST_STACK_BYTES]) }; 3];

/// The TSS, mutable only through [`set_kernel_stack`].
struct TssCell(UnsafeCell<TaskStateSegment>);
// SAFETY: Xylem runs on one CPU and only `set_kernel_stack` writes the TSS, with interrupts
// masked by its callers (the context switch).
unsafe impl Sync for TssCell {}

static TSS: TssCell = TssCell(UnsafeCell::new(TaskStateSegment::new()));

/// The segment selectors, fixed after [`init`].
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

static GDT: Once<(GlobalDescriptorTable<8>, Selectors)> = Once::new();

/// Builds and loads the GDT and TSS. Call once, first thing at boot.
pub fn init() {
    // SAFETY: runs once on the boot CPU before interrupts are enabled, so nothing else is
    // reading the TSS; the IST stacks are static and used only by the CPU through the TSS.
    unsafe {
        let tss = &mut *TSS.0.get();
        for (slot, stack) in [DOUBLE_FAULT_IST, NMI_IST, MACHINE_CHECK_IST]
            .into_iter()
            .enumerate()
        {
            let base = VirtAddr::from_ptr(addr_of!(IST_STACKS[slot]));
            tss.interrupt_stack_table[stack as usize] = base + IST_STACK_BYTES as u64;
        }
    }
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // SAFETY: TSS is a static that lives forever and is never moved.
        let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(TSS.0.get()) });
        (
            gdt,
            Selectors {
                kernel_code,
                kernel_data,
                user_data,
                user_code,
                tss,
            },
        )
    });
    gdt.load();
    // SAFETY: the selectors point at valid descriptors of the GDT just loaded.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        SS::set_reg(selectors.kernel_data);
        load_tss(selectors.tss);
    }
}

/// The selectors; panics if called before [`init`] (a boot-order bug).
pub fn selectors() -> Selectors {
    GDT.get().expect("gdt::init not called").1
}

/// Sets RSP0, the stack the CPU loads on an interrupt or exception taken in ring 3.
pub fn set_kernel_stack(top: VirtAddr) {
    super::cpu::without_interrupts(|| {
        // SAFETY: single CPU, interrupts masked: no concurrent access to the TSS. The CPU
        // reads RSP0 only on a privilege change, which cannot happen while we write.
        unsafe { (*TSS.0.get()).privilege_stack_table[0] = top };
    });
}

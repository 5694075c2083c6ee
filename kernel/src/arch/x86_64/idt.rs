//! The interrupt descriptor table: every CPU exception and the device interrupt vectors.
//!
//! Exceptions raised in kernel mode are bugs: the handler prints a fault report (vector,
//! error code, RIP, CR2 for page faults, and a frame-pointer backtrace) and panics. Faults
//! raised in ring 3 belong to a cell; they go to the hook installed with
//! [`set_user_fault_handler`], which ends that cell and never returns here.
//!
//! Device interrupts (vectors [`IRQ_BASE`]..) dispatch through a small table of plain
//! function pointers registered with [`register_irq`].

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Once;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};
use x86_64::PrivilegeLevel;

use super::{apic, backtrace, gdt, serial};

/// First vector used for device interrupts (timer, UARTs, virtio).
pub const IRQ_BASE: u8 = 0x20;
/// How many device vectors exist.
pub const IRQ_COUNT: usize = 32;
/// The local APIC timer.
pub const TIMER_VECTOR: u8 = IRQ_BASE;
/// COM1 receive (ISA IRQ 4 through the I/O APIC).
pub const COM1_VECTOR: u8 = IRQ_BASE + 4;
/// The local APIC's spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// What a fault in ring 3 looked like, for the cell supervisor.
#[derive(Clone, Copy, Debug)]
pub struct UserFault {
    pub vector: u8,
    pub rip: u64,
    /// CR2 for page faults, else 0.
    pub addr: u64,
}

/// A CPU exception raised in kernel mode, kept for the crash record the panic handler
/// writes right after.
#[derive(Clone, Copy, Debug)]
pub struct KernelFault {
    pub vector: u8,
    pub rip: u64,
    pub cr2: u64,
    pub error_code: Option<u64>,
}

/// The last kernel fault: vector + 1 (0 = none), RIP, CR2, error code (u64::MAX = none).
/// Atomics, because the panic handler must read them without taking a lock.
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);
static FAULT_CR2: AtomicU64 = AtomicU64::new(0);
static FAULT_CODE: AtomicU64 = AtomicU64::new(u64::MAX);

fn note_kernel_fault(vector: u8, frame: &InterruptStackFrame, error_code: Option<u64>) {
    FAULT_RIP.store(frame.instruction_pointer.as_u64(), Ordering::SeqCst);
    FAULT_CR2.store(Cr2::read_raw(), Ordering::SeqCst);
    FAULT_CODE.store(error_code.unwrap_or(u64::MAX), Ordering::SeqCst);
    FAULT_VECTOR.store(u64::from(vector) + 1, Ordering::SeqCst);
}

/// The kernel-mode exception that led to the current panic, if any.
pub fn last_kernel_fault() -> Option<KernelFault> {
    let vector = FAULT_VECTOR.load(Ordering::SeqCst).checked_sub(1)?;
    let code = FAULT_CODE.load(Ordering::SeqCst);
    Some(KernelFault {
        vector: vector as u8,
        rip: FAULT_RIP.load(Ordering::SeqCst),
        cr2: FAULT_CR2.load(Ordering::SeqCst),
        error_code: (code != u64::MAX).then_some(code),
    })
}

/// Called for a ring-3 fault; must not return to the faulting code (it switches away).
pub type UserFaultHandler = fn(UserFault) -> !;

static USER_FAULT_HANDLER: Once<UserFaultHandler> = Once::new();

/// Installs the handler for faults raised in ring 3.
pub fn set_user_fault_handler(handler: UserFaultHandler) {
    USER_FAULT_HANDLER.call_once(|| handler);
}

type IrqHandler = fn();
static IRQ_HANDLERS: [AtomicUsize; IRQ_COUNT] = [const { AtomicUsize::new(0) }; IRQ_COUNT];
/// Device interrupts that arrived with no handler registered (kept for debugging a
/// misrouted device; never expected).
static UNHANDLED_IRQS: AtomicU64 = AtomicU64::new(0);

/// Registers the handler for a device vector. The handler runs with interrupts masked and
/// must not block; EOI is sent by the dispatcher after it returns.
pub fn register_irq(vector: u8, handler: IrqHandler) {
    let slot = usize::from(vector - IRQ_BASE);
    assert!(
        slot < IRQ_COUNT,
        "vector {vector:#x} is not a device vector"
    );
    IRQ_HANDLERS[slot].store(handler as usize, Ordering::Release);
}

/// Runs after every device interrupt and timer tick, once EOI is sent: the scheduler's
/// chance to switch to a task the interrupt woke.
static IRQ_EXIT_HOOK: Once<IrqHandler> = Once::new();

/// Installs the interrupt-exit hook.
pub fn set_irq_exit_hook(hook: IrqHandler) {
    IRQ_EXIT_HOOK.call_once(|| hook);
}

fn irq_exit() {
    if let Some(hook) = IRQ_EXIT_HOOK.get() {
        hook();
    }
}

fn dispatch_irq(vector: u8) {
    let raw = IRQ_HANDLERS[usize::from(vector - IRQ_BASE)].load(Ordering::Acquire);
    if raw == 0 {
        UNHANDLED_IRQS.fetch_add(1, Ordering::Relaxed);
    } else {
        // SAFETY: only `register_irq` stores into the table, and it stores `fn()` pointers.
        let handler: IrqHandler = unsafe { core::mem::transmute::<usize, IrqHandler>(raw) };
        handler();
    }
    apic::end_of_interrupt();
    irq_exit();
}

/// The timer runs its handler after EOI, because the handler may switch tasks and the
/// task it switches to must not inherit an un-acknowledged interrupt.
static TIMER_HANDLER: Once<IrqHandler> = Once::new();

/// Installs the timer handler (tick accounting and preemption).
pub fn set_timer_handler(handler: IrqHandler) {
    TIMER_HANDLER.call_once(|| handler);
}

extern "x86-interrupt" fn timer_entry(_frame: InterruptStackFrame) {
    apic::end_of_interrupt();
    if let Some(handler) = TIMER_HANDLER.get() {
        handler();
    }
    irq_exit();
}

extern "x86-interrupt" fn spurious_entry(_frame: InterruptStackFrame) {
    // Spurious interrupts must not be acknowledged.
}

macro_rules! irq_entries {
    ($($name:ident = $offset:expr),* $(,)?) => {
        $(extern "x86-interrupt" fn $name(_frame: InterruptStackFrame) {
            dispatch_irq(IRQ_BASE + $offset);
        })*
        const IRQ_ENTRIES: &[(u8, extern "x86-interrupt" fn(InterruptStackFrame))] =
            &[$((IRQ_BASE + $offset, $name)),*];
    };
}

irq_entries!(
    irq1 = 1,
    irq2 = 2,
    irq3 = 3,
    irq4 = 4,
    irq5 = 5,
    irq6 = 6,
    irq7 = 7,
    irq8 = 8,
    irq9 = 9,
    irq10 = 10,
    irq11 = 11,
    irq12 = 12,
    irq13 = 13,
    irq14 = 14,
    irq15 = 15,
    irq16 = 16,
    irq17 = 17,
    irq18 = 18,
    irq19 = 19,
    irq20 = 20,
    irq21 = 21,
    irq22 = 22,
    irq23 = 23,
    irq24 = 24,
    irq25 = 25,
    irq26 = 26,
    irq27 = 27,
    irq28 = 28,
    irq29 = 29,
    irq30 = 30,
    irq31 = 31,
);

static IDT: Once<InterruptDescriptorTable> = Once::new();

/// Builds and loads the IDT. Call after [`gdt::init`].
pub fn init() {
    IDT.call_once(build).load();
}

fn build() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    idt.divide_error.set_handler_fn(divide_error);
    idt.debug.set_handler_fn(debug);
    idt.breakpoint.set_handler_fn(breakpoint);
    idt.overflow.set_handler_fn(overflow);
    idt.bound_range_exceeded.set_handler_fn(bound_range);
    idt.invalid_opcode.set_handler_fn(invalid_opcode);
    idt.device_not_available
        .set_handler_fn(device_not_available);
    idt.invalid_tss.set_handler_fn(invalid_tss);
    idt.segment_not_present.set_handler_fn(segment_not_present);
    idt.stack_segment_fault.set_handler_fn(stack_segment);
    idt.general_protection_fault
        .set_handler_fn(general_protection);
    idt.page_fault.set_handler_fn(page_fault);
    idt.x87_floating_point.set_handler_fn(x87_floating_point);
    idt.alignment_check.set_handler_fn(alignment_check);
    idt.simd_floating_point.set_handler_fn(simd_floating_point);
    idt.virtualization.set_handler_fn(virtualization);
    idt.cp_protection_exception
        .set_handler_fn(control_protection);
    idt.hv_injection_exception.set_handler_fn(hv_injection);
    idt.vmm_communication_exception
        .set_handler_fn(vmm_communication);
    idt.security_exception.set_handler_fn(security);
    // SAFETY: each IST index names a stack gdt::init placed in the TSS, used by no other
    // handler.
    unsafe {
        idt.double_fault
            .set_handler_fn(double_fault)
            .set_stack_index(gdt::DOUBLE_FAULT_IST);
        idt.non_maskable_interrupt
            .set_handler_fn(nmi)
            .set_stack_index(gdt::NMI_IST);
        idt.machine_check
            .set_handler_fn(machine_check)
            .set_stack_index(gdt::MACHINE_CHECK_IST);
    }
    idt[TIMER_VECTOR].set_handler_fn(timer_entry);
    for &(vector, entry) in IRQ_ENTRIES {
        idt[vector].set_handler_fn(entry);
    }
    idt[SPURIOUS_VECTOR].set_handler_fn(spurious_entry);
    idt
}

/// Reports a fault. Ring-3 faults go to the cell supervisor; kernel faults panic.
fn fault(
    name: &str,
    vector: u8,
    frame: &InterruptStackFrame,
    error_code: Option<u64>,
    addr: Option<u64>,
) {
    let from_user = frame.code_segment.rpl() == PrivilegeLevel::Ring3;
    if from_user {
        if let Some(handler) = USER_FAULT_HANDLER.get() {
            handler(UserFault {
                vector,
                rip: frame.instruction_pointer.as_u64(),
                addr: addr.unwrap_or(0),
            });
        }
    }
    report(name, vector, frame, error_code, addr, from_user);
    note_kernel_fault(vector, frame, error_code);
    panic!(
        "{name} (vector {vector}) in {} mode",
        if from_user { "user" } else { "kernel" }
    );
}

fn report(
    name: &str,
    vector: u8,
    frame: &InterruptStackFrame,
    error_code: Option<u64>,
    addr: Option<u64>,
    from_user: bool,
) {
    use core::fmt::Write;
    let mut w = serial::emergency_writer();
    let _ = writeln!(w, "\n!!! CPU EXCEPTION: {name}");
    let _ = write!(
        w,
        "    vector={vector} rip={:#018x}",
        frame.instruction_pointer.as_u64()
    );
    if let Some(code) = error_code {
        let _ = write!(w, " error_code={code:#x}");
    }
    if let Some(addr) = addr {
        let _ = write!(w, " cr2={addr:#018x}");
    }
    let _ = writeln!(
        w,
        "\n    rsp={:#018x} cs={:#x} rflags={:#x} mode={}",
        frame.stack_pointer.as_u64(),
        frame.code_segment.0,
        frame.cpu_flags.bits(),
        if from_user { "user" } else { "kernel" }
    );
    if !from_user {
        backtrace::print_from_interrupt(&mut w, frame.instruction_pointer.as_u64());
    }
}

macro_rules! fault_handler {
    ($name:ident, $text:expr, $vector:expr) => {
        extern "x86-interrupt" fn $name(frame: InterruptStackFrame) {
            fault($text, $vector, &frame, None, None);
        }
    };
    ($name:ident, $text:expr, $vector:expr, error_code) => {
        extern "x86-interrupt" fn $name(frame: InterruptStackFrame, code: u64) {
            fault($text, $vector, &frame, Some(code), None);
        }
    };
}

fault_handler!(divide_error, "divide error (#DE)", 0);
fault_handler!(debug, "debug (#DB)", 1);
fault_handler!(nmi, "non-maskable interrupt", 2);
fault_handler!(breakpoint, "breakpoint (#BP)", 3);
fault_handler!(overflow, "overflow (#OF)", 4);
fault_handler!(bound_range, "bound range exceeded (#BR)", 5);
fault_handler!(invalid_opcode, "invalid opcode (#UD)", 6);
fault_handler!(device_not_available, "device not available (#NM)", 7);
fault_handler!(invalid_tss, "invalid TSS (#TS)", 10, error_code);
fault_handler!(
    segment_not_present,
    "segment not present (#NP)",
    11,
    error_code
);
fault_handler!(stack_segment, "stack-segment fault (#SS)", 12, error_code);
fault_handler!(
    general_protection,
    "general protection fault (#GP)",
    13,
    error_code
);
fault_handler!(x87_floating_point, "x87 floating point (#MF)", 16);
fault_handler!(alignment_check, "alignment check (#AC)", 17, error_code);
fault_handler!(simd_floating_point, "SIMD floating point (#XM)", 19);
fault_handler!(virtualization, "virtualization (#VE)", 20);
fault_handler!(
    control_protection,
    "control protection (#CP)",
    21,
    error_code
);
fault_handler!(hv_injection, "hypervisor injection (#HV)", 28);
fault_handler!(vmm_communication, "VMM communication (#VC)", 29, error_code);
fault_handler!(security, "security exception (#SX)", 30, error_code);

extern "x86-interrupt" fn page_fault(frame: InterruptStackFrame, code: PageFaultErrorCode) {
    let addr = Cr2::read_raw();
    fault(
        "page fault (#PF)",
        14,
        &frame,
        Some(code.bits()),
        Some(addr),
    );
}

extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    // A double fault is always the kernel's problem, even if it began in ring 3.
    report("double fault (#DF)", 8, &frame, Some(code), None, false);
    note_kernel_fault(8, &frame, Some(code));
    panic!("double fault");
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    report("machine check (#MC)", 18, &frame, None, None, false);
    note_kernel_fault(18, &frame, None);
    panic!("machine check");
}

//! Ring 3: the `syscall`/`sysret` entry, the first entry into user mode, and the kernel
//! stack the CPU uses when a cell traps.
//!
//! GDT layout (see gdt.rs) puts user data right before user code, which is what `sysret`
//! needs: STAR[63:48] = kernel data (0x10), so user SS = 0x18|3 and user CS = 0x20|3.
//! SFMASK clears IF, TF, DF and AC on entry, so the entry stub runs with interrupts off until
//! it is on the task's kernel stack; the dispatcher decides when to enable them.
//!
//! The kernel never dereferences user pointers: the dispatcher receives plain numbers and
//! the cell layer copies through `mm::address_space`, which walks the cell's page tables.
//!
//! FPU/SSE: the kernel and payloads are soft-float, so there is no FPU state to switch. To
//! keep it that way, CR0.EM is set and CR4.OSFXSR is cleared: any x87/SSE instruction in a
//! cell raises #NM or #UD and ends that cell, instead of leaking register state between cells.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::VirtAddr;

use super::gdt;

/// User code selector (GDT index 4, RPL 3).
pub const USER_CS: u64 = 0x23;
/// User data/stack selector (GDT index 3, RPL 3).
pub const USER_SS: u64 = 0x1b;

/// The registers of a system call, as the entry stub saved them (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct SyscallFrame {
    /// Syscall number on entry; the return value on exit.
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub r10: u64,
    pub r8: u64,
    pub r9: u64,
    /// User RFLAGS (restored by `sysret`).
    pub r11: u64,
    /// User RIP (restored by `sysret`).
    pub rcx: u64,
    pub user_rsp: u64,
}

type SyscallHandler = fn(&mut SyscallFrame);

static HANDLER: Once<SyscallHandler> = Once::new();
/// Top of the running task's kernel stack: where `syscall` switches to.
static KERNEL_RSP: AtomicU64 = AtomicU64::new(0);
/// Scratch slot for the user RSP during the first instructions of the entry stub (one CPU,
/// interrupts off there, so one slot suffices).
static USER_RSP_SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Enables `syscall`, NX, and the no-FPU policy. Call after gdt::init.
pub fn init(handler: SyscallHandler) {
    HANDLER.call_once(|| handler);
    let sel = gdt::selectors();
    assert_eq!(
        u64::from(sel.user_code.0),
        USER_CS,
        "GDT layout does not match USER_CS"
    );
    assert_eq!(
        u64::from(sel.user_data.0),
        USER_SS,
        "GDT layout does not match USER_SS"
    );
    // SAFETY: enabling SCE and NXE changes no existing mapping's meaning: NX bits the
    // bootloader set become enforced, which is what they were set for.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS | EferFlags::NO_EXECUTE_ENABLE))
    };
    if let Err(err) = Star::write(
        sel.user_code,
        sel.user_data,
        sel.kernel_code,
        sel.kernel_data,
    ) {
        panic!("STAR rejected the GDT layout: {err}");
    }
    LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::ALIGNMENT_CHECK,
    );
    // SAFETY: the kernel is soft-float and never executes x87/SSE instructions, so making
    // them fault affects only cells, which is the intent (see module docs).
    unsafe {
        Cr0::update(|f| {
            f.insert(Cr0Flags::EMULATE_COPROCESSOR);
            f.remove(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| f.remove(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
}

/// Sets the kernel stack used when the running task enters the kernel from ring 3 (by
/// `syscall` or by an interrupt or exception). The scheduler calls this on every switch.
pub fn set_task_kernel_stack(top: u64) {
    KERNEL_RSP.store(top, Ordering::Relaxed);
    gdt::set_kernel_stack(VirtAddr::new(top));
}

extern "C" fn dispatch(frame: &mut SyscallFrame) {
    let handler = HANDLER.get().expect("syscall before syscall::init");
    handler(frame);
    // `sysret` to a non-canonical RIP would fault in ring 0 on the user's stack; RCX comes
    // from the `syscall` instruction itself, so this holds unless the kernel broke it.
    assert!(
        frame.rcx < 0x0000_8000_0000_0000,
        "sysret to non-user RIP {:#x}",
        frame.rcx
    );
    x86_64::instructions::interrupts::disable();
}

#[unsafe(naked)]
unsafe extern "C" fn syscall_entry() {
    naked_asm!(
        "mov [rip + {scratch}], rsp",
        "mov rsp, [rip + {kernel_rsp}]",
        "push qword ptr [rip + {scratch}]",
        "push rcx",
        "push r11",
        "push r9",
        "push r8",
        "push r10",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rax",
        "mov rdi, rsp",
        "call {dispatch}",
        "pop rax",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop r10",
        "pop r8",
        "pop r9",
        "pop r11",
        "pop rcx",
        "pop rsp",
        "sysretq",
        scratch = sym USER_RSP_SCRATCH,
        kernel_rsp = sym KERNEL_RSP,
        dispatch = sym dispatch,
    )
}

/// Drops to ring 3 at `rip` with stack `rsp`, interrupts enabled, all other registers zero.
///
/// # Safety
///
/// The running task's address space (CR3) must be the cell's, mapping `rip` executable and
/// `rsp` writable for ring 3, and it must stay alive while the task can run; the task's kernel
/// stack must be set in the TSS ([`set_task_kernel_stack`]) so syscalls and interrupts from
/// ring 3 land on it.
pub unsafe fn enter_user(rip: u64, rsp: u64) -> ! {
    assert!(
        rip < 0x0000_8000_0000_0000 && rsp < 0x0000_8000_0000_0000,
        "user entry in the kernel half"
    );
    // SAFETY: the frame built by iretq_to_user selects the user segments of our GDT; RIP
    // and RSP are lower-half addresses (asserted above) that the loaded cell tables map (the
    // caller's contract), so whatever the user code does next can only fault in ring 3.
    unsafe { iretq_to_user(rip, rsp) }
}

#[unsafe(naked)]
unsafe extern "C" fn iretq_to_user(rip: u64, rsp: u64) -> ! {
    naked_asm!(
        "cli",
        "push {ss}",
        "push rsi",
        "push 0x202",
        "push {cs}",
        "push rdi",
        "xor eax, eax",
        "xor ebx, ebx",
        "xor ecx, ecx",
        "xor edx, edx",
        "xor esi, esi",
        "xor edi, edi",
        "xor ebp, ebp",
        "xor r8d, r8d",
        "xor r9d, r9d",
        "xor r10d, r10d",
        "xor r11d, r11d",
        "xor r12d, r12d",
        "xor r13d, r13d",
        "xor r14d, r14d",
        "xor r15d, r15d",
        "iretq",
        ss = const USER_SS,
        cs = const USER_CS,
    )
}

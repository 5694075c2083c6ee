//! Memory and identity syscalls: `mem_map`, `mem_unmap`, `cell_info`.
//!
//! `mem_map` maps anonymous zeroed read-write pages (NX) in the cell's map window, chosen
//! first-fit by `kcore::map_regions`. Pages are taken eagerly, so `ENOMEM` is reported at the
//! call — beyond the cell's limit ([`io::Limits`]) or when the node has no free frames — and
//! never later as a fault. Large maps are done in chunks of [`MAP_CHUNK_PAGES`] with
//! interrupts masked only per chunk; a cell killed between chunks loses nothing, since every
//! mapped frame already belongs to its address space. Node-wide exhaustion makes the frame
//! allocator raise `memory_low`; the node itself keeps serving (the kernel heap is separate).

use ::cell::abi::{self, CellInfo, Errno, ShortName};
use kcore::map_regions::RegionError;

use super::io::{self, with_cell};
use super::table;
use crate::mm::address_space::PagePerm;
use crate::mm::PAGE_BYTES;
use crate::{netstack, node};

/// Pages mapped (zeroed) or unmapped per interrupts-masked step.
pub const MAP_CHUNK_PAGES: u64 = 64;
/// Page tables one map may need beyond one per 512 pages (a PT at each end, a PD, a PDPT).
const TABLE_SLACK_FRAMES: u64 = 3;

fn region_errno(error: RegionError) -> Errno {
    match error {
        RegionError::NoSpace | RegionError::TooMany | RegionError::NoMemory => Errno::ENOMEM,
        RegionError::BadLength | RegionError::NotMapped => Errno::EINVAL,
    }
}

/// `mem_map(len, flags) -> address`.
pub fn sys_mem_map(len: u64, flags: u64) -> Result<u64, Errno> {
    if flags != 0 {
        return Err(Errno::EINVAL);
    }
    let pages = abi::map_len_pages(len).ok_or(Errno::EINVAL)?;
    if pages > abi::MAX_MAP_BYTES / PAGE_BYTES {
        return Err(Errno::ENOMEM);
    }
    let worst_frames = pages + pages.div_ceil(512) + TABLE_SLACK_FRAMES;
    let addr = with_cell(|parts| {
        // The cell's limit is checked up front; the node's frames as they are taken (so
        // running the node dry raises `memory_low`, and the map is rolled back).
        io::check_room(
            parts.limits,
            parts.space,
            parts.io,
            worst_frames * PAGE_BYTES,
        )?;
        parts.io.maps.reserve(pages).map_err(region_errno)
    })?;
    let mut done = 0;
    while done < pages {
        let step = (pages - done).min(MAP_CHUNK_PAGES);
        let mapped = with_cell(|parts| {
            let before = parts.space.frames_held();
            let mut result = Ok(());
            for index in done..done + step {
                if let Err(err) = parts
                    .space
                    .map_zeroed(addr + index * PAGE_BYTES, PagePerm::ReadWrite)
                {
                    result = Err(err);
                    break;
                }
            }
            parts
                .cell
                .frames_acquired(parts.space.frames_held() - before);
            result.map_err(|_| Errno::ENOMEM)
        });
        if let Err(errno) = mapped {
            unmap_range(addr, pages);
            return Err(errno);
        }
        done += step;
    }
    Ok(addr)
}

/// `mem_unmap(addr, len) -> 0`: exactly a range `mem_map` returned.
pub fn sys_mem_unmap(addr: u64, len: u64) -> Result<u64, Errno> {
    let pages = abi::map_len_pages(len).ok_or(Errno::EINVAL)?;
    if !addr.is_multiple_of(PAGE_BYTES) {
        return Err(Errno::EINVAL);
    }
    with_cell(|parts| parts.io.maps.release(addr, pages).map_err(region_errno))?;
    unmap_pages(addr, pages);
    Ok(0)
}

/// Undoes a failed `mem_map`: unmaps whatever was mapped and releases the reservation.
fn unmap_range(addr: u64, pages: u64) {
    unmap_pages(addr, pages);
    let _ = with_cell(|parts| parts.io.maps.release(addr, pages).map_err(region_errno));
}

/// Unmaps the mapped pages of `[addr, addr + pages)`, in chunks, with frame accounting.
fn unmap_pages(addr: u64, pages: u64) {
    let mut done = 0;
    while done < pages {
        let step = (pages - done).min(MAP_CHUNK_PAGES * 4);
        let _ = with_cell(|parts| {
            let before = parts.space.frames_held();
            for index in done..done + step {
                // Pages a failed map never reached are simply not there.
                let _ = parts.space.unmap(addr + index * PAGE_BYTES);
            }
            let released = before - parts.space.frames_held();
            parts
                .cell
                .frames_released(released)
                .map_err(|_| Errno::EFAULT)
        });
        done += step;
    }
}

/// `cell_info(buf, cap) -> CELL_INFO_BYTES`.
pub fn sys_cell_info(addr: u64, cap: u64) -> Result<u64, Errno> {
    if cap < abi::CELL_INFO_BYTES as u64 {
        return Err(Errno::ERANGE);
    }
    abi::user_range(addr, abi::CELL_INFO_BYTES as u64)?;
    let config = node::config();
    let node_ip = netstack::is_up()
        .then(|| netstack::ip_of(config.id))
        .flatten()
        .map_or([0; 4], |ip| ip.octets());
    table::with_current(|record| {
        let id = record.cell.id().0;
        let name = ShortName::new(&record.name);
        let limits = record.limits;
        let parts = record.parts()?;
        let info = CellInfo {
            cell_id: id,
            node_id: config.id,
            memory_limit_bytes: limits.memory_bytes(),
            memory_used_bytes: io::used_bytes(parts.space, parts.io),
            map_bytes: parts.io.maps.pages() * PAGE_BYTES,
            node_ip,
            name,
            node_name: ShortName::new(node::name()),
        };
        parts
            .space
            .copy_to_user(addr, &info.encode())
            .map_err(|_| Errno::EFAULT)?;
        Ok(abi::CELL_INFO_BYTES as u64)
    })
}

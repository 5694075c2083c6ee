//! A cell's descriptor table: small numbers naming the objects a cell holds (its sockets).
//!
//! [`FdTable<T>`] is generic over the object so the kernel's sockets and the host tests use
//! the same code. Rules (the cell ABI, `docs/syscalls.md`):
//!
//! 1. Numbers below `first` are reserved (0 is unused, 1 and 2 are the log), so the table
//!    never hands them out and never finds an object under them.
//! 2. [`FdTable::insert`] gives the lowest free number, as POSIX does, so a cell that closes
//!    and opens in a loop reuses the same few numbers and the table does not grow.
//! 3. At most `capacity` objects are held; one more is [`FdError::TableFull`] (`EMFILE`) and
//!    the object comes back to the caller untouched.
//! 4. [`FdTable::remove`] returns the object: whoever removes it decides when it drops.
//!    Dropping the table drops every object it holds, so a cell's sockets go away with it
//!    however the cell ends (the objects release their resources in `Drop`).
//!
//! The slots are a `Vec<Option<T>>` that only grows (to the highest number used plus one,
//! at most `capacity` slots): after warm-up, open/close cycles touch no heap memory.

use alloc::vec::Vec;

/// Why a descriptor operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdError {
    /// The number names no open object (`EBADF`).
    BadFd,
    /// `capacity` objects are open already (`EMFILE`).
    TableFull,
    /// The slot vector could not grow (`ENOMEM`).
    NoMemory,
}

/// Open objects by number. See the module docs.
pub struct FdTable<T> {
    slots: Vec<Option<T>>,
    first: u64,
    capacity: usize,
    open: usize,
}

impl<T> FdTable<T> {
    /// An empty table handing out numbers from `first`, holding at most `capacity` objects.
    pub const fn new(first: u64, capacity: usize) -> FdTable<T> {
        FdTable {
            slots: Vec::new(),
            first,
            capacity,
            open: 0,
        }
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.open
    }

    /// Whether no object is held.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// The most objects the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn index(&self, fd: u64) -> Option<usize> {
        let index = usize::try_from(fd.checked_sub(self.first)?).ok()?;
        (index < self.slots.len()).then_some(index)
    }

    /// Stores `object` under the lowest free number and returns that number. On error the
    /// object is handed back.
    pub fn insert(&mut self, object: T) -> Result<u64, (FdError, T)> {
        if self.open >= self.capacity {
            return Err((FdError::TableFull, object));
        }
        let index = match self.slots.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                debug_assert!(self.slots.len() < self.capacity, "open count out of step");
                if self.slots.try_reserve(1).is_err() {
                    return Err((FdError::NoMemory, object));
                }
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[index] = Some(object);
        self.open += 1;
        Ok(self.first + index as u64)
    }

    /// The object under `fd`.
    pub fn get(&self, fd: u64) -> Result<&T, FdError> {
        self.index(fd)
            .and_then(|i| self.slots[i].as_ref())
            .ok_or(FdError::BadFd)
    }

    /// The object under `fd`, mutably.
    pub fn get_mut(&mut self, fd: u64) -> Result<&mut T, FdError> {
        let index = self.index(fd).ok_or(FdError::BadFd)?;
        self.slots[index].as_mut().ok_or(FdError::BadFd)
    }

    /// Takes the object under `fd` out of the table (the number becomes free).
    pub fn remove(&mut self, fd: u64) -> Result<T, FdError> {
        let index = self.index(fd).ok_or(FdError::BadFd)?;
        let object = self.slots[index].take().ok_or(FdError::BadFd)?;
        self.open -= 1;
        Ok(object)
    }

    /// Every open number with its object, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let first = self.first;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, slot)| slot.as_ref().map(|o| (first + i as u64, o)))
    }

    /// Every open number with its object, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        let first = self.first;
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(move |(i, slot)| slot.as_mut().map(|o| (first + i as u64, o)))
    }

    /// Removes and drops every object (in number order).
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            drop(slot.take());
        }
        self.open = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::cell::Cell;

    /// Counts its drops, to prove objects are released exactly once.
    struct Probe(Rc<Cell<u32>>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn numbers_start_after_the_reserved_ones_and_reuse_the_lowest() {
        let mut table = FdTable::new(3, 8);
        assert_eq!(table.insert('a').ok(), Some(3));
        assert_eq!(table.insert('b').ok(), Some(4));
        assert_eq!(table.insert('c').ok(), Some(5));
        assert_eq!(table.remove(4), Ok('b'));
        assert_eq!(table.insert('d').ok(), Some(4), "lowest free number first");
        assert_eq!(table.insert('e').ok(), Some(6));
        assert_eq!(table.len(), 4);
        let listed: alloc::vec::Vec<(u64, char)> = table.iter().map(|(fd, c)| (fd, *c)).collect();
        assert_eq!(listed, [(3, 'a'), (4, 'd'), (5, 'c'), (6, 'e')]);
    }

    #[test]
    fn reserved_unknown_and_closed_numbers_are_bad() {
        let mut table = FdTable::new(3, 4);
        let fd = table.insert(1u8).unwrap_or_else(|_| panic!("insert"));
        for bad in [0, 1, 2, 4, 99, u64::MAX] {
            assert_eq!(table.get(bad), Err(FdError::BadFd), "fd {bad}");
            assert_eq!(table.get_mut(bad).err(), Some(FdError::BadFd));
            assert_eq!(table.remove(bad), Err(FdError::BadFd));
        }
        assert_eq!(table.remove(fd), Ok(1));
        assert_eq!(table.get(fd), Err(FdError::BadFd), "closed twice");
        assert_eq!(table.remove(fd), Err(FdError::BadFd));
        assert!(table.is_empty());
    }

    #[test]
    fn a_full_table_refuses_and_hands_the_object_back() {
        let drops = Rc::new(Cell::new(0));
        let mut table = FdTable::new(3, 2);
        assert!(table.insert(Probe(drops.clone())).is_ok());
        assert!(table.insert(Probe(drops.clone())).is_ok());
        let (err, back) = match table.insert(Probe(drops.clone())) {
            Err(e) => e,
            Ok(fd) => panic!("third insert got fd {fd}"),
        };
        assert_eq!(err, FdError::TableFull);
        assert_eq!(
            drops.get(),
            0,
            "the refused object is not dropped by the table"
        );
        drop(back);
        assert_eq!(drops.get(), 1);
        assert_eq!(table.len(), 2);
        assert_eq!(table.capacity(), 2);
    }

    #[test]
    fn dropping_or_clearing_the_table_drops_every_object_once() {
        let drops = Rc::new(Cell::new(0));
        let mut table = FdTable::new(3, 64);
        for _ in 0..64 {
            assert!(table.insert(Probe(drops.clone())).is_ok());
        }
        let removed = table.remove(10).unwrap_or_else(|_| panic!("fd 10 open"));
        drop(table);
        assert_eq!(drops.get(), 63, "the table dropped what it held");
        drop(removed);
        assert_eq!(drops.get(), 64);

        let mut table = FdTable::new(3, 4);
        for _ in 0..3 {
            assert!(table.insert(Probe(drops.clone())).is_ok());
        }
        table.clear();
        assert_eq!((drops.get(), table.len()), (67, 0));
        assert_eq!(table.insert(Probe(drops.clone())).ok(), Some(3));
    }

    #[test]
    fn open_close_cycles_do_not_grow_the_slots() {
        let mut table = FdTable::new(3, 128);
        for _ in 0..10 {
            assert!(table.insert(0u32).is_ok());
        }
        let slots = table.slots.len();
        for round in 0..10_000u32 {
            let fd = table.insert(round).unwrap_or_else(|_| panic!("insert"));
            assert_eq!(fd, 13);
            assert_eq!(table.remove(fd), Ok(round));
        }
        assert_eq!(table.slots.len(), slots + 1);
    }

    #[test]
    fn get_mut_changes_the_stored_object() {
        let mut table = FdTable::new(3, 4);
        let fd = table.insert(1u32).unwrap_or_else(|_| panic!("insert"));
        *table.get_mut(fd).unwrap() += 41;
        assert_eq!(table.get(fd), Ok(&42));
        for (_, value) in table.iter_mut() {
            *value += 1;
        }
        assert_eq!(table.get(fd), Ok(&43));
    }
}

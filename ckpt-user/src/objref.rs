//! The objref table: every shared object is saved once, at its first encounter,
//! under an objref; every later encounter records only the objref.
//!
//! This is the CR_FD_OBJREF rule of the linux-cr patches (`objhash.c`): at
//! checkpoint the table is keyed by the kernel object's identity (its pointer);
//! at restart the same objrefs key the objects being recreated. Inodes and open
//! file descriptions share one numbering, as in linux-cr's single objhash.

use std::hash::Hash;

use foldhash::{HashMap, HashMapExt as _};

/// The objref type of the image format: one numbering for inodes, open files
/// and shared memory.
pub use ckpt_common::image::ObjRef;

/// What an encounter found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encounter {
    /// Not seen before: the caller saves the object under this objref.
    First(ObjRef),
    /// Seen before: the caller records only the objref.
    Again(ObjRef),
}

impl Encounter {
    pub fn objref(self) -> ObjRef {
        match self {
            Encounter::First(r) | Encounter::Again(r) => r,
        }
    }
}

/// Checkpoint side: kernel identity → objref, numbered from 1 in encounter order.
#[derive(Debug)]
pub struct ObjRefTable<K> {
    next: u32,
    refs: HashMap<K, ObjRef>,
}

impl<K> Default for ObjRefTable<K> {
    fn default() -> Self {
        ObjRefTable {
            next: 1,
            refs: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> ObjRefTable<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks `key` up, registering it under a new objref on first encounter.
    pub fn encounter(&mut self, key: K) -> Encounter {
        if let Some(r) = self.refs.get(&key) {
            return Encounter::Again(*r);
        }
        let r = ObjRef(self.next);
        self.next += 1;
        self.refs.insert(key, r);
        Encounter::First(r)
    }

    pub fn get(&self, key: &K) -> Option<ObjRef> {
        self.refs.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// Restart side: objects deposited under their objref by the first encounter
/// (e.g. the other end of a pipe), taken by the later fd that names them.
#[derive(Debug)]
pub struct Deposits<T> {
    objects: HashMap<ObjRef, T>,
}

impl<T> Default for Deposits<T> {
    fn default() -> Self {
        Deposits {
            objects: HashMap::new(),
        }
    }
}

impl<T> Deposits<T> {
    pub fn deposit(&mut self, r: ObjRef, object: T) {
        self.objects.insert(r, object);
    }

    pub fn get(&self, r: ObjRef) -> Option<&T> {
        self.objects.get(&r)
    }

    pub fn take(&mut self, r: ObjRef) -> Option<T> {
        self.objects.remove(&r)
    }

    /// The objrefs of what is still deposited (never taken).
    pub fn objrefs(&self) -> impl Iterator<Item = ObjRef> + '_ {
        self.objects.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_encounter_numbers_later_encounters_refer() {
        let mut t = ObjRefTable::new();
        assert_eq!(t.encounter(0xa0u64), Encounter::First(ObjRef(1)));
        assert_eq!(t.encounter(0xb0u64), Encounter::First(ObjRef(2)));
        assert_eq!(t.encounter(0xa0u64), Encounter::Again(ObjRef(1)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn deposits_are_taken_once() {
        let mut d = Deposits::default();
        d.deposit(ObjRef(3), "write end");
        assert_eq!(d.take(ObjRef(3)), Some("write end"));
        assert_eq!(d.take(ObjRef(3)), None);
    }
}

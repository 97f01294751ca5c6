//! An in-memory [`Disk`] that fails the way real disks do, for tests.
//!
//! It keeps, per file, what is durable and what was only written; per
//! directory, which names are durable. [`MemDisk::crash`] returns the disk a
//! restarted process would find: unsynced writes gone except a prefix (chosen
//! by the test) of the last one, names as of the last directory sync.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::{Disk, DiskFile};

#[derive(Default)]
struct FileData {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Writes since the last sync, oldest first.
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct State {
    names: BTreeMap<String, Rc<RefCell<FileData>>>,
    durable_names: BTreeMap<String, Rc<RefCell<FileData>>>,
    last_written: Option<Rc<RefCell<FileData>>>,
    fail_sync: bool,
    /// fdatasync calls wait (pending) until `release_syncs`.
    hold_syncs: bool,
    held: Vec<std::task::Waker>,
    nonces: u64,
    syncs: u64,
    writes: u64,
    /// Most bytes the files may hold together; a write that would grow
    /// them past it fails with ENOSPC (`set_space_limit`).
    space_limit: Option<u64>,
}

/// In-memory directory. Clones share the directory.
#[derive(Clone, Default)]
pub struct MemDisk(Rc<RefCell<State>>);

/// A file of a [`MemDisk`].
pub struct MemFile {
    data: Rc<RefCell<FileData>>,
    disk: MemDisk,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// The disk as a restarted process finds it. `tear(len)` picks how many
    /// bytes of the last unsynced write reached the disk (0..=len).
    pub fn crash(&self, tear: impl FnOnce(usize) -> usize) -> MemDisk {
        let st = self.0.borrow();
        let mut torn = Some(tear);
        let mut names = BTreeMap::new();
        for (name, f) in &st.durable_names {
            let fd = f.borrow();
            let mut data = fd.durable.clone();
            let is_last = st.last_written.as_ref().is_some_and(|l| Rc::ptr_eq(l, f));
            if is_last {
                if let (Some((pos, bytes)), Some(tear)) = (fd.pending.last(), torn.take()) {
                    let n = tear(bytes.len()).min(bytes.len());
                    write_into(&mut data, *pos, &bytes[..n]);
                }
            }
            let file = FileData { data: data.clone(), durable: data, pending: vec![] };
            names.insert(name.clone(), Rc::new(RefCell::new(file)));
        }
        let st = State { durable_names: names.clone(), names, ..Default::default() };
        MemDisk(Rc::new(RefCell::new(st)))
    }

    /// Like `crash`, but the blocks (4 KiB) of the last unsynced write land
    /// in no particular order: `keep(i)` says whether block `i` reached the
    /// disk (a large write is split into several device requests).
    pub fn crash_scattered(&self, mut keep: impl FnMut(usize) -> bool) -> MemDisk {
        let st = self.0.borrow();
        let Some(last) = st.last_written.clone() else {
            drop(st);
            return self.crash(|_| 0);
        };
        let pending = last.borrow().pending.last().cloned();
        drop(st);
        let crashed = self.crash(|_| 0);
        if let Some((pos, bytes)) = pending {
            let st = crashed.0.borrow();
            // find the same file in the crashed disk by name
            let name = self.0.borrow().durable_names.iter().find(|(_, f)| Rc::ptr_eq(f, &last)).map(|(n, _)| n.clone());
            if let Some(f) = name.and_then(|n| st.names.get(&n).cloned()) {
                let mut f = f.borrow_mut();
                for (i, block) in bytes.chunks(crate::format::BLOCK_BYTES).enumerate() {
                    if keep(i) {
                        let at = pos + (i * crate::format::BLOCK_BYTES) as u64;
                        write_into(&mut f.data, at, block);
                        write_into(&mut f.durable, at, block);
                    }
                }
            }
        }
        crashed
    }

    /// Flips bits of one byte, durably (bit rot, a bad sector).
    pub fn flip_byte(&self, name: &str, offset: u64, mask: u8) {
        let st = self.0.borrow();
        let f = st.names.get(name).unwrap_or_else(|| panic!("no file {name}"));
        let mut f = f.borrow_mut();
        f.data[offset as usize] ^= mask;
        f.durable[offset as usize] ^= mask;
    }

    /// Limits the bytes the disk's files may hold together (None: no
    /// limit): a write that would grow them past it fails as ENOSPC does.
    /// Shrinking and overwriting always succeed, so freeing space works.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.0.borrow_mut().space_limit = bytes;
    }

    /// Bytes the disk's files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.0.borrow().names.values().map(|f| f.borrow().data.len() as u64).sum()
    }

    /// Makes every following fdatasync fail.
    pub fn fail_syncs(&self) {
        self.0.borrow_mut().fail_sync = true;
    }

    /// Makes every following fdatasync wait until `release_syncs`: a disk in
    /// one of its slow spells.
    pub fn hold_syncs(&self) {
        self.0.borrow_mut().hold_syncs = true;
    }

    /// Lets held and later fdatasyncs complete.
    pub fn release_syncs(&self) {
        let held = {
            let mut st = self.0.borrow_mut();
            st.hold_syncs = false;
            std::mem::take(&mut st.held)
        };
        held.into_iter().for_each(|w| w.wake());
    }

    pub fn file_names(&self) -> Vec<String> {
        self.0.borrow().names.keys().cloned().collect()
    }

    /// Current contents of a file.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        self.0.borrow().names.get(name).map(|f| f.borrow().data.clone())
    }

    /// fdatasync calls so far.
    pub fn sync_count(&self) -> u64 {
        self.0.borrow().syncs
    }

    /// write calls so far.
    pub fn write_count(&self) -> u64 {
        self.0.borrow().writes
    }

    fn not_found(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("mem: no file {name}"))
    }
}

fn write_into(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let end = pos as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[pos as usize..end].copy_from_slice(bytes);
}

impl Disk for MemDisk {
    type File = MemFile;
    type Buf = Vec<u8>;

    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }
    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }
    async fn open(&self, name: &str) -> io::Result<MemFile> {
        let data = self.0.borrow().names.get(name).cloned().ok_or_else(|| Self::not_found(name))?;
        Ok(MemFile { data, disk: self.clone() })
    }
    async fn create(&self, name: &str) -> io::Result<MemFile> {
        let mut st = self.0.borrow_mut();
        if st.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("mem: {name} exists")));
        }
        let data = Rc::new(RefCell::new(FileData::default()));
        st.names.insert(name.to_string(), data.clone());
        Ok(MemFile { data, disk: self.clone() })
    }
    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.0.borrow_mut();
        let f = st.names.remove(from).ok_or_else(|| Self::not_found(from))?;
        st.names.insert(to.to_string(), f);
        Ok(())
    }
    async fn remove(&self, name: &str) -> io::Result<()> {
        self.0.borrow_mut().names.remove(name).map(|_| ()).ok_or_else(|| Self::not_found(name))
    }
    async fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.0.borrow_mut();
        st.durable_names = st.names.clone();
        Ok(())
    }
    fn describe(&self, name: &str) -> String {
        format!("mem:{name}")
    }
    /// Deterministic, so a failing seed replays byte for byte.
    fn nonce(&self) -> u64 {
        let mut st = self.0.borrow_mut();
        st.nonces += 1;
        st.nonces.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl DiskFile for MemFile {
    type Buf = Vec<u8>;
    type ReadBuf = Vec<u8>;

    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        let limit = self.disk.0.borrow().space_limit;
        if let Some(limit) = limit {
            let growth = (pos + buf.len() as u64).saturating_sub(self.data.borrow().data.len() as u64);
            if growth > 0 && self.disk.used_bytes() + growth > limit {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "mem: no space left on device"));
            }
        }
        let mut f = self.data.borrow_mut();
        write_into(&mut f.data, pos, &buf);
        f.pending.push((pos, buf));
        let mut st = self.disk.0.borrow_mut();
        st.last_written = Some(self.data.clone());
        st.writes += 1;
        Ok(())
    }
    async fn sync_data(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut st = self.disk.0.borrow_mut();
            if st.hold_syncs {
                if !st.held.iter().any(|w| w.will_wake(cx.waker())) {
                    st.held.push(cx.waker().clone());
                }
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        let mut st = self.disk.0.borrow_mut();
        if st.fail_sync {
            return Err(io::Error::other("mem: injected fdatasync failure"));
        }
        st.syncs += 1;
        let mut f = self.data.borrow_mut();
        let f = &mut *f;
        for (pos, bytes) in f.pending.drain(..) {
            write_into(&mut f.durable, pos, &bytes);
        }
        Ok(())
    }
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.data.borrow();
        let start = (pos as usize).min(f.data.len());
        let end = (start + len).min(f.data.len());
        Ok(f.data[start..end].to_vec())
    }
    async fn size(&self) -> io::Result<u64> {
        Ok(self.data.borrow().data.len() as u64)
    }
}

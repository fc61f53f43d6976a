//! A file of fixed-size slots, written in place, for the call markers (`call_marker.rs`).
//!
//! Why slots: a marker must be writable while the storage volume is full (issue 8: "a case is
//! never lost because the disk failed"), and a new file, a rename or an appended block all need
//! free space. The slot file is filled with zeros when it is created or grown, so its blocks
//! exist; writing a marker overwrites one slot in place (one `pwrite` + `fdatasync`) and needs no
//! new block on a file system that overwrites in place (ext4, XFS). On a copy-on-write file
//! system (btrfs, ZFS) an overwrite still needs space, and a full disk fails the write as before.
//!
//! Slot layout (`SLOT_BYTES` each): magic `IVM1`, payload length (u32 LE), the first 8 bytes of
//! the SHA-256 of length and payload, then the payload, zero-padded. A slot whose magic is zero is
//! free. A slot with the magic but a bad length or checksum is a torn write (the process or the
//! machine died during the `pwrite`): it is reported as such and freed, never read as a marker.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes of one slot. A marker is a few hundred bytes of JSON; a longer one (a huge Call-ID or
/// URI) goes to a file of its own instead (`call_marker.rs`).
pub const SLOT_BYTES: usize = 1024;
const HEADER_BYTES: usize = 16;
/// The longest payload a slot holds.
pub const MAX_PAYLOAD: usize = SLOT_BYTES - HEADER_BYTES;
const MAGIC: [u8; 4] = *b"IVM1";
/// Slots added when every slot is taken (more calls than `max_calls` at start-up: a raised limit
/// after a reload, or slots kept by recovered markers whose cases could not be spooled yet).
const GROW_SLOTS: usize = 256;

/// Why a slot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("marker of {len} bytes does not fit a slot of {MAX_PAYLOAD}")]
    TooLarge { len: usize },
    #[error("slot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a slot held when the file was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A complete payload, still taken: the caller clears it once it has dealt with it.
    Payload { slot: usize, bytes: Vec<u8> },
    /// A write that did not complete; the slot was freed.
    Torn { slot: usize },
}

/// The slot file, shared by every call task; each method is blocking IO.
#[derive(Debug)]
pub struct SlotFile {
    file: File,
    path: PathBuf,
    state: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    count: usize,
    free: Vec<usize>,
}

impl SlotFile {
    /// Opens `path`, creating it or growing it with zeros to at least `min_slots` slots, and
    /// returns what earlier processes left in it. Payloads stay taken until [`SlotFile::clear`].
    pub fn open(path: &Path, min_slots: usize) -> Result<(SlotFile, Vec<Leftover>), SlotError> {
        let io = |source| SlotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = usize::try_from(file.metadata().map_err(io)?.len()).unwrap_or(usize::MAX);
        // A partial last slot (a growth cut short) is cut off below.
        let existing = len / SLOT_BYTES;
        let mut contents = vec![0u8; existing * SLOT_BYTES];
        file.read_exact_at(&mut contents, 0).map_err(io)?;
        let slots = SlotFile {
            file,
            path: path.to_path_buf(),
            state: Mutex::new(Slots {
                count: existing,
                free: Vec::new(),
            }),
        };
        let mut leftovers = Vec::new();
        let mut free = Vec::new();
        for (slot, bytes) in contents.chunks_exact(SLOT_BYTES).enumerate() {
            match decode(bytes) {
                Slot::Free => free.push(slot),
                Slot::Payload(p) => leftovers.push(Leftover::Payload {
                    slot,
                    bytes: p.to_vec(),
                }),
                Slot::Torn => {
                    slots.clear(slot)?;
                    leftovers.push(Leftover::Torn { slot });
                    free.push(slot);
                }
            }
        }
        {
            let mut state = slots.lock();
            state.free = free;
            let missing = min_slots.saturating_sub(existing);
            if missing > 0 || len % SLOT_BYTES != 0 {
                slots.grow(&mut state, missing)?;
            }
        }
        if created {
            // The new file's name must survive a power cut too.
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        Ok((slots, leftovers))
    }

    /// Writes `payload` to a free slot and makes it durable (`fdatasync`); returns the slot.
    /// Grows the file when every slot is taken.
    pub fn write(&self, payload: &[u8]) -> Result<usize, SlotError> {
        let slot = self.put(payload)?;
        if let Err(e) = self.sync() {
            let _ = self.clear(slot);
            return Err(e);
        }
        Ok(slot)
    }

    /// Writes `payload` to a free slot without making it durable; returns the slot. Several
    /// puts followed by one [`SlotFile::sync`] are a group commit: none of them may be relied
    /// on before that sync returned. Grows the file when every slot is taken.
    pub fn put(&self, payload: &[u8]) -> Result<usize, SlotError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SlotError::TooLarge { len: payload.len() });
        }
        let slot = {
            let mut state = self.lock();
            if state.free.is_empty() {
                self.grow(&mut state, GROW_SLOTS)?;
            }
            state
                .free
                .pop()
                .ok_or_else(|| self.io(std::io::Error::other("no free slot after growing")))?
        };
        let mut bytes = [0u8; SLOT_BYTES];
        encode(payload, &mut bytes);
        if let Err(e) = self.file.write_all_at(&bytes, offset(slot)) {
            // The slot may hold part of the payload; a bad checksum keeps it from being read.
            self.lock().free.push(slot);
            return Err(self.io(e));
        }
        Ok(slot)
    }

    /// Makes every slot written so far durable (`fdatasync`). After a failure the caller frees
    /// the slots of its group with [`SlotFile::clear`]: their payloads may or may not be on disk.
    pub fn sync(&self) -> Result<(), SlotError> {
        self.file.sync_data().map_err(|e| self.io(e))
    }

    /// Frees `slot` by zeroing its header. Not synced: a process kill keeps the page cache, and
    /// after a power cut the marker may come back, which recovery tolerates (the case id is
    /// the same, so the outbox refuses a second copy of a case it still holds).
    pub fn clear(&self, slot: usize) -> Result<(), SlotError> {
        self.file
            .write_all_at(&[0u8; HEADER_BYTES], offset(slot))
            .map_err(|e| self.io(e))?;
        let mut state = self.lock();
        if slot < state.count && !state.free.contains(&slot) {
            state.free.push(slot);
        }
        Ok(())
    }

    /// Slots in the file, taken or free.
    pub fn capacity(&self) -> usize {
        self.lock().count
    }

    /// Appends `more` zeroed slots (and cuts a partial last slot), synced with the file's size.
    fn grow(&self, state: &mut Slots, more: usize) -> Result<(), SlotError> {
        let target = state.count + more;
        // Real zeros, not `set_len` alone: a sparse file would need blocks at the first write.
        let zeros = vec![0u8; more * SLOT_BYTES];
        let written = self
            .file
            .write_all_at(&zeros, offset(state.count))
            .and_then(|()| self.file.set_len(offset(target)))
            .and_then(|()| self.file.sync_all());
        written.map_err(|e| self.io(e))?;
        state.free.extend((state.count..target).rev());
        state.count = target;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The free list is only pushed and popped; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, source: std::io::Error) -> SlotError {
        SlotError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn offset(slot: usize) -> u64 {
    (slot as u64) * SLOT_BYTES as u64
}

fn checksum(len: [u8; 4], payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(len)
        .chain_update(payload)
        .finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Fills `slot` (`SLOT_BYTES`, zeroed) with the header and `payload` (at most `MAX_PAYLOAD`).
fn encode(payload: &[u8], slot: &mut [u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    slot[..4].copy_from_slice(&MAGIC);
    slot[4..8].copy_from_slice(&len);
    slot[8..16].copy_from_slice(&checksum(len, payload));
    slot[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
}

enum Slot<'a> {
    Free,
    Payload(&'a [u8]),
    Torn,
}

fn decode(slot: &[u8]) -> Slot<'_> {
    if slot[..4] == [0; 4] {
        return Slot::Free;
    }
    if slot[..4] != MAGIC {
        return Slot::Torn;
    }
    let len = [slot[4], slot[5], slot[6], slot[7]];
    let n = u32::from_le_bytes(len) as usize;
    match slot.get(HEADER_BYTES..HEADER_BYTES + n) {
        Some(payload) if n > 0 && checksum(len, payload) == slot[8..16] => Slot::Payload(payload),
        _ => Slot::Torn,
    }
}

#[cfg(test)]
#[path = "marker_slots_tests.rs"]
mod tests;

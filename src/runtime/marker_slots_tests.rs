//! The slot file on a real temp directory: write, clear, what a restart finds, torn slots and
//! growth.

use super::*;

/// A slot file's path in a temp directory that is removed when the test ends.
struct TempSlots(PathBuf);

impl std::ops::Deref for TempSlots {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempSlots {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempSlots {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_path(tag: &str) -> TempSlots {
    let dir = std::env::temp_dir().join(format!(
        "ivrd-slots-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempSlots(dir.join("markers.slots"))
}

fn payloads(leftovers: &[Leftover]) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<_> = leftovers
        .iter()
        .filter_map(|l| match l {
            Leftover::Payload { slot, bytes } => Some((*slot, bytes.clone())),
            Leftover::Torn { .. } => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_new_file_is_allocated_with_zeros_and_holds_nothing() {
    let path = temp_path("new");
    let (slots, leftovers) = SlotFile::open(&path, 8).expect("open");
    assert!(leftovers.is_empty());
    assert_eq!(slots.capacity(), 8);
    let meta = std::fs::metadata(&path).expect("meta");
    assert_eq!(meta.len(), 8 * SLOT_BYTES as u64);
    // Allocated, not sparse: the blocks exist before the first marker (st_blocks in 512 B).
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} blocks",
        meta.blocks()
    );
}

#[test]
fn written_payloads_survive_a_reopen_and_cleared_ones_do_not() {
    let path = temp_path("reopen");
    let (slots, _) = SlotFile::open(&path, 4).expect("open");
    let a = slots.write(b"{\"case\":\"a\"}").expect("a");
    let b = slots.write(b"{\"case\":\"b\"}").expect("b");
    let c = slots
        .write(&[7u8; MAX_PAYLOAD])
        .expect("a payload that fills the slot");
    assert_ne!(a, b);
    slots.clear(b).expect("clear");
    drop(slots);
    let (again, leftovers) = SlotFile::open(&path, 4).expect("reopen");
    assert_eq!(
        payloads(&leftovers),
        [
            (a, b"{\"case\":\"a\"}".to_vec()),
            (c, vec![7u8; MAX_PAYLOAD])
        ]
    );
    // Leftovers stay taken until cleared: new writes do not overwrite them.
    let d = again.write(b"d").expect("d");
    let e = again.write(b"e").expect("e");
    assert!(![a, c].contains(&d) && ![a, c].contains(&e));
    again.clear(a).expect("clear a");
    again.clear(c).expect("clear c");
    again.clear(d).expect("clear d");
    drop(again);
    let (_, leftovers) = SlotFile::open(&path, 4).expect("third open");
    assert_eq!(payloads(&leftovers), [(e, b"e".to_vec())]);
}

#[test]
fn an_oversize_payload_is_refused_without_taking_a_slot() {
    let path = temp_path("large");
    let (slots, _) = SlotFile::open(&path, 1).expect("open");
    let err = slots.write(&[1u8; MAX_PAYLOAD + 1]).expect_err("too large");
    assert!(matches!(err, SlotError::TooLarge { .. }), "{err}");
    assert_eq!(slots.write(b"fits").expect("the one slot is free"), 0);
    assert_eq!(slots.capacity(), 1);
}

#[test]
fn a_torn_slot_is_reported_freed_and_never_read_as_a_payload() {
    let path = temp_path("torn");
    let (slots, _) = SlotFile::open(&path, 4).expect("open");
    let whole = slots.write(b"{\"case\":\"whole\"}").expect("whole");
    let torn = slots.write(&[b'x'; 600]).expect("torn");
    let garbage = slots.write(b"garbage").expect("garbage");
    drop(slots);
    let file = OpenOptions::new().write(true).open(&path).expect("file");
    // The second 512-byte sector of a write that did not complete: the header and the first
    // part are new, the rest is what the slot held before (zeros here).
    file.write_all_at(&[0u8; 512], offset(torn) + 512)
        .expect("tear");
    // A header that is not ours at all.
    file.write_all_at(b"junk", offset(garbage)).expect("junk");
    drop(file);
    let (slots, leftovers) = SlotFile::open(&path, 4).expect("reopen");
    assert_eq!(
        payloads(&leftovers),
        [(whole, b"{\"case\":\"whole\"}".to_vec())]
    );
    let mut torn_slots: Vec<usize> = leftovers
        .iter()
        .filter_map(|l| match l {
            Leftover::Torn { slot } => Some(*slot),
            Leftover::Payload { .. } => None,
        })
        .collect();
    torn_slots.sort();
    assert_eq!(torn_slots, [torn, garbage]);
    // Freed: with `whole` taken, three writes fit without growing.
    for _ in 0..3 {
        slots.write(b"next").expect("write");
    }
    assert_eq!(slots.capacity(), 4);
    drop(slots);
    let (_, leftovers) = SlotFile::open(&path, 4).expect("third open");
    assert!(
        leftovers
            .iter()
            .all(|l| matches!(l, Leftover::Payload { .. })),
        "torn slots were cleared: {leftovers:?}"
    );
}

#[test]
fn all_slots_taken_grows_the_file_and_keeps_every_payload() {
    let path = temp_path("grow");
    let (slots, _) = SlotFile::open(&path, 2).expect("open");
    let taken: Vec<usize> = (0..5u8)
        .map(|i| slots.write(&[b'a' + i]).expect("write"))
        .collect();
    assert_eq!(slots.capacity(), 2 + GROW_SLOTS);
    let mut sorted = taken.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "five distinct slots: {taken:?}");
    drop(slots);
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        ((2 + GROW_SLOTS) * SLOT_BYTES) as u64
    );
    let (again, leftovers) = SlotFile::open(&path, 2).expect("reopen");
    assert_eq!(again.capacity(), 2 + GROW_SLOTS, "a file is never shrunk");
    let mut found: Vec<(usize, Vec<u8>)> = payloads(&leftovers);
    found.sort_by_key(|(_, b)| b.clone());
    let expected: Vec<(usize, Vec<u8>)> = taken
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, vec![b'a' + i as u8]))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_partial_last_slot_is_cut_and_a_raised_minimum_grows_the_file() {
    let path = temp_path("partial");
    let (slots, _) = SlotFile::open(&path, 2).expect("open");
    let kept = slots.write(b"kept").expect("write");
    drop(slots);
    let file = OpenOptions::new().write(true).open(&path).expect("file");
    file.set_len((2 * SLOT_BYTES + 100) as u64)
        .expect("a growth cut short");
    drop(file);
    let (slots, leftovers) = SlotFile::open(&path, 3).expect("reopen");
    assert_eq!(payloads(&leftovers), [(kept, b"kept".to_vec())]);
    assert_eq!(slots.capacity(), 3);
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        (3 * SLOT_BYTES) as u64
    );
}

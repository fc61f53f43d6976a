//! Proof that the per-frame recording path allocates nothing: a counting global allocator (per
//! thread, so the writer thread's own allocations do not count) wraps every `push_frame`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ivrd::runtime::recorder::{
    CallRecorder, MessageRecorder, RecordingDate, RecordingName, RecordingWriter,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DAY: RecordingDate = RecordingDate {
    year: 2026,
    month: 11,
    day: 26,
};

struct Scratch(std::path::PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("ivrd-alloc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Stereo frames per block (0.24 s).
const PER_BLOCK: u64 = 12;
/// Frames after which the writer's pool has a free block for every roll-over: the first full
/// block finds the pool empty and allocates the second.
const WARM_UP: u64 = PER_BLOCK * 2;

#[test]
fn pushing_frames_allocates_nothing_once_warm() {
    let dir = scratch("steady");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let mut rec = CallRecorder::start(&writer, &RecordingName::for_call("a", DAY)).unwrap();
    let before = allocations();
    std::hint::black_box(vec![0u8; 64]);
    assert!(
        allocations() > before,
        "the counter sees allocations on this thread"
    );
    let caller = [100i16; 160];
    let ivrd = [-100i16; 160];
    let mut during_push = 0;
    for frame in 0..WARM_UP + 500 {
        let before = allocations();
        rec.push_frame(&caller, &ivrd);
        if frame >= WARM_UP {
            during_push += allocations() - before;
        }
        if frame % PER_BLOCK == PER_BLOCK - 1 {
            // Real time would give the writer 0.24 s here; outside the measured calls.
            writer.drain_blocking().unwrap();
        }
    }
    assert_eq!(during_push, 0);
    assert_eq!(rec.dropped_frames(), 0);
    assert_eq!(
        rec.finish_blocking().unwrap().duration_ms,
        (WARM_UP + 500) * 20
    );
}

#[test]
fn an_overloaded_writer_costs_no_allocation_either() {
    let dir = scratch("stalled");
    // The writer never runs: its queue fills after the open and one block.
    let (writer, _worker) = RecordingWriter::new(&dir.0, 2);
    let mut rec =
        MessageRecorder::start(&writer, &RecordingName::for_message("b", DAY, 1)).unwrap();
    let caller = [7i16; 160];
    let mut during_push = 0;
    for frame in 0..1_000u64 {
        let before = allocations();
        rec.push(&caller);
        // The first full block is queued and its successor allocated (the pool is empty);
        // from then on the queue is full and the recording keeps refilling its one block.
        if frame >= 50 {
            during_push += allocations() - before;
        }
    }
    assert_eq!(during_push, 0);
    assert!(rec.dropped_frames() >= 900, "{}", rec.dropped_frames());
}

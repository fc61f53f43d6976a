//! The `.wav.part` file as hound sees it: what hound writes is staged in one buffer of the
//! writer thread and reaches the file in one `write` per block.
//!
//! hound's sample writer buffers as many samples as it is asked for at once, and keeps that
//! buffer per file. Asked for a whole block, that was a second 7.5 KiB per open recording; asked
//! for one frame at a time (640 bytes), each frame would be a system call. Staging per thread
//! keeps both small: hound's buffer is one frame, the staging buffer is one block for the
//! whole writer. Only one recording writes at a time on the writer thread, and every path that
//! writes commits what it staged before the next recording writes: [`commit`] after each run
//! of samples, and a seek, flush or drop of a [`PartFile`] (hound's header updates and the
//! final header) commit first.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

thread_local! {
    static STAGED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes what is staged to `file` at its current offset and empties the staging buffer,
/// also on error (the bytes belong to this file and must not reach the next one).
pub(super) fn commit(mut file: &File) -> io::Result<()> {
    STAGED.with(|staged| {
        let mut staged = staged.borrow_mut();
        let written = file.write_all(&staged);
        staged.clear();
        written
    })
}

/// The file handle hound writes through; see the module comment.
#[derive(Debug)]
pub(super) struct PartFile {
    file: File,
}

impl PartFile {
    pub(super) fn new(file: File) -> Self {
        PartFile { file }
    }
}

impl Write for PartFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        STAGED.with(|staged| staged.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        commit(&self.file)
    }
}

impl Seek for PartFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        commit(&self.file)?;
        self.file.seek(pos)
    }
}

impl Drop for PartFile {
    /// hound's own drop updates the header without a flush; its last bytes must not be left
    /// for the next recording's commit.
    fn drop(&mut self) {
        // Nothing to report to: a recording dropped here has already failed or been abandoned.
        let _ = commit(&self.file);
    }
}

//! The `.wav.part` file as hound sees it: what hound writes is staged in one buffer of the
//! writer thread and reaches the file in one `write` per block.
//!
//! hound's sample writer buffers as many samples as it is asked for at once, and keeps that
//! buffer per file. Asked for a whole block, that was a second 7.5 KiB per open recording; asked
//! for one frame at a time (640 bytes), each frame would be a system call. Staging per thread
//! keeps both small: hound's buffer is one frame, the staging buffer is one block for the
//! whole writer. Only one recording writes at a time on the writer thread, and every path that
//! writes commits what it staged before the next recording writes: [`commit_whole_pages`]
//! after each run of samples, and a seek, flush or drop of a [`PartFile`] (hound's header
//! updates and the final header) commit first.
//!
//! Samples reach the file in whole pages: a write that ends inside a page the file has not
//! reached yet has the kernel zero the rest of that page, and the next write fills the page
//! again, so every page is touched twice, cold both times. Appending 7.5 KiB blocks at page
//! boundaries instead cost 0.3–0.4× the system time of appending them where they fall (500
//! files, 80 blocks each, alternated). What does not fill a page waits in the recording's
//! [`HeldTail`] (under 4 KiB) until it does, or until a header update or the end, which write
//! it as it is.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};

/// The page size the writes are aligned to (the common one; where pages are larger, the
/// writes are still correct, only less of the saving remains).
const PAGE: u64 = 4096;

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

/// A recording's bytes that do not reach the next page boundary yet, and where they go.
#[derive(Debug)]
pub(super) struct HeldTail {
    /// The file offset of `bytes[0]`: where the file's own offset is.
    at: u64,
    /// Never reaches the page boundary after `at`.
    bytes: Vec<u8>,
}

impl HeldTail {
    /// Nothing held; the file's offset is `at`.
    pub(super) fn new(at: u64) -> Self {
        HeldTail {
            at,
            bytes: Vec::new(),
        }
    }

    /// Bytes held back.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `held` followed by what is staged up to the last page boundary, holds back the rest,
/// and empties the staging buffer (also on error, as [`commit`]).
pub(super) fn commit_whole_pages(file: &File, held: &mut HeldTail) -> io::Result<()> {
    STAGED.with(|staged| {
        let mut staged = staged.borrow_mut();
        let written = write_whole_pages(file, held, &staged);
        staged.clear();
        written
    })
}

fn write_whole_pages(file: &File, held: &mut HeldTail, staged: &[u8]) -> io::Result<()> {
    let end = held.at + (held.bytes.len() + staged.len()) as u64;
    // Held bytes never reach a boundary, so a boundary at or before `end` lies past them.
    let whole =
        usize::try_from((end - end % PAGE).saturating_sub(held.at)).map_err(io::Error::other)?;
    if whole == 0 {
        if held.bytes.capacity() == 0 {
            held.bytes.reserve_exact(PAGE as usize);
        }
        held.bytes.extend_from_slice(staged);
        return Ok(());
    }
    let from_staged = whole - held.bytes.len();
    write_all_vectored(file, &held.bytes, &staged[..from_staged])?;
    held.at += whole as u64;
    held.bytes.clear();
    held.bytes.extend_from_slice(&staged[from_staged..]);
    Ok(())
}

/// Writes what is held as it is (a header update or the end of the recording needs the file
/// to have every byte hound has counted).
pub(super) fn write_held(file: &File, held: &mut HeldTail) -> io::Result<()> {
    if held.bytes.is_empty() {
        return Ok(());
    }
    write_all_vectored(file, &held.bytes, &[])?;
    held.at += held.bytes.len() as u64;
    held.bytes.clear();
    Ok(())
}

fn write_all_vectored(mut file: &File, first: &[u8], second: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(first), IoSlice::new(second)];
    let mut left: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::recorder::tests::ScratchDir;

    #[test]
    fn samples_reach_the_file_in_whole_pages_and_every_byte_by_the_end() {
        let dir = ScratchDir::new("part-file-pages");
        let path = dir.0.join("a.wav.part");
        let file = File::create(&path).unwrap();
        let header = [7u8; 44];
        (&file).write_all(&header).unwrap();
        let mut held = HeldTail::new(header.len() as u64);
        let mut part = PartFile::new(file.try_clone().unwrap());
        let mut expected = header.to_vec();
        for (i, len) in [7680usize, 7680, 100, 5000, 7680, 3, 12_000, 4096]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            part.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            commit_whole_pages(&file, &mut held).unwrap();
            let on_disk = std::fs::metadata(&path).unwrap().len();
            assert!(
                on_disk == header.len() as u64 || on_disk % PAGE == 0,
                "write {i} left the file at {on_disk}, inside a page"
            );
            assert!(held.len() < PAGE as usize, "held {} bytes", held.len());
            assert_eq!(on_disk + held.len() as u64, expected.len() as u64);
        }
        write_held(&file, &mut held).unwrap();
        assert_eq!(held.len(), 0);
        drop(part);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}

//! The append-only log file, written through a small memory-mapped window.
//!
//! Bytes copied into a shared file mapping are in the operating system's page cache the moment
//! the copy ends, so a killed process loses nothing that an append acknowledged, without a system
//! call per append. Only a 1 MiB window is mapped at a time, so the process's resident memory does
//! not grow with the file. The file is grown ahead in steps with `posix_fallocate` (a full disk is
//! an error here, never a SIGBUS later) and trimmed to its real length on close; after a crash,
//! recovery drops the zero tail.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::event::CoreError;

/// Bytes mapped at once.
const WINDOW: usize = 1 << 20;
/// How far ahead of the data the file is allocated.
const ALLOCATION_STEP: u64 = 8 << 20;

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// An exclusive, non-blocking lock on the whole file, held until the file is closed.
pub fn lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

pub struct MappedLog {
    file: File,
    /// Bytes of data (the logical end of the log).
    len: u64,
    /// Bytes reserved on disk (the file's size while open).
    allocated: u64,
    map: *mut u8,
    map_offset: u64,
    map_len: usize,
    page: u64,
    /// Faults the next window into the page cache on another thread (None if it could not start).
    warmer: Option<Warmer>,
}

// SAFETY: the mapping is owned by this value and only touched through `&mut self`.
unsafe impl Send for MappedLog {}

impl MappedLog {
    /// Takes over `file`, whose data ends at `len` (the file is trimmed to it).
    pub fn new(file: File, len: u64) -> Result<Self, CoreError> {
        file.set_len(len)
            .map_err(|e| CoreError::io("cannot trim the log", e))?;
        let warmer = Warmer::start(&file);
        Ok(Self {
            file,
            len,
            allocated: len,
            map: ptr::null_mut(),
            map_offset: 0,
            map_len: 0,
            page: page_size(),
            warmer,
        })
    }

    /// Bytes of data in the log.
    pub fn data_len(&self) -> u64 {
        self.len
    }

    /// Appends the concatenation of `parts`; on error nothing is appended.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), CoreError> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.reserve(total)?;
        let start = self.len;
        for part in parts {
            if let Err(err) = self.copy_in(part) {
                self.len = start;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Makes sure the file has room for `extra` more bytes.
    fn reserve(&mut self, extra: u64) -> Result<(), CoreError> {
        let needed = self.len + extra;
        if needed <= self.allocated {
            return Ok(());
        }
        let ahead = needed.div_ceil(ALLOCATION_STEP) * ALLOCATION_STEP;
        // Near a full disk or a file size limit, the exact size may still fit.
        let result = self
            .allocate_to(ahead)
            .or_else(|_| self.allocate_to(needed));
        result.map_err(|e| CoreError::io(format!("cannot grow the log to {needed} bytes"), e))
    }

    fn allocate_to(&mut self, end: u64) -> io::Result<()> {
        let offset = self.allocated as libc::off_t;
        let length = (end - self.allocated) as libc::off_t;
        // SAFETY: posix_fallocate on a descriptor we own; it returns an errno value.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), offset, length) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        self.allocated = end;
        Ok(())
    }

    fn copy_in(&mut self, mut bytes: &[u8]) -> Result<(), CoreError> {
        while !bytes.is_empty() {
            let map_end = self.map_offset + self.map_len as u64;
            if self.map.is_null() || self.len >= map_end {
                self.remap()?;
                continue;
            }
            let room = (map_end - self.len) as usize;
            let count = room.min(bytes.len());
            let at = (self.len - self.map_offset) as usize;
            // SAFETY: `at + count <= map_len`, the window is mapped writable, and the file is
            // allocated past `len + count` (reserve ran first), so no access is beyond EOF.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.add(at), count) };
            self.len += count as u64;
            bytes = &bytes[count..];
        }
        Ok(())
    }

    /// Maps the window that starts at the page holding `len`.
    fn remap(&mut self) -> Result<(), CoreError> {
        self.unmap();
        let offset = self.len / self.page * self.page;
        // SAFETY: a fresh shared mapping of our own descriptor; checked for MAP_FAILED below.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                WINDOW,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(CoreError::io(
                "cannot map the log",
                io::Error::last_os_error(),
            ));
        }
        self.map = map.cast();
        self.map_offset = offset;
        self.map_len = WINDOW;
        self.prefault();
        self.warm_next_window();
        Ok(())
    }

    /// Asks the warmer to bring the window after this one into the page cache, so the writer
    /// finds its pages ready instead of zero-filling them itself.
    fn warm_next_window(&self) {
        let next = self.map_offset + WINDOW as u64;
        let usable = self.allocated.saturating_sub(next).min(WINDOW as u64);
        if let (Some(warmer), true) = (&self.warmer, usable > 0) {
            warmer.request(next, usable as usize);
        }
    }

    /// Faults the allocated part of the window in with one call. Without it every first write
    /// to a page takes a fault, and the kernel's readahead zeroes far more than the page written.
    fn prefault(&self) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let usable = self
            .allocated
            .saturating_sub(self.map_offset)
            .min(self.map_len as u64) as usize;
        // SAFETY: advice on our own mapping, limited to the part backed by the file. Failure (an
        // older kernel) only means pages are faulted one by one instead.
        unsafe {
            libc::madvise(self.map.cast(), self.map_len, libc::MADV_RANDOM);
            if usable > 0 {
                libc::madvise(self.map.cast(), usable, MADV_POPULATE_WRITE);
            }
        }
    }

    fn unmap(&mut self) {
        if !self.map.is_null() {
            // SAFETY: unmapping exactly the mapping we made; dirty pages stay in the page cache.
            unsafe { libc::munmap(self.map.cast(), self.map_len) };
            self.map = ptr::null_mut();
            self.map_len = 0;
        }
    }

    /// Writes the data to stable storage.
    pub fn sync_data(&self) -> Result<(), CoreError> {
        self.file
            .sync_data()
            .map_err(|e| CoreError::io("cannot fsync the log", e))
    }

    /// Unmaps, trims the preallocated tail and, if asked, syncs. The log stays usable.
    pub fn trim(&mut self, sync: bool) -> Result<(), CoreError> {
        self.unmap();
        self.file
            .set_len(self.len)
            .map_err(|e| CoreError::io("cannot trim the log", e))?;
        self.allocated = self.len;
        if sync {
            self.sync_data()?;
        }
        Ok(())
    }
}

/// A thread that faults file ranges into the page cache ahead of the writer.
struct Warmer {
    requests: Option<mpsc::Sender<(u64, usize)>>,
    handle: Option<JoinHandle<()>>,
}

impl Warmer {
    fn start(file: &File) -> Option<Self> {
        let file = file.try_clone().ok()?;
        let (requests, inbox) = mpsc::channel::<(u64, usize)>();
        let handle = std::thread::Builder::new()
            .name("opencode-addons-log-warmer".into())
            .spawn(move || {
                for (offset, len) in inbox {
                    warm(&file, offset, len);
                }
            })
            .ok()?;
        Some(Self { requests: Some(requests), handle: Some(handle) })
    }

    fn request(&self, offset: u64, len: usize) {
        if let Some(requests) = &self.requests {
            let _ = requests.send((offset, len));
        }
    }
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Maps `len` bytes at `offset`, write-faults them in, and unmaps: the pages stay in the page
/// cache (holding what they held), ready for the writer's own mapping.
fn warm(file: &File, offset: u64, len: usize) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    // SAFETY: a temporary shared mapping of a range the writer has already allocated; populating
    // does not change the file's contents; the mapping is removed before returning.
    unsafe {
        let map = libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        );
        if map == libc::MAP_FAILED {
            return;
        }
        libc::madvise(map, len, MADV_POPULATE_WRITE);
        libc::munmap(map, len);
    }
}

impl Drop for MappedLog {
    fn drop(&mut self) {
        self.unmap();
        let _ = self.file.set_len(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Read;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("oca-log-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("log.jsonl")
    }

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn appends_across_windows_and_trims_on_drop() {
        let path = temp_path("windows");
        let _ = std::fs::remove_file(&path);
        let line = vec![b'x'; 999];
        {
            let mut log = MappedLog::new(open(&path), 0).unwrap();
            for _ in 0..3000 {
                log.append(&[&line, b"\n"]).unwrap();
            }
            assert_eq!(log.data_len(), 3_000_000);
            // While open, the file is allocated ahead and the data is already readable.
            let mut head = vec![0u8; 1000];
            open(&path).read_exact(&mut head).unwrap();
            assert_eq!(&head[..999], &line[..]);
        }
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3_000_000);
        assert!(data
            .chunks(1000)
            .all(|c| c[..999] == line[..] && c[999] == b'\n'));
    }

    #[test]
    fn continues_after_existing_data() {
        let path = temp_path("continue");
        std::fs::write(&path, b"abc\n").unwrap();
        {
            let mut log = MappedLog::new(open(&path), 4).unwrap();
            log.append(&[b"def\n"]).unwrap();
            log.trim(true).unwrap();
            log.append(&[b"ghi\n"]).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\ndef\nghi\n");
    }

    #[test]
    fn second_lock_is_refused() {
        let path = temp_path("lock");
        let first = open(&path);
        assert!(lock_exclusive(&first).unwrap());
        let second = open(&path);
        assert!(!lock_exclusive(&second).unwrap());
        drop(first);
        assert!(lock_exclusive(&second).unwrap());
    }
}

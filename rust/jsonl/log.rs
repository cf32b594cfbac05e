//! The append-only log file, written through a small memory-mapped window.
//!
//! Bytes copied into a shared file mapping are in the operating system's page cache the moment
//! the copy ends, so a killed process loses nothing that an append acknowledged, without a system
//! call per append. Only a 1 MiB window is mapped at a time, so the process's resident memory does
//! not grow with the file. The file is grown ahead in steps with `posix_fallocate` (a full disk is
//! an error here, never a SIGBUS later) and trimmed to its real length on close; after a crash,
//! recovery drops the zero tail. A helper thread (the warmer) writes zeros over the next window
//! and faults it in before the writer needs it: faulting fallocated pages in through the mapping
//! costs the kernel several times what writing them does. Batches larger than two windows are
//! written with `pwritev` instead, and so are appends with a line of 4 KiB or more (large
//! events) when the store asks: for them the system call is cheap beside the page-cache work,
//! which mapping moves to the warmer only if the warmer has a core to itself. The store asks
//! for its batches (they fill windows faster than the warmer makes them), not for its single
//! appends: their large lines are not copied into its ring (`external.rs`), whose block
//! preparer would otherwise share that core while the ring grows. A batch of small lines
//! that fits goes through the mapping: `JsonlStore.extend` of 1,000 events ran 8-10% faster
//! that way than through `pwritev` on the benchmark's ~530-byte, short-string and OpenCode
//! events (the warmer's CPU grows by about as much as the writer's falls).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::event::CoreError;

/// Bytes mapped at once (the writer's window; one more is prepared ahead).
const WINDOW: usize = 512 << 10;
/// How far ahead of the data the file is allocated.
const ALLOCATION_STEP: u64 = 8 << 20;
/// Appends with a part (a line's body) of at least this many bytes are written with `pwritev`
/// instead of being copied into the mapping unless the caller says the warmer's core is free
/// (`write_large_lines_through`). Through the mapping, their pages' cost moves to the warmer.
/// With 40 KiB events and a ring that is full (it reuses its blocks), appends ran 1.24-1.48x as
/// fast through the mapping as through `pwritev` (9 pairs, three runs); with a growing ring that
/// copied them, whose block preparer shared the warmer's core, the writer waited for the
/// warmer's windows and they ran at 0.6-0.9x. The ring now refers to large lines instead.
const WRITE_THROUGH: u64 = 4 << 10;
/// Most buffers one `pwritev` takes (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

/// Whether an append goes to the file with `pwritev` rather than through the mapping: more
/// bytes than the mapped and the prepared windows hold, or, if `large_through` (the warmer
/// could not keep up), a line of `WRITE_THROUGH` bytes or more.
fn writes_through(parts: &[&[u8]], total: u64, large_through: bool) -> bool {
    total > 2 * WINDOW as u64
        || (large_through && parts.iter().any(|p| p.len() as u64 >= WRITE_THROUGH))
}

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
    // SAFETY: `file` is open for the whole call, so its descriptor is valid; flock takes no
    // pointers.
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
    /// Allocation ahead of the data stops here (the segment size), unless a write needs more.
    allocation_limit: u64,
    map: *mut u8,
    map_offset: u64,
    map_len: usize,
    page: u64,
    /// Faults the next window into the page cache on another thread (None if it could not start).
    warmer: Option<Warmer>,
    /// Whether lines of `WRITE_THROUGH` bytes or more go through `pwritev` (see
    /// `write_large_lines_through`).
    large_lines_through: bool,
    /// Appends written with `pwritev` (for tests: which path an append took).
    #[cfg(test)]
    written_through: u64,
    /// The fork generation this log was opened in: a forked child must not touch the file.
    opened_in: u64,
}

// SAFETY: `map` is the only field that is not `Send`. The window it points to is owned by this
// value (no other copy of the address is kept; a window handed to the warmer is forgotten here)
// and is only written through `&mut self`, so moving the value moves sole access with it.
unsafe impl Send for MappedLog {}

impl MappedLog {
    /// Takes over `file`, whose data ends at `len` (the file is trimmed to it).
    pub fn new(file: File, len: u64) -> Result<Self, CoreError> {
        Self::with_warmer_delay(file, len, std::time::Duration::ZERO)
    }

    /// `new`, with a warmer that waits `delay` before each window it prepares (tests make it
    /// slow to prove the writer waits for it).
    fn with_warmer_delay(
        file: File,
        len: u64,
        delay: std::time::Duration,
    ) -> Result<Self, CoreError> {
        file.set_len(len)
            .map_err(|e| CoreError::io("cannot trim the log", e))?;
        let warmer = Warmer::start(&file, delay);
        Ok(Self {
            file,
            len,
            allocated: len,
            allocation_limit: u64::MAX,
            map: ptr::null_mut(),
            map_offset: 0,
            map_len: 0,
            page: page_size(),
            warmer,
            large_lines_through: true,
            #[cfg(test)]
            written_through: 0,
            opened_in: super::fork::generation(),
        })
    }

    /// Allocates ahead no further than `limit` bytes (a segment's size): a small segment does
    /// not take a whole allocation step of disk.
    pub fn limit_allocation(&mut self, limit: u64) {
        self.allocation_limit = limit;
    }

    /// Bytes of data in the log.
    pub fn data_len(&self) -> u64 {
        self.len
    }

    /// Appends the concatenation of `parts`; on error nothing is appended.
    ///
    /// A part's closing newline is stored after all of its other bytes (with a fence between),
    /// so after a crash a line that ends in a newline is whole: a write cut short by a kill can
    /// only leave an unterminated tail, which recovery cuts off.
    pub fn append(&mut self, parts: &[&[u8]]) -> Result<(), CoreError> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.reserve(total)?;
        let start = self.len;
        if writes_through(parts, total, self.large_lines_through()) {
            // The warmer writes zeros over the window it prepares: it must be done with a window
            // this write reaches before the data lands there.
            if let Some(warmer) = &mut self.warmer {
                warmer.settle_before(start + total);
            }
            #[cfg(test)]
            {
                self.written_through += 1;
            }
            if let Err(err) = self.write_through(parts) {
                // As below: blank whatever part of the refused append reached the page cache.
                self.erase(start, start + total);
                self.len = start;
                return Err(err);
            }
            return Ok(());
        }
        let copied = self.copy_into_window(parts);
        for part in &parts[copied..] {
            if let Err(err) = self.copy_line_part(part) {
                // Whole lines of a failed batch may already be in the page cache: blank them so
                // a crash before the next append cannot bring back events that were refused.
                self.erase(start, self.len);
                self.len = start;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Writes the concatenation of `parts` at the end of the data with `pwritev` (the file is
    /// allocated for it: `reserve` ran first). The kernel copies the buffers in order, so each
    /// line's newline is stored after its other bytes, as `copy_line_part` guarantees for the
    /// mapping: a write cut short leaves an unterminated tail, never a whole-looking line.
    fn write_through(&mut self, parts: &[&[u8]]) -> Result<(), CoreError> {
        let mut at = self.len;
        let mut rest: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
        let mut first = 0;
        while first < rest.len() {
            let chunk = &rest[first..rest.len().min(first + MAX_IOVECS)];
            let iovecs: Vec<libc::iovec> = chunk
                .iter()
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                })
                .collect();
            // SAFETY: the descriptor is valid while `self.file` lives; each iovec describes a
            // live slice of `parts` (only read by the kernel) and `iovecs.len() <= IOV_MAX`.
            let written = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    iovecs.as_ptr(),
                    iovecs.len() as libc::c_int,
                    at as libc::off_t,
                )
            };
            if written < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(CoreError::io("cannot write the log", err));
            }
            if written == 0 {
                return Err(CoreError::io(
                    "cannot write the log",
                    io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"),
                ));
            }
            at += written as u64;
            self.len = at;
            // Skip what was written: whole buffers, then the written head of a partial one.
            let mut left = written as usize;
            while left > 0 && first < rest.len() {
                if left >= rest[first].len() {
                    left -= rest[first].len();
                    first += 1;
                } else {
                    rest[first] = &rest[first][left..];
                    left = 0;
                }
            }
        }
        Ok(())
    }

    /// Blanks the data from `start` on and makes `start` the end of the data again (a refused
    /// batch's lines: a crash before the next append cannot bring them back).
    pub fn cut_back(&mut self, start: u64) {
        if start < self.len {
            self.erase(start, self.len);
            self.len = start;
        }
        if start < self.map_offset {
            // The batch moved the window past the new end: the next append maps the window
            // that holds it.
            self.unmap();
        }
    }

    /// Reads `out.len()` bytes of the data at `offset` (from the page cache: written already).
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + out.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the range is past the end of the data",
            ));
        }
        self.file.read_exact_at(out, offset)
    }

    /// Overwrites `from..to` of the file with zeros (recovery skips them as padding).
    fn erase(&self, from: u64, to: u64) {
        use std::os::unix::fs::FileExt;
        let zeros = [0u8; 4096];
        let mut at = from;
        while at < to {
            let count = ((to - at) as usize).min(zeros.len());
            if self.file.write_all_at(&zeros[..count], at).is_err() {
                return;
            }
            at += count as u64;
        }
    }

    /// Copies the leading parts that fit in the mapped window after the data, each line's
    /// newline after its other bytes as `copy_line_part` does; returns how many it copied (the
    /// rest go through `copy_line_part`, which maps the next window). One bounds check a part,
    /// and short pieces without a call to `memcpy`: `copy_in` per piece (three an event) cost
    /// about 160 instructions an event more (callgrind).
    #[inline]
    fn copy_into_window(&mut self, parts: &[&[u8]]) -> usize {
        let map_end = self.map_offset + self.map_len as u64;
        if self.map.is_null() || self.len < self.map_offset || self.len >= map_end {
            return 0;
        }
        let mut at = (self.len - self.map_offset) as usize;
        let mut room = (map_end - self.len) as usize;
        let mut copied = 0;
        for part in parts {
            if part.len() > room {
                break;
            }
            // SAFETY: the part fits between `at` and the window's end (`room`, checked above);
            // the window is mapped writable and the file is allocated past the data this
            // append adds (reserve ran first), and the parts cannot point into the window (the
            // log owns it; callers pass their own buffers).
            unsafe {
                let to = self.map.add(at);
                match part.split_last() {
                    Some((b'\n', body)) => {
                        crate::copy::copy_short(body.as_ptr(), to, body.len());
                        // The copy may store its bytes in any order; the newline must come last.
                        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                        to.add(body.len()).write(b'\n');
                    }
                    _ => crate::copy::copy_short(part.as_ptr(), to, part.len()),
                }
            }
            at += part.len();
            room -= part.len();
            copied += 1;
        }
        self.len = self.map_offset + at as u64;
        copied
    }

    fn copy_line_part(&mut self, part: &[u8]) -> Result<(), CoreError> {
        match part.split_last() {
            Some((b'\n', body)) => {
                self.copy_in(body)?;
                // memcpy may store a buffer's bytes in any order; the newline must come last.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                self.copy_in(b"\n")
            }
            _ => self.copy_in(part),
        }
    }

    /// Whether large lines go through `pwritev` now: asked for (`write_large_lines_through`), or
    /// there is no warmer (the writer would make every window itself).
    #[inline]
    fn large_lines_through(&self) -> bool {
        self.large_lines_through || self.warmer.is_none()
    }

    /// Has lines of `WRITE_THROUGH` bytes or more written with `pwritev` (true, the default) or
    /// copied into the mapping (false): the caller knows whether the warmer's core is free.
    pub fn write_large_lines_through(&mut self, through: bool) {
        self.large_lines_through = through;
    }

    /// Makes sure the file has room for `extra` more bytes.
    fn reserve(&mut self, extra: u64) -> Result<(), CoreError> {
        let needed = self.len + extra;
        if needed <= self.allocated {
            return Ok(());
        }
        // Near a full disk or a file size limit, the exact size may still fit.
        let result = self
            .allocate_to(self.allocation_for(needed))
            .or_else(|_| self.allocate_to(needed));
        result.map_err(|e| CoreError::io(format!("cannot grow the log to {needed} bytes"), e))
    }

    /// How far to allocate for data ending at `needed`: whole steps, no further than the limit
    /// unless `needed` itself is past it.
    fn allocation_for(&self, needed: u64) -> u64 {
        (needed.div_ceil(ALLOCATION_STEP) * ALLOCATION_STEP).min(self.allocation_limit.max(needed))
    }

    fn allocate_to(&mut self, end: u64) -> io::Result<()> {
        let offset = self.allocated as libc::off_t;
        let length = (end - self.allocated) as libc::off_t;
        // SAFETY: the descriptor of `self.file` is valid while `self` lives; posix_fallocate
        // takes no pointers and reports failure as a returned errno.
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
            if self.map.is_null() || self.len < self.map_offset || self.len >= map_end {
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

    /// Maps a window holding `len`: the one the warmer prepared if it holds `len` (a write
    /// through `pwritev` may have moved `len` into it), else a fresh one made here, starting at
    /// the page holding `len`.
    fn remap(&mut self) -> Result<(), CoreError> {
        self.unmap();
        let prepared = self.warmer.as_mut().and_then(|w| w.take(self.len));
        let (map, offset) = match prepared {
            Some(window) => window,
            None => {
                let offset = self.len / self.page * self.page;
                let map = map_window(&self.file, offset)
                    .map_err(|e| CoreError::io("cannot map the log", e))?;
                let usable = self.allocated.saturating_sub(offset).min(WINDOW as u64) as usize;
                // Only past the data: the window's first page may hold the data's tail.
                write_zeros(&self.file, self.len, offset + usable as u64);
                populate(map, usable);
                (map, offset)
            }
        };
        self.map = map;
        self.map_offset = offset;
        self.map_len = WINDOW;
        self.prepare_next_window();
        Ok(())
    }

    /// Has the warmer map and fault in the window after this one, so that switching windows
    /// costs the writer neither page faults nor zero-filling.
    fn prepare_next_window(&mut self) {
        let next = self.map_offset + WINDOW as u64;
        // Allocate the next window now if the allocation ends before it: otherwise it could not
        // be prepared, and the writer would fault it in itself once an append reaches it. A
        // failure here (a full disk) is left to `reserve`, which reports it when an append needs
        // the room.
        let wanted = self.allocation_for((next + WINDOW as u64).min(self.allocation_limit));
        if wanted > self.allocated {
            let _ = self.allocate_to(wanted);
        }
        let usable = self.allocated.saturating_sub(next).min(WINDOW as u64) as usize;
        if let (Some(warmer), true) = (&mut self.warmer, usable > 0) {
            warmer.prepare(next, usable);
        }
    }

    fn unmap(&mut self) {
        if !self.map.is_null() {
            match &self.warmer {
                // Tearing down page tables takes time; the warmer does it off the append path.
                Some(warmer) => warmer.unmap(self.map),
                // SAFETY: `self.map` is the live window we mapped, and it is nulled just below, so
                // nothing uses it after this (its pages stay in the page cache).
                None => unsafe { unmap_window(self.map) },
            }
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
        if let Some(warmer) = &mut self.warmer {
            warmer.discard();
            // Truncating a file while a window still maps the page it cuts through makes the
            // kernel unmap that page from every thread's view, with a TLB shootdown across
            // cores: about 0.7 ms a seal here (perf), against a wait for two munmaps.
            warmer.drain();
        }
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

fn map_window(file: &File, offset: u64) -> io::Result<*mut u8> {
    // SAFETY: a null address hint lets the kernel pick unused addresses, so no existing memory
    // is replaced; the descriptor is valid while `file` is borrowed; MAP_FAILED is checked below.
    let map = unsafe {
        libc::mmap(
            ptr::null_mut(),
            WINDOW,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(map.cast())
}

/// Writes zeros over `from..to` of the file (inside its allocation, past the data) before that
/// range is mapped. Zeros are what the allocated range reads as already, but faulting pages of a
/// fallocated (unwritten) range in through a shared mapping costs the kernel about 10 us a page
/// here (a page-cache page, zeroing and the filesystem's page_mkwrite, one page at a time),
/// while writing them in large writes first costs about 1.5 us a page, after which the faults
/// only map pages already in the cache. A failure only loses that saving.
fn write_zeros(file: &File, from: u64, to: u64) {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 128 << 10] = [0; 128 << 10];
    let mut at = from;
    while at < to {
        let count = ((to - at) as usize).min(ZEROS.len());
        match file.write_at(&ZEROS[..count], at) {
            Ok(written) if written > 0 => at += written as u64,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            _ => return,
        }
    }
}

/// Faults the first `usable` bytes of a window in, writable, with one call (not one fault per
/// page). Failure (an older kernel) only means the pages fault one by one later.
fn populate(map: *mut u8, usable: usize) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    // SAFETY: `map` is a live `WINDOW`-byte mapping from `map_window` and `usable <= WINDOW`;
    // madvise changes no contents, and populating only the part the file backs cannot fault past
    // its end.
    unsafe {
        libc::madvise(map.cast(), WINDOW, libc::MADV_RANDOM);
        if usable > 0 {
            libc::madvise(map.cast(), usable, MADV_POPULATE_WRITE);
        }
    }
}

/// Unmaps a window.
///
/// # Safety
/// `map` must be a window made by `map_window`, not unmapped yet, that nothing uses any more.
unsafe fn unmap_window(map: *mut u8) {
    // SAFETY: by the caller's contract `map` starts a live `WINDOW`-byte mapping with no users
    // left, so removing it leaves no dangling access.
    unsafe { libc::munmap(map.cast(), WINDOW) };
}

enum WarmerJob {
    /// Map and fault in the window at this offset, `usable` bytes of it backed by the file.
    Prepare { offset: u64, usable: usize },
    /// Unmap a window the writer is done with (an address, as it crosses threads).
    Unmap(usize),
    /// Answer once every job sent before this one is done.
    Drained(mpsc::SyncSender<()>),
}

/// A thread that prepares the writer's next window and unmaps its old ones, on the other core.
struct Warmer {
    jobs: Option<mpsc::Sender<WarmerJob>>,
    prepared: mpsc::Receiver<(u64, usize)>,
    /// The offset of the window asked for and not yet answered.
    pending: Option<u64>,
    /// A prepared window (offset, address) received by `settle_before` and not yet taken.
    ready: Option<(u64, usize)>,
    handle: Option<JoinHandle<()>>,
}

impl Warmer {
    fn start(file: &File, delay: std::time::Duration) -> Option<Self> {
        let file = file.try_clone().ok()?;
        let (jobs, inbox) = mpsc::channel::<WarmerJob>();
        let (ready, prepared) = mpsc::channel::<(u64, usize)>();
        let handle = std::thread::Builder::new()
            .name("opencode-addons-log-warmer".into())
            .spawn(move || {
                for job in inbox {
                    match job {
                        WarmerJob::Prepare { offset, usable } => {
                            if !delay.is_zero() {
                                std::thread::sleep(delay);
                            }
                            // The writer puts no data in this window until it has this job's
                            // answer (`take`, `settle_before`), so these zeros land on none.
                            write_zeros(&file, offset, offset + usable as u64);
                            let map = map_window(&file, offset).map_or(0, |map| {
                                populate(map, usable);
                                map as usize
                            });
                            if ready.send((offset, map)).is_err() && map != 0 {
                                // SAFETY: the send failed, so the writer never got this address:
                                // this thread holds its only copy and drops it here.
                                unsafe { unmap_window(map as *mut u8) };
                            }
                        }
                        // SAFETY: the writer sends `Unmap` only for a window it has stopped
                        // using and forgotten (`MappedLog::unmap` nulls its pointer next).
                        WarmerJob::Unmap(map) => unsafe { unmap_window(map as *mut u8) },
                        WarmerJob::Drained(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()?;
        Some(Self {
            jobs: Some(jobs),
            prepared,
            pending: None,
            ready: None,
            handle: Some(handle),
        })
    }

    fn prepare(&mut self, offset: u64, usable: usize) {
        self.discard();
        if let Some(jobs) = &self.jobs {
            if jobs.send(WarmerJob::Prepare { offset, usable }).is_ok() {
                self.pending = Some(offset);
            }
        }
    }

    /// Waits for the window asked for if it starts before `end`, keeping it for `take` (which
    /// checks its offset) or `discard` (which unmaps it): a write reaching into it must land
    /// after the zeros the warmer writes there.
    fn settle_before(&mut self, end: u64) {
        if self.pending.is_some_and(|offset| offset < end) {
            self.pending = None;
            self.ready = self.prepared.recv().ok();
        }
    }

    /// The prepared window and its offset, if it is the one asked for and holds byte `len` of
    /// the file (waiting for it).
    fn take(&mut self, len: u64) -> Option<(*mut u8, u64)> {
        let holds = |offset: u64| offset <= len && len < offset + WINDOW as u64;
        if let Some(offset) = self.pending.filter(|&offset| holds(offset)) {
            self.settle_before(offset + 1);
        }
        match self.ready.take() {
            Some((offset, map)) if map != 0 && holds(offset) => Some((map as *mut u8, offset)),
            other => {
                self.ready = other;
                self.discard();
                None
            }
        }
    }

    /// Drops the window asked for or kept, if any.
    fn discard(&mut self) {
        self.settle_before(u64::MAX);
        if let Some((_, map)) = self.ready.take().filter(|&(_, map)| map != 0) {
            self.unmap(map as *mut u8);
        }
    }

    /// Waits until the thread has done every job sent so far (unmapped every window it got).
    fn drain(&self) {
        let (done, drained) = mpsc::sync_channel(1);
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(WarmerJob::Drained(done)).is_ok());
        if sent {
            // An error means the thread is gone, with nothing left to do.
            let _ = drained.recv();
        }
    }

    fn unmap(&self, map: *mut u8) {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(WarmerJob::Unmap(map as usize)).is_ok());
        if !sent {
            // SAFETY: callers pass a window they have stopped using and forgotten, and the send
            // failed, so the warmer never got it either: no one uses it after this.
            unsafe { unmap_window(map) };
        }
    }
}

impl Warmer {
    /// Lets go without waiting for the thread (in a forked child, where it does not exist).
    fn abandon(mut self) {
        self.pending = None;
        self.ready = None;
        super::fork::abandon_channels(self.jobs.take(), &mut self.prepared);
        std::mem::forget(self.handle.take());
    }
}

impl Drop for Warmer {
    fn drop(&mut self) {
        self.discard();
        self.jobs.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for MappedLog {
    fn drop(&mut self) {
        if super::fork::forked_since(self.opened_in) {
            // A forked child: the file is the parent's and the warmer thread is not ours.
            if let Some(warmer) = self.warmer.take() {
                warmer.abandon();
            }
            return;
        }
        self.unmap();
        // The warmer may be writing zeros past the data: it must finish before the trim.
        drop(self.warmer.take());
        let _ = self.file.set_len(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Read;

    /// A path for a test's log, with no file there yet.
    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("oca-log-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.jsonl");
        let _ = std::fs::remove_file(&path);
        path
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
    fn cutting_back_past_the_window_maps_the_one_holding_the_data_again() {
        let path = temp_path("cut-back");
        let line = vec![b'x'; 999];
        {
            let mut log = MappedLog::new(open(&path), 0).unwrap();
            log.append(&[b"first\n"]).unwrap();
            // A refused batch's lines, written through the mapping across three windows.
            for _ in 0..1500 {
                log.append(&[&line, b"\n"]).unwrap();
            }
            assert!(log.map_offset > 6, "the window moved on");
            log.cut_back(6);
            assert_eq!(log.data_len(), 6);
            for _ in 0..3 {
                log.append(&[b"after\n"]).unwrap();
            }
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"first\nafter\nafter\nafter\n"
        );
    }

    #[test]
    fn reading_back_stops_at_the_end_of_the_data() {
        let path = temp_path("read-at");
        let mut log = MappedLog::new(open(&path), 0).unwrap();
        log.append(&[b"hello\n"]).unwrap();
        let mut out = [0u8; 6];
        log.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"hello\n");
        // The file is allocated past the data (zeros there): still refused.
        let error = log.read_at(1, &mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn lines_larger_than_a_window_are_written_whole() {
        let path = temp_path("large");
        let big: Vec<u8> = (0..3 * WINDOW + 17)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        {
            let mut log = MappedLog::new(open(&path), 0).unwrap();
            log.append(&[b"x\n"]).unwrap();
            log.append(&[&big, b"\n"]).unwrap();
            log.append(&[b"y\n"]).unwrap();
        }
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[..2], b"x\n");
        assert_eq!(&data[2..2 + big.len()], &big[..]);
        assert_eq!(&data[2 + big.len()..], b"\ny\n");
    }

    #[test]
    fn written_through_and_mapped_appends_interleave_exactly() {
        // Small appends go through the mapping, large ones (and batches of many parts, more
        // than one pwritev takes) through pwritev; a large one may jump past the window the
        // warmer prepared, or land inside it.
        let path = temp_path("through");
        let mut expected = Vec::new();
        {
            let mut log = MappedLog::new(open(&path), 0).unwrap();
            for round in 0..60usize {
                let small = format!("small {round}\n").into_bytes();
                log.append(&[&small]).unwrap();
                expected.extend_from_slice(&small);
                let size = [100, 17_000, 40_000, 300_000, 5][round % 5];
                let body: Vec<u8> = (0..size).map(|i| b'a' + ((i + round) % 26) as u8).collect();
                log.append(&[&body, b"\n"]).unwrap();
                expected.extend_from_slice(&body);
                expected.push(b'\n');
                if round % 7 == 0 {
                    let lines: Vec<Vec<u8>> = (0..1500)
                        .map(|i| format!("batch {round} {i}\n").into_bytes())
                        .collect();
                    let parts: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
                    log.append(&parts).unwrap();
                    expected.extend(lines.concat());
                }
            }
            assert_eq!(log.data_len(), expected.len() as u64);
        }
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn a_write_through_into_the_window_being_prepared_lands_after_its_zeros() {
        // The warmer writes zeros over the window it prepares; a large append reaching into
        // that window must wait for them, or the zeros would overwrite its data.
        let path = temp_path("settle");
        let mut expected = Vec::new();
        {
            let slow = std::time::Duration::from_millis(20);
            let mut log = MappedLog::with_warmer_delay(open(&path), 0, slow).unwrap();
            for round in 0..4usize {
                // A small append maps a window and asks for the next one (slow to come) ...
                let small = format!("small {round}\n").into_bytes();
                log.append(&[&small]).unwrap();
                expected.extend_from_slice(&small);
                // ... and this one is written through, past the end of the mapped window.
                let body = vec![b'a' + round as u8; WINDOW + 4096];
                log.append(&[&body, b"\n"]).unwrap();
                expected.extend_from_slice(&body);
                expected.push(b'\n');
            }
        }
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn closing_while_a_window_is_prepared_leaves_the_file_at_its_data() {
        // The warmer writes zeros past the data: the trim on drop must come after them.
        let path = temp_path("close-settle");
        {
            let slow = std::time::Duration::from_millis(20);
            let mut log = MappedLog::with_warmer_delay(open(&path), 0, slow).unwrap();
            log.append(&[b"one line\n"]).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"one line\n");
    }

    #[test]
    fn small_lines_go_through_the_mapping_and_large_ones_through_pwritev_when_asked() {
        let line = [b'x'; 500];
        let batch: Vec<&[u8]> = vec![&line[..]; 1000];
        assert!(!writes_through(&batch, 500_000, true));
        let huge: Vec<&[u8]> = vec![&line[..]; 2 * WINDOW / 500 + 1];
        assert!(writes_through(&huge, (huge.len() * 500) as u64, false));
        let big = vec![b'y'; WRITE_THROUGH as usize];
        assert!(writes_through(&[&big[..], b"\n"], WRITE_THROUGH + 1, true));
        assert!(!writes_through(
            &[&big[..], b"\n"],
            WRITE_THROUGH + 1,
            false
        ));
        assert!(!writes_through(&[&big[1..], b"\n"], WRITE_THROUGH, true));
    }

    #[test]
    fn large_lines_go_through_the_mapping_only_when_asked() {
        let path = temp_path("large-lines");
        let mut log = MappedLog::new(open(&path), 0).unwrap();
        let large: Vec<u8> = (0..40_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut expected = Vec::new();
        for (round, through) in [true, false, false, true, false].into_iter().enumerate() {
            log.write_large_lines_through(through);
            let before = log.written_through;
            log.append(&[&large[..], b"\n"]).unwrap();
            log.append(&[b"small\n"]).unwrap();
            assert_eq!(
                log.written_through - before,
                u64::from(through),
                "round {round}"
            );
            expected.extend_from_slice(&large);
            expected.extend_from_slice(b"\nsmall\n");
        }
        // Fifteen of them cross a window; whichever way each went, the file holds them in order.
        for _ in 0..15 {
            log.append(&[&large[..], b"\n"]).unwrap();
            expected.extend_from_slice(&large);
            expected.push(b'\n');
        }
        assert_eq!(log.written_through, 2);
        log.trim(false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn erase_blanks_a_refused_range_with_zeros() {
        let path = temp_path("erase");
        let mut log = MappedLog::new(open(&path), 0).unwrap();
        log.append(&[b"keep\n", b"gone\n"]).unwrap();
        log.erase(5, 10);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[..10], b"keep\n\0\0\0\0\0");
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

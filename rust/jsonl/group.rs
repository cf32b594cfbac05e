//! Group commit: one background thread fsyncs the log at most every `interval`, covering every
//! append made since the last fsync; `wait` blocks until a given sequence number is on disk.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Progress {
    synced: u64,
    stop: bool,
    exited: bool,
    urgent: bool,
    error: Option<String>,
}

pub struct GroupSync {
    /// The file to fsync: the active segment (replaced when a segment is sealed).
    file: Mutex<Arc<File>>,
    written: AtomicU64,
    progress: Mutex<Progress>,
    wake: Condvar,
    done: Condvar,
}

/// The running group-commit thread; stopping it (or dropping this) performs a final fsync.
pub struct GroupThread {
    shared: Arc<GroupSync>,
    handle: Option<JoinHandle<()>>,
    /// The fork generation the thread was started in (a forked child has no such thread).
    started_in: u64,
}

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A poisoned lock only means another thread panicked mid-update of plain counters.
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that everything up to `seq` has been written to the page cache.
    pub fn mark_written(&self, seq: u64) {
        self.written.fetch_max(seq, Ordering::Release);
    }

    /// Blocks until everything up to `seq` is on disk; returns the fsync error, if one happened.
    pub fn wait(&self, seq: u64) -> Result<(), String> {
        let mut progress = self.lock();
        progress.urgent = true;
        self.wake.notify_one();
        loop {
            // A failed fsync is not retried into a false success: once one fails, every wait
            // reports it, since what it should have made durable may be lost.
            if let Some(error) = &progress.error {
                return Err(error.clone());
            }
            if progress.synced >= seq {
                return Ok(());
            }
            if progress.exited {
                return Err("the store was closed before the sync finished".into());
            }
            progress = self
                .done
                .wait(progress)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// The fsync failure, if one happened.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    pub fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// Makes `file` the one fsynced from now on. Everything written to the previous file must
    /// already be on disk (sealing fsyncs it first), and nothing may have been written to the
    /// new one yet: a fsync that reads a `written` seq of the new file then sees the new file.
    pub fn set_file(&self, file: Arc<File>) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
    }

    fn current_file(&self) -> Arc<File> {
        Arc::clone(&self.file.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl GroupThread {
    pub fn start(file: File, interval: Duration, already_synced: u64) -> std::io::Result<Self> {
        let shared = Arc::new(GroupSync {
            file: Mutex::new(Arc::new(file)),
            written: AtomicU64::new(already_synced),
            progress: Mutex::new(Progress {
                synced: already_synced,
                ..Progress::default()
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("opencode-addons-group-sync".into())
            .spawn(move || run(&worker, interval))?;
        Ok(Self {
            shared,
            handle: Some(handle),
            started_in: super::fork::generation(),
        })
    }

    pub fn shared(&self) -> &Arc<GroupSync> {
        &self.shared
    }

    pub fn stop(&mut self) {
        // In a fork child the lock may be held by a thread that does not exist there.
        if !super::fork::forked_since(self.started_in) {
            self.shared.lock().stop = true;
            self.shared.wake.notify_one();
        }
        super::fork::join_helper(self.handle.take(), self.started_in);
    }
}

impl Drop for GroupThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &GroupSync, interval: Duration) {
    loop {
        let stopping = {
            let mut progress = shared.lock();
            if !progress.stop && !progress.urgent {
                progress = shared
                    .wake
                    .wait_timeout(progress, interval)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            progress.urgent = false;
            progress.stop
        };
        // The target first, then the file: a seq written to a new file was marked after the
        // file was switched, so reading it means the switch is seen too.
        let target = shared.written.load(Ordering::Acquire);
        if target > shared.synced() {
            let result = shared.current_file().sync_data();
            let mut progress = shared.lock();
            match result {
                Ok(()) if progress.error.is_none() => progress.synced = progress.synced.max(target),
                Ok(()) => {}
                Err(e) => progress.error = Some(format!("group fsync of the log failed: {e}")),
            }
            shared.done.notify_all();
        }
        if stopping {
            shared.lock().exited = true;
            shared.done.notify_all();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_return_once_the_written_seq_is_synced() {
        let file = tempfile_in_target("group-ok");
        let mut thread = GroupThread::start(file, Duration::from_millis(1), 0).unwrap();
        thread.shared().mark_written(3);
        assert_eq!(thread.shared().wait(3), Ok(()));
        assert!(thread.shared().synced() >= 3);
        thread.stop();
        assert_eq!(thread.shared().error(), None);
    }

    #[test]
    fn a_failed_fsync_is_reported_to_every_wait_and_never_turns_into_success() {
        // fsync of /dev/null fails (EINVAL): a stand-in for a disk that refuses a sync.
        let Ok(file) = File::open("/dev/null") else {
            return;
        };
        let mut thread = GroupThread::start(file, Duration::from_millis(1), 0).unwrap();
        thread.shared().mark_written(1);
        let first = thread.shared().wait(1).unwrap_err();
        assert!(first.contains("group fsync of the log failed"), "{first}");
        // Later waits, for the same or newer appends, keep failing: the thread may retry, but
        // what the failed sync should have covered may be lost.
        thread.shared().mark_written(2);
        assert_eq!(thread.shared().wait(1), Err(first.clone()));
        assert_eq!(thread.shared().wait(2), Err(first.clone()));
        assert_eq!(thread.shared().synced(), 0);
        thread.stop();
        assert_eq!(thread.shared().error(), Some(first));
    }

    fn tempfile_in_target(name: &str) -> File {
        let dir = std::env::temp_dir().join(format!("oca-group-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("log"))
            .unwrap()
    }
}

// Starling's patch (vendor/README.md): start a table's write-back while it is
// being built, so that the fsync at its end carries at most a step of it.

use std::fs::File;

/// How many bytes a table writer adds before it starts their write-back.
pub const STEP_BYTES: u64 = 1_024 * 1_024;

/// Tracks how far a table file's write-back has been started.
///
/// Without it, a flushed or compacted table (tens of MiB) stays in the page
/// cache until the `fsync` in [`super::Writer::finish`], which then hands
/// the device all of it at once; every other file's sync on the same device
/// waits behind that, a journal's included. Starting the write-back every
/// [`STEP_BYTES`] (as RocksDB's `bytes_per_sync` does) spreads the table's
/// writes over the time it takes to build it.
#[derive(Debug, Default)]
pub struct WriteBehind {
    started_at: u64,
}

impl WriteBehind {
    /// Called after the file's logical length grew to `written`; starts the
    /// write-back of its dirty pages once a step has been added since the
    /// last start. The bytes still in the writer's buffer are taken by the
    /// next step or by the final `fsync`.
    pub fn written(&mut self, file: &File, written: u64) {
        if written.saturating_sub(self.started_at) < STEP_BYTES {
            return;
        }
        self.started_at = written;
        start_write_back(file);
    }
}

/// Starts, without waiting for it, the write-back of every dirty page of
/// `file` not already being written. Durability still comes from the
/// `fsync` at the table's end: this only moves work earlier, so an error
/// here is left for that `fsync` to report.
#[cfg(target_os = "linux")]
fn start_write_back(file: &File) {
    use std::os::fd::AsRawFd;

    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // `sync_file_range` reads no memory of ours. Offset and length 0 mean
    // the whole file; only dirty pages are visited.
    let result =
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if result != 0 {
        log::debug!(
            "sync_file_range failed, left to the table's fsync: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_write_back(_file: &File) {}

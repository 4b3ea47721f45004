//! An in-memory log writer for tests: pass it (or a clone) as the `MakeWriter` of
//! [`crate::json_layer`] / [`crate::init_with_writer`] and inspect what was written.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

/// Shared buffer of captured log output. Clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl CapturedLogs {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave a Vec<u8> inconsistent.
        self.buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything written so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// The written lines parsed as JSON (lines that are not JSON are skipped).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.contents()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Forget what was written.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Writer handed out by [`CapturedLogs`].
#[derive(Debug)]
pub struct CaptureWriter {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl io::Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter {
            buf: Arc::clone(&self.buf),
        }
    }
}

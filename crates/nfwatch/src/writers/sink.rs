//! Where records go: stdout or a file, in units (a line, an IPFIX message)
//! written in large writes, and after a failed write cut back to the last
//! whole unit.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Where lines go, and how much of them is known to be on disk.
pub enum Destination {
    Stdout(io::Stdout),
    /// A file, with its length when we opened it (non-zero when appending).
    File {
        file: File,
        start: u64,
    },
}

impl Destination {
    /// A regular file (stdout included when redirected to one), as opposed
    /// to a terminal, pipe or device someone may be reading live.
    pub fn is_regular_file(&self) -> bool {
        let metadata = match self {
            Destination::Stdout(stdout) => stdout
                .as_fd()
                .try_clone_to_owned()
                .and_then(|fd| File::from(fd).metadata()),
            Destination::File { file, .. } => file.metadata(),
        };
        metadata.is_ok_and(|m| m.is_file())
    }
}

impl Write for Destination {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Destination::Stdout(stdout) => stdout.write(bytes),
            Destination::File { file, .. } => file.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Destination::Stdout(stdout) => stdout.flush(),
            Destination::File { .. } => Ok(()),
        }
    }
}

/// Buffers whole units and writes them out; after a failed write it knows
/// where the last complete unit ends so a file can be cut back to it.
pub struct Sink {
    destination: Destination,
    pending: Vec<u8>,
    /// Where each unit in `pending` ends, and how many records it holds.
    units: Vec<(usize, u64)>,
    /// When the oldest unit in `pending` was added.
    pending_since: Option<Instant>,
    /// Bytes of complete units that reached the current destination.
    committed_bytes: u64,
    /// Records that reached any destination (headers hold none).
    committed_records: u64,
}

const SINK_BUFFER_BYTES: usize = 256 * 1024;

impl Sink {
    pub fn new(destination: Destination) -> Self {
        Self {
            destination,
            pending: Vec::with_capacity(SINK_BUFFER_BYTES + 4096),
            units: Vec::new(),
            pending_since: None,
            committed_bytes: 0,
            committed_records: 0,
        }
    }

    /// The buffer to append exactly one complete unit to, then `unit_added`.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Counts the unit just appended, holding `records`, and writes out a
    /// full buffer.
    pub fn unit_added(&mut self, records: u64) -> io::Result<()> {
        if self.units.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        self.units.push((self.pending.len(), records));
        if self.pending.len() >= SINK_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// When the oldest buffered unit will have waited `max_age`.
    pub fn flush_due(&self, max_age: Duration) -> Option<Instant> {
        self.pending_since.map(|since| since + max_age)
    }

    /// Drops a partially formatted unit (after a formatting error).
    pub fn discard_partial(&mut self, keep: usize) {
        self.pending.truncate(keep);
    }

    /// Records that reached the destination.
    pub fn records_written(&self) -> u64 {
        self.committed_records
    }

    pub fn flush(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.destination.write(&self.pending[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // Keep the complete units that made it; forget the rest.
        let whole = self.units.partition_point(|&(end, _)| end <= done);
        let bytes = whole.checked_sub(1).map_or(0, |last| self.units[last].0);
        let records: u64 = self.units[..whole].iter().map(|&(_, n)| n).sum();
        self.committed_bytes += bytes as u64;
        self.committed_records += records;
        self.pending.clear();
        self.units.clear();
        self.pending_since = None;
        result.and_then(|()| self.destination.flush())
    }

    /// Flushes and makes a regular file durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match &self.destination {
            // A device or a FIFO has nothing to make durable, and fsync() on it fails.
            Destination::File { file, .. } if file.metadata()?.is_file() => file.sync_all(),
            _ => Ok(()),
        }
    }

    /// Goes on with `destination` (log rotation); `sync` first, so that no
    /// unit is left for the old one.
    pub fn switch_to(&mut self, destination: Destination) {
        self.destination = destination;
        self.committed_bytes = 0;
    }

    /// Flushes and makes the file durable.
    pub fn finish(&mut self) -> io::Result<()> {
        self.sync()?;
        if let Destination::File { file, .. } = &self.destination {
            // Writes to an unlinked file succeed; the records are lost all the same.
            if std::os::unix::fs::MetadataExt::nlink(&file.metadata()?) == 0 {
                return Err(io::Error::other(
                    "the file was removed while nfwatch was writing it",
                ));
            }
        }
        Ok(())
    }

    /// After a write error: cut a regular file back to its last complete
    /// unit so it never ends in half a record.
    pub fn truncate_to_committed(&mut self) -> io::Result<()> {
        match &self.destination {
            Destination::File { file, start } if file.metadata()?.is_file() => {
                file.set_len(start + self.committed_bytes)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_on_a_device_succeeds() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let mut sink = Sink::new(Destination::File { file, start: 0 });
        sink.buffer().extend_from_slice(b"line\n");
        sink.unit_added(1).unwrap();
        sink.finish().unwrap();
        assert_eq!(sink.records_written(), 1);
    }
}

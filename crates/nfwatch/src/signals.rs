//! Signals become flags plus a wakeup byte on a pipe that poll(2) watches;
//! the handlers themselves do nothing else.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::{flag, low_level::pipe};

pub struct Signals {
    wakeup: UnixStream,
    stop: Arc<AtomicBool>,
    report: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        let (wakeup, wakeup_writer) = UnixStream::pair()?;
        wakeup.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(AtomicBool::new(false));
        let reopen = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            flag::register(signal, Arc::clone(&stop))?;
        }
        flag::register(SIGUSR1, Arc::clone(&report))?;
        flag::register(SIGHUP, Arc::clone(&reopen))?;
        for signal in [SIGINT, SIGTERM, SIGUSR1, SIGHUP] {
            pipe::register(signal, wakeup_writer.try_clone()?)?;
        }
        Ok(Self {
            wakeup,
            stop,
            report,
            reopen,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.wakeup.as_raw_fd()
    }

    /// Empties the wakeup pipe.
    pub fn drain(&mut self) {
        let mut bytes = [0u8; 64];
        while matches!(self.wakeup.read(&mut bytes), Ok(n) if n > 0) {}
    }

    /// SIGINT or SIGTERM arrived since the last call.
    pub fn take_stop(&self) -> bool {
        self.stop.swap(false, Ordering::Relaxed)
    }

    /// SIGUSR1 arrived since the last call.
    pub fn take_report(&self) -> bool {
        self.report.swap(false, Ordering::Relaxed)
    }

    /// SIGHUP arrived since the last call.
    pub fn take_reopen(&self) -> bool {
        self.reopen.swap(false, Ordering::Relaxed)
    }
}

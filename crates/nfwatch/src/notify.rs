//! Tells systemd (`Type=notify`) that the subscription stands, so
//! `systemctl start` returns only once recording has begun and fails when
//! the kernel refused it. Outside systemd (no NOTIFY_SOCKET) this does nothing.

use sd_notify::NotifyState;

/// READY=1 with the subscription line as the unit's status text.
pub fn ready(status: &str) {
    let status = status.strip_prefix("nfwatch: ").unwrap_or(status);
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        eprintln!("nfwatch: cannot notify systemd: {e}");
    }
}

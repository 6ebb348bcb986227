//! `nfwatch --version`: the CLI's version and protocol, and the loaded
//! module's.

use std::io::{self, Write};

use nfwatch_proto::PROTOCOL_VERSION;

use crate::error::{Error, Result};
use crate::netlink::GenlSocket;
use crate::subscribe;

pub fn print() -> Result<()> {
    let text = format!(
        "nfwatch {} (protocol {PROTOCOL_VERSION})\n{}\n",
        env!("CARGO_PKG_VERSION"),
        module_line()
    );
    io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("cannot write to stdout", e))
}

/// What the kernel says about the module, without failing: --version
/// should print the CLI's version whatever the module's state.
fn module_line() -> String {
    let family = GenlSocket::open()
        .map_err(|e| Error::io("cannot open a netlink socket", e))
        .and_then(|mut socket| subscribe::nfwatch_family(&mut socket));
    match family {
        Ok(family) => format!(
            "module {} (protocol {})",
            subscribe::module_version().as_deref().unwrap_or("unknown"),
            family
                .version
                .map_or_else(|| "unknown".to_string(), |v| v.to_string())
        ),
        Err(Error::ModuleNotLoaded) => "module not loaded".to_string(),
        Err(e) => format!("module: {e}"),
    }
}

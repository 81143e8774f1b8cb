//! The network lock: from the moment a connection whose peer is outside the tree
//! is read until restore makes it again, its packets are dropped both ways, so
//! the peer sees neither a reset nor a FIN and its retransmissions wait.
//!
//! Not yet made: this machine has no nft or iptables binary, and the eBPF way (a
//! tc classifier on the loopback device with a pinned map of the 4-tuples to
//! drop) is not written yet. Until it is, a connection to a peer outside the tree
//! is refused before the freeze ([`supported`]), so the lock below is never
//! asked for.

use ckpt_common::image::{InodeKind, TcpAddress};

use crate::error::{Error, Result};

const NOT_YET: &str = "its peer is outside the tree, which needs the network lock: not yet \
                       supported by ckpt dump (only connections with both ends in the tree are)";

/// Whether the lock can be taken (checked before the freeze).
pub fn supported() -> Result<()> {
    Err(Error::Other(NOT_YET.into()))
}

/// A lock held for some connections.
pub struct NetLock {
    name: String,
}

impl NetLock {
    pub fn create(_root: i32) -> Result<NetLock> {
        Err(Error::Other(NOT_YET.into()))
    }

    /// The lock's name (where it is pinned, under /sys/fs/bpf).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the packets of the connection local -> remote from now on.
    pub fn hold(&mut self, local: &TcpAddress, remote: &TcpAddress) -> Result<()> {
        Err(Error::Other(format!(
            "network lock {}: holding {} -> {}: {NOT_YET}",
            self.name,
            super::repair::show(local),
            super::repair::show(remote)
        )))
    }

    /// The tree carries on: let every held connection's packets through again.
    pub fn release(self) -> Result<()> {
        Ok(())
    }

    /// The tree was killed: the lock stays for restore to lift.
    pub fn keep(self) {}
}

/// Restore: the connection `rec` is made again; its packets may pass.
pub fn lift(name: &str, rec: &InodeKind) -> Result<()> {
    let _ = rec;
    Err(Error::Other(format!(
        "the image holds connections under the network lock {name}: {NOT_YET}"
    )))
}

//! Types shared by ckpt's eBPF programs and its userspace side.
//!
//! Everything in [`tracker`] is `#[repr(C)]` plain data: the eBPF programs write it into
//! maps and the ring buffer, userspace reads it back byte for byte. The image format
//! (userspace only) lives in `image` behind the `user` feature.
#![no_std]

#[cfg(feature = "user")]
pub mod image;
pub mod tracker;

//! timerfd: a clock, a time left, an interval and the expirations not yet read.
//! Dumped from fdinfo; restored as a new timerfd on the same clock, armed (relative)
//! with the time it had left, its unread expirations set with TFD_IOC_SET_TICKS.
//! A timer set with TFD_TIMER_ABSTIME comes back relative: it keeps its time left,
//! not its deadline (as the process's other timers do across a restore).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use ckpt_common::image::InodeKind;

use super::fdinfo_field;
use crate::error::{Error, Result};

/// `_IOW('T', 0, u64)`: sets a timerfd's expiration count (CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

/// `(sec, nsec)` as fdinfo prints a timespec, in nanoseconds.
fn timespec_ns(v: &str) -> Option<u64> {
    let (sec, nsec) = v
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    Some(sec.trim().parse::<u64>().ok()? * 1_000_000_000 + nsec.trim().parse::<u64>().ok()?)
}

/// The timerfd state in an fdinfo text.
pub fn dump(fdinfo: &str) -> Result<InodeKind> {
    let missing = |what: &str| Error::Other(format!("no {what} in fdinfo {fdinfo:?}"));
    let field = |name: &str| fdinfo_field(fdinfo, name).ok_or_else(|| missing(name));
    Ok(InodeKind::TimerFd {
        clockid: field("clockid")?.parse().map_err(|_| missing("clockid"))?,
        ticks: field("ticks")?.parse().map_err(|_| missing("ticks"))?,
        settime_flags: u32::from_str_radix(field("settime flags")?, 8)
            .map_err(|_| missing("settime flags"))?,
        value_ns: timespec_ns(field("it_value")?).ok_or_else(|| missing("it_value"))?,
        interval_ns: timespec_ns(field("it_interval")?).ok_or_else(|| missing("it_interval"))?,
    })
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Restore: a new timerfd, close-on-exec, as described above.
pub fn restore_open(clockid: u32, ticks: u64, value_ns: u64, interval_ns: u64) -> Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::timerfd_create(clockid as libc::c_int, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            format!("timerfd_create on clock {clockid}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if value_ns > 0 {
        let spec = libc::itimerspec {
            it_interval: timespec(interval_ns),
            it_value: timespec(value_ns),
        };
        // SAFETY: a valid itimerspec for an fd we own.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(Error::io(
                format!("arming a timerfd ({value_ns} ns left, every {interval_ns} ns)"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    if ticks > 0 {
        // SAFETY: the ioctl reads one u64.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) } != 0 {
            return Err(Error::io(
                format!("setting a timerfd's {ticks} unread expirations"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(fd)
}

//! timerfd: a clock, settime flags, a time left (or a deadline), an interval and the
//! expirations not yet read.
//!
//! Dumped through a copy of the fd (the same open file description): first
//! timerfd_gettime, then its fdinfo. The order matters. A periodic timer that
//! expired and was not read since is not re-armed by the kernel until it is read
//! or queried: its fdinfo shows `it_value: (0, 0)` and one tick, however many
//! periods went by. A restore from that fdinfo alone would give back a disarmed
//! timer with one expiration. timerfd_gettime forwards such a timer to its next
//! expiry and counts the periods it missed into its ticks, exactly as the next
//! read(2) of the process would; fdinfo then shows the true state.
//!
//! Restored as a new timerfd on the same clock with TFD_IOC_SET_TICKS for the
//! unread expirations. A relative timer is armed with the time it had left (a
//! restore does not count the time the tree was not running, as for the process's
//! other timers). A timer set with TFD_TIMER_ABSTIME keeps its deadline on its
//! clock: the dump saves now + time left, and restore arms it absolute, with
//! TFD_TIMER_CANCEL_ON_SET when it had it. A cancellation that already happened
//! (read(2) would answer ECANCELED) is not visible in fdinfo: it shows as one more
//! unread expiration, so such a timer with unread expirations is refused.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use ckpt_common::image::{InodeKind, InodeRecord, ObjRef, OpenFileRecord};

use super::{CreateCx, DumpCx, FdFacts, FileKind, Identity, fdinfo_field, foreign, not_mine};
use crate::error::{Error, Result};

pub struct TimerFd;

impl FileKind for TimerFd {
    fn name(&self) -> &'static str {
        "timerfd"
    }

    fn claims(&self, fd: &FdFacts) -> bool {
        super::is_anon(fd, "anon_inode:[timerfd]")
    }

    fn identity(&self) -> Identity {
        Identity::OpenFile
    }

    fn dump(&self, cx: &mut DumpCx, fd: &FdFacts) -> Result<InodeKind> {
        // Its fdinfo is read after timerfd_gettime, through the copy (see above).
        let copy = cx.copies.steal(fd.pid, fd.fd)?;
        dump(&copy).map_err(|e| fd.context(e))
    }

    fn create(
        &self,
        rec: &InodeRecord,
        _of: &OpenFileRecord,
        _cx: &mut CreateCx,
    ) -> Result<OwnedFd> {
        let InodeKind::TimerFd {
            clockid,
            ticks,
            settime_flags,
            value_ns,
            interval_ns,
        } = &rec.kind
        else {
            return Err(not_mine(self, &rec.kind));
        };
        restore_open(*clockid, *ticks, *settime_flags, *value_ns, *interval_ns)
    }

    fn describe(&self, rec: &InodeKind, _: &dyn Fn(ObjRef) -> String) -> String {
        let InodeKind::TimerFd {
            clockid,
            ticks,
            settime_flags,
            value_ns,
            interval_ns,
        } = rec
        else {
            return foreign(self, rec);
        };
        format!(
            "timerfd: clock {clockid}, {}, every {interval_ns} ns, {ticks} expirations \
             unread{}",
            if settime_flags & 1 != 0 {
                format!("expires at {value_ns} ns")
            } else {
                format!("{value_ns} ns left")
            },
            if settime_flags & 2 != 0 {
                ", cancelled when the clock is set"
            } else {
                ""
            }
        )
    }
}

/// `_IOW('T', 0, u64)`: sets a timerfd's expiration count (CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
const TFD_TIMER_ABSTIME: u32 = 1;
const TFD_TIMER_CANCEL_ON_SET: u32 = 2;

/// `(sec, nsec)` as fdinfo prints a timespec, in nanoseconds.
fn timespec_ns(v: &str) -> Option<u64> {
    let (sec, nsec) = v
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    Some(sec.trim().parse::<u64>().ok()? * 1_000_000_000 + nsec.trim().parse::<u64>().ok()?)
}

/// The timerfd state in an fdinfo text; `value_ns` is the time left.
pub fn parse(fdinfo: &str) -> Result<InodeKind> {
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

/// Now on the clock a timerfd on `clockid` counts on: an alarm clock counts on
/// its base clock (clock_gettime refuses the alarm clocks without an RTC).
fn clock_now_ns(clockid: u32) -> Result<u64> {
    let clockid = match clockid as libc::clockid_t {
        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME as u32,
        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME as u32,
        _ => clockid,
    };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    if unsafe { libc::clock_gettime(clockid as libc::clockid_t, &mut now) } != 0 {
        return Err(Error::io(
            format!("clock_gettime of clock {clockid}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// Dump: the state of the timerfd `copy` (a copy of the process's fd), as the module
/// notes describe.
pub fn dump(copy: &OwnedFd) -> Result<InodeKind> {
    let fd = copy.as_raw_fd();
    // SAFETY: an all-zero itimerspec is valid.
    let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: timerfd_gettime fills the itimerspec it is given.
    if unsafe { libc::timerfd_gettime(fd, &mut cur) } != 0 {
        return Err(Error::io(
            "timerfd_gettime",
            std::io::Error::last_os_error(),
        ));
    }
    let path = format!("/proc/self/fdinfo/{fd}");
    let fdinfo =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let mut kind = parse(&fdinfo)?;
    refuse_maybe_cancelled(&kind)?;
    if let InodeKind::TimerFd {
        clockid,
        settime_flags,
        value_ns,
        ..
    } = &mut kind
        && *settime_flags & TFD_TIMER_ABSTIME != 0
        && *value_ns > 0
    {
        *value_ns += clock_now_ns(*clockid)?;
    }
    Ok(kind)
}

/// A TFD_TIMER_CANCEL_ON_SET timer with unread expirations may have been cancelled
/// (its clock was set: the next read answers ECANCELED), which neither fdinfo nor
/// timerfd_gettime shows, and restore could only give back as expirations.
fn refuse_maybe_cancelled(kind: &InodeKind) -> Result<()> {
    if let InodeKind::TimerFd {
        ticks,
        settime_flags,
        ..
    } = kind
        && *settime_flags & TFD_TIMER_CANCEL_ON_SET != 0
        && *ticks > 0
    {
        return Err(Error::Other(format!(
            "a timerfd set with TFD_TIMER_CANCEL_ON_SET holds {ticks} unread expirations, which \
             may be a cancellation (its clock set; read would answer ECANCELED) that ckpt \
             cannot see: not yet supported by ckpt dump"
        )));
    }
    Ok(())
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Restore: a new timerfd, close-on-exec, as the module notes describe.
pub fn restore_open(
    clockid: u32,
    ticks: u64,
    settime_flags: u32,
    value_ns: u64,
    interval_ns: u64,
) -> Result<OwnedFd> {
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
        let flags = settime_flags & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET);
        // SAFETY: a valid itimerspec for an fd we own.
        if unsafe {
            libc::timerfd_settime(fd.as_raw_fd(), flags as i32, &spec, std::ptr::null_mut())
        } != 0
        {
            return Err(Error::io(
                format!(
                    "arming a timerfd on clock {clockid} (flags {flags:#o}, value {value_ns} ns, \
                     every {interval_ns} ns)"
                ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_an_absolute_timer_with_cancel_on_set_is_read_whole() {
        let fdinfo = "pos:\t0\nflags:\t02004002\nmnt_id:\t17\nino:\t1057\nclockid: 0\nticks: 3\n\
                      settime flags: 03\nit_value: (12, 500)\nit_interval: (1, 0)\n";
        assert_eq!(
            parse(fdinfo).unwrap(),
            InodeKind::TimerFd {
                clockid: 0,
                ticks: 3,
                settime_flags: TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
                value_ns: 12_000_000_500,
                interval_ns: 1_000_000_000,
            }
        );
    }

    #[test]
    fn an_expired_periodic_timer_is_forwarded_before_its_fdinfo_is_read() {
        // 1 ms period, expired for 30 ms and never read.
        // SAFETY: plain syscalls on a timerfd this test owns.
        let fd = unsafe {
            let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
            assert!(fd >= 0);
            let spec = libc::itimerspec {
                it_interval: timespec(1_000_000),
                it_value: timespec(1_000_000),
            };
            assert_eq!(libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()), 0);
            OwnedFd::from_raw_fd(fd)
        };
        std::thread::sleep(std::time::Duration::from_millis(30));
        let InodeKind::TimerFd {
            ticks,
            value_ns,
            interval_ns,
            ..
        } = dump(&fd).unwrap()
        else {
            panic!("not a timerfd");
        };
        assert!(value_ns > 0 && value_ns <= 1_000_000, "armed: {value_ns}");
        assert_eq!(interval_ns, 1_000_000);
        assert!(ticks >= 10, "the missed periods are counted: {ticks}");
    }
}

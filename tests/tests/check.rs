//! `ckpt check --json` against what the machine itself says: the kernel release,
//! the unix sockets /proc/net/unix lists, and whether inotify takes
//! INOTIFY_IOC_SETNEXTWD when this test asks it directly.

use ckpt_tests::ckpt;

fn setup() {
    ckpt_tests::require_root().unwrap();
    ckpt::require_bin().unwrap();
}

fn check_json() -> serde_json::Value {
    let out = ckpt::run(&["check", "--json"]).unwrap();
    assert!(out.status.success(), "{}", out.describe());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

/// The check named `name` (starting with it): (ok, detail).
fn find<'a>(doc: &'a serde_json::Value, name: &str) -> (bool, &'a str) {
    let c = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap_or("").starts_with(name))
        .unwrap_or_else(|| panic!("no check named {name}: {doc:#}"));
    (
        c["ok"].as_bool().unwrap(),
        c["detail"].as_str().unwrap_or(""),
    )
}

#[test]
fn check_reports_this_kernel_and_every_required_capability() {
    setup();
    let doc = check_json();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(doc["kernel"].as_str(), Some(release.trim()), "{doc:#}");
    for c in doc["checks"].as_array().unwrap() {
        if c["required"].as_bool() == Some(true) {
            assert_eq!(c["ok"].as_bool(), Some(true), "required check failed: {c}");
        }
    }
}

#[test]
fn check_counts_the_unix_sockets_proc_net_unix_lists() {
    setup();
    let doc = check_json();
    let (ok, detail) = find(&doc, "unix socket peers");
    assert!(ok, "{detail}");
    let seen: usize = detail
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {detail:?}"));
    // Sockets come and go on a live machine: the two reads happen moments apart.
    let listed = std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .count()
        - 1;
    assert!(
        seen.abs_diff(listed) <= 8,
        "sock_diag saw {seen} unix sockets, /proc/net/unix lists {listed}"
    );
}

#[test]
fn check_says_whether_inotify_takes_setnextwd_as_the_kernel_does() {
    setup();
    // SAFETY: plain syscalls on an fd this test owns and closes.
    let kernel_takes_it = unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        assert!(fd >= 0);
        // INOTIFY_IOC_SETNEXTWD = _IOW('I', 0, __s32)
        let rc = libc::ioctl(fd, 0x4004_4900 as _, 5 as libc::c_long);
        libc::close(fd);
        rc == 0
    };
    let doc = check_json();
    let (ok, detail) = find(&doc, "inotify watch descriptors");
    assert_eq!(ok, kernel_takes_it, "{detail}");
}

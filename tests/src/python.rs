//! A python3 script (Debian's interpreter) as a workload that answers in JSON
//! lines: the script prints one JSON object per answer on stdout and ends when its
//! stdin reaches EOF (which dropping the workload gives it).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;

pub struct PythonWorkload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: i32,
}

impl PythonWorkload {
    /// Starts `python3 -c script` (as root, with the ckpt binary built).
    pub fn start(script: &str) -> PythonWorkload {
        crate::require_root().unwrap();
        crate::ckpt::require_bin().unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        PythonWorkload {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// The next JSON line the script prints.
    pub fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("python3 printed {line:?}: {e}"))
    }

    /// Sends one command line and returns the script's answer.
    pub fn ask(&mut self, cmd: &str) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        self.answer()
    }

    /// readlink /proc/PID/fd/FD of the script.
    pub fn link(&self, fd: i64) -> String {
        std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for PythonWorkload {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

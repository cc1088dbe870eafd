//! Driving the real `fjord` binary from tests.

use std::process::{Child, Command};

pub const FJORD: &str = env!("CARGO_BIN_EXE_fjord");

/// `fjord cluster status --json` through `bootstrap`, if it answers.
pub fn cluster_status(bootstrap: &str) -> Option<serde_json::Value> {
    let out = Command::new(FJORD)
        .args(["cluster", "status", "--json", "--timeout", "3"])
        .args(["--bootstrap-server", bootstrap])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Sends `sig` to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Runs `fjord args...` with `input` on its standard input; waits for it.
pub fn run_with_input(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(FJORD)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fjord");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for fjord")
}

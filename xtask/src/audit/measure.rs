//! Running a command and measuring it from outside: wall time and peak RSS (`wait4` rusage maxrss).

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// One finished run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Wall time from spawn to reap, milliseconds.
    pub wall_ms: f64,
    /// Peak resident set size reported by the kernel, KiB.
    pub peak_rss_kib: u64,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

/// Runs `cmd` with stdout discarded and stderr sent to `stderr_log`, and reaps it with `wait4` so
/// the kernel's per-process peak RSS comes back with the exit status.
pub fn run_once(mut cmd: Command, stderr_log: &Path) -> Result<Run> {
    let log =
        File::create(stderr_log).with_context(|| format!("create {}", stderr_log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, not yet reaped (std's `Child` is never waited on here and
        // does not reap on drop); `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4 on {cmd:?}: {err}");
        }
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(child);
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    // Linux reports ru_maxrss in KiB.
    let peak_rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    Ok(Run {
        wall_ms,
        peak_rss_kib,
        code,
    })
}

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Summary of a non-empty sample.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn measures_a_real_process() {
        let log = std::env::temp_dir().join(format!("xtask-measure-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let run = run_once(cmd, &log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(run.code, Some(3));
        assert!(run.peak_rss_kib > 0 && run.wall_ms > 0.0);
    }
}

//! `featherguard inspect` and `load-bench` on a small checkpoint written by the test.
#![cfg(feature = "models")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Two tensors (F32 2x3, BF16 4) and one metadata entry; data bytes 0..32.
fn write_checkpoint(path: &Path) {
    let mut header = serde_json::json!({
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
        "__metadata__": {"k": "v"},
    })
    .to_string()
    .into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend(0u8..32);
    std::fs::write(path, file).unwrap();
}

/// Whether this process may create a userfaultfd, which `--fill copy-into-fresh` needs (kernels
/// before 5.11 and seccomp filters refuse it; the loader then falls back).
fn userfaultfd_available() -> bool {
    #[cfg(target_os = "linux")]
    {
        const UFFD_USER_MODE_ONLY: libc::c_long = 1;
        // SAFETY: creates a file descriptor and closes it at once; nothing is registered.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC as libc::c_long | UFFD_USER_MODE_ONLY,
            )
        };
        if fd >= 0 {
            // SAFETY: the descriptor was just created by this function.
            unsafe { libc::close(fd as libc::c_int) };
            return true;
        }
    }
    false
}

fn featherguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_featherguard"))
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn inspect_lists_tensors_dtypes_and_metadata() {
    let path = common::tmp("loader_cmds", "inspect.safetensors");
    write_checkpoint(&path);
    let v = json_of(&featherguard(&[
        "inspect",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let tensors: Vec<_> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].clone(), t["dtype"].clone(), t["bytes"].clone()))
        .collect();
    assert_eq!(
        tensors,
        [
            ("a".into(), "F32".into(), 24.into()),
            ("b".into(), "BF16".into(), 8.into())
        ]
    );
    assert_eq!(v["metadata"]["k"], "v", "{v}");
}

#[test]
fn load_bench_fill_selects_how_pages_are_filled_and_reports_what_ran() {
    let path = common::tmp("loader_cmds", "bench.safetensors");
    write_checkpoint(&path);
    let run = |fill: &str| {
        let v = json_of(&featherguard(&[
            "load-bench",
            path.to_str().unwrap(),
            "--fill",
            fill,
            "--format",
            "json",
        ]));
        v["runs"][0].clone()
    };

    let zero = run("zero-then-copy");
    assert_eq!(
        (&zero["tensors"], &zero["bytes"], &zero["page_fill"]),
        (&2.into(), &32.into(), &"zero_then_copy".into()),
        "{zero}"
    );
    assert_eq!(zero["fresh_fill_bytes"], 0, "{zero}");

    // Where userfaultfd is unavailable the loader falls back and must say so.
    let fresh = run("copy-into-fresh");
    assert_eq!(fresh["bytes"], 32, "{fresh}");
    if userfaultfd_available() {
        assert_eq!(fresh["page_fill"], "copy_into_fresh", "{fresh}");
        assert!(fresh["fresh_fill_bytes"].as_u64() > Some(0), "{fresh}");
    } else {
        assert_eq!(fresh["page_fill"], "zero_then_copy", "{fresh}");
        assert_eq!(fresh["fresh_fill_bytes"], 0, "{fresh}");
    }

    let bad = featherguard(&["load-bench", path.to_str().unwrap(), "--fill", "bogus"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("copy-into-fresh"));
}

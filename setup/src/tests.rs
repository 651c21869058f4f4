//! End-to-end tests of install/check against a fake `python` that stands in for `pip download`
//! (and forwards everything else, i.e. the unpack script, to the real `python3`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::catalog::{Component, ComponentSpec, PinnedFile, PinnedLink, PinnedTree, Wheel};
use crate::digest;
use crate::testutil::TempDir;
use crate::{Evidence, Layout, Python, Setup, SetupError, State};

const DATA: &[u8] = b"weights weights weights\n";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("import zipfile")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A wheel with one data file and a two-file include tree, plus the catalog pinning it.
struct Fixture {
    _dir: TempDir,
    wheel: PathBuf,
    bin: PathBuf,
    catalog: &'static [ComponentSpec],
}

const WHEEL_NAME: &str = "fake_pkg-1.0.0-py3-none-any.whl";

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = TempDir::new(tag);
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("pkg/include/sub")).unwrap();
        fs::write(src.join("pkg/data.bin"), DATA).unwrap();
        fs::write(src.join("pkg/include/a.h"), b"#pragma once\n").unwrap();
        fs::write(src.join("pkg/include/sub/b.h"), b"int b;\n").unwrap();
        let wheel = dir.path().join(WHEEL_NAME);
        let status = Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, zipfile\n\
                 z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
                 for n in ['pkg/data.bin', 'pkg/include/a.h', 'pkg/include/sub/b.h']:\n    \
                 z.write(sys.argv[2] + '/' + n, n)\n\
                 z.close()",
            )
            .arg(&wheel)
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success());
        let (wheel_sha, wheel_size) = digest::file_sha256(&wheel).unwrap();
        let (data_sha, _) = digest::file_sha256(&src.join("pkg/data.bin")).unwrap();
        let (tree, files, bytes) = digest::tree_digest(&src.join("pkg/include")).unwrap();

        let files_pins: &'static [PinnedFile] = Box::leak(Box::new([PinnedFile {
            member: "pkg/data.bin",
            dest: "models/fake/data.bin",
            size: DATA.len() as u64,
            sha256: leak(data_sha),
        }]));
        let tree_pins: &'static [PinnedTree] = Box::leak(Box::new([PinnedTree {
            prefix: "pkg/include/",
            dest: "fake/include",
            files,
            bytes,
            digest: leak(tree),
        }]));
        let wheels: &'static [Wheel] = Box::leak(Box::new([Wheel {
            requirement: "fake-pkg==1.0.0",
            file_name: WHEEL_NAME,
            size: wheel_size,
            sha256: leak(wheel_sha),
            files: files_pins,
            trees: tree_pins,
        }]));
        let links: &'static [PinnedLink] = Box::leak(Box::new([PinnedLink {
            dest: "models/fake/alias.bin",
            target: "data.bin",
        }]));
        let catalog = Box::leak(Box::new([ComponentSpec {
            component: Component::Models,
            wheels,
            links,
            linux_x86_64_only: false,
        }]));
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        Fixture {
            _dir: dir,
            wheel,
            bin,
            catalog,
        }
    }

    /// A fake python whose `-m pip` runs `pip_body` (sh, with $DEST the -d folder and $WHEEL the
    /// fixture wheel) and logs each call; other invocations go to the real python3.
    fn python(&self, pip_body: &str) -> Python {
        let script = format!(
            "#!/bin/sh\n\
             if [ \"$1\" = -m ] && [ \"$2\" = pip ]; then\n\
               echo call >> '{log}'\n\
               DEST=''; prev=''\n\
               for a in \"$@\"; do [ \"$prev\" = -d ] && DEST=\"$a\"; prev=\"$a\"; done\n\
               WHEEL='{wheel}'\n\
               {pip_body}\n\
             else\n\
               exec python3 \"$@\"\n\
             fi\n",
            log = self.pip_log().display(),
            wheel = self.wheel.display(),
        );
        let path = self.bin.join("python");
        fs::write(&path, script).unwrap();
        make_executable(&path);
        Python::at(path)
    }

    fn pip_log(&self) -> PathBuf {
        self.bin.join("pip-calls.log")
    }

    fn pip_calls(&self) -> usize {
        fs::read_to_string(self.pip_log()).map_or(0, |s| s.lines().count())
    }

    fn setup(&self, home: &Path, python: Python) -> Setup<'static> {
        Setup::new(Layout::at(home))
            .with_python(python)
            .with_catalog(self.catalog)
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

const GOOD_PIP: &str = "cp \"$WHEEL\" \"$DEST/\"";

fn install(setup: &Setup<'_>) -> Result<Vec<String>, SetupError> {
    let mut events = Vec::new();
    setup.install(&[Component::Models], &mut |e| events.push(e.to_string()))?;
    Ok(events)
}

fn no_leftovers(home: &Path) {
    let staging = home.join(crate::STAGING_DIR);
    let left: Vec<_> = fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging not cleaned: {left:?}");
    assert!(!home.join(".setup.lock").exists(), "lock left behind");
}

#[test]
fn installs_then_second_run_is_offline_and_fast() {
    if !have_python() {
        eprintln!("skipped: python3 with zipfile is needed to build the test wheel");
        return;
    }
    let fx = Fixture::new("e2e");
    let home = TempDir::new("e2e-home");
    let setup = fx.setup(home.path(), fx.python(GOOD_PIP));

    let before = setup.check(&[Component::Models]).unwrap();
    assert!(
        before.iter().all(|s| s.state == State::Missing),
        "{before:?}"
    );

    let events = install(&setup).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.contains("downloading fake-pkg==1.0.0")),
        "{events:?}"
    );
    assert_eq!(
        fs::read(home.path().join("models/fake/data.bin")).unwrap(),
        DATA
    );
    assert_eq!(
        fs::read(home.path().join("models/fake/alias.bin")).unwrap(),
        DATA
    );
    assert_eq!(
        fs::read(home.path().join("fake/include/sub/b.h")).unwrap(),
        b"int b;\n"
    );
    assert_eq!(fx.pip_calls(), 1);
    no_leftovers(home.path());

    // Second run: a pip that always fails proves no download is attempted.
    let offline = fx.setup(home.path(), fx.python("exit 1"));
    let t = std::time::Instant::now();
    let events = install(&offline).unwrap();
    assert!(t.elapsed().as_secs_f64() < 1.0);
    assert_eq!(events, ["models: up to date"]);
    assert_eq!(fx.pip_calls(), 1, "second run must not call pip");
    let after = offline.check(&[Component::Models]).unwrap();
    assert!(after.iter().all(|s| s.is_valid()), "{after:?}");
    assert!(after
        .iter()
        .any(|s| s.state == State::Valid(Evidence::Stamp)));
}

#[test]
fn truncated_or_corrupt_installed_files_are_detected_and_replaced() {
    if !have_python() {
        return;
    }
    let fx = Fixture::new("repair");
    let home = TempDir::new("repair-home");
    let setup = fx.setup(home.path(), fx.python(GOOD_PIP));
    install(&setup).unwrap();

    let data = home.path().join("models/fake/data.bin");
    fs::write(&data, &DATA[..5]).unwrap();
    let status = setup.check(&[Component::Models]).unwrap();
    assert!(
        matches!(&status[0].state, State::Invalid(why) if why.contains("5 bytes")),
        "{status:?}"
    );

    // Same size, different bytes, mtime put back: only a rehash can tell.
    install(&setup).unwrap();
    let mtime = fs::metadata(&data).unwrap().modified().unwrap();
    let mut bad = DATA.to_vec();
    bad[0] ^= 1;
    fs::write(&data, &bad).unwrap();
    fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(
        setup.check(&[Component::Models]).unwrap()[0].is_valid(),
        "stamp trusts the manifest"
    );
    let deep = setup
        .clone()
        .with_rehash(true)
        .check(&[Component::Models])
        .unwrap();
    assert!(
        matches!(&deep[0].state, State::Invalid(why) if why.contains("sha256")),
        "{deep:?}"
    );
    install(&setup.clone().with_rehash(true)).unwrap();
    assert_eq!(fs::read(&data).unwrap(), DATA);
    assert_eq!(fx.pip_calls(), 3);
}

#[test]
fn missing_manifest_means_rehash_not_redownload() {
    if !have_python() {
        return;
    }
    let fx = Fixture::new("nomanifest");
    let home = TempDir::new("nomanifest-home");
    let setup = fx.setup(home.path(), fx.python(GOOD_PIP));
    install(&setup).unwrap();
    fs::remove_file(home.path().join(crate::manifest::MANIFEST_FILE)).unwrap();
    let events = install(&setup).unwrap();
    assert!(events.iter().any(|e| e.contains("verified")), "{events:?}");
    assert_eq!(fx.pip_calls(), 1);
}

fn expect_failure(tag: &str, pip_body: &str) -> (SetupError, TempDir) {
    let fx = Fixture::new(tag);
    let home = TempDir::new(&format!("{tag}-home"));
    let err = install(&fx.setup(home.path(), fx.python(pip_body))).unwrap_err();
    assert!(
        !home.path().join("models/fake/data.bin").exists(),
        "nothing unverified may be installed"
    );
    no_leftovers(home.path());
    (err, home)
}

#[test]
fn truncated_download_is_refused() {
    if !have_python() {
        return;
    }
    let (err, _home) = expect_failure(
        "truncated",
        "head -c 100 \"$WHEEL\" > \"$DEST/$(basename \"$WHEEL\")\"",
    );
    assert!(
        matches!(err, SetupError::Mismatch { kind: "size", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("cache is unchanged"), "{err}");
}

#[test]
fn download_with_wrong_hash_is_refused() {
    if !have_python() {
        return;
    }
    // Same length, last byte changed: only the hash can tell.
    let body = "cp \"$WHEEL\" \"$DEST/\"; f=\"$DEST/$(basename \"$WHEEL\")\"; \
                printf 'X' | dd of=\"$f\" bs=1 seek=$(( $(wc -c < \"$f\") - 1 )) conv=notrunc 2>/dev/null";
    let (err, _home) = expect_failure("badhash", body);
    assert!(
        matches!(err, SetupError::Mismatch { kind: "sha256", .. }),
        "{err}"
    );
}

#[test]
fn pip_errors_are_classified() {
    if !have_python() {
        return;
    }
    type Case = (
        &'static str,
        &'static str,
        fn(&SetupError) -> bool,
        &'static str,
    );
    let cases: [Case; 4] = [
        (
            "nopip",
            "echo '/usr/bin/python3: No module named pip' >&2; exit 1",
            |e| matches!(e, SetupError::PipMissing { .. }),
            "ensurepip",
        ),
        (
            "offline",
            "echo 'ERROR: Could not find a version that satisfies the requirement fake-pkg==1.0.0' >&2; exit 1",
            |e| matches!(e, SetupError::RegistryUnreachable { .. }),
            "pip config list",
        ),
        (
            "diskfull",
            "echo 'ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device' >&2; exit 1",
            |e| matches!(e, SetupError::DiskFull { .. }),
            "no space left",
        ),
        (
            "hashrefused",
            "echo 'ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.' >&2; exit 1",
            |e| matches!(e, SetupError::IndexHashMismatch { .. }),
            "refused",
        ),
    ];
    for (tag, body, is_kind, hint) in cases {
        let (err, _home) = expect_failure(tag, body);
        assert!(is_kind(&err), "{tag}: {err}");
        assert!(err.to_string().contains(hint), "{tag}: {err}");
    }
}

#[test]
fn missing_python_names_the_flag() {
    let fx_home = TempDir::new("nopython-home");
    let setup = Setup::new(Layout::at(fx_home.path()))
        .with_python(Python::at(fx_home.path().join("no-such-python")))
        .with_catalog(crate::catalog::catalog());
    // Models work on every platform, so this reaches the download step everywhere.
    let err = setup
        .install(&[Component::Models], &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, SetupError::PythonMissing { .. }), "{err}");
    assert!(err.to_string().contains("--python"), "{err}");
    no_leftovers(fx_home.path());
}

#[test]
fn leftovers_of_an_interrupted_run_are_cleaned_and_never_trusted() {
    if !have_python() {
        return;
    }
    let fx = Fixture::new("interrupted");
    let home = TempDir::new("interrupted-home");
    // A killed run: staging of a dead pid, a stale lock, and a half-written file at the final path.
    let dead = home.path().join(crate::STAGING_DIR).join("4000000000");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join(WHEEL_NAME), b"partial").unwrap();
    fs::write(home.path().join(".setup.lock"), "4000000000").unwrap();
    let data = home.path().join("models/fake/data.bin");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::write(&data, &DATA[..3]).unwrap();

    let setup = fx.setup(home.path(), fx.python(GOOD_PIP));
    install(&setup).unwrap();
    assert_eq!(fs::read(&data).unwrap(), DATA);
    assert!(!dead.exists());
    no_leftovers(home.path());
}

#[cfg(unix)]
#[test]
fn a_live_lock_is_refused() {
    let home = TempDir::new("busy-home");
    // Our parent process is alive for the duration of the test.
    let parent = std::os::unix::process::parent_id();
    fs::write(home.path().join(".setup.lock"), parent.to_string()).unwrap();
    let setup = Setup::new(Layout::at(home.path())).with_python(Python::at("/nonexistent"));
    let err = setup
        .install(&[Component::Models], &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, SetupError::Busy { .. }), "{err}");
    assert!(
        home.path().join(".setup.lock").exists(),
        "someone else's lock must stay"
    );
}

#[test]
fn check_of_empty_home_reports_every_pinned_artifact_missing() {
    let home = TempDir::new("check-empty");
    let setup = Setup::new(Layout::at(home.path()));
    let all = setup.check(&Component::ALL).unwrap();
    // 1 ORT file + 3 model files + 5 torch libs + include tree + libtorch.so link.
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|s| s.state == State::Missing));
    assert!(
        !home.path().join(crate::manifest::MANIFEST_FILE).exists(),
        "check never writes"
    );
}

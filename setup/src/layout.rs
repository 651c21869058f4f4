//! Where setup puts things, and how guards find them without configuration.
//!
//! The home is, first match wins: `--dir` (callers pass it to [`Layout::at`]), `$FEATHERGUARD_HOME`,
//! `$XDG_CACHE_HOME/featherguard`, `$HOME/.cache/featherguard`. Inside it:
//!
//! ```text
//! manifest.txt                                   what was installed and verified
//! ort/libonnxruntime.so.1.31.1                   ONNX Runtime (component onnx)
//! models/all-MiniLM-L6-v2/model.safetensors      MiniLM fp32 weights (component models)
//! models/all-MiniLM-L6-v2/tokenizer.json         MiniLM tokenizer (component models)
//! models/minilm-int8/model.onnx                  int8 MiniLM graph (component models)
//! libtorch/include/                              headers (component torch), LIBTORCH=<home>/libtorch
//! libtorch/lib/{libtorch_cpu.so,libtorch.so -> libtorch_cpu.so,libc10.so,libgomp.so.1,
//!               libcudart.so.13,libcupti.so.13}
//! .staging/<pid>/                                downloads in progress (never read by guards)
//! ```

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::{self, Component, PinnedFile};

/// Environment variable that overrides the setup home.
pub const HOME_ENV: &str = "FEATHERGUARD_HOME";

/// A runtime or model a guard needs is not installed where setup puts it.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No home folder could be derived from the environment.
    #[error(
        "cannot locate the featherguard cache: neither ${HOME_ENV}, $XDG_CACHE_HOME nor $HOME is set; \
         set {HOME_ENV}=<folder> and run `featherguard setup`"
    )]
    NoHome,
    /// The file or folder is absent.
    #[error("{what} not found at {}: run `featherguard setup --only {component}`", path.display())]
    Missing {
        /// Human name of the artifact.
        what: &'static str,
        /// Where it was expected.
        path: PathBuf,
        /// The component that installs it.
        component: Component,
    },
    /// The file exists with the wrong size (a truncated copy or a different version).
    #[error(
        "{what} at {} has {actual} bytes, expected {expected}: run `featherguard setup --only {component}` \
         to replace it",
        path.display()
    )]
    WrongSize {
        /// Human name of the artifact.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Pinned size in bytes.
        expected: u64,
        /// Size found in bytes.
        actual: u64,
        /// The component that installs it.
        component: Component,
    },
}

/// The all-MiniLM-L6-v2 files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniLm {
    /// fp32 weights (safetensors).
    pub safetensors: PathBuf,
    /// HF `tokenizer.json`.
    pub tokenizer: PathBuf,
}

/// The CPU-only libtorch folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libtorch {
    /// The folder to export as `LIBTORCH`.
    pub root: PathBuf,
    /// `root/include`.
    pub include: PathBuf,
    /// `root/lib`: put on the loader path (or rpath) at run time.
    pub lib: PathBuf,
}

/// The setup home and the fixed paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// A layout rooted at an explicit folder (the `--dir` flag).
    pub fn at(home: impl Into<PathBuf>) -> Layout {
        Layout { home: home.into() }
    }

    /// The layout chosen by the environment (see the module docs for the order).
    pub fn discover() -> Result<Layout, FindError> {
        Layout::from_env(|k| std::env::var_os(k))
    }

    /// [`Layout::discover`] over an arbitrary variable lookup (tests pass a map, not the process env).
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Result<Layout, FindError> {
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(home) = nonempty(HOME_ENV) {
            return Ok(Layout::at(home));
        }
        if let Some(cache) = nonempty("XDG_CACHE_HOME") {
            return Ok(Layout::at(cache.join("featherguard")));
        }
        nonempty("HOME")
            .map(|h| Layout::at(h.join(".cache").join("featherguard")))
            .ok_or(FindError::NoHome)
    }

    /// The home folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Absolute path of a `/`-separated path relative to the home.
    pub fn path(&self, rel: &str) -> PathBuf {
        rel.split('/')
            .fold(self.home.clone(), |p, part| p.join(part))
    }

    /// Path of the ONNX Runtime library, verified present with its pinned size.
    pub fn find_onnxruntime(&self) -> Result<PathBuf, FindError> {
        self.find_file(
            "ONNX Runtime library",
            Component::Onnx,
            catalog::ORT_LIBRARY,
        )
    }

    /// Paths of the all-MiniLM-L6-v2 weights and tokenizer, verified present with pinned sizes.
    pub fn find_minilm(&self) -> Result<MiniLm, FindError> {
        Ok(MiniLm {
            safetensors: self.find_file(
                "all-MiniLM-L6-v2 weights",
                Component::Models,
                catalog::MINILM_SAFETENSORS,
            )?,
            tokenizer: self.find_file(
                "all-MiniLM-L6-v2 tokenizer",
                Component::Models,
                catalog::MINILM_TOKENIZER,
            )?,
        })
    }

    /// Path of the int8 MiniLM ONNX graph, verified present with its pinned size.
    pub fn find_minilm_int8(&self) -> Result<PathBuf, FindError> {
        self.find_file(
            "int8 MiniLM ONNX model",
            Component::Models,
            catalog::MINILM_INT8_ONNX,
        )
    }

    /// The libtorch folder, verified to hold the headers and every pinned library.
    pub fn find_libtorch(&self) -> Result<Libtorch, FindError> {
        let spec = catalog::spec(Component::Torch);
        for file in spec.files() {
            self.find_file("libtorch library", Component::Torch, file.dest)?;
        }
        for link in spec.links {
            let path = self.path(link.dest);
            if !path.exists() {
                return Err(missing("libtorch link", path, Component::Torch));
            }
        }
        let root = self.path(catalog::LIBTORCH_DIR);
        let include = root.join("include");
        if !include.join("torch").is_dir() {
            return Err(missing("libtorch headers", include, Component::Torch));
        }
        Ok(Libtorch {
            lib: root.join("lib"),
            include,
            root,
        })
    }

    fn find_file(
        &self,
        what: &'static str,
        component: Component,
        rel: &str,
    ) -> Result<PathBuf, FindError> {
        let path = self.path(rel);
        let expected = pinned(component, rel).map(|f| f.size);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => match expected {
                Some(expected) if expected != meta.len() => Err(FindError::WrongSize {
                    what,
                    path,
                    expected,
                    actual: meta.len(),
                    component,
                }),
                _ => Ok(path),
            },
            _ => Err(missing(what, path, component)),
        }
    }
}

fn missing(what: &'static str, path: PathBuf, component: Component) -> FindError {
    FindError::Missing {
        what,
        path,
        component,
    }
}

fn pinned(component: Component, rel: &str) -> Option<&'static PinnedFile> {
    catalog::spec(component).files().find(|f| f.dest == rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn home_resolution_order() {
        let all = [
            (HOME_ENV, "/fg"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            Layout::from_env(env(&all)).unwrap().home(),
            Path::new("/fg")
        );
        assert_eq!(
            Layout::from_env(env(&all[1..])).unwrap().home(),
            Path::new("/xdg/featherguard")
        );
        assert_eq!(
            Layout::from_env(env(&[(HOME_ENV, ""), ("HOME", "/home/u")]))
                .unwrap()
                .home(),
            Path::new("/home/u/.cache/featherguard")
        );
        assert!(matches!(Layout::from_env(env(&[])), Err(FindError::NoHome)));
    }

    #[test]
    fn not_found_names_the_setup_command() {
        let dir = TempDir::new("layout-missing");
        let layout = Layout::at(dir.path());
        let err = layout.find_onnxruntime().unwrap_err().to_string();
        assert!(err.contains("featherguard setup --only onnx"), "{err}");
        let err = layout.find_libtorch().unwrap_err().to_string();
        assert!(err.contains("featherguard setup --only torch"), "{err}");
        let err = layout.find_minilm().unwrap_err().to_string();
        assert!(err.contains("--only models"), "{err}");
    }

    #[test]
    fn truncated_file_is_reported_with_sizes() {
        let dir = TempDir::new("layout-truncated");
        let layout = Layout::at(dir.path());
        let path = layout.path(catalog::MINILM_INT8_ONNX);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"truncated").unwrap();
        let err = layout.find_minilm_int8().unwrap_err();
        assert!(
            matches!(err, FindError::WrongSize { actual: 9, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--only models"));
    }
}

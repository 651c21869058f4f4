//! The feature sets of the `featherguard` binary and what is measured for each.
//!
//! A backend issue adds its measurements here: runtime libraries it loads with `dlopen` (invisible to
//! `ldd`), extra scenarios (first semantic scan, after idle unload), and the environment its runs
//! need. Whether a set is audited at all is read from the facade's features (see
//! [`has_backend_code`]), so a set appears in the table as soon as its feature enables a dependency.

use std::path::{Path, PathBuf};

use featherguard_setup::{Component, Layout};

/// One measured command line of the binary.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Metric prefix, e.g. `scan_first` (metrics: `scan_first_peak_rss_mb`, `scan_first_wall_ms`).
    pub name: &'static str,
    /// What it stands for, for the table.
    pub label: &'static str,
    /// Arguments after the binary.
    pub args: Vec<String>,
    /// Exit codes that count as success (`scan` exits 1 when something was blocked).
    pub ok_codes: &'static [i32],
}

/// A feature set of the binary.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    /// Name used in `--only`, budgets and the table.
    pub name: &'static str,
    /// Cargo features of `featherguard-cli` (empty = default features off, core only).
    pub features: &'static [&'static str],
    /// Setup components its runs need installed.
    pub needs: &'static [Component],
    /// Files it loads at run time with `dlopen`, relative to the setup home.
    pub dlopen: &'static [&'static str],
}

/// Every feature set, in table order.
pub const SETS: &[FeatureSet] = &[
    FeatureSet {
        name: "core",
        features: &[],
        needs: &[],
        dlopen: &[],
    },
    FeatureSet {
        name: "onnx",
        features: &["onnx"],
        needs: &[Component::Onnx, Component::Models],
        dlopen: &["ort/libonnxruntime.so.1.31.1"],
    },
    FeatureSet {
        name: "torch",
        features: &["torch"],
        needs: &[Component::Torch, Component::Models],
        dlopen: &[],
    },
    FeatureSet {
        name: "full",
        features: &["full"],
        needs: &[Component::Onnx, Component::Torch, Component::Models],
        dlopen: &["ort/libonnxruntime.so.1.31.1"],
    },
];

impl FeatureSet {
    /// Arguments of `featherguard diag memory` for this set: the pattern guard alone for builds
    /// without a model, pattern + similarity over `varied` prompts (with unload and reload) for
    /// the ML sets, on the build's preferred backend (libtorch for the torch set).
    pub fn diag_args(&self, prompts: &Path, varied: &Path) -> Vec<String> {
        let mut args: Vec<String> = ["diag", "memory", "--format", "json"]
            .map(String::from)
            .to_vec();
        if self.needs.contains(&Component::Models) {
            args.extend(["--guards".into(), "pattern,similarity".into()]);
            args.extend(["--prompts".into(), varied.display().to_string()]);
        } else {
            args.extend(["--prompts".into(), prompts.display().to_string()]);
        }
        args
    }

    /// The measured command lines; `prompts` is the 1,000-line input file, `varied` 1,000 texts
    /// of the default corpus.
    pub fn scenarios(&self, prompts: &Path, varied: &Path) -> Vec<Scenario> {
        // Backend issues push their scenarios (first semantic scan, after idle unload) for their
        // set names after these three.
        let mut list = vec![
            Scenario {
                name: "start",
                label: "`--version`",
                args: vec!["--version".into()],
                ok_codes: &[0],
            },
            Scenario {
                name: "scan_first",
                label: "first pattern scan (`scan hello`)",
                args: vec!["scan".into(), "hello".into()],
                ok_codes: &[0],
            },
            Scenario {
                name: "scan_1000",
                label: "1,000 scans (`scan --input`)",
                args: vec![
                    "scan".into(),
                    "--input".into(),
                    prompts.display().to_string(),
                ],
                ok_codes: &[0, 1],
            },
        ];
        if self.needs.contains(&Component::Onnx) {
            // Loads the ONNX session, tokenizer and default bank on first use.
            list.push(Scenario {
                name: "semantic_first",
                label: "first semantic scan (`scan --guards pattern,similarity hello`)",
                args: vec![
                    "scan".into(),
                    "--guards".into(),
                    "pattern,similarity".into(),
                    "hello".into(),
                ],
                ok_codes: &[0],
            });
            // Steady state: the model's memory after many prompts with a wide vocabulary.
            list.push(Scenario {
                name: "semantic_1000",
                label: "1,000 varied corpus texts, pattern + similarity (`scan --input`)",
                args: vec![
                    "scan".into(),
                    "--guards".into(),
                    "pattern,similarity".into(),
                    "--input".into(),
                    varied.display().to_string(),
                ],
                ok_codes: &[0, 1],
            });
        }
        if self.needs.contains(&Component::Torch) {
            // The same guard on libtorch: weights mapped, tokenizer and default bank loaded on
            // first use. In the torch-only build it is the default backend, so the metric keeps
            // the common name there.
            let torch_only = !self.needs.contains(&Component::Onnx);
            list.push(Scenario {
                name: if torch_only {
                    "semantic_first"
                } else {
                    "semantic_first_torch"
                },
                label: "first semantic scan on libtorch (`scan --backend torch --guards pattern,similarity hello`)",
                args: vec![
                    "scan".into(),
                    "--backend".into(),
                    "torch".into(),
                    "--guards".into(),
                    "pattern,similarity".into(),
                    "hello".into(),
                ],
                ok_codes: &[0],
            });
        }
        list
    }

    /// Environment for building this set: torch-sys needs `LIBTORCH`, and the CLI's build script
    /// records `$LIBTORCH/lib` as the binary's run path.
    pub fn build_env(&self, layout: Option<&Layout>) -> Vec<(String, String)> {
        match layout.map(Layout::find_libtorch) {
            Some(Ok(torch)) if self.needs.contains(&Component::Torch) => {
                vec![("LIBTORCH".into(), torch.root.display().to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// Environment for runs of this set. Empty for every set: the torch binaries find libtorch
    /// through the run path recorded at build time (see `cli/build.rs`), and are measured as a
    /// user runs them, without `LD_LIBRARY_PATH`.
    pub fn run_env(&self, _layout: Option<&Layout>) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Absolute paths of the `dlopen`ed runtime libraries.
    pub fn dlopen_paths(&self, layout: Option<&Layout>) -> Vec<PathBuf> {
        layout.map_or_else(Vec::new, |l| {
            self.dlopen.iter().map(|rel| l.path(rel)).collect()
        })
    }
}

/// Whether a facade feature (recursively) enables a dependency, i.e. carries real backend code,
/// given the facade package's `features` table from `cargo metadata`.
pub fn has_backend_code(
    features: &serde_json::Map<String, serde_json::Value>,
    feature: &str,
) -> bool {
    fn walk(f: &serde_json::Map<String, serde_json::Value>, name: &str, depth: usize) -> bool {
        let Some(list) = f.get(name).and_then(|v| v.as_array()) else {
            return false;
        };
        depth < 16
            && list.iter().filter_map(|v| v.as_str()).any(|entry| {
                if f.contains_key(entry) {
                    walk(f, entry, depth + 1)
                } else {
                    // `dep:x`, `x/feat` or an optional dependency `x`.
                    true
                }
            })
    }
    walk(features, feature, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_detection_follows_feature_references() {
        let f: serde_json::Value = serde_json::json!({
            "default": [], "onnx": [], "torch": ["dep:featherguard-torch"], "full": ["onnx", "torch"],
            "loop": ["loop"]
        });
        let f = f.as_object().unwrap();
        assert!(!has_backend_code(f, "onnx"));
        assert!(has_backend_code(f, "torch"));
        assert!(has_backend_code(f, "full"));
        assert!(!has_backend_code(f, "loop"));
        assert!(!has_backend_code(f, "missing"));
    }
}

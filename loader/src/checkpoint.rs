//! A checkpoint: one file or a set of shards, opened and cross-checked as one tensor namespace.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::file::{SafeTensorsFile, TensorView};
use crate::index::ShardIndex;
use crate::report::{LoadMethod, LoadReport};
use crate::resolve::{CheckpointSource, HfCache};
use crate::verify::Manifest;
use crate::LoadError;

/// How to open a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Threads for opening shards and hashing; 0 means one per available core.
    pub threads: usize,
    /// When set, every file (index and shards) must match this sha256 manifest before mapping.
    pub manifest: Option<Manifest>,
    /// Start asynchronous readahead of all tensor data after opening.
    pub prefetch: bool,
    /// Record page-cache residency (via `mincore`) in the open report.
    pub probe_page_cache: bool,
}

/// An opened checkpoint. Tensor names are unique across all its files.
#[derive(Debug)]
pub struct Checkpoint {
    source: CheckpointSource,
    files: Vec<SafeTensorsFile>,
    /// Tensor name -> (file index, index into that file's header tensors).
    locate: HashMap<String, (usize, usize)>,
    index_metadata: BTreeMap<String, String>,
    open_report: LoadReport,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, a `*.safetensors.index.json`, or a model directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, LoadError> {
        Self::open_with(path, &OpenOptions::default())
    }

    /// [`Checkpoint::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Checkpoint, LoadError> {
        let started = Instant::now();
        let source = CheckpointSource::resolve(path)?;
        let threads = effective_threads(opts.threads);
        let (files, index) = match &source {
            CheckpointSource::Single(p) => {
                verify_files(opts, std::slice::from_ref(p), threads)?;
                (vec![SafeTensorsFile::open(p)?], None)
            }
            CheckpointSource::Sharded(p) => {
                let index = ShardIndex::load(p)?;
                let shard_paths = shard_paths(&index)?;
                let mut all = vec![p.clone()];
                all.extend(shard_paths.iter().cloned());
                verify_files(opts, &all, threads)?;
                (open_parallel(&shard_paths, threads)?, Some(index))
            }
        };
        let locate = match &index {
            None => locate_single(&files[0]),
            Some(index) => cross_check(index, &files)?,
        };
        let mut ckpt = Checkpoint {
            source,
            files,
            locate,
            index_metadata: index.map(|i| i.metadata().clone()).unwrap_or_default(),
            open_report: LoadReport::new(LoadMethod::Mapped, Vec::new(), Default::default()),
        };
        if opts.probe_page_cache {
            ckpt.open_report.page_cache_resident = Some(ckpt.page_cache_residency()?);
        }
        if opts.prefetch {
            ckpt.prefetch()?;
        }
        let report = &mut ckpt.open_report;
        report.files = ckpt.files.iter().map(|f| f.path().to_owned()).collect();
        report.tensors = ckpt.locate.len();
        report.bytes = ckpt
            .files
            .iter()
            .map(|f| f.header().data_len() as u64)
            .sum();
        report.threads = threads.min(ckpt.files.len()).max(1);
        report.wall_secs = started.elapsed().as_secs_f64();
        report.log();
        Ok(ckpt)
    }

    /// Opens `model_id` at `revision` from a Hugging Face cache, offline.
    pub fn open_cached(
        cache: &HfCache,
        model_id: &str,
        revision: &str,
        opts: &OpenOptions,
    ) -> Result<Checkpoint, LoadError> {
        Self::open_with(cache.snapshot_dir(model_id, revision)?, opts)
    }

    /// Wraps one already-opened file.
    pub fn from_file(file: SafeTensorsFile) -> Checkpoint {
        let locate = locate_single(&file);
        let mut open_report = LoadReport::new(
            LoadMethod::Mapped,
            vec![file.path().to_owned()],
            Default::default(),
        );
        open_report.tensors = locate.len();
        open_report.bytes = file.header().data_len() as u64;
        Checkpoint {
            source: CheckpointSource::Single(file.path().to_owned()),
            files: vec![file],
            locate,
            index_metadata: BTreeMap::new(),
            open_report,
        }
    }

    /// What the path resolved to.
    pub fn source(&self) -> &CheckpointSource {
        &self.source
    }

    /// The index file for sharded checkpoints, else the single file.
    pub fn path(&self) -> &Path {
        match &self.source {
            CheckpointSource::Single(p) | CheckpointSource::Sharded(p) => p,
        }
    }

    /// The mapped files, in index order.
    pub fn files(&self) -> &[SafeTensorsFile] {
        &self.files
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.locate.len()
    }

    /// True when the checkpoint holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.locate.is_empty()
    }

    /// Total tensor bytes across files.
    pub fn data_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.header().data_len() as u64)
            .sum()
    }

    /// The sharded index's `metadata` (empty for a single file; file metadata is on each file's
    /// header).
    pub fn index_metadata(&self) -> &BTreeMap<String, String> {
        &self.index_metadata
    }

    /// The report of the open (method `Mapped`).
    pub fn open_report(&self) -> &LoadReport {
        &self.open_report
    }

    /// A zero-copy view of the tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, LoadError> {
        match self.locate.get(name) {
            Some(&(f, _)) => self.files[f].tensor(name),
            None => Err(LoadError::TensorNotFound {
                path: self.path().to_owned(),
                tensor: name.to_owned(),
            }),
        }
    }

    /// Views of every tensor, file by file in data order.
    pub fn tensors(&self) -> Result<Vec<TensorView<'_>>, LoadError> {
        let mut out = Vec::with_capacity(self.len());
        for f in &self.files {
            out.extend(f.tensors()?);
        }
        Ok(out)
    }

    /// Starts asynchronous readahead of all files.
    pub fn prefetch(&self) -> Result<(), LoadError> {
        self.files.iter().try_for_each(SafeTensorsFile::prefetch)
    }

    /// Byte-weighted fraction (0..=1) of all files' pages in the page cache.
    pub fn page_cache_residency(&self) -> Result<f64, LoadError> {
        let mut resident = 0.0;
        let mut total = 0.0;
        for f in &self.files {
            resident += f.page_cache_residency()? * f.len() as f64;
            total += f.len() as f64;
        }
        Ok(if total > 0.0 { resident / total } else { 1.0 })
    }

    /// Asks the kernel to drop these files from the page cache (for cold-cache measurements).
    pub fn evict_page_cache(&self) -> Result<(), LoadError> {
        for f in &self.files {
            crate::sys::evict_page_cache(f.raw_file())
                .map_err(|e| LoadError::io(f.path(), "posix_fadvise(DONTNEED)", e))?;
        }
        Ok(())
    }
}

pub(crate) fn effective_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn locate_single(file: &SafeTensorsFile) -> HashMap<String, (usize, usize)> {
    file.header()
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), (0, i)))
        .collect()
}

fn shard_paths(index: &ShardIndex) -> Result<Vec<PathBuf>, LoadError> {
    index
        .shards()
        .iter()
        .map(|shard| {
            let p = index.shard_path(shard);
            if p.is_file() {
                Ok(p)
            } else {
                let tensor = index
                    .weight_map()
                    .iter()
                    .find(|(_, s)| *s == shard)
                    .map(|(t, _)| t.clone())
                    .unwrap_or_default();
                Err(LoadError::MissingShard {
                    path: index.path().to_owned(),
                    tensor,
                    shard: shard.clone(),
                })
            }
        })
        .collect()
}

/// Opens `paths` on up to `threads` threads; the first failure in path order wins.
fn open_parallel(paths: &[PathBuf], threads: usize) -> Result<Vec<SafeTensorsFile>, LoadError> {
    let workers = threads.min(paths.len()).max(1);
    if workers == 1 {
        return paths.iter().map(SafeTensorsFile::open).collect();
    }
    let per = paths.len().div_ceil(workers);
    let open_group = |group: &[PathBuf]| -> Vec<Result<SafeTensorsFile, LoadError>> {
        group.iter().map(SafeTensorsFile::open).collect()
    };
    let mut groups = paths.chunks(per);
    let first = groups.next().unwrap_or_default();
    let results: Vec<Vec<Result<SafeTensorsFile, LoadError>>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups.map(|g| s.spawn(move || open_group(g))).collect();
        // The calling thread takes the first group instead of idling in join.
        let mut all = vec![open_group(first)];
        all.extend(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
        );
        all
    });
    results.into_iter().flatten().collect()
}

/// Checks that the index and the shards agree exactly: every indexed tensor is in the shard the
/// index names, and every tensor in a shard is indexed there.
fn cross_check(
    index: &ShardIndex,
    files: &[SafeTensorsFile],
) -> Result<HashMap<String, (usize, usize)>, LoadError> {
    let mut locate = HashMap::with_capacity(index.weight_map().len());
    for (fi, (file, shard)) in files.iter().zip(index.shards()).enumerate() {
        for (ti, t) in file.header().tensors().iter().enumerate() {
            match index.weight_map().get(&t.name) {
                None => {
                    return Err(LoadError::UnindexedTensor {
                        path: index.path().to_owned(),
                        tensor: t.name.clone(),
                        shard: shard.clone(),
                    })
                }
                Some(s) if s != shard => {
                    return Err(LoadError::WrongShard {
                        path: index.path().to_owned(),
                        tensor: t.name.clone(),
                        index_shard: s.clone(),
                        found_in: Some(shard.clone()),
                    })
                }
                Some(_) => {}
            }
            if locate.insert(t.name.clone(), (fi, ti)).is_some() {
                return Err(LoadError::DuplicateTensor {
                    path: file.path().to_owned(),
                    tensor: t.name.clone(),
                });
            }
        }
    }
    if let Some((tensor, shard)) = index
        .weight_map()
        .iter()
        .find(|(t, _)| !locate.contains_key(*t))
    {
        return Err(LoadError::WrongShard {
            path: index.path().to_owned(),
            tensor: tensor.clone(),
            index_shard: shard.clone(),
            found_in: None,
        });
    }
    Ok(locate)
}

fn verify_files(opts: &OpenOptions, paths: &[PathBuf], threads: usize) -> Result<(), LoadError> {
    match &opts.manifest {
        Some(m) => m.verify_files(paths, threads).map(|_| ()),
        None => Ok(()),
    }
}

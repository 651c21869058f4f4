//! featherguard-semantic: embedding guards written once over the core [`Embedder`] trait, so the
//! ONNX and libtorch backends share them.
//!
//! - [`SimilarityGuard`]: class-conditional kNN against an exemplar [`Bank`] of labeled attack and
//!   benign embeddings (safetensors, memory-mapped through featherguard-loader).
//! - [`HeadGuard`]: a multinomial logistic-regression [`Head`] on the embeddings, trained by
//!   [`train_head`] with a held-out split and a threshold calibrated to a target false-positive rate.
//! - [`TopicGuard`]: a topic fence (allowed / banned topics from short descriptions or examples).
//!
//! Hosts put each guard in a firewall slot and share one model between them with [`SharedModel`]:
//! one embedding pass per input, and the model unloads when the last guard using it does.
//!
//! Raw scores are mapped to finding scores by a [`Calibration`] fitted on benign texts, so the
//! core policy's default thresholds (flag 0.5, block 0.8) mean "benign FPR 5%" and "benign FPR 1%"
//! on the calibration set.
//!
//! [`Embedder`]: featherguard_core::Embedder

mod bank;
mod calibrate;
mod classes;
mod corpus;
mod crossval;
pub mod defaults;
mod error;
mod findings;
mod head;
mod inference;
mod knn;
mod memo;
mod meta;
mod shared;
mod similarity;
mod topic;

pub use bank::{build_bank, Bank, BankMeta};
pub use calibrate::{Calibration, BLOCK_SCORE, FLAG_SCORE};
pub use classes::{family_of, BENIGN};
pub use corpus::{read_corpus, Example};
pub use crossval::{out_of_fold, Fold, OutOfFold};
pub use error::SemanticError;
pub use head::{train_head, Head, HeadGuard, HeadMeta, TrainOptions, TrainReport};
pub use inference::{BatchLimits, InferenceThread};
pub use knn::{KnnScore, KnnScorer};
pub use memo::LastBatchMemo;
pub use meta::{EmbeddedSet, Progress};
pub use shared::{LeasedGuard, ModelLease, SharedModel};
pub use similarity::SimilarityGuard;
pub use topic::{Topic, TopicConfig, TopicGuard};

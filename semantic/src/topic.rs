//! The topic fence: allowed and banned topics, each given as a short description or a few
//! example prompts.

use std::sync::{Arc, Mutex};

use featherguard_core::{Embedder, Family, Finding, Guard, GuardError, Input};
use serde::{Deserialize, Serialize};

use crate::findings::{fail_all, scan_one, text_finding};
use crate::knn::dot;

/// One topic: a name for findings and texts that describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    /// A description and/or example prompts; a text's closeness to the topic is its best cosine
    /// to any of them.
    pub examples: Vec<String>,
}

/// Topic fence settings. Cosine thresholds are in [-1, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// When non-empty, texts whose best cosine to every allowed topic is below `allow_min` are flagged.
    pub allowed: Vec<Topic>,
    /// Texts whose cosine to a banned topic reaches `ban_min` are flagged, naming the topic.
    pub banned: Vec<Topic>,
    pub allow_min: f32,
    pub ban_min: f32,
    /// Finding scores (the core policy flags at 0.5 and blocks at 0.8 by default).
    pub off_topic_score: f32,
    pub banned_score: f32,
    /// Family of topic findings (core has no topic family; harmful_content by default).
    pub family: Family,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            allowed: Vec::new(),
            banned: Vec::new(),
            allow_min: 0.15,
            ban_min: 0.4,
            off_topic_score: 0.6,
            banned_score: 0.85,
            family: Family::HarmfulContent,
        }
    }
}

struct TopicVectors {
    /// Per topic, its example vectors (row-major).
    allowed: Vec<Vec<f32>>,
    banned: Vec<Vec<f32>>,
}

/// Flags off-topic texts and texts near a banned topic. Topic examples are embedded on first use.
pub struct TopicGuard {
    name: String,
    embedder: Arc<dyn Embedder>,
    config: TopicConfig,
    vectors: Mutex<Option<Arc<TopicVectors>>>,
}

impl TopicGuard {
    /// A guard named `topic`.
    pub fn new(embedder: Arc<dyn Embedder>, config: TopicConfig) -> TopicGuard {
        TopicGuard {
            name: "topic".into(),
            embedder,
            config,
            vectors: Mutex::new(None),
        }
    }

    fn vectors(&self) -> Result<Arc<TopicVectors>, GuardError> {
        let mut slot = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = slot.as_ref() {
            return Ok(v.clone());
        }
        let embed = |topics: &[Topic]| -> Result<Vec<Vec<f32>>, GuardError> {
            topics
                .iter()
                .map(|t| {
                    let texts: Vec<&str> = t.examples.iter().map(String::as_str).collect();
                    let e = self
                        .embedder
                        .embed(&texts)
                        .map_err(|e| e.into_guard_error(&self.name))?;
                    Ok((0..e.len()).flat_map(|i| e.pooled(i)).collect())
                })
                .collect()
        };
        let v = Arc::new(TopicVectors {
            allowed: embed(&self.config.allowed)?,
            banned: embed(&self.config.banned)?,
        });
        *slot = Some(v.clone());
        Ok(v)
    }

    fn finding(&self, rule: String, score: f32, len: usize) -> Finding {
        text_finding(&self.name, rule, self.config.family, score, len)
    }
}

/// Best cosine of `w` to each topic.
fn closeness(topics: &[Vec<f32>], w: &[f32]) -> Vec<f32> {
    topics
        .iter()
        .map(|t| {
            t.chunks_exact(w.len())
                .map(|e| dot(e, w))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

impl Guard for TopicGuard {
    fn name(&self) -> &str {
        &self.name
    }

    fn scan(&self, input: &Input<'_>) -> Result<Vec<Finding>, GuardError> {
        scan_one(self, input)
    }

    fn scan_batch(&self, inputs: &[Input<'_>]) -> Vec<Result<Vec<Finding>, GuardError>> {
        let prepared = self.vectors().and_then(|v| {
            let texts: Vec<&str> = inputs.iter().map(|i| i.text).collect();
            let e = self
                .embedder
                .embed(&texts)
                .map_err(|e| e.into_guard_error(&self.name))?;
            Ok((v, e))
        });
        let (v, emb) = match prepared {
            Ok(x) => x,
            Err(e) => return fail_all(inputs, &e),
        };
        let c = &self.config;
        (0..inputs.len())
            .map(|i| {
                let len = inputs[i].text.len();
                let mut best_allowed = vec![f32::NEG_INFINITY; c.allowed.len()];
                let mut best_banned = vec![f32::NEG_INFINITY; c.banned.len()];
                for w in emb.windows(i) {
                    for (b, s) in best_allowed.iter_mut().zip(closeness(&v.allowed, w)) {
                        *b = b.max(s);
                    }
                    for (b, s) in best_banned.iter_mut().zip(closeness(&v.banned, w)) {
                        *b = b.max(s);
                    }
                }
                let mut out = Vec::new();
                for (t, s) in c.banned.iter().zip(&best_banned) {
                    if *s >= c.ban_min {
                        out.push(self.finding(
                            format!("{}.banned.{}", self.name, t.name),
                            c.banned_score,
                            len,
                        ));
                    }
                }
                let closest = best_allowed
                    .iter()
                    .copied()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((ti, s)) = closest {
                    if s < c.allow_min {
                        out.push(self.finding(
                            format!("{}.off_topic.{}", self.name, c.allowed[ti].name),
                            c.off_topic_score,
                            len,
                        ));
                    }
                }
                Ok(out)
            })
            .collect()
    }
}

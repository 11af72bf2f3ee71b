//! The inference engine: one thread owns the model and serves every episode's requests, decoding
//! concurrent generations together (continuous batching) and reusing cached prompt prefixes.
//!
//! # Scheduling
//!
//! Requests queue on a channel. Each step the engine admits waiting generations (up to
//! [`EngineConfig::max_batch`] at once), then runs one forward pass over every active sequence: one
//! token for each sequence that is decoding, and the next chunk of the prompt for those still
//! prefilling (at most [`EngineConfig::prefill_chunk`] prompt tokens per step in all, so a long
//! prompt does not stall the others' decoding). Sequences join and leave the batch at any step.
//! Scoring requests are served between steps, one at a time.
//!
//! # Prefix reuse
//!
//! When a sequence finishes, its KV cache is kept with the tokens it holds. A new prompt starts
//! from the kept cache sharing its longest prefix: an episode's next step (the same conversation
//! plus new messages) then only prefills what was added. A cache that is entirely a prefix of the
//! new prompt is taken over; one that shares only a part (another episode with the same system
//! prompt) is copied up to the shared part and stays for its own conversation. Kept caches are
//! evicted least recently used first beyond [`EngineConfig::prefix_cache_bytes`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::llama::{KvCache, LlamaError, LlamaErrorKind, LlamaModel, LogitsWanted, SequenceInput};
use super::sampling::{Sampler, SamplingConfig, StopMatcher, log_probability_at};
use super::tokenizer::{TokenId, Tokenizer};
use crate::{ModelError, ModelErrorKind};

/// Engine limits.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most generations decoded together.
    pub max_batch: usize,
    /// Most prompt tokens prefilled in one step (shared by the sequences prefilling).
    pub prefill_chunk: usize,
    /// Memory kept for finished sequences' caches, for prefix reuse (0 disables reuse).
    pub prefix_cache_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 8,
            prefill_chunk: 512,
            prefix_cache_bytes: 2 << 30,
        }
    }
}

/// What to generate after a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    pub sampling: SamplingConfig,
    /// Text that ends the generation (not included in the text).
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 256,
            sampling: SamplingConfig::default(),
            stop: Vec::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl FinishReason {
    /// The OpenAI-style name (`stop`, `length`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Every sampled token, including an end-of-generation token and the token that completed a
    /// stop sequence (the policy's actual choices).
    pub completion_ids: Vec<TokenId>,
    /// `log_softmax(logits / T)` at each sampled token, `T` the sampling temperature (1 when
    /// greedy): the behaviour policy's log-probabilities.
    pub completion_logprobs: Vec<f32>,
    /// That `T`.
    pub logprob_temperature: f32,
    /// The decoded completion, without an end-of-generation token and cut before a stop sequence.
    pub text: String,
    pub finish: FinishReason,
    /// Prompt tokens whose KV cache came from an earlier sequence instead of a forward pass.
    pub reused_prompt_tokens: usize,
}

/// What kind of problem an [`EngineError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    /// The request cannot be served as given (empty prompt, prompt longer than the context).
    InvalidRequest,
    /// The prompt does not fit in the context.
    ContextOverflow,
    /// The forward pass failed.
    Inference,
    /// The engine thread is gone.
    Stopped,
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    kind: EngineErrorKind,
    message: String,
}

impl EngineError {
    fn new(kind: EngineErrorKind, message: impl Into<String>) -> EngineError {
        EngineError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> EngineErrorKind {
        self.kind
    }
}

impl From<LlamaError> for EngineError {
    fn from(error: LlamaError) -> EngineError {
        let kind = match error.kind() {
            LlamaErrorKind::ContextOverflow => EngineErrorKind::ContextOverflow,
            _ => EngineErrorKind::Inference,
        };
        EngineError::new(kind, error.to_string())
    }
}

impl From<EngineError> for ModelError {
    fn from(error: EngineError) -> ModelError {
        let kind = match error.kind {
            EngineErrorKind::ContextOverflow => ModelErrorKind::ContextOverflow,
            EngineErrorKind::InvalidRequest
            | EngineErrorKind::Inference
            | EngineErrorKind::Stopped => ModelErrorKind::Unavailable,
        };
        ModelError::new(kind, error.message)
    }
}

/// Token counts since the engine started (for benchmarks and logs).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub prompt_tokens_computed: AtomicU64,
    pub prompt_tokens_reused: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub forward_passes: AtomicU64,
    /// Largest number of sequences in one forward pass.
    pub max_batch_seen: AtomicU64,
    /// Candidate tokens fed when scoring (a candidate's last token is only read off the logits).
    pub candidate_tokens_computed: AtomicU64,
    /// Scoring requests whose candidates went through one forward pass together.
    pub batched_scores: AtomicU64,
}

enum Job {
    Generate {
        prompt: Vec<TokenId>,
        params: GenerationParams,
        reply: oneshot::Sender<Result<Generation, EngineError>>,
    },
    Score {
        prompt: Vec<TokenId>,
        candidates: Vec<Vec<TokenId>>,
        temperature: f32,
        reply: oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>,
    },
}

/// A handle on the engine thread. Cheap to clone; the thread ends when every handle is dropped
/// and its work is done.
#[derive(Debug, Clone)]
pub struct Engine {
    jobs: mpsc::UnboundedSender<Job>,
    context_length: usize,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// Starts the engine thread, which owns `model` from now on.
    pub fn start(model: LlamaModel, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Engine {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(EngineStats::default());
        let context_length = model.config().context_length;
        let worker = Worker {
            model,
            tokenizer,
            config,
            receiver,
            waiting: VecDeque::new(),
            active: Vec::new(),
            prefixes: PrefixPool::default(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("kiln-engine".to_string())
            .spawn(move || worker.run())
            .expect("spawning the engine thread");
        Engine {
            jobs,
            context_length,
            stats,
        }
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Generates a completion of `prompt`.
    pub async fn generate(
        &self,
        prompt: Vec<TokenId>,
        params: GenerationParams,
    ) -> Result<Generation, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Generate {
            prompt,
            params,
            reply,
        })?;
        answer.await.map_err(|_| stopped())?
    }

    /// Per-token log-probabilities of each candidate continuation of `prompt` (one vector per
    /// candidate, one value per candidate token). The prompt is computed once for all candidates.
    pub async fn score(
        &self,
        prompt: Vec<TokenId>,
        candidates: Vec<Vec<TokenId>>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.score_at(prompt, candidates, 1.0).await
    }

    /// [`Engine::score`] with the log-probabilities of `log_softmax(logits / temperature)`: what
    /// a generation sampled at that temperature records for the same tokens.
    pub async fn score_at(
        &self,
        prompt: Vec<TokenId>,
        candidates: Vec<Vec<TokenId>>,
        temperature: f32,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Score {
            prompt,
            candidates,
            temperature,
            reply,
        })?;
        answer.await.map_err(|_| stopped())?
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.jobs.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> EngineError {
    EngineError::new(
        EngineErrorKind::Stopped,
        "the inference engine stopped (see the log for the panic)",
    )
}

/// A generation in the batch.
struct Active {
    prompt: Vec<TokenId>,
    cache: KvCache,
    /// Prompt tokens in the cache.
    prefilled: usize,
    generated: Vec<TokenId>,
    logprobs: Vec<f32>,
    sampler: Sampler,
    stops: StopMatcher,
    max_tokens: usize,
    reused: usize,
    reply: oneshot::Sender<Result<Generation, EngineError>>,
    /// Set when the generation ended: (reason, text length in bytes).
    finished: Option<(FinishReason, usize)>,
}

impl Active {
    fn is_prefilling(&self) -> bool {
        self.prefilled < self.prompt.len()
    }

    /// Every token whose keys and values are in the cache, in order.
    fn cached_tokens(&self) -> Vec<TokenId> {
        let mut tokens = self.prompt.clone();
        tokens.extend_from_slice(&self.generated);
        tokens.truncate(self.cache.len());
        tokens
    }
}

struct Worker {
    model: LlamaModel,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    receiver: mpsc::UnboundedReceiver<Job>,
    waiting: VecDeque<Job>,
    active: Vec<Active>,
    prefixes: PrefixPool<KvCache>,
    stats: Arc<EngineStats>,
}

impl Worker {
    fn run(mut self) {
        tracing::debug!("inference engine started");
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match self.receiver.blocking_recv() {
                    Some(job) => self.waiting.push_back(job),
                    None => break,
                }
            }
            while let Ok(job) = self.receiver.try_recv() {
                self.waiting.push_back(job);
            }
            self.admit();
            if self.active.is_empty() {
                continue;
            }
            if let Err(error) = self.step() {
                self.fail_active(&error);
            }
            self.finish_done();
        }
        tracing::debug!("inference engine stopped");
    }

    /// Moves waiting jobs into the batch (scoring jobs run right away), in arrival order.
    fn admit(&mut self) {
        while self.active.len() < self.config.max_batch.max(1) {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            match job {
                Job::Generate {
                    prompt,
                    params,
                    reply,
                } => match self.start_generation(prompt, params, reply) {
                    Ok(active) => self.active.push(active),
                    Err((reply, error)) => {
                        let _ = reply.send(Err(error));
                    }
                },
                Job::Score {
                    prompt,
                    candidates,
                    temperature,
                    reply,
                } => {
                    let result = self.score(prompt, &candidates, temperature);
                    let _ = reply.send(result);
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn start_generation(
        &mut self,
        prompt: Vec<TokenId>,
        params: GenerationParams,
        reply: oneshot::Sender<Result<Generation, EngineError>>,
    ) -> Result<
        Active,
        (
            oneshot::Sender<Result<Generation, EngineError>>,
            EngineError,
        ),
    > {
        if let Err(error) = self.check_prompt(&prompt) {
            return Err((reply, error));
        }
        let (cache, reused) = match self.cache_for(&prompt) {
            Ok(found) => found,
            Err(error) => return Err((reply, error)),
        };
        Ok(Active {
            prefilled: reused,
            prompt,
            cache,
            generated: Vec::new(),
            logprobs: Vec::new(),
            sampler: Sampler::new(params.sampling),
            stops: StopMatcher::new(&params.stop),
            max_tokens: params.max_tokens,
            reused,
            reply,
            finished: None,
        })
    }

    fn check_prompt(&self, prompt: &[TokenId]) -> Result<(), EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::new(
                EngineErrorKind::InvalidRequest,
                "the prompt is empty: a local model needs at least one prompt token",
            ));
        }
        let context_length = self.model.config().context_length;
        if prompt.len() > context_length {
            return Err(EngineError::new(
                EngineErrorKind::ContextOverflow,
                format!(
                    "the prompt has {} tokens, more than the model's context length of {} tokens",
                    prompt.len(),
                    context_length
                ),
            ));
        }
        let vocab_size = self.model.config().vocab_size;
        if let Some(bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(EngineError::new(
                EngineErrorKind::InvalidRequest,
                format!("prompt token id {bad} is outside the vocabulary of {vocab_size} tokens"),
            ));
        }
        Ok(())
    }

    /// A cache for `prompt`, starting from the best kept prefix; at least the last prompt token
    /// is always left to compute (its logits start the generation).
    fn cache_for(&mut self, prompt: &[TokenId]) -> Result<(KvCache, usize), EngineError> {
        let Some((entry, shared)) = self.prefixes.best_match(prompt) else {
            return Ok((self.model.new_cache(), 0));
        };
        let reuse = shared.min(prompt.len() - 1);
        if reuse == 0 {
            return Ok((self.model.new_cache(), 0));
        }
        let cache = if self.prefixes.is_whole_prefix(entry, shared) {
            let mut cache = self.prefixes.take(entry);
            cache.truncate(reuse);
            cache
        } else {
            let source = self.prefixes.use_entry(entry);
            self.model.copy_prefix(source, reuse)?
        };
        self.stats
            .prompt_tokens_reused
            .fetch_add(reuse as u64, Ordering::Relaxed);
        Ok((cache, reuse))
    }

    /// One forward pass over the batch, then one sampled token for every sequence that got
    /// logits.
    fn step(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        let mut budget = self.config.prefill_chunk.max(1);
        let mut plan = Vec::with_capacity(self.active.len());
        for active in &self.active {
            if !active.is_prefilling() {
                plan.push((active.cache.len(), 1, LogitsWanted::Last));
                continue;
            }
            let remaining = active.prompt.len() - active.prefilled;
            let take = remaining.min(budget);
            budget -= take;
            let wanted = if take == remaining {
                LogitsWanted::Last
            } else {
                LogitsWanted::None
            };
            plan.push((active.prefilled, take, wanted));
        }
        let mut inputs = Vec::with_capacity(self.active.len());
        let mut participants = Vec::with_capacity(self.active.len());
        for (index, (active, &(from, take, wanted))) in
            self.active.iter_mut().zip(&plan).enumerate()
        {
            if take == 0 {
                continue;
            }
            let tokens: &[TokenId] = if active.prefilled < active.prompt.len() {
                &active.prompt[from..from + take]
            } else {
                std::slice::from_ref(active.generated.last().expect("decoding after a token"))
            };
            participants.push(index);
            inputs.push(SequenceInput {
                tokens,
                cache: &mut active.cache,
                logits: wanted,
            });
        }
        let tokens: usize = inputs.iter().map(|input| input.tokens.len()).sum();
        let sequences = inputs.len();
        let logits = self.model.forward(&mut inputs)?;
        drop(inputs);
        self.record_step(&plan, &participants, tokens, sequences, started);
        for (index, rows) in participants.into_iter().zip(logits) {
            let active = &mut self.active[index];
            if active.is_prefilling() {
                active.prefilled += plan[index].1;
            }
            if let Some(row) = rows.last() {
                accept_token(
                    active,
                    row,
                    &self.tokenizer,
                    self.model.config().context_length,
                );
            }
        }
        Ok(())
    }

    fn record_step(
        &self,
        plan: &[(usize, usize, LogitsWanted)],
        participants: &[usize],
        tokens: usize,
        sequences: usize,
        started: Instant,
    ) {
        let decoded = participants
            .iter()
            .filter(|&&index| !self.active[index].is_prefilling())
            .count();
        let prefilled: usize = participants
            .iter()
            .filter(|&&index| self.active[index].is_prefilling())
            .map(|&index| plan[index].1)
            .sum();
        self.stats
            .prompt_tokens_computed
            .fetch_add(prefilled as u64, Ordering::Relaxed);
        self.stats.forward_passes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .max_batch_seen
            .fetch_max(sequences as u64, Ordering::Relaxed);
        tracing::trace!(
            sequences,
            tokens,
            decoded,
            prefilled,
            elapsed_us = started.elapsed().as_micros() as u64,
            "engine step"
        );
    }

    /// Replies to finished (and abandoned) generations and keeps their caches.
    fn finish_done(&mut self) {
        let mut index = 0;
        while index < self.active.len() {
            let done =
                self.active[index].finished.is_some() || self.active[index].reply.is_closed();
            if !done {
                index += 1;
                continue;
            }
            let mut active = self.active.swap_remove(index);
            self.stats
                .generated_tokens
                .fetch_add(active.generated.len() as u64, Ordering::Relaxed);
            let tokens = active.cached_tokens();
            let cache = std::mem::replace(&mut active.cache, self.model.new_cache());
            self.keep_cache(tokens, cache);
            let Some((finish, text_len)) = active.finished else {
                continue;
            };
            let text = String::from_utf8_lossy(&active.stops.bytes()[..text_len]).into_owned();
            let generation = Generation {
                logprob_temperature: active.sampler.policy_temperature(),
                completion_ids: active.generated,
                completion_logprobs: active.logprobs,
                text,
                finish,
                reused_prompt_tokens: active.reused,
            };
            let _ = active.reply.send(Ok(generation));
        }
    }

    fn keep_cache(&mut self, tokens: Vec<TokenId>, cache: KvCache) {
        if self.config.prefix_cache_bytes == 0 || cache.is_empty() {
            return;
        }
        self.prefixes
            .insert(tokens, cache, self.config.prefix_cache_bytes);
    }

    fn fail_active(&mut self, error: &EngineError) {
        tracing::error!(%error, sequences = self.active.len(), "forward pass failed");
        for active in self.active.drain(..) {
            let _ = active.reply.send(Err(error.clone()));
        }
    }

    /// Scores candidates after `prompt`, reusing and then keeping the prompt's cache.
    fn score(
        &mut self,
        prompt: Vec<TokenId>,
        candidates: &[Vec<TokenId>],
        temperature: f32,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.check_prompt(&prompt)?;
        let longest = candidates.iter().map(Vec::len).max().unwrap_or(0);
        let context_length = self.model.config().context_length;
        if prompt.len() + longest > context_length {
            return Err(EngineError::new(
                EngineErrorKind::ContextOverflow,
                format!(
                    "the prompt ({} tokens) and the longest candidate ({longest} tokens) exceed the \
                     model's context length of {context_length} tokens",
                    prompt.len()
                ),
            ));
        }
        let (mut cache, reused) = self.cache_for(&prompt)?;
        let mut last_logits = Vec::new();
        for chunk in prompt[reused..].chunks(self.config.prefill_chunk.max(1)) {
            let mut inputs = [SequenceInput {
                tokens: chunk,
                cache: &mut cache,
                logits: LogitsWanted::Last,
            }];
            last_logits = self
                .model
                .forward(&mut inputs)?
                .remove(0)
                .pop()
                .unwrap_or_default();
        }
        self.stats
            .prompt_tokens_computed
            .fetch_add((prompt.len() - reused) as u64, Ordering::Relaxed);
        let scores = match self.score_branches(&mut cache, &last_logits, candidates, temperature) {
            Some(scores) => scores?,
            None => {
                let mut scores = Vec::with_capacity(candidates.len());
                for candidate in candidates {
                    scores.push(self.score_candidate(
                        &mut cache,
                        &last_logits,
                        candidate,
                        prompt.len(),
                        temperature,
                    )?);
                }
                scores
            }
        };
        self.keep_cache(prompt, cache);
        Ok(scores)
    }

    /// Every candidate in one forward pass over the prompt's cache, as branches
    /// ([`LlamaModel::forward_branches`]). `None` when the model cannot (off the host path) or
    /// the branches together do not fit in the context: the caller scores them one at a time.
    fn score_branches(
        &mut self,
        cache: &mut KvCache,
        prompt_logits: &[f32],
        candidates: &[Vec<TokenId>],
        temperature: f32,
    ) -> Option<Result<Vec<Vec<f32>>, EngineError>> {
        // A candidate's last token is only scored, never fed.
        let branches: Vec<&[TokenId]> = candidates
            .iter()
            .map(|candidate| &candidate[..candidate.len().saturating_sub(1)])
            .collect();
        let rows = match self.model.forward_branches(cache, &branches) {
            Ok(Some(rows)) => rows,
            Ok(None) => return None,
            Err(error) if error.kind() == LlamaErrorKind::ContextOverflow => return None,
            Err(error) => return Some(Err(error.into())),
        };
        let fed: usize = branches.iter().map(|branch| branch.len()).sum();
        self.stats
            .candidate_tokens_computed
            .fetch_add(fed as u64, Ordering::Relaxed);
        self.stats.batched_scores.fetch_add(1, Ordering::Relaxed);
        Some(Ok(candidates
            .iter()
            .zip(rows)
            .map(|(candidate, rows)| {
                let Some((&first, rest)) = candidate.split_first() else {
                    return Vec::new();
                };
                let mut logprobs = vec![log_probability_at(prompt_logits, first, temperature)];
                logprobs.extend(
                    rows.iter()
                        .zip(rest)
                        .map(|(row, &next)| log_probability_at(row, next, temperature)),
                );
                logprobs
            })
            .collect()))
    }

    fn score_candidate(
        &mut self,
        cache: &mut KvCache,
        prompt_logits: &[f32],
        candidate: &[TokenId],
        prompt_len: usize,
        temperature: f32,
    ) -> Result<Vec<f32>, EngineError> {
        let Some((&first, _)) = candidate.split_first() else {
            return Ok(Vec::new());
        };
        let mut logprobs = vec![log_probability_at(prompt_logits, first, temperature)];
        if candidate.len() > 1 {
            let mut inputs = [SequenceInput {
                tokens: &candidate[..candidate.len() - 1],
                cache,
                logits: LogitsWanted::All,
            }];
            let rows = self.model.forward(&mut inputs)?.remove(0);
            for (row, &next) in rows.iter().zip(&candidate[1..]) {
                logprobs.push(log_probability_at(row, next, temperature));
            }
            cache.truncate(prompt_len);
        }
        Ok(logprobs)
    }
}

/// Records the token sampled from `logits` and decides whether the generation is over.
fn accept_token(active: &mut Active, logits: &[f32], tokenizer: &Tokenizer, context_length: usize) {
    let token = active.sampler.sample(logits);
    active.generated.push(token);
    let temperature = active.sampler.policy_temperature();
    active
        .logprobs
        .push(log_probability_at(logits, token, temperature));
    if tokenizer.is_end_of_generation(token) {
        active.finished = Some((FinishReason::Stop, active.stops.bytes().len()));
        return;
    }
    let piece = tokenizer.token_to_piece(token, false).unwrap_or_default();
    if let Some(stop_at) = active.stops.push(piece) {
        active.finished = Some((FinishReason::Stop, stop_at));
        return;
    }
    // Feeding this token needs one more cache row.
    let full = active.cache.len() + 1 > context_length;
    if active.generated.len() >= active.max_tokens || full {
        active.finished = Some((FinishReason::Length, active.stops.bytes().len()));
    }
}

/// What the prefix pool needs to know about a cache.
trait CacheBytes {
    fn bytes(&self) -> usize;
}

impl CacheBytes for KvCache {
    fn bytes(&self) -> usize {
        self.allocated_bytes()
    }
}

/// Finished sequences' caches, kept for the prompts that start like them.
struct PrefixPool<C> {
    entries: Vec<PrefixEntry<C>>,
    clock: u64,
}

struct PrefixEntry<C> {
    tokens: Vec<TokenId>,
    cache: C,
    last_used: u64,
}

impl<C> Default for PrefixPool<C> {
    fn default() -> Self {
        PrefixPool {
            entries: Vec::new(),
            clock: 0,
        }
    }
}

impl<C: CacheBytes> PrefixPool<C> {
    /// The entry sharing the longest prefix with `prompt` (the most recently used among equals)
    /// and the shared length; `None` when nothing is shared.
    fn best_match(&self, prompt: &[TokenId]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(index, entry)| (index, shared_prefix(&entry.tokens, prompt), entry.last_used))
            .filter(|&(_, shared, _)| shared > 0)
            .max_by_key(|&(_, shared, last_used)| (shared, last_used))
            .map(|(index, shared, _)| (index, shared))
    }

    /// Whether all of entry `index` is the `shared` prefix (so taking it loses nothing).
    fn is_whole_prefix(&self, index: usize, shared: usize) -> bool {
        self.entries[index].tokens.len() == shared
    }

    /// Removes entry `index` and hands over its cache.
    fn take(&mut self, index: usize) -> C {
        self.entries.swap_remove(index).cache
    }

    /// Entry `index`'s cache, marked as just used.
    fn use_entry(&mut self, index: usize) -> &C {
        self.clock += 1;
        let entry = &mut self.entries[index];
        entry.last_used = self.clock;
        &entry.cache
    }

    /// Keeps `cache` (holding `tokens`), then evicts least recently used entries until the pool
    /// fits in `budget` bytes.
    fn insert(&mut self, tokens: Vec<TokenId>, cache: C, budget: usize) {
        self.clock += 1;
        self.entries.push(PrefixEntry {
            tokens,
            cache,
            last_used: self.clock,
        });
        while self.bytes() > budget {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(index, _)| index)
            else {
                return;
            };
            self.entries.swap_remove(oldest);
        }
    }

    fn bytes(&self) -> usize {
        self.entries.iter().map(|entry| entry.cache.bytes()).sum()
    }
}

/// Length of the common prefix of `a` and `b`.
fn shared_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeCache(usize);

    impl CacheBytes for FakeCache {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn the_longest_shared_prefix_wins_then_the_most_recent() {
        let mut pool = PrefixPool::default();
        pool.insert(vec![1, 2, 3], FakeCache(1), 100);
        pool.insert(vec![1, 2, 9, 9], FakeCache(1), 100);
        pool.insert(vec![1, 2, 3, 4, 5], FakeCache(1), 100);
        assert_eq!(pool.best_match(&[1, 2, 3, 4, 7]), Some((2, 4)));
        assert!(!pool.is_whole_prefix(2, 4));
        assert_eq!(pool.best_match(&[1, 2, 3, 8]), Some((2, 3)));
        assert_eq!(pool.best_match(&[7]), None);
        // Equal shares: the most recently used entry.
        pool.use_entry(0);
        assert_eq!(pool.best_match(&[1, 2, 3, 8]), Some((0, 3)));
        assert!(pool.is_whole_prefix(0, 3));
        pool.take(0);
        assert_eq!(pool.entries.len(), 2);
    }

    #[test]
    fn eviction_drops_the_least_recently_used_first() {
        let mut pool = PrefixPool::default();
        pool.insert(vec![1], FakeCache(40), 100);
        pool.insert(vec![2], FakeCache(40), 100);
        pool.use_entry(0);
        pool.insert(vec![3], FakeCache(40), 100);
        let kept: Vec<_> = pool.entries.iter().map(|e| e.tokens[0]).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&1) && kept.contains(&3), "{kept:?}");
        // An entry bigger than the budget is not kept at all.
        pool.insert(vec![4], FakeCache(500), 100);
        assert!(pool.entries.is_empty());
    }

    #[test]
    fn shared_prefix_counts_equal_leading_tokens() {
        assert_eq!(shared_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(shared_prefix(&[], &[1]), 0);
        assert_eq!(shared_prefix(&[5, 6], &[5, 6]), 2);
    }

    #[test]
    fn engine_errors_map_to_model_error_kinds() {
        let overflow = EngineError::new(EngineErrorKind::ContextOverflow, "too long");
        assert_eq!(
            ModelError::from(overflow).kind(),
            ModelErrorKind::ContextOverflow
        );
        let stopped = ModelError::from(stopped());
        assert_eq!(stopped.kind(), ModelErrorKind::Unavailable);
    }
}

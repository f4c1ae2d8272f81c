//! Rollouts on a fleet: one [`Engine`] over several OpenAI-compatible servers (vLLM, SGLang,
//! `reasonlab serve`).
//!
//! **Spread.** Each call deals its requests round-robin over the servers that are up and sends
//! every server its share at once. Seeds travel with the requests (sample `j` of a request uses
//! `seed + j`), so which server answers does not change the answer.
//!
//! **Failure.** A server that fails a request after the client's retries (refused, reset, timed
//! out, 5xx) is taken out of rotation, reported as a [`PoolEvent::Down`], and its unanswered
//! requests go to the others. A request the server rejects (4xx) fails alone: another server
//! would reject it too. When no server is left, the call fails.
//!
//! **Rejoin.** At the start of every call the pool asks each server that is out
//! (`GET /v1/models`); one that answers is sent the last weight update before it takes requests
//! again ([`PoolEvent::Rejoined`]). A server that restarted between calls without being seen
//! down answers with its start-up weights: when it reports its version (`reasonlab serve`), the
//! pool sends it the current weights and draws its share again ([`PoolEvent::Resynced`]).
//! vLLM and SGLang do not report one: a server of theirs restarted unseen serves its start-up
//! weights until the next push (with LoRA sync, its requests for the adapter fail).
//!
//! **Weights.** [`Engine::update_weights`] goes to every server that is up: a full checkpoint
//! through SGLang's `/update_weights_from_disk`, an adapter through vLLM's
//! `/v1/load_lora_adapter` (the previous adapter is then unloaded and requests name the new one).
//! The directory must be readable by the servers (a shared filesystem). Every sample carries the
//! version it was sampled with: the server's own report where it gives one (`reasonlab serve`),
//! otherwise the version the pool last pushed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reasonlab_core::engine::{Engine, EngineError, ModelInfo, Output, Request, WeightUpdate};
use serde::Serialize;

use crate::client::{ClientConfig, ClientError, OpenAiClient};

/// Something that happened to a server of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum PoolEvent {
    /// Taken out of rotation; its requests went to the others.
    Down { url: String, reason: String },
    /// Answered again, was sent the current weights, and takes requests again.
    Rejoined { url: String, version: u64 },
    /// Answered with older weights than the pool pushed (restarted between calls): sent the
    /// current weights again, and its answers were drawn again.
    Resynced { url: String, version: u64 },
}

/// One server's share of the work so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub url: String,
    pub up: bool,
    /// Requests it answered.
    pub requests: usize,
}

struct Member {
    client: OpenAiClient,
    up: AtomicBool,
    requests: AtomicUsize,
}

/// Several servers behind one [`Engine`].
pub struct RolloutPool {
    members: Vec<Member>,
    /// The last weight update and its version (sent to servers that rejoin).
    last_update: Mutex<Option<(WeightUpdate, u64)>>,
    version: AtomicU64,
    events: Mutex<Vec<PoolEvent>>,
    probe_timeout: Duration,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("a rollout pool needs at least one endpoint")]
    Empty,
    #[error(transparent)]
    Client(#[from] ClientError),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RolloutPool {
    /// A client per endpoint, each with `template`'s settings (its `base_url` is replaced);
    /// token ids are always asked for.
    pub fn new(endpoints: &[String], template: &ClientConfig) -> Result<Self, PoolError> {
        if endpoints.is_empty() {
            return Err(PoolError::Empty);
        }
        let members = endpoints
            .iter()
            .map(|url| {
                let cfg = ClientConfig {
                    base_url: url.clone(),
                    return_token_ids: true,
                    ..template.clone()
                };
                Ok(Member {
                    client: OpenAiClient::new(cfg)?,
                    up: AtomicBool::new(true),
                    requests: AtomicUsize::new(0),
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(Self {
            members,
            last_update: Mutex::new(None),
            version: AtomicU64::new(0),
            events: Mutex::new(Vec::new()),
            probe_timeout: template.connect_timeout.min(Duration::from_secs(5)),
        })
    }

    /// What happened since the last call, oldest first.
    pub fn take_events(&self) -> Vec<PoolEvent> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// Each server, whether it is in rotation, and the requests it answered.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.members
            .iter()
            .map(|m| MemberStatus {
                url: m.client.root().to_string(),
                up: m.up.load(Ordering::SeqCst),
                requests: m.requests.load(Ordering::SeqCst),
            })
            .collect()
    }

    /// The version of the last weight update pushed (0 before any).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn down(&self, m: &Member, reason: String) {
        if m.up.swap(false, Ordering::SeqCst) {
            let url = m.client.root().to_string();
            tracing::warn!(%url, %reason, "rollout server taken out of rotation");
            lock(&self.events).push(PoolEvent::Down { url, reason });
        }
    }

    /// Send `update` to one server; the previous adapter, if any, is unloaded after.
    fn push(m: &Member, update: &WeightUpdate, version: u64) -> Result<(), ClientError> {
        match update {
            WeightUpdate::Full { dir } => m.client.update_weights_from_disk(dir, version),
            WeightUpdate::Lora { name, dir } => {
                let previous = m.client.model();
                match m.client.load_lora_adapter(name, dir, version) {
                    // A server that kept its adapters while it was out (vLLM refuses a name it
                    // has loaded) serves this one already.
                    Err(ClientError::Status {
                        status: 400, body, ..
                    }) if body.contains("already") => {
                        m.client.set_model(name);
                    }
                    r => r?,
                }
                if previous != m.client.config().model && previous != *name {
                    // The old adapter's memory goes back; failing to free it is not fatal.
                    if let Err(e) = m.client.unload_lora_adapter(&previous) {
                        tracing::warn!(url = m.client.root(), error = %e, "unloading an adapter");
                    }
                }
                Ok(())
            }
        }
    }

    /// Bring back the servers that answer again, with the current weights.
    fn revive(&self) {
        let last = lock(&self.last_update).clone();
        for m in self.members.iter().filter(|m| !m.up.load(Ordering::SeqCst)) {
            if !m.client.is_up(self.probe_timeout) {
                continue;
            }
            let pushed = match &last {
                Some((update, version)) => Self::push(m, update, *version),
                None => Ok(()),
            };
            match pushed {
                Ok(()) => {
                    m.up.store(true, Ordering::SeqCst);
                    let url = m.client.root().to_string();
                    let version = last.as_ref().map_or(0, |l| l.1);
                    tracing::info!(%url, version, "rollout server rejoined");
                    lock(&self.events).push(PoolEvent::Rejoined { url, version });
                }
                Err(e) => tracing::warn!(url = m.client.root(), error = %e, "rejoining"),
            }
        }
    }
}

/// A failure that says the server, not the request, is at fault.
fn server_fault(e: &EngineError) -> bool {
    matches!(e, EngineError::Internal(_))
}

impl Engine for RolloutPool {
    fn info(&self) -> ModelInfo {
        let first = self.members[0].client.info();
        ModelInfo {
            location: self
                .members
                .iter()
                .map(|m| m.client.root())
                .collect::<Vec<_>>()
                .join(","),
            ..first
        }
    }

    /// Completions arrive whole: no deltas are sent.
    fn generate_streaming(
        &self,
        requests: &[Request],
        _on_delta: &mut dyn FnMut(usize, usize, &str),
    ) -> Vec<Result<Output, EngineError>> {
        self.revive();
        let mut out: Vec<Option<Result<Output, EngineError>>> = vec![None; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut resynced = std::collections::HashSet::new();
        while !pending.is_empty() {
            let up: Vec<&Member> = self
                .members
                .iter()
                .filter(|m| m.up.load(Ordering::SeqCst))
                .collect();
            if up.is_empty() {
                let urls: Vec<&str> = self.members.iter().map(|m| m.client.root()).collect();
                for i in pending {
                    out[i] = Some(Err(EngineError::Internal(format!(
                        "no rollout server is up ({})",
                        urls.join(", ")
                    ))));
                }
                break;
            }
            // Round-robin shares, sent at once.
            let shares: Vec<Vec<usize>> = (0..up.len())
                .map(|k| pending.iter().copied().skip(k).step_by(up.len()).collect())
                .collect();
            let answers: Vec<Vec<Result<Output, EngineError>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = up
                    .iter()
                    .zip(&shares)
                    .map(|(m, share)| {
                        scope.spawn(move || {
                            let reqs: Vec<Request> =
                                share.iter().map(|&i| requests[i].clone()).collect();
                            m.client.generate(&reqs)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![Err(EngineError::Internal("a pool thread panicked".into()))]
                        })
                    })
                    .collect()
            });
            let version = self.version();
            let last = lock(&self.last_update).clone();
            let mut retry = Vec::new();
            for ((m, share), answer) in up.iter().zip(&shares).zip(answers) {
                // A server that reports older weights than were pushed restarted since: send
                // them again (once per call) and draw its share again.
                let behind = answer.iter().flatten().flat_map(|o| &o.samples).any(|s| {
                    s.policy_version
                        .zip(last.as_ref())
                        .is_some_and(|(v, (_, pushed))| v != *pushed)
                });
                if let (true, Some((update, pushed))) = (behind, &last)
                    && resynced.insert(m.client.root().to_string())
                {
                    match Self::push(m, update, *pushed) {
                        Ok(()) => {
                            let url = m.client.root().to_string();
                            tracing::warn!(%url, version = pushed, "rollout server had older weights; sent them again");
                            lock(&self.events).push(PoolEvent::Resynced {
                                url,
                                version: *pushed,
                            });
                        }
                        Err(e) => self.down(m, format!("resending weights: {e}")),
                    }
                    retry.extend(share);
                    continue;
                }
                let mut answer = answer.into_iter();
                for &i in share {
                    match answer.next() {
                        Some(Ok(mut o)) => {
                            for s in &mut o.samples {
                                s.policy_version.get_or_insert(version);
                            }
                            m.requests.fetch_add(1, Ordering::SeqCst);
                            out[i] = Some(Ok(o));
                        }
                        Some(Err(e)) if !server_fault(&e) => out[i] = Some(Err(e)),
                        Some(Err(e)) => {
                            self.down(m, e.to_string());
                            retry.push(i);
                        }
                        None => {
                            self.down(m, "answered too few requests".into());
                            retry.push(i);
                        }
                    }
                }
            }
            retry.sort_unstable();
            pending = retry;
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(EngineError::Internal("no answer".into()))))
            .collect()
    }

    /// Push `update` to every server in rotation. A server that cannot be reached is taken out
    /// (it gets the weights when it rejoins); one that refuses the weights (a 4xx: a path it
    /// cannot read, an adapter for another base) fails the call, and the pool's version stays.
    fn update_weights(&self, update: &WeightUpdate, version: u64) -> Result<(), EngineError> {
        let results: Vec<Result<(), ClientError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .members
                .iter()
                .filter(|m| m.up.load(Ordering::SeqCst))
                .map(|m| (m, scope.spawn(move || Self::push(m, update, version))))
                .collect();
            handles
                .into_iter()
                .map(|(m, h)| match h.join() {
                    Err(_) => {
                        // Its weights are unknown: out until it rejoins with the current ones.
                        self.down(m, "the weight push panicked".into());
                        Ok(())
                    }
                    Ok(Err(e @ ClientError::Status { status, .. })) if status < 500 => Err(e),
                    Ok(Err(e)) => {
                        self.down(m, format!("weight update: {e}"));
                        Ok(())
                    }
                    Ok(Ok(())) => Ok(()),
                })
                .collect()
        });
        for r in results {
            r.map_err(EngineError::from)?;
        }
        // Recorded only once taken: a server that rejoins is sent weights that loaded.
        *lock(&self.last_update) = Some((update.clone(), version));
        self.version.store(version, Ordering::SeqCst);
        if !self.members.iter().any(|m| m.up.load(Ordering::SeqCst)) {
            return Err(EngineError::Internal(
                "no rollout server is up to take the new weights".into(),
            ));
        }
        Ok(())
    }
}

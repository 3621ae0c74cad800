//! Turns a credential into an identity, cheaply and without trusting memory
//! for long: every instance shares one PostgreSQL, so a token revoked on one
//! instance must stop working on all of them within a second.
//!
//! A lookup is cached for `CACHE_TTL` (half the contract's one second), so a
//! busy client costs one indexed query per half second, and a revoked token
//! is refused everywhere within that time. When a token was last used is
//! remembered in memory and written for all tokens at once every
//! `USE_FLUSH_INTERVAL`, not once per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::{Identity, credential_hash, store};

/// How long a lookup is trusted: half of the second within which a
/// revocation must be felt, leaving room for the request in flight.
pub const CACHE_TTL: Duration = Duration::from_millis(500);
/// How often `last_used_at` is written.
pub const USE_FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Lookups kept at most; past it the cache starts over, which only costs a
/// query per credential (a flood of bogus tokens cannot grow it unbounded).
const CACHE_CAPACITY: usize = 10_000;

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The dashboard's session cookie.
    Session,
}

/// A cached answer: who the credential is (or that it is nobody) and when
/// the database said so.
struct Cached {
    identity: Option<Identity>,
    at: Instant,
}

struct Inner {
    pool: Pool,
    cache: Mutex<HashMap<(Credential, [u8; 32]), Cached>>,
    /// Token name → the latest use not yet written.
    uses: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// A cheap handle; clones share the cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl Authenticator {
    pub fn new(pool: Pool) -> Authenticator {
        Authenticator {
            inner: Arc::new(Inner {
                pool,
                cache: Mutex::new(HashMap::new()),
                uses: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Who `value` is, if anyone. Only database trouble is an error.
    pub async fn identify(
        &self,
        kind: Credential,
        value: &str,
    ) -> Result<Option<Identity>, store::Error> {
        let hash = credential_hash(value);
        let cached = {
            let cache = self.lock_cache();
            cache
                .get(&(kind, hash))
                .filter(|c| c.at.elapsed() < CACHE_TTL)
                .map(|c| c.identity.clone())
        };
        let identity = match cached {
            Some(identity) => identity,
            None => {
                let identity = match kind {
                    Credential::Token => store::token_identity(&self.inner.pool, &hash).await?,
                    Credential::Session => store::session_identity(&self.inner.pool, &hash).await?,
                };
                let mut cache = self.lock_cache();
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(
                    (kind, hash),
                    Cached {
                        identity: identity.clone(),
                        at: Instant::now(),
                    },
                );
                identity
            }
        };
        if let Some(identity) = &identity {
            self.lock_uses().insert(identity.name.clone(), Utc::now());
        }
        Ok(identity)
    }

    /// Drops what this instance remembers of `name`'s credentials, so its
    /// revocation is felt here at once (other instances within `CACHE_TTL`).
    pub fn forget(&self, name: &str) {
        self.lock_cache()
            .retain(|_, c| c.identity.as_ref().is_none_or(|i| i.name != name));
    }

    /// Drops what this instance remembers of one credential (a session that
    /// signed out).
    pub fn forget_credential(&self, kind: Credential, value: &str) {
        self.lock_cache().remove(&(kind, credential_hash(value)));
    }

    /// Writes the uses gathered since the last flush.
    pub async fn flush_uses(&self) {
        let uses: Vec<(String, DateTime<Utc>)> = self.lock_uses().drain().collect();
        if let Err(error) = store::record_use(&self.inner.pool, &uses).await {
            tracing::warn!(error = %error, "could not record when tokens were last used");
            // Keep them for the next beat, unless newer uses arrived.
            let mut pending = self.lock_uses();
            for (name, at) in uses {
                pending.entry(name).or_insert(at);
            }
        }
    }

    /// Flushes uses every `USE_FLUSH_INTERVAL` until `stop` is cancelled,
    /// then once more.
    pub async fn flush_until(self, stop: tokio_util::sync::CancellationToken) {
        let mut beat = tokio::time::interval(USE_FLUSH_INTERVAL);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => self.flush_uses().await,
                _ = stop.cancelled() => break,
            }
        }
        self.flush_uses().await;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<(Credential, [u8; 32]), Cached>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_uses(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.inner
            .uses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

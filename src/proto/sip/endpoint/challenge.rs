//! Digest nonces for REGISTER, keyed by (device id, source address) so a stranger cannot
//! reset or exhaust another device's challenge, with the oldest evicted when the table is full
//! and a per-source rate limit on new challenges (a REGISTER flood costs its sender, not the
//! devices). A source over its rate is answered 503 with a Retry-After that grows with how
//! many it refused since its last challenge (a site of cameras rebooting behind one NAT
//! address spreads out instead of retrying in step); sites set apart by network get limits of
//! their own.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A nonce is good for this long.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Outstanding challenges; the oldest is evicted beyond this.
pub const CHALLENGES_MAX: usize = 10_000;
/// Wrong passwords in a row (from one source) before it gets 403 instead of another challenge.
pub const AUTH_FAILURES_MAX: u32 = 3;
/// New challenges per source IP: a burst, then this many per second (the default limit).
pub const CHALLENGES_PER_SOURCE_BURST: u32 = 200;
pub const CHALLENGES_PER_SOURCE_PER_S: u32 = 50;
// The rate refills the burst, never the other way round.
const _: () = assert!(CHALLENGES_PER_SOURCE_PER_S >= 1 && CHALLENGES_PER_SOURCE_PER_S <= CHALLENGES_PER_SOURCE_BURST);
/// The longest Retry-After a rate-limited REGISTER is told.
pub const RETRY_AFTER_S_MAX: u32 = 60;
/// Networks with limits of their own.
pub const RATE_NETWORKS_MAX: usize = 256;
/// Source addresses tracked by the rate limit; idle ones are forgotten first.
pub const RATE_SOURCES_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChallengeKey {
    pub device_id: String,
    pub source: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Challenge {
    pub nonce: String,
    pub issued: Instant,
    pub failures: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
    /// Refused since the source last got a challenge.
    refused: u32,
    limit: RateLimit,
}

/// New challenges a source gets: `burst` at once, then `per_s` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_s: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { burst: CHALLENGES_PER_SOURCE_BURST, per_s: CHALLENGES_PER_SOURCE_PER_S }
    }
}

/// The default limit, and those of sources in networks set apart (the first match counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub default: RateLimit,
    pub networks: Vec<(crate::proto::ipnet::IpNet, RateLimit)>,
}

impl RateLimits {
    fn of(&self, ip: IpAddr) -> RateLimit {
        self.networks.iter().find(|(net, _)| net.contains(ip)).map_or(self.default, |(_, l)| *l)
    }
}

#[derive(Debug, Default)]
pub struct Challenges {
    table: HashMap<ChallengeKey, Challenge>,
    /// Issue order (with the issue time, so a re-issued key's stale entry is skipped).
    order: VecDeque<(ChallengeKey, Instant)>,
    buckets: HashMap<IpAddr, Bucket>,
    limits: RateLimits,
}

/// What to answer a REGISTER that needs a (new) challenge.
#[derive(Debug, PartialEq, Eq)]
pub enum Issue {
    Challenge {
        nonce: String,
    },
    /// Too many failures from this source for this device.
    Refuse {
        failures: u32,
    },
    /// The source is over its rate: 503, try again after `retry_after_s`. `first`: the first
    /// refusal since it last got a challenge (what is worth a warning).
    RateLimited { retry_after_s: u32, first: bool },
}

impl Challenges {
    pub fn new(limits: RateLimits) -> Challenges {
        debug_assert!(limits.networks.len() <= RATE_NETWORKS_MAX);
        Challenges { limits, ..Challenges::default() }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &ChallengeKey, now: Instant) -> Option<&Challenge> {
        self.table.get(key).filter(|c| now.duration_since(c.issued) < CHALLENGE_TTL)
    }

    pub fn remove(&mut self, key: &ChallengeKey) {
        self.table.remove(key);
    }

    /// A fresh nonce for `key` (keeping its failure count, plus one if `failed`), or a refusal.
    pub fn issue(&mut self, now: Instant, key: ChallengeKey, failed: bool, nonce: impl FnOnce() -> String) -> Issue {
        let failures = self.table.get(&key).map_or(0, |c| c.failures) + u32::from(failed);
        if failures >= AUTH_FAILURES_MAX {
            self.table.remove(&key);
            return Issue::Refuse { failures };
        }
        if let Err(refused) = self.take_token(now, key.source.ip()) {
            return refused;
        }
        while self.table.len() >= CHALLENGES_MAX && !self.table.contains_key(&key) && self.drop_oldest() {}
        let nonce = nonce();
        self.order.push_back((key.clone(), now));
        self.table.insert(key, Challenge { nonce: nonce.clone(), issued: now, failures });
        // The order queue holds stale entries of re-issued keys; keep it bounded too.
        while self.order.len() > 2 * CHALLENGES_MAX && self.drop_oldest() {}
        Issue::Challenge { nonce }
    }

    /// Forgets the oldest issue: its challenge, unless the key was issued again since (then
    /// only the stale queue entry goes). False when there is nothing left to forget.
    fn drop_oldest(&mut self) -> bool {
        let Some((old, issued)) = self.order.pop_front() else { return false };
        if self.table.get(&old).is_some_and(|c| c.issued == issued) {
            self.table.remove(&old);
        }
        true
    }

    fn take_token(&mut self, now: Instant, ip: IpAddr) -> Result<(), Issue> {
        if self.buckets.len() >= RATE_SOURCES_MAX && !self.buckets.contains_key(&ip) {
            // Forget sources whose bucket has refilled: they lose nothing by it.
            self.buckets.retain(|_, b| {
                let full_after = Duration::from_secs(u64::from(b.limit.burst / b.limit.per_s.max(1) + 1));
                now.duration_since(b.refilled) < full_after
            });
            if self.buckets.len() >= RATE_SOURCES_MAX {
                // Too many sources to track (UDP sources are cheap to forge): let it through;
                // the challenge table's own bound and eviction still hold.
                return Ok(());
            }
        }
        let limit = self.limits.of(ip);
        let b = self.buckets.entry(ip).or_insert(Bucket { tokens: limit.burst, refilled: now, refused: 0, limit });
        let elapsed_ms = now.duration_since(b.refilled).as_millis().min(u128::from(u32::MAX)) as u64;
        let refill = elapsed_ms * u64::from(b.limit.per_s) / 1000;
        if refill > 0 {
            b.tokens = (u64::from(b.tokens) + refill).min(u64::from(b.limit.burst)) as u32;
            b.refilled = now;
        }
        if b.tokens == 0 {
            b.refused = b.refused.saturating_add(1);
            // Those refused before it come back first: each is told a later second.
            let retry_after_s = (1 + b.refused / b.limit.per_s.max(1)).min(RETRY_AFTER_S_MAX);
            return Err(Issue::RateLimited { retry_after_s, first: b.refused == 1 });
        }
        b.tokens -= 1;
        b.refused = 0;
        Ok(())
    }

    pub fn expire(&mut self, now: Instant) {
        self.table.retain(|_, c| now.duration_since(c.issued) < CHALLENGE_TTL);
        while let Some((k, issued)) = self.order.front() {
            let live = self.table.get(k).is_some_and(|c| c.issued == *issued);
            if live {
                break;
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(device: &str, port: u16) -> ChallengeKey {
        ChallengeKey { device_id: device.into(), source: SocketAddr::from(([10, 0, 0, 1], port)) }
    }

    #[test]
    fn a_full_table_evicts_the_oldest_and_rate_limits_the_flooder() {
        let t0 = Instant::now();
        let mut c = Challenges::default();
        // One source floods: after its burst it is limited, however many ids it makes up.
        let mut limited = 0;
        for i in 0..1_000 {
            if matches!(c.issue(t0, key(&format!("x{i}"), 1), false, || format!("n{i}")), Issue::RateLimited { .. }) {
                limited += 1;
            }
        }
        assert_eq!(limited, 1_000 - CHALLENGES_PER_SOURCE_BURST as usize);
        // Many sources fill the table; the oldest entries give way, new devices still get one.
        for i in 0..(CHALLENGES_MAX + 500) {
            let source = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 5060));
            let k = ChallengeKey { device_id: format!("d{i}"), source };
            assert!(matches!(c.issue(t0, k, false, || "n".into()), Issue::Challenge { .. }));
        }
        assert_eq!(c.len(), CHALLENGES_MAX);
        assert!(c.get(&key("x0", 1), t0).is_none(), "the oldest was evicted");
        assert!(matches!(c.issue(t0, key("new", 2), false, || "n".into()), Issue::RateLimited { .. }), "source 10.0.0.1 is still over its rate");
        let later = t0 + Duration::from_secs(1);
        assert!(matches!(c.issue(later, key("new", 2), false, || "n".into()), Issue::Challenge { .. }), "refilled after a second");
        c.expire(later + CHALLENGE_TTL);
        assert!(c.is_empty());
    }

    #[test]
    fn a_site_behind_one_address_is_told_when_to_come_back_spread_out() {
        let t0 = Instant::now();
        let mut c = Challenges::default();
        let answers: Vec<Issue> = (0..CHALLENGES_PER_SOURCE_BURST + 200).map(|i| c.issue(t0, key(&format!("cam{i}"), 1), false, || "n".into())).collect();
        let refused: Vec<(u32, bool)> =
            answers.iter().filter_map(|a| if let Issue::RateLimited { retry_after_s, first } = a { Some((*retry_after_s, *first)) } else { None }).collect();
        assert_eq!(refused.len(), 200);
        assert_eq!(refused.iter().filter(|(_, first)| *first).count(), 1, "one warning, not 200");
        // 50 a second come back: the first 49 refused are told 1 s, the next 50 2 s, ...
        assert_eq!((refused[0].0, refused[48].0, refused[49].0, refused[199].0), (1, 1, 2, 5));
        // A token later, the count starts over.
        assert!(matches!(c.issue(t0 + Duration::from_millis(20), key("late", 1), false, || "n".into()), Issue::Challenge { .. }));
        assert!(matches!(c.issue(t0 + Duration::from_millis(20), key("later", 1), false, || "n".into()), Issue::RateLimited { retry_after_s: 1, first: true }));
    }

    #[test]
    fn networks_set_apart_have_limits_of_their_own() {
        let t0 = Instant::now();
        let site = (crate::proto::ipnet::IpNet::parse("10.0.0.0/24").unwrap(), RateLimit { burst: 1_000, per_s: 200 });
        let mut c = Challenges::new(RateLimits { default: RateLimit { burst: 2, per_s: 1 }, networks: vec![site] });
        let taken = (0..1_100).filter(|i| matches!(c.issue(t0, key(&format!("cam{i}"), 1), false, || "n".into()), Issue::Challenge { .. })).count();
        assert_eq!(taken, 1_000, "10.0.0.1 is in the site's network");
        let elsewhere = |i: u16| ChallengeKey { device_id: format!("o{i}"), source: SocketAddr::from(([192, 0, 2, 1], i)) };
        let taken = (0..10).filter(|i| matches!(c.issue(t0, elsewhere(*i), false, || "n".into()), Issue::Challenge { .. })).count();
        assert_eq!(taken, 2, "the default elsewhere");
    }

    #[test]
    fn failures_count_per_source() {
        let t0 = Instant::now();
        let mut c = Challenges::default();
        c.issue(t0, key("dev", 1), false, || "a".into());
        c.issue(t0, key("dev", 1), true, || "b".into());
        c.issue(t0, key("dev", 1), true, || "c".into());
        assert_eq!(c.issue(t0, key("dev", 1), true, || "d".into()), Issue::Refuse { failures: 3 });
        // Another source's nonce for the same device is untouched by all this.
        c.issue(t0, key("dev", 2), false, || "mine".into());
        c.issue(t0, key("dev", 1), false, || "e".into());
        assert_eq!(c.get(&key("dev", 2), t0).unwrap().nonce, "mine");
    }
}

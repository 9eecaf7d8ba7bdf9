//! [`LeaseBook`]: the lease length each HTTP worker asked for at fetch, so
//! that its heartbeats extend the lease by that length.
//!
//! The store keeps a job's lease expiry but not the length it was granted
//! for, so the server remembers it in memory, keyed by job and lease token.
//! After a server restart the book is empty and heartbeats extend by
//! [`DEFAULT_LEASE_MS`] (ADR 0003 records this limitation). Also the wire
//! form of lease tokens lives here.

use drover_core::{JobId, LeaseToken, Timestamp};
use parking_lot::Mutex;
use std::collections::HashMap;

/// The lease length when a fetch did not name one, or the book forgot it.
pub const DEFAULT_LEASE_MS: u64 = 30_000;

/// How long after its lease ran out an entry may be swept: a worker that
/// vanished never says "done", and its job may never be fetched again here.
const SWEEP_GRACE_MS: i64 = 60_000;

/// Lease lengths of the jobs HTTP workers hold.
#[derive(Debug, Default)]
pub struct LeaseBook {
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    leases: HashMap<JobId, Lease>,
    /// Sweep stale entries when the map reaches this size.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    token: LeaseToken,
    lease_ms: u64,
    expires_at: Timestamp,
}

impl LeaseBook {
    /// Remembers a fresh claim.
    pub fn record(&self, id: JobId, token: LeaseToken, lease_ms: u64, expires_at: Timestamp, now: Timestamp) {
        let mut book = self.inner.lock();
        if book.leases.len() >= book.sweep_at {
            book.leases.retain(|_, l| l.expires_at.plus_ms(SWEEP_GRACE_MS) > now);
            // Sweeping again only after the map doubles keeps inserts O(1) amortised.
            book.sweep_at = (book.leases.len() * 2).max(1024);
        }
        book.leases.insert(id, Lease { token, lease_ms, expires_at });
    }

    /// The lease length granted to this claim, or [`DEFAULT_LEASE_MS`].
    pub fn lease_ms(&self, id: &JobId, token: LeaseToken) -> u64 {
        match self.inner.lock().leases.get(id) {
            Some(l) if l.token == token => l.lease_ms,
            _ => DEFAULT_LEASE_MS,
        }
    }

    /// Notes a heartbeat's new expiry (so the sweep keeps live leases).
    pub fn extended(&self, id: &JobId, token: LeaseToken, expires_at: Timestamp) {
        if let Some(l) = self.inner.lock().leases.get_mut(id)
            && l.token == token
        {
            l.expires_at = expires_at;
        }
    }

    /// Forgets a claim once its attempt ended (or its lease was refused).
    pub fn forget(&self, id: &JobId, token: LeaseToken) {
        let mut book = self.inner.lock();
        if book.leases.get(id).is_some_and(|l| l.token == token) {
            book.leases.remove(id);
        }
    }

    /// How many claims are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().leases.len()
    }

    /// True when no claim is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A lease token as the wire shows it: lower-case hex, as [`LeaseToken`]'s
/// `Display` prints it.
pub fn token_to_wire(token: LeaseToken) -> String {
    token.to_string()
}

/// Parses a wire token strictly. A string this server cannot have issued
/// becomes `LeaseToken(0)`, which no claim ever mints
/// ([`LeaseToken::generate`] draws from `1..`): the store then refuses it
/// like any stale token (409 `lease_lost`, or 404 for an unknown job). A
/// worker cannot fix a token by editing its request, so 409 tells it the
/// one useful thing: stop working on this job.
pub fn token_from_wire(text: &str) -> LeaseToken {
    let well_formed =
        !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return LeaseToken(0);
    }
    match i64::from_str_radix(text, 16) {
        Ok(n) if n > 0 => LeaseToken(n),
        _ => LeaseToken(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_strictly() {
        let t = LeaseToken(0x7fff_0000_1234_abcd);
        assert_eq!(token_from_wire(&token_to_wire(t)), t);
        for bad in ["", "+1f", "ABC", "-1", "0", "ffffffffffffffff", "12345678901234567", "1 "] {
            assert_eq!(token_from_wire(bad), LeaseToken(0), "{bad:?}");
        }
    }

    #[test]
    fn lease_lengths_are_per_claim() {
        let book = LeaseBook::default();
        let id = JobId::parse("a").unwrap();
        book.record(id.clone(), LeaseToken(7), 5_000, Timestamp(10), Timestamp(0));
        assert_eq!(book.lease_ms(&id, LeaseToken(7)), 5_000);
        assert_eq!(book.lease_ms(&id, LeaseToken(8)), DEFAULT_LEASE_MS);
        book.forget(&id, LeaseToken(8));
        assert_eq!(book.len(), 1);
        book.forget(&id, LeaseToken(7));
        assert!(book.is_empty());
    }
}

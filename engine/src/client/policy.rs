//! What a KV client does when a send fails: the one retry policy of both
//! clients — the blocking library client (`kv_client`, used by `ringraft
//! ctl` and the tests) and the bench's pipelined client
//! (`bench::kv::pipeline`). No sockets, clocks or caches in here: a client
//! tells [`decide`] what it knows of the request (its attempts, the time
//! since it was first tried, what kind of operation it is, the region it was
//! routed by, whether routes can be asked for again) and how the send failed;
//! the answer says what to do — send again at once to the leader a store
//! named, fix the route cache (from the answer, or from PD) and send again,
//! wait and send again, or stop: a definite error, or an ambiguous write.
//! Each client keeps its own I/O (one waits for a round of replies, the
//! other for each reply on its own) and carries the decision out.
//!
//! The ambiguity rules (docs/design.md, "Clients, errors and outcomes"): a
//! write that may have been proposed — its connection broke or went silent
//! after it was sent, or the store answered `Ambiguous` — is reported
//! ambiguous and never sent again; a write that certainly was not applied
//! (never sent, or refused with any other error) and every read are sent
//! again, within the budget below. A request given up for the budget
//! ([`GiveUp::Unavailable`]) is therefore definitely not applied.

use std::time::Duration;

use crate::client::protocol::ClientOp;
use crate::error::RegionError;
use crate::region::meta::RegionMeta;

/// Sends of one request, the first included, before it is given up. This
/// bounds the retries that wait for nothing (a leader hint followed, a
/// membership taken from an answer); a request that keeps waiting runs into
/// `RETRY_MS_MAX` first. (The clients had 40 and 50; with hints followed at
/// once a few more sends fit in the same time.)
pub const ATTEMPTS_MAX: u32 = 100;
/// First wait before sending again when there is nothing better to do (no
/// leader known, a store unreachable or busy); doubles with each attempt up
/// to `BACKOFF_MAX_MS`. 1 ms (as the bench had; the blocking client's 20 ms
/// covered a whole round): the next peer often knows the leader already.
pub const BACKOFF_MIN_MS: u64 = 1;
/// Longest wait between two sends of a request. An election takes 1–2 s
/// (10–20 ticks of 100 ms): 250 ms polls it a few times without adding more
/// than a quarter second to a failover (the bench had 200 ms, the blocking
/// client 500 ms). A busy store's own `backoff_ms` is honoured up to this.
pub const BACKOFF_MAX_MS: u64 = 250;
/// No send of a request starts later than this after its first: long enough
/// to ride out an election plus a store restarting and catching up (the
/// blocking client's 40 rounds of up to 500 ms allowed ≈18 s; the tests
/// restart stores under it), short enough that a dead cluster is reported.
pub const RETRY_MS_MAX: u64 = 20_000;

/// Sends of a request that follow a leader hint at once; after that a hint
/// is followed after the usual wait. A hint can name a store that cannot be
/// reached (the leader died and its followers have not elected another yet):
/// followed at once every time, a request bounced between that hint and the
/// next peer and spent its attempts in well under a second — found by the
/// process test that deletes a store's WAL.
pub const HINT_HOPS_AT_ONCE_MAX: u32 = 3;

const _: () = assert!(0 < BACKOFF_MIN_MS && BACKOFF_MIN_MS <= BACKOFF_MAX_MS);
const _: () = assert!(HINT_HOPS_AT_ONCE_MAX < ATTEMPTS_MAX);
const _: () = assert!(BACKOFF_MAX_MS < RETRY_MS_MAX);
// a request that only waits runs out of time before it runs out of attempts
const _: () = assert!((ATTEMPTS_MAX as u64 - 1) * BACKOFF_MAX_MS >= RETRY_MS_MAX);

/// What kind of operation a request is, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpKind {
    /// It may change state if applied (a put, delete, CAS, membership
    /// change): never sent again once it may have been.
    pub write: bool,
    /// A membership change: made against the membership it was routed by,
    /// so a newer membership refuses it rather than re-routing it.
    pub membership_change: bool,
    /// Routed by its key (else it names its region: admin operations), so a
    /// change of the region's range re-routes it.
    pub by_key: bool,
}

impl OpKind {
    pub const GET: OpKind = OpKind { write: false, membership_change: false, by_key: true };
    pub const PUT: OpKind = OpKind { write: true, membership_change: false, by_key: true };

    pub fn of(op: &ClientOp) -> OpKind {
        OpKind {
            write: matches!(op, ClientOp::Write(_) | ClientOp::ChangePeer(_)),
            membership_change: matches!(op, ClientOp::ChangePeer(_)),
            by_key: op.routes_by_key(),
        }
    }
}

/// A request as the policy sees it, after one of its sends failed.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub kind: OpKind,
    /// Sends so far, the failed one included (at least 1).
    pub attempts: u32,
    /// Since the request was first tried.
    pub elapsed: Duration,
    /// The region it was routed by, as the route cache has it now.
    pub region: &'a RegionMeta,
    /// The store the failed send went to.
    pub store_id: u64,
    /// Whether the client can ask for routes again (it has PD); else its
    /// routes are fixed (a cluster spec) and a stale one stays stale.
    pub can_refresh: bool,
}

/// How a send failed.
#[derive(Debug)]
pub enum Failure {
    /// It never reached the store (no connection; its frame not written):
    /// definitely not applied.
    NotSent,
    /// It was sent, and the connection broke or went silent before the
    /// answer came: a write's fate is unknown.
    Lost,
    /// The store answered with an error.
    Refused(RegionError),
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Fix the route as `route` says, then send again after `wait` (zero: at once).
    Retry { route: Route, wait: Duration },
    /// Definitely not applied, and not going to be: report it.
    GiveUp(GiveUp),
    /// It may have been applied: report its outcome unknown; never sent again.
    Ambiguous,
}

/// Where the next send goes, and what the route cache learns first.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// The store tried (it is busy, or a newer leader is catching up).
    Same,
    /// The store the answer named as the region's leader.
    Leader { store_id: u64 },
    /// The region's next peer after the store tried (no leader known, or
    /// the store cannot be reached).
    NextPeer,
    /// The region as the answer has it: same range, a newer membership.
    Membership { current: Box<RegionMeta> },
    /// The store no longer has the region (moved, removed): ask the route
    /// source for it again (it may still not know: the next peer anyway).
    RefreshRegion,
    /// The region split: the answer names it as it is now and the regions
    /// split off it (as the answering store has them, which is where their
    /// leaders start): route by them at once, asking the route source only
    /// if none of them holds the key.
    Learn { regions: Vec<RegionMeta>, store_id: u64 },
    /// The region's range changed (a split): take `refused`'s region if it
    /// carries one and ask the route source for the key's region; if that
    /// cannot be asked, report `refused` (the old route is refused again).
    RefreshRange { refused: RegionError },
    /// An address now names another store: drop that connection and ask the
    /// route source for the stores again.
    RefreshStores,
}

/// Whether a region a client learns (from PD or an answer) is older than
/// what it knows already: the same region at a later epoch, or an
/// overlapping one of a later version (ranges only split: a region cut
/// from it since knows better). Both clients' route caches take a learned
/// region only if not, replacing every cached region it overlaps.
pub fn is_stale<'a>(learned: &RegionMeta, known: impl IntoIterator<Item = &'a RegionMeta>) -> bool {
    known.into_iter().any(|k| {
        let same_newer = k.id == learned.id && (k.conf_ver > learned.conf_ver || k.version > learned.version);
        let cut_since = k.version > learned.version && k.overlaps(&learned.start_key, &learned.end_key);
        same_newer || cut_since
    })
}

/// Why a request definitely not applied was given up.
#[derive(Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The store's answer, which sending again would not change.
    Refused(RegionError),
    /// The budget (`ATTEMPTS_MAX` sends, `RETRY_MS_MAX`) ran out; `last`:
    /// how the last send failed.
    Unavailable { attempts: u32, last: String },
}

/// The wait before sending again after `attempts` sends with nothing better
/// to do: `BACKOFF_MIN_MS`, doubling with each attempt, up to `BACKOFF_MAX_MS`.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    Duration::from_millis(BACKOFF_MIN_MS.saturating_mul(1u64 << doublings).min(BACKOFF_MAX_MS))
}

/// What to do after `failure`, for `req`.
pub fn decide(req: &Request, failure: Failure) -> Decision {
    assert!(req.attempts >= 1, "a request that was never tried cannot have failed");
    let e = match failure {
        Failure::Lost if req.kind.write => return Decision::Ambiguous,
        Failure::Lost => return retry(req, Route::NextPeer, backoff(req.attempts), || "connection lost".into()),
        Failure::NotSent => return retry(req, Route::NextPeer, backoff(req.attempts), || "store not reachable".into()),
        Failure::Refused(e) => e,
    };
    let last = || e.to_string();
    let wait = backoff(req.attempts);
    match &e {
        // proposed, then the leader lost track of it (a read is never proposed)
        RegionError::Ambiguous { .. } if req.kind.write => Decision::Ambiguous,
        RegionError::Ambiguous { .. } => retry(req, Route::NextPeer, wait, last),
        // (a store naming itself would be asked again and again at once)
        RegionError::NotLeader { leader: Some(l), .. } if l.store_id != req.store_id => {
            let wait = match req.attempts.checked_sub(HINT_HOPS_AT_ONCE_MAX) {
                None | Some(0) => Duration::ZERO,
                Some(over) => backoff(over),
            };
            retry(req, Route::Leader { store_id: l.store_id }, wait, last)
        }
        // no leader known (an election): the next peer may know, and waits grow
        RegionError::NotLeader { .. } => retry(req, Route::NextPeer, wait, last),
        RegionError::ServerIsBusy { backoff_ms, .. } => {
            let asked = Duration::from_millis(*backoff_ms).max(wait);
            retry(req, Route::Same, asked.min(Duration::from_millis(BACKOFF_MAX_MS)), last)
        }
        RegionError::RegionNotFound { .. } if req.can_refresh => retry(req, Route::RefreshRegion, wait, last),
        RegionError::RegionNotFound { .. } => retry(req, Route::NextPeer, wait, last),
        RegionError::StoreNotMatch { .. } if req.can_refresh => retry(req, Route::RefreshStores, wait, last),
        // same range, another membership: route by it — except a membership
        // change, which was made against the old membership and is refused
        RegionError::EpochNotMatch { current, .. }
            if current.id == req.region.id
                && current.version == req.region.version
                && current.conf_ver != req.region.conf_ver
                && !req.kind.membership_change =>
        {
            if current.conf_ver > req.region.conf_ver {
                retry(req, Route::Membership { current: current.clone() }, Duration::ZERO, last)
            } else {
                // an older one: a new leader that has not applied the change yet
                retry(req, Route::Same, wait, last)
            }
        }
        // a split the answering store applied: it names where the keys went
        RegionError::EpochNotMatch { current, split_off } if req.kind.by_key && !split_off.is_empty() => {
            let regions = std::iter::once((**current).clone()).chain(split_off.iter().cloned()).collect();
            retry(req, Route::Learn { regions, store_id: req.store_id }, Duration::ZERO, last)
        }
        // the range changed (a split): the key may live in another region now
        // (PD hears of a split a heartbeat after the store: it may not know yet, hence the wait)
        RegionError::KeyNotInRegion { .. } | RegionError::EpochNotMatch { .. }
            if req.can_refresh && req.kind.by_key =>
        {
            retry(req, Route::RefreshRange { refused: e.clone() }, wait, last)
        }
        RegionError::KeyNotInRegion { .. }
        | RegionError::EpochNotMatch { .. }
        | RegionError::StoreNotMatch { .. }
        | RegionError::ClusterNotMatch { .. }
        | RegionError::DiskFull
        | RegionError::TooLarge { .. }
        | RegionError::MemoryFull { .. }
        | RegionError::Refused { .. } => {
            assert!(e.is_definite(), "only a definite refusal is given up as not applied");
            Decision::GiveUp(GiveUp::Refused(e.clone()))
        }
    }
}

/// `Retry`, if the budget allows another send after `wait`; else `Unavailable`.
fn retry(req: &Request, route: Route, wait: Duration, last: impl FnOnce() -> String) -> Decision {
    let out_of_time = req.elapsed.saturating_add(wait) > Duration::from_millis(RETRY_MS_MAX);
    if req.attempts >= ATTEMPTS_MAX || out_of_time {
        return Decision::GiveUp(GiveUp::Unavailable { attempts: req.attempts, last: last() });
    }
    Decision::Retry { route, wait }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Command;
    use crate::region::meta::PeerMeta;

    fn region() -> RegionMeta {
        let peer = |i: u64| PeerMeta::voter(10 + i, i, 0);
        RegionMeta {
            id: 7,
            start_key: b"a".to_vec(),
            end_key: b"m".to_vec(),
            conf_ver: 3,
            version: 2,
            peers: vec![peer(1), peer(2), peer(3)],
            max_peer_id: 13,
        }
    }

    fn req(region: &RegionMeta, kind: OpKind, attempts: u32) -> Request<'_> {
        Request { kind, attempts, elapsed: Duration::ZERO, region, store_id: 1, can_refresh: true }
    }

    fn refused(e: RegionError) -> Failure {
        Failure::Refused(e)
    }

    fn waits(d: &Decision) -> Duration {
        match d {
            Decision::Retry { wait, .. } => *wait,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn backoff_starts_at_the_min_doubles_and_stops_at_the_max() {
        assert_eq!(backoff(1), Duration::from_millis(BACKOFF_MIN_MS));
        assert_eq!(backoff(2), Duration::from_millis(2 * BACKOFF_MIN_MS));
        assert_eq!(backoff(3), Duration::from_millis(4 * BACKOFF_MIN_MS));
        assert_eq!(backoff(20), Duration::from_millis(BACKOFF_MAX_MS));
        assert_eq!(backoff(u32::MAX), Duration::from_millis(BACKOFF_MAX_MS));
    }

    #[test]
    fn a_leader_hint_is_followed_at_once_for_reads_and_writes() {
        let r = region();
        for kind in [OpKind::GET, OpKind::PUT] {
            let hint = PeerMeta::voter(12, 2, 0);
            let d = decide(&req(&r, kind, 1), refused(RegionError::NotLeader { region: 7, leader: Some(hint) }));
            assert_eq!(d, Decision::Retry { route: Route::Leader { store_id: 2 }, wait: Duration::ZERO });
        }
    }

    #[test]
    fn a_request_that_keeps_being_hinted_waits_after_a_few_hops() {
        // the hinted leader may be dead: hops at once are bounded, then it backs off
        let r = region();
        let hint = PeerMeta::voter(12, 2, 0);
        let e = || refused(RegionError::NotLeader { region: 7, leader: Some(hint) });
        for attempts in 1..=HINT_HOPS_AT_ONCE_MAX {
            let d = decide(&req(&r, OpKind::PUT, attempts), e());
            assert_eq!(d, Decision::Retry { route: Route::Leader { store_id: 2 }, wait: Duration::ZERO });
        }
        let later = HINT_HOPS_AT_ONCE_MAX + 10;
        let d = decide(&req(&r, OpKind::PUT, later), e());
        assert_eq!(d, Decision::Retry { route: Route::Leader { store_id: 2 }, wait: backoff(10) });
        assert!(backoff(10) > Duration::ZERO);
    }

    #[test]
    fn a_hint_naming_the_store_just_asked_is_not_followed_at_once() {
        let r = region();
        let itself = PeerMeta::voter(11, 1, 0);
        let d = decide(&req(&r, OpKind::PUT, 3), refused(RegionError::NotLeader { region: 7, leader: Some(itself) }));
        assert_eq!(d, Decision::Retry { route: Route::NextPeer, wait: backoff(3) });
    }

    #[test]
    fn no_leader_known_waits_then_tries_the_next_peer() {
        let r = region();
        let d = decide(&req(&r, OpKind::PUT, 4), refused(RegionError::NotLeader { region: 7, leader: None }));
        assert_eq!(d, Decision::Retry { route: Route::NextPeer, wait: backoff(4) });
    }

    #[test]
    fn a_busy_store_is_asked_again_after_its_own_backoff_at_least_and_at_most_the_max() {
        let r = region();
        let busy = |ms| refused(RegionError::ServerIsBusy { region: 7, backoff_ms: ms });
        let d = decide(&req(&r, OpKind::PUT, 1), busy(30));
        assert_eq!(d, Decision::Retry { route: Route::Same, wait: Duration::from_millis(30) });
        // asked again and again: the client's own backoff grows past the store's ask
        assert_eq!(waits(&decide(&req(&r, OpKind::PUT, 9), busy(10))), backoff(9));
        assert!(backoff(9) > Duration::from_millis(10));
        assert_eq!(waits(&decide(&req(&r, OpKind::PUT, 1), busy(60_000))), Duration::from_millis(BACKOFF_MAX_MS));
    }

    #[test]
    fn a_write_whose_connection_broke_after_it_was_sent_is_ambiguous_never_retried() {
        let r = region();
        let change = ClientOp::ChangePeer(crate::region::meta::PeerChange::RemovePeer(r.peers[2]));
        let delete = ClientOp::Write(Command::Delete { key: b"b".to_vec() });
        for kind in [OpKind::PUT, OpKind::of(&delete), OpKind::of(&change)] {
            assert_eq!(decide(&req(&r, kind, 1), Failure::Lost), Decision::Ambiguous, "{kind:?}");
            // the budget never turns an unknown outcome into a definite one
            assert_eq!(decide(&req(&r, kind, ATTEMPTS_MAX), Failure::Lost), Decision::Ambiguous, "{kind:?}");
        }
    }

    #[test]
    fn a_write_answered_ambiguous_is_reported_ambiguous() {
        let r = region();
        let d = decide(&req(&r, OpKind::PUT, 1), refused(RegionError::Ambiguous { region: 7 }));
        assert_eq!(d, Decision::Ambiguous);
    }

    #[test]
    fn a_read_whose_connection_broke_is_sent_again_to_the_next_peer() {
        let r = region();
        let scan = ClientOp::Scan { start: vec![], end: vec![], limit: 10 };
        for kind in [OpKind::GET, OpKind::of(&scan), OpKind::of(&ClientOp::DescribeRegion)] {
            assert!(!kind.write);
            let d = decide(&req(&r, kind, 2), Failure::Lost);
            assert_eq!(d, Decision::Retry { route: Route::NextPeer, wait: backoff(2) }, "{kind:?}");
        }
    }

    #[test]
    fn a_write_that_was_never_sent_is_retried_at_the_next_peer() {
        let r = region();
        let d = decide(&req(&r, OpKind::PUT, 1), Failure::NotSent);
        assert_eq!(d, Decision::Retry { route: Route::NextPeer, wait: backoff(1) });
    }

    #[test]
    fn a_newer_membership_in_the_answer_is_taken_and_sent_again_at_once() {
        let r = region();
        let newer = RegionMeta { conf_ver: 4, ..region() };
        let d = decide(&req(&r, OpKind::PUT, 1), refused(RegionError::epoch_not_match(&newer)));
        let current = Box::new(RegionMeta { conf_ver: 4, ..region() });
        assert_eq!(d, Decision::Retry { route: Route::Membership { current }, wait: Duration::ZERO });
        // an older one (a new leader that has not applied the change): wait, same route
        let older = RegionMeta { conf_ver: 2, ..region() };
        let d = decide(&req(&r, OpKind::GET, 2), refused(RegionError::epoch_not_match(&older)));
        assert_eq!(d, Decision::Retry { route: Route::Same, wait: backoff(2) });
    }

    #[test]
    fn a_membership_change_made_against_an_old_membership_is_refused_not_rerouted() {
        let r = region();
        let change = ClientOp::ChangePeer(crate::region::meta::PeerChange::RemovePeer(r.peers[2]));
        let newer = Box::new(RegionMeta { conf_ver: 4, ..region() });
        let e = RegionError::epoch_not_match(&newer);
        let d = decide(&req(&r, OpKind::of(&change), 1), refused(e.clone()));
        assert_eq!(d, Decision::GiveUp(GiveUp::Refused(e)));
    }

    #[test]
    fn a_learned_region_is_stale_when_its_epoch_or_a_region_cut_from_it_since_is_newer() {
        let r = region();
        let left = RegionMeta { version: 3, end_key: b"f".to_vec(), ..region() };
        let right = RegionMeta { id: 9, version: 3, start_key: b"f".to_vec(), ..region() };
        assert!(is_stale(&r, [&left]), "the same region, split since");
        assert!(is_stale(&r, [&right]), "a region cut from it since");
        assert!(!is_stale(&left, [&r]) && !is_stale(&right, [&r, &left]), "newer than what is known");
        let moved = RegionMeta { conf_ver: r.conf_ver + 1, ..region() };
        assert!(is_stale(&r, [&moved]) && !is_stale(&moved, [&r]), "membership: conf_ver");
        let elsewhere = RegionMeta { id: 11, version: 9, start_key: b"x".to_vec(), end_key: b"y".to_vec(), ..region() };
        assert!(!is_stale(&left, [&elsewhere]), "a later version elsewhere says nothing");
    }

    #[test]
    fn a_split_named_in_the_answer_is_routed_by_at_once_with_or_without_a_route_source() {
        let r = region();
        let left = RegionMeta { version: 3, end_key: b"f".to_vec(), ..region() };
        let right = RegionMeta { id: 9, version: 3, start_key: b"f".to_vec(), ..region() };
        let e = RegionError::EpochNotMatch { current: Box::new(left.clone()), split_off: vec![right.clone()] };
        for can_refresh in [true, false] {
            let q = Request { can_refresh, ..req(&r, OpKind::PUT, 1) };
            let d = decide(&q, refused(e.clone()));
            let route = Route::Learn { regions: vec![left.clone(), right.clone()], store_id: q.store_id };
            assert_eq!(d, Decision::Retry { route, wait: Duration::ZERO });
        }
        // an admin operation names its region: nothing to re-route
        let admin = OpKind::of(&ClientOp::TransferLeader { to_peer: 12 });
        assert!(matches!(decide(&req(&r, admin, 1), refused(e.clone())), Decision::GiveUp(_)));
    }

    #[test]
    fn a_range_change_refreshes_routes_when_it_can_and_is_reported_when_it_cannot() {
        let r = region();
        let split = Box::new(RegionMeta { version: 3, end_key: b"f".to_vec(), ..region() });
        let errors = [
            RegionError::epoch_not_match(&split),
            RegionError::KeyNotInRegion { key: b"g".to_vec(), region: 7, start: b"a".to_vec(), end: b"f".to_vec() },
        ];
        for e in errors {
            let d = decide(&req(&r, OpKind::PUT, 1), refused(e.clone()));
            assert_eq!(d, Decision::Retry { route: Route::RefreshRange { refused: e.clone() }, wait: backoff(1) });
            let fixed = Request { can_refresh: false, ..req(&r, OpKind::PUT, 1) };
            assert_eq!(decide(&fixed, refused(e.clone())), Decision::GiveUp(GiveUp::Refused(e.clone())));
            // an admin operation names its region, which still exists: re-routing by key means nothing
            let admin = OpKind::of(&ClientOp::TransferLeader { to_peer: 12 });
            assert_eq!(decide(&req(&r, admin, 1), refused(e.clone())), Decision::GiveUp(GiveUp::Refused(e)));
        }
    }

    #[test]
    fn a_region_not_on_the_store_is_looked_up_again_or_looked_for_on_the_next_peer() {
        let r = region();
        let e = || refused(RegionError::RegionNotFound { region: 7 });
        assert_eq!(
            decide(&req(&r, OpKind::GET, 1), e()),
            Decision::Retry { route: Route::RefreshRegion, wait: backoff(1) }
        );
        let fixed = Request { can_refresh: false, ..req(&r, OpKind::GET, 1) };
        assert_eq!(decide(&fixed, e()), Decision::Retry { route: Route::NextPeer, wait: backoff(1) });
    }

    #[test]
    fn a_store_at_another_stores_address_refreshes_the_stores_or_is_reported() {
        let r = region();
        let e = RegionError::StoreNotMatch { request_store: 1, actual_store: 4 };
        let d = decide(&req(&r, OpKind::PUT, 1), refused(e.clone()));
        assert_eq!(d, Decision::Retry { route: Route::RefreshStores, wait: backoff(1) });
        let fixed = Request { can_refresh: false, ..req(&r, OpKind::PUT, 1) };
        assert_eq!(decide(&fixed, refused(e.clone())), Decision::GiveUp(GiveUp::Refused(e)));
    }

    #[test]
    fn refusals_that_sending_again_cannot_change_are_given_up_at_once() {
        let r = region();
        for e in [
            RegionError::TooLarge { region: 7, bytes: 10, max: 5 },
            RegionError::MemoryFull { used_bytes: 10, limit_bytes: 5 },
            RegionError::Refused { region: 7, reason: "no".into() },
        ] {
            assert_eq!(decide(&req(&r, OpKind::PUT, 1), refused(e.clone())), Decision::GiveUp(GiveUp::Refused(e)));
        }
    }

    #[test]
    fn the_attempt_budget_ends_even_retries_that_wait_for_nothing() {
        let r = region();
        let hint = PeerMeta::voter(12, 2, 0);
        let e = || refused(RegionError::NotLeader { region: 7, leader: Some(hint) });
        assert!(matches!(decide(&req(&r, OpKind::GET, ATTEMPTS_MAX - 1), e()), Decision::Retry { .. }));
        match decide(&req(&r, OpKind::GET, ATTEMPTS_MAX), e()) {
            Decision::GiveUp(GiveUp::Unavailable { attempts, last }) => {
                assert_eq!(attempts, ATTEMPTS_MAX);
                assert!(last.contains("not the leader"), "{last}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_time_budget_ends_a_request_whose_next_send_would_start_too_late() {
        let r = region();
        let at = |ms| Request { elapsed: Duration::from_millis(ms), ..req(&r, OpKind::PUT, 20) };
        let wait = backoff(20).as_millis() as u64;
        assert!(matches!(decide(&at(RETRY_MS_MAX - wait), Failure::NotSent), Decision::Retry { .. }));
        let d = decide(&at(RETRY_MS_MAX - wait + 1), Failure::NotSent);
        assert!(matches!(d, Decision::GiveUp(GiveUp::Unavailable { attempts: 20, .. })), "{d:?}");
    }
}

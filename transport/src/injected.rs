//! Link cuts a running store takes from outside: `ringraft chaos` cuts
//! links between real store processes through the status endpoint of a
//! store started with `--fault-injection` (the engine's
//! `runtime::fault_control`). Unlike [`crate::Faults`], which a test
//! builds into one endpoint with a seed, these are process-wide: every
//! shard's endpoint drops what it would send to a cut store, as a cable
//! pulled out of the whole machine would. A cut in one direction only is a
//! one-way partition; a symmetric one is both stores cutting each other.
//!
//! Off (no store cut) the cost is one relaxed atomic load per send.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

/// Most stores one process may cut at once.
pub const CUT_STORES_MAX: usize = 64;

static ANY_CUT: AtomicBool = AtomicBool::new(false);
static CUT_TO: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// From now on this process sends nothing to these stores (raft frames are
/// dropped, snapshot sends fail); an empty set heals every cut.
pub fn set_cut_stores(stores: BTreeSet<u64>) -> Result<(), String> {
    if stores.len() > CUT_STORES_MAX {
        return Err(format!("{} stores to cut: at most {CUT_STORES_MAX}", stores.len()));
    }
    let mut cut = CUT_TO.lock().unwrap_or_else(|p| p.into_inner());
    ANY_CUT.store(!stores.is_empty(), Relaxed);
    *cut = stores;
    Ok(())
}

/// The stores this process sends nothing to.
pub fn cut_stores() -> BTreeSet<u64> {
    CUT_TO.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Whether any link is cut (the hot path asks this once per send).
pub fn any_cut() -> bool {
    ANY_CUT.load(Relaxed)
}

/// Whether what this process sends to `store` is cut.
pub fn is_cut(store: u64) -> bool {
    ANY_CUT.load(Relaxed) && CUT_TO.lock().unwrap_or_else(|p| p.into_inner()).contains(&store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_store_is_cut_until_healed_and_too_many_are_refused() {
        assert!(!is_cut(2));
        set_cut_stores(BTreeSet::from([2, 3])).unwrap();
        assert!(is_cut(2) && is_cut(3) && !is_cut(1));
        assert_eq!(cut_stores(), BTreeSet::from([2, 3]));
        assert!(set_cut_stores((0..=CUT_STORES_MAX as u64).collect()).is_err());
        assert!(is_cut(2), "a refused set leaves the cuts as they were");
        set_cut_stores(BTreeSet::new()).unwrap();
        assert!(!is_cut(2) && cut_stores().is_empty());
    }
}

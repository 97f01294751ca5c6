//! raft-rs's protobuf types ↔ the WAL's own (the log knows nothing of the
//! consensus library; this is the boundary).

use raft::eraftpb;

pub fn entry_to_wal(e: &eraftpb::Entry) -> wal::Entry {
    assert!(e.context.is_empty(), "entry {} carries a context: not written by this engine", e.index);
    wal::Entry { index: e.index, term: e.term, entry_type: e.get_entry_type() as i32 as u8, data: e.data.clone() }
}

pub fn entry_from_wal(e: &wal::Entry) -> eraftpb::Entry {
    let mut out = eraftpb::Entry { index: e.index, term: e.term, data: e.data.clone(), ..Default::default() };
    let t = match e.entry_type {
        0 => eraftpb::EntryType::EntryNormal,
        1 => eraftpb::EntryType::EntryConfChange,
        2 => eraftpb::EntryType::EntryConfChangeV2,
        other => panic!("entry {} of unknown type {other} in the WAL (checksummed, so written so)", e.index),
    };
    out.set_entry_type(t);
    out
}

pub fn hard_state_to_wal(hs: &eraftpb::HardState) -> wal::HardState {
    wal::HardState { term: hs.term, vote: hs.vote, commit: hs.commit }
}

pub fn hard_state_from_wal(hs: &wal::HardState) -> eraftpb::HardState {
    eraftpb::HardState { term: hs.term, vote: hs.vote, commit: hs.commit, ..Default::default() }
}

pub fn conf_state_to_wal(cs: &eraftpb::ConfState) -> wal::ConfState {
    wal::ConfState {
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
    }
}

pub fn conf_state_from_wal(cs: &wal::ConfState) -> eraftpb::ConfState {
    eraftpb::ConfState {
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_states_survive_the_trip_through_the_wal_types() {
        let mut e = eraftpb::Entry { index: 7, term: 3, ..Default::default() };
        e.set_entry_type(eraftpb::EntryType::EntryConfChangeV2);
        e.data = bytes::Bytes::from_static(b"cc");
        assert_eq!(entry_from_wal(&entry_to_wal(&e)), e);
        let hs = eraftpb::HardState { term: 4, vote: 2, commit: 9, ..Default::default() };
        assert_eq!(hard_state_from_wal(&hard_state_to_wal(&hs)), hs);
        let cs = eraftpb::ConfState { voters: vec![1, 2, 3], learners: vec![4], ..Default::default() };
        assert_eq!(conf_state_from_wal(&conf_state_to_wal(&cs)), cs);
    }
}

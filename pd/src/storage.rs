//! Where PD's durable state lives. The whole state is small (a few dozen
//! bytes per region and store) and changes rarely — a registration, the
//! bootstrap, an id reservation, a region's new epoch — so every change
//! writes all of it: to a temporary file, fdatasync, rename over the last
//! one, fsync the directory. A crash leaves the old state or the new one,
//! never a mix.
//!
//! [`MetaStore`] is the one interface between PD's logic and its
//! durability: replicating PD through raft means an implementation whose
//! `save` returns once a quorum of PD nodes holds the state (docs/pd.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};

use crate::meta::{RegionInfo, StoreInfo};

/// The state file's first bytes.
pub const STATE_MAGIC: [u8; 8] = *b"RRPDSTAT";
/// Bumped on any incompatible change of the state's encoding (2: peers
/// carry a role).
pub const STATE_FORMAT_VERSION: u32 = 2;
/// `magic | u32 version | u64 payload length | u32 CRC32C(payload)`.
pub const STATE_HEADER_BYTES: usize = 8 + 4 + 8 + 4;
/// Largest state file PD reads back.
pub const STATE_BYTES_MAX: u64 = 1 << 30;
const STATE_FILE: &str = "pd-state";

/// Everything PD must not forget.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClusterState {
    pub cluster_id: u64,
    pub replicas: u32,
    pub initial_regions: u32,
    pub bootstrapped: bool,
    /// Every id below this may have been handed out; after a restart the
    /// allocator goes on from here.
    pub ids_reserved_until: u64,
    /// Bumped whenever a store registers or changes address.
    pub stores_version: u64,
    pub stores: Vec<StoreInfo>,
    pub regions: Vec<RegionInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("{path} at offset {offset}: {what}")]
    Corrupt { path: String, offset: u64, what: String },
}

pub trait MetaStore: Send {
    /// The state saved last, or None for a new cluster.
    fn load(&mut self) -> Result<Option<ClusterState>, StorageError>;
    /// Makes `state` durable before returning.
    fn save(&mut self, state: &ClusterState) -> Result<(), StorageError>;
}

/// What decoding a state may claim in memory, at most: bincode counts the
/// in-memory size of every container it fills, and a state's payload is at
/// most `STATE_BYTES_MAX`, each encoded byte growing to a few in memory. A
/// damaged length (behind a matching checksum: a writer's bug) is then an
/// error, not a reservation of 2^64 bytes that panics.
const STATE_DECODE_CLAIM_BYTES_MAX: usize = 16 * STATE_BYTES_MAX as usize;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<STATE_DECODE_CLAIM_BYTES_MAX>()
}

/// The state in one file of PD's data directory.
pub struct FileMetaStore {
    dir: PathBuf,
}

impl FileMetaStore {
    pub fn open(dir: &Path) -> Result<FileMetaStore, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            op: "create directory",
            path: dir.display().to_string(),
            source,
        })?;
        Ok(FileMetaStore { dir: dir.to_path_buf() })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
}

/// Encodes `state` as the state file's bytes.
pub fn encode_state(state: &ClusterState) -> Vec<u8> {
    let payload = bincode::encode_to_vec(state, config()).expect("the state always encodes");
    let mut out = Vec::with_capacity(STATE_HEADER_BYTES + payload.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a state file's bytes; errors name the offset of what is wrong.
pub fn decode_state(path: &str, bytes: &[u8]) -> Result<ClusterState, StorageError> {
    let corrupt = |offset: u64, what: String| StorageError::Corrupt { path: path.to_string(), offset, what };
    if bytes.len() < STATE_HEADER_BYTES {
        return Err(corrupt(0, format!("{} bytes, shorter than the {STATE_HEADER_BYTES}-byte header", bytes.len())));
    }
    if bytes[..8] != STATE_MAGIC {
        return Err(corrupt(0, "not a PD state file (bad magic)".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != STATE_FORMAT_VERSION {
        return Err(corrupt(
            8,
            format!(
                "format version {version}, this PD reads {STATE_FORMAT_VERSION} (a state written by another build: start that build, or a new cluster)"
            ),
        ));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let payload = &bytes[STATE_HEADER_BYTES..];
    if payload.len() as u64 != len {
        return Err(corrupt(12, format!("payload of {len} bytes announced, {} present", payload.len())));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(corrupt(STATE_HEADER_BYTES as u64, "payload checksum mismatch".into()));
    }
    let (state, used): (ClusterState, usize) = bincode::decode_from_slice(payload, config())
        .map_err(|e| corrupt(STATE_HEADER_BYTES as u64, format!("payload does not decode: {e}")))?;
    if used != payload.len() {
        return Err(corrupt((STATE_HEADER_BYTES + used) as u64, "trailing bytes after the state".into()));
    }
    Ok(state)
}

impl MetaStore for FileMetaStore {
    fn load(&mut self) -> Result<Option<ClusterState>, StorageError> {
        let path = self.path();
        let shown = path.display().to_string();
        let io = |op, source| StorageError::Io { op, path: shown.clone(), source };
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("stat", e)),
        };
        if len > STATE_BYTES_MAX {
            return Err(StorageError::Corrupt {
                path: shown,
                offset: 0,
                what: format!("{len} bytes, over {STATE_BYTES_MAX}"),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| io("read", e))?;
        decode_state(&shown, &bytes).map(Some)
    }

    fn save(&mut self, state: &ClusterState) -> Result<(), StorageError> {
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let path = self.path();
        let io = |op, p: &Path, source| StorageError::Io { op, path: p.display().to_string(), source };
        let bytes = encode_state(state);
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_data().map_err(|e| io("fdatasync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", &path, e))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| io("fsync directory", &self.dir, e))?;
        Ok(())
    }
}

/// Keeps the state in memory (tests; what a restart of PD would see is
/// what the last `save` left).
#[derive(Default, Clone)]
pub struct MemMetaStore {
    pub saved: std::sync::Arc<std::sync::Mutex<Option<ClusterState>>>,
}

impl MetaStore for MemMetaStore {
    fn load(&mut self) -> Result<Option<ClusterState>, StorageError> {
        Ok(self.saved.lock().expect("not poisoned").clone())
    }

    fn save(&mut self, state: &ClusterState) -> Result<(), StorageError> {
        *self.saved.lock().expect("not poisoned") = Some(state.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ClusterState {
        ClusterState {
            cluster_id: 77,
            replicas: 3,
            initial_regions: 4,
            bootstrapped: true,
            ids_reserved_until: 1000,
            stores_version: 2,
            stores: vec![],
            regions: vec![],
        }
    }

    #[test]
    fn the_state_file_round_trips_and_damage_is_reported_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileMetaStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), None);
        s.save(&state()).unwrap();
        assert_eq!(s.load().unwrap(), Some(state()));
        assert!(!dir.path().join("pd-state.tmp").exists());
        let mut bytes = std::fs::read(s.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(s.path(), &bytes).unwrap();
        let err = s.load().unwrap_err().to_string();
        assert!(err.contains("offset 24") && err.contains("checksum"), "{err}");
        std::fs::write(s.path(), b"RRPDSTAT").unwrap();
        assert!(s.load().unwrap_err().to_string().contains("offset 0"));
    }
}

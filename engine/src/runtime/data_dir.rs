//! A store's data directory, and the one place that reads and writes the
//! files in it besides the shards' own directories:
//!
//! - `IDENT`: what the store is (cluster, store id, shard count, and for a
//!   store run by PD its registration token), and once the store is
//!   initialized the nonce of each shard's WAL. Written at the first start,
//!   checked at every start after.
//! - `STORES`: the store addresses last learned from PD, so a store can
//!   restart while PD is down (`runtime::pd_worker`).
//! - `BOOTSTRAP`: the regions PD gave the store at its first start; once it
//!   exists PD is never asked again (each shard's WAL is authoritative).
//! - `shard-N/`: shard N's WAL and snapshot files (`runtime::shard_task`).
//!
//! Every file is JSON, written so that a crash leaves the old file or the
//! new one (a temporary file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::directory::StoreAddrs;

const IDENT_FILE: &str = "IDENT";
const STORES_FILE: &str = "STORES";
const BOOTSTRAP_FILE: &str = "BOOTSTRAP";
const SHARD_DIR_PREFIX: &str = "shard-";

/// The layout of what a store keeps (its WAL's region metas, snapshot
/// files): bumped on any change a build before it could not read, so a data
/// directory another build wrote is refused, never misread. 2: peers carry
/// a role (voter, learner).
pub const DATA_FORMAT_VERSION: u32 = 2;

/// An IDENT without a format: written before formats were numbered.
fn first_data_format() -> u32 {
    1
}

/// What a store is; fixed when the store is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    /// `DATA_FORMAT_VERSION` of the build that created the store.
    #[serde(default = "first_data_format")]
    pub format: u32,
    pub cluster_id: u64,
    pub store_id: u64,
    pub shards: u16,
    /// Drawn at a PD store's first start, before it registers: PD knows a
    /// repeated registration by it. 0: a store of a cluster spec.
    #[serde(default)]
    pub token: u64,
    /// The nonce of each shard's WAL (`runtime::wal_ident`), recorded once
    /// every shard's WAL was created durably and before the store first
    /// served anyone: from then on the store is *initialized*, and a start
    /// that finds a WAL missing, replaced or cut short is refused. `None`:
    /// not initialized yet (a first start that did not get that far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wals: Option<Vec<u64>>,
}

impl Ident {
    /// Whether `other` names the same store (cluster, id, shard count,
    /// registration token), whatever either says of its WALs.
    pub fn same_store(&self, other: &Ident) -> bool {
        (self.cluster_id, self.store_id, self.shards, self.token)
            == (other.cluster_id, other.store_id, other.shards, other.token)
    }
}

/// Why a data-directory file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not {what}: {source}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

pub fn ident_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENT_FILE)
}

/// Shard `shard`'s own directory (its WAL and snapshots).
pub fn shard_dir(data_dir: &Path, shard: u16) -> PathBuf {
    data_dir.join(format!("{SHARD_DIR_PREFIX}{shard}"))
}

/// Whether `data_dir` holds a shard's directory (a store lived here).
pub fn has_shard_data(data_dir: &Path) -> bool {
    std::fs::read_dir(data_dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(SHARD_DIR_PREFIX)))
}

/// The store's ident, if it has one.
pub fn read_ident(data_dir: &Path) -> Result<Option<Ident>, DataDirError> {
    let ident: Option<Ident> = read_json(&ident_path(data_dir), "an ident file")?;
    match ident {
        Some(i) if i.format != DATA_FORMAT_VERSION => Err(DataDirError::Invalid {
            path: ident_path(data_dir),
            what: format!(
                "a store of data format {}, this build reads format {DATA_FORMAT_VERSION}: run the build that wrote it, or start this store with an empty data directory",
                i.format
            ),
        }),
        other => Ok(other),
    }
}

/// The store's ident, if it has one; a directory that holds shard data but
/// no ident is refused rather than started as a new store (its replicas
/// would come back under a new identity).
pub fn read_ident_of_store(data_dir: &Path) -> Result<Option<Ident>, DataDirError> {
    let found = read_ident(data_dir)?;
    if found.is_none() && has_shard_data(data_dir) {
        let what = "missing, but the directory holds shard data: refusing to start it as a new store".into();
        return Err(DataDirError::Invalid { path: ident_path(data_dir), what });
    }
    Ok(found)
}

/// A random non-zero number that tells one creation from another (a
/// registration token, a WAL's nonce): the process's random hasher keys,
/// the clock, the process id and `salt`.
pub fn fresh_nonce(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish() | 1
}

pub fn write_ident(data_dir: &Path, ident: &Ident) -> Result<(), DataDirError> {
    write_durably(data_dir, IDENT_FILE, serde_json::to_string_pretty(ident).expect("an ident encodes").as_bytes())
}

/// The store addresses cached at the last refresh, if any.
pub fn read_stores(data_dir: &Path) -> Result<Option<BTreeMap<u64, StoreAddrs>>, DataDirError> {
    read_json(&data_dir.join(STORES_FILE), "a store directory")
}

pub fn write_stores(data_dir: &Path, stores: &BTreeMap<u64, StoreAddrs>) -> Result<(), DataDirError> {
    let text = serde_json::to_string_pretty(stores).expect("addresses encode");
    write_durably(data_dir, STORES_FILE, text.as_bytes())
}

/// Whether the store was given its initial regions (its BOOTSTRAP file exists).
pub fn has_bootstrap(data_dir: &Path) -> bool {
    data_dir.join(BOOTSTRAP_FILE).exists()
}

/// The regions the store was given at its first start, each checked.
pub fn read_bootstrap(data_dir: &Path) -> Result<Option<Vec<pd::RegionInfo>>, DataDirError> {
    let path = data_dir.join(BOOTSTRAP_FILE);
    let regions: Option<Vec<pd::RegionInfo>> = read_json(&path, "a bootstrap file")?;
    for r in regions.iter().flatten() {
        r.validate().map_err(|what| DataDirError::Invalid { path: path.clone(), what })?;
    }
    Ok(regions)
}

pub fn write_bootstrap(data_dir: &Path, regions: &[pd::RegionInfo]) -> Result<(), DataDirError> {
    let text = serde_json::to_string(regions).expect("regions encode");
    write_durably(data_dir, BOOTSTRAP_FILE, text.as_bytes())
}

/// `path` decoded, or None if there is no such file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<Option<T>, DataDirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|source| DataDirError::Malformed {
            path: path.to_path_buf(),
            what,
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DataDirError::Io { op: "read", path: path.to_path_buf(), source }),
    }
}

/// The error of `op` on `path`, for `map_err`.
fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DataDirError + 'a {
    move |source| DataDirError::Io { op, path: path.to_path_buf(), source }
}

/// Writes `name` in `dir` so that a crash leaves the old file or the new
/// one: a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("fsync", &tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_reads_back_what_was_written_and_a_missing_one_is_none_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("store");
        assert!(read_ident(&d).unwrap().is_none());
        assert!(read_stores(&d).unwrap().is_none());
        assert!(read_bootstrap(&d).unwrap().is_none() && !has_bootstrap(&d));
        assert!(!has_shard_data(&d));

        let ident = Ident {
            format: DATA_FORMAT_VERSION,
            cluster_id: 7,
            store_id: 3,
            shards: 2,
            token: 99,
            wals: Some(vec![5, 6]),
        };
        write_ident(&d, &ident).unwrap();
        assert_eq!(read_ident(&d).unwrap(), Some(ident));
        let addrs = StoreAddrs {
            peer_addr: "127.0.0.1:20160".parse().unwrap(),
            client_addr: "127.0.0.1:20224".parse().unwrap(),
            shards: 2,
        };
        let stores = BTreeMap::from([(3, addrs)]);
        write_stores(&d, &stores).unwrap();
        assert_eq!(read_stores(&d).unwrap(), Some(stores));
        let peer = pd::PeerInfo::voter(4, 3, 1);
        let region = pd::RegionInfo {
            id: 2,
            start_key: vec![],
            end_key: vec![],
            epoch: pd::Epoch { conf_ver: 1, version: 1 },
            peers: vec![peer],
            max_peer_id: 4,
        };
        write_bootstrap(&d, std::slice::from_ref(&region)).unwrap();
        assert!(has_bootstrap(&d));
        assert_eq!(read_bootstrap(&d).unwrap(), Some(vec![region]));
        std::fs::create_dir_all(shard_dir(&d, 1)).unwrap();
        assert!(has_shard_data(&d));
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{left:?}");
    }

    #[test]
    fn shard_data_without_an_ident_is_refused_not_started_as_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_ident_of_store(dir.path()).unwrap().is_none(), "an empty directory is a new store");
        std::fs::create_dir_all(shard_dir(dir.path(), 0)).unwrap();
        let e = read_ident_of_store(dir.path()).unwrap_err();
        assert!(e.to_string().contains("holds shard data"), "{e}");
        assert_ne!(fresh_nonce(1), 0);
    }

    #[test]
    fn a_store_another_data_format_wrote_is_refused_naming_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        // (an IDENT of before formats were numbered: format 1)
        let old = r#"{ "cluster_id": 7, "store_id": 3, "shards": 1, "token": 9 }"#;
        std::fs::write(dir.path().join(IDENT_FILE), old).unwrap();
        let err = read_ident(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data format 1") && err.contains(&format!("format {DATA_FORMAT_VERSION}")), "{err}");
        assert!(err.contains("IDENT"), "names the file: {err}");
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_the_file_and_what_it_should_be() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENT_FILE), b"{ not json").unwrap();
        let e = read_ident(dir.path()).unwrap_err();
        assert!(matches!(e, DataDirError::Malformed { what: "an ident file", .. }), "{e:?}");
        assert!(e.to_string().contains(&ident_path(dir.path()).display().to_string()), "{e}");
    }
}

//! File identity: a checksum of the first bytes (survives copies to another inode, ignores
//! inode reuse) or the device and inode numbers.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// CRC-64 of the first `bytes` bytes; shorter files wait until they are long enough.
    #[default]
    Checksum,
    /// Device and inode numbers (fast; wrong after inode reuse, or on filesystems without
    /// stable inodes).
    DeviceInode,
}

/// `fingerprint: { strategy: checksum, bytes: 1024 }`
#[derive(Debug, Clone, Deserialize, serde::Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// How many leading bytes the checksum covers.
    #[serde(default = "default_bytes")]
    pub bytes: usize,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        FingerprintConfig {
            strategy: Strategy::Checksum,
            bytes: default_bytes(),
        }
    }
}

fn default_bytes() -> usize {
    1024
}

/// `crc64:<hex>` of the first `n` bytes, or `None` if the file is shorter than `n`.
/// Reads with `pread`, leaving the handle's position alone.
pub fn checksum(f: &File, n: usize) -> std::io::Result<Option<Arc<str>>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Arc::from(format!(
        "crc64:{:016x}",
        CRC64.checksum(&buf)
    ))))
}

/// `inode:<dev>:<ino>`
pub fn device_inode(m: &std::fs::Metadata) -> Arc<str> {
    Arc::from(format!("inode:{}:{}", m.dev(), m.ino()))
}

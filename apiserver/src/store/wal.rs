//! The store's write-ahead log: what makes an acknowledged write durable.
//!
//! sled's own `flush()` costs far more than its fsync: every call seals an IO buffer and hands
//! the write to sled's thread pool, which wakes idle threads and spawns new ones (~650 µs of CPU
//! per flush on the 2-core dev VM, measured in docs/benchmarks.md). So the store applies each
//! transaction to sled *without* flushing it, appends the same writes as one record to this log,
//! and the group-commit flusher makes a whole batch of records durable with one `write` and one
//! `fdatasync`. sled is flushed only at a checkpoint (when the log passes
//! [`CHECKPOINT_BYTES`], and on close), after which the log is truncated. This is etcd's shape
//! (a WAL in front of bbolt, snapshots to bound replay).
//!
//! Recovery: sled recovers a consistent prefix of its applied batches (each batch carries the
//! revision counter, so the prefix is known by its revision). Records in the log after that
//! revision are re-applied in order; a torn or corrupt tail — a record whose write the crash cut
//! short, never acknowledged — ends the replay.
//!
//! Record framing: `len: u32 LE | crc32(payload): u32 LE | payload`, payload = `revision: u64
//! LE | n: u32 LE | n × op`, op = `0 | key_len: u32 | key | value_len: u32 | value` (put) or
//! `1 | key_len: u32 | key` (delete). Values are stored as sled stores them, so secrets stay
//! encrypted in the log too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Revision, StoreError};

/// The log's file name inside the store's data directory (next to sled's files).
pub const FILE_NAME: &str = "kapsel.wal";

/// A checkpoint (sled flush + truncate) happens once the log holds this much.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;
/// No record is larger than this (objects are ≤ 3 MiB; a transaction writes a handful).
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// One transaction's writes, encoded as they are added.
pub struct Record {
    buf: Vec<u8>,
    ops: u32,
}

impl Record {
    pub fn new(revision: Revision) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0; 8]); // len + crc, filled in by `frame`
        buf.extend_from_slice(&revision.to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // op count
        Record { buf, ops: 0 }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buf.push(OP_PUT);
        push_bytes(&mut self.buf, key);
        push_bytes(&mut self.buf, value);
        self.ops += 1;
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.buf.push(OP_DELETE);
        push_bytes(&mut self.buf, key);
        self.ops += 1;
    }

    /// The framed bytes to append to the log.
    pub fn frame(mut self) -> Vec<u8> {
        self.buf[16..20].copy_from_slice(&self.ops.to_le_bytes());
        let len = u32::try_from(self.buf.len() - 8).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

fn push_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(b);
}

/// One write of a replayed record: `value` is `None` for a delete.
#[derive(Debug, PartialEq, Eq)]
pub struct Op {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A record read back from the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Replayed {
    pub revision: Revision,
    pub ops: Vec<Op>,
}

/// Every intact record of `bytes`, in order, and how many bytes they span. Reading stops at the
/// first record that is short, oversized or fails its checksum: the tail a crash cut short.
pub fn parse(bytes: &[u8]) -> (Vec<Replayed>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
        if len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(rec) = decode(payload) else { break };
        out.push(rec);
        at += 8 + len;
    }
    (out, at)
}

fn decode(p: &[u8]) -> Option<Replayed> {
    let mut r = Reader(p);
    let revision = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let n = r.u32()?;
    let mut ops = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        let kind = r.take(1)?[0];
        let key = r.bytes()?.to_vec();
        let value = match kind {
            OP_PUT => Some(r.bytes()?.to_vec()),
            OP_DELETE => None,
            _ => return None,
        };
        ops.push(Op { key, value });
    }
    r.0.is_empty().then_some(Replayed { revision, ops })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// The log file. Only the flusher thread writes to it.
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes appended since the last checkpoint.
    size: u64,
}

impl Wal {
    /// Reads the records left in `dir`'s log (if any) and opens it for appending. The caller
    /// replays the records, makes them durable in sled, then calls [`Wal::truncate`].
    pub fn open(dir: &Path) -> Result<(Wal, Vec<Replayed>), StoreError> {
        let path = dir.join(FILE_NAME);
        let io = |what: &str, e: std::io::Error| {
            StoreError::Backend(format!("write-ahead log {}: {what}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("read", e))?;
        let (records, used) = parse(&bytes);
        if used < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                discarded = bytes.len() - used,
                "write-ahead log ends in a torn record (a write cut short by a crash, never acknowledged); discarding it"
            );
        }
        // The file's directory entry must be durable before anything relies on the file.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync directory", e))?;
        let size = bytes.len() as u64;
        Ok((Wal { file, path, size }, records))
    }

    /// Appends `bytes` and waits until they are on disk.
    pub fn append_durably(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
        {
            // Cut off whatever part of the batch did reach the file: a torn record in the
            // middle of the log would end a later replay early, before records acknowledged
            // after it.
            let _ = self.file.set_len(self.size);
            return Err(StoreError::Backend(format!(
                "write-ahead log {}: {e}",
                self.path.display()
            )));
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes appended since the last checkpoint.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Empties the log. Only after everything in it is durable elsewhere (a sled flush).
    pub fn truncate(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| {
                StoreError::Backend(format!(
                    "truncating write-ahead log {}: {e}",
                    self.path.display()
                ))
            })?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rev: Revision, puts: &[(&str, &str)], deletes: &[&str]) -> Vec<u8> {
        let mut r = Record::new(rev);
        for (k, v) in puts {
            r.put(k.as_bytes(), v.as_bytes());
        }
        for k in deletes {
            r.delete(k.as_bytes());
        }
        r.frame()
    }

    #[test]
    fn records_round_trip_in_order() {
        let mut log = record(7, &[("/a", "1"), ("/b", "")], &[]);
        log.extend(record(8, &[], &["/a"]));
        let (recs, used) = parse(&log);
        assert_eq!(used, log.len());
        assert_eq!(
            recs,
            vec![
                Replayed {
                    revision: 7,
                    ops: vec![
                        Op {
                            key: b"/a".to_vec(),
                            value: Some(b"1".to_vec())
                        },
                        Op {
                            key: b"/b".to_vec(),
                            value: Some(Vec::new())
                        },
                    ]
                },
                Replayed {
                    revision: 8,
                    ops: vec![Op {
                        key: b"/a".to_vec(),
                        value: None
                    }]
                },
            ]
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_replay() {
        let first = record(1, &[("/a", "1")], &[]);
        let second = record(2, &[("/b", "2")], &[]);
        let mut log = first.clone();
        log.extend(&second);
        // Every cut inside the second record keeps exactly the first.
        for cut in first.len()..log.len() {
            let (recs, used) = parse(&log[..cut]);
            assert_eq!(recs.len(), 1, "cut at {cut}");
            assert_eq!(used, first.len());
        }
        // A flipped bit anywhere in the second record's payload fails its checksum.
        for i in first.len() + 8..log.len() {
            let mut bad = log.clone();
            bad[i] ^= 0x10;
            assert_eq!(parse(&bad).0.len(), 1, "flip at {i}");
        }
        // A garbage length does not allocate or panic.
        let mut bad = first.clone();
        bad.extend_from_slice(&[0xff; 12]);
        assert_eq!(parse(&bad).0.len(), 1);
    }

    #[test]
    fn the_log_survives_reopen_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, recs) = Wal::open(dir.path()).unwrap();
        assert!(recs.is_empty());
        wal.append_durably(&record(1, &[("/a", "1")], &[])).unwrap();
        wal.append_durably(&record(2, &[("/b", "2")], &[])).unwrap();
        drop(wal);
        let (mut wal, recs) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![1, 2]
        );
        wal.truncate().unwrap();
        assert_eq!(wal.size(), 0);
        wal.append_durably(&record(3, &[("/c", "3")], &[])).unwrap();
        drop(wal);
        let (_, recs) = Wal::open(dir.path()).unwrap();
        assert_eq!(recs.iter().map(|r| r.revision).collect::<Vec<_>>(), vec![3]);
    }
}

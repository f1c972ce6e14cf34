//! Container logs. The runtime appends a container's stdout/stderr to raw files; the agent's
//! pump turns new complete lines into CRI-format lines (`<RFC3339Nano> <stream> F <text>`) in
//! `<attempt>.log`, rotated by size (`.log.1`, `.log.2`, ...), and truncates raw files it has
//! fully consumed once they exceed the size limit. Offsets are persisted so a restarted agent
//! resumes where it stopped. Readers serve tail/since/timestamps/limit and follow.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kapsel_runtime::ContainerId;

/// Where one container's logs live: `<root>/<ns>_<pod>_<uid>/<container>/`.
pub fn container_log_dir(root: &Path, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
    root.join(format!("{ns}_{pod}_{uid}")).join(container)
}

pub fn pod_log_dir(root: &Path, ns: &str, pod: &str, uid: &str) -> PathBuf {
    root.join(format!("{ns}_{pod}_{uid}"))
}

pub fn raw_path(dir: &Path, attempt: u32, stream: &str) -> PathBuf {
    dir.join(format!("{attempt}.{stream}.raw"))
}

pub fn log_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("{attempt}.log"))
}

/// Moves one instance's raw output into its rotated, timestamped log.
#[derive(Debug)]
pub struct LogPump {
    dir: PathBuf,
    attempt: u32,
    max_bytes: u64,
    max_files: u32,
    offsets: [u64; 2],
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl LogPump {
    pub fn new(dir: PathBuf, attempt: u32, max_bytes: u64, max_files: u32) -> Self {
        let offsets = std::fs::read_to_string(dir.join(format!("{attempt}.offsets")))
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
                Some([it.next()??, it.next()??])
            })
            .unwrap_or([0, 0]);
        LogPump {
            dir,
            attempt,
            max_bytes,
            max_files,
            offsets,
        }
    }

    fn rotate_if_needed(&self, incoming: u64) -> std::io::Result<()> {
        let cur = log_path(&self.dir, self.attempt);
        let size = std::fs::metadata(&cur).map_or(0, |m| m.len());
        if size == 0 || size + incoming <= self.max_bytes {
            return Ok(());
        }
        let keep = self.max_files.saturating_sub(1);
        if keep == 0 {
            return std::fs::remove_file(&cur);
        }
        let rotated = |n: u32| self.dir.join(format!("{}.log.{n}", self.attempt));
        let _ = std::fs::remove_file(rotated(keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(rotated(n), rotated(n + 1));
        }
        std::fs::rename(&cur, rotated(1))
    }

    /// Move new output; `final_flush` also takes a last line without a newline. Returns
    /// whether anything was moved.
    pub fn pump(&mut self, final_flush: bool) -> std::io::Result<bool> {
        let mut moved = false;
        for (i, stream) in STREAMS.iter().enumerate() {
            let raw = raw_path(&self.dir, self.attempt, stream);
            let Ok(mut f) = std::fs::File::open(&raw) else {
                continue;
            };
            let len = f.metadata()?.len();
            if len < self.offsets[i] {
                self.offsets[i] = 0; // truncated under us
            }
            if len == self.offsets[i] {
                continue;
            }
            f.seek(SeekFrom::Start(self.offsets[i]))?;
            let mut buf = Vec::new();
            f.take(len - self.offsets[i]).read_to_end(&mut buf)?;
            let usable = if final_flush {
                buf.len()
            } else {
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(p) => p + 1,
                    // A long line without newline: cut it at 16 KiB like CRI (partial lines).
                    None if buf.len() >= 16 * 1024 => buf.len(),
                    None => 0,
                }
            };
            if usable == 0 {
                continue;
            }
            let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let mut out = Vec::with_capacity(usable + 64);
            let chunk = &buf[..usable];
            let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            for line in body.split(|b| *b == b'\n') {
                out.extend_from_slice(ts.as_bytes());
                out.push(b' ');
                out.extend_from_slice(stream.as_bytes());
                out.extend_from_slice(b" F ");
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            self.rotate_if_needed(out.len() as u64)?;
            let mut lf = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(&self.dir, self.attempt))?;
            lf.write_all(&out)?;
            self.offsets[i] += usable as u64;
            moved = true;
            // Everything consumed and the raw file is big: start it over.
            if self.offsets[i] == len && len > self.max_bytes {
                let f = std::fs::OpenOptions::new().write(true).open(&raw)?;
                f.set_len(0)?;
                self.offsets[i] = 0;
            }
        }
        if moved {
            std::fs::write(
                self.dir.join(format!("{}.offsets", self.attempt)),
                format!("{} {}", self.offsets[0], self.offsets[1]),
            )?;
        }
        Ok(moved)
    }
}

/// The pumps of all live containers, run by one task.
#[derive(Clone, Default)]
pub struct Pumps {
    inner: Arc<Mutex<HashMap<ContainerId, LogPump>>>,
}

impl Pumps {
    pub fn add(&self, id: ContainerId, pump: LogPump) {
        crate::lock(&self.inner).entry(id).or_insert(pump);
    }

    /// The container exited: move what is left and forget it.
    pub fn finish(&self, id: &ContainerId) {
        let p = crate::lock(&self.inner).remove(id);
        if let Some(mut p) = p {
            if let Err(e) = p.pump(true) {
                tracing::warn!(error = %e, container = %id, "log pump");
            }
        }
    }

    pub fn remove(&self, id: &ContainerId) {
        crate::lock(&self.inner).remove(id);
    }

    pub fn pump_all(&self) {
        let mut m = crate::lock(&self.inner);
        for (id, p) in m.iter_mut() {
            if let Err(e) = p.pump(false) {
                tracing::debug!(error = %e, container = %id, "log pump");
            }
        }
    }

    /// Pump every `period` until dropped.
    pub async fn run(self, period: Duration) {
        let mut t = tokio::time::interval(period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.pump_all()).await;
        }
    }
}

/// What a reader wants.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub tail_lines: Option<u64>,
    pub since: Option<DateTime<Utc>>,
    pub timestamps: bool,
    pub limit_bytes: Option<u64>,
}

/// One parsed CRI line.
fn parse_line(line: &[u8]) -> Option<(DateTime<Utc>, &[u8])> {
    let sp = line.iter().position(|b| *b == b' ')?;
    let ts = std::str::from_utf8(&line[..sp]).ok()?;
    let ts = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    let rest = &line[sp + 1..];
    let sp2 = rest.iter().position(|b| *b == b' ')?;
    let rest = &rest[sp2 + 1..];
    let sp3 = rest.iter().position(|b| *b == b' ')?;
    Some((ts, &rest[sp3 + 1..]))
}

/// Render one CRI line for the reader (with `\n`), or `None` when filtered out.
pub fn render(line: &[u8], o: &ReadOptions) -> Option<Vec<u8>> {
    let (ts, text) = parse_line(line)?;
    if o.since.is_some_and(|s| ts < s) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + 40);
    if o.timestamps {
        out.extend_from_slice(
            ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        out.push(b' ');
    }
    out.extend_from_slice(text);
    out.push(b'\n');
    Some(out)
}

/// All files of an instance, oldest first.
pub fn files(dir: &Path, attempt: u32, max_files: u32) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..max_files.max(2))
        .rev()
        .map(|n| dir.join(format!("{attempt}.log.{n}")))
        .filter(|p| p.exists())
        .collect();
    v.push(log_path(dir, attempt));
    v
}

/// The log so far, filtered; and the size of the current file read (to follow from).
pub fn read_all(dir: &Path, attempt: u32, max_files: u32, o: &ReadOptions) -> (Vec<u8>, u64) {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut cur_len = 0;
    let fs = files(dir, attempt, max_files);
    let n = fs.len();
    for (i, f) in fs.iter().enumerate() {
        let data = std::fs::read(f).unwrap_or_default();
        if i + 1 == n {
            cur_len = data.len() as u64;
        }
        for l in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(r) = render(l, o) {
                lines.push(r);
            }
        }
    }
    if let Some(t) = o.tail_lines {
        let t = usize::try_from(t).unwrap_or(usize::MAX);
        if lines.len() > t {
            lines.drain(..lines.len() - t);
        }
    }
    let mut out: Vec<u8> = lines.concat();
    if let Some(l) = o.limit_bytes {
        out.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    (out, cur_len)
}

/// New complete lines of the current file after `offset`; a shrunk file (rotated) restarts at 0.
pub fn read_from(dir: &Path, attempt: u32, offset: &mut u64, o: &ReadOptions) -> Vec<u8> {
    let p = log_path(dir, attempt);
    let Ok(mut f) = std::fs::File::open(&p) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    if f.take(len - *offset).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    *offset += end as u64 + 1;
    let mut out = Vec::new();
    for l in buf[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(r) = render(l, o) {
            out.extend_from_slice(&r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_raw(dir: &Path, stream: &str, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(raw_path(dir, 0, stream))
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    #[test]
    fn pump_timestamps_complete_lines_and_resumes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        write_raw(dir, "stdout", "one\ntwo\npart");
        write_raw(dir, "stderr", "err\n");
        let mut p = LogPump::new(dir.to_path_buf(), 0, 1 << 20, 3);
        assert!(p.pump(false).unwrap());
        let (out, _) = read_all(dir, 0, 3, &ReadOptions::default());
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("one\ntwo\n"), "{s}");
        assert!(s.contains("err\n"));
        assert!(!s.contains("part"));
        // A new pump (agent restart) resumes from the saved offsets.
        write_raw(dir, "stdout", "ial\n");
        let mut p2 = LogPump::new(dir.to_path_buf(), 0, 1 << 20, 3);
        p2.pump(false).unwrap();
        let (out, _) = read_all(
            dir,
            0,
            3,
            &ReadOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches("one").count(), 1);
        assert!(s.contains("partial\n"));
        assert!(s.lines().all(|l| l.contains('T') && l.contains('Z')));
    }

    #[test]
    fn rotation_keeps_max_files_and_tail_spans_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let mut p = LogPump::new(dir.to_path_buf(), 0, 1024, 3);
        for i in 0..200 {
            write_raw(dir, "stdout", &format!("line {i:04}\n"));
            p.pump(false).unwrap();
        }
        assert!(dir.join("0.log.1").exists());
        assert!(dir.join("0.log.2").exists());
        assert!(!dir.join("0.log.3").exists());
        for f in files(dir, 0, 3) {
            assert!(std::fs::metadata(&f).unwrap().len() <= 1024);
        }
        let (out, _) = read_all(
            dir,
            0,
            3,
            &ReadOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(String::from_utf8(out).unwrap(), "line 0198\nline 0199\n");
        // The raw file was truncated once it grew past the limit.
        assert!(std::fs::metadata(raw_path(dir, 0, "stdout")).unwrap().len() <= 1024);
    }

    #[test]
    fn since_and_limit() {
        let line = b"2020-01-01T00:00:00.000000000Z stdout F old";
        let o = ReadOptions {
            since: Some(Utc::now() - chrono::Duration::seconds(5)),
            ..Default::default()
        };
        assert_eq!(render(line, &o), None);
        assert_eq!(render(line, &ReadOptions::default()).unwrap(), b"old\n");
    }
}

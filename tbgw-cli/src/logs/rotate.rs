//! A log file rotated as Python's `TimedRotatingFileHandler` and `RotatingFileHandler` rotate
//! theirs, which is what upstream's `logs.json` asks for.
//!
//! `tracing-appender` rotates only minutely, hourly or daily, always writes to a dated file
//! and has no rotation interval ("every 3 days") and no size limit, so these ~200 lines do it
//! the Python way instead: the current file keeps its name (`service.log`), at the first
//! record after the rotation time it is renamed to `service.log.<time>` (`%Y-%m-%d_%H-%M-%S`
//! for `when: S`, `..._%H-%M` for `M`, `..._%H` for `H`, `%Y-%m-%d` for `D`, `MIDNIGHT` and
//! `W0`-`W6`) and the oldest renamed files beyond `backupCount` are deleted. Times are local
//! time unless `utc`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// When a timed file rotates (Python's `when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Every `interval` seconds (`S`).
    Seconds,
    /// Every `interval` minutes (`M`).
    Minutes,
    /// Every `interval` hours (`H`).
    Hours,
    /// Every `interval` days (`D`).
    Days,
    /// At midnight (`MIDNIGHT`).
    Midnight,
    /// At midnight before this weekday, 0 = Monday (`W0`..`W6`).
    Weekday(u32),
}

impl When {
    /// Parses Python's names (any case); `None` for an unknown one.
    pub fn parse(s: &str) -> Option<When> {
        let u = s.trim().to_ascii_uppercase();
        Some(match u.as_str() {
            "S" => When::Seconds,
            "M" => When::Minutes,
            "H" => When::Hours,
            "D" => When::Days,
            "MIDNIGHT" => When::Midnight,
            _ => {
                let d = u.strip_prefix('W')?.parse::<u32>().ok()?;
                if d > 6 {
                    return None;
                }
                When::Weekday(d)
            }
        })
    }

    fn unit_secs(self) -> i64 {
        match self {
            When::Seconds => 1,
            When::Minutes => 60,
            When::Hours => 3600,
            When::Days | When::Midnight => 86_400,
            When::Weekday(_) => 7 * 86_400,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            When::Seconds => "%Y-%m-%d_%H-%M-%S",
            When::Minutes => "%Y-%m-%d_%H-%M",
            When::Hours => "%Y-%m-%d_%H",
            _ => "%Y-%m-%d",
        }
    }
}

/// How a file rotates.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Timed rotation: when and how many units (`None`: `FileHandler` or
    /// `RotatingFileHandler`, no timed rotation).
    pub timed: Option<(When, u32)>,
    /// Rotate when the file would reach this size (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (0: all).
    pub backup_count: usize,
    /// Times in UTC rather than local time.
    pub utc: bool,
}

#[derive(Debug)]
struct State {
    path: PathBuf,
    policy: Policy,
    file: Option<File>,
    size: u64,
    /// Unix time (s) of the next timed rotation.
    next: i64,
}

/// A rotating log file shared by the handlers that name it; cheap to clone.
#[derive(Debug, Clone)]
pub struct RotatingFile {
    state: Arc<Mutex<State>>,
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

impl RotatingFile {
    /// Opens (creating it and its directory) the file for appending.
    pub fn open(path: &Path, policy: Policy) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        // As Python: the first rotation is counted from the existing file's modification time.
        let base = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or_else(now_secs);
        let mut st = State {
            path: path.to_path_buf(),
            file: Some(file),
            size: meta.len(),
            next: 0,
            policy,
        };
        st.next = st.compute_next(base);
        Ok(RotatingFile {
            state: Arc::new(Mutex::new(st)),
        })
    }

    fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        st.maybe_rotate(buf.len() as u64);
        let f = match st.file.as_mut() {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&st.path)?;
                st.file.insert(f)
            }
        };
        f.write_all(buf)?;
        st.size += buf.len() as u64;
        Ok(())
    }
}

impl State {
    fn local(&self, t: i64) -> NaiveDateTime {
        let utc = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
        if self.policy.utc {
            utc.naive_utc()
        } else {
            utc.with_timezone(&Local).naive_local()
        }
    }

    /// Python's `computeRollover`: the next rotation time after `t`.
    fn compute_next(&self, t: i64) -> i64 {
        let Some((when, interval)) = self.policy.timed else {
            return i64::MAX;
        };
        let step = when.unit_secs() * i64::from(interval.max(1));
        match when {
            When::Midnight | When::Weekday(_) => {
                let day = self.local(t).date();
                let mut next_day = day.succ_opt().unwrap_or(day);
                if let When::Weekday(w) = when {
                    while next_day.weekday().num_days_from_monday() != w {
                        next_day = next_day.succ_opt().unwrap_or(next_day);
                    }
                }
                self.to_unix(next_day.and_hms_opt(0, 0, 0).unwrap_or_default())
                    .unwrap_or(t + step)
            }
            _ => t + step,
        }
    }

    fn to_unix(&self, n: NaiveDateTime) -> Option<i64> {
        if self.policy.utc {
            Some(Utc.from_utc_datetime(&n).timestamp())
        } else {
            Local
                .from_local_datetime(&n)
                .earliest()
                .map(|d| d.timestamp())
        }
    }

    fn maybe_rotate(&mut self, incoming: u64) {
        let now = now_secs();
        if now >= self.next {
            let (when, interval) = self.policy.timed.unwrap_or((When::Seconds, 1));
            let step = when.unit_secs() * i64::from(interval.max(1));
            let stamp = self
                .local(self.next - step)
                .format(when.suffix())
                .to_string();
            self.rotate_to(&stamp, false);
            self.next = self.compute_next(now);
            while self.next <= now {
                self.next += step;
            }
        } else if self.policy.max_bytes > 0
            && self.size > 0
            && self.size + incoming >= self.policy.max_bytes
        {
            if self.policy.timed.is_some() {
                let stamp = self.local(now).format("%Y-%m-%d_%H-%M-%S").to_string();
                self.rotate_to(&stamp, true);
            } else {
                self.rotate_numbered();
            }
        }
    }

    /// Timed (or upstream's size-within-timed) rotation: `<file>.<stamp>[.N]`.
    fn rotate_to(&mut self, stamp: &str, indexed: bool) {
        self.file = None;
        let mut target = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        if indexed {
            let mut i = 1;
            while target.exists() {
                target = PathBuf::from(format!("{}.{stamp}.{i}", self.path.display()));
                i += 1;
            }
        } else if target.exists() {
            let _ = std::fs::remove_file(&target);
        }
        // Old copies go first, so that no more than `backupCount` ever exist.
        self.prune(self.policy.backup_count.saturating_sub(1));
        if self.path.exists() {
            let _ = std::fs::rename(&self.path, &target);
        }
        self.size = 0;
        self.prune(self.policy.backup_count);
    }

    /// `RotatingFileHandler`: `<file>.1` is the newest, `<file>.<backupCount>` the oldest.
    fn rotate_numbered(&mut self) {
        let n = self.policy.backup_count;
        if n == 0 {
            // As Python: without backups the file is never rotated.
            return;
        }
        self.file = None;
        let name = |i: usize| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = std::fs::remove_file(name(n));
        for i in (1..n).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        let _ = std::fs::rename(&self.path, name(1));
        self.size = 0;
    }

    /// Deletes the oldest rotated files beyond `keep` (nothing when `backupCount` is 0).
    fn prune(&self, keep: usize) {
        if self.policy.backup_count == 0 {
            return;
        }
        let mut rotated = rotated_files(&self.path);
        if rotated.len() > keep {
            rotated.sort();
            let excess = rotated.len() - keep;
            for (_, p) in rotated.into_iter().take(excess) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// The rotated copies of `path` (`<name>.<date>[_time][.N]`), keyed for sorting oldest first.
pub fn rotated_files(path: &Path) -> Vec<((NaiveDateTime, u32), PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let (stamp, index) = match rest.split_once('.') {
            Some((s, i)) => match i.parse::<u32>() {
                Ok(i) => (s, i),
                Err(_) => continue,
            },
            None => (rest, 0),
        };
        if let Some(t) = parse_stamp(stamp) {
            out.push(((t, index), e.path()));
        }
    }
    out
}

fn parse_stamp(s: &str) -> Option<NaiveDateTime> {
    for f in ["%Y-%m-%d_%H-%M-%S", "%Y-%m-%d_%H-%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    if let Some((d, h)) = s.split_once('_') {
        let h: u32 = h.parse().ok().filter(|h| *h < 24)?;
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .ok()?
            .and_hms_opt(h, 0, 0);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)
}

/// The writer one log record is written through.
#[derive(Debug)]
pub struct RecordWriter(RotatingFile);

impl Write for RecordWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatting layer hands over one whole record per write.
        self.0.write_record(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingFile {
    type Writer = RecordWriter;
    fn make_writer(&'a self) -> RecordWriter {
        RecordWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_names_parse_as_python() {
        assert_eq!(When::parse("s"), Some(When::Seconds));
        assert_eq!(When::parse("midnight"), Some(When::Midnight));
        assert_eq!(When::parse("W6"), Some(When::Weekday(6)));
        assert_eq!(When::parse("W7"), None);
        assert_eq!(When::parse("fortnight"), None);
    }

    #[test]
    fn rotated_names_sort_oldest_first_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "a.log.2024-01-02_10-00-00",
            "a.log.2024-01-01_10-00-00.2",
            "a.log.2024-01-01_10-00-00",
            "a.log.2023-12-31",
            "a.log.bak",
            "b.log.2020-01-01",
        ] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let mut r = rotated_files(&dir.path().join("a.log"));
        r.sort();
        let names: Vec<_> = r
            .iter()
            .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "a.log.2023-12-31",
                "a.log.2024-01-01_10-00-00",
                "a.log.2024-01-01_10-00-00.2",
                "a.log.2024-01-02_10-00-00"
            ]
        );
    }

    #[test]
    fn size_rotation_numbers_backups_and_keeps_backup_count() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let f = RotatingFile::open(
            &p,
            Policy {
                timed: None,
                max_bytes: 10,
                backup_count: 2,
                utc: true,
            },
        )
        .unwrap();
        for i in 0..5 {
            f.write_record(format!("record{i}\n").as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "record4\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.log.1")).unwrap(),
            "record3\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.log.2")).unwrap(),
            "record2\n"
        );
        assert!(!dir.path().join("x.log.3").exists());
    }
}

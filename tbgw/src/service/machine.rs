//! Readings of the machine and of this process for the statistics: CPU time, memory, disk.
//! Linux `/proc` and `statvfs`; on other systems the readings are absent (`None`).

use std::path::Path;

/// CPU seconds (user + system) used by this process so far.
pub(crate) fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `/proc` reports CPU time in USER_HZ ticks, which Linux fixes at 100 for user space.
fn clock_ticks() -> f64 {
    100.0
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
pub(crate) fn process_memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kb_field(&status, field)
}

/// A `kB` field of `/proc/meminfo` (`MemTotal`, `MemAvailable`), in bytes.
pub(crate) fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kb_field(&text, field)
}

fn kb_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (total, free) bytes of the file system holding `path`.
pub(crate) fn disk(path: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    let frsize = st.f_frsize;
    Some((st.f_blocks * frsize, st.f_bavail * frsize))
}

/// Number of processors.
pub(crate) fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whole-machine CPU time (busy, total) in ticks from `/proc/stat`.
pub(crate) fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Bytes as the Python gateway writes them (psutil's `bytes2human`): one decimal and the
/// binary unit letter, `"71.1G"`, `"512.0B"`.
pub(crate) fn bytes_to_human(n: u64) -> String {
    const UNITS: [char; 8] = ['K', 'M', 'G', 'T', 'P', 'E', 'Z', 'Y'];
    for (i, u) in UNITS.iter().enumerate().rev() {
        let p = 1u128 << ((i + 1) * 10);
        if u128::from(n) >= p {
            return format!("{:.1}{u}", n as f64 / p as f64);
        }
    }
    format!("{n:.1}B", n = n as f64)
}

/// This process's memory in the fields of psutil's `memory_full_info()` on Linux, in bytes:
/// rss, vms, shared, text, lib, data, dirty (`/proc/self/statm`), uss, pss, swap
/// (`/proc/self/smaps_rollup`).
pub(crate) fn process_memory_full_info() -> Option<serde_json::Map<String, serde_json::Value>> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let page = rustix::param::page_size() as u64;
    let v: Vec<u64> = statm
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let mut m = serde_json::Map::new();
    for (i, k) in ["vms", "rss", "shared", "text", "lib", "data", "dirty"]
        .iter()
        .enumerate()
    {
        m.insert(
            k.to_string(),
            (v.get(i).copied().unwrap_or(0) * page).into(),
        );
    }
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let f = |k: &str| kb_field(&rollup, k).unwrap_or(0);
    m.insert(
        "uss".into(),
        (f("Private_Clean") + f("Private_Dirty")).into(),
    );
    m.insert("pss".into(), f("Pss").into());
    m.insert("swap".into(), f("Swap").into());
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_the_python_gateway_writes_them() {
        assert_eq!(bytes_to_human(512), "512.0B");
        assert_eq!(bytes_to_human(1024), "1.0K");
        assert_eq!(bytes_to_human(76_343_963_648), "71.1G");
        assert_eq!(bytes_to_human(3 * (1 << 20) / 2), "1.5M");
        let m = process_memory_full_info().expect("Linux /proc");
        assert!(m["rss"].as_u64().is_some_and(|r| r > 100_000), "{m:?}");
        assert!(m.contains_key("uss") && m.contains_key("swap"));
    }

    #[test]
    fn readings_of_this_process_and_machine_are_plausible() {
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(process_memory("VmRSS").is_some_and(|b| b > 100_000));
        assert!(meminfo("MemTotal").is_some_and(|b| b > 1_000_000));
        let (total, free) = disk(Path::new("/")).expect("statvfs /");
        assert!(total >= free && total > 0);
        assert!(cpu_count() >= 1);
        let (busy, total) = machine_cpu_ticks().expect("/proc/stat");
        assert!(total >= busy);
    }

    #[test]
    fn kb_fields_are_parsed_by_exact_name() {
        let t = "VmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kb_field(t, "VmRSS"), Some(1024 * 1024));
        assert_eq!(kb_field(t, "VmHWM"), Some(2048 * 1024));
        assert_eq!(kb_field(t, "Vm"), None);
    }
}

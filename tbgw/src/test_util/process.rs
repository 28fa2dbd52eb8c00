//! What benchmarks read about another process from `/proc` (Linux): CPU time and memory.

/// User + system CPU time of process `pid` in clock ticks (fields 14 and 15 of
/// `/proc/<pid>/stat`; 100 ticks a second on Linux). 0 when it cannot be read.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; fields are counted after its `)`.
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `RssAnon`, ...). 0 when absent.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_a_readable_cpu_time() {
        let me = std::process::id();
        assert!(status_kb(me, "VmRSS") > 0);
        assert!(status_kb(me, "VmHWM") >= status_kb(me, "VmRSS") / 2);
        assert_eq!(status_kb(me, "NoSuchKey"), 0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {}
        assert!(cpu_ticks(me) > 0);
    }
}

//! A server's memory, read from /proc: the proportional set size (Pss) of its
//! process and all its descendants, so that pages shared between nginx's
//! workers are counted once. And its CPU time, the same way.

use std::fs;
use std::time::Duration;

/// Linux reports CPU times in clock ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: u64 = 100;

/// Pss in bytes of `pid` and its descendants.
pub(crate) fn pss_tree(pid: u32) -> u64 {
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        total += pss(pid);
        pending.extend(children(pid));
    }
    total
}

/// User plus system CPU time of `pid` and its descendants.
pub(crate) fn cpu_tree(pid: u32) -> Duration {
    let mut ticks = 0;
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        ticks += cpu_ticks(pid);
        pending.extend(children(pid));
    }
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// User plus system CPU time of `pid` alone (all its threads, no children).
pub(crate) fn cpu_process(pid: u32) -> Duration {
    Duration::from_millis(cpu_ticks(pid) * 1000 / TICKS_PER_SECOND)
}

fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // After the command: state is field 3, utime and stime fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum()
}

fn pss(pid: u32) -> u64 {
    let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The fields after the command (which may hold spaces): state, ppid.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

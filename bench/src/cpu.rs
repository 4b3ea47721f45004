//! Where the CPU goes during a measurement window, read from `/proc` (Linux only): run time of
//! this process's threads grouped by name (each runtime names its threads), of the PostgreSQL
//! and Redis server processes, of every other process, interrupt/softirq time (loopback TCP
//! delivery) and the whole machine. Nanosecond run times come from `schedstat`; without it
//! (other systems) the figures are zero.

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

/// Thread-name prefixes of this process's runtimes, and the group each is reported as.
pub const GROUPS: &[(&str, &str)] = &[
    ("cos-load", "loadgen"),
    ("cos-mesh", "mesh"),
    ("cos-gw", "gateway"),
    ("cos-id", "identity"),
];

/// External server processes, by `comm`, and the group each is reported as.
const SERVERS: &[(&str, &str)] = &[("postgres", "postgres"), ("redis-server", "redis")];

#[derive(Clone, Debug, Default)]
pub struct Sample {
    at: Option<Instant>,
    /// Run time in ns by (group, pid-or-tid): keyed per task so tasks that appear in the window
    /// count from zero and tasks that vanish do not go negative.
    tasks: BTreeMap<(&'static str, u32), u64>,
    machine_busy: u64,
    machine_irq: u64,
    machine_steal: u64,
    machine_total: u64,
}

/// CPU used between two samples.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// CPU seconds by group ("loadgen", "mesh", "postgres", "redis", "other-processes",
    /// "irq+softirq", "bench-other").
    pub by_group: BTreeMap<&'static str, f64>,
    /// Busy fraction of all cores of the machine (1.0 = every core busy the whole window).
    pub machine_busy: f64,
    /// CPU seconds of the whole machine.
    pub machine_cpu_secs: f64,
    /// Fraction of the cores' time the hypervisor gave to other guests.
    pub steal: f64,
}

fn run_ns(path: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn comm(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// (busy, irq + softirq, steal, total) jiffies of all cores.
fn machine() -> (u64, u64, u64, u64) {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return (0, 0, 0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0, 0, 0);
    };
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0, 0, 0);
    }
    // Steal (time the hypervisor ran someone else) is neither busy nor idle for us.
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    (busy, v[5] + v[6], v[7], busy + v[3] + v[4] + v[7])
}

pub fn sample() -> Sample {
    let mut tasks = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let base = format!("/proc/self/task/{tid}");
            let (Some(name), Some(ns)) = (
                comm(&format!("{base}/comm")),
                run_ns(&format!("{base}/schedstat")),
            ) else {
                continue;
            };
            let group = GROUPS
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
                .map_or("bench-other", |(_, g)| g);
            tasks.insert((group, tid), ns);
        }
    }
    let me = std::process::id();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Some(name) = comm(&format!("/proc/{pid}/comm")) else {
                continue;
            };
            let group = SERVERS
                .iter()
                .find(|(c, _)| *c == name)
                .map_or("other-processes", |(_, g)| g);
            // schedstat is per task: add up every thread of the process.
            let mut total = 0;
            if let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) {
                for t in threads.flatten() {
                    if let Some(tid) = t.file_name().to_str() {
                        total += run_ns(&format!("/proc/{pid}/task/{tid}/schedstat")).unwrap_or(0);
                    }
                }
            }
            tasks.insert((group, pid), total);
        }
    }
    let (machine_busy, machine_irq, machine_steal, machine_total) = machine();
    Sample {
        at: Some(Instant::now()),
        tasks,
        machine_busy,
        machine_irq,
        machine_steal,
        machine_total,
    }
}

impl Sample {
    pub fn usage_since(&self, start: &Sample) -> Usage {
        let mut by_group: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (key, end_ns) in &self.tasks {
            let begin = start.tasks.get(key).copied().unwrap_or(0);
            *by_group.entry(key.0).or_default() += end_ns.saturating_sub(begin) as f64 / 1e9;
        }
        let secs = match (start.at, self.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let total = self.machine_total.saturating_sub(start.machine_total) as f64;
        let busy = self.machine_busy.saturating_sub(start.machine_busy) as f64;
        let irq = self.machine_irq.saturating_sub(start.machine_irq) as f64;
        let steal = self.machine_steal.saturating_sub(start.machine_steal) as f64;
        let machine_busy = if total > 0.0 { busy / total } else { 0.0 };
        let cores = crate::nproc() as f64;
        if total > 0.0 {
            // Interrupt and softirq time (loopback TCP delivery, mostly) is not part of any
            // task's run time.
            by_group.insert("irq+softirq", irq / total * secs * cores);
        }
        Usage {
            by_group,
            machine_busy,
            machine_cpu_secs: machine_busy * secs * cores,
            steal: if total > 0.0 { steal / total } else { 0.0 },
        }
    }
}

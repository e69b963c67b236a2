//! What the benchmarks share: result rows with their limits and targets, medians, the
//! machine's description and load, progress lines, and the printed tables.

#![allow(dead_code)]

use std::io::Write;
use std::time::Instant;

use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub unit: &'static str,
    pub runs: Vec<f64>,
    pub median: f64,
    pub limit: Option<Limit>,
    /// median / limit median (or its inverse where higher is better, as stated).
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    pub what: String,
    pub runs: Vec<f64>,
    pub median: f64,
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn row(id: &'static str, what: String, unit: &'static str, runs: Vec<f64>) -> Row {
    Row {
        id,
        what,
        unit,
        median: median(&runs),
        runs,
        limit: None,
        ratio: None,
        target: String::new(),
        met: None,
        notes: Vec::new(),
    }
}

impl Row {
    pub fn limit(mut self, what: String, runs: Vec<f64>) -> Row {
        self.limit = Some(Limit {
            what,
            median: median(&runs),
            runs,
        });
        self
    }

    pub fn target(mut self, target: &str, ratio: Option<f64>, met: bool) -> Row {
        self.target = target.to_string();
        self.ratio = ratio;
        self.met = Some(met);
        self
    }

    pub fn note(mut self, note: String) -> Row {
        self.notes.push(note);
        self
    }
}

/// The 1-minute load average: the machine is shared, so each row says how busy it was.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn load_note(before: f64) -> String {
    format!(
        "1-min load average before / after: {before:.2} / {:.2} (2 cpus)",
        load()
    )
}

pub fn progress(message: std::fmt::Arguments) {
    eprintln!("[{:>7.1} s] {message}", elapsed_total());
}

pub fn elapsed_total() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu": cpu,
        "memory_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The rows as a table, then every run of each, under a heading naming `title`.
pub fn print_tables(title: &str, rows: &[Row], machine: &Value, total: f64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n{title}; machine: {} cpus ({}), {} MiB, Linux {}; {}\n",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["memory_mib"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["date"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "| # | what | measured | limit (median) | ratio | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in rows {
        let limit = r
            .limit
            .as_ref()
            .map(|l| format!("{} {} ({})", fmt(l.median), r.unit, l.what))
            .unwrap_or_else(|| "-".into());
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} | {} | {} |",
            r.id,
            r.what,
            fmt(r.median),
            r.unit,
            limit,
            r.ratio.map(fmt).unwrap_or_else(|| "-".into()),
            if r.target.is_empty() { "-" } else { &r.target },
            met
        );
    }
    let _ = writeln!(out, "\nall runs:");
    for r in rows {
        let runs: Vec<String> = r.runs.iter().map(|v| fmt(*v)).collect();
        let _ = writeln!(
            out,
            "- {} {}: [{}] {}",
            r.id,
            r.what,
            runs.join(", "),
            r.unit
        );
        if let Some(l) = &r.limit {
            let runs: Vec<String> = l.runs.iter().map(|v| fmt(*v)).collect();
            let _ = writeln!(
                out,
                "    limit, {}: [{}] {}",
                l.what,
                runs.join(", "),
                r.unit
            );
        }
        for n in &r.notes {
            let _ = writeln!(out, "    {n}");
        }
    }
    let _ = writeln!(out, "\ntotal bench wall time: {total:.0} s");
}

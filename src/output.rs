//! What commands print on stdout: tables for people, JSON for scripts.
//!
//! Architecture invariant: nothing here prints a personal value; customers appear by
//! code, fields by name.

use std::io::Write;

use chrono::{DateTime, Utc};

use crate::engine::Report;
use crate::journal::{Event, Run};

pub fn report(out: &mut impl Write, report: &Report, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, report)?;
        return writeln!(out);
    }
    let c = &report.counts;
    let verb = if report.dry_run { "would be " } else { "" };
    writeln!(
        out,
        "run {}{}",
        report.run_id,
        if report.dry_run {
            " (dry run: nothing sent, nothing recorded)"
        } else {
            ""
        }
    )?;
    writeln!(out, "  {:<10} {:>7}", "created", c.created)?;
    writeln!(out, "  {:<10} {:>7}", "updated", c.updated)?;
    writeln!(out, "  {:<10} {:>7}", "unchanged", c.unchanged)?;
    writeln!(out, "  {:<10} {:>7}", "rejected", c.rejected)?;
    writeln!(out, "  {:<10} {:>7}", "failed", c.failed)?;
    for p in &report.plan {
        writeln!(
            out,
            "  {verb}{:<7} {:<16} {}",
            p.operation,
            p.customer,
            p.fields.join(", ")
        )?;
    }
    if !report.rejections.is_empty() {
        writeln!(out, "rejected (fix in Opter; retried next run):")?;
        for r in &report.rejections {
            writeln!(out, "  {:<16} {}", r.customer, r.reason)?;
        }
    }
    if !report.failures.is_empty() {
        writeln!(out, "failed (retried next run):")?;
        for r in &report.failures {
            writeln!(out, "  {:<16} {}", r.customer, r.reason)?;
        }
    }
    Ok(())
}

pub fn runs(out: &mut impl Write, runs: &[Run], json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, runs)?;
        return writeln!(out);
    }
    if runs.is_empty() {
        return writeln!(out, "no runs recorded yet");
    }
    writeln!(
        out,
        "{:<30} {:<20} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}  finished",
        "run", "started (UTC)", "duration", "created", "updated", "unchanged", "rejected", "failed"
    )?;
    for r in runs {
        let c = &r.counts;
        let duration = r
            .finished
            .map(|f| format!("{:.1}s", (f - r.started).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let finished = match (&r.finished, &r.error) {
            (Some(_), _) => "yes".to_string(),
            (None, Some(e)) => format!("no: {e}"),
            (None, None) => "no (interrupted or running)".to_string(),
        };
        writeln!(
            out,
            "{:<30} {:<20} {:>9} {:>8} {:>8} {:>9} {:>8} {:>6}  {finished}",
            r.id,
            time(&r.started),
            duration,
            c.created,
            c.updated,
            c.unchanged,
            c.rejected,
            c.failed
        )?;
    }
    Ok(())
}

/// Events without their values: the journal keeps values for audit, listings do not.
pub fn events(out: &mut impl Write, events: &[Event], json: bool) -> std::io::Result<()> {
    if json {
        let listed: Vec<_> = events
            .iter()
            .map(|e| Event {
                values: None,
                ..e.clone()
            })
            .collect();
        serde_json::to_writer(&mut *out, &listed)?;
        return writeln!(out);
    }
    if events.is_empty() {
        return writeln!(out, "no events");
    }
    writeln!(
        out,
        "{:>6} {:<20} {:<16} {:<7} {:<10} {:>4} {:<30} fields / message",
        "seq", "time (UTC)", "customer", "op", "outcome", "http", "run"
    )?;
    for e in events {
        let detail = match (&e.message, &e.error_code) {
            (Some(m), Some(c)) => format!("error {c}: {m}"),
            (Some(m), None) => m.clone(),
            _ if e.values.is_none() && e.chain.values_digest.is_some() => {
                format!("{} (values redacted)", e.fields.join(","))
            }
            _ => e.fields.join(","),
        };
        writeln!(
            out,
            "{:>6} {:<20} {:<16} {:<7} {:<10} {:>4} {:<30} {detail}",
            e.seq,
            time(&e.time),
            e.customer,
            serde_plain(&e.operation),
            serde_plain(&e.outcome),
            e.http_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            e.run_id,
        )?;
    }
    Ok(())
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn serde_plain(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

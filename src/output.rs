//! What commands print on stdout: tables for people, JSON for scripts.
//!
//! Architecture invariant: nothing here prints a personal value; customers appear by
//! code, fields by name.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::journal::{name_of, Event, Run};
use crate::mapping::FieldKind;
use crate::sync::Report;

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
    if c.restricted + c.suppressed > 0 {
        writeln!(out, "  {:<10} {:>7}", "restricted", c.restricted)?;
        writeln!(out, "  {:<10} {:>7}", "suppressed", c.suppressed)?;
    }
    if c.conflict + c.skipped > 0 {
        writeln!(out, "  {:<10} {:>7}", "conflict", c.conflict)?;
        writeln!(out, "  {:<10} {:>7}", "skipped", c.skipped)?;
    }
    if let Some(o) = &report.onboarding {
        writeln!(
            out,
            "register: {} customers already in {}",
            o.register_customers,
            if report.dry_run {
                "it"
            } else {
                "it before this run"
            }
        )?;
        let lines = [
            ("linked, unchanged", Some(o.linked_unchanged)),
            ("linked, updated", Some(o.linked_updated)),
            ("created", Some(o.created)),
            ("conflict", Some(o.conflict)),
            ("only in the register (left alone)", o.register_only),
        ];
        for (what, n) in lines {
            if let Some(n) = n {
                writeln!(out, "  {what:<34} {n:>7}")?;
            }
        }
    }
    for p in &report.plan {
        writeln!(
            out,
            "  {verb}{:<7} {:<16} {}",
            p.operation,
            printable(&p.customer),
            p.fields.join(", ")
        )?;
    }
    if !report.rejections.is_empty() {
        writeln!(out, "rejected (fix in Opter; retried next run):")?;
        // Every copy of a duplicated code is rejected with the same reason (and counted):
        // one line says it.
        for (i, r) in report.rejections.iter().enumerate() {
            if i > 0 && report.rejections[i - 1] == *r {
                continue;
            }
            writeln!(
                out,
                "  {:<16} {}",
                printable(&r.customer),
                printable(&r.reason)
            )?;
        }
    }
    if !report.failures.is_empty() {
        writeln!(out, "failed (retried next run):")?;
        for r in &report.failures {
            writeln!(
                out,
                "  {:<16} {}",
                printable(&r.customer),
                printable(&r.reason)
            )?;
        }
    }
    if !report.conflicts.is_empty() {
        writeln!(
            out,
            "conflict (the register holds another customer under the number; nothing \
             written until you decide with `link`):"
        )?;
        for r in &report.conflicts {
            writeln!(
                out,
                "  {:<16} {}",
                printable(&r.customer),
                printable(&r.reason)
            )?;
        }
    }
    Ok(())
}

/// What `reconcile` found.
pub fn drift(out: &mut impl Write, drift: &crate::sync::Drift, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, drift)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "compared {} Opter customers, {} register customers and {} journal entries",
        drift.opter_customers, drift.register_customers, drift.journal_states
    )?;
    let groups: [(&str, &[String]); 5] = [
        (
            "deleted in the register (the next sync creates them again)",
            &drift.deleted_in_register,
        ),
        (
            "register id gone, another customer holds the number (the next sync decides \
             as on onboarding)",
            &drift.remote_id_gone,
        ),
        (
            "our fields edited in the register (kept until Opter changes)",
            &drift.edited_in_register,
        ),
        (
            "register numbers no Opter customer maps to (left alone)",
            &drift.only_in_register,
        ),
        (
            "in Opter, not yet in the register (the next sync creates them)",
            &drift.not_in_register,
        ),
    ];
    for (what, codes) in groups {
        writeln!(out, "  {:>6}  {what}", codes.len())?;
        for code in codes.iter().take(20) {
            writeln!(out, "          {}", printable(code))?;
        }
        if codes.len() > 20 {
            writeln!(
                out,
                "          ... and {} more (--json lists all)",
                codes.len() - 20
            )?;
        }
    }
    if drift.rejected_by_mapping > 0 {
        writeln!(
            out,
            "  {:>6}  Opter customers the mapping rejects (`sync --dry-run` says why)",
            drift.rejected_by_mapping
        )?;
    }
    if !drift.any() {
        writeln!(
            out,
            "no drift: the register holds what the journal says was sent"
        )?;
    }
    Ok(())
}

/// Text as shown to a person: control characters and text-direction overrides escaped
/// (`\u{1b}`), so a value can neither drive the terminal nor forge a line.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(crate::mapping::unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match crate::mapping::unsafe_char(c) {
                true => c.escape_unicode().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
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

/// Events, newest first. The table names fields only; `--json` carries the values,
/// masked unless `show_values`.
pub fn events(
    out: &mut impl Write,
    events: &[Event],
    json: bool,
    show_values: bool,
) -> std::io::Result<()> {
    if json {
        let listed: Vec<Value> = events.iter().map(|e| event_json(e, show_values)).collect();
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
            "{:>6} {:<20} {:<16} {:<7} {:<10} {:>4} {:<30} {}",
            e.seq,
            time(&e.time),
            printable(&e.customer),
            name_of(&e.operation),
            name_of(&e.outcome),
            e.http_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            e.run_id,
            printable(&detail),
        )?;
    }
    Ok(())
}

/// An event as one flat JSON record with stable column names (the export schema).
pub fn event_json(e: &Event, show_values: bool) -> Value {
    let values = e.values.as_ref().map(|v| {
        v.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if show_values {
                        v.clone()
                    } else {
                        mask_field(k, v)
                    },
                )
            })
            .collect::<serde_json::Map<_, _>>()
    });
    serde_json::json!({
        "seq": e.seq,
        "time": e.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "run_id": e.run_id,
        "actor": e.actor,
        "customer": e.customer,
        "sink": e.sink,
        "operation": name_of(&e.operation),
        "outcome": name_of(&e.outcome),
        "http_status": e.http_status,
        "error_code": e.error_code,
        "message": e.message,
        "remote_id": e.remote_id,
        "fields": e.fields,
        "values": values,
        "values_redacted": e.values.is_none() && e.chain.values_digest.is_some(),
        "values_digest": e.chain.values_digest,
        "prev_hash": e.chain.prev_hash,
        "hash": e.chain.hash,
        "schema": e.chain.schema,
    })
}

/// The CSV header of `journal export --format csv`, in column order.
pub const CSV_COLUMNS: [&str; 19] = [
    "seq",
    "time",
    "run_id",
    "actor",
    "customer",
    "sink",
    "operation",
    "outcome",
    "http_status",
    "error_code",
    "message",
    "remote_id",
    "fields",
    "values",
    "values_redacted",
    "values_digest",
    "prev_hash",
    "hash",
    "schema",
];

/// Events, oldest first, as JSON Lines or CSV.
pub fn export(
    out: &mut impl Write,
    events: &[Event],
    csv: bool,
    show_values: bool,
) -> std::io::Result<()> {
    if !csv {
        for e in events {
            serde_json::to_writer(&mut *out, &event_json(e, show_values))?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let mut writer = ::csv::Writer::from_writer(out);
    writer.write_record(CSV_COLUMNS)?;
    for e in events {
        let record = event_json(e, show_values);
        let cells = CSV_COLUMNS.map(|c| match &record[c] {
            Value::Null => String::new(),
            Value::String(s) => spreadsheet_safe(s.clone()),
            Value::Array(a) => spreadsheet_safe(
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            // The `values` object: its JSON text starts with `{`.
            other => other.to_string(),
        });
        writer.write_record(cells)?;
    }
    writer.flush()
}

/// One event in full, for a person.
pub fn show(out: &mut impl Write, e: &Event, json: bool, show_values: bool) -> std::io::Result<()> {
    let record = event_json(e, show_values);
    if json {
        serde_json::to_writer(&mut *out, &record)?;
        return writeln!(out);
    }
    for column in CSV_COLUMNS {
        let value = match &record[column] {
            Value::Null => "-".to_string(),
            Value::String(s) => printable(s).into_owned(),
            Value::Object(values) => values
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    format!("\n    {}: {}", printable(k), printable(&v))
                })
                .collect(),
            other => other.to_string(),
        };
        writeln!(out, "{column:>16}: {value}")?;
    }
    Ok(())
}

/// Masks a personal value for display by what its field holds: a name word by word
/// (`Anna Svensson` -> `A*** S***`), an email's local part (`anna@acme.se` ->
/// `a***@acme.se`). Non-personal register fields are shown as they are; a field no
/// register declares is masked as a name.
pub fn mask_field(field: &str, value: &Value) -> Value {
    let rule = crate::sink::REGISTERS
        .iter()
        .flat_map(|r| r.rules.fields)
        .find(|r| r.name == field);
    match (value, rule) {
        (Value::String(_), Some(rule)) if !rule.personal => value.clone(),
        (Value::String(s), Some(rule)) if matches!(rule.kind, FieldKind::Email { .. }) => {
            Value::String(mask_email(s))
        }
        (Value::String(s), _) => Value::String(mask_name(s)),
        (other, _) => other.clone(),
    }
}

/// Every word masked to its first character: nothing in a name is shown whole, whatever
/// it holds (an `@` included).
pub fn mask_name(value: &str) -> String {
    value
        .split_whitespace()
        .map(|w| match w.chars().next() {
            Some(first) => format!("{first}***"),
            None => String::new(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An email's domain is shown (it names a company, not a person); its local part is
/// masked. Anything that is not one `local@domain` is masked as a name.
pub fn mask_email(value: &str) -> String {
    match value.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !value.chars().any(char::is_whitespace) =>
        {
            format!("{}@{domain}", mask_name(local))
        }
        _ => mask_name(value),
    }
}

/// A CSV cell a spreadsheet will not run: one that starts like a formula (`=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, as OWASP advises.
pub fn spreadsheet_safe(cell: String) -> String {
    match cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        true => format!("'{cell}"),
        false => cell,
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_names_and_emails_but_not_codes() {
        assert_eq!(mask_name("Anna Svensson"), "A*** S***");
        assert_eq!(mask_email("anna.svensson@acme.se"), "a***@acme.se");
        assert_eq!(mask_name("Åsa Öberg-Lind"), "Å*** Ö***");
        assert_eq!(
            mask_field("ContactPersonEmail", &"anna.svensson@acme.se".into()),
            "a***@acme.se"
        );
        assert_eq!(mask_field("CustomerNumber", &"K1001".into()), "K1001");
        assert_eq!(
            mask_field("Name", &"Acme Åkeri AB".into()),
            "A*** Å*** A***"
        );
        assert_eq!(mask_field("IsActive", &true.into()), true);
        assert_eq!(
            mask_field("SomethingNew", &"Anna".into()),
            "A***",
            "unknown fields are masked"
        );
    }

    #[test]
    fn masking_goes_by_the_field_not_by_an_at_sign() {
        for field in ["Name", "name", "contact.name", "ContactPersonName", "New"] {
            assert_eq!(
                mask_field(field, &"Anders Berg @ Cargo Hansson".into()),
                "A*** B*** @*** C*** H***",
                "{field}"
            );
        }
        // An email field holding something else is masked whole.
        assert_eq!(
            mask_email("Anders Berg @ Cargo Hansson"),
            "A*** B*** @*** C*** H***"
        );
        assert_eq!(mask_email("a@b@c.se"), "a***");
    }

    #[test]
    fn cells_that_start_like_formulas_are_neutralised() {
        for cell in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(spreadsheet_safe(cell.into()), format!("'{cell}"));
        }
        for cell in ["K1001", "", "a=b", "2026-12-03T10:00:00.000Z"] {
            assert_eq!(spreadsheet_safe(cell.into()), cell);
        }
    }
}

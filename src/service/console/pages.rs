//! The console's pages, as maud templates. maud escapes every interpolation for HTML;
//! text from Opter, the register or the journal also goes through `shown`, so control
//! and direction characters are printed as escapes, never raw.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::{Role, Timeline, Who};
use crate::journal::{name_of, Event, Hold, HoldKind, Run, Verification};
use crate::output::{event_json, printable};
use crate::service::scheduler::{Connection, Summary};

pub const STYLESHEET: &str = include_str!("console.css");

/// How many runs the dashboard's chart and table show, newest last.
const RUNS_SHOWN: usize = 60;

/// What a path segment may hold as is; everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Text from outside, safe to print: control and direction characters escaped.
fn shown(text: &str) -> String {
    printable(text).into_owned()
}

/// A customer code as a URL query value or path segment.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

fn when(time: Option<DateTime<Utc>>) -> String {
    match time {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "—".to_string(),
    }
}

fn layout(who: Option<&Who>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · opter-visma-sync" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header.top {
                    a.brand href="/" { "opter-visma-sync" }
                    @if let Some(who) = who {
                        span.who { (who.name) " · " (who.role.name()) }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(who: &Who, title: &str, body: Markup) -> Response {
    layout(Some(who), title, body).into_response()
}

/// A page that says what went wrong and what to do, with its status.
pub fn problem(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! {
        section.problem {
            h1 { (title) }
            @if !text.is_empty() { p { (text) } }
            p { a href="/" { "Back to the tenants" } }
        }
    };
    (status, layout(None, title, body)).into_response()
}

/// The login form; with `sso`, the single sign-on button's label.
pub fn login(token: &str, failed: Option<&str>, sso: Option<&str>) -> Markup {
    let body = html! {
        section.login {
            h1 { "Log in" }
            @if let Some(why) = failed { p.error role="alert" { (why) } }
            form method="post" action="/login" {
                input type="hidden" name="login" value=(token);
                label { "User name" input name="user" autocomplete="username" required; }
                label {
                    "Password"
                    input type="password" name="password" autocomplete="current-password"
                        required;
                }
                button type="submit" { "Log in" }
            }
            @if let Some(label) = sso {
                p.sso { a.button.sso href="/login/oidc" { (label) } }
            }
            p.hint {
                "Accounts are made on the server with "
                code { "opter-visma-sync users add NAME --role admin" } "."
            }
        }
    };
    layout(None, "Log in", body)
}

fn badge(health: &str) -> Markup {
    html! { span class={ "badge " (health) } { (health) } }
}

pub fn overview(who: &Who, rows: &[Summary]) -> Response {
    let body = html! {
        h1 { "Tenants" }
        @if rows.is_empty() {
            p { "No tenant you may see is loaded. Tenant configs go in the service's tenants folder." }
        } @else {
            table.tenants {
                thead { tr {
                    th { "Tenant" } th { "Register" } th { "Health" } th { "State" }
                    th { "Last run" } th { "Outcome" } th { "Next run" } th { "Failures" }
                } }
                tbody {
                    @for t in rows {
                        tr {
                            td { a href={ "/t/" (t.id) } { (t.id) } }
                            td { (t.register) }
                            td { (badge(t.health)) }
                            td { (t.state) }
                            td { (when(t.last_run.as_ref().map(|r| r.finished))) }
                            td { (t.last_run.as_ref().map_or("—", |r| r.outcome)) }
                            td { (when(t.next_run)) }
                            td.num { (t.failures) }
                        }
                        @if let Some(p) = &t.pause {
                            tr.note { td colspan="8" {
                                "Paused (" (p.reason) "): " (shown(&p.message))
                            } }
                        }
                        @if let Some(e) = &t.error {
                            tr.note { td colspan="8" { "Config: " (shown(e)) } }
                        }
                    }
                }
            }
        }
    };
    page(who, "Tenants", body)
}

/// The counts a run's bar shows, in stacking order, with their class names.
fn bar_parts(run: &Run) -> [(&'static str, u64); 5] {
    let c = &run.counts;
    [
        ("created", c.created),
        ("updated", c.updated),
        ("rejected", c.rejected),
        ("failed", c.failed),
        ("conflict", c.conflict),
    ]
}

/// A run's bar, bottom up: each part's class, top and height.
fn stacked(run: &Run, most: u64, height: f64) -> Vec<(&'static str, f64, f64)> {
    let mut top = height;
    let mut parts = Vec::new();
    for (name, n) in bar_parts(run).into_iter().filter(|(_, n)| *n > 0) {
        let h = (n as f64 / most as f64 * (height - 10.0)).max(1.0);
        top -= h;
        parts.push((name, top, h));
    }
    parts
}

/// Stacked bars of what each run did, drawn here so no script is needed.
fn chart(runs: &[&Run]) -> Markup {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 180.0;
    const LEFT: f64 = 48.0;
    let most = runs
        .iter()
        .map(|r| bar_parts(r).iter().map(|(_, n)| n).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (WIDTH - LEFT) / runs.len().max(1) as f64;
    let bar = (slot * 0.8).clamp(1.0, 24.0);
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 20.0) }
                role="img" aria-label="Customers created, updated, rejected, failed and in conflict, per run" {
                line.axis x1=(LEFT) y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                text.tick x=(LEFT - 6.0) y="12" text-anchor="end" { (most) }
                text.tick x=(LEFT - 6.0) y=(HEIGHT) text-anchor="end" { "0" }
                @for (i, run) in runs.iter().enumerate() {
                    @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                    g.run {
                        title {
                            (run.id) " · " (when(Some(run.started)))
                            @for (name, n) in bar_parts(run) { " · " (name) " " (n) }
                        }
                        @for (name, y, h) in stacked(run, most, HEIGHT) {
                            rect class=(name) x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                                width=(format!("{bar:.1}")) height=(format!("{h:.1}")) {}
                        }
                    }
                }
                @if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
                    text.tick x=(LEFT) y=(HEIGHT + 16.0) { (first.started.format("%Y-%m-%d %H:%M")) }
                    text.tick x=(WIDTH) y=(HEIGHT + 16.0) text-anchor="end" { (last.started.format("%Y-%m-%d %H:%M")) }
                }
            }
            figcaption.legend {
                @for name in ["created", "updated", "rejected", "failed", "conflict"] {
                    span { span class={ "swatch " (name) } {} (name) }
                }
            }
        }
    }
}

fn post_button(who: &Who, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(who.csrf);
            button type="submit" { (label) }
        }
    }
}

pub fn dashboard(
    who: &Who,
    tenant: &str,
    summary: Option<&Summary>,
    connection: &Connection,
    runs: &[Run],
    conflicts: &[(String, Hold)],
) -> Response {
    let needs_login = summary.is_some_and(|s| s.health == "needs-login");
    let mut newest: Vec<&Run> = runs.iter().collect();
    newest.sort_by_key(|r| std::cmp::Reverse(r.started));
    newest.truncate(RUNS_SHOWN);
    let mut oldest_first = newest.clone();
    oldest_first.reverse();
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " (tenant) }
        h1 { (tenant) }
        @if let Some(s) = summary {
            dl.facts {
                dt { "Health" } dd { (badge(s.health)) }
                dt { "Register" } dd { (s.register) }
                dt { "State" } dd { (s.state) }
                dt { "Last run" } dd {
                    (when(s.last_run.as_ref().map(|r| r.finished)))
                    @if let Some(r) = &s.last_run { " (" (r.outcome) ")" }
                }
                dt { "Next run" } dd { (when(s.next_run)) }
                dt { "Last success" } dd { (when(s.last_success)) }
                dt { "Journal last verified" } dd { (when(s.last_verified)) }
                @if let Some(p) = &s.pause {
                    dt { "Paused" } dd { (p.reason) ": " (shown(&p.message)) }
                }
                dt { "Visma connection" } dd.connection {
                    @match connection {
                        Connection::FromEnv => { "credentials from the environment variables [sink] names" }
                        Connection::Login(Some((origin, at))) => {
                            "login stored (" (origin) "), last refreshed " (when(Some(*at)))
                        }
                        Connection::Login(None) => { "no login stored" }
                        Connection::Unknown(why) => { (shown(why)) }
                    }
                    @if matches!(connection, Connection::Login(_)) && who.role >= Role::Admin {
                        " "
                        a.button.connect.attention[needs_login] href={ "/t/" (tenant) "/connect" } { "Connect to Visma" }
                    }
                }
            }
        }
        div.actions {
            form.inline method="get" action={ "/t/" (tenant) "/customer" } {
                label { "Customer code " input name="code" required maxlength="100"; }
                button type="submit" { "Find" }
            }
            (post_button(who, &format!("/t/{tenant}/verify"), "Verify the journal"))
            a.button href={ "/t/" (tenant) "/privacy" } { "Record of processing" }
            @if who.role >= Role::Admin {
                (post_button(who, &format!("/t/{tenant}/run"), "Run now"))
            }
        }
        @if !conflicts.is_empty() {
            h2 { "Waiting for a decision" }
            p.hint { "The register holds another customer under these numbers, so nothing was written. Open one to accept or skip it." }
            table.conflicts {
                thead { tr { th { "Customer" } th { "Since" } th { "Why" } } }
                tbody {
                    @for (code, hold) in conflicts {
                        tr {
                            td { a href={ "/t/" (tenant) "/customer?code=" (segment(code)) } { (shown(code)) } }
                            td { (when(Some(hold.since))) }
                            td { (shown(&hold.reason)) }
                        }
                    }
                }
            }
        }
        h2 { "Runs" }
        @if newest.is_empty() {
            p { "No run is in the journal yet." }
        } @else {
            (chart(&oldest_first))
            table.runs {
                thead { tr {
                    th { "Run" } th { "Started" } th { "Finished" } th { "Created" }
                    th { "Updated" } th { "Unchanged" } th { "Rejected" } th { "Failed" }
                    th { "Conflicts" } th { "Note" }
                } }
                tbody {
                    @for r in &newest {
                        tr {
                            td { a href={ "/t/" (tenant) "/runs/" (segment(&r.id)) } { (shown(&r.id)) } }
                            td { (when(Some(r.started))) }
                            td { (when(r.finished)) }
                            td.num { (r.counts.created) }
                            td.num { (r.counts.updated) }
                            td.num { (r.counts.unchanged) }
                            td.num { (r.counts.rejected) }
                            td.num { (r.counts.failed) }
                            td.num { (r.counts.conflict) }
                            td {
                                @if r.replay { "replay " }
                                @if let Some(e) = &r.error { (shown(e)) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(who, tenant, body)
}

/// Events as a table: values masked unless `revealed`.
fn events_table(tenant: &str, events: &[Event], revealed: bool, link_customers: bool) -> Markup {
    html! {
        table.events {
            thead { tr {
                th { "#" } th { "Time" } th { "Customer" } th { "Actor" } th { "Operation" }
                th { "Outcome" } th { "HTTP" } th { "Message" } th { "Values sent" }
            } }
            tbody {
                @for e in events {
                    @let json = event_json(e, revealed);
                    tr class=(name_of(&e.outcome)) {
                        td.num { (e.seq) }
                        td { (when(Some(e.time))) }
                        td {
                            @if link_customers {
                                a href={ "/t/" (tenant) "/customer?code=" (segment(&e.customer)) } { (shown(&e.customer)) }
                            } @else { (shown(&e.customer)) }
                        }
                        td { (shown(&e.actor)) }
                        td { (name_of(&e.operation)) }
                        td { (name_of(&e.outcome)) }
                        td.num { @if let Some(s) = e.http_status { (s) } }
                        td { @if let Some(m) = &e.message { (shown(m)) } }
                        td.values {
                            @match json["values"].as_object() {
                                Some(values) => {
                                    @for (field, value) in values {
                                        div { span.field { (shown(field)) } " " (shown(&value_text(value))) }
                                    }
                                }
                                None => {
                                    @if json["values_redacted"].as_bool() == Some(true) { em { "erased" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The record of processing (GDPR Art. 30), section by section as `privacy record`.
pub fn privacy(who: &Who, tenant: &str, record: &crate::privacy::Record) -> Response {
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " a href={ "/t/" (tenant) } { (tenant) } " / record of processing" }
        h1 { "Record of processing" }
        p.hint {
            "GDPR Art. 30, as far as the connector can state it, from the tenant's config and mapping file, "
            (when(Some(record.generated))) ". The same as "
            code { "opter-visma-sync privacy record" } "."
        }
        section.record {
            h2 { "Purpose" } p { (record.purpose) }
            h2 { "Controller" } p { (record.controller) }
            h2 { "Data subjects" }
            ul { @for s in &record.data_subjects { li { (s) } } }
            h2 { "Categories of data" }
            table.categories {
                thead { tr { th { "Opter field" } th { "Personal data?" } th { "Sent as" } } }
                tbody {
                    @for c in &record.categories {
                        tr {
                            td { (c.describe) }
                            td { (c.personal.word()) }
                            td { (shown(&c.register_fields.join(", "))) }
                        }
                    }
                }
            }
            @if !record.constants.is_empty() {
                p { "Constants, not personal data: " (shown(&record.constants.join(", "))) }
            }
            p { strong { "Never processed: " } (record.never_processed) }
            h2 { "Source" }
            p { (record.source.kind) ": " (shown(&record.source.from.join(", "))) }
            h2 { "Recipients" }
            ul { @for r in &record.recipients { li { (r.name) ", " (r.role) ": " (shown(&r.hosts.join(", "))) } } }
            h2 { "Transfers" }
            p { (shown(&record.transfers.connector)) }
            @match (record.transfers.register, record.transfers.register_source) {
                (Some(statement), Some(source)) => { p { (statement) " " a href=(source) rel="noreferrer" { "Source" } } }
                (Some(statement), None) => { p { (statement) } }
                _ => { p { "Where the register's vendor processes the data: see its data processing agreement (below, to complete)." } }
            }
            h2 { "Retention" }
            p { (record.retention.journal) } p { (record.retention.register) }
            h2 { "Where it is stored" }
            ul { @for st in &record.storage { li { code { (shown(&st.place)) } ": " (st.holds) } } }
            h2 { "Security measures" }
            ul { @for m in &record.security { li { (m) } } }
            h2 { "To complete by the controller" }
            ul.to-complete { @for t in &record.to_complete { li { (t) } } }
        }
    };
    page(who, &format!("{tenant}: record of processing"), body)
}

pub fn run(who: &Who, tenant: &str, run: &Run, events: &[Event]) -> Response {
    let c = &run.counts;
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " a href={ "/t/" (tenant) } { (tenant) } " / run" }
        h1 { "Run " (shown(&run.id)) }
        dl.facts {
            dt { "Started" } dd { (when(Some(run.started))) }
            dt { "Finished" } dd { (when(run.finished)) }
            dt { "Read" } dd {
                @if run.replay { "a replay of chosen customers" }
                @else if run.cursor.is_some() { "changes since the cursor, or everything" }
                @else { "everything" }
            }
            dt { "Source cursor after" } dd { (when(run.cursor)) }
            dt { "Counts" } dd {
                "created " (c.created) ", updated " (c.updated) ", unchanged " (c.unchanged)
                ", rejected " (c.rejected) ", failed " (c.failed) ", restricted " (c.restricted)
                ", suppressed " (c.suppressed) ", conflicts " (c.conflict) ", skipped " (c.skipped)
            }
            @if let Some(e) = &run.error { dt { "Stopped" } dd { (shown(e)) } }
        }
        h2 { "Rejected before sending" }
        @if run.rejections.is_empty() { p { "None." } } @else {
            table.rejections {
                thead { tr { th { "Customer" } th { "Reason" } } }
                tbody {
                    @for r in &run.rejections {
                        tr {
                            td { a href={ "/t/" (tenant) "/customer?code=" (segment(&r.customer)) } { (shown(&r.customer)) } }
                            td { (shown(&r.reason)) }
                        }
                    }
                }
            }
        }
        h2 { "What was sent" }
        @if events.is_empty() { p { "Nothing: every customer was unchanged." } }
        @else { (events_table(tenant, events, false, true)) }
    };
    page(who, &format!("{tenant}: run"), body)
}

fn hold_name(kind: HoldKind) -> &'static str {
    match kind {
        HoldKind::Suppressed => "suppressed: purged, never sent again until unsuppressed",
        HoldKind::Restricted => "restricted: no update is sent",
        HoldKind::Conflict => {
            "in conflict: the register holds another customer under its number; accept or skip"
        }
        HoldKind::Skipped => "skipped: a person decided it is never sent",
    }
}

pub fn customer(
    who: &Who,
    tenant: &str,
    code: &str,
    found: &Timeline,
    revealed: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let base = format!("/t/{tenant}/customer/{}", segment(code));
    let events = &found.events;
    let held = |kind: HoldKind| found.holds.iter().any(|(k, _)| *k == kind);
    let act = |name: &str| format!("{base}/act/{name}");
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " a href={ "/t/" (tenant) } { (tenant) } " / customer" }
        h1 { "Customer " (shown(code)) }
        @if let Some(notice) = notice { p.ok role="status" { (notice) } }
        @if !found.holds.is_empty() {
            ul.holds {
                @for (kind, hold) in &found.holds {
                    li {
                        strong { (hold_name(*kind)) }
                        " — since " (when(Some(hold.since))) " by " (shown(&hold.actor)) ": " (shown(&hold.reason))
                    }
                }
            }
        }
        @if events.is_empty() {
            p { "The journal holds no event about this code: it was never sent, or it is typed differently." }
        } @else {
            @if let Some(reason) = revealed {
                p.revealed role="status" { "Values shown, recorded with your reason: " (shown(reason)) }
            } @else {
                p.hint { "Values are masked. Support staff can reveal them with a reason, which is recorded." }
            }
            (events_table(tenant, events, revealed.is_some(), false))
        }
        @if who.role >= Role::Support {
            section.support {
                h2 { "Support" }
                @if revealed.is_none() && !events.is_empty() {
                    form.stack method="post" action={ (base) "/reveal" } {
                        input type="hidden" name="csrf" value=(who.csrf);
                        label { "Why do you need to see the values?" input name="reason" required maxlength="500"; }
                        button type="submit" name="reveal" { "Reveal values" }
                    }
                }
                form.stack.actions method="post" action=(act("replay")) {
                    input type="hidden" name="csrf" value=(who.csrf);
                    label { "Reason (recorded in the journal)" input name="reason" required maxlength="500"; }
                    div.buttons {
                        @if held(HoldKind::Conflict) || held(HoldKind::Skipped) {
                            button type="submit" formaction=(act("accept")) { "Accept: it is this customer" }
                        }
                        @if held(HoldKind::Conflict) {
                            button type="submit" formaction=(act("skip")) { "Skip: never send it" }
                        }
                        // A held customer is not sent, so sending it again would do nothing.
                        @if found.holds.is_empty() {
                            button type="submit" formaction=(act("replay")) { "Send again" }
                        }
                        @if held(HoldKind::Restricted) {
                            button type="submit" formaction=(act("unrestrict")) { "Lift the restriction" }
                        } @else if !held(HoldKind::Suppressed) {
                            button type="submit" formaction=(act("restrict")) { "Restrict" }
                        }
                        @if held(HoldKind::Suppressed) {
                            button type="submit" formaction=(act("unsuppress")) { "Unsuppress" }
                        }
                        button type="submit" formaction=(act("export")) { "Export (JSON)" }
                    }
                }
                @if !held(HoldKind::Suppressed) {
                    form.stack.danger method="post" action={ (base) "/purge" } {
                        input type="hidden" name="csrf" value=(who.csrf);
                        p {
                            "Purge erases this customer from the register and its values from the journal, "
                            "and keeps it from being sent again. It cannot be undone."
                        }
                        label { "Reason (for the erasure receipt)" input name="reason" required maxlength="500"; }
                        label { "Type the customer's code to confirm" input name="confirm" required autocomplete="off"; }
                        button type="submit" name="purge" { "Purge customer" }
                    }
                }
            }
        }
    };
    page(who, &format!("{tenant}: customer"), body)
}

pub fn receipt(who: &Who, tenant: &str, receipt: &Value, id: &str) -> Response {
    let field = |name: &str| value_text(&receipt[name]);
    let verified = receipt["journal_verified"].as_bool() == Some(true);
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " a href={ "/t/" (tenant) } { (tenant) } " / erasure" }
        h1 { "Customer " (shown(&field("customer"))) " erased" }
        dl.facts.receipt {
            dt { "Register" } dd { (shown(&field("register"))) }
            dt { "Journal events redacted" } dd { (field("events_redacted")) }
            dt { "Receipt event" } dd { (field("receipt_event")) }
            dt { "Journal verified after" } dd { @if verified { "yes" } @else { "no: run journal verify" } }
            dt { "By" } dd { (shown(&field("actor"))) }
            dt { "Reason" } dd { (shown(&field("reason"))) }
            dt { "Time" } dd { (field("time")) }
        }
        p { a.button download href={ "/t/" (tenant) "/receipts/" (id) } { "Download the receipt (JSON)" } }
        p.hint { "The receipt can be downloaded in this session; the journal keeps the purge event for good." }
    };
    page(who, &format!("{tenant}: erased"), body)
}

pub fn verified(who: &Who, tenant: &str, found: &Verification) -> Response {
    let body = html! {
        nav.crumbs { a href="/" { "Tenants" } " / " a href={ "/t/" (tenant) } { (tenant) } " / verify" }
        h1 { "Journal verify" }
        @if found.problems.is_empty() {
            p.ok role="status" { "The journal is whole: " (found.events_checked) " events checked, none changed, removed or reordered." }
        } @else {
            p.error role="alert" {
                (found.problems.len()) " problems in " (found.events_checked) " events checked. "
                "Run " code { "journal verify" } " on the server for what to do."
            }
            table.problems {
                thead { tr { th { "Event" } th { "Kind" } th { "What" } } }
                tbody {
                    @for p in &found.problems {
                        tr { td.num { (p.seq) } td { (name_of(&p.kind)) } td { (shown(&p.what)) } }
                    }
                }
            }
        }
    };
    page(who, &format!("{tenant}: verify"), body)
}

/// After Visma's redirect back: shown without the session (its cookie is not sent on a
/// redirect from another site); the link back to the tenant brings it again.
pub fn connected(tenant: &str, at: DateTime<Utc>) -> Response {
    let body = html! {
        section.problem {
            h1 { "Connected to Visma" }
            p.ok role="status" { "The tenant " (tenant) " is connected; the login was stored at " (when(Some(at))) "." }
            p { "Its next run uses it; a tenant paused for a login runs now." }
            p { a.button href={ "/t/" (tenant) } { "Back to " (tenant) } }
        }
    };
    layout(None, "Connected to Visma", body).into_response()
}

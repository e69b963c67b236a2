//! A register's daily call budget, counted durably across runs: e-conomic's fair use is
//! 50,000 API calls per 24-hour period per agreement, and "if an App creates an
//! excessive load on the API, e-conomic is at liberty, without warning, to restrict the
//! integration's access" (https://e-conomic.com/developer/fair-use-policy). So the
//! connector keeps below a budget of its own and stops cleanly before it would pass it.
//!
//! Calls are counted per minute over a rolling 24 hours, in a small file beside the
//! journal (owner-only, written whole by rename): minute numbers and counts, nothing
//! else. Every request that leaves counts (a retry too); one that would pass the budget
//! does not leave. A write first reserves the calls it usually needs, so that it is not
//! stopped half-way by the budget; a write that needs more than its reservation (a
//! retry, an adoption) can still meet the budget mid-way, and is then left to settle
//! like any interrupted write.
//!
//! The file is written ahead: a block of calls is counted before they are made, so a
//! killed process leaves at most a block more counted than made (never fewer); the
//! exact count is written when the budget is dropped.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The window the budget counts over.
pub const WINDOW_MINUTES: i64 = 24 * 60;
/// Calls counted ahead of being made, per write of the file.
const AHEAD: u32 = 50;

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// `[minute since the Unix epoch (UTC), calls in that minute]`, oldest first.
    calls_per_minute: Vec<(i64, u32)>,
}

struct Inner {
    minutes: VecDeque<(i64, u32)>,
    /// Calls reserved by writes under way, not yet made.
    reserved: u32,
    /// Calls the file counts beyond those made (written ahead).
    ahead: u32,
}

pub struct CallBudget {
    path: PathBuf,
    limit: u32,
    /// The product, for messages.
    product: &'static str,
    /// The config key, for messages.
    key: &'static str,
    inner: Mutex<Inner>,
    clock: fn() -> DateTime<Utc>,
}

fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

impl CallBudget {
    /// The budget counted in the file at `path` (created when first written).
    pub fn open(
        path: &Path,
        limit: u32,
        product: &'static str,
        key: &'static str,
    ) -> anyhow::Result<CallBudget> {
        Self::open_with_clock(path, limit, product, key, Utc::now)
    }

    pub fn open_with_clock(
        path: &Path,
        limit: u32,
        product: &'static str,
        key: &'static str,
        clock: fn() -> DateTime<Utc>,
    ) -> anyhow::Result<CallBudget> {
        let stored: Stored = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {product}'s call count in {}: {}. It holds only counts \
                     and times; delete it only when no calls were made in the last 24 hours",
                    path.display(),
                    crate::error::without_values(&e.to_string())
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        let mut minutes: VecDeque<(i64, u32)> = stored.calls_per_minute.into();
        minutes.make_contiguous().sort_by_key(|(m, _)| *m);
        Ok(CallBudget {
            path: path.to_path_buf(),
            limit,
            product,
            key,
            inner: Mutex::new(Inner {
                minutes,
                reserved: 0,
                ahead: 0,
            }),
            clock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls made in the last 24 hours.
    pub fn used(&self) -> u32 {
        let now = minute_of((self.clock)());
        let mut inner = self.lock();
        expire(&mut inner.minutes, now);
        inner.minutes.iter().map(|(_, n)| n).sum::<u32>()
    }

    /// Counts one call about to be made; `Err(message)` when it would pass the budget
    /// (then it must not be made). Reservations are not checked here: the call may be
    /// one of them.
    pub fn spend(&self) -> Result<(), String> {
        let now = (self.clock)();
        let minute = minute_of(now);
        let mut inner = self.lock();
        expire(&mut inner.minutes, minute);
        let used: u32 = inner.minutes.iter().map(|(_, n)| n).sum();
        if used + 1 > self.limit {
            return Err(self.exhausted(&inner.minutes, used, 0, 1, now));
        }
        match inner.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => inner.minutes.push_back((minute, 1)),
        }
        if inner.ahead > 0 {
            // Already counted in the file.
            inner.ahead -= 1;
            return Ok(());
        }
        // Count this call and a block more in the file before they are made.
        if let Err(e) = self.save(&inner.minutes, AHEAD) {
            if let Some((_, n)) = inner.minutes.back_mut() {
                *n -= 1;
            }
            return Err(format!(
                "cannot record {}'s calls in {}: {e}; nothing more is sent",
                self.product,
                self.path.display()
            ));
        }
        inner.ahead = AHEAD;
        Ok(())
    }

    /// Reserves `calls` for a write about to start; `Err(message)` when they do not fit
    /// beside the calls made and those reserved by other writes.
    pub fn reserve(self: &Arc<Self>, calls: u32) -> Result<Reservation, String> {
        let now = (self.clock)();
        let mut inner = self.lock();
        expire(&mut inner.minutes, minute_of(now));
        let used: u32 = inner.minutes.iter().map(|(_, n)| n).sum();
        if used + inner.reserved + calls > self.limit {
            let needed = inner.reserved + calls;
            return Err(self.exhausted(&inner.minutes, used, inner.reserved, needed, now));
        }
        inner.reserved += calls;
        Ok(Reservation {
            budget: self.clone(),
            calls,
        })
    }

    /// What a person reads when the budget stops the run.
    fn exhausted(
        &self,
        minutes: &VecDeque<(i64, u32)>,
        used: u32,
        held: u32,
        needed: u32,
        now: DateTime<Utc>,
    ) -> String {
        let resume = resume_at(minutes, used, needed, self.limit)
            .map(|t| t.max(now).format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "never with this budget: raise it".into());
        let held = match held {
            0 => String::new(),
            n => format!(" (and up to {n} more for the writes under way)"),
        };
        format!(
            "{product}: the daily call budget is used up: {used} calls in the last 24 hours{held}, \
             and {key} is {limit}. The run stopped before sending more; no customer was left \
             half-written, and the next run resumes where this one stopped. It can run again \
             from {resume}, when the oldest calls leave the 24-hour window (or raise {key}; \
             {product} allows 50,000 calls per 24 hours per agreement, including other apps' \
             calls). The count is kept in {path}.",
            product = self.product,
            key = self.key,
            limit = self.limit,
            path = self.path.display(),
        )
    }

    /// Writes the counts, with `ahead` more on the current minute, to a temporary file
    /// (owner-only), fsyncs it and renames it over the old one.
    fn save(&self, minutes: &VecDeque<(i64, u32)>, ahead: u32) -> anyhow::Result<()> {
        use std::io::Write;
        let mut calls: Vec<(i64, u32)> = minutes.iter().copied().collect();
        if ahead > 0 {
            let minute = minute_of((self.clock)());
            match calls.last_mut() {
                Some((m, n)) if *m == minute => *n += ahead,
                _ => calls.push((minute, ahead)),
            }
        }
        let bytes = serde_json::to_vec(&Stored {
            calls_per_minute: calls,
        })?;
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The exact count is written when the budget goes (the end of a run or command).
impl Drop for CallBudget {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if inner.ahead == 0 {
            return;
        }
        let minutes = std::mem::take(&mut inner.minutes);
        if let Err(e) = self.save(&minutes, 0) {
            tracing::warn!(
                "cannot write {}'s exact call count to {} ({e}); it counts up to {AHEAD} \
                 calls more than were made",
                self.product,
                self.path.display()
            );
        }
    }
}

/// Calls held for a write under way; released when it ends.
pub struct Reservation {
    budget: Arc<CallBudget>,
    calls: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut inner = self.budget.lock();
        inner.reserved = inner.reserved.saturating_sub(self.calls);
    }
}

/// Drops minutes that have left the window ending at minute `now`.
fn expire(minutes: &mut VecDeque<(i64, u32)>, now: i64) {
    while minutes
        .front()
        .is_some_and(|(m, _)| *m <= now - WINDOW_MINUTES)
    {
        minutes.pop_front();
    }
}

/// When enough of the oldest calls will have left the window for `needed` more to fit.
fn resume_at(
    minutes: &VecDeque<(i64, u32)>,
    used: u32,
    needed: u32,
    limit: u32,
) -> Option<DateTime<Utc>> {
    if needed > limit {
        return None;
    }
    let mut left = used;
    for (minute, n) in minutes {
        left -= n;
        if left + needed <= limit {
            return Utc
                .timestamp_opt((minute + WINDOW_MINUTES) * 60, 0)
                .single();
        }
    }
    Some(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    // One clock for the tests in this module, set by each (they run in turn on it).
    static NOW: AtomicI64 = AtomicI64::new(1_796_000_000);
    static SERIAL: Mutex<()> = Mutex::new(());

    fn clock() -> DateTime<Utc> {
        Utc.timestamp_opt(NOW.load(Ordering::SeqCst), 0).unwrap()
    }

    fn set(secs: i64) {
        NOW.store(secs, Ordering::SeqCst);
    }

    fn budget(path: &Path, limit: u32) -> Arc<CallBudget> {
        Arc::new(
            CallBudget::open_with_clock(
                path,
                limit,
                "Visma e-conomic",
                "[sink] daily_call_budget",
                clock,
            )
            .unwrap(),
        )
    }

    #[test]
    fn calls_are_counted_across_runs_and_leave_after_24_hours() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.json");
        let start = 1_796_000_000;
        set(start);
        let b = budget(&path, 3);
        b.spend().unwrap();
        set(start + 600);
        b.spend().unwrap();
        drop(b);
        // Exactly what was made, owner-only, counts and times only.
        let text = std::fs::read_to_string(&path).unwrap();
        let minute = start / 60;
        assert_eq!(
            text,
            format!(
                r#"{{"calls_per_minute":[[{minute},1],[{},1]]}}"#,
                minute + 10
            )
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = budget(&path, 3);
        assert_eq!(b.used(), 2);
        b.spend().unwrap();
        let refused = b.spend().unwrap_err();
        assert!(
            refused.contains("3 calls in the last 24 hours"),
            "{refused}"
        );
        assert!(
            refused.contains("[sink] daily_call_budget is 3"),
            "{refused}"
        );
        // The first call leaves the window 24 hours after its minute.
        let resume = Utc
            .timestamp_opt((minute + WINDOW_MINUTES) * 60, 0)
            .unwrap();
        assert!(
            refused.contains(&resume.format("%Y-%m-%d %H:%M UTC").to_string()),
            "{refused}"
        );
        set((minute + WINDOW_MINUTES) * 60);
        assert_eq!(b.used(), 2);
        b.spend().unwrap();
        assert!(b.spend().is_err());
    }

    #[test]
    fn a_killed_process_leaves_more_counted_never_fewer() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.json");
        set(1_796_000_000);
        let b = budget(&path, 1000);
        for _ in 0..3 {
            b.spend().unwrap();
        }
        // As a SIGKILL would: no drop, so no exact write.
        std::mem::forget(b);
        let after = budget(&path, 1000);
        // The first call wrote itself and a block ahead; the next two were in it.
        assert_eq!(after.used(), 1 + AHEAD);
    }

    #[test]
    fn a_write_reserves_its_calls_and_releases_them() {
        let _serial = SERIAL.lock().unwrap();
        let dir = tempfile::tempdir().unwrap();
        set(1_796_000_000);
        let b = budget(&dir.path().join("calls.json"), 5);
        let first = b.reserve(3).unwrap();
        // Another write's reservation does not fit beside it...
        assert!(b.reserve(3).is_err());
        // ...but the reserved calls themselves can be made.
        for _ in 0..3 {
            b.spend().unwrap();
        }
        drop(first);
        assert!(b.reserve(3).is_err(), "3 made, 3 more do not fit in 5");
        let second = b.reserve(2).unwrap();
        drop(second);
        let Err(refused) = b.reserve(6) else {
            panic!("6 never fit in 5")
        };
        assert!(refused.contains("never with this budget"), "{refused}");
    }
}

//! Starting a group's ticker just after Prometheus's scrapes complete
//! (`watch.align_to_scrapes`; the arithmetic is in `source::scrapes`). Asked
//! when the group starts and every ten minutes after; the ticker moves only
//! when the scrapes' phase did.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::group::GroupContext;
use crate::rules::Group;
use crate::source::scrapes;

/// How often the scrapes' phase is read again (Prometheus keeps it while it
/// runs; a restart or a new target may move it).
pub(super) const EVERY: Duration = Duration::from_secs(600);

/// The phase a group's ticker follows now.
#[derive(Debug, Clone, Copy)]
pub(super) struct Aligned {
    phase: Duration,
    period: Duration,
}

/// Two phases this close are the same one.
const SAME: Duration = Duration::from_millis(20);

/// A new ticker at the scrapes' phase, when there is one and it is not the
/// phase the group follows already; `None` keeps the current ticker. After
/// the evaluation at `last_tick`, the next one comes no sooner than half a
/// scrape period before the interval is up: moving never evaluates twice in
/// a row, nor skips an interval.
pub(super) async fn ticker(
    group: &Group,
    ctx: &GroupContext,
    aligned: &mut Option<Aligned>,
    last_tick: Option<Instant>,
) -> Option<Interval> {
    let timings = match tokio::time::timeout(ctx.query_timeout, ctx.source.scrape_timings()).await {
        Ok(Ok(timings)) => timings,
        Ok(Err(e)) => {
            tracing::debug!(group = %group.name, error = %e, "cannot read Prometheus's scrape timing; the group keeps its own phase");
            return None;
        }
        Err(_) => return None,
    };
    // The service's own targets (by `job` or `service` label) when it has
    // some: Prometheus spreads unrelated jobs over the interval.
    let own: Vec<scrapes::ScrapeTiming> = match &ctx.service {
        Some(name) => timings.iter().filter(|t| t.serves(name)).cloned().collect(),
        None => Vec::new(),
    };
    let timings = if own.is_empty() { timings } else { own };
    let Some((phase, period)) = scrapes::phase(&timings, group.interval) else {
        if aligned.is_none() && !timings.is_empty() {
            tracing::debug!(group = %group.name, targets = timings.len(), "the targets' scrapes are spread over the interval (or at other intervals); the group keeps its own phase");
        }
        return None;
    };
    if let Some(a) = aligned {
        let p = period.as_millis() as u64;
        let d = (phase.as_millis() as u64 + p - a.phase.as_millis() as u64 % p) % p;
        if a.period == period && d.min(p - d) <= SAME.as_millis() as u64 {
            return None;
        }
    }
    *aligned = Some(Aligned { phase, period });
    let mut start = Instant::now() + scrapes::delay_until(phase, period, ctx.clock.now());
    if let Some(last) = last_tick {
        let not_before = last + group.interval.saturating_sub(period / 2);
        while start < not_before {
            start += period;
        }
    }
    tracing::info!(
        group = %group.name,
        phase_ms = phase.as_millis() as u64,
        period_s = period.as_secs_f64(),
        "evaluating just after Prometheus's scrapes"
    );
    let mut ticker = tokio::time::interval_at(start, group.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    Some(ticker)
}

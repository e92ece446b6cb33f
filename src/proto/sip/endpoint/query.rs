//! The queries a platform keeps answered for each device (DeviceInfo, Catalog): sent after
//! registration, on request and periodically; failures retried with backoff. A query is
//! matched to its answer by (device, CmdType, SN); answers nobody asked for still update
//! the device.

use std::time::{Duration, Instant};

/// How long a query may take to be answered in full (NVR catalogs come in many MESSAGEs).
pub const QUERY_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry after a failure: doubling from the first to the last.
pub const QUERY_BACKOFF_FIRST: Duration = Duration::from_secs(5);
pub const QUERY_BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryCmd {
    DeviceInfo,
    Catalog,
}

impl QueryCmd {
    pub const ALL: [QueryCmd; 2] = [QueryCmd::DeviceInfo, QueryCmd::Catalog];

    pub fn name(self) -> &'static str {
        match self {
            QueryCmd::DeviceInfo => "DeviceInfo",
            QueryCmd::Catalog => "Catalog",
        }
    }

    pub fn from_name(name: &str) -> Option<QueryCmd> {
        QueryCmd::ALL.into_iter().find(|c| c.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SlotState {
    /// Nothing to do until `due` (None: never, e.g. refresh disabled).
    #[default]
    Idle,
    /// Asked with this SN; answered or failed by `deadline`.
    Waiting { sn: u32, deadline: Instant },
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Slot {
    pub state: SlotState,
    /// When to ask next while idle.
    pub due: Option<Instant>,
    /// Failures in a row (backoff).
    pub failures: u32,
}

/// One slot per query kind.
#[derive(Debug, Clone, Default)]
pub struct QuerySlots([Slot; 2]);

impl QuerySlots {
    pub fn slot(&self, cmd: QueryCmd) -> &Slot {
        &self.0[cmd.index()]
    }

    pub fn slot_mut(&mut self, cmd: QueryCmd) -> &mut Slot {
        &mut self.0[cmd.index()]
    }

    /// Ask everything at `now` (registration, sync).
    pub fn ask_all(&mut self, now: Instant) {
        for s in &mut self.0 {
            s.failures = 0;
            if s.state == SlotState::Idle {
                s.due = Some(now);
            }
        }
    }

    /// Kinds due to be asked now.
    pub fn due(&self, now: Instant) -> impl Iterator<Item = QueryCmd> + '_ {
        QueryCmd::ALL.into_iter().filter(move |c| {
            let s = self.slot(*c);
            s.state == SlotState::Idle && s.due.is_some_and(|d| d <= now)
        })
    }

    /// Kinds whose wait ran out.
    pub fn overdue(&self, now: Instant) -> impl Iterator<Item = QueryCmd> + '_ {
        QueryCmd::ALL.into_iter().filter(move |c| matches!(self.slot(*c).state, SlotState::Waiting { deadline, .. } if deadline <= now))
    }

    pub fn waiting_sn(&self, cmd: QueryCmd) -> Option<u32> {
        match self.slot(cmd).state {
            SlotState::Waiting { sn, .. } => Some(sn),
            SlotState::Idle => None,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.0
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Waiting { deadline, .. } => Some(deadline),
                SlotState::Idle => s.due,
            })
            .min()
    }

    pub fn start(&mut self, cmd: QueryCmd, sn: u32, now: Instant) {
        let s = self.slot_mut(cmd);
        s.state = SlotState::Waiting { sn, deadline: now + QUERY_ANSWER_TIMEOUT };
        s.due = None;
    }

    /// Answered: next time is the periodic refresh, if any.
    pub fn succeed(&mut self, cmd: QueryCmd, now: Instant, refresh: Option<Duration>) {
        let s = self.slot_mut(cmd);
        *s = Slot { state: SlotState::Idle, due: refresh.map(|r| now + r), failures: 0 };
    }

    /// Failed: retry after the backoff, which it returns.
    pub fn fail(&mut self, cmd: QueryCmd, now: Instant) -> Duration {
        let s = self.slot_mut(cmd);
        let backoff = QUERY_BACKOFF_FIRST.saturating_mul(1 << s.failures.min(16)).min(QUERY_BACKOFF_MAX);
        s.failures = s.failures.saturating_add(1);
        s.state = SlotState::Idle;
        s.due = Some(now + backoff);
        backoff
    }

    /// The device went away: stop asking.
    pub fn clear(&mut self) {
        self.0 = Default::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_success_resets() {
        let t0 = Instant::now();
        let mut q = QuerySlots::default();
        q.ask_all(t0);
        assert_eq!(q.due(t0).collect::<Vec<_>>(), QueryCmd::ALL);
        q.start(QueryCmd::Catalog, 7, t0);
        assert_eq!(q.waiting_sn(QueryCmd::Catalog), Some(7));
        assert_eq!(q.overdue(t0 + QUERY_ANSWER_TIMEOUT).collect::<Vec<_>>(), vec![QueryCmd::Catalog]);
        let waits: Vec<u64> = (0..8).map(|_| q.fail(QueryCmd::Catalog, t0).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300]);
        q.succeed(QueryCmd::Catalog, t0, Some(Duration::from_secs(3600)));
        assert_eq!(q.slot(QueryCmd::Catalog).failures, 0);
        assert_eq!(q.fail(QueryCmd::Catalog, t0).as_secs(), 5);
    }
}

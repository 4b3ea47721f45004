//! The campaign lifecycle as a pure state machine.
//!
//! | from                  | action     | to        |
//! |-----------------------|------------|-----------|
//! | draft                 | schedule   | scheduled |
//! | scheduled             | unschedule | draft     |
//! | draft, scheduled      | launch     | running   |
//! | running               | pause      | paused    |
//! | paused                | resume     | running   |
//! | running               | complete   | completed |
//! | draft, scheduled      | cancel     | cancelled |
//! | completed, cancelled  | archive    | archived  |
//!
//! Only the transitions listed in [`transition`] are legal; everything else is
//! rejected with an [`IllegalTransition`] whose message names both the current
//! state and the state the action would have led to.

use std::fmt;

/// Lifecycle status of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Being edited; not scheduled.
    Draft,
    /// Has a send time and will launch automatically.
    Scheduled,
    /// Currently sending.
    Running,
    /// Sending temporarily stopped.
    Paused,
    /// Finished sending.
    Completed,
    /// Stopped before it ever ran.
    Cancelled,
    /// Hidden from day-to-day views; read-only forever.
    Archived,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Draft,
        Status::Scheduled,
        Status::Running,
        Status::Paused,
        Status::Completed,
        Status::Cancelled,
        Status::Archived,
    ];

    /// The stable lowercase wire name, e.g. `"draft"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Archived => "archived",
        }
    }

    /// Parses a wire name produced by [`Status::as_str`] (exact match).
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Whether no further sending can happen (completed, cancelled, archived).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Cancelled | Status::Archived
        )
    }

    /// Whether the campaign's content and settings may still be edited
    /// (draft and scheduled).
    pub fn is_editable(self) -> bool {
        matches!(self, Status::Draft | Status::Scheduled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a user (or the scheduler) asks to do with a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Draft → scheduled.
    Schedule,
    /// Scheduled → draft.
    Unschedule,
    /// Draft or scheduled → running.
    Launch,
    /// Running → paused.
    Pause,
    /// Paused → running.
    Resume,
    /// Running → completed.
    Complete,
    /// Draft or scheduled → cancelled.
    Cancel,
    /// Completed or cancelled → archived.
    Archive,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 8] = [
        Action::Schedule,
        Action::Unschedule,
        Action::Launch,
        Action::Pause,
        Action::Resume,
        Action::Complete,
        Action::Cancel,
        Action::Archive,
    ];

    /// The stable lowercase wire name, e.g. `"schedule"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Schedule => "schedule",
            Action::Unschedule => "unschedule",
            Action::Launch => "launch",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Complete => "complete",
            Action::Cancel => "cancel",
            Action::Archive => "archive",
        }
    }

    /// Parses a wire name produced by [`Action::as_str`] (exact match).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.as_str() == s)
    }

    /// The state this action leads to when it is legal.
    pub fn target(self) -> Status {
        match self {
            Action::Schedule => Status::Scheduled,
            Action::Unschedule => Status::Draft,
            Action::Launch | Action::Resume => Status::Running,
            Action::Pause => Status::Paused,
            Action::Complete => Status::Completed,
            Action::Cancel => Status::Cancelled,
            Action::Archive => Status::Archived,
        }
    }

    /// The states from which this action is legal.
    pub fn sources(self) -> &'static [Status] {
        match self {
            Action::Schedule => &[Status::Draft],
            Action::Unschedule => &[Status::Scheduled],
            Action::Launch | Action::Cancel => &[Status::Draft, Status::Scheduled],
            Action::Pause | Action::Complete => &[Status::Running],
            Action::Resume => &[Status::Paused],
            Action::Archive => &[Status::Completed, Status::Cancelled],
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action that is not allowed from the campaign's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    /// The campaign's current state.
    pub from: Status,
    /// The rejected action.
    pub action: Action,
    /// The state the action would lead to from its usual source state.
    pub to: Option<Status>,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} a campaign that is {}", self.action, self.from)?;
        if let Some(to) = self.to {
            write!(
                f,
                ": only {} campaigns can become {}",
                join_or(self.action.sources()),
                to
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for IllegalTransition {}

/// Joins status names as "a", "a or b", "a, b or c".
fn join_or(states: &[Status]) -> String {
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {}", rest.join(", "), last),
    }
}

/// Applies `action` to a campaign in state `from`.
///
/// Legal transitions:
/// draft –schedule→ scheduled, scheduled –unschedule→ draft,
/// draft/scheduled –launch→ running, running –pause→ paused,
/// paused –resume→ running, running –complete→ completed,
/// draft/scheduled –cancel→ cancelled, completed/cancelled –archive→ archived.
pub fn transition(from: Status, action: Action) -> Result<Status, IllegalTransition> {
    if action.sources().contains(&from) {
        Ok(action.target())
    } else {
        Err(IllegalTransition {
            from,
            action,
            to: Some(action.target()),
        })
    }
}

/// The actions that are legal from `from`, in [`Action::ALL`] order.
pub fn allowed_actions(from: Status) -> Vec<Action> {
    Action::ALL
        .into_iter()
        .filter(|action| transition(from, *action).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Status::*;

    /// The full legal-transition table, written out independently of the code.
    const LEGAL: [(Status, Action, Status); 11] = [
        (Draft, Schedule, Scheduled),
        (Scheduled, Unschedule, Draft),
        (Draft, Launch, Running),
        (Scheduled, Launch, Running),
        (Running, Pause, Paused),
        (Paused, Resume, Running),
        (Running, Complete, Completed),
        (Draft, Cancel, Cancelled),
        (Scheduled, Cancel, Cancelled),
        (Completed, Archive, Archived),
        (Cancelled, Archive, Archived),
    ];

    fn expected(from: Status, action: Action) -> Option<Status> {
        LEGAL
            .iter()
            .find(|(f, a, _)| *f == from && *a == action)
            .map(|(_, _, to)| *to)
    }

    #[test]
    fn exhaustive_against_table() {
        for from in Status::ALL {
            for action in Action::ALL {
                let got = transition(from, action);
                match expected(from, action) {
                    Some(to) => assert_eq!(got, Ok(to), "{from} {action}"),
                    None => {
                        let err = got.expect_err("must be illegal");
                        assert_eq!(err.from, from);
                        assert_eq!(err.action, action);
                        assert_eq!(err.to, Some(action.target()));
                    }
                }
            }
        }
    }

    #[test]
    fn messages_name_both_states() {
        for from in Status::ALL {
            for action in Action::ALL {
                if let Err(err) = transition(from, action) {
                    let msg = err.to_string();
                    assert!(msg.contains(from.as_str()), "{msg}");
                    assert!(msg.contains(action.target().as_str()), "{msg}");
                    assert!(msg.contains(action.as_str()), "{msg}");
                }
            }
        }
    }

    #[test]
    fn example_message() {
        let err = transition(Draft, Pause).expect_err("illegal");
        assert_eq!(
            err.to_string(),
            "cannot pause a campaign that is draft: only running campaigns can become paused"
        );
        let err = transition(Running, Archive).expect_err("illegal");
        assert_eq!(
            err.to_string(),
            "cannot archive a campaign that is running: \
             only completed or cancelled campaigns can become archived"
        );
    }

    #[test]
    fn allowed_actions_consistent_with_transition() {
        for from in Status::ALL {
            let allowed = allowed_actions(from);
            for action in Action::ALL {
                assert_eq!(
                    allowed.contains(&action),
                    transition(from, action).is_ok(),
                    "{from} {action}"
                );
            }
        }
        assert_eq!(allowed_actions(Draft), vec![Schedule, Launch, Cancel]);
        assert!(allowed_actions(Archived).is_empty());
    }

    #[test]
    fn parse_as_str_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Status::parse("Draft"), None);
        assert_eq!(Status::parse(""), None);
    }

    #[test]
    fn terminal_and_editable() {
        let terminal: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, vec![Completed, Cancelled, Archived]);
        let editable: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| s.is_editable())
            .collect();
        assert_eq!(editable, vec![Draft, Scheduled]);
        // Terminal states can at most be archived.
        for status in terminal {
            assert!(allowed_actions(status).iter().all(|a| *a == Archive));
        }
    }
}

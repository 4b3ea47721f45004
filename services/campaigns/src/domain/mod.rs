//! Pure domain logic of the campaigns service.
//!
//! Nothing in this module performs I/O: every function is deterministic given
//! its inputs (the current time is always passed in explicitly).
//!
//! * [`state`]: the campaign lifecycle state machine.
//! * [`template`]: validation and rendering of channel content (minijinja).
//! * [`schedule`]: DST-aware resolution of send times in IANA time zones.
//! * [`input`]: validation of campaign fields and A/B variant assignment.

pub mod catalog;
pub mod input;
pub mod schedule;
pub mod state;
/// Channel content templates live in `cos-templating` (publishing renders with the same code).
pub use cos_templating::template;

pub use cos_templating::FieldViolation;

//! Pure types and rules (no I/O): the attribute and consent vocabulary, contact input
//! validation, CSV import parsing, and the criteria language with its SQL compiler and
//! in-memory evaluator.

pub mod attributes;
pub mod contact;
pub mod criteria;
pub mod import;
pub mod state;

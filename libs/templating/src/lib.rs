//! Message templates of Campaign OS.
//!
//! Campaigns validates content with [`template::Renderer::validate`] when it is saved and
//! renders previews; publishing renders each recipient's message with the same code, so what a
//! marketer previews is what is sent.

pub mod template;

use std::fmt;

/// A validation problem with one input field.
///
/// `field` is the dotted path of the offending field as the API client sees it
/// (for example `"content.email.subject"` or `"variants[1].weight"`), and
/// `description` is a human-readable explanation that does not repeat the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field, e.g. `"budget.currency"`.
    pub field: String,
    /// What is wrong with the field, phrased for the end user.
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation for `field` with the given `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl std::error::Error for FieldViolation {}

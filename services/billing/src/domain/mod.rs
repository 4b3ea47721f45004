//! Billing's rules, free of I/O: plans and prices, subscription periods and their status over
//! time, what a purchase or an override does to a subscription, usage cycles, and the checks a
//! Checkout session must pass before it may extend anything.

pub mod checkout;
pub mod input;
pub mod plan;
pub mod subscription;

pub use checkout::{
    CheckoutRecord, CheckoutState, PaymentState, Refusal, SessionState, verify_paid,
};
pub use plan::{CHANNELS, Plan};
pub use subscription::{
    BaseStatus, Override, Purchase, PurchaseAction, Subscription, add_months, usage_cycle,
};

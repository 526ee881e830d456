//! What the crate tells: security events to the logs (and alerts on many invalid tokens), and
//! changes of a user's picture to their open browser streams.

mod alerts;
mod hub;
pub(crate) mod security;
pub(crate) mod stream;

pub(crate) use self::{
    alerts::TokenAlerts,
    hub::{Hub, StreamLimits, Subscription, Wake},
};

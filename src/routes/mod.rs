//! Ready-made routes, each a `Router` to nest under a path of the app's choosing.

mod account;
mod forward_auth;
mod token;

pub use self::{account::account_routes, forward_auth::forward_auth_routes, token::token_routes};

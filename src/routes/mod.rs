//! Ready-made routes, each a `Router` to nest under a path of the app's choosing.

mod account;
mod token;

pub use self::{account::account_routes, token::token_routes};

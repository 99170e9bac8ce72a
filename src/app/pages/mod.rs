pub mod login;
pub mod triggers;

pub mod deadletters;
pub mod login;
pub mod logs;
pub mod triggers;
pub mod settings;

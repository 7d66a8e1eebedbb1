//! AWS adapters around the pure delivery machine.
pub mod classify;
pub mod clients;
pub mod sdk_error;
pub mod ssm;
pub mod swf;

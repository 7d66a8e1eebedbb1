//! AWS adapters around the pure delivery machine: error classification, SDK clients per
//! region, and one [`target::SignalTarget`] per kind of signal (SWF, SSM).
pub mod adaptive_rate;
pub mod assume_role;
pub mod circuit;
pub mod classify;
pub mod clients;
pub mod fair;
pub mod principal;
pub mod sdk_error;
pub mod ssm;
pub mod swf;
pub mod target;

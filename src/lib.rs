#![forbid(unsafe_code)]
pub mod api;
pub mod aws;
pub mod cli;
pub mod controller;
pub mod delivery;
pub mod failpoint;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod requester;
pub mod server;

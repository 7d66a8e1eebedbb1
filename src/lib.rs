pub mod api;
pub mod aws;
pub mod controller;
pub mod delivery;
pub mod leader;
pub mod metrics;
pub mod server;

pub mod api;
pub mod aws;
pub mod controller;
pub mod delivery;

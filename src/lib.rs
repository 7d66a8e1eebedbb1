pub mod api;
pub mod aws;
pub mod delivery;
pub mod controller;

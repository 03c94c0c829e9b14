//! Helpers shared by the end-to-end tests. Each concern has its own module.
pub mod bins;
pub mod bundle;
pub mod cni;
pub mod daemon;
pub mod fixtures;
pub mod images;
pub mod registry;
pub mod token_server;

//! Subcommands whose work is more than a few lines, one module each.
pub mod config;
pub mod daemon;
pub mod detach;
pub mod diff;
pub mod explain;
pub mod replay;
pub mod top;

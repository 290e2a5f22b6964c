//! The daemon: one actor owns the datapath and applies every change in order.
//!
//! ```text
//!  control socket ─┐
//!  SIGHUP/SIGTERM ─┼─> mpsc<Event> ─> actor (this thread): Enforcer, policy, names, overrides
//!  rtnetlink links ┘                        │
//!                                           └─> maps, pinned links (bpffs)
//! ```
//!
//! The actor runs on the daemon's main thread and does the slow work (validation, compilation,
//! map writes, counter reads) there, off the tokio event loop, which only moves bytes and
//! signals (on its own thread). Stopping the daemon (SIGTERM, SIGINT) leaves the program, its
//! links and its maps pinned and enforcing: the next `enforcer run` adopts them, and only
//! `enforcer detach` removes them.

mod daemon;
mod start;

pub use daemon::Daemon;
pub use start::{Settings, load_policy, run};

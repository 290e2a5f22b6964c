//! The daemon: one actor owns the datapath and applies every change in order.
//!
//! ```text
//!  control socket ─┐                        ┌─ quick commands (one SIM): in place
//!  SIGHUP/SIGTERM ─┼─> actor (event loop) ──┤
//!  rtnetlink links ┘   Daemon: Enforcer,    └─ slow work (validate, compile, reload, link
//!                      policy, store          checks, listings): the Daemon handed to a
//!                                             blocking thread and back
//!                            │
//!                            └─> maps, pinned links (bpffs)
//! ```
//!
//! The actor is the main task of a tokio current-thread runtime on the daemon's main thread.
//! A one-SIM change (bind, quarantine…) is handled where it arrives, with no hand-over between
//! threads; anything that may take long at 1M SIMs moves the whole [`Daemon`] to a blocking
//! thread and waits for it, so the socket, signals and timers stay served meanwhile, and one
//! thread at a time owns the datapath.
//!
//! Stopping the daemon (SIGTERM, SIGINT) leaves the program, its links and its maps pinned and
//! enforcing: the next `enforcer run` adopts them, and only `enforcer detach` removes them.

mod daemon;
mod start;

pub use daemon::Daemon;
pub use start::{Api, Export, Radius, Settings, load_policy, run};

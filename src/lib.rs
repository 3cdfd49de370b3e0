//! logferry: a host log-shipping agent.
//!
//! The modules follow the path an event takes (see `ARCHITECTURE.md` in the spec):
//! `inputs` → `processors` → `router` → `buffer` → `outputs` (over one `driver`), with
//! acknowledgements flowing back through `ack` to `positions`.

pub mod ack;
pub mod agent;
pub mod api;
pub mod backfill;
pub mod buffer;
pub mod cli;
pub mod config;
pub mod docs;
pub mod event;
pub mod inputs;
pub mod outputs;
pub mod positions;
pub mod processors;
pub mod router;
pub mod util;

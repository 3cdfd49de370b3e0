//! The integration test binary: runs the real `logferry` against temp dirs and real or
//! protocol-faithful peers. One binary (link time), one module per area.

mod util;

mod backfill;
mod cli;
mod docker;
mod file_input;
mod kubernetes;

//! The integration test binary: runs the real `logferry` against temp dirs and real or
//! protocol-faithful peers. One binary (link time), one module per area.

mod util;

mod cli;
mod elasticsearch;
mod es_server;
mod file_input;

//! The integration test binary: runs the real `logferry` against temp dirs and real or
//! protocol-faithful peers. One binary (link time), one module per area.

mod util;

mod backfill;
mod cli;
mod cloudwatch;
mod disk_buffer;
mod docker;
mod elasticsearch;
mod es_server;
mod file_input;
mod kubernetes;
mod logstash;
mod loki;
mod loki_server;
mod lumberjack_server;
mod operations;
mod packaging;
mod pipeline;

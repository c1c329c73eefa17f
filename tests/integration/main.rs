//! Integration tests: one binary, against real programs (an OpenSSH sshd started per test).

mod support;
mod cli;
mod transport;

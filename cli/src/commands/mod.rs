//! One module per subcommand.

pub mod envs;
pub mod harness;
pub mod report;
pub mod run;

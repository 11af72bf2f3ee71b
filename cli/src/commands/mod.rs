//! One module per subcommand.

pub mod envs;
pub mod generate;
pub mod harness;
pub mod report;
pub mod run;

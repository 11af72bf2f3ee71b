//! One module per subcommand.

pub mod cluster;
pub mod coordinator;
pub mod envs;
pub mod evolve;
pub mod evolve_check;
pub mod gaia;
pub mod generate;
pub mod harness;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod train;
pub mod wiki;
pub mod worker;

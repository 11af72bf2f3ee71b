//! Clients for AgentGym's HTTP environment servers, for users who run them with the real data
//! (`--env agentgym:<name>@<url>`).

pub mod webshop;

//! Built-in processor kinds. Each module holds a typed config, the processor, and the plain
//! functions that do the work (tested without an episode).

use std::sync::Arc;

use crate::processor::ProcessorKind;

pub mod admissible_choice;
pub mod compact_prompt;
pub mod history_window;
pub mod loop_detection;
pub mod parse_retry;
pub mod script;
pub mod step_limit;
pub mod system_prompt;
pub mod tool_catalogue;
pub mod tool_parser;
pub mod trajectory_recorder;

/// Every built-in kind, for [`crate::ProcessorRegistry::with_builtins`].
pub fn kinds() -> Vec<Arc<dyn ProcessorKind>> {
    vec![
        Arc::new(system_prompt::kind()),
        Arc::new(history_window::kind()),
        Arc::new(tool_catalogue::kind()),
        Arc::new(tool_parser::kind()),
        Arc::new(parse_retry::kind()),
        Arc::new(step_limit::kind()),
        Arc::new(loop_detection::kind()),
        Arc::new(trajectory_recorder::kind()),
        Arc::new(compact_prompt::kind()),
        Arc::new(admissible_choice::kind()),
        Arc::new(script::kind()),
    ]
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Small fixtures for driving one processor through one event.

    use kiln_protocol::{EnvInfo, ModelSpec, TaskSpec, ToolSchema};
    use serde_json::json;

    pub fn task() -> TaskSpec {
        TaskSpec {
            schema: 1,
            run_id: "run".into(),
            env: "test-env".into(),
            split: "test".into(),
            task_id: "7".into(),
            attempt: 0,
            harness_hash: String::new(),
            model: ModelSpec::Oracle,
            env_options: serde_json::Value::Null,
            seed: 0,
            timeout_s: 0,
        }
    }

    pub fn tool(name: &str) -> ToolSchema {
        ToolSchema {
            name: name.into(),
            description: format!("Does {name}."),
            parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
        }
    }

    pub fn env_with_tools(names: &[&str]) -> EnvInfo {
        EnvInfo {
            env: "test-env".into(),
            instructions: "Follow the policy.".into(),
            tools: names.iter().map(|name| tool(name)).collect(),
            opening: Vec::new(),
            admissible_actions: None,
        }
    }
}

//! The Rhai engine behind script processors: hard limits, what a script may call, and the
//! per-episode facilities (seeded RNG, captured output).
//!
//! The engine starts from [`Engine::new_raw`] (no module resolver, no file access, `print` and
//! `debug` go nowhere) and registers only pure packages: arithmetic, strings, iterators, function
//! pointers, logic, maths, arrays and maps. Left out on purpose: the time package (`timestamp`),
//! the language-core package (`sleep`, `exit`), blobs and anything with I/O. `eval` and `import`
//! are disabled symbols, so a script using them does not compile.

use std::sync::{Arc, Mutex, OnceLock};

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FLOAT, INT, Module, Shared};

type SharedModule = Shared<Module>;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::processor::ConfigError;

/// Stack of the thread a script runs on. Rhai recurses on the native stack (call depth,
/// expression depth), so scripts never run on a small async worker stack: a stack overflow would
/// abort the process instead of failing the script.
pub const SCRIPT_STACK_BYTES: usize = 64 << 20;

/// Lines of `print`/`debug` output kept per hook call; the rest are counted, not kept.
pub const MAX_OUTPUT_LINES: usize = 32;
/// Characters kept of one output line.
pub const MAX_OUTPUT_LINE_CHARS: usize = 500;
/// Variables in scope at once (not configurable: a bound on memory, not a tuning knob).
pub const MAX_VARIABLES: usize = 512;
/// Functions one script may define.
pub const MAX_FUNCTIONS: usize = 256;

/// Keyword functions the evaluator implements itself; they take any number of arguments.
pub const KEYWORD_FUNCTIONS: [&str; 9] = [
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
];

/// Names that exist in Rhai but are not available to scripts, with the reason a script author
/// is told.
pub const FORBIDDEN_FUNCTIONS: [(&str, &str); 6] = [
    ("eval", "`eval` is not available to scripts"),
    ("sleep", "scripts have no clock: `sleep` is not available"),
    (
        "timestamp",
        "scripts have no clock: `timestamp` is not available",
    ),
    (
        "exit",
        "`exit` is not available to scripts; throw an error or set `event.stop`",
    ),
    ("import", "scripts cannot import modules"),
    ("parse_json", "`parse_json` is not available to scripts"),
];

/// Hard limits of one hook call. Every field can be lowered or raised in a harness file (`limits`
/// in the processor's config) within [`ScriptLimits::HARD`].
///
/// Size limits are Rhai's: they bound one value *with everything nested in it* (the total bytes
/// of its strings, the total elements of its arrays, the total entries of its maps), and apply to
/// event fields the script reads as well as to values it builds, including `this`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptLimits {
    /// Rhai operations per hook call (a bound on CPU time).
    pub max_operations: u64,
    /// Nested function calls.
    pub max_call_depth: usize,
    /// Nesting of expressions, checked when the script compiles.
    pub max_expr_depth: usize,
    /// Total bytes of the strings in one value.
    pub max_string_bytes: usize,
    /// Total elements of the arrays in one value.
    pub max_array_len: usize,
    /// Total entries of the maps in one value.
    pub max_map_len: usize,
}

impl ScriptLimits {
    pub const DEFAULT: ScriptLimits = ScriptLimits {
        max_operations: 100_000,
        max_call_depth: 16,
        max_expr_depth: 32,
        max_string_bytes: 1 << 20,
        max_array_len: 10_000,
        max_map_len: 10_000,
    };

    /// The most a harness file may ask for.
    pub const HARD: ScriptLimits = ScriptLimits {
        max_operations: 5_000_000,
        max_call_depth: 48,
        max_expr_depth: 64,
        max_string_bytes: 16 << 20,
        max_array_len: 200_000,
        max_map_len: 200_000,
    };

    /// Every limit is at least 1 and at most its hard maximum.
    pub fn check(&self) -> Result<(), ConfigError> {
        let hard = Self::HARD;
        let fields: [(&str, u64, u64); 6] = [
            ("max_operations", self.max_operations, hard.max_operations),
            (
                "max_call_depth",
                self.max_call_depth as u64,
                hard.max_call_depth as u64,
            ),
            (
                "max_expr_depth",
                self.max_expr_depth as u64,
                hard.max_expr_depth as u64,
            ),
            (
                "max_string_bytes",
                self.max_string_bytes as u64,
                hard.max_string_bytes as u64,
            ),
            (
                "max_array_len",
                self.max_array_len as u64,
                hard.max_array_len as u64,
            ),
            (
                "max_map_len",
                self.max_map_len as u64,
                hard.max_map_len as u64,
            ),
        ];
        for (field, value, max) in fields {
            if value == 0 || value > max {
                return Err(ConfigError::new(
                    format!("limits.{field}"),
                    format!("must be between 1 and {max} (the hard maximum), found {value}"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// SplitMix64 ([`kiln_protocol::rng::splitmix64`]): small and stable across crate versions, so a
/// script's random choices replay
/// exactly from the episode's seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        kiln_protocol::rng::splitmix64(&mut self.0)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The seed of a script's RNG in one episode: the episode seed, environment, task and attempt,
/// so a rerun of the same episode draws the same numbers and another episode draws others.
pub fn episode_seed(seed: u64, env: &str, task_id: &str, attempt: u32) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"kiln-script-rng\0");
    hasher.update(seed.to_le_bytes());
    hasher.update(env.as_bytes());
    hasher.update([0]);
    hasher.update(task_id.as_bytes());
    hasher.update([0]);
    hasher.update(attempt.to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("a sha256 digest has 8 bytes"))
}

/// `print`/`debug` lines of one hook call.
#[derive(Debug, Default)]
pub struct Output {
    pub lines: Vec<String>,
    pub dropped: usize,
}

impl Output {
    fn push(&mut self, line: String) {
        if self.lines.len() >= MAX_OUTPUT_LINES {
            self.dropped += 1;
            return;
        }
        let kept: String = line.chars().take(MAX_OUTPUT_LINE_CHARS).collect();
        self.lines.push(kept);
    }
}

/// What one episode's engine shares with its processor: the RNG and the captured output.
#[derive(Debug, Clone)]
pub struct EpisodeIo {
    pub rng: Arc<Mutex<Rng>>,
    pub output: Arc<Mutex<Output>>,
}

impl EpisodeIo {
    pub fn new() -> Self {
        Self {
            rng: Arc::new(Mutex::new(Rng::new(0))),
            output: Arc::new(Mutex::new(Output::default())),
        }
    }

    pub fn reseed(&self, seed: u64) {
        *lock(&self.rng) = Rng::new(seed);
    }

    /// The output captured since the last call.
    pub fn take_output(&self) -> Output {
        std::mem::take(&mut *lock(&self.output))
    }
}

impl Default for EpisodeIo {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks a mutex, recovering the data if a panicking script thread poisoned it (the data is a
/// counter or a buffer: always valid).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn packages() -> &'static [SharedModule] {
    static PACKAGES: OnceLock<Vec<SharedModule>> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        vec![
            ArithmeticPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ]
    })
}

/// An engine with `limits`, the script API and `io` for the RNG and output.
pub fn build_engine(limits: &ScriptLimits, io: &EpisodeIo) -> Engine {
    let mut engine = Engine::new_raw();
    for package in packages() {
        engine.register_global_module(package.clone());
    }
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_bytes)
        .set_max_array_size(limits.max_array_len)
        .set_max_map_size(limits.max_map_len)
        .set_max_variables(MAX_VARIABLES)
        .set_max_functions(MAX_FUNCTIONS)
        .set_max_modules(0)
        .set_strict_variables(true);
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.disable_symbol("export");

    let output = io.output.clone();
    engine.on_print(move |text| lock(&output).push(text.to_string()));
    let output = io.output.clone();
    engine.on_debug(move |text, _source, position| {
        let line = match position.line() {
            Some(line) => format!("[debug line {line}] {text}"),
            None => format!("[debug] {text}"),
        };
        lock(&output).push(line);
    });

    register_rng(&mut engine, &io.rng);
    super::event::register(&mut engine);
    // Overrides of package functions a script must not reach even through a function pointer.
    for (name, reason) in FORBIDDEN_FUNCTIONS {
        let reason = reason.to_string();
        engine.register_fn(name, move || -> Result<(), Box<EvalAltResult>> {
            Err(reason.clone().into())
        });
    }
    engine
}

fn register_rng(engine: &mut Engine, rng: &Arc<Mutex<Rng>>) {
    let shared = rng.clone();
    engine.register_fn(
        "rand_int",
        move |low: INT, high: INT| -> Result<INT, Box<EvalAltResult>> {
            if low > high {
                return Err(format!("rand_int({low}, {high}): low is above high").into());
            }
            let span = (high as i128 - low as i128 + 1) as u128;
            let mut rng = lock(&shared);
            let offset = if span > u128::from(u64::MAX) {
                rng.next_u64() as u128
            } else {
                u128::from(rng.below(span as u64))
            };
            Ok((low as i128 + offset as i128) as INT)
        },
    );
    let shared = rng.clone();
    engine.register_fn("rand_float", move || -> FLOAT { lock(&shared).unit() });
    let shared = rng.clone();
    engine.register_fn("rand_bool", move || -> bool { lock(&shared).unit() < 0.5 });
    let shared = rng.clone();
    engine.register_fn("rand_bool", move |probability: FLOAT| -> bool {
        lock(&shared).unit() < probability
    });
    let shared = rng.clone();
    engine.register_fn("rand_pick", move |items: &mut Array| -> Dynamic {
        if items.is_empty() {
            return Dynamic::UNIT;
        }
        let index = lock(&shared).below(items.len() as u64) as usize;
        items[index].clone()
    });
    let shared = rng.clone();
    engine.register_fn("rand_shuffle", move |items: &mut Array| {
        let mut rng = lock(&shared);
        for index in (1..items.len()).rev() {
            let other = rng.below(index as u64 + 1) as usize;
            items.swap(index, other);
        }
    });
}

/// Functions a script may call, as (name, number of parameters), keyword functions aside.
pub fn provided_functions() -> &'static std::collections::BTreeSet<(String, usize)> {
    static PROVIDED: OnceLock<std::collections::BTreeSet<(String, usize)>> = OnceLock::new();
    PROVIDED.get_or_init(|| {
        let engine = build_engine(&ScriptLimits::DEFAULT, &EpisodeIo::new());
        let forbidden: Vec<&str> = FORBIDDEN_FUNCTIONS.iter().map(|(name, _)| *name).collect();
        engine
            .collect_fn_metadata(
                None,
                |info| Some((info.metadata.name.to_string(), info.metadata.num_params)),
                true,
            )
            .into_iter()
            .filter(|(name, _)| !forbidden.contains(&name.as_str()))
            .collect()
    })
}

/// Why `name` may not be called, when it is one of [`FORBIDDEN_FUNCTIONS`].
pub fn forbidden_reason(name: &str) -> Option<&'static str> {
    FORBIDDEN_FUNCTIONS
        .iter()
        .find(|(forbidden, _)| *forbidden == name)
        .map(|(_, reason)| *reason)
}

/// Runs `work` on a thread with a [`SCRIPT_STACK_BYTES`] stack and waits for it. A panic in
/// the script engine comes back as an error instead of unwinding into the episode.
pub fn on_script_stack<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("kiln-script".into())
            .stack_size(SCRIPT_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|error| format!("cannot start the script thread: {error}"))?;
        handle.join().map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            format!("the script engine panicked: {message}")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_their_range_name_the_field() {
        let mut limits = ScriptLimits::DEFAULT;
        limits.max_operations = 0;
        let error = limits.check().unwrap_err();
        assert_eq!(error.field, "limits.max_operations");
        limits.max_operations = ScriptLimits::HARD.max_operations + 1;
        assert!(limits.check().unwrap_err().message.contains("hard maximum"));
        let mut limits = ScriptLimits::DEFAULT;
        limits.max_call_depth = ScriptLimits::HARD.max_call_depth + 1;
        assert_eq!(limits.check().unwrap_err().field, "limits.max_call_depth");
        assert!(ScriptLimits::DEFAULT.check().is_ok());
        assert!(ScriptLimits::HARD.check().is_ok());
    }

    #[test]
    fn the_rng_is_reproducible_and_seed_dependent() {
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..8).map(|_| rng.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let unit = Rng::new(3).unit();
        assert!((0.0..1.0).contains(&unit));
    }

    #[test]
    fn episode_seeds_differ_by_every_input() {
        let base = episode_seed(1, "alfworld", "12", 0);
        assert_eq!(base, episode_seed(1, "alfworld", "12", 0));
        assert_ne!(base, episode_seed(2, "alfworld", "12", 0));
        assert_ne!(base, episode_seed(1, "webshop", "12", 0));
        assert_ne!(base, episode_seed(1, "alfworld", "13", 0));
        assert_ne!(base, episode_seed(1, "alfworld", "12", 1));
    }

    #[test]
    fn output_keeps_a_bounded_number_of_lines() {
        let mut output = Output::default();
        for index in 0..MAX_OUTPUT_LINES + 5 {
            output.push(format!("{index} {}", "x".repeat(MAX_OUTPUT_LINE_CHARS)));
        }
        assert_eq!(output.lines.len(), MAX_OUTPUT_LINES);
        assert_eq!(output.dropped, 5);
        assert!(
            output
                .lines
                .iter()
                .all(|line| line.chars().count() <= MAX_OUTPUT_LINE_CHARS)
        );
    }

    #[test]
    fn the_provided_functions_exclude_clock_io_and_eval() {
        let provided = provided_functions();
        let names: std::collections::BTreeSet<&str> =
            provided.iter().map(|(name, _)| name.as_str()).collect();
        for present in ["len", "push", "contains", "rand_int", "to_upper", "keys"] {
            assert!(names.contains(present), "{present} is missing");
        }
        for absent in ["sleep", "timestamp", "eval", "exit", "parse_json", "open"] {
            assert!(!names.contains(absent), "{absent} is provided");
        }
    }
}

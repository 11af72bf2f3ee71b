//! Compiling a script and checking it before it runs: syntax (with line and column), only `fn`
//! definitions at the top level, one parameter for each hook function, and no call to a
//! function that neither the script nor the script API provides.
//!
//! The checks walk Rhai's AST (`AST::walk`, which needs Rhai's `internals` feature), so they see
//! exactly what the parser saw: calls in strings or comments do not count, and every call has its
//! position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use kiln_protocol::Hook;
use regex::Regex;
use rhai::{AST, ASTNode, Engine, Expr, FnCallExpr, Position, Stmt};
use sha2::{Digest, Sha256};

use super::engine::{
    EpisodeIo, KEYWORD_FUNCTIONS, ScriptLimits, build_engine, forbidden_reason, lock,
    on_script_stack, provided_functions,
};
use crate::error::Location;

/// Why a script was rejected before running, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    kind: ScriptErrorKind,
    message: String,
    location: Option<Location>,
}

/// What a [`ScriptError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptErrorKind {
    /// The text does not parse (includes `eval`, `import` and expressions nested too deeply).
    Syntax,
    /// A statement outside any function: it would never run.
    TopLevel,
    /// A hook function does not take exactly one parameter.
    HookSignature,
    /// A call to a function that is forbidden or that nothing provides.
    UnknownFunction,
    /// The compiler could not run (thread start failure, engine panic).
    Internal,
}

impl ScriptError {
    fn new(kind: ScriptErrorKind, message: impl Into<String>, location: Option<Location>) -> Self {
        Self {
            kind,
            message: message.into(),
            location,
        }
    }

    pub fn kind(&self) -> ScriptErrorKind {
        self.kind
    }

    /// The message without position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 1-based line and column in the script, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

/// A script that compiled and passed the checks.
#[derive(Debug)]
pub struct Program {
    pub ast: AST,
    /// Hooks the script defines a function for.
    pub hooks: BTreeSet<Hook>,
}

/// The location of a Rhai position.
pub fn location(position: Position) -> Option<Location> {
    Some(Location {
        line: position.line()?,
        column: position.position().unwrap_or(1),
    })
}

/// Compiles `source` under `limits` and checks it; cached by source and limits, so every
/// episode of a run shares one compiled program.
pub fn compile(source: &str, limits: &ScriptLimits) -> Result<Arc<Program>, ScriptError> {
    static CACHE: OnceLock<Mutex<BTreeMap<[u8; 32], Arc<Program>>>> = OnceLock::new();
    /// Distinct scripts kept; an evolution run tries a few per round.
    const CACHE_ENTRIES: usize = 256;
    let key: [u8; 32] = Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update(serde_json::to_vec(limits).unwrap_or_default())
        .finalize()
        .into();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(program) = lock(cache).get(&key) {
        return Ok(program.clone());
    }
    let program = Arc::new(compile_uncached(source, limits)?);
    let mut cache = lock(cache);
    if cache.len() >= CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(key, program.clone());
    Ok(program)
}

fn compile_uncached(source: &str, limits: &ScriptLimits) -> Result<Program, ScriptError> {
    let engine = build_engine(limits, &EpisodeIo::new());
    let ast = parse(&engine, source)?;
    check_top_level(&ast)?;
    let hooks = hook_functions(&ast, source)?;
    check_calls(&ast)?;
    Ok(Program { ast, hooks })
}

/// Parses on the script stack (the parser recurses up to the expression depth limit).
fn parse(engine: &Engine, source: &str) -> Result<AST, ScriptError> {
    on_script_stack(|| engine.compile(source))
        .map_err(|error| ScriptError::new(ScriptErrorKind::Internal, error, None))?
        .map_err(|error| {
            let message = error.err_type().to_string();
            ScriptError::new(ScriptErrorKind::Syntax, message, location(error.position()))
        })
}

fn check_top_level(ast: &AST) -> Result<(), ScriptError> {
    let Some(statement) = ast.statements().first() else {
        return Ok(());
    };
    Err(ScriptError::new(
        ScriptErrorKind::TopLevel,
        "a script holds only `fn` definitions; this statement outside a function would never \
         run (keep per-episode state in `this`, constants inside functions)",
        location(statement.position()),
    ))
}

/// The hooks the script has a function for; each must take one parameter.
fn hook_functions(ast: &AST, source: &str) -> Result<BTreeSet<Hook>, ScriptError> {
    let mut hooks = BTreeSet::new();
    for function in ast.iter_functions() {
        let Some(hook) = Hook::ALL.iter().find(|hook| hook.as_str() == function.name) else {
            continue;
        };
        if function.params.len() != 1 {
            return Err(ScriptError::new(
                ScriptErrorKind::HookSignature,
                format!(
                    "`fn {}` must take one parameter (the event), found {}",
                    function.name,
                    function.params.len()
                ),
                definition_location(source, function.name),
            ));
        }
        hooks.insert(*hook);
    }
    Ok(hooks)
}

/// Where `fn name` is defined (Rhai's function metadata carries no position).
fn definition_location(source: &str, name: &str) -> Option<Location> {
    let pattern = Regex::new(&format!(r"\bfn\s+{}\b", regex::escape(name))).ok()?;
    let found = pattern.find(source)?;
    let before = &source[..found.start()];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    Some(Location {
        line,
        column: before[line_start..].chars().count() + 1,
    })
}

/// One call site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: String,
    arguments: usize,
    method: bool,
    position: Position,
}

/// Every named call in the AST (operators left out), in source order.
fn calls(ast: &AST) -> Vec<Call> {
    let mut calls = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(node) = path.last() else {
            return true;
        };
        let (call, position, method): (&FnCallExpr, Position, bool) = match node {
            ASTNode::Expr(Expr::FnCall(call, position))
            | ASTNode::Stmt(Stmt::FnCall(call, position)) => (call, *position, false),
            ASTNode::Expr(Expr::MethodCall(call, position)) => (call, *position, true),
            _ => return true,
        };
        if call.op_token.is_some() || !is_identifier(&call.name) {
            return true;
        }
        calls.push(Call {
            name: call.name.to_string(),
            arguments: call.args.len(),
            method,
            position,
        });
        true
    });
    calls.sort_by_key(|call| {
        (
            call.position.line().unwrap_or(0),
            call.position.position().unwrap_or(0),
        )
    });
    calls
}

fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|first| first.is_alphabetic() || first == '_')
}

/// Every call must reach a function the script defines or the API provides, with that number
/// of arguments (a method call passes its object as the first).
fn check_calls(ast: &AST) -> Result<(), ScriptError> {
    let defined: BTreeSet<(String, usize)> = ast
        .iter_functions()
        .map(|function| (function.name.to_string(), function.params.len()))
        .collect();
    let provided = provided_functions();
    for call in calls(ast) {
        if let Some(reason) = forbidden_reason(&call.name) {
            return Err(ScriptError::new(
                ScriptErrorKind::UnknownFunction,
                reason,
                location(call.position),
            ));
        }
        if KEYWORD_FUNCTIONS.contains(&call.name.as_str()) {
            continue;
        }
        let arities: &[usize] = if call.method {
            &[call.arguments + 1, call.arguments]
        } else {
            &[call.arguments]
        };
        let known = arities.iter().any(|&arity| {
            let key = (call.name.clone(), arity);
            defined.contains(&key) || provided.contains(&key)
        });
        if !known {
            let arguments = arities[0];
            return Err(ScriptError::new(
                ScriptErrorKind::UnknownFunction,
                format!(
                    "no function `{}` with {arguments} argument{} is defined in the script or \
                     available to scripts (scripts have no file, network, clock or module access)",
                    call.name,
                    if arguments == 1 { "" } else { "s" }
                ),
                location(call.position),
            ));
        }
    }
    Ok(())
}

/// What a script touches, for static review (the AEGIS critic): the names of the functions it
/// calls and the properties it reads or writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptSurface {
    /// Every function called by name, including method calls and the targets of `Fn("name")`
    /// literals; operators are not listed.
    pub functions: BTreeSet<String>,
    /// Every property accessed with `.name` or `["literal"]` (e.g. `sampling`, `max_tokens`).
    pub properties: BTreeSet<String>,
}

/// Lists what `source` calls and accesses by walking Rhai's AST (not a token scan: names in
/// strings and comments do not count, except `Fn("name")` targets). The script only has to
/// parse; unknown functions are listed, not rejected.
pub fn script_surface(source: &str) -> Result<ScriptSurface, ScriptError> {
    let engine = build_engine(&ScriptLimits::HARD, &EpisodeIo::new());
    let ast = parse(&engine, source)?;
    let mut surface = ScriptSurface::default();
    for call in calls(&ast) {
        surface.functions.insert(call.name);
    }
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::Property(property, _))) => {
                surface.properties.insert(property.2.to_string());
            }
            Some(ASTNode::Expr(Expr::Index(binary, ..))) => {
                if let Expr::StringConstant(key, _) = &binary.rhs {
                    surface.properties.insert(key.to_string());
                }
            }
            Some(ASTNode::Expr(Expr::FnCall(call, _))) if call.name == "Fn" => {
                if let Some(Expr::StringConstant(target, _)) = call.args.first() {
                    surface.functions.insert(target.to_string());
                }
            }
            // The parser folds `Fn("literal")` into a constant function pointer.
            Some(ASTNode::Expr(Expr::DynamicConstant(value, _))) => {
                if let Some(pointer) = value.read_lock::<rhai::FnPtr>() {
                    surface.functions.insert(pointer.fn_name().to_string());
                }
            }
            _ => {}
        }
        true
    });
    Ok(surface)
}

/// The names of the functions `source` calls (see [`script_surface`]).
pub fn called_functions(source: &str) -> Result<BTreeSet<String>, ScriptError> {
    Ok(script_surface(source)?.functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_error(source: &str) -> ScriptError {
        compile(source, &ScriptLimits::DEFAULT).unwrap_err()
    }

    #[test]
    fn hooks_are_the_functions_named_after_them() {
        let program = compile(
            "fn helper(x) { x + 1 }\nfn after_model(event) { helper(1); }\nfn step_end(e) {}",
            &ScriptLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(
            program.hooks,
            BTreeSet::from([Hook::AfterModel, Hook::StepEnd])
        );
    }

    #[test]
    fn a_syntax_error_has_line_and_column() {
        let error = compile_error("fn after_model(event) {\n    let x = ;\n}");
        assert_eq!(error.kind(), ScriptErrorKind::Syntax);
        assert_eq!(
            error.location(),
            Some(Location {
                line: 2,
                column: 13
            })
        );
    }

    #[test]
    fn eval_import_and_top_level_statements_do_not_compile() {
        let error = compile_error("fn step_end(event) { eval(\"1\") }");
        assert_eq!(error.kind(), ScriptErrorKind::Syntax, "{error}");
        let error = compile_error("import \"fs\" as fs;\nfn step_end(event) {}");
        assert_eq!(error.kind(), ScriptErrorKind::Syntax, "{error}");
        let error = compile_error("fn step_end(event) {}\nlet x = 1;");
        assert_eq!(error.kind(), ScriptErrorKind::TopLevel);
        assert_eq!(error.location().map(|l| l.line), Some(2));
    }

    #[test]
    fn unknown_and_forbidden_functions_are_named_with_their_position() {
        let error =
            compile_error("fn step_end(event) {\n  let text = read_file(\"/etc/passwd\");\n}");
        assert_eq!(error.kind(), ScriptErrorKind::UnknownFunction);
        assert!(error.message().contains("`read_file`"), "{error}");
        assert_eq!(error.location().map(|l| l.line), Some(2));
        let error = compile_error("fn step_end(event) { sleep(1); }");
        assert!(error.message().contains("no clock"), "{error}");
        let error = compile_error("fn step_end(event) { timestamp(); }");
        assert!(error.message().contains("no clock"), "{error}");
        // The right name with the wrong number of arguments is unknown too.
        let error = compile_error("fn step_end(event) { rand_int(1); }");
        assert!(
            error.message().contains("`rand_int` with 1 argument"),
            "{error}"
        );
    }

    #[test]
    fn the_standard_library_and_script_functions_pass() {
        let source = r#"
            fn count(items, wanted) { items.filter(|x| x == wanted).len() }
            fn step_end(event) {
                let seen = this.seen ?? [];
                let text = `step ${event.step}`;
                seen.push(text.to_upper());
                if seen.len() > 3 && seen.contains("STEP 1") { seen.remove(0); }
                let m = #{a: 1};
                for key in m.keys() { print(key); }
                let n = count(seen, "x") + rand_int(1, 6) + abs(-2) + max(1, 2);
                let s = "a,b".split(",").map(|x| x.trim()).reduce(|a, b| a + b, "");
                this.seen = seen;
                event.note(#{n: n, s: s, t: type_of(n), r: 0..3});
                debug(s.sub_string(0, 1) + sub_string(s, 1));
            }
        "#;
        compile(source, &ScriptLimits::DEFAULT).unwrap();
    }

    #[test]
    fn a_hook_function_takes_one_parameter() {
        let error = compile_error("fn helper() {}\n\nfn after_tool(event, extra) {}");
        assert_eq!(error.kind(), ScriptErrorKind::HookSignature);
        assert_eq!(error.location(), Some(Location { line: 3, column: 1 }));
    }

    #[test]
    fn expressions_nested_past_the_limit_do_not_compile() {
        let mut limits = ScriptLimits::DEFAULT;
        limits.max_expr_depth = 4;
        let nested = format!(
            "fn step_end(event) {{ let x = {}1{}; }}",
            "(".repeat(6),
            ")".repeat(6)
        );
        let error = compile(&nested, &limits).unwrap_err();
        assert_eq!(error.kind(), ScriptErrorKind::Syntax, "{error}");
        assert!(compile(&nested, &ScriptLimits::DEFAULT).is_ok());
    }

    #[test]
    fn the_surface_lists_calls_and_properties_from_the_ast() {
        let source = r#"
            // read_gold() in a comment does not count
            fn after_model(event) {
                let t = "open_file() in a string does not count";
                event.sampling.max_tokens = helper(event["prompt"]);
                let f = Fn("read_gold");
                event.note(t.len());
            }
            fn helper(x) { x.len() }
        "#;
        let surface = script_surface(source).unwrap();
        assert_eq!(
            surface.functions,
            BTreeSet::from(["helper", "len", "note", "read_gold"].map(String::from))
        );
        for property in ["sampling", "max_tokens", "prompt"] {
            assert!(surface.properties.contains(property), "{surface:?}");
        }
        assert!(!surface.functions.contains("open_file"));
        assert_eq!(
            called_functions("fn step_end(e) { undefined_fn(1) }").unwrap(),
            BTreeSet::from(["undefined_fn".to_string()])
        );
    }
}

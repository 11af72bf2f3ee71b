//! `kiln envs`: what can be run, and whether its data is installed.

use std::fmt::Write as _;
use std::path::Path;

use kiln_environments::{EnvContext, EnvironmentFactory, catalog, default_data_dir};

pub fn envs() -> anyhow::Result<()> {
    let data_dir = default_data_dir();
    let context = EnvContext {
        data_dir: data_dir.clone(),
        ..EnvContext::default()
    };
    let factories = catalog::factories(&context);
    print!("{}", render(&data_dir, &factories));
    Ok(())
}

/// One row per environment: id, whether data is installed, splits with task counts, description.
fn render(data_dir: &Path, factories: &[std::sync::Arc<dyn EnvironmentFactory>]) -> String {
    let rows: Vec<[String; 4]> = factories
        .iter()
        .map(|factory| {
            let splits = factory.splits();
            let installed = if splits.is_empty() {
                "missing (run ops/setup)"
            } else {
                "installed"
            };
            let listed: Vec<String> = splits
                .iter()
                .map(|split| format!("{} {}", split.name, split.tasks))
                .collect();
            [
                factory.id().to_string(),
                installed.to_string(),
                listed.join(", "),
                factory.description().to_string(),
            ]
        })
        .collect();
    let header = ["ENV", "DATA", "SPLITS (TASKS)", "DESCRIPTION"];
    let widths: Vec<usize> = (0..3)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "data directory: {}", data_dir.display());
    let mut line = |cells: [&str; 4]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    };
    line(header);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
    out
}

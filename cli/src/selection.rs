//! `--tasks`: which tasks of a split a run covers.

use std::collections::HashSet;
use std::str::FromStr;

/// A `--tasks` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSelection {
    /// Every task of the split.
    All,
    /// The first N tasks of the split, in benchmark order.
    First(usize),
    /// These task ids, in this order.
    Ids(Vec<String>),
}

impl FromStr for TaskSelection {
    type Err = String;

    /// `all`, a count (`5`), or ids separated by commas (`7,12`; `7,` for the single id 7).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.eq_ignore_ascii_case("all") {
            return Ok(TaskSelection::All);
        }
        if !text.contains(',') {
            return match text.parse::<usize>() {
                Ok(0) => Err("`--tasks 0`: expected at least one task".to_string()),
                Ok(count) => Ok(TaskSelection::First(count)),
                Err(_) => Err(format!(
                    "`--tasks {input}`: expected `all`, a count, or task ids separated by commas \
                     (a single id needs a trailing comma: `--tasks {text},`)"
                )),
            };
        }
        let ids: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(String::from)
            .collect();
        if ids.is_empty() {
            return Err(format!("`--tasks {input}`: no task ids given"));
        }
        let mut seen = HashSet::new();
        if let Some(repeated) = ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(format!(
                "`--tasks {input}`: task id `{repeated}` is given twice"
            ));
        }
        Ok(TaskSelection::Ids(ids))
    }
}

impl TaskSelection {
    /// How the selection is recorded in `run.toml`.
    pub fn label(&self) -> String {
        match self {
            TaskSelection::All => "all".to_string(),
            TaskSelection::First(count) => format!("first {count}"),
            TaskSelection::Ids(ids) => format!("{} listed ids", ids.len()),
        }
    }

    /// The task ids this selection picks from `available` (the split's ids in benchmark order).
    /// Errors name the offending input and what the split offers.
    pub fn resolve(
        &self,
        available: &[String],
        env: &str,
        split: &str,
    ) -> Result<Vec<String>, String> {
        match self {
            TaskSelection::All => Ok(available.to_vec()),
            TaskSelection::First(count) if *count > available.len() => Err(format!(
                "`--tasks {count}`: split `{split}` of `{env}` has only {} tasks",
                available.len()
            )),
            TaskSelection::First(count) => Ok(available[..*count].to_vec()),
            TaskSelection::Ids(ids) => {
                let known: HashSet<&str> = available.iter().map(String::as_str).collect();
                if let Some(unknown) = ids.iter().find(|id| !known.contains(id.as_str())) {
                    return Err(format!(
                        "unknown task id `{unknown}` in split `{split}` of `{env}`; its ids are {}",
                        preview(available)
                    ));
                }
                Ok(ids.clone())
            }
        }
    }
}

/// A short listing of ids: all of them when few, else the first and last few.
fn preview(ids: &[String]) -> String {
    const EDGE: usize = 5;
    if ids.len() <= 2 * EDGE {
        return ids.join(", ");
    }
    format!(
        "{}, …, {} ({} in all)",
        ids[..EDGE].join(", "),
        ids[ids.len() - EDGE..].join(", "),
        ids.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(count: usize) -> Vec<String> {
        (0..count).map(|id| id.to_string()).collect()
    }

    #[test]
    fn parses_all_counts_and_id_lists() {
        assert_eq!("all".parse(), Ok(TaskSelection::All));
        assert_eq!("5".parse(), Ok(TaskSelection::First(5)));
        assert_eq!("7,".parse(), Ok(TaskSelection::Ids(vec!["7".into()])));
        assert_eq!(
            " 3, 12 ,x".parse(),
            Ok(TaskSelection::Ids(vec![
                "3".into(),
                "12".into(),
                "x".into()
            ]))
        );
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        assert!(
            "0".parse::<TaskSelection>()
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            "abc"
                .parse::<TaskSelection>()
                .unwrap_err()
                .contains("`--tasks abc`")
        );
        assert!(
            ",".parse::<TaskSelection>()
                .unwrap_err()
                .contains("no task ids")
        );
        assert!(
            "1,2,1"
                .parse::<TaskSelection>()
                .unwrap_err()
                .contains("`1` is given twice")
        );
    }

    #[test]
    fn resolves_against_the_split() {
        let available = ids(20);
        assert_eq!(
            TaskSelection::All
                .resolve(&available, "e", "s")
                .unwrap()
                .len(),
            20
        );
        assert_eq!(
            TaskSelection::First(3)
                .resolve(&available, "e", "s")
                .unwrap(),
            ids(3)
        );
        let picked = TaskSelection::Ids(vec!["12".into(), "4".into()])
            .resolve(&available, "e", "s")
            .unwrap();
        assert_eq!(picked, vec!["12", "4"]);

        let error = TaskSelection::First(21)
            .resolve(&available, "tau2-airline", "test")
            .unwrap_err();
        assert!(error.contains("only 20 tasks"), "{error}");
        let error = TaskSelection::Ids(vec!["99".into()])
            .resolve(&available, "tau2-airline", "test")
            .unwrap_err();
        assert!(
            error.contains("unknown task id `99`") && error.contains("0, 1, 2, 3, 4, …"),
            "{error}"
        );
    }
}

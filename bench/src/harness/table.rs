//! The one table the suite prints: a row per figure, each a ratio against a baseline of the same run.

/// What a row's ratio is held to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The ratio must not exceed this.
    AtMost(f64),
    /// The ratio must reach at least this.
    AtLeast(f64),
    /// A condition the ratio alone does not express: its text and whether it held.
    Check { text: String, met: bool },
    /// Reported, not held to a target.
    Report,
}

impl Target {
    pub fn text(&self) -> String {
        match self {
            Target::AtMost(x) => format!("≤ {x}×"),
            Target::AtLeast(x) => format!("≥ {x}×"),
            Target::Check { text, .. } => text.clone(),
            Target::Report => "report".to_owned(),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario number of the issue, e.g. `"3"`.
    pub id: String,
    pub scenario: String,
    pub ours: String,
    pub baseline: String,
    /// Ours over the baseline.
    pub ratio: Option<f64>,
    pub target: Target,
    /// Whether the runs behind this row strayed by more than [`super::timing::NOISY`].
    pub noisy: bool,
}

impl Row {
    pub fn new(id: impl Into<String>, scenario: impl Into<String>) -> Row {
        Row {
            id: id.into(),
            scenario: scenario.into(),
            ours: String::new(),
            baseline: String::new(),
            ratio: None,
            target: Target::Report,
            noisy: false,
        }
    }

    pub fn figures(mut self, ours: impl Into<String>, baseline: impl Into<String>) -> Row {
        self.ours = ours.into();
        self.baseline = baseline.into();
        self
    }

    pub fn ratio(mut self, ratio: f64) -> Row {
        self.ratio = Some(ratio);
        self
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = target;
        self
    }

    pub fn noisy(mut self, noisy: bool) -> Row {
        self.noisy = noisy;
        self
    }

    /// `met`, `MISSED` or `report`; in a quick run, `n/a (quick)` for a row with a target: its
    /// small sizes and few repetitions say nothing about the target.
    pub fn verdict_in(&self, quick: bool) -> &'static str {
        if quick && self.target != Target::Report {
            return QUICK_VERDICT;
        }
        self.verdict()
    }

    /// `met`, `MISSED` or `report`.
    pub fn verdict(&self) -> &'static str {
        let met = match (&self.target, self.ratio) {
            (Target::Report, _) => return "report",
            (Target::Check { met, .. }, _) => *met,
            (Target::AtMost(x), Some(r)) => r <= *x,
            (Target::AtLeast(x), Some(r)) => r >= *x,
            (_, None) => false,
        };
        if met {
            "met"
        } else {
            "MISSED"
        }
    }
}

/// The result of a row with a target in a `--quick` run.
pub const QUICK_VERDICT: &str = "n/a (quick)";

/// The table as Markdown, ready to paste into `docs/PERFORMANCE.md`. A noisy row's result carries
/// `(noisy)`; in a `quick` run no row is held to its target (see [`Row::verdict_in`]).
pub fn render(rows: &[Row], quick: bool) -> String {
    let header = [
        "#", "scenario", "ours", "baseline", "ratio", "target", "result",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let verdict = if r.noisy {
                format!("{} (noisy)", r.verdict_in(quick))
            } else {
                r.verdict_in(quick).to_owned()
            };
            [
                r.id.clone(),
                r.scenario.clone(),
                r.ours.clone(),
                r.baseline.clone(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.target.text(),
                verdict,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |values: &[String]| {
        let padded: Vec<String> = values
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v}{}", " ".repeat(w - v.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header.map(str::to_owned));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let row = |ratio, target| Row::new("1", "x").ratio(ratio).target(target);
        assert_eq!(row(1.4, Target::AtMost(1.5)).verdict(), "met");
        assert_eq!(row(1.6, Target::AtMost(1.5)).verdict(), "MISSED");
        assert_eq!(row(0.9, Target::AtLeast(0.8)).verdict(), "met");
        assert_eq!(row(0.7, Target::AtLeast(0.8)).verdict(), "MISSED");
        assert_eq!(row(9.0, Target::Report).verdict(), "report");
        let check = Target::Check {
            text: "≤ 43 items".into(),
            met: false,
        };
        assert_eq!(row(1.0, check).verdict(), "MISSED");
        assert_eq!(
            Row::new("1", "x").target(Target::AtMost(1.0)).verdict(),
            "MISSED"
        );
    }

    #[test]
    fn renders_aligned_markdown() {
        let rows = vec![
            Row::new("2", "boundary")
                .figures("1.0 ms", "0.9 ms")
                .ratio(1.111)
                .target(Target::AtMost(1.1)),
            Row::new("8", "startup µs").figures("a", "b").noisy(true),
        ];
        let text = render(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains("| 1.11× | ≤ 1.1× | MISSED"));
        assert!(lines[3].contains("report (noisy)"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{text}");
    }

    #[test]
    fn a_quick_run_holds_no_row_to_its_target() {
        let rows = vec![
            Row::new("2", "boundary")
                .figures("1.0 ms", "0.9 ms")
                .ratio(1.111)
                .target(Target::AtMost(1.1)),
            Row::new("3", "pages")
                .ratio(0.9)
                .target(Target::AtLeast(0.8))
                .noisy(true),
            Row::new("8", "startup").figures("a", "b"),
        ];
        let text = render(&rows, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].ends_with("| 1.11× | ≤ 1.1× | n/a (quick)         |"),
            "{text}"
        );
        assert!(
            lines[3].ends_with("| 0.90× | ≥ 0.8× | n/a (quick) (noisy) |"),
            "{text}"
        );
        assert!(
            lines[4].ends_with("|       | report | report              |"),
            "{text}"
        );
        assert!(!text.contains("MISSED") && !text.contains("met"), "{text}");
    }
}

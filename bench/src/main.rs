//! `tributary-bench`: the benchmark suite of Tributary (issue #4). Every figure is a ratio against a
//! baseline measured in the same run; nothing here is a timed assertion.
//!
//! ```sh
//! cargo run --release -p tributary-bench                      # every scenario, one table
//! cargo run --release -p tributary-bench -- --only 1,3        # a subset
//! cargo run --release -p tributary-bench -- --quick           # small sizes: a smoke run
//! cargo run --release -p tributary-bench -- --out table.md    # the table also to a file
//! ```
//!
//! Progress goes to stderr; the table (Markdown) and its notes go to stdout. Hidden modes serve the
//! scenarios' child processes: `serve-baseline <response file>`, `serve-rest-baseline <page
//! file>`, `parse-yaml <file>` and `parse-owned <file>`.

mod harness;
mod scenarios;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use harness::{table, Bench, Report, Settings};

const USAGE: &str = "usage: tributary-bench [--only 1,3,...] [--quick] [--out FILE]

Runs the benchmark scenarios of docs/PERFORMANCE.md in this process and child processes, and
prints one table: scenario, our figure, the baseline's, the ratio, the target, the result.
  --only LIST   run only these scenarios (comma-separated numbers 1-13)
  --quick       small sizes and few repetitions: a smoke run, not a measurement
  --out FILE    also write the table and its notes to FILE

tributary-bench load URL [CLIENTS] [SECONDS] [ITEMS]
  sends scenario 3's pages (20 items, random tokens over 3 sources of ITEMS each, 300000 by
  default) from CLIENTS clients (1) for SECONDS (10) to a server started by hand, and prints pages
  per second: for profiling that server
tributary-bench save-page URL FILE
  writes that server's first such page to FILE, for `tributary-bench serve-baseline FILE`
tributary-bench write-index generated|real|minimal FILE [--quick]
  writes scenario 12's index of that kind to FILE
tributary-bench memory-breakdown generated|real|minimal [--quick]
  writes scenario 12's index of that kind, reads it with the helm plugin library loaded into this
  process, and prints where its memory goes (a Markdown table)";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    only: Option<Vec<u32>>,
    quick: bool,
    out: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        only: None,
        quick: false,
        out: None,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--quick" => parsed.quick = true,
            "--only" => {
                let list = value()?;
                let ids = list
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        s.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=scenarios::ALL.len() as u32).contains(n))
                            .ok_or_else(|| {
                                format!(
                                    "--only: {s:?} is not a scenario number (1-{})",
                                    scenarios::ALL.len()
                                )
                            })
                    })
                    .collect::<Result<Vec<u32>, String>>()?;
                if ids.is_empty() {
                    return Err("--only needs at least one scenario number".into());
                }
                parsed.only = Some(ids);
            }
            "--out" => parsed.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
        i += 1;
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("serve-baseline"), Some(file)) => {
            harness::grpc::serve_baseline(file.as_ref());
            return ExitCode::SUCCESS;
        }
        (Some("serve-rest-baseline"), Some(file)) => {
            harness::rest::serve_baseline(file.as_ref());
            return ExitCode::SUCCESS;
        }
        (Some("load"), Some(url)) => {
            // `load <url> [clients] [seconds] [items per source]`: scenario 3's load against a
            // server started by hand (for profiling it), printing pages per second.
            let number = |i: usize, default: usize| {
                args.get(i)
                    .map_or(default, |s| s.parse().expect("a number"))
            };
            let (clients, seconds, per_source) = (number(2, 1), number(3, 10), number(4, 300_000));
            let tokens = std::sync::Arc::new(scenarios::s3_grpc::tokens(per_source));
            let url = url.clone();
            let load = tokio::runtime::Runtime::new()
                .expect("tokio runtime")
                .block_on(async move {
                    harness::grpc::load(
                        &url,
                        clients,
                        20,
                        tokens,
                        std::time::Duration::from_secs(seconds as u64),
                    )
                    .await
                });
            println!("{:.0} pages/s, {} bad", load.pages_per_second, load.bad);
            return ExitCode::SUCCESS;
        }
        (Some("save-page"), Some(url)) => {
            // `save-page <url> <file>`: scenario 3's first page from a server started by hand,
            // written where `serve-baseline <file>` reads it.
            let (url, file) = (
                url.clone(),
                args.get(2).expect("save-page URL FILE").clone(),
            );
            let token = scenarios::s3_grpc::tokens(300_000).swap_remove(0);
            let page = tokio::runtime::Runtime::new()
                .expect("tokio runtime")
                .block_on(async move {
                    let mut client = harness::grpc::connect(&url).await;
                    harness::grpc::list(&mut client, harness::grpc::request(20, &token, &[])).await
                });
            harness::grpc::write_response(file.as_ref(), &page);
            return ExitCode::SUCCESS;
        }
        (Some("parse-yaml"), Some(file)) => {
            scenarios::s9_helm::parse_yaml_child(file.as_ref());
            return ExitCode::SUCCESS;
        }
        (Some("parse-owned"), Some(file)) => {
            scenarios::s12_catalog_memory::parse_owned_child(file.as_ref());
            return ExitCode::SUCCESS;
        }
        (Some("write-index"), Some(kind)) => {
            // `write-index <generated|real|minimal> <file> [--quick]`: scenario 12's index, for a
            // server or a profiler started by hand.
            let input = scenarios::s12_catalog_memory::Input::from_word(kind);
            let (Some(input), Some(file)) = (input, args.get(2)) else {
                eprintln!(
                    "usage: tributary-bench write-index generated|real|minimal FILE [--quick]"
                );
                return ExitCode::from(2);
            };
            let settings = Settings {
                quick: args.iter().any(|a| a == "--quick"),
            };
            let written = input.write(file.as_ref(), &settings);
            println!(
                "{}: {} bytes, {} charts, {} versions",
                file, written.bytes, written.charts, written.versions
            );
            return ExitCode::SUCCESS;
        }
        (Some("memory-breakdown"), _) => {
            return match scenarios::s12_catalog_memory::breakdown::run_child(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("tributary-bench: {message}");
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("tributary-bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if message.is_empty() { 0 } else { 2 });
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build; run with --release for real figures");
    }

    // Copy this executable before anything can rebuild it under the running process.
    harness::process::own_executable();
    let bench = Bench::new(Settings { quick: args.quick });
    let started = Instant::now();
    let mut report = Report::default();
    for scenario in scenarios::ALL
        .iter()
        .filter(|s| args.only.as_ref().is_none_or(|only| only.contains(&s.id)))
    {
        eprintln!(
            "== scenario {}: {}",
            scenario.id,
            (scenario.title)(&bench.settings)
        );
        let t = Instant::now();
        (scenario.run)(&bench, &mut report);
        eprintln!(
            "   ({} s)",
            (t.elapsed().as_secs_f64() * 10.0).round() / 10.0
        );
    }

    let mut out = table::render(&report.rows, args.quick);
    if args.quick {
        out.push_str(&format!(
            "\n--quick: small sizes and few repetitions, a smoke run: no figure is checked against its \
             target (result {}).\n",
            table::QUICK_VERDICT
        ));
    }
    if !report.notes.is_empty() {
        out.push('\n');
        for note in &report.notes {
            out.push_str(note);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "\n{} scenario run(s){} in {:.0} s\n",
        report
            .rows
            .iter()
            .map(|r| r.id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        if args.quick { " (--quick)" } else { "" },
        started.elapsed().as_secs_f64()
    ));
    print!("{out}");
    if let Some(path) = &args.out {
        if let Err(e) = std::fs::write(path, &out) {
            eprintln!("tributary-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn command_line() {
        assert_eq!(
            args(&[]).unwrap(),
            Args {
                only: None,
                quick: false,
                out: None
            }
        );
        let a = args(&["--only", "1,3", "--quick", "--out=t.md"]).unwrap();
        assert_eq!(a.only, Some(vec![1, 3]));
        assert!(a.quick);
        assert_eq!(a.out, Some(PathBuf::from("t.md")));
        assert_eq!(args(&["--only=9"]).unwrap().only, Some(vec![9]));
        assert!(args(&["--only", "0"])
            .unwrap_err()
            .contains("not a scenario"));
        assert_eq!(args(&["--only", "11"]).unwrap().only, Some(vec![11]));
        assert_eq!(args(&["--only", "12"]).unwrap().only, Some(vec![12]));
        assert_eq!(args(&["--only", "13"]).unwrap().only, Some(vec![13]));
        assert!(args(&["--only", "14"])
            .unwrap_err()
            .contains("not a scenario number (1-13)"));
        assert!(args(&["--only"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--fast"]).unwrap_err().contains("unknown"));
        assert_eq!(args(&["--help"]).unwrap_err(), "");
    }

    #[test]
    fn titles_name_the_sizes_of_the_run() {
        let title = |id: usize, quick| (scenarios::ALL[id - 1].title)(&Settings { quick });
        assert_eq!(title(7, false), "memory: 10M vs 100k items");
        assert_eq!(title(7, true), "memory: 1M vs 10k items");
        assert_eq!(title(9, false), "Helm: 50 MiB index.yaml");
        assert_eq!(title(9, true), "Helm: 5 MiB index.yaml");
        assert_eq!(title(8, true), "startup: 100 libraries vs 1");
        assert_eq!(
            title(11, false),
            "discovery: relevance order and facets on 200k / 1000k Helm charts"
        );
        assert_eq!(
            title(12, false),
            "memory per index byte: Helm 50 MiB, real-shaped 60 MB, 1M minimal charts"
        );
        assert_eq!(title(13, true), "REST pages vs a prebuilt-JSON server");
    }

    #[test]
    fn the_bench_builds_in_a_target_directory_of_its_own() {
        let workspace = std::path::Path::new("/w");
        let dir = harness::process::target_dir(workspace);
        assert_eq!(dir.file_name().unwrap(), "bench");
        assert_ne!(dir, workspace.join("target"));
    }

    #[test]
    fn scenarios_are_numbered_in_order() {
        for (i, s) in scenarios::ALL.iter().enumerate() {
            assert_eq!(s.id as usize, i + 1);
        }
    }
}

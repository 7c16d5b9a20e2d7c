//! Reading callgrind's dumps, the driver's lines, the budgets and their
//! check, the table, and the record keeping the server work.

use super::budgets::{self, Budget, Budgets};
use super::callgrind::{Cost, Dump};
use super::{Measurement, Plan, Said, add_part, page};
use crate::bench::record::{Record, RunInfo, ServerWork, ServerWorkRow};

/// A dump as callgrind 3.19 writes one (trimmed): compressed names and
/// positions, the timer called from the event loop, a call site that
/// names its callee again by id only.
const DUMP: &str = "# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 20818
cmd:  redis-server redis.conf
part: 20


desc: I1 cache: 
desc: Timerange: Basic block 116915080 - 117226912
desc: Trigger: dump

positions: line
events: Ir
summary: 10500


ob=(1) /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
fl=(1) ???
fn=(0) 0x000000000001ab70
cob=(20) /usr/bin/redis-check-rdb
cfi=(215) ???
cfn=(4166) (below main)
calls=0 0 
0 10500

ob=(20)
fl=(215)
fn=(4166)
0 100
cfn=(17024) aeProcessEvents
calls=3 0 
0 10400

fn=(17024)
0 300
cfn=(17058) serverCron
calls=2 0 
0 4000
cfn=(17100) processCommand
calls=2 0 
+2 6000
cfn=(17100)
calls=1 0 
* 100

fn=(17058)
0 4000

fn=(17100)
0 1000
+1 5000
-1 100

totals: 10500
";

#[test]
fn a_dump_counts_everything_but_the_timer() {
    let dump = Dump::parse(DUMP).unwrap();
    assert_eq!(dump.totals, 10_500);
    assert_eq!(dump.measured(), 6_500);
    assert_eq!(
        dump.inclusive.get("processCommand"),
        Some(&Cost {
            instructions: 6_100,
            calls: 3
        })
    );
    assert_eq!(dump.inclusive.get("serverCron").map(|c| c.calls), Some(2));
    // Call costs are the callee's, not the caller's own.
    assert_eq!(dump.own.get("aeProcessEvents"), Some(&300));
    assert_eq!(dump.own.get("processCommand"), Some(&6_100));
    assert_eq!(dump.own.get("(below main)"), Some(&100));
    assert_eq!(dump.own.values().sum::<u64>(), 10_500);
}

#[test]
fn a_dump_without_totals_sums_its_cost_lines() {
    let text = DUMP.replace("totals: 10500\n", "");
    assert_eq!(Dump::parse(&text).unwrap().totals, 10_500);
}

/// Instruction and line positions, `Ir` not the first event, a missing
/// trailing event, jump lines, uncompressed names.
#[test]
fn other_layouts_of_a_dump_are_read() {
    let text = "positions: instr line
events: Dr Ir
fn=main
0x10 12 5 7
0x14 13 1
jump=2 0x20 20
0x18 14
cfn=work
calls=4 0x40 40
0x18 14 9 90
fn=work
0x40 40 2 90
totals: 8 97
";
    let dump = Dump::parse(text).unwrap();
    assert_eq!(dump.totals, 97);
    assert_eq!(dump.own.get("main"), Some(&7));
    assert_eq!(
        dump.inclusive.get("work"),
        Some(&Cost {
            instructions: 90,
            calls: 4
        })
    );
    assert_eq!(dump.measured(), 97);
}

#[test]
fn a_malformed_dump_is_refused() {
    assert!(Dump::parse("not callgrind\n").is_err());
    assert!(Dump::parse("events: Dr\n").is_err());
    let undefined = "events: Ir\nfn=(7)\n0 1\n";
    let err = Dump::parse(undefined).unwrap_err();
    assert!(err.contains("(7)"), "{err}");
}

#[test]
fn parts_of_a_measurement_add_up() {
    let mut measurements = Vec::new();
    let part = || Dump::parse(DUMP).unwrap();
    add_part(&mut measurements, "fork", 10, 100, part());
    add_part(&mut measurements, "fork", 10, 50, part());
    add_part(&mut measurements, "fork", 100, 10, part());
    assert_eq!(measurements.len(), 2);
    let fork = &measurements[0];
    assert_eq!((fork.calls, fork.instructions), (150, 13_000));
    assert!((fork.per_call() - 13_000.0 / 150.0).abs() < 1e-9);
    assert_eq!(fork.profile.totals, 21_000);
    assert_eq!(
        fork.profile.inclusive.get("serverCron").map(|c| c.calls),
        Some(4)
    );
}

#[test]
fn the_drivers_lines_are_read() {
    assert_eq!(
        Said::parse("server-work\tready\tappend 2, keyed\t100\t200").unwrap(),
        Said::Ready {
            operation: "append 2, keyed".into(),
            messages: 100,
            calls: 200
        }
    );
    assert_eq!(Said::parse("server-work\tdone").unwrap(), Said::Done);
    assert_eq!(Said::parse("server-work\tend").unwrap(), Said::End);
    assert_eq!(Said::parse("load at 10 messages").unwrap(), Said::Other);
    assert!(Said::parse("server-work\tready\tload\tten\t200").is_err());
    assert!(Said::parse("server-work\tdone\textra").is_err());
}

fn measurement(operation: &str, messages: u32, per_call: u64) -> Measurement {
    Measurement {
        operation: operation.into(),
        messages,
        calls: 200,
        instructions: per_call * 200,
        profile: Dump::default(),
    }
}

fn budget(operation: &str, messages: u32, instructions: u64) -> Budget {
    Budget {
        operation: operation.into(),
        messages,
        instructions,
        reason: "first budgets".into(),
    }
}

fn budgets() -> Budgets {
    Budgets {
        calls: 200,
        lengths: vec![10, 100],
        redis_server: "7.0.15".into(),
        budgets: vec![
            budget("load", 10, 100_000),
            budget("load", 100, 100_000),
            budget("fork", 10, 100_000),
            budget("append", 10, 100_000),
            budget("gone", 10, 1_000),
        ],
    }
}

#[test]
fn the_check_fails_over_ten_percent_and_notes_under_it() {
    let measured = [
        // Within 10 %: nothing said.
        measurement("load", 10, 109_999),
        measurement("load", 100, 90_001),
        // Over: fails; under: a note.
        measurement("fork", 10, 110_001),
        measurement("append", 10, 89_999),
        // No budget: fails.
        measurement("new", 10, 5_000),
    ];
    let checked = budgets::check(&budgets(), &measured, "7.0.15");
    assert_eq!(checked.failures.len(), 2, "{checked:?}");
    assert!(checked.failures[0].starts_with("fork at 10 messages: 110001"));
    assert!(checked.failures[0].contains("+10.0 % over its budget of 100000"));
    assert!(
        checked.failures[1].starts_with("new at 10 messages")
            && checked.failures[1].contains("no budget")
    );
    assert_eq!(checked.notes.len(), 2, "{checked:?}");
    assert!(checked.notes[0].starts_with("append at 10 messages: 89999"));
    assert!(checked.notes[0].contains("lower the budget"));
    assert!(checked.notes[1].starts_with("gone at 10 messages has a budget but was not measured"));
    // Another server: a note, the same verdicts.
    let other = budgets::check(&budgets(), &measured, "7.2.4");
    assert_eq!(other.failures, checked.failures);
    assert!(other.notes[0].contains("measured on redis-server 7.0.15, this is 7.2.4"));
}

#[test]
fn an_update_rewrites_what_moved_with_its_reason() {
    let measured = [
        // Within 2 %: kept, with its old reason.
        measurement("load", 10, 101_900),
        // Moved: rounded to 100, the new reason.
        measurement("load", 100, 90_049),
        measurement("fork", 10, 130_051),
        measurement("append", 10, 97_000),
        // New.
        measurement("new", 10, 5_012),
    ];
    let plan = Plan {
        lengths: vec![10, 100],
        calls: 200,
    };
    let (new, changes) = budgets::update(&budgets(), &measured, &plan, "7.0.15", "fewer calls");
    let got: Vec<(&str, u32, u64, &str)> = new
        .budgets
        .iter()
        .map(|b| {
            (
                b.operation.as_str(),
                b.messages,
                b.instructions,
                b.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("load", 10, 100_000, "first budgets"),
            ("load", 100, 90_000, "fewer calls"),
            ("fork", 10, 130_100, "fewer calls"),
            ("append", 10, 97_000, "fewer calls"),
            ("new", 10, 5_000, "fewer calls"),
        ]
    );
    assert_eq!((new.calls, new.lengths.as_slice()), (200, &[10, 100][..]));
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert_eq!(changes[1], "fork at 10 messages: 100000 → 130100");
    assert_eq!(changes[4], "gone at 10 messages: dropped (not measured)");
    // Nothing moved: nothing changes.
    let (again, changes) = budgets::update(&new, &measured, &plan, "7.0.15", "again");
    assert_eq!((again, changes.len()), (new, 0));
}

#[test]
fn the_budgets_file_has_one_budget_per_line_and_reads_back() {
    let mut file = budgets();
    file.budgets[0].reason = "a \"quoted\" reason, with a comma".into();
    let text = file.to_text().unwrap();
    assert_eq!(Budgets::parse(&text).unwrap(), file);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("  \"about\": \""));
    assert_eq!(lines[2], "  \"calls\": 200,");
    assert_eq!(lines[3], "  \"lengths\": [10,100],");
    assert_eq!(lines[4], "  \"redis_server\": \"7.0.15\",");
    assert_eq!(
        lines[6],
        r#"    {"operation":"load","messages":10,"instructions":100000,"reason":"a \"quoted\" reason, with a comma"},"#
    );
    assert_eq!(lines.len(), 6 + file.budgets.len() + 2);
    assert!(Budgets::parse("{\"budgets\": 3}").is_err());
}

/// The budgets checked into the repository read, and cover what the check
/// measures.
#[test]
fn the_checked_in_budgets_read() {
    let text = std::fs::read_to_string(crate::root().join(budgets::FILE)).unwrap();
    let file = Budgets::parse(&text).unwrap();
    assert!(file.calls >= 200, "{}", file.calls);
    for len in &file.lengths {
        for operation in ["load_recent(20)", "turn: load_recent(20) + append 2"] {
            assert!(
                file.budgets
                    .iter()
                    .any(|b| b.operation == operation && b.messages == *len),
                "no budget for {operation} at {len}"
            );
        }
    }
    assert!(file.budgets.iter().all(|b| !b.reason.trim().is_empty()));
    assert_eq!(
        file.to_text().unwrap(),
        text,
        "not as --update-budgets writes it"
    );
}

fn row(operation: &str, messages: u32, instructions: f64) -> ServerWorkRow {
    ServerWorkRow {
        operation: operation.into(),
        messages,
        calls: 1_000,
        instructions,
    }
}

#[test]
fn the_table_has_a_column_per_length_and_the_blob_turn() {
    let rows = [
        row("load", 10, 96_871.6),
        row("blob GET", 10, 5_000.0),
        row("blob SET", 10, 7_000.0),
        row("blob GET, realistic mix", 10, 15_000.0),
        row("blob SET, realistic mix", 10, 16_000.0),
        row("load", 100, 163_000.0),
        row("blob GET", 100, 16_000.0),
    ];
    let table = page::table(&rows);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "| operation | 10 | 100 |");
    assert_eq!(lines[1], "|---|---:|---:|");
    assert_eq!(lines[2], "| load | 96,872 | 163,000 |");
    assert_eq!(lines[4], "| blob SET | 7,000 | — |");
    assert_eq!(lines[5], "| blob turn: GET + SET | 12,000 | — |");
    assert_eq!(
        lines[8],
        "| blob turn: GET + SET, realistic mix | 31,000 | — |"
    );
    assert_eq!(lines.len(), 9);
}

fn run(date: &str, filters: &[&str]) -> RunInfo {
    RunInfo {
        date: date.into(),
        cpu: "2 × test".into(),
        git: "abc1234".into(),
        quick: false,
        criterion_args: Vec::new(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
        minutes: 4.0,
        load_before: String::new(),
        load_after: String::new(),
        host: None,
    }
}

fn work(date: &str) -> ServerWork {
    ServerWork {
        run: date.into(),
        warm_up: 10,
        rows: vec![row("load", 10, 96_000.0)],
    }
}

/// A `--server-work` run merges like a filtered run; an unfiltered
/// criterion run (which replaces the record) keeps the server work and its
/// run; the page shows it under its own heading.
#[test]
fn the_record_keeps_the_server_work_across_runs() {
    let old = Record {
        runs: vec![run("criterion", &[])],
        ..Record::default()
    };
    let merged = old.merge(Record {
        runs: vec![run("work", &["--server-work"])],
        server_work: Some(work("work")),
        ..Record::default()
    });
    assert_eq!(merged.server_work, Some(work("work")));
    let dates: Vec<&str> = merged.runs.iter().map(|r| r.date.as_str()).collect();
    assert_eq!(dates, ["work"], "the criterion run measured nothing kept");
    let again = merged.clone().merge(Record {
        runs: vec![run("filtered", &["sqlite"])],
        ..Record::default()
    });
    assert_eq!(again.server_work, Some(work("work")));
    assert!(again.run("work").is_some());
    let replaced = Record {
        runs: vec![run("full", &[])],
        ..Record::default()
    }
    .keeping_server_work(&merged);
    assert_eq!(replaced.server_work, Some(work("work")));
    let dates: Vec<&str> = replaced.runs.iter().map(|r| r.date.as_str()).collect();
    assert_eq!(dates, ["full", "work"]);
    let json = replaced.to_json().unwrap();
    assert_eq!(
        Record::from_json(&json).unwrap().server_work,
        Some(work("work"))
    );
    let section = page::section(&replaced).unwrap();
    assert!(section.starts_with("## Server work (instructions per operation, callgrind)\n"));
    assert!(section.contains("_Measured work, full run of abc1234, filter `--server-work`._"));
    assert!(section.contains("| load | 96,000 |"));
    assert!(page::section(&Record::default()).is_none());
    // The page describes the latest criterion run, not the newer
    // `--server-work` run.
    let mut filtered = run("filtered", &["sqlite"]);
    filtered.quick = true;
    let page = crate::bench::render::render(&Record {
        runs: vec![run("work", &["--server-work"]), filtered],
        server_work: Some(work("work")),
        ..Record::default()
    });
    assert!(page.contains("the latest a **quick** run"), "{page}");
    assert!(page.contains("with the filter `sqlite`;"), "{page}");
    assert!(page.contains("| date | filtered |"), "{page}");
}

//! The continuity properties (push_core::testing) against the in-memory hub,
//! with small limits so that gaps, resets and expiry happen often.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may fail loudly

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use push_core::testing::{self, Op, Options, Report, Since};
use push_core::{ChannelName, ManualClock, MemoryHub, MemoryHubConfig, Timestamp};
use std::time::Duration;

const T0: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

fn run(config: MemoryHubConfig, ops: &[Op]) -> Result<Report, String> {
    let clock = ManualClock::new(T0);
    let hub = MemoryHub::with_config_and_clock(config, clock.clone()).map_err(|e| e.to_string())?;
    let channel = ChannelName::new("c").map_err(|e| e.to_string())?;
    // The memory hub delivers and wakes synchronously: a second is a
    // generous safety net, and keeps shrinking quick when a property fails.
    let options = Options::default()
        .with_clock(clock)
        .with_patience(Duration::from_secs(1));
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(testing::check(&hub, &channel, ops, &options))
}

fn small(max_messages: usize, max_bytes: usize, max_age_ms: u64) -> MemoryHubConfig {
    MemoryHubConfig::default()
        .with_max_messages(max_messages)
        .with_max_bytes(max_bytes)
        .with_max_message_bytes(8)
        .with_max_age(Duration::from_millis(max_age_ms))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_hub_keeps_continuity(
        max_messages in 1usize..8,
        max_bytes in 8usize..48,
        max_age_ms in 1u64..300,
        ops in testing::ops(80, 7, 120),
    ) {
        let result = run(small(max_messages, max_bytes, max_age_ms), &ops);
        prop_assert!(result.is_ok(), "{}", result.as_ref().unwrap_err());
        let report = result.unwrap();
        check_report(&report, &ops, max_messages)?;
    }

    /// The same under a hub-wide byte budget of a few messages, which trims
    /// the channel before its own limits do.
    #[test]
    fn memory_hub_keeps_continuity_within_a_byte_budget(
        max_messages in 1usize..8,
        budget_messages in 1usize..6,
        ops in testing::ops(80, 7, 120),
    ) {
        let budget = budget_messages * (MemoryHubConfig::MESSAGE_OVERHEAD + 8);
        let config = small(max_messages, 48, 60_000).with_max_retained_bytes(budget);
        let result = run(config, &ops);
        prop_assert!(result.is_ok(), "{}", result.as_ref().unwrap_err());
        let report = result.unwrap();
        // The budget holds fewer than the channel's own limit would.
        check_report(&report, &ops, max_messages.min(budget_messages))?;
    }
}

/// What every run's report must say: every publish happened, every read
/// was made, and the hub never retained more than its limit (a hub that
/// ignored it would pass the continuity checks, with nothing ever lost).
fn check_report(report: &Report, ops: &[Op], limit: usize) -> Result<(), TestCaseError> {
    let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    prop_assert_eq!(
        report.published,
        count(|op| matches!(op, Op::Publish { .. }))
    );
    prop_assert_eq!(report.reads, count(|op| matches!(op, Op::Read { .. })));
    prop_assert!(
        report.most_retained <= limit,
        "retained {} with a limit of {limit}",
        report.most_retained
    );
    Ok(())
}

/// The generator must reach every path the properties speak of, or the
/// property test above proves little.
#[test]
fn generated_scenarios_exercise_gaps_resets_and_wakeups() {
    let mut runner = TestRunner::deterministic();
    let mut total = Report::default();
    for _ in 0..200 {
        let config = (1usize..8, 8usize..48, 1u64..300)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let ops = testing::ops(80, 7, 120)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        total += run(small(config.0, config.1, config.2), &ops).unwrap();
    }
    println!("{total:?}");
    assert!(total.published > 2_000, "{total:?}");
    assert!(total.delivered > 2_000, "{total:?}");
    assert!(total.gaps > 100, "{total:?}");
    assert!(total.resets > 50, "{total:?}");
    assert!(total.wakeups > 50, "{total:?}");
    assert!(total.reads > 500, "{total:?}");
}

#[test]
fn slow_subscriber_gets_a_gap_with_the_exact_count() {
    let mut ops = vec![Op::Subscribe {
        who: 0,
        from: Since::Live,
    }];
    ops.extend((0..10).map(|_| Op::Publish {
        len: 1,
        event: false,
    }));
    ops.push(Op::Drain { who: 0 });
    run(small(3, 1 << 10, 60_000), &ops).unwrap();
}

#[test]
fn resume_after_disconnect_gets_what_was_missed() {
    let ops = [
        Op::Subscribe {
            who: 1,
            from: Since::Earliest,
        },
        Op::Publish {
            len: 4,
            event: true,
        },
        Op::Drain { who: 1 },
        Op::Disconnect { who: 1 },
        Op::Publish {
            len: 4,
            event: false,
        },
        Op::Publish {
            len: 0,
            event: false,
        },
        Op::Resume { who: 1 },
        Op::Park { who: 1 },
        Op::Drain { who: 1 },
        Op::Park { who: 1 },
        Op::Publish {
            len: 2,
            event: false,
        },
        Op::Drain { who: 1 },
    ];
    run(MemoryHubConfig::default(), &ops).unwrap();
}

#[test]
fn foreign_cursor_gets_a_reset_even_on_an_empty_channel() {
    let ops = [
        Op::Subscribe {
            who: 2,
            from: Since::Foreign(9),
        },
        Op::Drain { who: 2 },
        Op::Publish {
            len: 1,
            event: false,
        },
        Op::Drain { who: 2 },
    ];
    run(MemoryHubConfig::default(), &ops).unwrap();
}

#[test]
fn paging_by_cursor_never_skips_or_repeats() {
    let mut ops: Vec<_> = (0..7)
        .map(|_| Op::Publish {
            len: 3,
            event: false,
        })
        .collect();
    ops.extend((0..5).map(|_| Op::Read {
        who: 0,
        limit: 2,
        live: false,
    }));
    run(MemoryHubConfig::default(), &ops).unwrap();
}

//! One module per scenario of the issue, in its order.

use crate::harness::{Bench, Report, Settings};

pub mod s10_search;
pub mod s11_discovery;
pub mod s12_catalog_memory;
pub mod s13_rest;
pub mod s1_engine;
pub mod s2_boundary;
pub mod s3_grpc;
pub mod s4_deep;
pub mod s5_slow;
pub mod s6_work;
pub mod s7_memory;
pub mod s8_startup;
pub mod s9_helm;

/// A scenario: its number, its title (with the sizes of this run: `--quick` uses smaller ones), and
/// how to run it.
pub struct Scenario {
    pub id: u32,
    pub title: fn(&Settings) -> String,
    pub run: fn(&Bench, &mut Report),
}

pub const ALL: [Scenario; 13] = [
    Scenario {
        id: 1,
        title: |_| "engine alone vs itertools::kmerge".to_owned(),
        run: s1_engine::run,
    },
    Scenario {
        id: 2,
        title: |_| "plugin boundary: .so vs linked".to_owned(),
        run: s2_boundary::run,
    },
    Scenario {
        id: 3,
        title: |_| "gRPC pages vs a prebuilt-response server".to_owned(),
        run: s3_grpc::run,
    },
    Scenario {
        id: 4,
        title: |_| "deep pages vs the first page".to_owned(),
        run: s4_deep::run,
    },
    Scenario {
        id: 5,
        title: |_| "slow sources vs one slow source".to_owned(),
        run: s5_slow::run,
    },
    Scenario {
        id: 6,
        title: |_| "work per page".to_owned(),
        run: s6_work::run,
    },
    Scenario {
        id: 7,
        title: s7_memory::title,
        run: s7_memory::run,
    },
    Scenario {
        id: 8,
        title: |_| "startup: 100 libraries vs 1".to_owned(),
        run: s8_startup::run,
    },
    Scenario {
        id: 9,
        title: s9_helm::title,
        run: s9_helm::run,
    },
    Scenario {
        id: 10,
        title: |_| "search: a query's first page vs the unfiltered first page".to_owned(),
        run: s10_search::run,
    },
    Scenario {
        id: 11,
        title: s11_discovery::title,
        run: s11_discovery::run,
    },
    Scenario {
        id: 12,
        title: s12_catalog_memory::title,
        run: s12_catalog_memory::run,
    },
    Scenario {
        id: 13,
        title: |_| "REST pages vs a prebuilt-JSON server".to_owned(),
        run: s13_rest::run,
    },
];

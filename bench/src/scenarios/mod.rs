//! One module per scenario of the issue, in its order.

use crate::harness::{Bench, Report};

pub mod s10_search;
pub mod s1_engine;
pub mod s2_boundary;
pub mod s3_grpc;
pub mod s4_deep;
pub mod s5_slow;
pub mod s6_work;
pub mod s7_memory;
pub mod s8_startup;
pub mod s9_helm;

/// A scenario: its number, its title, and how to run it.
pub struct Scenario {
    pub id: u32,
    pub title: &'static str,
    pub run: fn(&Bench, &mut Report),
}

pub const ALL: [Scenario; 10] = [
    Scenario {
        id: 1,
        title: "engine alone vs itertools::kmerge",
        run: s1_engine::run,
    },
    Scenario {
        id: 2,
        title: "plugin boundary: .so vs linked",
        run: s2_boundary::run,
    },
    Scenario {
        id: 3,
        title: "gRPC pages vs a prebuilt-response server",
        run: s3_grpc::run,
    },
    Scenario {
        id: 4,
        title: "deep pages vs the first page",
        run: s4_deep::run,
    },
    Scenario {
        id: 5,
        title: "slow sources vs one slow source",
        run: s5_slow::run,
    },
    Scenario {
        id: 6,
        title: "work per page",
        run: s6_work::run,
    },
    Scenario {
        id: 7,
        title: "memory: 10M vs 100k items",
        run: s7_memory::run,
    },
    Scenario {
        id: 8,
        title: "startup: 100 libraries vs 1",
        run: s8_startup::run,
    },
    Scenario {
        id: 9,
        title: "Helm: 50 MB index.yaml",
        run: s9_helm::run,
    },
    Scenario {
        id: 10,
        title: "search: a query's first page vs the unfiltered first page",
        run: s10_search::run,
    },
];
